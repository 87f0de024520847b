#!/usr/bin/env bash
# The README's run command. Today (foundation stage) it installs what is missing, builds,
# creates a local 3-node cluster's data directory (127.0.0.1-3) if there is none, and shows
# its event log and state. As the services land it grows into the full local cluster with a
# real Redis database behind it. Run twice, it reuses the existing cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINE_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target inectl ine-log >/dev/null

DATA_DIR=${INE_DATA_DIR:-$PWD/demo-data}
export INE_DATA_DIR=$DATA_DIR
if [ -f "$DATA_DIR/seal.key" ]; then
  echo "run: reusing the cluster in $DATA_DIR"
else
  ./build/inectl cluster create name demo nodes 127.0.0.1,127.0.0.2,127.0.0.3
fi
echo
echo "--- event log (build/ine-log list)"
./build/ine-log list
echo
echo "--- chain (build/ine-log verify)"
./build/ine-log verify
echo
cat <<EOT
Try next:
  export INE_DATA_DIR=$DATA_DIR
  build/ine-log state                 # the projected cluster state (JSON)
  build/ine-log show 1                # one event in full
  build/ine-log export                # JSON Lines
  build/ine-log follow                # watch new events (Ctrl-C stops)
Start over: rm -rf $DATA_DIR
EOT
