#!/usr/bin/env bash
# The update-stream benchmark (issue #28): commit -> Update received by a subscriber of every
# node's ine-updates, with commit -> applied in each node's LMDB log side by side (bench_updates);
# then the cost of idle subscribers: IDLE `inectl watch` processes on node 1 filtering a topic
# that never comes (they receive and drop every update, as a real filtering consumer does),
# ine-updates' CPU and memory with them, idle and under the same appends, and the latency again.
#
#   bench/updates/run.sh [--count N] [--size BYTES] [--idle N] [--out DIR]
#
# Three etcd 3.4 members and three node data dirs as bench/etcd/run.sh (bench/etcd/cluster.sh),
# each with its ine-mirror and its ine-updates --node i. Everything is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD

COUNT=500 SIZE=3000 IDLE=100 OUT=/tmp/ine-bench-updates
while [ $# -gt 0 ]; do
  case $1 in
    --count) COUNT=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --idle) IDLE=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BUILD=${BUILD_DIR:-$SRC/build-rel}
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target bench_updates ine-mirror ine-updates inectl >/dev/null

source bench/etcd/cluster.sh
bench_cluster_start "$OUT" 3
declare -A upd
for i in 1 2 3; do
  "$BUILD/ine-updates" --data-dir "$OUT/node$i" --node $i 2>"$OUT/updates-$i.log" &
  pids+=($!); upd[$i]=$!
done
for i in 1 2 3; do
  for _ in $(seq 100); do [ -S "$OUT/node$i/run/updates.req" ] && break; sleep 0.05; done
done

# utime+stime of a pid, in clock ticks; its resident set, in KiB
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

echo "# commit -> received, $COUNT appends of $SIZE B through node 1, one subscriber per node"
t0=$(ticks "${upd[1]}")
"$BUILD/bench_updates" --data-dir "$OUT/node1" --data-dir "$OUT/node2" --data-dir "$OUT/node3" --count "$COUNT" --size "$SIZE" \
  | tee "$OUT/latency-0.txt"
t1=$(ticks "${upd[1]}")
echo "ine-updates node1: $(( (t1 - t0) * 1000 / hz )) ms CPU for $COUNT updates, rss $(rss "${upd[1]}") KiB"

echo "# $IDLE idle subscribers on node 1 (inectl watch topic db.999999.)"
wpids=()
for _ in $(seq "$IDLE"); do
  "$BUILD/inectl" --data-dir "$OUT/node1" watch since 0 topic db.999999. >/dev/null 2>>"$OUT/watchers.log" &
  wpids+=($!); pids+=($!)
done
sleep 3
r0=$(rss "${upd[1]}"); t0=$(ticks "${upd[1]}")
sleep 10
t1=$(ticks "${upd[1]}")
w=0; for p in "${wpids[@]}"; do w=$((w + $(rss "$p"))); done
echo "idle: ine-updates node1 $(( (t1 - t0) * 1000 / hz )) ms CPU in 10 s, rss $r0 KiB; the $IDLE watchers together rss $w KiB"
t0=$(ticks "${upd[1]}")
"$BUILD/bench_updates" --data-dir "$OUT/node1" --data-dir "$OUT/node2" --data-dir "$OUT/node3" --count "$COUNT" --size "$SIZE" \
  | tee "$OUT/latency-$IDLE.txt"
t1=$(ticks "${upd[1]}")
echo "ine-updates node1 with $IDLE subscribers: $(( (t1 - t0) * 1000 / hz )) ms CPU for $COUNT updates, rss $(rss "${upd[1]}") KiB"
alive=0; for p in "${wpids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
echo "watchers still running: $alive of $IDLE"
