#!/usr/bin/env bash
# The README's run command: a local 3-node ine cluster with a real Redis database behind it.
#
# Installs what is missing, builds, starts a 3-member etcd (one member per node address) and
# the data dir's ine-mirror under supervisord, creates the cluster (nodes 127.0.0.1-3, its log
# committed through etcd) in ./demo-data (or $INE_DATA_DIR) unless it exists, starts every
# service, starts a
# redis-server as the shard of a demo database on node 2, creates the database with
# data_internode_encryption enabled, then writes and reads a key through node 1's endpoint —
# across port 3342 in TLS. Run again, it reuses the running cluster (or restarts it), and
# never half-breaks: each step checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

REST_PORT=${INE_REST_PORT:-9443}
METRICS_PORT=${INE_METRICS_PORT:-8070}
REDIS_PORT=${INE_REDIS_PORT:-16379}
DB_PORT=${INE_DB_PORT:-12000}
TP_PORT=${INE_TP_PORT:-3342}
# Not etcd's 2379/2380: the Debian package's own etcd.service may hold those on localhost.
ETCD_CLIENT_PORT=${INE_ETCD_CLIENT_PORT:-12379}
ETCD_PEER_PORT=${INE_ETCD_PEER_PORT:-12380}
ETCD_QUOTA=4294967296
ETCD_FLAGS="--snapshot-count 10000 --max-txn-ops 4096 --max-request-bytes 10485760 --quota-backend-bytes $ETCD_QUOTA --auto-compaction-mode revision --auto-compaction-retention 10000 --pre-vote --logger zap --log-outputs stderr"

./scripts/install-deps.sh
cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
cmake --build build-rel -j"$(nproc)" --target inectl ine-log ine-ca ine-policy ine-transport ine-alerting ine-mirror ine-updates >/dev/null

BIN=$PWD/build-rel
DATA=${INE_DATA_DIR:-$PWD/demo-data}
export INE_DATA_DIR=$DATA
CTL="supervisorctl -c $DATA/supervisord.conf"

# The cluster's services start once the cluster exists; etcd and the mirror come first, since
# `inectl cluster create` commits the first events through etcd.
render() {
  local autostart=$1
  mkdir -p "$DATA/redis" "$DATA/logs" "$DATA/run" "$DATA/etcd"
  {
    sed -e "s|@BIN@|$BIN|g" -e "s|@DATA@|$DATA|g" -e "s|@REST_PORT@|$REST_PORT|g" \
        -e "s|@METRICS_PORT@|$METRICS_PORT|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
        -e "s|@TP_PORT@|$TP_PORT|g" -e "s|@CA_ARGS@||g" deploy/supervisord.conf.in |
      if [ "$autostart" = no ]; then sed -e '/^\[program:ine-/a autostart=false'; else cat; fi
    echo
    sed -e "s|@BIN@|$BIN|g" -e "s|@DATA@|$DATA|g" -e "s|@ETCD_CLIENT_PORT@|$ETCD_CLIENT_PORT|g" \
        -e "s|@ETCD_PEER_PORT@|$ETCD_PEER_PORT|g" -e "s|@ETCD_TOKEN@|ine-demo-$(cat "$DATA/etcd/token")|g" \
        -e "s|@ETCD_FLAGS@|$ETCD_FLAGS|g" deploy/supervisord-etcd.conf.in
  } >"$DATA/supervisord.conf"
}
mkdir -p "$DATA/etcd"
[ -f "$DATA/etcd/token" ] || od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$DATA/etcd/token"
# The members' client port: mutual TLS with this data dir's own CA (made once).
"$BIN/inectl" --data-dir "$DATA" etcd prepare addresses 127.0.0.2,127.0.0.3 >/dev/null
ETLS=$DATA/etcd/client
cat >"$DATA/etcd.conf" <<EOT
# The etcd members this node's ine processes commit through (its own first): scripts/run.sh
endpoints=https://127.0.0.1:$ETCD_CLIENT_PORT,https://127.0.0.2:$ETCD_CLIENT_PORT,https://127.0.0.3:$ETCD_CLIENT_PORT
cacert=$ETLS/ca.crt
cert=$ETLS/client.crt
key=$ETLS/client.key
quota_bytes=$ETCD_QUOTA
EOT

