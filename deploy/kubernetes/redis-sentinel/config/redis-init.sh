#!/bin/sh
# Init container of a data node: writes its redis.conf (to $1) from the
# template beside this script, as the master or as a replica of the current
# master:
#   1. the master the sentinels name;
#   2. if no sentinel answers, a data node that is a master;
#   3. if none is (the very first start), pod 0.
# A node the sentinels still name as master is restarting after a crash: its
# AOF may lack the last second of writes that its replicas have (and
# acknowledged to revokd's WAIT), so it waits for the sentinels to promote a
# replica and only resumes as master if none could be promoted.
set -eu
here=$(dirname "$0")
# shellcheck source=common.sh
. "$here/common.sh"
out=${1:?usage: redis-init.sh OUTPUT_FILE}
check_password

self=$(pod_host "$NODES" "$(ordinal)")

find_master() {
  master=$(sentinels_master "")
  [ -n "$master" ] || master=$(nodes_master "$self")
  printf '%s' "$master"
}

master=$(find_master)
if [ "$master" = "$self" ]; then
  log "the sentinels still name this node as master; waiting up to 30s for a failover"
  waited=0
  while [ "$master" = "$self" ] && [ "$waited" -lt 30 ]; do
    sleep 1
    waited=$((waited + 1))
    master=$(find_master)
  done
fi
if [ -z "$master" ]; then
  master=$(pod_host "$NODES" 0)
  log "no sentinel and no data node names a master: first start, the master is $master"
fi

umask 077
{
  cat "$here/redis.conf"
  echo
  echo "# Written by redis-init.sh."
  # What this node tells its master (and so Sentinel and revokd) to reach it by.
  echo "replica-announce-ip $self"
  echo "replica-announce-port 6379"
  echo "requirepass $REDIS_PASSWORD"
  # Every node may become a replica: it authenticates to the master with it.
  echo "masterauth $REDIS_PASSWORD"
  if [ "$master" != "$self" ]; then
    echo "replicaof $master 6379"
  fi
} >"$out"
if [ "$master" = "$self" ]; then
  log "starting as master"
else
  log "starting as a replica of $master"
fi
