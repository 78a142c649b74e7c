#!/usr/bin/env bash
# Restarting a service under load, two ways, with loadtest as the client at a constant
# rate: one run over kept-alive connections and one opening a new connection per
# request, at the same time, while examples/hello is restarted RESTARTS times:
#
#   handover      the new process starts with --upgrade: it takes the running one's
#                 listening sockets over the upgrade socket, serves on them, and only
#                 then does the old one stop accepting and drain (what this measures);
#   stop-start    the old process is stopped (SIGTERM: a graceful drain) and a new one
#                 started: what a plain restart does. It must show errors (refused
#                 connections while nothing listens, connections reset in the closed
#                 accept queues), or this script could not see any.
#
# Each restart alternates the new process's core count (2, 1, 2, ...), so hand-overs
# to fewer and to more cores than the sockets taken over are both exercised.
#
# The kept-alive client runs with --retry-closed: a connection the old process closes
# while idle is reopened without an error, and a request that met that close before
# any byte of its answer is sent again, once, as browsers, curl and Go's client do
# (RFC 9112 9.3.1); those are shown as "retried". A request on a new connection is
# never retried: any failure there is an error. RETRY_CLOSED=0 runs it without, as wrk
# would count: then the idle connections the old process's drain closes show as errors.
#
# Usage: benches/restart.sh   (env: RATE=2000 RESTARTS=10 EVERY=1.5 PORT=18931 RETRY_CLOSED=1)
# Prints one line per run and mode; exits non-zero if a hand-over run had an error or
# a stop-start run had none. Bounded: about 2 x (RESTARTS x EVERY + 4) seconds after
# the build.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-2000}
RESTARTS=${RESTARTS:-10}
EVERY=${EVERY:-1.5}
PORT=${PORT:-18931}
NEW_CONN_RATE=$((RATE / 4))
RETRY=--retry-closed
if [ "${RETRY_CLOSED:-1}" = 0 ]; then RETRY=; fi

cargo build --release -q --example hello
cargo build --release -q -p loadtest
HELLO=target/release/examples/hello
LOADTEST=target/release/loadtest
WORK=$(mktemp -d)
SOCK=$WORK/upgrade.sock
URL=http://127.0.0.1:$PORT/
DURATION=$(python3 -c "print(int($RESTARTS * $EVERY + 3))")
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Starts hello with CORES cores (and any further flags); its pid in $STARTED.
start_hello() {
    local cores=$1
    shift
    "$HELLO" --port "$PORT" --cores "$cores" --upgrade-socket "$SOCK" "$@" >>"$WORK/hello.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# Waits until something answers on the port (at most 10 s).
wait_answering() {
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null "$URL"; then return 0; fi
        sleep 0.05
    done
    echo "hello does not answer on $URL" >&2
    exit 1
}

# Waits for pid $1 to exit (at most 15 s: the drain deadline is 5 s).
wait_exit() {
    for _ in $(seq 1 300); do
        if ! kill -0 "$1" 2>/dev/null; then
            wait "$1" 2>/dev/null || true
            return 0
        fi
        sleep 0.05
    done
    echo "pid $1 did not exit" >&2
    exit 1
}

summary() { # mode client json-file
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
mode, client, path = sys.argv[1:]
r = json.load(open(path))
e = r["errors"]
errors = e["connect"] + e["read"] + e["write"] + e["timeout"] + e["status"]
print(f"{mode:<10} {client:<11} requests {r['requests']:>6}  errors {errors:>4} "
      f"(connect {e['connect']}, read {e['read']}, write {e['write']}, timeout {e['timeout']}, status {e['status']})  "
      f"retried {r.get('retried', 0):>3}  p50 {r['latency_us']['p50']/1000:.2f} ms  "
      f"p99 {r['latency_us']['p99']/1000:.2f} ms  max {r['latency_us']['max']/1000:.1f} ms")
print(errors, file=open(path + ".errors", "w"))
EOF
}

run() { # mode
    local mode=$1
    rm -f "$SOCK"
    start_hello 2
    local current=$STARTED
    wait_answering
    "$LOADTEST" -R "$RATE" -c 32 -d "${DURATION}s" --timeout 2s $RETRY --json "$URL" \
        >"$WORK/$mode.keepalive.json" 2>"$WORK/$mode.keepalive.err" &
    local ka=$!
    "$LOADTEST" -R "$NEW_CONN_RATE" -c 16 -d "${DURATION}s" --timeout 2s --no-keepalive --json "$URL" \
        >"$WORK/$mode.newconn.json" 2>"$WORK/$mode.newconn.err" &
    local nc=$!
    sleep 1
    for i in $(seq 1 "$RESTARTS"); do
        local cores=$(( i % 2 == 1 ? 1 : 2 ))
        if [ "$mode" = handover ]; then
            start_hello "$cores" --upgrade
            wait_exit "$current"
        else
            kill -TERM "$current"
            wait_exit "$current"
            start_hello "$cores"
            wait_answering
        fi
        current=$STARTED
        sleep "$EVERY"
    done
    wait "$ka" "$nc"
    kill -TERM "$current"
    wait_exit "$current"
    summary "$mode" keep-alive "$WORK/$mode.keepalive.json"
    summary "$mode" new-conns "$WORK/$mode.newconn.json"
}

echo "hello restarted $RESTARTS times, every ${EVERY}s; loadtest -R $RATE over 32 kept-alive connections and -R $NEW_CONN_RATE with a new connection per request, ${DURATION}s each"
run handover
run stop-start
status=0
for f in "$WORK"/handover.*.json.errors; do
    if [ "$(cat "$f")" != 0 ]; then echo "FAIL: errors across hand-overs ($f)"; status=1; fi
done
total=0
for f in "$WORK"/stop-start.*.json.errors; do total=$((total + $(cat "$f"))); done
if [ "$total" = 0 ]; then echo "FAIL: stop-start showed no error: this script cannot see a lost connection"; status=1; fi
if [ "$status" = 0 ]; then echo "OK: no error across hand-overs; $total with stop-and-start"; fi
exit $status
