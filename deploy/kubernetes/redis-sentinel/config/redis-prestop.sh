#!/bin/sh
# preStop hook of a data node. On the master, asks Sentinel to fail over to a
# replica now and waits (up to 20s) until it has: a rollout or a node drain
# then moves the master in about a second, instead of leaving revokd without
# one for down-after-milliseconds plus the failover. On a replica it does
# nothing. Redis stops after this (SIGTERM: it fsyncs the AOF and gives its
# replicas up to 10s to catch up).
set -u
here=$(dirname "$0")
# shellcheck source=common.sh
. "$here/common.sh"

is_master 127.0.0.1 || exit 0
self=$(pod_host "$NODES" "$(ordinal)")

requested=""
i=0
while [ "$i" -lt "$COUNT" ]; do
  host=$(pod_host "$SENTINELS" "$i")
  i=$((i + 1))
  # Only where this node is the master: an old master that the sentinels
  # have already replaced (but not yet reconfigured) must not fail over the
  # new one.
  known=$(sentinel_master "$host")
  if [ -n "$known" ] && [ "$known" != "$self" ]; then
    log "sentinel $host names $known as master: no failover"
    exit 0
  fi
  reply=$(sentinel_cli "$host" sentinel failover "$MASTER_NAME" 2>&1 | tr -d '\r')
  if [ "$reply" = OK ]; then
    requested=$host
    break
  fi
  log "sentinel $host refused the failover: $reply"
done
if [ -z "$requested" ]; then
  log "no failover: stopping as master"
  exit 0
fi

waited=0
while [ "$waited" -lt 20 ]; do
  master=$(sentinel_master "$requested")
  if [ -n "$master" ] && [ "$master" != "$self" ]; then
    log "failed over to $master"
    exit 0
  fi
  sleep 1
  waited=$((waited + 1))
done
log "the failover did not finish within 20s"