fresh=no
[ -f "$DATA/seal.key" ] || fresh=yes
if [ $fresh = yes ]; then render no; else render yes; fi
if [ -S "$DATA/run/supervisor.sock" ] && $CTL pid >/dev/null 2>&1; then
  echo "run: supervisord is running; restarting the services with this build"
  $CTL reread >/dev/null; $CTL update >/dev/null; $CTL restart all >/dev/null
else
  rm -f "$DATA/run/supervisor.sock"
  supervisord -c "$DATA/supervisord.conf"
fi

if [ $fresh = yes ]; then
  echo -n "run: waiting for etcd "
  for _ in $(seq 60); do
    curl -sf --cacert "$ETLS/ca.crt" --cert "$ETLS/client.crt" --key "$ETLS/client.key" -X POST -d '{"key":"AA=="}' \
      "https://127.0.0.1:$ETCD_CLIENT_PORT/v3/kv/range" >/dev/null 2>&1 && break
    echo -n "."; sleep 1
  done
  echo
  "$BIN/inectl" cluster create name demo nodes 127.0.0.1,127.0.0.2,127.0.0.3 \
    username admin@example.com password - <<<"${INE_ADMIN_PASSWORD:-ine-demo-password}"
  render yes
  $CTL reread >/dev/null; $CTL update >/dev/null
else
  echo "run: reusing the cluster in $DATA"
fi

# Ready when all 3 nodes serve both of their certificates (6 activations).
active() { "$BIN/inectl" status 2>/dev/null | sed -n '/^CERTIFICATES/,/^ALERTS/p' | grep -c ' yes$' || true; }
echo -n "run: waiting for the certificates and the transports "
for _ in $(seq 120); do
  [ "$(active)" -ge 6 ] && break
  echo -n "."; sleep 1
done
echo
if [ "$(active)" -lt 6 ]; then
  echo "run: the nodes did not serve their certificates within 2 minutes; see $DATA/logs/" >&2
  exit 1
fi

if ! "$BIN/inectl" info db demo >/dev/null 2>&1; then
  for _ in $(seq 30); do [ -S "$DATA/run/policy.sock" ] && break; sleep 1; done
  "$BIN/inectl" create db name demo port "$DB_PORT" shard_node 2 shard_address "127.0.0.2:$REDIS_PORT" \
    data_internode_encryption enabled
else
  "$BIN/inectl" tune db demo data_internode_encryption enabled >/dev/null
fi

value="hello-from-node-1-$(date +%s)"
for _ in $(seq 30); do
  if [ "$(redis-cli -h 127.0.0.1 -p "$DB_PORT" set demo:key "$value" 2>/dev/null)" = "OK" ]; then break; fi
  sleep 1
done
got=$(redis-cli -h 127.0.0.3 -p "$DB_PORT" get demo:key)
direct=$(redis-cli -h 127.0.0.2 -p "$REDIS_PORT" get demo:key)
if [ "$got" != "$value" ] || [ "$direct" != "$value" ]; then
  echo "run: the key did not go through (node 3 read '$got', the shard holds '$direct'); see $DATA/logs/" >&2
  exit 1
fi
echo "run: wrote demo:key through node 1 (127.0.0.1:$DB_PORT), read it back through node 3: $got"
echo "     both crossed port 3342 in TLS to node 2, where the shard (redis on 127.0.0.2:$REDIS_PORT) lives"
echo
"$BIN/inectl" status
cat <<EOT

Try next:
  export INE_DATA_DIR=$DATA PATH=$BIN:\$PATH
  inectl status                                        # nodes, databases, certificates, alerts
  ine-log follow                                       # watch events as they happen (Ctrl-C stops)
  inectl watch topic db.                               # the policy update stream, JSON lines
  inectl tune db demo data_internode_encryption disabled
  inectl cluster certificate rotate
  redis-cli -h 127.0.0.1 -p $DB_PORT get demo:key
  curl -sk -u admin@example.com:\${INE_ADMIN_PASSWORD:-ine-demo-password} https://127.0.0.1:$REST_PORT/v1/bdbs
  curl -sk -u admin@example.com:\${INE_ADMIN_PASSWORD:-ine-demo-password} https://127.0.0.1:$REST_PORT/v1/cluster/certificates
                                                       # (its "ca"."certificate" is the CA to --cacert)
  curl -s http://127.0.0.1:$METRICS_PORT/metrics       # Prometheus metrics
  $CTL status                                          # the processes
Stop:       $CTL shutdown
Start over: $CTL shutdown; rm -rf $DATA
EOT
