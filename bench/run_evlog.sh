#!/bin/sh
# run_evlog.sh — build the Release tree and run the event log benchmark, keeping its output.
# Usage: bench/run_evlog.sh [bench_evlog args...]   (e.g. --dir /var/lib/ine, --quick)
# The table goes to stdout and to bench-evlog-<host>-<date>.txt in the current directory.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$src/build-rel}
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target bench_evlog -j"$(nproc)" >/dev/null
out=bench-evlog-$(hostname)-$(date +%Y%m%d-%H%M%S).txt
"$build/bench_evlog" "$@" | tee "$out"
echo "saved $out" >&2
