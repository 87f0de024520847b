#!/usr/bin/env bash
# The transport's layering, checked on its object files (a link-level call graph: every
# function a file calls or takes the address of in another file is an undefined symbol of its
# object, defined in the other's). A file may use only files above it in the order of
# services/transport/transport.h; any use of a file below it (a back-edge, hence also any
# cycle) fails, naming both files and the symbols.
#
#   scripts/transport-layers.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: transport-layers.sh BUILD_DIR}
SRC=$(cd "$(dirname "$0")/.." && pwd)
OBJ=$BUILD/CMakeFiles/ine-transport.dir/services/transport
ORDER=$(sed -n '/^ \*   [a-z]*\.c /s/^ \*   \([a-z]*\.c\).*/\1/p' "$SRC/services/transport/transport.h")
[ -n "$ORDER" ] || { echo "transport-layers: no file order in transport.h" >&2; exit 1; }
declare -A rank def
i=0
for f in $ORDER; do
  rank[$f]=$i; i=$((i + 1))
  [ -f "$OBJ/$f.o" ] || { echo "transport-layers: $OBJ/$f.o missing (build ine-transport first)" >&2; exit 1; }
done
# The sources that exist now (a build dir may hold objects of files since removed).
objs=()
for c in "$SRC"/services/transport/*.c; do
  f=$(basename "$c")
  [ -n "${rank[$f]:-}" ] || { echo "transport-layers: $f is not in transport.h's order" >&2; exit 1; }
  objs+=("$OBJ/$f.o")
done
for o in "${objs[@]}"; do
  f=$(basename "$o" .o)
  for s in $(nm --defined-only -g "$o" | awk '$2 ~ /[TDBR]/ {print $3}'); do def[$s]=$f; done
done
bad=0 edges=0
for o in "${objs[@]}"; do
  f=$(basename "$o" .o)
  declare -A uses=()
  for s in $(nm -u "$o" | awk '{print $2}'); do
    g=${def[$s]:-}
    [ -n "$g" ] && [ "$g" != "$f" ] || continue
    uses[$g]="${uses[$g]:-} $s"
  done
  for g in "${!uses[@]}"; do
    edges=$((edges + 1))
    if [ "${rank[$g]}" -gt "${rank[$f]}" ]; then
      echo "back-edge: $f uses $g, which is below it:${uses[$g]}"
      bad=1
    fi
  done
  unset uses
done
[ $bad = 0 ] && echo "transport-layers: $edges uses between ${#rank[@]} files, all downward"
exit $bad
