#!/usr/bin/env bash
# The blocking pool, measured two ways, loopback only and bounded (about 90 s with the
# defaults, after the builds):
#
# 1. Round trip: a task on a loop sends `|| i` to the pool and awaits the value back, N
#    times in a row (benches/pool_compare, one binary): p50, p99 and CPU per round trip
#    (every thread's run time), for coreloop's call_blocking (the pool off the loop's
#    core, as by default; and told to share it) beside tokio's spawn_blocking (a
#    multi-threaded runtime with one worker, and a current-thread runtime).
# 2. The notes example (HTTP JSON over SQLite, --cores 1) seeded with SEED notes, with
#    its queries on the pool and the same API making them inline on the loop: a fast
#    route (GET /notes/1, wrk -c64 --latency) alone, and while slow queries run (a
#    second wrk, -c4, on GET /notes?q=..., a LIKE scan of the table): requests/s and
#    p99 of the fast route, and slow queries answered per second.
#
# R rounds (3) alternate the rows; the tables give medians. The notes server runs on
# CPU $SERVER_CPU alone (taskset: its loop and, as every core it may use has a loop,
# its pool threads too), wrk on $CLIENT_CPU, so that client and server do not share a
# core.
#
#   benches/pool_compare.sh          # R=3 N=20000 D=5 SEED=200000
#
# Needs wrk and curl (installed from Debian's packages if missing and run as root).
set -u
cd "$(dirname "$0")/.."
R=${R:-3}
N=${N:-20000}
D=${D:-5}
SEED=${SEED:-200000}
PORT=${PORT:-25890}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

for tool in wrk curl; do
  if ! command -v "$tool" >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null && apt-get install -y -qq "$tool" >/dev/null
    fi
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)"; exit 1; }
  fi
done

echo "building the notes example and benches/pool_compare (release)..."
cargo build --release --quiet --example notes || exit 1
POOL_TARGET=${POOL_TARGET:-$PWD/target/pool_compare}
(cd benches/pool_compare && CARGO_TARGET_DIR=$POOL_TARGET cargo build --release --quiet) || exit 1
RT_BIN=$POOL_TARGET/release/pool_compare
NOTES_BIN=target/release/examples/notes

TMP=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo
echo "== 1. round trip to the pool and back: N=$N per run, R=$R rounds"
MODES="coreloop coreloop_same tokio_mt tokio_ct"
for r in $(seq "$R"); do
  for m in $MODES; do
    timeout 120 "$RT_BIN" "$m" "$N" >>"$TMP/rt.txt" || echo "$m failed" >&2
  done
done
printf '| %-46s | %8s | %8s | %13s |\n' "pool" "p50 us" "p99 us" "CPU us/trip"
printf '|%s|---------:|---------:|--------------:|\n' "------------------------------------------------"
for m in $MODES; do
  case $m in
    coreloop) label="coreloop call_blocking (pool off the loop's core)" ;;
    coreloop_same) label="coreloop call_blocking (pool on the loop's core)" ;;
    tokio_mt) label="tokio spawn_blocking (multi-thread, 1 worker)" ;;
    tokio_ct) label="tokio spawn_blocking (current-thread)" ;;
  esac
  p50=$(awk -v m="$m" '$1 == m {print $2}' "$TMP/rt.txt" | median)
  p99=$(awk -v m="$m" '$1 == m {print $3}' "$TMP/rt.txt" | median)
  cpu=$(awk -v m="$m" '$1 == m {print $4}' "$TMP/rt.txt" | median)
  printf '| %-46s | %8s | %8s | %13s |\n' "$label" "$p50" "$p99" "$cpu"
done

# wrk's "Requests/sec" and 99% latency (in ms), and its error lines.
rps() { awk '/^Requests\/sec/ {print $2}' "$1"; }
p99ms() {
  awk '$1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}; print v}' "$1"
}
errors() { grep -E "Socket errors|Non-2xx" "$1" | tr -s ' ' | paste -sd ';' -; }

start_notes() { # MODE DB
  local extra=()
  [ "$1" = inline ] && extra+=(--inline)
  [ -e "$2" ] || extra+=(--seed "$SEED")
  taskset -c "$SERVER_CPU" "$NOTES_BIN" --port "$PORT" --cores 1 --db "$2" "${extra[@]}" \
    >"$TMP/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 600); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/notes/1" && return 0
    sleep 0.1
  done
  echo "the notes example did not start:"; cat "$TMP/server.log"; exit 1
}

stop_notes() {
  kill "$SERVER"; wait "$SERVER" 2>/dev/null; SERVER=
}

echo
echo "== 2. notes API, --cores 1, $SEED notes: GET /notes/1 at 64 connections, D=${D}s, R=$R rounds"
FAST="http://127.0.0.1:$PORT/notes/1"
SLOW="http://127.0.0.1:$PORT/notes?q=no-such-text&limit=10"
for r in $(seq "$R"); do
  for mode in pool inline; do
    db="$TMP/notes.sqlite3" # one data set for both modes (seeded by the first start)
    for load in alone slow; do
      start_notes "$mode" "$db"
      out="$TMP/$mode-$load-$r"
      if [ "$load" = slow ]; then
        taskset -c "$CLIENT_CPU" wrk -t1 -c4 -d"$((D + 1))s" --timeout 10s "$SLOW" >"$out.slow" 2>&1 &
        SLOWPID=$!
        sleep 0.5
      fi
      taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${D}s" --timeout 10s --latency "$FAST" >"$out.fast" 2>&1
      [ "$load" = slow ] && wait "$SLOWPID"
      stop_notes
      echo "$mode $load $(rps "$out.fast") $(p99ms "$out.fast") $( [ "$load" = slow ] && rps "$out.slow" || echo -) $(errors "$out.fast")" >>"$TMP/notes.txt"
    done
  done
done
printf '| %-26s | %12s | %14s | %16s | %s\n' "queries" "fast req/s" "fast p99 ms" "slow queries/s" "errors (any round)"
printf '|%s|-------------:|---------------:|-----------------:|\n' "----------------------------"
for mode in pool inline; do
  for load in alone slow; do
    sel() { awk -v m="$mode" -v l="$load" -v f="$1" '$1 == m && $2 == l {print $f}' "$TMP/notes.txt"; }
    errs=$(awk -v m="$mode" -v l="$load" '$1 == m && $2 == l && NF > 5 {$1=$2=$3=$4=$5=""; print}' "$TMP/notes.txt" | sort -u | paste -sd ' ' -)
    label="$mode, $( [ "$load" = slow ] && echo "while slow queries run" || echo "alone")"
    printf '| %-26s | %12s | %14s | %16s | %s\n' "$label" "$(sel 3 | median)" "$(sel 4 | median)" "$(sel 5 | median)" "${errs:-none}"
  done
done
echo
echo "(pool: every query on the blocking pool, whose threads share the loop's CPU $SERVER_CPU;"
echo " inline: the same queries made on the loop, as a handler without the pool would)"
