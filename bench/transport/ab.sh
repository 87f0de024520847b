#!/usr/bin/env bash
# Paired comparison of ine-tls between transport builds or settings, for a host too noisy to
# compare runs made minutes apart: modes are interleaved round by round (both ine nodes
# restarted for each run), with HAProxy's pair measured in every round as the yardstick.
# Bulk (the default): iperf3 Gbit/s (--streams N: N parallel streams, default 1) and the CPU
# both ends spent per GB (/proc/PID/stat).
# --conns: new connections per second (connclient rate, 8 threads; HAProxy's no-ssl-reuse
# listener, so a full handshake each) and both ends' CPU µs per connection. --redis:
# redis-benchmark GET, 50 clients, -P 16, 500k requests: req/s and both ends' CPU µs per
# 1,000 requests. --ping: redis-benchmark PING_MBULK, one client, 20,000 requests one at a time:
# p99 latency in µs (p50 in each round's line) and both ends' CPU µs per 1,000 requests.
# Medians last.
#
#   bench/transport/run.sh --hold &          # the cluster, servers and peers it compares against
#   bench/transport/ab.sh [--out DIR] [--rounds N] [--seconds S] [--streams N | --conns | --redis | --ping] MODE...
#
# Full handshakes through ine: a mode with INE_TRANSPORT_MUX=0 INE_TRANSPORT_RESUME=0.
#
# A MODE is "-" (build-rel's ine-transport with the defaults), or words: environment assignments
# such as "INE_TRANSPORT_MUX=0", and/or the path of another ine-transport binary to compare
# builds ("/tmp/exp/build/ine-transport INE_TRANSPORT_MUX=0"). It takes over the held run's two
# ine nodes: restart the hold afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=/tmp/ine-bench-tp ROUNDS=4 SECS=4 WORK=bulk STREAMS=1
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    --streams) STREAMS=$2; shift ;;
    --conns) WORK=conns ;;
    --redis) WORK=redis ;;
    --ping) WORK=ping ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
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
# One run against a front port: "units rate" (bytes and bit/s, connections and conn/s, or
# requests and req/s).
bulk() { iperf3 -c $A -p "$1" -t "$SECS" -P "$STREAMS" -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bytes"], e["bits_per_second"])'; }
conns() {
  local r; r=$("$OUT/bin/connclient" rate $A "$1" "$SECS" 8)
  awk -v s="$SECS" '$4 != 0 {print "connclient: " $0 > "/dev/stderr"} {printf "%d %.1f\n", $2 * s, $2}' <<<"$r"
}
# Pipelined GETs (the held run's redis fronts).
GETS=500000
gets() {
  redis-benchmark -h $A -p "$1" -c 50 -n $GETS -P 16 -t get -r 100000 --csv |
    awk -F'"' -v n=$GETS '$2 == "GET" {printf "%d %s\n", n, $4; ok = 1} END {exit !ok}'
}
# Requests one at a time: "requests p99-µs p50-µs".
PINGS=20000
pings() {
  redis-benchmark -h $A -p "$1" -c 1 -n $PINGS -t ping_mbulk --csv |
    awk -F'"' -v n=$PINGS '$2 == "PING_MBULK" {printf "%d %.0f p50 %.0f us\n", n, $14 * 1000, $10 * 1000; ok = 1} END {exit !ok}'
}
if [ $WORK = bulk ]; then
  run() { bulk "$1"; }
  HA_PORT=14001 INE_PORT=12001 UNIT=Gbit/s PER="CPU ms per GB" SCALE=1e9 CPU_DIV=1000000000
elif [ $WORK = redis ]; then
  run() { gets "$1"; }
  HA_PORT=14003 INE_PORT=12003 UNIT=req/s PER="CPU µs per 1,000 requests" SCALE=1 CPU_DIV=1000000
elif [ $WORK = ping ]; then
  run() { pings "$1"; }
  HA_PORT=14003 INE_PORT=12003 UNIT="µs p99" PER="CPU µs per 1,000 requests" SCALE=1 CPU_DIV=1000000
else
  run() { conns "$1"; }
  HA_PORT=14005 INE_PORT=12003 UNIT=conn/s PER="CPU µs per connection" SCALE=1 CPU_DIV=1000
fi
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RATE CPU
for r in $(seq "$ROUNDS"); do
  for m in "$@" haproxy; do
    if [ "$m" = haproxy ]; then
      pids=$(pgrep -f -- "haproxy -db -f $OUT/tls/haproxy-[ab].cfg"); c0=$(cpu $pids)
      read -r units rate extra <<<"$(run $HA_PORT)"
      CPU[$m]+=" $(( ($(cpu $pids) - c0) * 10 * CPU_DIV / units ))"
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
      read -r units rate extra <<<"$(run $INE_PORT)"
      CPU[$m]+=" $(( ($(cpu $pids) - c0) * 10 * CPU_DIV / units ))"
    fi
    v=$(awk -v b="$rate" -v k="$SCALE" 'BEGIN {printf "%.2f", b / k}')
    RATE[$m]+=" $v"
    echo "round $r: $m $v $UNIT${extra:+ ($extra)}" >&2
  done
done
printf '%-40s %-34s %s\n' mode "$UNIT (median)" "both ends' $PER (median)"
for m in "$@" haproxy; do
  g=$(median <<<"${RATE[$m]}")
  c=${CPU[$m]:-}; cm=$( [ -n "$c" ] && median <<<"$c" || echo -)
  printf '%-40s %-34s %s\n' "$m" "${RATE[$m]# } ($g)" "${c# } ($cm)"
done
