#!/usr/bin/env bash
# soak.sh — a bounded soak of the supervisord deployment (not part of the test run).
#
#   scripts/soak.sh [SECONDS]     (default 300; INE_SOAK_KEEP=1 keeps the temp data dir;
#                                  INE_SOAK_BIN=build-asan runs an existing build instead of
#                                  building build-rel; INE_SOAK_TOGGLE=S toggles every S s)
#
# A fresh 3-node cluster from deploy/supervisord.conf.in in a temp dir with free ports, two
# encrypted databases on one redis shard behind node 2: "a" (steady) and "b" (toggled).
# For SECONDS: redis-benchmark through node 1's endpoint of "a" and node 3's endpoint of "b",
# a certificate rotation every 20 s, a toggle of "b"'s encryption every 30 s. Reports benchmark
# runs and errors (only "b"'s intended disconnects are allowed), the RSS of every process at
# start and end, restarts, events appended, and `ine-log verify`. Exit 1 on a disallowed error.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-300}
TOGGLE_S=${INE_SOAK_TOGGLE:-30}
if [ -n "${INE_SOAK_BIN:-}" ]; then
  BIN=$(cd "$INE_SOAK_BIN" && pwd)
else
  cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
  cmake --build build-rel -j"$(nproc)" --target inectl ine-log ine-ca ine-policy ine-transport ine-alerting >/dev/null
  BIN=$PWD/build-rel
fi
TMP=$(mktemp -d /tmp/ine-soak.XXXXXX)
DATA=$TMP/dd
CONF=$DATA/supervisord.conf
CTL="supervisorctl -c $CONF"
PROGS="ine-ca ine-policy ine-alerting ine-transport-1 ine-transport-2 ine-transport-3 redis-shard"

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 10000))
    for a in 127.0.0.1 127.0.0.2 127.0.0.3; do (exec 3<>"/dev/tcp/$a/$p") 2>/dev/null && continue 2; done
    case " ${USED:-} " in *" $p "*) continue ;; esac
    USED="${USED:-} $p"; echo "$p"; return
  done
}
TP_PORT=$(free_port); REST_PORT=$(free_port); METRICS_PORT=$(free_port); REDIS_PORT=$(free_port)
DB_A=$(free_port); DB_B=$(free_port)

