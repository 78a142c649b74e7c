#!/usr/bin/env bash
# loadtest against wrk as load generators, in one run, against one server.
#
#   benches/loadtest_vs_wrk.sh [URL]
#
# Without a URL it starts coreloop's hello example pinned to CPU $SERVER_CPU (for a
# fixed ceiling, build ../shared/peers and pass bare_epoll's URL instead). Each client
# runs pinned to CPU $CLIENT_CPU, one thread: keep-alive at 64 and 256 connections, and
# 16-deep pipelining at 64. Reported: requests/s and the client's CPU time per request
# (utime+stime of the client process over the run / requests it completed), with
# loadtest/wrk ratios: medians of R=3 rounds, each running wrk then loadtest. Loopback
# only, about 6*R*D seconds (90 s by default). Needs wrk (Debian package).
set -u
cd "$(dirname "$0")/.."
D=${D:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
URL=${1:-}
command -v wrk >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet -p loadtest && cargo build --release --quiet --example hello || exit 1
PID=""
if [ -z "$URL" ]; then
  PORT=${PORT:-25700}
  taskset -c "$SERVER_CPU" ./target/release/examples/hello --port "$PORT" --cores 1 >/dev/null 2>&1 &
  PID=$!
  URL="http://127.0.0.1:$PORT/"
  sleep 1
fi
LUA=$(mktemp --suffix .lua)
cat >"$LUA" <<'LUA'
init = function(args)
  local r = {}
  for i = 1, tonumber(args[1]) or 16 do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
LUA
HZ=$(getconf CLK_TCK)
# run_client ARGS... -> "rps us_per_req" (CPU of the client process, from its rusage)
run_client() {
  local out
  out=$( { /usr/bin/time -f "CPU %U %S" taskset -c "$CLIENT_CPU" "$@" ; } 2>&1 )
  echo "$out" | awk -v hz="$HZ" '
    /requests in/ { n = $1 }
    /^Requests\/sec:/ { r = $2 }
    /^CPU / { cpu = $2 + $3 }
    END { printf "%.0f %.2f\n", r, (n > 0) ? cpu * 1e6 / n : 0 }'
}
# Medians over R rounds, wrk and loadtest alternating within each: this machine's speed
# drifts by 10-20% over minutes, and a pair run back to back drifts least.
R=${R:-3}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf "| mode | wrk req/s | loadtest req/s | ratio | wrk client us/req | loadtest client us/req | ratio |\n|---|---:|---:|---:|---:|---:|---:|\n"
for mode in "keep-alive c=64" "keep-alive c=256" "pipelined x16 c=64"; do
  case $mode in
    "keep-alive c=64") w=(wrk -t1 -c64 -d"${D}s" "$URL"); l=(./target/release/loadtest -t1 -c64 -d"${D}s" "$URL") ;;
    "keep-alive c=256") w=(wrk -t1 -c256 -d"${D}s" "$URL"); l=(./target/release/loadtest -t1 -c256 -d"${D}s" "$URL") ;;
    *) w=(wrk -t1 -c64 -d"${D}s" -s "$LUA" "$URL" -- 16); l=(./target/release/loadtest -t1 -c64 -d"${D}s" --pipeline 16 "$URL") ;;
  esac
  WR="" WU="" LR="" LU="" RR="" RU=""
  for _ in $(seq 1 "$R"); do
    read -r wr wu <<<"$(run_client "${w[@]}")"
    read -r lr lu <<<"$(run_client "${l[@]}")"
    WR+=" $wr" WU+=" $wu" LR+=" $lr" LU+=" $lu"
    RR+=" $(awk -v a="$lr" -v b="$wr" 'BEGIN { print (b > 0) ? a / b : 0 }')"
    RU+=" $(awk -v a="$lu" -v b="$wu" 'BEGIN { print (b > 0) ? a / b : 0 }')"
  done
  [ "$R" -gt 1 ] && echo "  ($mode, each round: req/s ratio$RR; CPU ratio$RU)" >&2
  awk -v m="$mode" -v wr="$(median <<<"$WR")" -v wu="$(median <<<"$WU")" -v lr="$(median <<<"$LR")" \
    -v lu="$(median <<<"$LU")" -v rr="$(median <<<"$RR")" -v ru="$(median <<<"$RU")" 'BEGIN {
    printf "| %s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f |\n", m, wr, lr, rr, wu, lu, ru }'
done
if [ "$R" -gt 1 ]; then
  echo "medians of $R rounds (ratios: median of the per-round ratios); client pinned to CPU $CLIENT_CPU"
fi
rm -f "$LUA"
[ -n "$PID" ] && kill -INT "$PID" 2>/dev/null
exit 0
