# Sourced by the control-plane benchmarks: three etcd 3.4 members on 127.0.0.41-43 (plain
# HTTP on loopback, the flags scripts/run.sh gives its members) and three node data dirs
# $OUT/node1..3, each with its own etcd.conf (its member first) and, for the first MIRRORS,
# its ine-mirror. Needs BUILD; everything started goes into pids[] and is killed on exit.
#
#   bench_cluster_start OUT MIRRORS
bench_cluster_start() {
  local out=$1 mirrors=$2 i j a d others cluster
  rm -rf "$out"; mkdir -p "$out"
  pids=()
  trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
  CP=22379 PP=22380
  cluster="m1=http://127.0.0.41:$PP,m2=http://127.0.0.42:$PP,m3=http://127.0.0.43:$PP"
  for i in 1 2 3; do
    a=127.0.0.4$i
    etcd --name m$i --data-dir "$out/etcd/m$i" \
      --listen-client-urls http://$a:$CP --advertise-client-urls http://$a:$CP \
      --listen-peer-urls http://$a:$PP --initial-advertise-peer-urls http://$a:$PP \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench-$$ \
      --snapshot-count 10000 --max-txn-ops 4096 --max-request-bytes 10485760 --pre-vote \
      --auto-compaction-mode revision --auto-compaction-retention 10000 \
      --logger zap --log-outputs stderr 2>"$out/etcd-$i.log" &
    pids+=($!)
  done
  for _ in $(seq 100); do
    curl -sf -X POST -d '{"key":"AA=="}' http://127.0.0.41:$CP/v3/kv/range >/dev/null 2>&1 && break
    sleep 0.1
  done
  for i in 1 2 3; do
    d=$out/node$i; mkdir -p "$d"; chmod 700 "$d"
    others=$(for j in 1 2 3; do [ $j = $i ] || printf ',http://127.0.0.4%s:%s' $j $CP; done)
    echo "endpoints=http://127.0.0.4$i:$CP$others" >"$d/etcd.conf"
    [ "$i" -le "$mirrors" ] || continue
    "$BUILD/ine-mirror" --data-dir "$d" 2>"$out/mirror-$i.log" &
    pids+=($!)
  done
  sleep 0.5
}
