"""Checks behind deploy/validate.sh that no off-the-shelf validator covers.

Run by validate.sh with the validation venv's python (it needs PyYAML):

    python deploy/validate.py SUBCOMMAND [ARGS]

Each subcommand prints what it found wrong, one line each, and exits 1 if
anything was; it prints nothing else on success unless it lists files.
"""

import json
import os
import re
import sys

import yaml

KUSTOMIZE_API = "kustomize.config.k8s.io/"

# The source that describes every metric revokd exports: the known names come
# from its describe_counter!/describe_gauge!/describe_histogram! calls, so a new
# metric cannot be forgotten here.
METRICS_RS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "metrics.rs"))
DESCRIBE = re.compile(r'\bdescribe_(counter|gauge|histogram)!\s*\(\s*"(revokd_[a-z0-9_]+)"')


def described_metrics(path=METRICS_RS):
    """(names, histogram names) of the metrics src/metrics.rs describes."""
    with open(path) as f:
        found = DESCRIBE.findall(f.read())
    return {name for _, name in found}, {name for kind, name in found if kind == "histogram"}

# Env the revokd container must carry, with the value where it is fixed.
SIDECAR_ENV = {
    "REVOKD_GRPC_ADDR": "127.0.0.1:50051",
    "REVOKD_ADMIN_ADDR": "0.0.0.0:9464",
    "REVOKD_REDIS_URL": None,
    "REVOKD_KEYS_DIR": None,
    "REVOKD_SIGNING_KID": None,
    "REVOKD_LOG_FORMAT": "json",
}
# Settings revokd no longer has (it would refuse to start with them).
REMOVED_ENV = {"REVOKD_STALE_GRACE"}
# Secrets created by hand, never by a kustomization (deploy/README.md).
EXTERNAL_SECRETS = {"revokd-keys", "revokd-redis-auth"}
# The label of every pod with a revokd sidecar (the revokd-sidecar
# Component sets it): a kustomization that only deploys Redis selects those
# pods in NetworkPolicies although they are rendered elsewhere.
REVOKD_POD_LABELS = {"revokd-sidecar": "enabled"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod"}


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_objects(path):
    """The documents of path that are objects (mappings): not the lists of
    operations of a JSON patch."""
    return [d for d in load_docs(path) if isinstance(d, dict)]


def yaml_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith((".yaml", ".yml")):
                yield os.path.join(dirpath, name)


def is_kustomization(doc):
    return isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith(KUSTOMIZE_API)


def kustomization_files(root):
    for path in yaml_files(root):
        if os.path.basename(path) in ("kustomization.yaml", "kustomization.yml"):
            yield path


def kustomization_refs(path):
    """Yields (field, referenced path) for every local file or directory a
    kustomization or component names."""
    (doc,) = load_docs(path)
    for field in ("resources", "components", "crds", "bases"):
        for ref in doc.get(field) or []:
            yield field, ref
    for patch in doc.get("patches") or []:
        if "path" in patch:
            yield "patches", patch["path"]
    for patch in doc.get("patchesJson6902") or []:
        if "path" in patch:
            yield "patchesJson6902", patch["path"]
    for patch in doc.get("patchesStrategicMerge") or []:
        if isinstance(patch, str) and "\n" not in patch:
            yield "patchesStrategicMerge", patch
    for gen in (doc.get("configMapGenerator") or []) + (doc.get("secretGenerator") or []):
        for item in gen.get("files") or []:
            yield "generator files", item.split("=", 1)[-1]
        for item in gen.get("envs") or []:
            yield "generator envs", item


def patch_files(root):
    files = set()
    for kpath in kustomization_files(root):
        base = os.path.dirname(kpath)
        for field, ref in kustomization_refs(kpath):
            if field.startswith("patches"):
                files.add(os.path.normpath(os.path.join(base, ref)))
    return files


def cmd_manifests(*roots):
    """Lists the files under the roots that hold Kubernetes objects: not the
    kustomizations/components, not the (partial) patches they apply."""
    for root in roots:
        patches = patch_files(root)
        for path in yaml_files(root):
            if os.path.normpath(path) in patches:
                continue
            docs = load_objects(path)
            if not docs or all(is_kustomization(d) for d in docs):
                continue
            print(path)
    return 0


def cmd_kustomizations(*roots):
    """Lists the directories under the roots whose kustomization is a
    Kustomization (renderable on its own), not a Component."""
    for root in roots:
        for kpath in kustomization_files(root):
            (doc,) = load_docs(kpath)
            if doc.get("kind") == "Kustomization":
                print(os.path.dirname(kpath))
    return 0


def cmd_kustomize(*roots):
    """Every file a kustomization/component lists exists (and, being a file,
    lies under that kustomization's directory as kustomize's load restrictor
    demands); every directory it lists holds a kustomization; the resources it
    gathers have no duplicate kind/name."""
    errors = []
    count = 0
    for kpath in (k for root in roots for k in kustomization_files(root)):
        count += 1
        base = os.path.dirname(os.path.abspath(kpath))
        (doc,) = load_docs(kpath)
        if not is_kustomization(doc):
            errors.append(f"{kpath}: apiVersion is not {KUSTOMIZE_API}*")
        kind = doc.get("kind")
        if kind not in ("Kustomization", "Component"):
            errors.append(f"{kpath}: kind {kind!r} is neither Kustomization nor Component")
        if kind == "Component" and doc.get("apiVersion") != KUSTOMIZE_API + "v1alpha1":
            errors.append(f"{kpath}: a Component's apiVersion is {KUSTOMIZE_API}v1alpha1")
        for field, ref in kustomization_refs(kpath):
            if "://" in ref or ref.startswith(("github.com/", "git@")):
                continue
            target = os.path.normpath(os.path.join(base, ref))
            if os.path.isdir(target):
                if not any(os.path.isfile(os.path.join(target, n))
                           for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
                    errors.append(f"{kpath}: {field} entry {ref!r} is a directory without a kustomization")
            elif os.path.isfile(target):
                if os.path.commonpath([base, target]) != base:
                    errors.append(f"{kpath}: {field} file {ref!r} lies outside the kustomization's directory")
            else:
                errors.append(f"{kpath}: {field} entry {ref!r} does not exist")
        if errors:
            continue
        seen = {}
        for ref in doc.get("resources") or []:
            target = os.path.join(base, ref)
            if os.path.isfile(target):
                for obj in load_objects(target):
                    key = (obj.get("kind"), obj.get("metadata", {}).get("name"))
                    if key in seen:
                        errors.append(f"{kpath}: {key[0]}/{key[1]} comes from both {seen[key]} and {ref}")
                    seen[key] = ref
    for e in errors:
        print(e)
    if count == 0:
        print(f"no kustomization.yaml under {' '.join(roots)}")
        return 1
    return 1 if errors else 0


def pod_spec(doc):
    """The pod spec of a workload (or workload patch), else None."""
    spec = ((doc.get("spec") or {}).get("template") or {}).get("spec")
    if spec is None and doc.get("kind") == "Pod":
        spec = doc.get("spec")
    return spec


def pod_templates(root):
    """Yields (file, object name, pod spec) for every workload or workload
    patch under root."""
    for path in yaml_files(root):
        for doc in load_objects(path):
            if is_kustomization(doc):
                continue
            spec = pod_spec(doc)
            if spec is not None:
                yield path, doc.get("metadata", {}).get("name"), spec


def check_container(where, c):
    errors = []
    sc = c.get("securityContext") or {}
    if sc.get("runAsNonRoot") is not True:
        errors.append("securityContext.runAsNonRoot is not true")
    if not isinstance(sc.get("runAsUser"), int) or sc.get("runAsUser") == 0:
        errors.append("securityContext.runAsUser is not a numeric non-root uid")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append("securityContext.allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append("securityContext.readOnlyRootFilesystem is not true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        errors.append("securityContext.capabilities.drop lacks ALL")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        errors.append("securityContext.seccompProfile.type is not RuntimeDefault")
    res = c.get("resources") or {}
    if not (res.get("requests") or {}).get("cpu") or not (res.get("requests") or {}).get("memory"):
        errors.append("resources.requests lacks cpu or memory")
    if not (res.get("limits") or {}).get("memory"):
        errors.append("resources.limits lacks memory")
    return [f"{where}: {e}" for e in errors]


def check_probe(where, c, kind, path, errors):
    probe = c.get(kind)
    get = (probe or {}).get("httpGet") or {}
    if not probe:
        errors.append(f"{where}: no {kind}")
    elif get.get("path") != path:
        errors.append(f"{where}: {kind} is not an httpGet of {path}")
    else:
        port = get.get("port")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        if port not in (9464, "admin") or (port == "admin" and ports.get("admin") != 9464):
            errors.append(f"{where}: {kind} does not use the admin port 9464")


def check_revokd_env(where, c):
    """The Redis settings of a revokd container: no password inline in the
    URL, the password from a Secret, replica acknowledgements with Sentinel or Cluster,
    no removed setting."""
    errors = []
    env = {e.get("name"): e for e in c.get("env") or []}
    for name in sorted(REMOVED_ENV & set(env)):
        errors.append(f"{where}: env {name} is no longer a revokd setting: remove it")
    url = (env.get("REVOKD_REDIS_URL") or {}).get("value") or ""
    if re.match(r"^[a-z-]+://[^/@]*:[^/@]+@", url):
        errors.append(f"{where}: REVOKD_REDIS_URL carries a password: use REVOKD_REDIS_PASSWORD from a Secret")
    password = env.get("REVOKD_REDIS_PASSWORD")
    if password is not None and not ((password.get("valueFrom") or {}).get("secretKeyRef")):
        errors.append(f"{where}: REVOKD_REDIS_PASSWORD is not read from a Secret (secretKeyRef)")
    acks = env.get("REVOKD_MIN_REPLICA_ACKS")
    acks_value = (acks or {}).get("value")
    if acks is not None and not (acks_value or "").isdigit():
        errors.append(f"{where}: REVOKD_MIN_REPLICA_ACKS {acks_value!r} is not a whole number")
    acks_count = int(acks_value) if (acks_value or "").isdigit() else 0
    if re.match(r"^rediss?-(sentinel|cluster)://", url) and acks_count < 1:
        errors.append(f"{where}: a Sentinel or Cluster URL without REVOKD_MIN_REPLICA_ACKS >= 1: a failover "
                      "loses revocations that were acknowledged")
    return errors


def check_revokd(where, c, volumes, native):
    errors = check_revokd_env(where, c)
    if native and c.get("restartPolicy") != "Always":
        errors.append(f"{where}: a native sidecar needs restartPolicy: Always")
    check_probe(where, c, "startupProbe", "/healthz", errors)
    check_probe(where, c, "readinessProbe", "/readyz", errors)
    check_probe(where, c, "livenessProbe", "/healthz", errors)
    env = {e["name"]: e.get("value") for e in c.get("env") or []}
    for name, value in SIDECAR_ENV.items():
        if name not in env:
            errors.append(f"{where}: env {name} missing")
        elif value is not None and env[name] != value:
            errors.append(f"{where}: env {name} is {env[name]!r}, expected {value!r}")
    keys_dir = env.get("REVOKD_KEYS_DIR")
    mounts = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == keys_dir]
    if not mounts:
        errors.append(f"{where}: nothing mounted at REVOKD_KEYS_DIR {keys_dir!r}")
    for m in mounts:
        if "subPath" in m or "subPathExpr" in m:
            errors.append(f"{where}: the keys mount uses subPath, which never updates")
        vol = volumes.get(m.get("name")) or {}
        if "secret" not in vol:
            errors.append(f"{where}: the keys volume {m.get('name')!r} is not a Secret")
    return errors


def cmd_workloads(root):
    """Restricted Pod Security and resources on every container; the revokd
    container's probes, env and key mount; the Component's sidecar equal to
    the example's."""
    errors = []
    sidecars = {}
    for path, name, spec in pod_templates(root):
        psc = spec.get("securityContext") or {}
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        is_patch = "containers" not in spec
        if not is_patch and psc.get("runAsNonRoot") is not True:
            errors.append(f"{path} {name}: pod securityContext.runAsNonRoot is not true")
        has_revokd = any(c.get("name") == "revokd"
                         for f in ("initContainers", "containers") for c in spec.get(f) or [])
        for field in ("initContainers", "containers"):
            for c in spec.get(field) or []:
                where = f"{path} {name} {field}/{c.get('name')}"
                if is_patch and "image" not in c:
                    # Patches part of a container another file defines (its
                    # env, say): checked in the rendered output instead.
                    errors += check_revokd_env(where, c)
                    continue
                errors += check_container(where, c)
                if c.get("name") == "revokd":
                    errors += check_revokd(where, c, volumes, field == "initContainers")
                    sidecars[path] = (field, c, volumes.get("revokd-keys"))
                elif has_revokd and field == "containers":
                    env = {e["name"]: e.get("value") for e in c.get("env") or []}
                    if env.get("REVOKD_ADDR") != "http://127.0.0.1:50051":
                        errors.append(f"{where}: env REVOKD_ADDR is not http://127.0.0.1:50051")
    example = os.path.join(root, "app-with-sidecar.yaml")
    component = os.path.join(root, "components", "revokd-sidecar", "sidecar-patch.yaml")
    if example in sidecars and component in sidecars:
        if sidecars[example] != sidecars[component]:
            errors.append(f"{component}: the revokd container or keys volume differs from {example}")
    else:
        errors.append(f"no revokd sidecar found in {example} and {component}")
    for e in errors:
        print(e)
    return 1 if errors else 0


def selects(selector, labels):
    """A label selector (matchLabels, or a Service's plain map) selects
    labels. matchExpressions are not used here and count as no match."""
    if not selector or selector.get("matchExpressions"):
        return False
    match = selector.get("matchLabels", selector) if "matchLabels" in selector else selector
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def selects_pods(selector, labels):
    """A NetworkPolicy's podSelector selects labels: an empty one selects
    every pod."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return True
    return selects(selector, labels)


def template_labels(o):
    """The labels of a workload's pods."""
    if o.get("kind") == "Pod":
        return (o.get("metadata") or {}).get("labels") or {}
    return ((o["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}


def np_allows(policies, direction, target, peer, port):
    """Whether the NetworkPolicies of one namespace let pods labelled peer
    reach pods labelled target on port (direction "ingress"), or pods
    labelled target reach pods labelled peer on it ("egress"). Pods no
    policy isolates in that direction are open. Peers in other namespaces
    and named ports do not count."""
    kind = direction.capitalize()
    key = "from" if direction == "ingress" else "to"
    isolating = []
    for np in policies:
        spec = np.get("spec") or {}
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        if kind in types and selects_pods(spec.get("podSelector"), target):
            isolating.append(spec)
    if not isolating:
        return True
    for spec in isolating:
        for rule in spec.get(direction) or []:
            peers = rule.get(key)
            ports = rule.get("ports")
            peer_ok = not peers or any("podSelector" in p and "namespaceSelector" not in p
                                       and selects_pods(p["podSelector"], peer) for p in peers)
            port_ok = not ports or any(pp.get("port") in (None, port) for pp in ports)
            if peer_ok and port_ok:
                return True
    return False


def conf_value(text, key):
    """The last value a redis.conf-style text sets for key, else None."""
    values = re.findall(rf"^{re.escape(key)}[ \t]+(.+?)[ \t]*$", text, re.M)
    return values[-1].strip('"') if values else None


def cluster_statefulsets(by_kind):
    """{StatefulSet name: (its pods' redis.conf text, the ConfigMap's data)}
    of the rendered StatefulSets whose mounted ConfigMap holds a config with
    cluster-enabled yes: the Redis Cluster nodes."""
    found = {}
    configmaps = by_kind.get("ConfigMap", {})
    for name, o in (by_kind.get("StatefulSet") or {}).items():
        for v in (pod_spec(o) or {}).get("volumes") or []:
            data = (configmaps.get((v.get("configMap") or {}).get("name")) or {}).get("data") or {}
            for text in data.values():
                if conf_value(text, "cluster-enabled") == "yes":
                    found[name] = (text, data)
    return found


def check_clusters(path, by_kind):
    """Each Redis Cluster StatefulSet: client and bus ports on its pods and
    headless Service, nodes.conf and the AOF on a claimed volume, the
    announced IP from the downward API, a PodDisruptionBudget, a create
    Job whose node count and Service match, and NetworkPolicies that let
    the nodes reach each other (client and bus ports), revokd's pods and
    the create Job reach every node."""
    errors = []
    policies = list((by_kind.get("NetworkPolicy") or {}).values())
    services = by_kind.get("Service", {})
    for name, (conf, data) in cluster_statefulsets(by_kind).items():
        o = by_kind["StatefulSet"][name]
        where = f"{path}: StatefulSet/{name} (Redis Cluster)"
        spec = pod_spec(o)
        labels = template_labels(o)
        port = int(conf_value(conf, "port") or 6379)
        bus = int(conf_value(conf, "cluster-port") or port + 10000)
        replicas = o["spec"].get("replicas", 1)
        containers = spec.get("containers") or []
        exposed = {p.get("containerPort") for c in containers for p in c.get("ports") or []}
        for p, what in ((port, "client"), (bus, "bus")):
            if p not in exposed:
                errors.append(f"{where}: no container port {p} ({what})")
        svc = services.get(o["spec"].get("serviceName")) or {}
        if svc:
            if not {port, bus} <= {p.get("port") for p in svc["spec"].get("ports") or []}:
                errors.append(f"{where}: Service {svc['metadata']['name']} lacks port {port} or {bus}")
            if svc["spec"].get("publishNotReadyAddresses") is not True:
                errors.append(f"{where}: Service {svc['metadata']['name']} must publishNotReadyAddresses "
                              "(nodes and the create Job resolve the names while the cluster forms)")
        # nodes.conf and the AOF must survive a restart: on a claimed volume.
        data_dir = conf_value(conf, "dir") or "/data"
        nodes_conf = os.path.join(data_dir, conf_value(conf, "cluster-config-file") or "nodes.conf")
        claimed = {t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates") or []}
        redis = next((c for c in containers if port in {p.get("containerPort") for p in c.get("ports") or []}),
                     None) or {}
        for directory, what in ((os.path.dirname(nodes_conf), "cluster-config-file (the node's identity)"),
                                (data_dir, "dir (the AOF)")):
            # The deepest mount holding the directory.
            mounts = [m for m in redis.get("volumeMounts") or []
                      if os.path.commonpath([m.get("mountPath", "/"), directory]) == m.get("mountPath")]
            mount = max(mounts, key=lambda m: len(m["mountPath"]), default=None)
            if mount is None or mount.get("name") not in claimed:
                errors.append(f"{where}: {what} {directory} is not on a volumeClaimTemplate volume")
        if conf_value(conf, "appendonly") != "yes":
            errors.append(f"{where}: appendonly is not yes")
        pod_ip = any(((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == "status.podIP"
                     for f in ("initContainers", "containers") for c in spec.get(f) or []
                     for e in c.get("env") or [])
        if conf_value(conf, "cluster-announce-ip") is None and not pod_ip:
            errors.append(f"{where}: no cluster-announce-ip and no status.podIP from the downward API")
        if not any(selects(pdb["spec"].get("selector"), labels) and pdb["spec"].get("maxUnavailable") == 1
                   for pdb in (by_kind.get("PodDisruptionBudget") or {}).values()):
            errors.append(f"{where}: no PodDisruptionBudget with maxUnavailable 1 selects its pods")
        # The create Job's script: one node per pod, the same Service.
        scripts = [t for t in data.values() if "--cluster create" in t]
        if not scripts:
            errors.append(f"{where}: no script running redis-cli --cluster create in its ConfigMap")
        for script in scripts:
            nodes = re.search(r"^nodes=(\d+)$", script, re.M)
            svc_name = re.search(r"^svc=(\S+)$", script, re.M)
            per_primary = re.search(r"--cluster-replicas (\d+)", script)
            per_shard = 1 + (int(per_primary[1]) if per_primary else 0)
            if not nodes or int(nodes[1]) != replicas:
                errors.append(f"{where}: the create script's nodes= is not its {replicas} replicas")
            if not svc_name or svc_name[1] != o["spec"].get("serviceName"):
                errors.append(f"{where}: the create script's svc= is not its serviceName")
            if replicas % per_shard or replicas // per_shard < 3:
                errors.append(f"{where}: {replicas} replicas do not make 3 or more shards of {per_shard} nodes")
        mounted = {v["configMap"].get("name") for v in spec.get("volumes") or [] if "configMap" in v}
        jobs = [j for j in (by_kind.get("Job") or {}).values()
                if any(v["configMap"].get("name") in mounted
                       for v in (pod_spec(j) or {}).get("volumes") or [] if "configMap" in v)]
        if not jobs:
            errors.append(f"{where}: no Job mounts its ConfigMap to create the cluster")
        peers = [(labels, port, "the nodes (replication)"), (labels, bus, "the nodes (cluster bus)"),
                 (REVOKD_POD_LABELS, port, "revokd's pods (revokd-sidecar: enabled)")]
        peers += [(template_labels(j), port, f"Job/{j['metadata']['name']}") for j in jobs]
        for peer, p, what in peers:
            if not np_allows(policies, "ingress", labels, peer, p):
                errors.append(f"{where}: the NetworkPolicies keep {what} from port {p}")
    return errors


def check_references(path, objects):
    """What the rendered objects name exists among them: ConfigMaps and
    Secrets (but the hand-made ones), a StatefulSet's headless Service,
    the pods Services, PodDisruptionBudgets and NetworkPolicies select,
    named ports, the Redis hosts in revokd's REVOKD_REDIS_URL, and what a
    Redis Cluster needs (check_clusters)."""
    errors = []
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o.get("kind"), {})[(o.get("metadata") or {}).get("name")] = o
    workloads = [(o, pod_spec(o)) for o in objects
                 if o.get("kind") in WORKLOAD_KINDS and pod_spec(o) is not None]

    pod_labels = template_labels

    def port_names(spec):
        return {p.get("name") for f in ("initContainers", "containers")
                for c in spec.get(f) or [] for p in c.get("ports") or []}

    services = by_kind.get("Service", {})
    configmaps = by_kind.get("ConfigMap", {})
    secrets = set(by_kind.get("Secret", {})) | EXTERNAL_SECRETS
    sentinel_masters = set()
    for cm in configmaps.values():
        for value in (cm.get("data") or {}).values():
            sentinel_masters |= set(re.findall(r"^sentinel monitor (\S+)", value, re.M))

    def need(kind, name, have, where):
        if name not in have:
            errors.append(f"{path}: {where}: {kind} {name!r} is not in the rendered output")

    for o, spec in workloads:
        name = f"{o['kind']}/{o['metadata'].get('name')}"
        labels = pod_labels(o)
        for v in spec.get("volumes") or []:
            if "configMap" in v:
                need("ConfigMap", v["configMap"].get("name"), configmaps, f"{name} volume {v.get('name')}")
            if "secret" in v:
                need("Secret", v["secret"].get("secretName"), secrets, f"{name} volume {v.get('name')}")
        for f in ("initContainers", "containers"):
            for c in spec.get(f) or []:
                where = f"{name} {f}/{c.get('name')}"
                for e in c.get("env") or []:
                    ref = e.get("valueFrom") or {}
                    if "configMapKeyRef" in ref:
                        need("ConfigMap", ref["configMapKeyRef"].get("name"), configmaps, f"{where} env {e['name']}")
                    if "secretKeyRef" in ref:
                        need("Secret", ref["secretKeyRef"].get("name"), secrets, f"{where} env {e['name']}")
                for e in c.get("envFrom") or []:
                    if "configMapRef" in e:
                        need("ConfigMap", e["configMapRef"].get("name"), configmaps, f"{where} envFrom")
                    if "secretRef" in e:
                        need("Secret", e["secretRef"].get("name"), secrets, f"{where} envFrom")
                for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                    probe = c.get(kind) or {}
                    port = (probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc") or {}).get("port")
                    if isinstance(port, str) and port not in {p.get("name") for p in c.get("ports") or []}:
                        errors.append(f"{path}: {where} {kind}: no container port named {port!r}")
                if c.get("name") == "revokd":
                    errors += check_redis_url(path, where, c, by_kind, sentinel_masters, labels)
        if o["kind"] == "StatefulSet":
            svc = services.get(o["spec"].get("serviceName"))
            if svc is None:
                errors.append(f"{path}: {name}: serviceName {o['spec'].get('serviceName')!r} is not a rendered Service")
            else:
                if svc["spec"].get("clusterIP") != "None":
                    errors.append(f"{path}: {name}: Service {svc['metadata']['name']} is not headless")
                if not selects(svc["spec"].get("selector"), labels):
                    errors.append(f"{path}: {name}: Service {svc['metadata']['name']} does not select its pods")

    for svc in services.values():
        sel = svc["spec"].get("selector")
        matched = [spec for o, spec in workloads if selects(sel, pod_labels(o))]
        if sel and not matched:
            errors.append(f"{path}: Service/{svc['metadata']['name']} selects no rendered pods")
        for p in svc["spec"].get("ports") or []:
            target = p.get("targetPort")
            if isinstance(target, str) and matched and not any(target in port_names(s) for s in matched):
                errors.append(f"{path}: Service/{svc['metadata']['name']}: no selected pod has a port named {target!r}")
    errors += check_clusters(path, by_kind)
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(selects(pdb["spec"].get("selector"), pod_labels(o)) for o, _ in workloads):
            errors.append(f"{path}: PodDisruptionBudget/{pdb['metadata']['name']} selects no rendered pods")
    for np in by_kind.get("NetworkPolicy", {}).values():
        where = f"NetworkPolicy/{np['metadata']['name']}"
        selectors = [("podSelector", np["spec"].get("podSelector"))]
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in np["spec"].get(direction) or []:
                for peer in rule.get(key) or []:
                    # Peers in other namespaces are not in this render.
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        selectors.append((f"{direction} {key}", peer["podSelector"]))
        for field, sel in selectors:
            if sel == {"matchLabels": REVOKD_POD_LABELS}:
                continue
            if sel and not any(selects(sel, pod_labels(o)) for o, _ in workloads):
                errors.append(f"{path}: {where}: {field} {sel} selects no rendered pods")
    return errors


def check_redis_url(path, where, c, by_kind, sentinel_masters, pod_labels):
    """Every host of REVOKD_REDIS_URL is a rendered Service (redis://HOST)
    or a pod of a rendered StatefulSet behind its headless Service
    (NAME-N.SERVICE), on a port that Service has; a Sentinel URL's service
    name is one the rendered sentinel config monitors; a Cluster URL's seeds
    are Redis Cluster nodes, which revokd's pods (labelled pod_labels) may
    reach, every one of them, and any other URL's hosts are not."""
    env = {e.get("name"): e.get("value") for e in c.get("env") or []}
    url = env.get("REVOKD_REDIS_URL") or ""
    m = re.match(r"^(rediss?(?:-sentinel|-cluster)?)://(?:[^/@]*@)?([^/]+)(?:/(.*))?$", url)
    if not m:
        return [f"{path}: {where}: REVOKD_REDIS_URL {url!r} is not a redis[s][-sentinel|-cluster]:// URL"]
    scheme, hosts, rest = m.groups()
    errors = []
    services = by_kind.get("Service", {})
    statefulsets = by_kind.get("StatefulSet", {})
    clusters = cluster_statefulsets(by_kind)
    policies = list((by_kind.get("NetworkPolicy") or {}).values())
    checked = set()
    default_port = 26379 if scheme.endswith("sentinel") else 6379
    for hostport in hosts.split(","):
        host, _, port = hostport.partition(":")
        port = int(port) if port else default_port
        labels = host.split(".")
        svc_name = labels[1] if len(labels) > 1 and labels[1] in services else labels[0]
        svc = services.get(svc_name)
        if svc is None:
            errors.append(f"{path}: {where}: REVOKD_REDIS_URL host {host!r}: no rendered Service {svc_name!r}")
            continue
        if port not in [p.get("port") for p in svc["spec"].get("ports") or []]:
            errors.append(f"{path}: {where}: REVOKD_REDIS_URL host {host!r}: Service {svc_name} has no port {port}")
        if svc_name != labels[0]:
            pod = re.match(r"^(.+)-(\d+)$", labels[0])
            sts = statefulsets.get(pod.group(1)) if pod else None
            if sts is None or sts["spec"].get("serviceName") != svc_name:
                errors.append(f"{path}: {where}: REVOKD_REDIS_URL host {host!r} is no pod of a StatefulSet "
                              f"with serviceName {svc_name}")
            elif int(pod.group(2)) >= sts["spec"].get("replicas", 1):
                errors.append(f"{path}: {where}: REVOKD_REDIS_URL host {host!r}: StatefulSet "
                              f"{pod.group(1)} has only {sts['spec'].get('replicas', 1)} replicas")
        # The StatefulSet behind the host: the pod's, or the one the
        # Service selects.
        sts = next((o for o in statefulsets.values()
                    if o["spec"].get("serviceName") == svc_name
                    and selects(svc["spec"].get("selector"), template_labels(o))), None)
        if sts is None:
            continue
        sts_name = sts["metadata"]["name"]
        if (sts_name, port) in checked:
            continue
        checked.add((sts_name, port))
        if scheme.endswith("cluster") != (sts_name in clusters):
            errors.append(f"{path}: {where}: REVOKD_REDIS_URL is {scheme}:// but host {host!r} "
                          f"{'is' if sts_name in clusters else 'is not'} a Redis Cluster node "
                          f"(StatefulSet {sts_name})")
        # revokd connects to every node of a cluster, to the seeds alone
        # otherwise (Sentinel's data nodes are not in the URL).
        if not np_allows(policies, "egress", pod_labels, template_labels(sts), port):
            errors.append(f"{path}: {where}: the NetworkPolicies keep revokd's pods from "
                          f"StatefulSet {sts_name}'s pods on port {port}")
    if scheme.endswith("sentinel") and (rest or "") not in sentinel_masters:
        errors.append(f"{path}: {where}: REVOKD_REDIS_URL names master {rest!r}; the rendered sentinel "
                      f"config monitors {sorted(sentinel_masters) or 'none'}")
    return errors


def cmd_rendered(*paths):
    """The output of `kubectl kustomize` of each kustomization: restricted
    security, resources and probes on every container, revokd's settings,
    and that everything the objects name is among them."""
    errors = []
    for path in paths:
        objects = load_objects(path)
        if not objects:
            errors.append(f"{path}: no objects rendered")
        for o in objects:
            spec = pod_spec(o) if o.get("kind") in WORKLOAD_KINDS else None
            if spec is None:
                continue
            name = f"{path} {o['kind']}/{o['metadata'].get('name')}"
            if (spec.get("securityContext") or {}).get("runAsNonRoot") is not True:
                errors.append(f"{name}: pod securityContext.runAsNonRoot is not true")
            volumes = {v.get("name"): v for v in spec.get("volumes") or []}
            has_revokd = any(c.get("name") == "revokd"
                             for f in ("initContainers", "containers") for c in spec.get(f) or [])
            for field in ("initContainers", "containers"):
                for c in spec.get(field) or []:
                    where = f"{name} {field}/{c.get('name')}"
                    errors += check_container(where, c)
                    if c.get("name") == "revokd":
                        errors += check_revokd(where, c, volumes, field == "initContainers")
                    elif has_revokd and field == "containers":
                        env = {e["name"]: e.get("value") for e in c.get("env") or []}
                        if env.get("REVOKD_ADDR") != "http://127.0.0.1:50051":
                            errors.append(f"{where}: env REVOKD_ADDR is not http://127.0.0.1:50051")
        errors += check_references(path, objects)
    for e in errors:
        print(e)
    return 1 if errors else 0


def cmd_component_chain(deploy_dir, out_dir, redis="sentinel"):
    """Writes to out_dir the kustomization deploy/README.md shows for your
    own Deployment with the Sentinel Redis (redis "sentinel") or the Redis
    Cluster ("cluster"): that deployment as a resource, then the
    revokd-sidecar and redis-<redis>-client components, so that validate.sh
    renders and checks it like the others."""
    if redis not in ("sentinel", "cluster"):
        print(f"component-chain: unknown Redis {redis!r}: sentinel or cluster")
        return 1
    os.makedirs(out_dir, exist_ok=True)
    # kustomize takes no absolute roots: relative to the kustomization.
    k8s = os.path.relpath(os.path.join(deploy_dir, "kubernetes"), out_dir)
    restricted = {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "your-app", "labels": {"revokd-sidecar": "enabled"}},
        "spec": {
            "selector": {"matchLabels": {"app": "your-app"}},
            "template": {
                "metadata": {"labels": {"app": "your-app"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "app", "image": "registry.k8s.io/pause:3.10",
                        "env": [{"name": "REVOKD_ADDR", "value": "http://127.0.0.1:50051"}],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                        "securityContext": restricted,
                    }],
                },
            },
        },
    }
    kustomization = {
        "apiVersion": KUSTOMIZE_API + "v1beta1", "kind": "Kustomization",
        "resources": ["deployment.yaml", os.path.join(k8s, f"redis-{redis}")],
        "components": [os.path.join(k8s, "components", "revokd-sidecar"),
                       os.path.join(k8s, "components", f"redis-{redis}-client")],
    }
    for name, doc in (("deployment.yaml", deployment), ("kustomization.yaml", kustomization)):
        with open(os.path.join(out_dir, name), "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
    return 0


def cmd_rules_match(plain_path, crd_path):
    """The PrometheusRule's spec.groups equal the plain rule file's groups."""
    (plain,) = load_docs(plain_path)
    (crd,) = load_docs(crd_path)
    errors = []
    if crd.get("apiVersion") != "monitoring.coreos.com/v1" or crd.get("kind") != "PrometheusRule":
        errors.append(f"{crd_path}: not a monitoring.coreos.com/v1 PrometheusRule")
    if plain.get("groups") != (crd.get("spec") or {}).get("groups"):
        errors.append(f"{crd_path}: spec.groups differ from the groups of {plain_path}")
    for e in errors:
        print(e)
    return 1 if errors else 0


def dashboard_exprs(dash):
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels") or [])
            for t in p.get("targets") or []:
                if t.get("expr"):
                    yield p, t["expr"]
    yield from walk(dash.get("panels") or [])


def cmd_dashboard(path, rules_out):
    """Grafana import shape: a DS_PROMETHEUS input that every panel and
    query uses, unique panel ids, grid positions. Writes the panel queries,
    with Grafana's variables filled in, as recording rules to rules_out so
    promtool can check their PromQL."""
    with open(path) as f:
        dash = json.load(f)
    errors = []
    if not any(i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource"
               for i in dash.get("__inputs") or []):
        errors.append("no DS_PROMETHEUS datasource input in __inputs")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append(f"schemaVersion {dash.get('schemaVersion')!r} is older than 36")
    ids = set()

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels") or [])

    for p in walk(dash.get("panels") or []):
        title = p.get("title")
        if p.get("id") in ids:
            errors.append(f"panel {title!r}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        if not all(k in (p.get("gridPos") or {}) for k in ("h", "w", "x", "y")):
            errors.append(f"panel {title!r}: incomplete gridPos")
        if p.get("type") == "row":
            continue
        for holder in [p] + list(p.get("targets") or []):
            if (holder.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
                errors.append(f"panel {title!r}: datasource is not ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            errors.append(f"panel {title!r}: no queries")
    rules = []
    for i, (p, expr) in enumerate(dashboard_exprs(dash)):
        expr = (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
                .replace("$namespace", ".*").replace("$pod", ".*"))
        if "$" in re.sub(r"\{\{.*?\}\}", "", expr):
            errors.append(f"panel {p.get('title')!r}: unknown variable in {expr!r}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    with open(rules_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f)
    for e in errors:
        print(f"{path}: {e}")
    return 1 if errors else 0


def cmd_metric_names(*paths):
    """Every revokd_* name the rules, tests and dashboard use is one revokd
    exports."""
    names, histograms = described_metrics()
    errors = []
    if not names:
        errors.append(f"{METRICS_RS}: no describe_counter!/describe_gauge!/describe_histogram!(\"revokd_...\") found")
    # Histograms are exported as _bucket/_sum/_count series.
    known = names | {h + suffix for h in histograms for suffix in ("_bucket", "_sum", "_count")}
    for path in paths:
        with open(path) as f:
            text = f.read()
        for name in sorted(set(re.findall(r"\brevokd_[a-z0-9_]+", text))):
            if name not in known:
                errors.append(f"{path}: unknown metric {name}")
    for e in errors:
        print(e)
    return 1 if errors else 0


EDGE_HEADERS = {"x-jwt-subject", "x-jwt-id", "x-jwt-session-id"}
# revokd's listeners as deploy/edge uses them: the gRPC listener (loopback, in
# the pod), the HTTP API listener (forward-auth) and the ext_authz-only
# listener a proxy outside the pod calls through a Service.
REVOKD_GRPC_PORT, REVOKD_HTTP_PORT, REVOKD_AUTHZ_PORT = 50051, 50052, 50053
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def is_k8s_object(doc):
    return isinstance(doc, dict) and bool(doc.get("apiVersion")) and bool(doc.get("kind"))


def edge_config_files(root):
    """(kind, path) of the proxy configurations under deploy/edge: "envoy"
    for Envoy bootstraps (envoy/), "traefik-file" for Traefik file-provider
    configs (a top-level `http:`), "k8s" for files of Kubernetes objects."""
    for path in yaml_files(root):
        if os.sep + "envoy" + os.sep in path:
            yield "envoy", path
            continue
        docs = load_docs(path)
        if docs and all(isinstance(d, dict) and "http" in d and "apiVersion" not in d for d in docs):
            yield "traefik-file", path
        else:
            yield "k8s", path


def cmd_edge_manifests(root):
    """Lists the files of Kubernetes objects under root (for
    kubernetes-validate): not the Envoy bootstraps, not Traefik's file
    configs."""
    for kind, path in edge_config_files(root):
        if kind == "k8s":
            print(path)
    return 0


def check_forward_auth(where, fa):
    """A Traefik forwardAuth (CRD spec or file config): revokd's endpoint,
    the identity headers copied, every other client X-Jwt-* header dropped."""
    errors = []
    if "/authz/check" not in (fa.get("address") or ""):
        errors.append(f"{where}: forwardAuth.address is not revokd's /authz/check")
    have = {h.lower() for h in fa.get("authResponseHeaders") or []}
    if not EDGE_HEADERS <= have:
        errors.append(f"{where}: authResponseHeaders lacks {sorted(EDGE_HEADERS - have)}")
    # Traefik deletes the request's headers the regex matches (canonical
    # names), then copies the auth response's: a forged X-Jwt-Role is gone.
    regex = fa.get("authResponseHeadersRegex") or ""
    try:
        clears = bool(regex) and re.search(regex, "X-Jwt-Role") and not re.search(regex, "Authorization")
    except re.error as e:
        clears = False
        errors.append(f"{where}: authResponseHeadersRegex {regex!r}: {e}")
    if not clears:
        errors.append(f"{where}: authResponseHeadersRegex must match every X-Jwt-* header "
                      f"(e.g. ^X-Jwt-), so a client's forged ones are deleted; got {regex!r}")
    if fa.get("trustForwardHeader") is True:
        errors.append(f"{where}: trustForwardHeader must not be true")
    if fa.get("forwardBody") is True:
        errors.append(f"{where}: forwardBody: revokd reads headers only")
    return errors


def mesh_providers(doc):
    """{name: provider} of a ConfigMap `istio` (data.mesh) or an IstioOperator
    (spec.meshConfig); None for other objects."""
    if doc["kind"] == "ConfigMap" and "mesh" in (doc.get("data") or {}):
        mesh = yaml.safe_load(doc["data"]["mesh"]) or {}
    elif doc["kind"] == "IstioOperator":
        mesh = (doc.get("spec") or {}).get("meshConfig") or {}
    else:
        return None
    return {p.get("name"): p for p in mesh.get("extensionProviders") or []}


def ns_of(doc):
    return (doc.get("metadata") or {}).get("namespace") or "default"


def service_host(svc):
    m = svc["metadata"]
    return f"{m['name']}.{ns_of(svc)}.svc.cluster.local"


def restricted_callers(policies, svc, port):
    """The ingress peers the NetworkPolicies of the Service's namespace let
    reach the Service's pods on port, or None when any source may (no
    policy isolates them, or a rule without `from` admits the port)."""
    target = svc["spec"].get("selector") or {}
    isolating = [np["spec"] for np in policies
                 if ns_of(np) == ns_of(svc)
                 and "Ingress" in (np["spec"].get("policyTypes") or ["Ingress"])
                 and selects_pods(np["spec"].get("podSelector"), target)]
    if not isolating:
        return None
    peers = []
    for spec in isolating:
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("port") in (None, port) for pp in ports):
                continue
            if not rule.get("from"):
                return None
            peers += rule["from"]
    return peers


def peer_admits(peer, namespace, labels):
    """A NetworkPolicy peer admits pods labelled labels in namespace (the
    namespace matched by its kubernetes.io/metadata.name label)."""
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is None:
        return False  # same-namespace peers: callers here live elsewhere
    if not selects_pods(ns_sel, {"kubernetes.io/metadata.name": namespace}):
        return False
    return selects_pods(peer.get("podSelector"), labels)


def cmd_edge(root):
    """The proxies' Kubernetes objects and Traefik file configs under root
    (Istio, Envoy Gateway, Traefik: CRDs without bundled schemas): each
    object parses with apiVersion, kind and metadata.name; every proxy fails
    closed, points at revokd's endpoints and forwards the identity headers;
    each Istio provider's host exists (a loopback ServiceEntry, or a Service
    here), and a Service that exposes revokd's ext_authz listener is limited
    by a NetworkPolicy to the proxies that call it."""
    errors = []
    docs = []
    for kind, path in edge_config_files(root):
        if kind == "envoy":
            continue  # checked by Envoy itself and by `validate.py envoy`
        if kind == "traefik-file":
            for doc in load_docs(path):
                middlewares = (doc.get("http") or {}).get("middlewares") or {}
                checks = [(n, m["forwardAuth"]) for n, m in middlewares.items() if "forwardAuth" in m]
                if not checks:
                    errors.append(f"{path}: no forwardAuth middleware")
                for name, fa in checks:
                    errors += check_forward_auth(f"{path}: middleware {name}", fa)
                for name, router in ((doc.get("http") or {}).get("routers") or {}).items():
                    if not any(m in dict(checks) for m in router.get("middlewares") or []):
                        errors.append(f"{path}: router {name} skips the revokd check")
            continue
        for doc in load_docs(path):
            if not is_k8s_object(doc) or not (doc.get("metadata") or {}).get("name"):
                errors.append(f"{path}: a document without apiVersion, kind and metadata.name")
                continue
            docs.append((path, doc))
    by_kind = {}
    for path, doc in docs:
        by_kind.setdefault(doc["kind"], []).append((path, doc))
    services = {service_host(d): d for _, d in by_kind.get("Service", [])}
    service_entries = {h: d for _, d in by_kind.get("ServiceEntry", [])
                       for h in (d.get("spec") or {}).get("hosts") or []}
    policies = [d for _, d in by_kind.get("NetworkPolicy", [])]

    # Istio: every declaration of the providers (ConfigMap, IstioOperator)
    # says the same, and each provider fails closed with a timeout.
    providers, declared = {}, []
    for path, doc in docs:
        found = mesh_providers(doc)
        if found is None:
            continue
        declared.append((f"{path}: {doc['kind']}/{doc['metadata']['name']}", found))
        providers.update(found)
    for where, found in declared[1:]:
        if found != declared[0][1]:
            errors.append(f"{where}: extensionProviders differ from {declared[0][0]}")
    authz_callers = {}  # Service host -> [(namespace, pod labels) that call it]
    for name, p in providers.items():
        grpc = p.get("envoyExtAuthzGrpc")
        if grpc is None:
            errors.append(f"provider {name}: not envoyExtAuthzGrpc (revokd serves ext_authz over gRPC)")
            continue
        if grpc.get("failOpen") is not False:
            errors.append(f"provider {name}: must set failOpen: false")
        if not grpc.get("service") or not grpc.get("port") or not grpc.get("timeout"):
            errors.append(f"provider {name}: needs service, port and timeout")
            continue
        host, port = grpc["service"], grpc["port"]
        if host in service_entries:
            se = service_entries[host]["spec"]
            if not any(pp.get("number") == port and str(pp.get("protocol", "")).upper() in ("GRPC", "HTTP2")
                       for pp in se.get("ports") or []):
                errors.append(f"provider {name}: ServiceEntry {host} has no GRPC port {port}")
            if port != REVOKD_GRPC_PORT or not all(e.get("address") in LOOPBACK for e in se.get("endpoints") or [{}]):
                errors.append(f"provider {name}: ServiceEntry {host} is not revokd's loopback "
                              f"gRPC listener 127.0.0.1:{REVOKD_GRPC_PORT}")
        elif host in services:
            svc = services[host]
            ports = {pp.get("port"): pp.get("targetPort", pp.get("port")) for pp in svc["spec"].get("ports") or []}
            if ports.get(port) != REVOKD_AUTHZ_PORT:
                errors.append(f"provider {name}: Service {host} port {port} (targetPort {ports.get(port)}) is not "
                              f"revokd's ext_authz-only listener ({REVOKD_AUTHZ_PORT}, --authz-addr)")
            # The workloads' Istio proxies call the provider: those of the
            # CUSTOM policies naming it, else of every CUSTOM policy here
            # (the examples name the other provider; switching is one word).
            aps = [ap for _, ap in by_kind.get("AuthorizationPolicy", [])
                   if (ap.get("spec") or {}).get("action") == "CUSTOM"]
            naming = [ap for ap in aps if (ap["spec"].get("provider") or {}).get("name") == name]
            for ap in naming or aps:
                labels = ((ap["spec"].get("selector") or {}).get("matchLabels")) or {}
                authz_callers.setdefault(host, []).append((ns_of(ap), labels))
            authz_callers.setdefault(host, [])
        else:
            errors.append(f"provider {name}: host {host} is neither a ServiceEntry nor a Service under {root}")
    for path, ap in by_kind.get("AuthorizationPolicy", []):
        spec = ap.get("spec") or {}
        name = (spec.get("provider") or {}).get("name")
        if spec.get("action") != "CUSTOM" or name not in providers:
            errors.append(f"{path}: AuthorizationPolicy must be action CUSTOM with a declared provider "
                          f"(declared: {sorted(providers)}), not {spec.get('action')}/{name}")
        if not ((spec.get("selector") or {}).get("matchLabels")):
            errors.append(f"{path}: AuthorizationPolicy selects no workload (a CUSTOM policy without a "
                          "selector applies to the whole namespace)")

    # Envoy Gateway: fail closed, gRPC to a Service here (or referenced).
    for path, sp in by_kind.get("SecurityPolicy", []):
        where = f"{path}: SecurityPolicy/{sp['metadata']['name']}"
        ext = (sp.get("spec") or {}).get("extAuth") or {}
        if ext.get("failOpen") is not False:
            errors.append(f"{where}: extAuth.failOpen must be false")
        refs = (ext.get("grpc") or {}).get("backendRefs") or []
        if not refs:
            errors.append(f"{where}: extAuth.grpc.backendRefs is empty")
        if not (sp.get("spec") or {}).get("targetRefs") and not (sp.get("spec") or {}).get("targetRef"):
            errors.append(f"{where}: no targetRefs")
        for ref in refs:
            host = f"{ref.get('name')}.{ref.get('namespace') or ns_of(sp)}.svc.cluster.local"
            svc = services.get(host)
            if svc is None:
                errors.append(f"{where}: backendRef {host} is no Service under {root}")
                continue
            ports = {pp.get("port"): pp.get("targetPort", pp.get("port")) for pp in svc["spec"].get("ports") or []}
            if ports.get(ref.get("port")) != REVOKD_AUTHZ_PORT:
                errors.append(f"{where}: backendRef {host}:{ref.get('port')} (targetPort "
                              f"{ports.get(ref.get('port'))}) is not revokd's ext_authz-only listener "
                              f"({REVOKD_AUTHZ_PORT})")
            authz_callers.setdefault(host, []).append(
                ("envoy-gateway-system", {"app.kubernetes.io/managed-by": "envoy-gateway",
                                          "app.kubernetes.io/component": "proxy"}))
            if (ref.get("namespace") or ns_of(sp)) != ns_of(sp) and not any(
                    ns_of(g) == ref.get("namespace")
                    and any(f.get("kind") == "SecurityPolicy" and f.get("namespace") == ns_of(sp)
                            for f in g["spec"].get("from") or [])
                    for _, g in by_kind.get("ReferenceGrant", [])):
                errors.append(f"{where}: backendRef {host} is in another namespace and no ReferenceGrant allows it")

    # A revokd listener on the pod IP is limited to the proxies that call it.
    for host, callers in authz_callers.items():
        svc = services[host]
        peers = restricted_callers(policies, svc, REVOKD_AUTHZ_PORT)
        if peers is None:
            errors.append(f"Service {host}: no NetworkPolicy limits who reaches revokd's port {REVOKD_AUTHZ_PORT}")
            continue
        for ns, labels in callers:
            if not any(peer_admits(peer, ns, labels) for peer in peers):
                errors.append(f"Service {host}: the NetworkPolicies keep its callers (namespace {ns}, "
                              f"pods {labels}) from port {REVOKD_AUTHZ_PORT}")

    for path, mw in by_kind.get("Middleware", []):
        fa = (mw.get("spec") or {}).get("forwardAuth")
        if fa is not None:
            errors += check_forward_auth(f"{path}: Middleware/{mw['metadata']['name']}", fa)
    for e in errors:
        print(e)
    if not docs:
        print(f"no objects under {root}")
        return 1
    return 1 if errors else 0


def envoy_typed(filters, name):
    return [f.get("typed_config") or {} for f in filters if f.get("name") == name]


def cmd_envoy(*paths):
    """What `envoy --mode validate` accepts but revokd's advice forbids, in
    each Envoy bootstrap: admin on loopback; every ext_authz filter on the
    v3 API, failing closed (failure_mode_allow false, a 5xx on error), with
    a timeout and no request body, talking to a cluster on revokd's loopback
    listener (gRPC over HTTP/2, or /authz/check over HTTP with the identity
    headers let through); a route without the check only for health; no
    route removing x-jwt-* headers after the check."""
    errors = []
    for path in paths:
        (doc,) = load_docs(path)

        def err(msg):
            errors.append(f"{path}: {msg}")

        admin = ((doc.get("admin") or {}).get("address") or {}).get("socket_address") or {}
        if admin and admin.get("address") not in LOOPBACK:
            err(f"admin listens on {admin.get('address')}: loopback only (the admin API can stop Envoy)")
        static = doc.get("static_resources") or {}
        clusters = {c["name"]: c for c in static.get("clusters") or []}
        checked = 0
        for listener in static.get("listeners") or []:
            for chain in listener.get("filter_chains") or []:
                for hcm in envoy_typed(chain.get("filters") or [], "envoy.filters.network.http_connection_manager"):
                    http_filters = hcm.get("http_filters") or []
                    names = [f.get("name") for f in http_filters]
                    for ext in envoy_typed(http_filters, "envoy.filters.http.ext_authz"):
                        checked += 1
                        if names.index("envoy.filters.http.ext_authz") > names.index("envoy.filters.http.router"):
                            err("ext_authz comes after the router")
                        if ext.get("transport_api_version") != "V3":
                            err("ext_authz transport_api_version is not V3")
                        if ext.get("failure_mode_allow") is not False:
                            err("ext_authz must set failure_mode_allow: false (fail closed)")
                        if ext.get("include_peer_certificate"):
                            err("ext_authz include_peer_certificate: revokd does not read it")
                        if "with_request_body" in ext:
                            err("ext_authz with_request_body: revokd reads headers only")
                        code = ((ext.get("status_on_error") or {}).get("code"))
                        if code not in (None, "ServiceUnavailable", "InternalServerError", "GatewayTimeout"):
                            err(f"ext_authz status_on_error {code}: answer a failed check with a 5xx")
                        if "grpc_service" in ext:
                            g = ext["grpc_service"]
                            if not g.get("timeout"):
                                err("ext_authz grpc_service has no timeout")
                            cname = (g.get("envoy_grpc") or {}).get("cluster_name")
                            c = clusters.get(cname)
                            if c is None:
                                err(f"ext_authz grpc cluster {cname!r} is not defined")
                                continue
                            opts = ((c.get("typed_extension_protocol_options") or {})
                                    .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions") or {})
                            if "http2_protocol_options" not in (opts.get("explicit_http_config") or {}) \
                                    and "http2_protocol_options" not in c:
                                err(f"cluster {cname}: gRPC needs HTTP/2 (explicit_http_config.http2_protocol_options)")
                            want = REVOKD_GRPC_PORT
                        elif "http_service" in ext:
                            h = ext["http_service"]
                            uri = h.get("server_uri") or {}
                            if not uri.get("timeout"):
                                err("ext_authz http_service has no timeout")
                            if h.get("path_prefix") != "/authz/check":
                                err(f"ext_authz http_service path_prefix {h.get('path_prefix')!r} is not /authz/check")
                            resp = h.get("authorization_response") or {}
                            up = {(p.get("exact") or "").lower()
                                  for p in (resp.get("allowed_upstream_headers") or {}).get("patterns") or []}
                            if not EDGE_HEADERS <= up:
                                err(f"allowed_upstream_headers lacks {sorted(EDGE_HEADERS - up)}")
                            client = {(p.get("exact") or "").lower()
                                      for p in (resp.get("allowed_client_headers") or {}).get("patterns") or []}
                            if "www-authenticate" not in client:
                                err("allowed_client_headers lacks www-authenticate (the 401's challenge)")
                            cname = uri.get("cluster")
                            c = clusters.get(cname)
                            if c is None:
                                err(f"ext_authz http cluster {cname!r} is not defined")
                                continue
                            want = REVOKD_HTTP_PORT
                        else:
                            err("ext_authz has neither grpc_service nor http_service")
                            continue
                        for group in (c.get("load_assignment") or {}).get("endpoints") or []:
                            for lb in group.get("lb_endpoints") or []:
                                sa = ((lb.get("endpoint") or {}).get("address") or {}).get("socket_address") or {}
                                if sa.get("address") not in LOOPBACK or sa.get("port_value") != want:
                                    err(f"cluster {c['name']}: {sa.get('address')}:{sa.get('port_value')} is not "
                                        f"revokd's loopback listener 127.0.0.1:{want}")
                    for vh in (hcm.get("route_config") or {}).get("virtual_hosts") or []:
                        vh_removes = vh.get("request_headers_to_remove") or []
                        for route in vh.get("routes") or []:
                            where = f"route {route.get('match')}"
                            for h in vh_removes + (route.get("request_headers_to_remove") or []):
                                if h.lower().startswith("x-jwt-"):
                                    err(f"{where}: request_headers_to_remove {h} runs after ext_authz and "
                                        "strips revokd's header; revokd removes the client's itself")
                            per = (route.get("typed_per_filter_config") or {}).get("envoy.filters.http.ext_authz") or {}
                            if per.get("disabled"):
                                target = str(route.get("match", {}).get("path") or route.get("match", {}).get("prefix"))
                                if not re.search(r"health|ready|live", target):
                                    err(f"{where}: ext_authz disabled on a route that is not a health check")
                            aud = ((per.get("check_settings") or {}).get("context_extensions") or {})
                            if aud and not aud.get("audience"):
                                err(f"{where}: context_extensions without `audience` (revokd reads only that key)")
        if not checked:
            err("no ext_authz filter")
    for e in errors:
        print(e)
    return 1 if errors else 0


def cmd_nginx(path):
    """The auth_request snippet: the internal check location proxies to
    revokd's /authz/check without the body, and every location that checks
    copies revokd's three identity headers upstream."""
    with open(path) as f:
        text = re.sub(r"#[^\n]*", "", f.read())
    errors = []
    blocks = dict(re.findall(r"location\s+(=?\s*\S+)\s*\{(.*?)\n\}", text, re.S))
    internal = {k.lstrip("= ").strip(): v for k, v in blocks.items() if re.search(r"\binternal;", v)}
    if not internal:
        errors.append("no internal location for the check")
    for name, body in internal.items():
        for want, why in ((r"proxy_pass\s+http://[^;]*/authz/check;", "proxy_pass to revokd's /authz/check"),
                          (r"proxy_pass_request_body\s+off;", "proxy_pass_request_body off"),
                          (r'proxy_set_header\s+Content-Length\s+"";', 'proxy_set_header Content-Length ""'),
                          (r"proxy_set_header\s+X-Original-URI\s+\$request_uri;", "X-Original-URI")):
            if not re.search(want, body):
                errors.append(f"location {name}: lacks {why}")
    checking = {k: v for k, v in blocks.items() if "auth_request " in v}
    if not checking:
        errors.append("no location uses auth_request")
    for name, body in checking.items():
        target = re.search(r"auth_request\s+(\S+);", body).group(1)
        if target not in internal:
            errors.append(f"location {name}: auth_request {target} is no internal location here")
        for h in sorted(EDGE_HEADERS):
            var = re.search(r"auth_request_set\s+(\$\w+)\s+\$upstream_http_" + h.replace("-", "_") + ";", body)
            if not var or not re.search(r"proxy_set_header\s+" + h + r"\s+" + re.escape(var.group(1)) + ";", body, re.I):
                errors.append(f"location {name}: does not set {h} upstream from revokd's answer")
    for e in errors:
        print(f"{path}: {e}")
    return 1 if errors else 0


def cmd_dockerfile(path):
    """The image names its version and commit: GIT_SHA reaches the build as
    REVOKD_GIT_SHA (`revokd --version`, revokd_build_info), and the final
    stage labels version and revision from the same build arguments."""
    with open(path) as f:
        text = f.read()
    stages = re.split(r"(?m)^FROM\s", text)[1:]
    errors = []
    if len(stages) < 2:
        errors.append("expected a build stage and a final stage")
    else:
        build, final = stages[0], stages[-1]
        if not re.search(r"(?m)^ARG GIT_SHA\b", build) or not re.search(r"(?m)^ENV REVOKD_GIT_SHA=\$\{?GIT_SHA\}?", build):
            errors.append("the build stage does not pass ARG GIT_SHA on as ENV REVOKD_GIT_SHA")
        for arg, label in (("VERSION", "version"), ("GIT_SHA", "revision")):
            if not re.search(rf"(?m)^ARG {arg}\b", final):
                errors.append(f"the final stage has no ARG {arg}")
            if not re.search(rf'org\.opencontainers\.image\.{label}="\$\{{{arg}\}}"', final):
                errors.append(f"no org.opencontainers.image.{label} label from ${{{arg}}}")
    with open(os.path.join(os.path.dirname(os.path.abspath(path)), "Cargo.toml")) as f:
        version = re.search(r'(?m)^version = "([^"]+)"', f.read()).group(1)
    if not re.search(rf"(?m)^ARG VERSION={re.escape(version)}$", text):
        errors.append(f"ARG VERSION defaults to something else than Cargo.toml's {version}")
    for e in errors:
        print(f"{path}: {e}")
    return 1 if errors else 0


COMMANDS = {
    "dockerfile": cmd_dockerfile,
    "edge": cmd_edge,
    "edge-manifests": cmd_edge_manifests,
    "envoy": cmd_envoy,
    "nginx": cmd_nginx,
    "manifests": cmd_manifests,
    "kustomize": cmd_kustomize,
    "workloads": cmd_workloads,
    "kustomizations": cmd_kustomizations,
    "rendered": cmd_rendered,
    "component-chain": cmd_component_chain,
    "rules-match": cmd_rules_match,
    "dashboard": cmd_dashboard,
    "metric-names": cmd_metric_names,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(COMMANDS)}}} ARGS...")
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
