#!/usr/bin/env bash
# bench/run.sh: the load benchmark of revokd's VerifyToken, in one command.
#
# In one run it starts redis-server, revokd (once per case, fresh) and a bare
# tonic server answering the same request with no work (the transport
# baseline, bench/baseline.rs), drives each with h2load at the same
# concurrency, checks that the answers are gRPC OK with VERDICT_VALID, and
# prints req/s, p50/p99 latency, p99 at half of the case's maximum rate, and
# each case's ratio to the baseline. The table also goes to bench/out/results.md.
# Method and recorded results: BENCHMARKS.md.
#
# Needs h2load (Debian nghttp2-client), redis-server and curl; installs them
# with apt-get when missing and run as root. All traffic stays on 127.0.0.1.
#
# Tunables (environment): BENCH_CLIENTS (h2load -c, 4), BENCH_STREAMS (-m, 16),
# BENCH_DURATION (seconds measured per run, 8), BENCH_WARMUP (seconds, 2),
# BENCH_REVOKED (revoked jtis preloaded into Redis, 10000),
# BENCH_STRICT=1 (exit 1 when a target is missed).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${BENCH_CLIENTS:-4}
STREAMS=${BENCH_STREAMS:-16}
DURATION=${BENCH_DURATION:-8}
WARMUP=${BENCH_WARMUP:-2}
REVOKED=${BENCH_REVOKED:-10000}
STRICT=${BENCH_STRICT:-0}
OUT=bench/out
TARGET_DIR=${CARGO_TARGET_DIR:-target}
export RUST_LOG=${RUST_LOG:-info}

say() { printf '== %s\n' "$*" >&2; }
die() {
  printf 'bench/run.sh: %s\n' "$*" >&2
  exit 1
}

# ---- tools -----------------------------------------------------------------
need_apt=()
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    die "please install: ${need_apt[*]}"
  fi
fi

say "cargo build --release --locked --bin revokd --examples"
cargo build --release --locked --bin revokd --examples
REVOKD=$TARGET_DIR/release/revokd
BASELINE=$TARGET_DIR/release/examples/baseline
MAKEBODY=$TARGET_DIR/release/examples/makebody

rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d)

# ---- processes: every one we start is killed by pid on exit -----------------
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # stop PID: SIGTERM one process we started and wait for it
  local pid=$1 p keep=()
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

USED_PORTS=" "
free_port() { # a loopback port nothing listens on (and we have not handed out)
  local p
  for _ in $(seq 1 500); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return 0
    fi
  done
  die "no free loopback port found"
}

wait_for() { # wait_for WHAT PID COMMAND...: poll COMMAND until it succeeds (30 s at most)
  local what=$1 pid=$2
  shift 2
  for _ in $(seq 1 600); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || die "$what exited before it was ready"
    sleep 0.05
  done
  die "$what not ready after 30 s"
}

# ---- h2load ----------------------------------------------------------------
H2LOAD_GRPC=(-H 'content-type: application/grpc' -H 'te: trailers')

# run_h2load NAME URL BODY [extra h2load args...]: prints the h2load report to
# $OUT/NAME.txt and fails unless every request succeeded with HTTP 2xx.
run_h2load() {
  local name=$1 url=$2 body=$3
  shift 3
  h2load "${H2LOAD_GRPC[@]}" -d "$body" -c "$CLIENTS" -m "$STREAMS" "$@" "$url" >"$OUT/$name.txt" 2>&1 ||
    die "h2load failed for $name: $(tail -5 "$OUT/$name.txt")"
  local line
  line=$(grep '^requests:' "$OUT/$name.txt") || die "$name: no h2load summary"
  # requests: T total, S started, D done, OK succeeded, F failed, E errored, X timeout
  read -r _ total _ _ _ _ _ ok _ failed _ errored _ timeout _ <<<"${line//,/}"
  [ "$ok" -gt 0 ] && [ "$ok" = "$total" ] && [ "$failed" = 0 ] && [ "$errored" = 0 ] && [ "$timeout" = 0 ] ||
    die "$name: not every request succeeded: $line"
  grep -q "^status codes: $ok 2xx" "$OUT/$name.txt" || die "$name: non-2xx answers: $(grep '^status codes' "$OUT/$name.txt")"
}

