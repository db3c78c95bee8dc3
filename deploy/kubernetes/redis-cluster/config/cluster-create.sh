#!/bin/sh
# The cluster-create Job: waits until the nodes answer, then joins them into
# a cluster of primaries with one replica each and waits for it to be ready.
# Safe to run again: it creates nothing when the nodes already form a
# cluster, and refuses (exit 1) when only some of them do, which needs a
# person (a node that lost its volume: deploy/README.md).
# redis-cli reads the password from REDISCLI_AUTH.
set -eu
: "${REDISCLI_AUTH:?}" "${POD_NAMESPACE:?}"
# The StatefulSet's replicas and name (deploy/validate.py checks they match).
nodes=6
svc=revokd-redis-cluster

log() { echo "cluster-create: $*" >&2; }
host() { echo "$svc-$1.$svc.$POD_NAMESPACE.svc"; }
# info N FIELD: a field of node N's CLUSTER INFO; fails if there is none.
info() {
  v=$(redis-cli -h "$(host "$1")" cluster info | tr -d '\r' | sed -n "s/^$2://p")
  if [ -z "$v" ]; then
    log "$(host "$1") gave no $2"
    return 1
  fi
  echo "$v"
}

addrs=""
i=0
while [ "$i" -lt "$nodes" ]; do
  h=$(host "$i")
  tries=0
  until [ "$(redis-cli -h "$h" ping 2>/dev/null)" = PONG ]; do
    tries=$((tries + 1))
    if [ "$tries" -ge 150 ]; then
      log "$h does not answer after 5 minutes"
      exit 1
    fi
    sleep 2
  done
  # CLUSTER MEET takes IP addresses.
  ip=$(getent hosts "$h" | awk '{ print $1; exit }')
  addrs="$addrs $ip:6379"
  i=$((i + 1))
done

# A node is part of a cluster once it knows another node or holds a slot.
joined=0
i=0
while [ "$i" -lt "$nodes" ]; do
  known=$(info "$i" cluster_known_nodes)
  slots=$(info "$i" cluster_slots_assigned)
  if [ "$known" -gt 1 ] || [ "$slots" -gt 0 ]; then
    joined=$((joined + 1))
  fi
  i=$((i + 1))
done
if [ "$joined" -eq 0 ]; then
  log "creating the cluster of$addrs"
  # shellcheck disable=SC2086 # one argument per address
  redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes
elif [ "$joined" -lt "$nodes" ]; then
  log "$joined of $nodes nodes are in a cluster, the others are empty: add or" \
    "replace those by hand (redis-cli --cluster check $(host 0):6379; deploy/README.md)"
  exit 1
else
  log "the $nodes nodes already form a cluster: nothing to create"
fi

# Done once every node sees every slot served (gossip takes a few seconds).
tries=0
i=0
while [ "$i" -lt "$nodes" ]; do
  if [ "$(info "$i" cluster_state || true)" = ok ]; then
    i=$((i + 1))
    continue
  fi
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    log "$(host "$i") is not cluster_state:ok after 2 minutes"
    exit 1
  fi
  sleep 2
done
log "cluster_state:ok on all $nodes nodes"
