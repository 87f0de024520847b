#!/usr/bin/env bash
# bench_ca.sh — certificate issuance and rotation, next to the machine's RSA key generation limit.
#
# Measures, in one run on this machine:
#   1. `openssl genrsa 2048`: keys per second, one process and one per CPU (the physical limit:
#      every node certificate needs a fresh RSA-2048 key);
#   2. ine-ca issuing the initial certificates of an N-node cluster (2 per node): certificates/s;
#   3. `inectl cluster certificate rotate` of a cluster of 3, 30 and 100 nodes: seconds, end to end
#      (request recorded, keys generated on all cores, one durable append).
# Usage: bench/bench_ca.sh [build dir]   (default: build-rel, built Release if missing)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build-rel}
if [ ! -x "$build/ine-ca" ]; then
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" --target ine-ca inectl ine-log >/dev/null
fi
work=$(mktemp -d /tmp/ine-bench-ca-XXXXXX)
trap 'pkill -f "ine-ca --data-dir $work" 2>/dev/null || true; rm -rf "$work"' EXIT
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", n / (b - a) }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

cpus=$(nproc)
n=20
t0=$(now); for _ in $(seq $n); do openssl genrsa 2048 >/dev/null 2>&1; done; t1=$(now)
genrsa1=$(rate $n "$t0" "$t1")
t0=$(now)
for c in $(seq "$cpus"); do (for _ in $(seq $n); do openssl genrsa 2048 >/dev/null 2>&1; done) & done; wait
t1=$(now)
genrsaN=$(rate $((n * cpus)) "$t0" "$t1")

count_issued() { "$build/ine-log" --data-dir "$1" list --type certificate_issued | wc -l; }

echo "machine: $cpus CPUs, $(uname -r), OpenSSL $(openssl version | cut -d' ' -f2)"
echo
printf "%-46s %12s\n" "measure" "value"
printf "%-46s %12s\n" "openssl genrsa 2048, 1 process (keys/s)" "$genrsa1"
printf "%-46s %12s\n" "openssl genrsa 2048, $cpus processes (keys/s)" "$genrsaN"

for nodes in 3 30 100; do
  dd=$work/c$nodes
  addrs=$(for i in $(seq "$nodes"); do printf "127.0.%d.%d," $((i / 250 + 1)) $((i % 250 + 1)); done)
  "$build/inectl" --data-dir "$dd" cluster create name bench nodes "${addrs%,}" >/dev/null
  # The CA key is made once per cluster; it is not part of node issuance.
  t0=$(now)
  "$build/ine-ca" --data-dir "$dd" --ca-key-bits 2048 --check-interval 3600 >"$work/ca$nodes.log" 2>&1 &
  want=$((nodes * 2))
  while [ "$(count_issued "$dd")" -lt "$want" ]; do sleep 0.05; done
  t1=$(now)
  printf "%-46s %12s\n" "initial issuance, $nodes nodes ($want certs/s)" "$(rate $want "$t0" "$t1")"
  t0=$(now)
  "$build/inectl" --data-dir "$dd" cluster certificate rotate >/dev/null
  t1=$(now)
  printf "%-46s %12s\n" "rotate all, $nodes nodes (seconds)" "$(secs "$t0" "$t1")"
  printf "%-46s %12s\n" "rotate all, $nodes nodes (certs/s)" "$(rate $want "$t0" "$t1")"
  pkill -f "ine-ca --data-dir $dd" || true
  wait 2>/dev/null || true
done
