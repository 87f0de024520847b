#!/usr/bin/env bash
# Paired comparison of ine-tls bulk throughput between transport builds or settings, for a
# host too noisy to compare runs made minutes apart: modes are interleaved round by round (both
# ine nodes restarted for each run), with HAProxy's pair measured in every round as the yardstick.
# Per mode: iperf3 Gbit/s, the CPU both ine nodes spent per GB (/proc/PID/stat), and medians.
#
#   bench/transport/run.sh --hold &          # the cluster, servers and peers it compares against
#   bench/transport/ab.sh [--out DIR] [--rounds N] [--seconds S] MODE...
#
# A MODE is "-" (build-rel's ine-transport with the defaults), or words: environment assignments
# such as "INE_TRANSPORT_MUX=0", and/or the path of another ine-transport binary to compare
# builds ("/tmp/exp/build/ine-transport INE_TRANSPORT_MUX=0"). It takes over the held run's two
# ine nodes: restart the hold afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=/tmp/ine-bench-tp ROUNDS=4 SECS=4
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    -*) [ "$1" = - ] && break; echo "ab.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
[ $# -gt 0 ] || { echo "ab.sh: name at least one MODE (see --help)" >&2; exit 2; }
BIN=$PWD/build-rel/ine-transport DD=$OUT/data A=127.0.0.11
[ -x "$BIN" ] && [ -d "$DD" ] || { echo "ab.sh: no held benchmark in $OUT (start bench/transport/run.sh --hold)" >&2; exit 1; }
redis-cli -h $A -p 14003 ping 2>/dev/null | grep -q PONG || { echo "ab.sh: the held run's HAProxy pair does not answer" >&2; exit 1; }

nodes() { pgrep -f -- "--node [12] --data-dir $DD" || true; }
cleanup() { for p in $(nodes); do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
cpu() { local s=0; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $s; }
bulk() { iperf3 -c $A -p "$1" -t "$SECS" -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bytes"], e["bits_per_second"])'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A GBPS CPU
for r in $(seq "$ROUNDS"); do
  for m in "$@" haproxy; do
    if [ "$m" = haproxy ]; then
      read -r bytes bps <<<"$(bulk 14001)"
    else
      cleanup; sleep 0.5
      env=() bin=$BIN
      if [ "$m" != - ]; then
        for w in $m; do
          case $w in *=*) env+=("$w") ;; *) [ -x "$w" ] || { echo "ab.sh: $w: not an executable" >&2; exit 2; }; bin=$w ;; esac
        done
      fi
      for n in 1 2; do env INE_DATA_DIR="$DD" "${env[@]}" "$bin" --node $n --data-dir "$DD" >"$OUT/logs/ab-node$n.log" 2>&1 & done
      for _ in $(seq 100); do redis-cli -h $A -p 12003 ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
      pids=$(nodes); c0=$(cpu $pids)
      read -r bytes bps <<<"$(bulk 12001)"
      CPU[$m]+=" $(( ($(cpu $pids) - c0) * 10 * 1000000000 / bytes ))"
    fi
    GBPS[$m]+=" $(awk -v b="$bps" 'BEGIN {printf "%.2f", b / 1e9}')"
    echo "round $r: $m $(awk -v b="$bps" 'BEGIN {printf "%.2f", b / 1e9}') Gbit/s" >&2
  done
done
printf '%-40s %-34s %s\n' mode "Gbit/s (median)" "both nodes' CPU ms per GB (median)"
for m in "$@" haproxy; do
  g=$(median <<<"${GBPS[$m]}")
  c=${CPU[$m]:-}; cm=$( [ -n "$c" ] && median <<<"$c" || echo -)
  printf '%-40s %-34s %s\n' "$m" "${GBPS[$m]# } ($g)" "${c# } ($cm)"
done
