#!/usr/bin/env bash
# Installs exactly the Debian 12 packages ine needs to build, test and run. Run as root.
set -euo pipefail

PACKAGES=(
  # toolchain
  gcc make cmake pkg-config
  # libraries
  libssl-dev libzmq3-dev liblmdb-dev libprotobuf-c-dev protobuf-c-compiler libjansson-dev libevent-dev
  libcurl4-openssl-dev
  # tests
  libcriterion-dev openssl faketime libfaketime curl
  # promtool (checks the metrics format); the package also ships a server that tests never start
  prometheus
  # transport tests: real redis shards and clients, packet captures, a TLS scanner, ss
  redis-server redis-tools tshark sslscan iproute2
  # the run command: the local cluster under supervisord
  supervisor
  # consensus: every node runs an etcd member; the event log commits through it
  etcd-server etcd-client
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The etcd package enables a default member of its own (etcd.service, localhost:2379): ine runs
# its members itself, so keep that one off wherever systemd is in charge.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now etcd.service >/dev/null 2>&1 || true
  systemctl mask etcd.service >/dev/null 2>&1 || true
fi
