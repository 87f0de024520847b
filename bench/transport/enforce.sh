#!/usr/bin/env bash
# Enforcement on commit (issue #23): a local 3-node cluster (one data dir, nodes 127.0.0.21-23,
# the demo's layout) with a redis shard on node 2 and a database over it; bench_enforce then
#   - toggles its data_internode_encryption COUNT times, committed through the front door as
#     ine-policy commits it, and times commit -> the existing remote clients through nodes 1
#     and 3 closed (each round alternates off and on);
#   - after ROTATIONS `inectl cluster certificate rotate`, reads the log for commit of each
#     certificate -> its node serves it (CertificateActivated, appended once the transport has
#     swapped its TLS contexts).
#
#   bench/transport/enforce.sh [--count 100] [--rotations 10] [--out DIR]
#
# BIN_DIR (default build-rel) picks the binaries: run it against two builds to compare them.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
COUNT=100 ROT=10 OUT=/tmp/ine-bench-enforce
while [ $# -gt 0 ]; do
  case $1 in
    --count) COUNT=$2; shift ;;
    --rotations) ROT=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "enforce.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "${BIN_DIR:-}" ]; then
  cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
  cmake --build build-rel -j"$(nproc)" --target inectl ine-ca ine-policy ine-transport bench_enforce >/dev/null
fi
BIN=${BIN_DIR:-$SRC/build-rel}
BENCH=${BENCH_BIN:-$SRC/build-rel/bench_enforce}

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done' EXIT
rm -rf "$OUT"; mkdir -p "$OUT/data" "$OUT/redis"
export INE_DATA_DIR=$OUT/data
A1=127.0.0.21 A2=127.0.0.22 A3=127.0.0.23 TP=23342 REDIS=23379 DB=23000
"$BIN/inectl" cluster create name bench nodes $A1,$A2,$A3 ca_key_bits 2048 >/dev/null
"$BIN/ine-ca" --data-dir "$OUT/data" --ca-key-bits 2048 2>"$OUT/ca.log" & pids+=($!)
"$BIN/ine-policy" --data-dir "$OUT/data" --rest-port 0 2>"$OUT/policy.log" & pids+=($!)
for n in 1 2 3; do
  "$BIN/ine-transport" --node $n --data-dir "$OUT/data" --port $TP 2>"$OUT/tp$n.log" & pids+=($!)
done
redis-server --bind $A2 --port $REDIS --save "" --appendonly no --dir "$OUT/redis" >"$OUT/redis.log" 2>&1 & pids+=($!)
active() { "$BIN/inectl" status 2>/dev/null | sed -n '/^CERTIFICATES/,/^ALERTS/p' | grep -c ' yes$' || true; }
for _ in $(seq 120); do [ "$(active)" -ge 6 ] && break; sleep 1; done
[ "$(active)" -ge 6 ] || { echo "enforce.sh: the nodes did not serve their certificates; see $OUT" >&2; exit 1; }
for _ in $(seq 30); do [ -S "$OUT/data/run/policy.sock" ] && break; sleep 0.5; done
"$BIN/inectl" create db name bench port $DB shard_node 2 shard_address $A2:$REDIS data_internode_encryption enabled >/dev/null
sleep 1

echo "# commit of a toggle -> existing remote clients closed, $COUNT toggles (binaries: $BIN)"
"$BENCH" --data-dir "$OUT/data" --db 1 --via $A1:$DB --via $A3:$DB --count "$COUNT" | tee "$OUT/toggles.txt"

echo "# commit of a certificate -> served by its node, $ROT rotations"
for _ in $(seq "$ROT"); do "$BIN/inectl" cluster certificate rotate >/dev/null; sleep 0.5; done
sleep 2
"$BENCH" --data-dir "$OUT/data" --rotations | tee "$OUT/rotations.txt"
