#!/bin/sh
# Init container of a sentinel: writes its sentinel.conf (to $1) from the
# template beside this script, monitoring the current master:
#   1. the master another sentinel names;
#   2. if none answers, a data node that is a master;
#   3. if none is (the very first start), data node 0.
# Sentinels keep no volume: a restarted sentinel learns the master, the
# replicas and the other sentinels again this way.
set -eu
here=$(dirname "$0")
# shellcheck source=common.sh
. "$here/common.sh"
out=${1:?usage: sentinel-init.sh OUTPUT_FILE}
check_password

self=$(pod_host "$SENTINELS" "$(ordinal)")
master=$(sentinels_master "$self")
[ -n "$master" ] || master=$(nodes_master "")
if [ -z "$master" ]; then
  master=$(pod_host "$NODES" 0)
  log "no sentinel and no data node names a master: first start, monitoring $master"
else
  log "monitoring $master"
fi

# Sentinel refuses to start when the master's name does not resolve: wait
# for its pod to exist (the headless Service publishes not-ready pods).
tries=0
until getent hosts "$master" >/dev/null; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    log "$master does not resolve after 120s"
    exit 1
  fi
  sleep 2
done

umask 077
{
  sed -e "s/@ANNOUNCE_HOST@/$self/" -e "s/@MASTER_HOST@/$master/" "$here/sentinel.conf"
  echo
  echo "# Written by sentinel-init.sh."
  echo "sentinel auth-pass $MASTER_NAME $REDIS_PASSWORD"
} >"$out"
