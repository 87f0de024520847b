#!/usr/bin/env bash
# Instructions per mutual-TLS 1.3 handshake (both sides, one process, no sockets) for each way
# of presenting the chain, counted by callgrind: the count of a 30-handshake run minus that of
# a 10-handshake run, over 20, so set-up (key loading) drops out. Deterministic, so it compares
# configurations on a host too noisy for timings. Needs gcc, openssl, valgrind.
#
#   bench/transport/hsloop.sh [--out DIR]
set -euo pipefail
cd "$(dirname "$0")"
OUT=/tmp/ine-bench-hsloop
[ "${1:-}" = --out ] && OUT=$2
for c in gcc openssl valgrind; do command -v $c >/dev/null || { echo "hsloop.sh: needs $c" >&2; exit 1; }; done
umask 077 # the throwaway keys below are still keys: 0600
mkdir -p "$OUT"
gcc -O2 -Wall -Wextra -Werror -o "$OUT/hsloop" hsloop.c -lssl -lcrypto
# RSA-2048 everywhere, as ine's cluster CA issues them: a root, a leaf for each side.
(
  cd "$OUT"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 -subj "/O=ine/CN=cluster CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  for n in a b; do
    openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj "/O=ine/CN=node $n" 2>/dev/null
    printf 'subjectAltName=URI:spiffe://c/node/%s/dp\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n' $n >$n.ext
    openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 30 -extfile $n.ext 2>/dev/null
  done
)
ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$OUT/hsloop" "$1" "$OUT" $2 2>&1 | awk '/Collected/ {print $NF}'; }
printf '%-24s %s\n' configuration "instructions per handshake (both sides)"
for conf in chain-built chain-root leaf-only "chain-built ticket" "leaf-only ticket"; do
  a=$(ir 10 "$conf") b=$(ir 30 "$conf")
  printf '%-24s %s\n' "$conf" "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f M", (b - a) / 20 / 1e6}')"
done
