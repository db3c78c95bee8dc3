#!/usr/bin/env bash
# Memory of the revocation mirror: RSS of a revokd process whose mirror holds
# N revocations (default 1,000,000), against the same process with an empty
# mirror, in one run. Usage: bench/mirror_memory.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}

command -v redis-server >/dev/null || { echo "needs redis-server (scripts/test installs it)" >&2; exit 1; }
cargo build --release --locked --bin revokd >/dev/null 2>&1 || cargo build --release --locked --bin revokd
bin=target/release/revokd

pids=()
logs=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap cleanup EXIT
# A free port for redis-server (revokd takes port 0 and logs what it got).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; } # metric ADMIN_ADDR NAME
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done

# start_revokd NAME: revokd on ports the kernel picks; sets PID and ADMIN (its
# admin address, from its "revokd serving" JSON log line).
start_revokd() {
  local log=$logs/$1.log addrs deadline=$((SECONDS + 30))
  RUST_LOG="${RUST_LOG:-info},revokd::server=info" $bin serve --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --redis-url "redis://127.0.0.1:$rport" --log-format json >"$log" 2>&1 &
  PID=$!
  pids+=("$PID")
  until addrs=$(python3 bench/stats.py serving-addrs "$log"); do
    kill -0 "$PID" 2>/dev/null || { echo "revokd exited: $(tail -5 "$log")" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "revokd did not log its addresses in 30 s" >&2; exit 1; }
    sleep 0.05
  done
  ADMIN=${addrs#* }
}
wait_entries() { # admin address, expected entries
  local deadline=$((SECONDS + 300))
  until [ "$(metric "$1" revokd_mirror_synced)" = 1 ] && [ "$(metric "$1" revokd_mirror_entries)" = "$2" ]; do
    [ $SECONDS -lt $deadline ] || { echo "mirror did not reach $2 entries" >&2; exit 1; }
    sleep 0.2
  done
}

# Baseline: the same binary and configuration, empty mirror.
start_revokd empty; p0=$PID a0=$ADMIN
wait_entries "$a0" 0
empty=$(rss_kib "$p0")

echo "loading $N revocations into Redis ..."
exat=$(( $(date +%s) + 86400 ))
python3 - "$N" "$exat" <<'PY' | redis-cli -p "$rport" --pipe >/dev/null
import base64, os, sys
n, exat = int(sys.argv[1]), sys.argv[2]
out = sys.stdout.buffer
for i in range(n):
    key = b"revokd:jti:" + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=")
    val = b"1"
    parts = [b"SET", key, val, b"EXAT", exat.encode()]
    out.write(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
PY
echo "keys in Redis: $(redis-cli -p "$rport" dbsize)"

start_revokd loaded; p1=$PID a1=$ADMIN
t0=$SECONDS
wait_entries "$a1" "$N"
loaded_in=$((SECONDS - t0))
full=$(rss_kib "$p1")
# The empty instance received every key by push meanwhile: it is full too now.
wait_entries "$a0" "$N"
pushed=$(rss_kib "$p0")

per_entry() { python3 -c "print(f'{($1 - $2) * 1024 / $N:.1f}')"; }
cat <<OUT
revocations:                      $N
RSS, empty mirror:                ${empty} KiB
RSS, loaded by SCAN at start:     ${full} KiB  (+$(per_entry "$full" "$empty") bytes per revocation; resync took ~${loaded_in}s)
RSS, same filled by invalidations: ${pushed} KiB  (+$(per_entry "$pushed" "$empty") bytes per revocation)
OUT
