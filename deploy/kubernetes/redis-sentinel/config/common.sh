# shellcheck shell=sh
# Sourced by the scripts of the Sentinel deployment (POSIX sh: the image's
# /bin/sh is dash). The names must match redis-ha.yaml and sentinel.yaml.

MASTER_NAME=mymaster
# Data nodes and sentinels: each a StatefulSet of COUNT pods with a headless
# Service of the same name.
NODES=revokd-redis-ha
SENTINELS=revokd-sentinel
COUNT=3

: "${POD_NAME:?POD_NAME (the pod name, from the downward API) is not set}"
: "${POD_NAMESPACE:?POD_NAMESPACE (from the downward API) is not set}"

log() { printf '%s: %s\n' "$POD_NAME" "$*" >&2; }

# pod_host STATEFULSET ORDINAL: the stable DNS name of that pod. Qualified
# with the namespace and "svc" so that it resolves from every namespace
# through the pod's DNS search path; it is the name Sentinel announces to
# revokd.
pod_host() { printf '%s-%s.%s.%s.svc' "$1" "$2" "$1" "$POD_NAMESPACE"; }

# This pod's ordinal (the StatefulSet's pod names end in -N).
ordinal() { printf '%s' "${POD_NAME##*-}"; }

# The data nodes' password goes into the config files unquoted: Sentinel
# rewrites `sentinel auth-pass` without quotes and cannot read back a value
# with spaces, quotes or backslashes. Hence a restricted alphabet (that of
# `openssl rand -hex 32` or `-base64 32`).
check_password() {
  : "${REDIS_PASSWORD:?REDIS_PASSWORD (Secret revokd-redis-auth, key password) is not set}"
  case $REDIS_PASSWORD in
    *[!A-Za-z0-9._~+/=-]*)
      log "the password in Secret revokd-redis-auth may only hold letters, digits and . _ ~ + / = - (no newline): e.g. openssl rand -hex 32"
      exit 1
      ;;
  esac
}

# sentinel_cli HOST ARGS...: redis-cli to sentinel HOST. Sentinels have no
# password: without REDISCLI_AUTH, which would make redis-cli send one (and
# print a warning). redis-cli exits 0 on error replies: callers check the
# reply itself.
sentinel_cli() {
  host=$1
  shift
  env -u REDISCLI_AUTH timeout 3 redis-cli -h "$host" -p 26379 --raw "$@"
}

# sentinel_master HOST: the master's host name as sentinel HOST knows it,
# or nothing (unreachable, or it monitors no master yet).
sentinel_master() {
  sentinel_cli "$1" sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 | tr -d '\r'
}

# sentinels_master [SKIP]: the first answer of the sentinels (but SKIP).
sentinels_master() {
  i=0
  while [ "$i" -lt "$COUNT" ]; do
    host=$(pod_host "$SENTINELS" "$i")
    i=$((i + 1))
    [ "$host" = "${1:-}" ] && continue
    master=$(sentinel_master "$host")
    if [ -n "$master" ]; then
      printf '%s' "$master"
      return 0
    fi
  done
}

# is_master HOST: data node HOST answers and is a master.
is_master() {
  REDISCLI_AUTH=$REDIS_PASSWORD timeout 3 redis-cli -h "$1" -p 6379 --raw info replication 2>/dev/null |
    grep -q '^role:master'
}

# nodes_master [SKIP]: the first data node (but SKIP) that is a master.
nodes_master() {
  i=0
  while [ "$i" -lt "$COUNT" ]; do
    host=$(pod_host "$NODES" "$i")
    i=$((i + 1))
    [ "$host" = "${1:-}" ] && continue
    if is_master "$host"; then
      printf '%s' "$host"
      return 0
    fi
  done
}
