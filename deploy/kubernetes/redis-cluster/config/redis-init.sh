#!/bin/sh
# Init container of a cluster node: writes its redis.conf (to $1) from the
# template beside this script, with the password and the addresses this node
# announces: its pod IP on the cluster bus, its stable DNS name to clients.
set -eu
out=${1:?usage: redis-init.sh OUTPUT_FILE}
here=$(dirname "$0")
: "${POD_NAME:?}" "${POD_NAMESPACE:?}" "${POD_IP:?}"
if [ -z "${REDIS_PASSWORD:-}" ]; then
  echo "redis-init: REDIS_PASSWORD is empty: create the Secret revokd-redis-auth" >&2
  exit 1
fi
# It is written into the config file: a hex or base64 string only.
case $REDIS_PASSWORD in
  *[!A-Za-z0-9._~+/=-]*)
    echo "redis-init: the password may hold only letters, digits and . _ ~ + / = -" >&2
    exit 1
    ;;
esac
cp "$here/redis.conf" "$out"
{
  printf 'cluster-announce-ip %s\n' "$POD_IP"
  printf 'cluster-announce-hostname %s.revokd-redis-cluster.%s.svc\n' "$POD_NAME" "$POD_NAMESPACE"
  printf 'requirepass "%s"\n' "$REDIS_PASSWORD"
  printf 'masterauth "%s"\n' "$REDIS_PASSWORD"
} >>"$out"
echo "redis-init: $POD_NAME announces $POD_IP and $POD_NAME.revokd-redis-cluster.$POD_NAMESPACE.svc"
