#!/usr/bin/env bash
# bench/soak.sh: revokd under a steady mixed load for a long time, sampled.
#
# revokd (release build, mirror mode) on a real redis-server. First a short
# run at the maximum verify rate (h2load -c 4 -m 16); then, for SOAK_SECONDS,
# VerifyToken at half that rate, with IssueToken, RevokeToken (by jti),
# IssueSession and RevokeSubject beside it at a few dozen calls a second
# (h2load --rps, one process each). Every SOAK_EVERY seconds: revokd's RSS,
# open file descriptors, the gRPC calls not OK since the start, and the p99
# time to a verdict over the interval (its own histogram). Passes when every
# call was OK and the RSS after warm-up (the first minute) stays within 5 %.
# Results: bench/out/soak.md (and soak.tsv).
#
# Tunables: SOAK_SECONDS (600), SOAK_EVERY (10), SOAK_WARMUP (60).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TOTAL=${SOAK_SECONDS:-600}
EVERY=${SOAK_EVERY:-10}
WARMUP=${SOAK_WARMUP:-60}
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
  echo "bench/soak.sh: $*" >&2
  exit 1
}
say() { printf '== %s\n' "$*" >&2; }

for tool in h2load redis-server curl python3; do
  command -v "$tool" >/dev/null 2>&1 || die "please install $tool (bench/run.sh installs them)"
done
say "cargo build --release --locked --bin revokd --examples"
cargo build --release --locked --bin revokd --examples
REVOKD=$TARGET_DIR/release/revokd
MAKEBODY=$TARGET_DIR/release/examples/makebody

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
"$REVOKD" keygen --alg HS256 --kid hs --out "$WORK/keys" >/dev/null
RUST_LOG=warn,revokd::server=info "$REVOKD" serve --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
  --http-addr 127.0.0.1:0 --log-format json --keys-dir "$WORK/keys" --signing-kid hs \
  --redis-url "redis://127.0.0.1:$RPORT" 2>"$WORK/revokd.log" &
REVOKD_PID=$!
PIDS+=("$REVOKD_PID")
for _ in $(seq 1 200); do
  addrs=$(python3 bench/stats.py serving-addrs "$WORK/revokd.log" 2>/dev/null) && break
  sleep 0.05