h2_field() { # h2_field NAME req/s|succeeded|data
  case $2 in
    req/s) sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$OUT/$1.txt" ;;
    succeeded) sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$OUT/$1.txt" ;;
    data) sed -n 's/^traffic: .* (\([0-9]*\)) data$/\1/p' "$OUT/$1.txt" ;;
  esac
}

# percentiles LOG: "p50_ms p99_ms" from h2load's --log-file (3rd column: microseconds)
percentiles() {
  local n
  n=$(awk -F'\t' '$2 != 200 { bad++ } END { if (bad) exit 1 }' "$1" && wc -l <"$1") ||
    die "$1: requests with a non-200 status"
  [ "$n" -gt 0 ] || die "$1: empty log"
  cut -f3 "$1" | sort -n | awk -v n="$n" '
    BEGIN { i50 = int((n * 50 + 99) / 100); i99 = int((n * 99 + 99) / 100) }
    NR == i50 { p50 = $1 } NR == i99 { p99 = $1 }
    END { printf "%.3f %.3f\n", p50 / 1000, p99 / 1000 }'
}

# The correctness check of a server before it is measured: a burst of requests
# without warm-up, so h2load's data count covers exactly these requests. Every
# answer must carry the same number of body bytes as one answer of the same
# call, and a gRPC error (trailers only) carries none. Prints bytes per answer.
check_burst() {
  local name=$1 url=$2 body=$3 one all n
  run_h2load "$name-one" "$url" "$body" -n 1 -c 1 -m 1
  one=$(h2_field "$name-one" data)
  [ "${one:-0}" -ge 7 ] || die "$name: the answer has no gRPC message (${one:-0} data bytes): an error status"
  n=$((CLIENTS * STREAMS * 200))
  run_h2load "$name-check" "$url" "$body" -n "$n"
  all=$(h2_field "$name-check" data)
  [ "$all" = $((n * one)) ] ||
    die "$name: $n answers carried $all body bytes, expected $((n * one)): some were gRPC errors"
  echo "$one"
}

# measure NAME URL BODY: the max-rate run, then a run at half that rate.
# Sets M_RPS M_P50 M_P99 H_RPS H_P99 H_P50.
measure() {
  local name=$1 url=$2 body=$3 rps_each
  run_h2load "$name-max" "$url" "$body" -D "$DURATION" --warm-up-time "$WARMUP" --log-file "$WORK/$name-max.tsv"
  M_RPS=$(h2_field "$name-max" req/s)
  read -r M_P50 M_P99 <<<"$(percentiles "$WORK/$name-max.tsv")"
  rps_each=$(awk -v r="$M_RPS" -v c="$CLIENTS" 'BEGIN { x = int(r / 2 / c); print (x < 1 ? 1 : x) }')
  run_h2load "$name-half" "$url" "$body" -D "$DURATION" --warm-up-time 1 --rps "$rps_each" --log-file "$WORK/$name-half.tsv"
  H_RPS=$(h2_field "$name-half" req/s)
  read -r H_P50 H_P99 <<<"$(percentiles "$WORK/$name-half.tsv")"
  say "$name: $M_RPS req/s (p50 $M_P50 ms, p99 $M_P99 ms); at $H_RPS req/s: p50 $H_P50 ms, p99 $H_P99 ms"
}

# ---- Redis -----------------------------------------------------------------
REDIS_PORT=$(free_port)
say "redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --dir "$WORK" --logfile "$PWD/$OUT/redis.log" --daemonize no &
PIDS+=($!)
REDIS_PID=$!
wait_for redis "$REDIS_PID" redis-cli -p "$REDIS_PORT" ping
# A realistic blocklist: REVOKED revoked jtis, alive for the whole run.
now=$(date +%s)
awk -v n="$REVOKED" -v exat=$((now + 3600)) \
  'BEGIN { for (i = 0; i < n; i++) printf "SET revokd:jti:bench-revoked-%07d 1 EXAT %d\r\n", i, exat }' |
  redis-cli -p "$REDIS_PORT" --pipe >"$OUT/redis-preload.txt"
