#!/usr/bin/env bash
# Failover (issue #21), TRIALS times each, median and max:
#   leader   kill -9 the etcd leader -> the first change acknowledged by a survivor's ine-policy
#            (inectl create db through that node, retried until it answers yes)
#   ca       kill -9 the ine-ca holding the CA lease -> the first certificates issued by the new
#            holder (a rotation asked on a survivor's node at the moment of the kill completes)
# against the raw figure etcd-notes measured for etcd alone (leader kill -> first txn: median
# 1.31 s, max 2.56 s) and the goals (<= 3 s; CA: <= TTL + 1.5 s without an etcd leader change).
#
#   bench/etcd/failover.sh [--trials N] [--ttl SECONDS] [--out DIR]
#
# Three etcd members on 127.0.0.51-53, three node data dirs, an ine-mirror, ine-policy and
# ine-ca (--lease-ttl TTL) on each. Only loopback addresses; everything is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD

TRIALS=10 TTL=5 OUT=/tmp/ine-bench-failover
while [ $# -gt 0 ]; do
  case $1 in
    --trials) TRIALS=$2; shift ;;
    --ttl) TTL=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "failover.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BUILD=${BUILD_DIR:-$SRC/build-rel}
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target inectl ine-mirror ine-policy ine-ca >/dev/null

rm -rf "$OUT"; mkdir -p "$OUT"
declare -A PID
cleanup() { for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

CP=22479 PP=22480
cluster="m1=http://127.0.0.51:$PP,m2=http://127.0.0.52:$PP,m3=http://127.0.0.53:$PP"
member() {
  local i=$1 state=$2 a=127.0.0.5$1
  etcd --name m$i --data-dir "$OUT/etcd/m$i" \
    --listen-client-urls http://$a:$CP --advertise-client-urls http://$a:$CP \
    --listen-peer-urls http://$a:$PP --initial-advertise-peer-urls http://$a:$PP \
    --initial-cluster "$cluster" --initial-cluster-state "$state" --initial-cluster-token failover-$$ \
    --snapshot-count 10000 --max-txn-ops 4096 --pre-vote --logger zap --log-outputs stderr 2>>"$OUT/etcd-$i.log" &
  PID[etcd$i]=$!
}
healthy() { curl -sf -m 1 -X POST -d '{"key":"AA=="}' "http://127.0.0.5$1:$CP/v3/kv/range" >/dev/null 2>&1; }
for i in 1 2 3; do member $i new; done
for _ in $(seq 100); do healthy 1 && healthy 2 && healthy 3 && break; sleep 0.1; done

now_ms() { date +%s%3N; }
ctl() { local i=$1; shift; "$BUILD/inectl" --data-dir "$OUT/node$i" "$@"; }

for i in 1 2 3; do
  d=$OUT/node$i; mkdir -p "$d"; chmod 700 "$d"
  others=$(for j in 1 2 3; do [ $j = $i ] || printf ',http://127.0.0.5%s:%s' $j $CP; done)
  echo "endpoints=http://127.0.0.5$i:$CP$others" >"$d/etcd.conf"
done
ctl 1 cluster create name failover nodes 127.0.0.51,127.0.0.52,127.0.0.53 ca_key_bits 2048 >/dev/null
for i in 2 3; do install -m 600 "$OUT/node1/seal.key" "$OUT/node$i/seal.key"; done
for i in 1 2 3; do
  "$BUILD/ine-mirror" --data-dir "$OUT/node$i" 2>"$OUT/mirror-$i.log" & PID[mirror$i]=$!
done
sleep 1
for i in 1 2 3; do
  "$BUILD/ine-policy" --data-dir "$OUT/node$i" --rest-port 0 2>"$OUT/policy-$i.log" & PID[policy$i]=$!
  "$BUILD/ine-ca" --data-dir "$OUT/node$i" --ca-key-bits 2048 --check-interval 1 --lease-ttl "$TTL" \
    2>"$OUT/ca-$i.log" & PID[ca$i]=$!
done
for _ in $(seq 300); do
  [ "$(ctl 1 status 2>/dev/null | sed -n '/^CERTIFICATES/,/^ALERTS/p' | grep -c self_signed)" -ge 6 ] && break
  sleep 0.2
done

leader() {
  for i in 1 2 3; do
    ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.5$i:$CP" endpoint status -w json 2>/dev/null |
      python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; print(1 if s["header"]["member_id"]==s["leader"] else 0)' |
      grep -q 1 && { echo $i; return; }
  done
  echo 0
}
stats() { sort -n | awk '{v[NR]=$1} END {printf "median %.2f s, max %.2f s (n=%d)\n", (NR%2?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2)/1000, v[NR]/1000, NR}'; }

echo "# etcd leader kill -> first acknowledged change on a survivor ($TRIALS trials)"
: >"$OUT/leader.txt"
for t in $(seq "$TRIALS"); do
  l=$(leader); [ "$l" != 0 ] || { echo "no leader" >&2; exit 1; }
  s=$(( l % 3 + 1 ))
  kill -9 "${PID[etcd$l]}"; t0=$(now_ms)
  until ctl "$s" create db name "f$t" port $((20000 + t)) shard_node 1 shard_address 127.0.0.51:6379 >/dev/null 2>&1; do :; done
  t1=$(now_ms)
  echo $((t1 - t0)) | tee -a "$OUT/leader.txt"
  member "$l" existing
  for _ in $(seq 100); do healthy "$l" && break; sleep 0.1; done
  sleep 1
done
echo -n "leader kill -> acknowledged write: "; stats <"$OUT/leader.txt"

echo "# CA holder kill -> first certificates from the new holder ($TRIALS trials, TTL $TTL s)"
: >"$OUT/ca.txt"
for t in $(seq "$TRIALS"); do
  h=0
  for _ in $(seq 200); do
    v=$(ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.51:$CP,http://127.0.0.52:$CP,http://127.0.0.53:$CP" \
          get /ine/ca/holder --print-value-only 2>/dev/null || true)
    case $v in *"$OUT/node"[123]) h=${v: -1} ;; esac
    [ "$h" != 0 ] && break; sleep 0.1
  done
  [ "$h" != 0 ] || { echo "no CA acts" >&2; exit 1; }
  s=$(( h % 3 + 1 ))
  kill -9 "${PID[ca$h]}"; t0=$(now_ms)
  ctl "$s" cluster certificate rotate >/dev/null
  t1=$(now_ms)
  echo $((t1 - t0)) | tee -a "$OUT/ca.txt"
  "$BUILD/ine-ca" --data-dir "$OUT/node$h" --ca-key-bits 2048 --check-interval 1 --lease-ttl "$TTL" \
    2>>"$OUT/ca-$h.log" & PID[ca$h]=$!
  sleep 1
done
echo -n "CA holder kill -> certificates issued by the new holder: "; stats <"$OUT/ca.txt"
