#!/usr/bin/env bash
# Handshakes never stall a core: a keep-alive HTTPS client at a constant rate on one
# core of coreloop's hello, alone and during storms of new TLS connections (full
# handshakes) against the same core.
#
#   benches/tls_storm.sh                # R=3 rounds
#
# The server (examples/hello --cores 1, TLS, stall threshold 5 ms) runs on CPU
# $SERVER_CPU; the clients on CPU $CLIENT_CPU. Per round and mode:
#   alone  loadtest -c 8 -R $RATE -d $D --latency https://... (coreloop's own TLS client,
#          keep-alive): its p99
#   storm  the same, while storms of $STORM new connections at once (h2load --h1
#          -c $STORM -n $STORM: every connection its own full handshake) follow each
#          other from 1 s in until 1 s before the end: the p99, the handshakes done
#          meanwhile, and the stalls the loop reported (coreloop_loop_stalls_total,
#          threshold 5 ms)
# Modes: queue, the default (ClientHellos answered in budgeted turns of the loop);
# pool, --tls-on-pool (answered on the blocking pool, which the process's one CPU
# confines to the loop's core); plain, the floor: the same client and the same storms
# of new connections without TLS, against hello without TLS (what accepting a storm
# costs the client's p99 by itself). Loopback only, bounded (about 2*D+5 s per round
# and mode).
#
# On a machine other work shares, a latency is mostly the time a thread waited for its
# CPU: RT=1 runs the server and the latency client (not the storm) as SCHED_FIFO
# (chrt -f 50, as root; the kernel's RT throttling still leaves others 5%), so what is
# measured is the server.
#
# Environment: R=3 D=8 RATE=4000 STORM=2000 SERVER_CPU=0 CLIENT_CPU=1 PORT=27443
#   BACKEND=auto RT=0 MODES="queue pool plain"
set -u
cd "$(dirname "$0")/.."
. benches/lib.sh
R=${R:-3}
D=${D:-8}
RATE=${RATE:-4000}
STORM=${STORM:-2000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-27443}
BACKEND=${BACKEND:-auto}
RT=${RT:-0}
MODES=${MODES:-queue pool plain}
FIFO=""
[ "$RT" = 1 ] && FIFO="chrt -f 50"
for tool in h2load openssl curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool"; exit 1; }
done
ulimit -n 20000

echo "building hello and loadtest (release)..."
cargo build --release --quiet -p loadtest || exit 1
cargo build --release --quiet --example hello || exit 1
HELLO=target/release/examples/hello
LOADTEST=target/release/loadtest

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
test_certs "$W"

metric() {
  curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
p99_of() { latency_us 99% "$1"; }

run() {
  local mode=$1 tls="--tls-cert $W/cert.pem --tls-key $W/key.pem" scheme=https host=localhost
  [ "$mode" = pool ] && tls="$tls --tls-on-pool"
  [ "$mode" = plain ] && tls="" && scheme=http && host=127.0.0.1
  # (word splitting of $tls intended: the paths are mktemp's, without spaces)
  # shellcheck disable=SC2086
  $FIFO taskset -c "$SERVER_CPU" "$HELLO" --port "$PORT" --cores 1 --backend "$BACKEND" \
    $tls --metrics $((PORT + 1)) --stall-ms 5 >"$W/server.log" 2>&1 &
  local spid=$!
  for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$((PORT + 1))/metrics" >/dev/null && break
    sleep 0.05
  done
  local url="$scheme://$host:$PORT/"
  # Alone.
  $FIFO taskset -c "$CLIENT_CPU" "$LOADTEST" -c 8 -t 1 -R "$RATE" -d "${D}s" --latency \
    --cacert "$W/ca.pem" "$url" >"$W/alone" 2>&1
  local stalls0 full0
  stalls0=$(metric coreloop_loop_stalls_total)
  full0=$(metric 'coreloop_tls_handshakes_total{kind="full"}')
  full0=${full0:-0}
  # During storms.
  $FIFO taskset -c "$CLIENT_CPU" "$LOADTEST" -c 8 -t 1 -R "$RATE" -d "${D}s" --latency \
    --cacert "$W/ca.pem" "$url" >"$W/storm" 2>&1 &
  local lt=$!
  sleep 1
  local end=$((SECONDS + D - 2)) storms=0
  while [ "$SECONDS" -lt "$end" ]; do
    # Niced: the latency client shares its CPU with the storm and must not wait for it.
    taskset -c "$CLIENT_CPU" nice -n 19 h2load --h1 -c "$STORM" -n "$STORM" \
      --tls13-ciphers=TLS_AES_128_GCM_SHA256 "$scheme://127.0.0.1:$PORT/" >"$W/h2load" 2>&1
    storms=$((storms + 1))
  done
  wait "$lt"
  local stalls1 full1 failed
  stalls1=$(metric coreloop_loop_stalls_total)
  full1=$(metric 'coreloop_tls_handshakes_total{kind="full"}')
  full1=${full1:-0}
  failed=$(awk '/^requests:/ { print $10 + $12 }' "$W/h2load")
  kill "$spid"
  wait "$spid" 2>/dev/null
  echo "$mode $(p99_of "$W/alone") $(p99_of "$W/storm") $storms $((full1 - full0)) $((stalls1 - stalls0)) $failed" >>"$W/results"
  echo "  $mode: p99 alone $(p99_of "$W/alone") us, during storms $(p99_of "$W/storm") us; $storms storms, $((full1 - full0)) full handshakes, $((stalls1 - stalls0)) stalls over 5 ms, last storm's failed+errored $failed"
  grep -h "Socket errors\|Non-2xx" "$W/alone" "$W/storm"
}

: >"$W/results"
for round in $(seq "$R"); do
  modes=$MODES
  [ $((round % 2)) = 0 ] && modes=$(echo "$MODES" | tr ' ' '\n' | tac | tr '\n' ' ')
  for mode in $modes; do
    echo "round $round: $mode"
    run "$mode"
  done
done
echo
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); medians of $R rounds, $RATE req/s on 8 keep-alive connections, storms of $STORM"
printf "| handshakes | p99 alone us | p99 during storms us | ratio | full handshakes during the run | stalls over 5 ms |\n|---|---:|---:|---:|---:|---:|\n"
for mode in $MODES; do
  a=$(awk -v m=$mode '$1 == m { print $2 }' "$W/results" | median)
  s=$(awk -v m=$mode '$1 == m { print $3 }' "$W/results" | median)
  h=$(awk -v m=$mode '$1 == m { print $5 }' "$W/results" | median)
  st=$(awk -v m=$mode '$1 == m { s += $6 } END { print s }' "$W/results")
  printf "| %s | %.0f | %.0f | %.2f | %.0f | %s (all rounds) |\n" "$mode" "$a" "$s" "$(echo "$s / $a" | bc -l)" "$h" "$st"
done