[ "$(redis-cli -p "$REDIS_PORT" dbsize)" = "$REVOKED" ] || die "Redis preload failed: $(cat "$OUT/redis-preload.txt")"

# ---- keys ------------------------------------------------------------------
KEYS=$WORK/keys
"$REVOKD" keygen --alg HS256 --kid hs --out "$KEYS" >/dev/null
"$REVOKD" keygen --alg EdDSA --kid ed --out "$KEYS" >/dev/null

# ---- revokd ----------------------------------------------------------------
GRPC_PORT="" ADMIN_PORT="" REVOKD_PID=""
start_revokd() { # start_revokd NAME FLAGS...
  local name=$1
  shift
  GRPC_PORT=$(free_port)
  ADMIN_PORT=$(free_port)
  "$REVOKD" serve --grpc-addr "127.0.0.1:$GRPC_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
    --keys-dir "$KEYS" --redis-url "redis://127.0.0.1:$REDIS_PORT" "$@" >"$OUT/revokd-$name.log" 2>&1 &
  REVOKD_PID=$!
  PIDS+=("$REVOKD_PID")
  wait_for "revokd ($name)" "$REVOKD_PID" curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz"
}

metrics() { curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics"; }
mirror_synced() { metrics | grep -Eq '^revokd_mirror_synced(\{[^}]*\})? 1$'; }

# metric_sum FILE NAME [LABEL_REGEX]: sum of the samples of NAME whose labels match
metric_sum() {
  awk -v name="$2" -v re="${3:-}" '
    $1 ~ "^" name "(\\{|$)" && (re == "" || $1 ~ re) { s += $NF }
    END { printf "%d\n", s }' "$1"
}

issue_token() { # a token from the running revokd, checked VALID through a real gRPC call
  local json token
  json=$("$REVOKD" token --addr "http://127.0.0.1:$GRPC_PORT" issue --subject bench --ttl 1h)
  token=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$json")
  [ -n "$token" ] || die "no token in: $json"
  echo "$token"
}

grpc_verify_valid() { # grpc_verify_valid PORT TOKEN
  local json
  json=$("$REVOKD" token --addr "http://127.0.0.1:$1" verify "$2") || die "VerifyToken on :$1 failed"
  grep -q '"verdict":"VERDICT_VALID"' <<<"$json" || die "VerifyToken on :$1 answered $json"
}

declare -A RPS P50 P99 HRPS HP99 NOTE

# run_case NAME SIGNING_KID CACHE_EXPECTED(hits|none) FLAGS...
run_case() {
  local name=$1 kid=$2 cache=$3
  shift 3
  say "case $name: revokd serve --signing-kid $kid $*"
  start_revokd "$name" --signing-kid "$kid" "$@"
  if [[ " $* " != *" --revocation-check redis "* ]]; then
    wait_for "revokd ($name) mirror sync" "$REVOKD_PID" mirror_synced
  fi
  local token url body="$WORK/$name.body"
  token=$(issue_token)
  "$MAKEBODY" "$token" "$body" 2>/dev/null
  grpc_verify_valid "$GRPC_PORT" "$token"
  url="http://127.0.0.1:$GRPC_PORT/revokd.v1.TokenService/VerifyToken"
  metrics >"$WORK/$name-before.prom"
  check_burst "$name" "$url" "$body" >/dev/null
  measure "$name" "$url" "$body"
  metrics >"$WORK/$name-after.prom"
  cp "$WORK/$name-after.prom" "$OUT/metrics-$name.prom"
  # Every VerifyToken during the runs answered OK with VERDICT_VALID.
  local d_valid d_all d_ok d_grpc d_hits sent ok_re='method="VerifyToken".*code="OK"|code="OK".*method="VerifyToken"'
  d_valid=$(($(metric_sum "$WORK/$name-after.prom" revokd_verify_total 'verdict="valid"') - $(metric_sum "$WORK/$name-before.prom" revokd_verify_total 'verdict="valid"')))
  d_all=$(($(metric_sum "$WORK/$name-after.prom" revokd_verify_total) - $(metric_sum "$WORK/$name-before.prom" revokd_verify_total)))
  d_grpc=$(($(metric_sum "$WORK/$name-after.prom" revokd_grpc_requests_total 'method="VerifyToken"') - $(metric_sum "$WORK/$name-before.prom" revokd_grpc_requests_total 'method="VerifyToken"')))
  d_ok=$(($(metric_sum "$WORK/$name-after.prom" revokd_grpc_requests_total "$ok_re") - $(metric_sum "$WORK/$name-before.prom" revokd_grpc_requests_total "$ok_re")))
  d_hits=$(($(metric_sum "$WORK/$name-after.prom" revokd_token_cache_hits_total) - $(metric_sum "$WORK/$name-before.prom" revokd_token_cache_hits_total)))
  sent=$(($(h2_field "$name-one" succeeded) + $(h2_field "$name-check" succeeded) + $(h2_field "$name-max" succeeded) + $(h2_field "$name-half" succeeded)))
  [ "$d_valid" -ge "$sent" ] && [ "$d_valid" = "$d_all" ] ||
    die "$name: $d_all verifications, $d_valid VALID, for at least $sent requests (see $OUT/metrics-$name.prom)"
  [ "$d_grpc" = 0 ] || [ "$d_ok" = "$d_grpc" ] ||
    die "$name: $d_grpc VerifyToken calls, only $d_ok with status OK (see $OUT/metrics-$name.prom)"
  case $cache in
    none) [ "$d_hits" = 0 ] || die "$name: the token cache answered $d_hits verifications; it should be off" ;;
    hits) [ "$d_hits" -gt 0 ] || NOTE[$name]="token cache never hit" ;;
  esac
  RPS[$name]=$M_RPS P50[$name]=$M_P50 P99[$name]=$M_P99 HRPS[$name]=$H_RPS HP99[$name]=$H_P99
  stop "$REVOKD_PID"
}