cleanup() {
  set +e
  jobs -p | xargs -r kill 2>/dev/null
  [ -S "$DATA/run/supervisor.sock" ] && $CTL shutdown >/dev/null 2>&1
  if [ "${INE_SOAK_KEEP:-0}" = 1 ]; then echo "soak: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

echo pw-soak | "$BIN/inectl" --data-dir "$DATA" cluster create name soak nodes 127.0.0.1,127.0.0.2,127.0.0.3 \
  username admin@example.com password - >/dev/null
mkdir -p "$DATA/redis" "$DATA/logs" "$DATA/run"
sed -e "s|@BIN@|$BIN|g" -e "s|@DATA@|$DATA|g" -e "s|@REST_PORT@|$REST_PORT|g" \
    -e "s|@METRICS_PORT@|$METRICS_PORT|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
    -e "s|@TP_PORT@|$TP_PORT|g" -e "s|@CA_ARGS@||g" deploy/supervisord.conf.in >"$CONF"
INE_DATA_DIR=$DATA supervisord -c "$CONF"

CTLI="$BIN/inectl --data-dir $DATA"
active() { $CTLI status 2>/dev/null | sed -n '/^CERTIFICATES/,/^ALERTS/p' | grep -c ' yes$' || true; }
for _ in $(seq 180); do [ "$(active)" -ge 6 ] && break; sleep 1; done
[ "$(active)" -ge 6 ] || { echo "soak: the cluster did not come up; see $DATA/logs" >&2; INE_SOAK_KEEP=1; exit 1; }
for _ in $(seq 30); do [ -S "$DATA/run/policy.sock" ] && break; sleep 1; done
$CTLI create db name a port "$DB_A" shard_node 2 shard_address "127.0.0.2:$REDIS_PORT" data_internode_encryption enabled >/dev/null
$CTLI create db name b port "$DB_B" shard_node 2 shard_address "127.0.0.2:$REDIS_PORT" data_internode_encryption enabled >/dev/null
for _ in $(seq 60); do [ "$(redis-cli -h 127.0.0.1 -p "$DB_A" ping 2>/dev/null)" = PONG ] && break; sleep 1; done

last_seq() { "$BIN/ine-log" --data-dir "$DATA" list | tail -1 | awk '{print $1}'; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }
declare -A PID0 RSS0
for p in $PROGS; do PID0[$p]=$($CTL pid "$p"); RSS0[$p]=$(rss "${PID0[$p]}"); done
SEQ0=$(last_seq)

# Load: back-to-back benchmark runs; a run that fails (or prints an error) counts once.
bench() { # name host port
  local runs=0 bad=0 out end=$((SECONDS + DURATION))
  while [ $SECONDS -lt $end ]; do
    runs=$((runs + 1))
    if ! out=$(timeout 60 redis-benchmark -h "$2" -p "$3" -c 4 -n 20000 -t set,get -q 2>&1) || grep -qi error <<<"$out"; then
      bad=$((bad + 1)); echo "$(date -u +%T) $1: $(tr '\r\n' '  ' <<<"$out" | tail -c 200)" >>"$TMP/errors-$1.log"
    else
      tr '\r' '\n' <<<"$out" | grep 'requests per second' | tail -2 >>"$TMP/rates-$1.log"
    fi
  done
  echo "$runs $bad" >"$TMP/bench-$1.txt"
}
every() { # name period command...
  local name=$1 period=$2 ok=0 bad=0 end=$((SECONDS + DURATION)); shift 2
  while [ $((SECONDS + period)) -le $end ]; do
    sleep "$period"
    if "$@" >/dev/null 2>>"$TMP/errors-$name.log"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
  done
  echo "$ok $bad" >"$TMP/ops-$name.txt"
}
TOGGLE_STATE=$TMP/toggle.state; echo enabled >"$TOGGLE_STATE"
toggle() {
  local next; next=$([ "$(cat "$TOGGLE_STATE")" = enabled ] && echo disabled || echo enabled)
  $CTLI tune db b data_internode_encryption "$next" && echo "$next" >"$TOGGLE_STATE"
}

echo "soak: ${DURATION}s on $DATA (transport port $TP_PORT; db a :$DB_A via node 1, db b :$DB_B via node 3)"
bench a 127.0.0.1 "$DB_A" & bench b 127.0.0.3 "$DB_B" &
every rotate 20 $CTLI cluster certificate rotate & every toggle "$TOGGLE_S" toggle &
wait

SEQ1=$(last_seq)
read -r runs_a bad_a <"$TMP/bench-a.txt"; read -r runs_b bad_b <"$TMP/bench-b.txt"
read -r rot_ok rot_bad <"$TMP/ops-rotate.txt"; read -r tog_ok tog_bad <"$TMP/ops-toggle.txt"
avg() { [ -f "$1" ] && awk -v k="$2" '$1==k {s+=$2; n++} END {if (n) printf "%.0f", s/n; else print "-"}' "$1" || echo -; }
echo
echo "== soak report (${DURATION}s) =="
printf "db a (steady, node 1):  %d benchmark runs, %d with errors; avg SET %s/s GET %s/s\n" "$runs_a" "$bad_a" \
  "$(avg "$TMP/rates-a.log" SET:)" "$(avg "$TMP/rates-a.log" GET:)"
printf "db b (toggled, node 3): %d benchmark runs, %d with errors (allowed: the toggles' disconnects)\n" "$runs_b" "$bad_b"
printf "rotations: %d ok, %d failed; toggles: %d ok, %d failed\n" "$rot_ok" "$rot_bad" "$tog_ok" "$tog_bad"
printf "events appended: %d (seq %s -> %s)\n" $((SEQ1 - SEQ0)) "$SEQ0" "$SEQ1"
printf "%-18s %8s %10s %10s %s\n" process pid "RSS0 kB" "RSS1 kB" restarted
restarts=0
for p in $PROGS; do
  pid1=$($CTL pid "$p"); r=no; [ "$pid1" != "${PID0[$p]}" ] && r=YES && restarts=$((restarts + 1))
  printf "%-18s %8s %10s %10s %s\n" "$p" "$pid1" "${RSS0[$p]}" "$(rss "$pid1")" "$r"
done
verify=ok; "$BIN/ine-log" --data-dir "$DATA" verify >/dev/null || verify=FAILED
echo "ine-log verify: $verify"
[ -s "$TMP/errors-a.log" ] && { echo "db a errors:"; head -5 "$TMP/errors-a.log"; }
[ -s "$TMP/errors-b.log" ] && { echo "db b errors (first 3):"; head -3 "$TMP/errors-b.log"; }
for n in rotate toggle; do [ -s "$TMP/errors-$n.log" ] && { echo "$n errors:"; head -3 "$TMP/errors-$n.log"; }; done
if [ "$restarts" -ne 0 ]; then
  echo "restarts (supervisord.log):"; grep -E "exited: ine-" "$DATA/logs/supervisord.log" | grep -v "ine-policy (exit status 1" | tail -5
fi
if [ "$bad_a" -ne 0 ] || [ "$rot_bad" -ne 0 ] || [ "$tog_bad" -ne 0 ] || [ "$restarts" -ne 0 ] || [ "$verify" != ok ]; then
  echo "soak: FAILED (data dir kept: $TMP)"; INE_SOAK_KEEP=1; exit 1
fi
echo "soak: ok"
