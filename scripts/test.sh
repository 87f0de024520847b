#!/usr/bin/env bash
# The test command (README.md; .ci/run calls it): installs what is missing, then builds and
# runs every test twice — a normal build with -Werror, and one under AddressSanitizer +
# UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

jobs=$(nproc)
run_suite() {
  local dir=$1; shift
  echo "=== $dir: configure and build"
  cmake -S . -B "$dir" -DINE_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  echo "=== $dir: tests"
  (cd "$dir" && ctest --output-on-failure --timeout 900)
}

# Optimised builds see warnings (maybe-uninitialized, truncation) that -O0 does not: build one too.
echo "=== build-rel: configure and build (Release, -Werror)"
cmake -S . -B build-rel -DINE_WERROR=ON -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
cmake --build build-rel -j"$jobs"

run_suite build -DCMAKE_BUILD_TYPE=Debug -DINE_SANITIZE=OFF
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DINE_SANITIZE=ON
echo "=== all tests passed (normal and ASan+UBSan)"
