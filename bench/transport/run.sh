#!/usr/bin/env bash
# The transport benchmark (issue #9): the same workloads, on one machine in one run, through
#   direct     no tunnel: client -> server
#   ine-tls    ine's data plane: node A endpoint -> 3342 TLS -> node B -> server
#   ine-plain  ine with data_internode_encryption off: node A endpoint -> server
#   stunnel    a stunnel4 client/server pair, mutual TLS, the same certificates as ine
#   haproxy    an HAProxy client/server pair, mutual TLS, the same certificates as ine
# Workloads: iperf3 1 and 8 streams, redis-benchmark SET/GET (50 clients, with and without
# -P 16), PING latency p50/p99 (1 client), new connections per second (full handshakes, and
# resumed where the peer supports it), RSS per idle connection (1,000 idle connections).
# Physical limits measured in the same run: openssl speed (aes-128-gcm, rsa2048), plaintext
# loopback (the direct iperf3 figure). Prints a table, writes results.tsv and transport.png.
#
#   bench/transport/run.sh [--quick] [--tls 1.3|1.2] [--out DIR] [--install] [--profile]
#                          [--only "VARIANT..."] [--hold]
#
# --only: measure only these variants (e.g. "ine-tls haproxy"); everything is still set up.
# --hold: set everything up, print the fronts, and wait (for experiments by hand) until killed.
# INE_TP_WRAP="valgrind --tool=callgrind ...": run each ine-transport under this command.
#
# --profile: instead of the workloads, perf-record both ine-transport processes during one
# iperf3 stream through ine-tls, print their on-CPU and run-queue shares (schedstat), and
# write perf-node{1,2}.txt (flat profiles, by symbol and by library) into --out.
#
# Only loopback addresses: node A is 127.0.0.11, node B (and the servers) 127.0.0.12.
# Everything it starts is killed on exit; its files live in --out (default /tmp/ine-bench-tp).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
HERE=$SRC/bench/transport

QUICK=0 TLS=1.3 OUT=/tmp/ine-bench-tp INSTALL=0 PROFILE=0 ONLY="" HOLD=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --tls) TLS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --install) INSTALL=1 ;;
    --profile) PROFILE=1 ;;
    --only) ONLY=$2; shift ;;
    --hold) HOLD=1 ;;
    -h|--help) sed -n 2,26p "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $TLS in 1.3|1.2) ;; *) echo "run.sh: --tls takes 1.3 or 1.2" >&2; exit 2 ;; esac

# --- what it needs ----------------------------------------------------------------------------
need=()
for c in iperf3:iperf3 stunnel4:stunnel4 haproxy:haproxy redis-server:redis-server redis-benchmark:redis-tools \
         gnuplot:gnuplot-nox openssl:openssl cc:gcc pkg-config:pkg-config python3:python3 cmake:cmake; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ $INSTALL = 1 ]; then
    apt-get install -y -q "${need[@]}"
  else
    echo "run.sh: missing: ${need[*]} — install with: apt-get install -y ${need[*]} (or pass --install)" >&2
    exit 1
  fi
fi

if [ $QUICK = 1 ]; then T=3 N=50000 NP=200000 NPING=10000 CT=3 IDLE=1000; else T=10 N=100000 NP=500000 NPING=30000 CT=10 IDLE=1000; fi

# --- build ------------------------------------------------------------------------------------
cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DINE_TESTS=OFF >/dev/null
cmake --build build-rel -j"$(nproc)" --target inectl ine-ca ine-policy ine-transport >/dev/null
BIN=$SRC/build-rel