done
read -r GRPC ADMIN <<<"${addrs:?revokd did not start: $(cat "$WORK/revokd.log")}"
for _ in $(seq 1 200); do curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
TOKEN=$("$REVOKD" token --addr "http://$GRPC" issue --subject soak --ttl 1h |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$MAKEBODY" "$TOKEN" "$WORK/verify.body" 2>/dev/null
# The other calls' bodies: one gRPC frame each (protobuf by hand).
python3 - "$WORK" <<'PY'
import struct, sys
work = sys.argv[1]
def var(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def f(num, payload):
    return var(num << 3 | 2) + var(len(payload)) + payload
def frame(name, msg):
    open(f"{work}/{name}.body", "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
frame("issue", f(1, b"soak-user"))
frame("revoke", f(2, b"soak-jti") + f(3, b"soak"))
frame("session", f(1, b"soak-user"))
frame("subject", f(1, b"soak-other") + f(2, b"soak"))
PY
URL=http://$GRPC/revokd.v1.TokenService
GRPC_H=(-H 'content-type: application/grpc' -H 'te: trailers')

say "maximum verify rate (5 s)"
h2load "${GRPC_H[@]}" -d "$WORK/verify.body" -c 4 -m 16 -D 5 --warm-up-time 1 "$URL/VerifyToken" >"$WORK/max.txt" 2>&1
MAX=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$WORK/max.txt")
HALF=$(python3 -c "print(max(1, int(float('$MAX') / 2 / 4)))")
say "max $MAX req/s; soaking ${SECONDS_TOTAL}s at $((HALF * 4)) verifies/s plus issue, revoke, session, subject calls"

metrics() { curl -fsS "http://$ADMIN/metrics"; }
metrics >"$WORK/start.prom"
load() { # load NAME RPS_PER_CLIENT CLIENTS
  h2load "${GRPC_H[@]}" -d "$WORK/$1.body" -c "$3" -m 1 --rps "$2" -D "$SECONDS_TOTAL" "$URL/$4" >"$WORK/load-$1.txt" 2>&1 &
  PIDS+=($!)
  LOADS+=($!)
}
LOADS=()
load verify "$HALF" 4 VerifyToken
load issue 25 2 IssueToken
load revoke 25 2 RevokeToken
load session 10 2 IssueSession
load subject 2 1 RevokeSubject

rss() { awk '/^VmRSS/ {print $2}' "/proc/$REVOKD_PID/status"; }
fds() { find "/proc/$REVOKD_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
printf 't_s\trss_kib\tfds\tnot_ok\tverify_p99_ms\n' >"$OUT/soak.tsv"
cp "$WORK/start.prom" "$WORK/prev.prom"
# Elapsed time from the clock, not a loop count: sampling takes time too.
started=$SECONDS
while [ $((SECONDS - started)) -lt "$SECONDS_TOTAL" ]; do
  sleep "$EVERY"
  t=$((SECONDS - started))
  metrics >"$WORK/now.prom"
  all=$(python3 bench/stats.py metric-sum "$WORK/now.prom" revokd_grpc_requests_total)
  ok=$(python3 bench/stats.py metric-sum "$WORK/now.prom" revokd_grpc_requests_total 'code="OK"')
  p99=$(python3 bench/stats.py server-p99 "$WORK/prev.prom" "$WORK/now.prom")
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$(rss)" "$(fds)" "$((all - ok))" "$p99" | tee -a "$OUT/soak.tsv" >&2
  cp "$WORK/now.prom" "$WORK/prev.prom"
done
VERIFIES=$(($(python3 bench/stats.py metric-sum "$WORK/now.prom" revokd_verify_total) - $(python3 bench/stats.py metric-sum "$WORK/start.prom" revokd_verify_total)))
CALLS=$(($(python3 bench/stats.py metric-sum "$WORK/now.prom" revokd_grpc_requests_total) - $(python3 bench/stats.py metric-sum "$WORK/start.prom" revokd_grpc_requests_total)))
for pid in "${LOADS[@]}"; do wait "$pid" || die "a load generator failed: $(tail -3 "$WORK"/load-*.txt)"; done
for f in "$WORK"/load-*.txt; do
  grep -Eq '^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx$' "$f" || die "$(basename "$f"): $(grep '^status codes' "$f")"
done
python3 - "$OUT/soak.tsv" "$WARMUP" "$MAX" "$SECONDS_TOTAL" "$VERIFIES" "$CALLS" >"$OUT/soak.md" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
warm = int(sys.argv[2])
after = [r for r in rows if int(r["t_s"]) > warm] or rows
rss = [int(r["rss_kib"]) for r in after]
first, last, top = rss[0], rss[-1], max(rss)
drift = (top - first) / first * 100
not_ok = int(rows[-1]["not_ok"])
fds = sorted({int(r["fds"]) for r in rows})
print("# revokd soak")
print()
print(f"- command: `bench/soak.sh`; {sys.argv[4]} s; maximum verify rate {float(sys.argv[3]):.0f} req/s, soaked at half,")
print("  with IssueToken 50/s, RevokeToken 50/s, IssueSession 20/s, RevokeSubject 2/s beside it")
print(f"- RSS after {warm} s: first {first} KiB, last {last} KiB, highest {top} KiB: {drift:+.1f} % ({'pass' if drift <= 5 else 'MISS'}, <= 5 %)")
print(f"- open file descriptors seen: {fds[0]}..{fds[-1]}")
print(f"- gRPC calls not OK: {not_ok} of {sys.argv[6]} ({'pass' if not_ok == 0 else 'MISS'}); verifies: {sys.argv[5]}")
print()
print("| t s | RSS KiB | fds | calls not OK | verify p99 ms (interval) |")
print("|---:|---:|---:|---:|---|")
for r in rows:
    print(f"| {r['t_s']} | {r['rss_kib']} | {r['fds']} | {r['not_ok']} | {r['verify_p99_ms']} |")
PY
cat "$OUT/soak.md"
