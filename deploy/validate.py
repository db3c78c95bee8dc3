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


def cmd_edge(root):
    """The proxies' Kubernetes objects under root (Istio, Envoy Gateway,
    Traefik: CRDs without bundled schemas): each parses with apiVersion,
    kind and metadata.name; every one fails closed and points at revokd's
    endpoints (the ext_authz port, /authz/check), and the identity headers
    are forwarded."""
    errors = []
    providers = set()
    docs = []
    for path in yaml_files(root):
        # Envoy bootstraps are checked by Envoy itself (validate.sh).
        if os.sep + "envoy" + os.sep in path:
            continue
        for doc in load_objects(path):
            docs.append((path, doc))
    for path, doc in docs:
        where = f"{path}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        if not doc.get("apiVersion") or not doc.get("kind") or not (doc.get("metadata") or {}).get("name"):
            errors.append(f"{where}: apiVersion, kind and metadata.name are required")
            continue
        kind, spec = doc["kind"], doc.get("spec") or {}
        if kind == "ConfigMap" and "mesh" in (doc.get("data") or {}):
            mesh = yaml.safe_load(doc["data"]["mesh"]) or {}
            for p in mesh.get("extensionProviders") or []:
                providers.add(p.get("name"))
                grpc = p.get("envoyExtAuthzGrpc") or {}
                if grpc.get("failOpen") is not False:
                    errors.append(f"{where}: provider {p.get('name')} must set failOpen: false")
                if not grpc.get("service") or not grpc.get("port") or not grpc.get("timeout"):
                    errors.append(f"{where}: provider {p.get('name')} needs service, port and timeout")
        if kind == "SecurityPolicy":
            ext = spec.get("extAuth") or {}
            if ext.get("failOpen") is not False:
                errors.append(f"{where}: extAuth.failOpen must be false")
            if not ((ext.get("grpc") or {}).get("backendRefs")):
                errors.append(f"{where}: extAuth.grpc.backendRefs is empty")
        if kind == "Middleware" and "forwardAuth" in spec:
            fa = spec["forwardAuth"]
            if "/authz/check" not in (fa.get("address") or ""):
                errors.append(f"{where}: forwardAuth.address is not revokd's /authz/check")
            want = {"x-jwt-subject", "x-jwt-id", "x-jwt-session-id"}
            have = {h.lower() for h in fa.get("authResponseHeaders") or []}
            if not want <= have:
                errors.append(f"{where}: authResponseHeaders lacks {sorted(want - have)}")
    for path, doc in docs:
        if doc.get("kind") == "AuthorizationPolicy":
            spec = doc.get("spec") or {}
            name = (spec.get("provider") or {}).get("name")
            if spec.get("action") != "CUSTOM" or name not in providers:
                errors.append(f"{path}: AuthorizationPolicy must be action CUSTOM with a declared provider "
                              f"(declared: {sorted(providers)}), not {spec.get('action')}/{name}")
    for e in errors:
        print(e)
    if not docs:
        print(f"no objects under {root}")
        return 1
    return 1 if errors else 0


COMMANDS = {
    "edge": cmd_edge,
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