cleanup() {
  local p
  for p in ${PIDS:-}; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in ${PIDS:-}; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
PIDS=""
start() { # name cmd... : run in the background, log to $OUT/logs/name.log, remember the pid
  local name=$1; shift
  "$@" >"$OUT/logs/$name.log" 2>&1 &
  PIDS="$PIDS $!"
  eval "PID_${name//-/_}=$!"
}

rm -rf "$OUT"; mkdir -p "$OUT/logs" "$OUT/bin" "$OUT/tls" "$OUT/data" "$OUT/redis"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cc -O2 -Wall -Wextra -Werror -o "$OUT/bin/connclient" "$HERE/connclient.c" -lpthread
cc -O2 -Wall -Wextra -Wshadow -Werror -I"$SRC/lib" -I"$BIN/proto" -o "$OUT/bin/export_cert" "$HERE/export_cert.c" \
  "$BIN/libine.a" "$BIN/libine_proto.a" $(pkg-config --libs libprotobuf-c libzmq lmdb jansson openssl)

A=127.0.0.11 B=127.0.0.12
IPERF_PORT=15201 REDIS_PORT=16400
# Front ports, per variant: iperf3 and redis.
declare -A FRONT_HOST=([direct]=$B [ine-tls]=$A [ine-plain]=$A [stunnel]=$A [haproxy]=$A)
declare -A FRONT_IPERF=([direct]=$IPERF_PORT [ine-tls]=12001 [ine-plain]=12002 [stunnel]=13001 [haproxy]=14001)
declare -A FRONT_REDIS=([direct]=$REDIS_PORT [ine-tls]=12003 [ine-plain]=12004 [stunnel]=13003 [haproxy]=14003)
VARIANTS="direct ine-tls ine-plain stunnel haproxy"
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# --- the servers ------------------------------------------------------------------------------
start iperf3 iperf3 -s -B $B -p $IPERF_PORT
start redis redis-server --bind $B --port $REDIS_PORT --save "" --appendonly no --dir "$OUT/redis" --maxclients 8000

# --- the ine cluster (2 nodes) ----------------------------------------------------------------
export INE_DATA_DIR=$OUT/data
if [ $TLS = 1.2 ]; then
  # ine has no protocol-version option: cap it through OpenSSL's system-wide configuration.
  cat >"$OUT/tls/openssl-tls12.cnf" <<EOF
openssl_conf = conf
[conf]
ssl_conf = ssl
[ssl]
system_default = sys
[sys]
MaxProtocol = TLSv1.2
EOF
  export OPENSSL_CONF=$OUT/tls/openssl-tls12.cnf
fi
"$BIN/inectl" cluster create name bench nodes $A,$B username admin@example.com password - <<<"bench-password-not-secret" >/dev/null
start ine-ca "$BIN/ine-ca" --data-dir "$INE_DATA_DIR" --ca-key-bits 2048 --check-interval 60
start ine-policy "$BIN/ine-policy" --data-dir "$INE_DATA_DIR" --rest-port 0
start ine-tp1 ${INE_TP_WRAP:-} "$BIN/ine-transport" --node 1 --data-dir "$INE_DATA_DIR"
start ine-tp2 ${INE_TP_WRAP:-} "$BIN/ine-transport" --node 2 --data-dir "$INE_DATA_DIR"
echo -n "bench: waiting for the certificates "
for i in $(seq 120); do
  if "$OUT/bin/export_cert" "$INE_DATA_DIR" 1 "$OUT/tls/a.crt" "$OUT/tls/a.key" "$OUT/tls/ca.crt" 2>/dev/null &&
     "$OUT/bin/export_cert" "$INE_DATA_DIR" 2 "$OUT/tls/b.crt" "$OUT/tls/b.key" "$OUT/tls/ca.crt" 2>/dev/null; then break; fi
  echo -n .; sleep 1
  [ "$i" = 120 ] && { echo; echo "bench: no certificates after 2 minutes; see $OUT/logs" >&2; exit 1; }
done
echo
cat "$OUT/tls/a.crt" "$OUT/tls/a.key" >"$OUT/tls/a.pem"
cat "$OUT/tls/b.crt" "$OUT/tls/b.key" >"$OUT/tls/b.pem"
chmod 600 "$OUT"/tls/*.pem
for _ in $(seq 60); do [ -S "$INE_DATA_DIR/run/policy.sock" ] && break; sleep 1; done
mkdb() { # name port shard encryption
  "$BIN/inectl" create db name "$1" port "$2" shard_node 2 shard_address "$3" data_internode_encryption "$4" >/dev/null
}
mkdb ipf-tls 12001 $B:$IPERF_PORT enabled
mkdb ipf-plain 12002 $B:$IPERF_PORT disabled
mkdb rds-tls 12003 $B:$REDIS_PORT enabled
mkdb rds-plain 12004 $B:$REDIS_PORT disabled

# --- the peers: the same tunnel, same certificates and suites ---------------------------------
if [ $TLS = 1.3 ]; then
  ST_VER="sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256"
  HA_VER="ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256"
else
  ST_VER="sslVersionMin = TLSv1.2
sslVersionMax = TLSv1.2
ciphers = ECDHE-RSA-AES128-GCM-SHA256"
  HA_VER="ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2 ciphers ECDHE-RSA-AES128-GCM-SHA256"
fi
stunnel_conf() { # role resume
  local role=$1 resume=$2 t=$OUT/tls
  cat <<EOF
foreground = yes
pid =
debug = 3
$( [ "$role" = client ] && echo "client = yes" )
$( [ "$role" = client ] && echo "sessionResume = $resume" )
cert = $t/$( [ "$role" = client ] && echo a || echo b ).crt
key = $t/$( [ "$role" = client ] && echo a || echo b ).key
CAfile = $t/ca.crt
verifyChain = yes
$ST_VER
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
EOF
  if [ "$role" = client ]; then
    printf '[iperf]\naccept = %s:13001\nconnect = %s:13101\n[redis]\naccept = %s:13003\nconnect = %s:13103\n' $A $B $A $B
    printf '[redis-noresume]\naccept = %s:13005\nconnect = %s:13103\nsessionResume = no\n' $A $B
  else
    printf '[iperf]\naccept = %s:13101\nconnect = %s:%s\n[redis]\naccept = %s:13103\nconnect = %s:%s\n' $B $B $IPERF_PORT $B $B $REDIS_PORT
  fi
}
stunnel_conf client yes >"$OUT/tls/stunnel-a.conf"
stunnel_conf server yes >"$OUT/tls/stunnel-b.conf"
start stunnel-a stunnel4 "$OUT/tls/stunnel-a.conf"
start stunnel-b stunnel4 "$OUT/tls/stunnel-b.conf"

# HAProxy: one thread per process, like ine's one-thread worker (see docs/BENCHMARKS.md).
cat >"$OUT/tls/haproxy-a.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
  tune.ssl.default-dh-param 2048
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen iperf
  bind $A:14001
  server b $B:14101 ssl crt $OUT/tls/a.pem ca-file $OUT/tls/ca.crt verify required $HA_VER
listen redis
  bind $A:14003
  server b $B:14103 ssl crt $OUT/tls/a.pem ca-file $OUT/tls/ca.crt verify required $HA_VER
listen redis-noresume
  bind $A:14005
  server b $B:14103 ssl crt $OUT/tls/a.pem ca-file $OUT/tls/ca.crt verify required no-ssl-reuse $HA_VER
EOF
cat >"$OUT/tls/haproxy-b.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen iperf
  bind $B:14101 ssl crt $OUT/tls/b.pem ca-file $OUT/tls/ca.crt verify required $HA_VER
  server s $B:$IPERF_PORT
listen redis
  bind $B:14103 ssl crt $OUT/tls/b.pem ca-file $OUT/tls/ca.crt verify required $HA_VER
  server s $B:$REDIS_PORT
EOF
start haproxy-a haproxy -db -f "$OUT/tls/haproxy-a.cfg"
start haproxy-b haproxy -db -f "$OUT/tls/haproxy-b.cfg"

declare -A PAIR=([direct]="" [ine-tls]="$PID_ine_tp1 $PID_ine_tp2" [ine-plain]="$PID_ine_tp1 $PID_ine_tp2"
                 [stunnel]="$PID_stunnel_a $PID_stunnel_b" [haproxy]="$PID_haproxy_a $PID_haproxy_b")

ping_ok() { [ "$(redis-cli -h "$1" -p "$2" ping 2>/dev/null)" = PONG ]; }
echo -n "bench: waiting for every front to answer "
for v in $VARIANTS; do
  for i in $(seq 60); do
    ping_ok "${FRONT_HOST[$v]}" "${FRONT_REDIS[$v]}" && break
    echo -n .; sleep 1
    [ "$i" = 60 ] && { echo; echo "bench: $v does not answer on ${FRONT_HOST[$v]}:${FRONT_REDIS[$v]}; see $OUT/logs" >&2; exit 1; }
  done
done
echo
# The negotiated protocol and suite, as each tunnel's server end sees them.
for p in "ine-tls $B:3342 data.ine" "stunnel $B:13103 -" "haproxy $B:14103 -"; do
  set -- $p
  sni=(); [ "$3" != - ] && sni=(-servername "$3")
  got=$(openssl s_client -connect "$2" "${sni[@]}" -cert "$OUT/tls/a.crt" -key "$OUT/tls/a.key" -CAfile "$OUT/tls/ca.crt" \
        $( [ $TLS = 1.2 ] && echo -tls1_2 ) </dev/null 2>/dev/null | grep -m1 '^New,' || echo "no answer (probe failed)")
  echo "bench: $1 negotiates: $got"
done

if [ $HOLD = 1 ]; then
  for v in $VARIANTS; do echo "bench: $v: iperf3 ${FRONT_HOST[$v]}:${FRONT_IPERF[$v]}, redis ${FRONT_HOST[$v]}:${FRONT_REDIS[$v]}, pids ${PAIR[$v]:--}"; done
  echo "bench: holding (kill $$ to stop)"
  while :; do sleep 3600 & PIDS="$PIDS $!"; wait $!; done
fi

if [ $PROFILE = 1 ]; then
  command -v perf >/dev/null || { echo "run.sh: --profile needs perf (apt-get install linux-perf)" >&2; exit 1; }
  for n in 1 2; do
    p=$(eval echo "\$PID_ine_tp$n")
    perf record -F 999 -o "$OUT/perf-node$n.data" -p "$p" -- sleep $((T + 1)) >/dev/null 2>&1 &
    PERF_PIDS="${PERF_PIDS:-} $!"
  done
  sleep 0.5
  # /proc/PID/schedstat: ns on a CPU, ns runnable but waiting for one, timeslices.
  for n in 1 2; do read -r "ss_run_$n" "ss_wait_$n" _ <"/proc/$(eval echo "\$PID_ine_tp$n")/schedstat"; done
  t0=$(date +%s%N)
  iperf3 -c $A -p 12001 -t "$T" | tail -4
  t1=$(date +%s%N)
  for n in 1 2; do
    read -r run wait _ <"/proc/$(eval echo "\$PID_ine_tp$n")/schedstat"
    echo "bench: node $n during iperf3: on a CPU $(( (run - $(eval echo "\$ss_run_$n")) * 100 / (t1 - t0) ))% of the time, runnable but waiting for a CPU $(( (wait - $(eval echo "\$ss_wait_$n")) * 100 / (t1 - t0) ))%, otherwise blocked on I/O"
  done
  wait $PERF_PIDS
  for n in 1 2; do
    perf report -i "$OUT/perf-node$n.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | awk 'NR <= 40' >"$OUT/perf-node$n.txt" || true
    { echo "-- by library:"; perf report -i "$OUT/perf-node$n.data" --no-children --sort dso --stdio 2>/dev/null |
      grep -v '^#' | grep -v '^$' | awk 'NR <= 8'; echo "-- samples (999/s while on a CPU): $(perf script -i "$OUT/perf-node$n.data" 2>/dev/null | wc -l)"; } >>"$OUT/perf-node$n.txt" || true
    echo "bench: node $n (A: endpoint + TLS client; B: TLS server + shard side):"; sed -n '1,20p;/^-- by library/,$p' "$OUT/perf-node$n.txt"
  done
  exit 0
fi

# --- measurements -----------------------------------------------------------------------------
R=$OUT/results.tsv
: >"$R"
put() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$R"; } # variant metric value

echo "bench: load average at start: $(cut -d" " -f1-3 /proc/loadavg) on $(nproc) CPUs"
echo "bench: physical limits"
aes=$(openssl speed -seconds 3 -evp aes-128-gcm 2>/dev/null | awk '/^AES-128-GCM|^aes-128-gcm/ {v=$NF} END {sub(/k$/,"",v); print v*1000*8/1e9}')
rsa=$(openssl speed -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $(NF-1)}')
put limit aes128gcm_gbps "$aes"
put limit rsa2048_sign_s "$rsa"
echo "bench: openssl speed: aes-128-gcm ${aes} Gbit/s (16 KiB blocks, 1 core), rsa2048 ${rsa} signs/s"

rss_kb() { local s=0 p; for p in "$@"; do s=$((s + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $s; }

# Memory first, on fresh processes, and additive: each variant's idle connections stay open
# while the next is measured, so no variant reuses memory another one freed (ine-plain and
# ine-tls share their processes: plain is measured first, then TLS on top of it).
echo "bench: RSS of the tunnel processes over $IDLE idle connections each"
IDLE_FDS=()
for v in ine-plain ine-tls stunnel haproxy; do
  want "$v" || continue
  before=$(rss_kb ${PAIR[$v]})
  # (bash warns that the previous coproc still exists: it does, on purpose)
  coproc IDLE_CL { "$OUT/bin/connclient" idle "${FRONT_HOST[$v]}" "${FRONT_REDIS[$v]}" $IDLE; } 2>/dev/null
  read -r _ ok <&"${IDLE_CL[0]}"
  exec {keep}>&"${IDLE_CL[1]}"
  IDLE_FDS+=("$keep")
  sleep 2
  after=$(rss_kb ${PAIR[$v]})
  per=$(python3 -c "print(round(($after-$before)*1024/$IDLE/1000, 1))")
  put "$v" idle_kb_per_conn "$per"
  echo "  $v: $ok idle connections: RSS $before -> $after KiB, $per KB per connection"
done
for fd in "${IDLE_FDS[@]}"; do eval "exec $fd>&-"; done
sleep 3

for v in $VARIANTS; do
  want "$v" || continue
  h=${FRONT_HOST[$v]}
  echo "bench: $v"
  for par in 1 8; do
    sleep 1
    bps=$(iperf3 -c "$h" -p "${FRONT_IPERF[$v]}" -t "$T" -P $par -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
    put "$v" "iperf_p${par}_gbps" "$bps"
    echo "  iperf3 -P $par: $bps Gbit/s"
  done
  for pipe in 1 16; do
    redis-benchmark -h "$h" -p "${FRONT_REDIS[$v]}" -c 50 -n $([ $pipe = 1 ] && echo $N || echo $NP) -P $pipe -t set,get --csv -r 100000 \
      >"$OUT/logs/rb-$v-P$pipe.csv"
    while IFS=, read -r test rps _; do
      test=${test//\"/}; rps=${rps//\"/}
      case $test in SET|GET) put "$v" "redis_${test,,}_p${pipe}_rps" "$rps"; echo "  redis $test -P $pipe: $rps req/s" ;; esac
    done <"$OUT/logs/rb-$v-P$pipe.csv"
  done
  redis-benchmark -h "$h" -p "${FRONT_REDIS[$v]}" -c 1 -n $NPING -t ping --csv >"$OUT/logs/rb-$v-ping.csv"
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  read -r p50 p99 < <(awk -F, '/PING_MBULK/ {gsub(/"/,""); print $5*1000, $7*1000}' "$OUT/logs/rb-$v-ping.csv")
  put "$v" ping_p50_us "$p50"; put "$v" ping_p99_us "$p99"
  echo "  ping 1 client: p50 ${p50} us, p99 ${p99} us"
  # New connections: full handshakes (resumption off), then resumed where the peer resumes.
  port=${FRONT_REDIS[$v]}
  case $v in stunnel) port=13005 ;; haproxy) port=14005 ;; esac
  r=$("$OUT/bin/connclient" rate "$h" "$port" "$CT" 8)
  if [ "$v" = ine-tls ]; then
    # ine's default: a new client is a new stream in the TLS connection node A already has
    # to node B, no handshake. Handshakes per connection need node A restarted without mux
    # (each stream its own TLS connection, resumed), then without resumption as well.
    put "$v" conns_s "$(echo "$r" | awk '{print $2}')"
    echo "  new connections (ine's default: streams in one TLS connection per node pair): $r"
    for mode in "INE_TRANSPORT_MUX=0" "INE_TRANSPORT_MUX=0 INE_TRANSPORT_RESUME=0"; do
      kill "$PID_ine_tp1"; wait "$PID_ine_tp1" 2>/dev/null || true
      start ine-tp1 env $mode ${INE_TP_WRAP:-} "$BIN/ine-transport" --node 1 --data-dir "$INE_DATA_DIR"
      for _ in $(seq 60); do ping_ok $A "${FRONT_REDIS[$v]}" && break; sleep 1; done
      r=$("$OUT/bin/connclient" rate "$h" "$port" "$CT" 8)
      case $mode in *RESUME*) put "$v" conns_full_s "$(echo "$r" | awk '{print $2}')" ;; *) put "$v" conns_resumed_s "$(echo "$r" | awk '{print $2}')" ;; esac
      echo "  new connections (node A restarted with $mode: $( [[ $mode = *RESUME* ]] && echo "full handshakes" || echo "a resumed handshake each")): $r"
    done
  else
    put "$v" conns_full_s "$(echo "$r" | awk '{print $2}')"
    echo "  new connections (full handshakes): $r"
    r=$("$OUT/bin/connclient" rate "$h" "${FRONT_REDIS[$v]}" "$CT" 8)
    put "$v" conns_resumed_s "$(echo "$r" | awk '{print $2}')"
    put "$v" conns_s "$(echo "$r" | awk '{print $2}')"
    echo "  new connections (resumed): $r"
  fi
done

echo "bench: load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
echo "bench: machine: $(nproc) CPUs, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), $(uname -r), TLS $TLS"
python3 "$HERE/report.py" "$R" "$OUT" "$TLS"