# ---- the baseline ------------------------------------------------------------
BASE_OUT=$WORK/baseline.addr
"$BASELINE" 0 >"$BASE_OUT" 2>"$OUT/baseline.log" &
BASE_PID=$!
PIDS+=("$BASE_PID")
wait_for baseline "$BASE_PID" grep -q . "$BASE_OUT"
BASE_ADDR=$(head -1 "$BASE_OUT")
BASE_PORT=${BASE_ADDR##*:}

run_baseline() { # run_baseline NAME: measure the transport baseline with the request of case "repeated"
  local name=$1 body="$WORK/repeated.body" per
  grpc_verify_valid "$BASE_PORT" "$BASE_TOKEN"
  per=$(check_burst "$name" "http://$BASE_ADDR/revokd.v1.TokenService/VerifyToken" "$body")
  # VerifyTokenResponse { verdict: VALID } is 2 bytes, 7 with the gRPC prefix.
  [ "$per" = 7 ] || die "$name: answers of $per bytes, expected 7 (VERDICT_VALID)"
  measure "$name" "http://$BASE_ADDR/revokd.v1.TokenService/VerifyToken" "$body"
  RPS[$name]=$M_RPS P50[$name]=$M_P50 P99[$name]=$M_P99 HRPS[$name]=$H_RPS HP99[$name]=$H_P99
}

# The request shape of every case: the baseline gets the body of case "repeated".
start_revokd token-maker --signing-kid hs
BASE_TOKEN=$(issue_token)
"$MAKEBODY" "$BASE_TOKEN" "$WORK/repeated.body" 2>/dev/null
stop "$REVOKD_PID"

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
SECONDS=0
say "baseline (bare tonic, no work) on $BASE_ADDR"
run_baseline baseline-1

# ---- the cases ---------------------------------------------------------------
run_case repeated hs hits --revocation-check mirror
run_case unique-hs256 hs none --revocation-check mirror --token-cache-size 0
run_case unique-eddsa ed none --revocation-check mirror --token-cache-size 0
run_case redis-repeated hs hits --revocation-check redis

say "baseline again, to see the drift"
run_baseline baseline-2
stop "$BASE_PID"

# ---- the table ---------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
BASE_RPS=$(awk -v a="${RPS[baseline-1]}" -v b="${RPS[baseline-2]}" 'BEGIN { printf "%.2f", (a + b) / 2 }')
DRIFT=$(awk -v a="${RPS[baseline-1]}" -v b="${RPS[baseline-2]}" 'BEGIN { printf "%+.1f%%", (b - a) / a * 100 }')
MISSED=0

row() { # row NAME LABEL MIN_RATIO(or -) CHECK_P99(yes|no)
  local name=$1 label=$2 min=$3 p99chk=$4 ratio verdict target
  ratio=$(awk -v r="${RPS[$name]}" -v b="$BASE_RPS" 'BEGIN { printf "%.2f", r / b }')
  verdict=-
  target=-
  if [ "$min" != - ]; then
    target=">= $min"
    verdict=pass
    awk -v r="$ratio" -v m="$min" 'BEGIN { exit !(r + 0 >= m + 0) }' || verdict=MISS
  fi
  if [ "$p99chk" = yes ]; then
    target="$target; p99 at half <= 1 ms"
    [ "$verdict" = - ] && verdict=pass
    awk -v p="${HP99[$name]}" 'BEGIN { exit !(p + 0 <= 1.0) }' || verdict=MISS
  fi
  target=${target#-; }
  [ "$verdict" = MISS ] && MISSED=1
  printf '| %s | %.0f | %s | %s | %.0f | %s | %s | %s | %s |\n' "$label" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" \
    "${HRPS[$name]}" "${HP99[$name]}" "$ratio" "$target" "$verdict${NOTE[$name]:+ (${NOTE[$name]})}"
}

{
  echo "# revokd load benchmark"
  echo
  echo "- date: $STARTED; measured in ${SECONDS}s; load average $LOAD_START at the start, $LOAD_END at the end"
  echo "- command: \`bench/run.sh\` (h2load -c $CLIENTS -m $STREAMS -t 1, ${DURATION}s measured after ${WARMUP}s warm-up; half rate: --rps per client = max / 2 / $CLIENTS)"
  echo "- machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(rustc --version), $(h2load --version | head -1), $(redis-server --version | cut -d' ' -f1-3)"
  echo "- Redis holds $REVOKED revoked jtis; baseline = bare tonic server, no work (mean of ${RPS[baseline-1]} and ${RPS[baseline-2]} req/s, drift $DRIFT over the run)"
  echo "- latency: h2load's time for request (client side, send to end of answer), from its per-request log"
  echo
  echo "| case | req/s | p50 ms | p99 ms | half rate req/s | p99 ms at half rate | ratio to baseline | target | result |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---|"
  row baseline-1 "baseline (bare tonic), first" - no
  row repeated "repeated HS256 token (cache on, mirror)" 0.80 yes
  row unique-hs256 "unique HS256 tokens (cache off, mirror)" 0.70 yes
  row unique-eddsa "unique EdDSA tokens (cache off, mirror)" 0.28 yes
  row redis-repeated "repeated HS256 token, --revocation-check redis" - yes
  row baseline-2 "baseline (bare tonic), last" - no
} >"$OUT/results.md"
cat "$OUT/results.md"
say "written to $OUT/results.md (h2load reports, revokd logs and metrics beside it)"
if [ "$STRICT" = 1 ] && [ "$MISSED" = 1 ]; then
  exit 1
fi
