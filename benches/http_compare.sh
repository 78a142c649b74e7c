#!/usr/bin/env bash
# Side-by-side HTTP/1.1 Hello World: coreloop (io_uring and epoll) against tokio+hyper
# (benches/tokio_hello) and, when built, the reference servers in ../shared/peers.
#
#   benches/http_compare.sh            # D=5 seconds per measurement
#
# Each server runs alone, pinned to CPU $SERVER_CPU with one core; wrk runs pinned to
# CPU $CLIENT_CPU. For each: a warm-up, then wrk -t1 -c256 keep-alive, then 16-deep
# pipelining at c=64 (../shared/peers/pipeline.lua, or a copy made here). Reported:
# requests/s, p99 (keep-alive only: wrk's percentiles are wrong with pipelining), and
# the server's CPU time per request (utime+stime from /proc/PID/stat over the run,
# divided by the requests wrk completed), with ratios to $BASE: the peers' tokio_hyper
# when built, else tokio_hello. R rounds (3) run every server once each; the table
# gives medians, and the ratios are taken within a round before the median.
#
# coreloop runs five ways: io_uring and epoll, each with the callback handler (hello)
# and the async one (hello_async), and io_uring with a 100 us batch wait
# (Runtime::batch_wait: while a loop is busy, less CPU per request for up to 100 us more
# latency; none below 60% of its core).
#
# Loopback only, bounded in time (about 15 s per server and round with D=5: some 5.5
# minutes with the peers built). Needs wrk and curl (installed from Debian's packages
# if missing and run as root).
#
# Environment: D=5 R=3 SERVER_CPU=0 CLIENT_CPU=1 BASE_PORT=25000 PEERS=../shared/peers
#   ROWS="coreloop_uring tokio_hyper ..." (the rows to run; see DEFAULT_ROWS and the
#   opt-in *_norec rows below)
#   PEERS_TARGET=/tmp/peers-target (where the peers were built; see their README)
#   BASE=tokio_hyper|tokio_hello|... (the row ratios are taken against)
#   OTHER_HELLO="name=path/to/hello ..." (other builds of hello, e.g. earlier commits':
#   adds the rows name_uring and name_epoll for each, for a before/after in one run)
set -u
cd "$(dirname "$0")/.."
D=${D:-5}
R=${R:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${BASE_PORT:-25000}
PEERS=${PEERS:-../shared/peers}
PEERS_TARGET=${PEERS_TARGET:-/tmp/peers-target}


for tool in wrk curl; do
  if ! command -v "$tool" >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null && apt-get install -y -qq "$tool" >/dev/null
    fi
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)"; exit 1; }
  fi
done

echo "building coreloop hello and tokio_hello (release)..."
cargo build --release --quiet --example hello --example hello_async || exit 1
(cd benches/tokio_hello && CARGO_TARGET_DIR=${TOKIO_TARGET:-/tmp/tokio-hello-target} cargo build --release --quiet) || exit 1
TOKIO_BIN=${TOKIO_TARGET:-/tmp/tokio-hello-target}/release/tokio_hello

LUA=$(mktemp --suffix .lua)
cat >"$LUA" <<'EOF'
init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
EOF

# The process's CPU time so far (utime + stime, in clock ticks; they include the
# softirq time of the loopback network path, which schedstat's run time leaves out).
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Of which in user space (utime): the rest is the kernel's (syscalls, the network path).
uticks() { awk '{sub(/^.*\) /, ""); print $12}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# measure NAME PID ARGS... -> "rps p99_ms server_us server_user_us"
measure() {
  local pid=$1; shift
  local t0 t1 u0 u1 out rps reqs p99
  t0=$(ticks "$pid")
  u0=$(uticks "$pid")
  out=$(timeout $((D + 30)) taskset -c "$CLIENT_CPU" wrk -t1 -d"${D}s" "$@" 2>&1)
  t1=$(ticks "$pid")
  u1=$(uticks "$pid")
  rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')
  awk -v r="${rps:-0}" -v n="${reqs:-0}" -v p="${p99:--}" -v dt=$((t1 - t0)) -v du=$((u1 - u0)) -v hz="$HZ" \
    'BEGIN { printf "%.0f %s %.3f %.3f\n", r, p, (n > 0) ? dt / hz * 1e6 / n : 0, (n > 0) ? du / hz * 1e6 / n : 0 }'
}

RESULTS=$(mktemp)
# ROWS: the rows to run, by name (default: every row but the opt-in ones).
DEFAULT_ROWS="tokio_hello coreloop_uring coreloop_epoll coreloop_async_uring coreloop_async_epoll coreloop_uring_batch tokio_hyper bare_epoll bare_uring may_minihttp_peer"
ROWS=${ROWS:-$DEFAULT_ROWS}
for other in ${OTHER_HELLO:-}; do ROWS="$ROWS ${other%%=*}_uring ${other%%=*}_epoll"; done
run() { # run NAME CMD... (the command gets the port as its last-but-one or via $PORT)
  local name=$1; shift
  case " $ROWS " in *" $name "*) ;; *) return ;; esac
  taskset -c "$SERVER_CPU" "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 50); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
  if ! curl -s --max-time 2 "http://127.0.0.1:$PORT/" | grep -q "Hello, world"; then
    echo "SKIP $name: not serving Hello, world on $PORT"; kill "$pid" 2>/dev/null; return
  fi
  timeout 20 taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT/" >/dev/null 2>&1
  read -r ka_rps ka_p99 ka_us ka_user <<<"$(measure "$pid" -c256 --latency "http://127.0.0.1:$PORT/")"
  read -r pl_rps _ pl_us pl_user <<<"$(measure "$pid" -c64 -s "$LUA" "http://127.0.0.1:$PORT/" -- 16)"
  echo "$ROUND $name $ka_rps $ka_p99 $ka_us $pl_rps $pl_us $ka_user $pl_user" | tee -a "$RESULTS"
  kill -INT "$pid" 2>/dev/null; sleep 0.5; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  PORT=$((PORT + 1))
}

