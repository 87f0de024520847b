#!/usr/bin/env bash
# The control-plane benchmark (issue #21): appends through ine's front door against raw
# compare-and-put transactions of the same size sent to the same etcd members, in one run,
# rounds interleaved (bench_commit); then the same with a writer on each of the three nodes at
# once; then commit -> applied in every node's local log (three mirrors, bench_applied).
#
#   bench/etcd/run.sh [--count N] [--rounds R] [--size BYTES] [--out DIR] [--mirrors N]
#
# --mirrors N: run only the first N nodes' mirrors (default 3); with 1, the one-writer figures
# show what the other two nodes' copying costs on a machine that hosts all three.
#
# Three etcd 3.4 members on 127.0.0.41-43 (plain HTTP on loopback, the flags scripts/run.sh
# gives its members), three data dirs each with its own etcd.conf (its member first) and its
# own ine-mirror. Everything it starts is killed on exit; files live in --out.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD

COUNT=2000 ROUNDS=3 SIZE=3000 OUT=/tmp/ine-bench-etcd MIRRORS=3
while [ $# -gt 0 ]; do
  case $1 in
    --count) COUNT=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --mirrors) MIRRORS=$2; shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BUILD=${BUILD_DIR:-$SRC/build-rel}
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target bench_commit bench_applied ine-mirror >/dev/null

source bench/etcd/cluster.sh
bench_cluster_start "$OUT" "$MIRRORS"

echo "# one writer (node 1), $COUNT appends of $SIZE B per round, $ROUNDS rounds, raw / ine / ine without the mirror wait interleaved"
"$BUILD/bench_commit" --data-dir "$OUT/node1" --mode all --count "$COUNT" --rounds "$ROUNDS" --size "$SIZE" \
  | tee "$OUT/one-writer.txt"

# What the copies cost etcd itself: raw again, with a watch on the raw keys open at each member
# (curl reads and discards the stream: etcd's side of a mirror, none of ine's), paired with ine.
echo "# one writer, raw with a watcher at each member / ine, $ROUNDS rounds"
watch_key=$(printf /bench/raw/ | base64 -w0) watch_end=$(printf /bench/raw0 | base64 -w0)
for r in $(seq "$ROUNDS"); do
  wp=()
  for i in 1 2 3; do
    curl -sN -o /dev/null -X POST -d "{\"create_request\":{\"key\":\"$watch_key\",\"range_end\":\"$watch_end\"}}" \
      http://127.0.0.4$i:$CP/v3/watch &
    wp+=($!)
  done
  sleep 0.2
  "$BUILD/bench_commit" --data-dir "$OUT/node1" --mode raw --count "$COUNT" --rounds 1 --size "$SIZE" --writer-id "watched$r" \
    | sed 's/^raw /raw-watched /'
  for p in "${wp[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  "$BUILD/bench_commit" --data-dir "$OUT/node1" --mode ine --count "$COUNT" --rounds 1 --size "$SIZE" --writer-id "watched$r"
done | tee "$OUT/one-writer-watched.txt"

if [ "$MIRRORS" -lt 3 ]; then exit 0; fi
echo "# three writers at once, one per node (raw: a head each; ine: the one log, so they race for its head)"
for mode in raw ine; do
  wp=()
  for i in 1 2 3; do
    "$BUILD/bench_commit" --data-dir "$OUT/node$i" --mode $mode --count $((COUNT / 2)) --rounds 1 --size "$SIZE" \
      --writer-id "n$i" >"$OUT/three-$mode-$i.txt" &
    wp+=($!)
  done
  for p in "${wp[@]}"; do wait "$p"; done
  cat "$OUT"/three-$mode-*.txt
  awk -v m=$mode '{for(i=1;i<=NF;i++){split($i,kv,"="); if(kv[1]=="rate") s+=kv[2]}} END {printf "%s three writers: %.1f appends/s together\n", m, s}' \
    "$OUT"/three-$mode-*.txt
done

echo "# commit -> applied in every node's local log"
"$BUILD/bench_applied" --data-dir "$OUT/node1" --data-dir "$OUT/node2" --data-dir "$OUT/node3" --count 500 --size "$SIZE" \
  | tee "$OUT/applied.txt"