# R rounds, every server once per round, in the same order: this machine's speed drifts
# by 10-20% over minutes, so each ratio is taken within a round and the median of the
# rounds' ratios reported.
for round in $(seq 1 "$R"); do
  ROUND=$round
  run tokio_hello "$TOKIO_BIN" "$PORT" 1
  run coreloop_uring ./target/release/examples/hello --port "$PORT" --cores 1 --backend uring
  run coreloop_epoll ./target/release/examples/hello --port "$PORT" --cores 1 --backend epoll
  # the same server with an async handler (examples/hello_async.rs)
  run coreloop_async_uring ./target/release/examples/hello_async --port "$PORT" --cores 1 --backend uring
  run coreloop_async_epoll ./target/release/examples/hello_async --port "$PORT" --cores 1 --backend epoll
  # io_uring gathering completions for up to 100 us once one has come (Runtime::batch_wait)
  run coreloop_uring_batch ./target/release/examples/hello --port "$PORT" --cores 1 --backend uring --batch-wait-us 100
  # opt-in rows: histograms off (what recording costs: ROWS="coreloop_uring
  # coreloop_uring_norec coreloop_epoll coreloop_epoll_norec" BASE=coreloop_uring_norec)
  run coreloop_uring_norec ./target/release/examples/hello --port "$PORT" --cores 1 --backend uring --no-recording
  run coreloop_epoll_norec ./target/release/examples/hello --port "$PORT" --cores 1 --backend epoll --no-recording
  for other in ${OTHER_HELLO:-}; do
    run "${other%%=*}_uring" "${other#*=}" --port "$PORT" --cores 1 --backend uring
    run "${other%%=*}_epoll" "${other#*=}" --port "$PORT" --cores 1 --backend epoll
  done
  for peer in tokio_hyper may_minihttp_peer bare_epoll bare_uring; do
    if [ -x "$PEERS_TARGET/release/$peer" ]; then run "$peer" "$PEERS_TARGET/release/$peer" "$PORT" 1; fi
  done
done
BASE=${BASE:-$(grep -q '^[0-9]* tokio_hyper ' "$RESULTS" && echo tokio_hyper || echo tokio_hello)}

echo
echo "server pinned to CPU $SERVER_CPU (1 core), wrk -t1 on CPU $CLIENT_CPU, ${D}s per row;"
echo "medians of $R rounds; ratios to $BASE within each round, then their median"
echo
echo "| server | keep-alive c=256 req/s | p99 ms | server us/req | vs $BASE | pipelined x16 c=64 req/s | vs $BASE | server us/req | vs $BASE |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
# Result lines: ROUND NAME ka_rps ka_p99 ka_us pl_rps pl_us ka_user_us pl_user_us
awk -v base="$BASE" '
  function median(list,   n, v, i, j, t) {
    n = split(list, v, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  NR == FNR { if ($2 == base) { bk[$1] = $5; bp[$1] = $6; bu[$1] = $7 }; next }
  {
    if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 }
    ka[$2] = ka[$2] " " $3; p99[$2] = p99[$2] " " $4; kus[$2] = kus[$2] " " $5
    pl[$2] = pl[$2] " " $6; pus[$2] = pus[$2] " " $7
    if (bk[$1] > 0) rk[$2] = rk[$2] " " $5 / bk[$1]
    if (bp[$1] > 0) rp[$2] = rp[$2] " " $6 / bp[$1]
    if (bu[$1] > 0) ru[$2] = ru[$2] " " $7 / bu[$1]
    # where the time goes: user space (utime), and the kernel (the rest)
    ku[$2] = ku[$2] " " $8; kk[$2] = kk[$2] " " ($5 - $8)
    pu[$2] = pu[$2] " " $9; pk[$2] = pk[$2] " " ($7 - $9)
  }
  END {
    for (i = 1; i <= n; i++) {
      s = order[i]
      printf "| %s | %.0f | %.2f | %.3f | %.3f | %.0f | %.3f | %.3f | %.3f |\n", s, median(ka[s]), median(p99[s]),
        median(kus[s]), median(rk[s]), median(pl[s]), median(rp[s]), median(pus[s]), median(ru[s])
    }
    print ""
    print "where the server'"'"'s time goes (medians; user space, and the kernel: the rest):"
    print ""
    print "| server | keep-alive user us/req | kernel us/req | pipelined user us/req | kernel us/req |"
    print "|---|---:|---:|---:|---:|"
    for (i = 1; i <= n; i++) {
      s = order[i]
      printf "| %s | %.3f | %.3f | %.3f | %.3f |\n", s, median(ku[s]), median(kk[s]), median(pu[s]), median(pk[s])
    }
  }' "$RESULTS" "$RESULTS"
if [ "$R" -gt 1 ]; then
  echo
  echo "each round (server: keep-alive us/req ratio, pipelined req/s ratio, pipelined us/req ratio):"
  awk -v base="$BASE" 'NR == FNR { if ($2 == base) { bk[$1] = $5; bp[$1] = $6; bu[$1] = $7 }; next }
    { printf "  round %s %s: %.3f %.3f %.3f\n", $1, $2, (bk[$1] > 0) ? $5 / bk[$1] : 0, (bp[$1] > 0) ? $6 / bp[$1] : 0, (bu[$1] > 0) ? $7 / bu[$1] : 0 }' "$RESULTS" "$RESULTS"
fi
rm -f "$LUA" "$RESULTS"
