#!/usr/bin/env bash
# The proxy example against HAProxy and nginx as reverse proxies, in the same run.
#
#   benches/proxy_compare.sh            # D=5 seconds per measurement, R=3 rounds
#
# wrk -t1 (pinned to CPU $OTHER_CPU) -> the proxy (one core, pinned to CPU $PROXY_CPU)
# -> coreloop's hello (one core, pinned to CPU $OTHER_CPU). In the proxy's place, in
# turn: the proxy example on io_uring and on epoll; Debian's HAProxy (nbthread 1, http
# mode, keep-alive to the upstream, http-reuse always, option forwardfor); Debian's
# nginx (one worker, master_process off, proxy_pass to an upstream block with
# keepalive, HTTP/1.1 upstream, X-Forwarded-For and -Proto set). Each adds
# X-Forwarded-For as the proxy example does (it also adds X-Forwarded-Proto and Via).
#
# For each proxy and each connection count in $CONNS (64 256): requests/s, p99 (wrk
# --latency), and the proxy's CPU time per request (utime+stime of its process from
# /proc/PID/stat over the run, divided by the requests wrk completed; user and kernel
# apart), with the ratio to HAProxy's taken within each round. R rounds run every proxy
# once each, in the same order; the table gives medians (this machine's speed drifts
# 10-20% over minutes).
#
# wrk keeps each connection busy, so a faster proxy also runs wrk and the upstream
# (which share CPU $OTHER_CPU) harder, and its p99 says as much about them as about the
# proxy. So each proxy also gets the same constant offered load, $RATE requests/s on 64
# connections (loadtest -R, latency counted from each request's scheduled time):
# p50 and p99 at equal load.
#
# Then memory per idle proxied connection pair: $PAIRS (2000) client connections each
# get an answer from a deliberately slow upstream (each request waits 1 s there, so
# every one holds an upstream connection of its own), then all stay idle; the proxy's
# VmRSS before and after, divided by the pairs.
#
# Loopback only, bounded in time (about D*3+6 s per proxy and round, plus the memory
# part: some 3 minutes with the defaults). Needs wrk, curl, haproxy, nginx, python3.
#
# Environment: D=5 R=3 PROXY_CPU=0 OTHER_CPU=1 CONNS="64 256" RATE=40000 (0: none)
#   PAIRS=2000 BASE_PORT=26000
#   ROWS="coreloop_uring coreloop_epoll haproxy nginx" (the rows to run)
#   OTHER_PROXY="name=path/to/proxy ..." (other builds of the proxy example, e.g. an
#   earlier commit's: adds a row name_uring for each, for a before/after in one run)
set -u
cd "$(dirname "$0")/.."
. benches/lib.sh
D=${D:-5}
R=${R:-3}
PROXY_CPU=${PROXY_CPU:-0}
OTHER_CPU=${OTHER_CPU:-1}
CONNS=${CONNS:-64 256}
RATE=${RATE:-40000}
PAIRS=${PAIRS:-2000}
PORT=${BASE_PORT:-26000}
ROWS=${ROWS:-coreloop_uring coreloop_epoll haproxy nginx}
for other in ${OTHER_PROXY:-}; do ROWS="${other%%=*}_uring $ROWS"; done

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || { echo "needs $1 (apt-get install $2)"; exit 1; }; }
need wrk wrk; need curl curl; need haproxy haproxy; need nginx nginx; need python3 python3
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "building the proxy and hello (release)..."
cargo build --release --quiet --example proxy --example hello || exit 1
cargo build --release --quiet -p loadtest || exit 1

WORK=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

UP=$PORT; PORT=$((PORT + 1))
taskset -c "$OTHER_CPU" ./target/release/examples/hello --port "$UP" --cores 1 >/dev/null 2>&1 &
UP_PID=$!; PIDS="$PIDS $UP_PID"
for _ in $(seq 1 50); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$UP/" && break; sleep 0.1; done

ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
uticks() { awk '{sub(/^.*\) /, ""); print $12}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# measure PID ARGS... -> "rps p99_ms us_per_req user_us_per_req errors"
measure() {
  local pid=$1; shift
  local t0 t1 u0 u1 out
  t0=$(ticks "$pid"); u0=$(uticks "$pid")
  out=$(timeout $((D + 30)) taskset -c "$OTHER_CPU" wrk -t1 -d"${D}s" --latency "$@" 2>&1)
  t1=$(ticks "$pid"); u1=$(uticks "$pid")
  local rps reqs p99 errs
  rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')
  errs=$(echo "$out" | awk '/Socket errors|Non-2xx/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) {gsub(/,/, "", $i); n += $i}} END {print n + 0}')
  awk -v r="${rps:-0}" -v n="${reqs:-0}" -v p="${p99:-0}" -v dt=$((t1 - t0)) -v du=$((u1 - u0)) -v hz="$HZ" -v e="$errs" \
    'BEGIN { printf "%.0f %s %.3f %.3f %d\n", r, p, (n > 0) ? dt / hz * 1e6 / n : 0, (n > 0) ? du / hz * 1e6 / n : 0, e }'
}

haproxy_cfg() { # PORT UPSTREAM_PORT
  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:$1
  default_backend be
backend be
  http-request set-header X-Forwarded-Proto http
  server up 127.0.0.1:$2
EOF
}

nginx_cfg() { # PORT UPSTREAM_PORT
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16000;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log error;
events { worker_connections 8000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream up { server 127.0.0.1:$2; keepalive 4096; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF
}

# start ROW PORT UPSTREAM_PORT [extra proxy flags]: the proxy's PID in $PID, once it
# listens
start() {
  local row=$1 port=$2 up=$3; shift 3
  case $row in
    coreloop_uring) taskset -c "$PROXY_CPU" ./target/release/examples/proxy --port "$port" --cores 1 --backend uring --upstream "127.0.0.1:$up" "$@" >/dev/null 2>&1 & ;;
    coreloop_epoll) taskset -c "$PROXY_CPU" ./target/release/examples/proxy --port "$port" --cores 1 --backend epoll --upstream "127.0.0.1:$up" "$@" >/dev/null 2>&1 & ;;
    haproxy) haproxy_cfg "$port" "$up"; taskset -c "$PROXY_CPU" "$HAPROXY" -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & ;;
    *_uring)
      local bin=""
      for other in ${OTHER_PROXY:-}; do [ "${other%%=*}_uring" = "$row" ] && bin=${other#*=}; done
      taskset -c "$PROXY_CPU" "$bin" --port "$port" --cores 1 --backend uring --upstream "127.0.0.1:$up" "$@" >/dev/null 2>&1 & ;;
    nginx) nginx_cfg "$port" "$up"; taskset -c "$PROXY_CPU" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >/dev/null 2>&1 & ;;
  esac
  PID=$!
  PIDS="$PIDS $PID"
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}

stop() { kill -TERM "$1" 2>/dev/null; sleep 0.3; kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

RESULTS=$WORK/results
RATED=$WORK/rated
: >"$RATED"
for round in $(seq 1 "$R"); do
  for row in $ROWS; do
    start "$row" "$PORT" "$UP"; pid=$PID
    if ! curl -s --max-time 2 "http://127.0.0.1:$PORT/" | grep -q "Hello, world"; then
      echo "SKIP $row: not proxying Hello, world on $PORT"; stop "$pid"; PORT=$((PORT + 1)); continue
    fi
    timeout 20 taskset -c "$OTHER_CPU" wrk -t1 -c64 -d1s "http://127.0.0.1:$PORT/" >/dev/null 2>&1
    for c in $CONNS; do
      read -r rps p99 us user errs <<<"$(measure "$pid" -c"$c" "http://127.0.0.1:$PORT/")"
      echo "$round $row $c $rps $p99 $us $user $errs" | tee -a "$RESULTS"
    done
    if [ "$RATE" -gt 0 ]; then
      # The same offered load for every proxy: its latency, not its throughput.
      out=$(timeout $((D + 30)) taskset -c "$OTHER_CPU" ./target/release/loadtest -c 64 -t 1 \
        -R "$RATE" -d "${D}s" --latency "http://127.0.0.1:$PORT/" 2>&1)
      p99=$(echo "$out" | latency_us 99%)
      p50=$(echo "$out" | latency_us 50%)
      echo "$round $row ${p50:-0} ${p99:-0}" | tee -a "$RATED"
    fi
    stop "$pid"
    PORT=$((PORT + 1))
  done
done

echo
echo "wrk -t1 on CPU $OTHER_CPU -> proxy (1 core) on CPU $PROXY_CPU -> hello (1 core) on CPU $OTHER_CPU;"
echo "${D}s per measurement, medians of $R rounds; ratios to haproxy within each round, then their median"
echo
echo "| proxy | conns | req/s | p99 ms | proxy us/req | vs haproxy | user us/req | kernel us/req | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
# Result lines: ROUND ROW CONNS rps p99 us user errors
awk '
  function median(list,   n, v, i, j, t) {
    n = split(list, v, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  NR == FNR { if ($2 == "haproxy") base[$1 " " $3] = $6; next }
  {
    k = $2 " " $3
    if (!(k in seen)) { seen[k] = 1; order[++n] = k }
    rps[k] = rps[k] " " $4; p99[k] = p99[k] " " $5; us[k] = us[k] " " $6
    user[k] = user[k] " " $7; kern[k] = kern[k] " " ($6 - $7); errs[k] += $8
    if (base[$1 " " $3] > 0) ratio[k] = ratio[k] " " $6 / base[$1 " " $3]
  }
  END {
    for (i = 1; i <= n; i++) {
      k = order[i]; split(k, parts, " ")
      printf "| %s | %s | %.0f | %.2f | %.3f | %s | %.3f | %.3f | %d |\n", parts[1], parts[2], median(rps[k]), median(p99[k]),
        median(us[k]), (k in ratio) ? sprintf("%.3f", median(ratio[k])) : "-", median(user[k]), median(kern[k]), errs[k]
    }
  }' "$RESULTS" "$RESULTS" 2>/dev/null
if [ "$R" -gt 1 ]; then
  echo
  echo "each round (proxy conns: us/req, ratio to haproxy, p99 ms):"
  awk 'NR == FNR { if ($2 == "haproxy") base[$1 " " $3] = $6; next }
    { printf "  round %s %s c=%s: %.3f %.3f %.2f\n", $1, $2, $3, $6, (base[$1 " " $3] > 0) ? $6 / base[$1 " " $3] : 0, $5 }' "$RESULTS" "$RESULTS"
fi

if [ "$RATE" -gt 0 ]; then
  echo
  echo "at a constant $RATE requests/s (loadtest -c 64 -R $RATE, latency from each request's"
  echo "scheduled time, so a stall counts for every request it delayed), medians of $R rounds:"
  echo "| proxy | p50 us | p99 us |"
  echo "|---|---:|---:|"
  for row in $ROWS; do
    p50=$(awk -v r="$row" '$2 == r { print $3 }' "$RATED" | median)
    p99=$(awk -v r="$row" '$2 == r { print $4 }' "$RATED" | median)
    echo "| $row | ${p50:--} | ${p99:--} |"
  done
fi

# Memory per idle proxied connection pair.
[ "$PAIRS" -gt 0 ] || exit 0
cat >"$WORK/slow_upstream.py" <<'EOF'
# A keep-alive HTTP upstream that answers each request after 1 s: every request in
# flight through a proxy then holds an upstream connection of its own.
import asyncio, sys
async def serve(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            await asyncio.sleep(1.0)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
    except Exception:
        w.close()
async def main():
    s = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with s:
        await s.serve_forever()
asyncio.run(main())
EOF
cat >"$WORK/pairs.py" <<'EOF'
# Opens N connections to a proxy, sends a request on each at once, reads every answer,
# keeps them all idle, and prints the proxy's VmRSS growth per connection.
import resource, selectors, socket, sys, time
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
time.sleep(0.5)
before = rss()
socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
sel = selectors.DefaultSelector()
for s in socks:
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
pending, deadline = n, time.time() + 60
while pending and time.time() < deadline:
    for key, _ in sel.select(timeout=1):
        try:
            if key.fileobj.recv(65536):
                sel.unregister(key.fileobj)
                pending -= 1
        except BlockingIOError:
            pass
if pending:
    print(f"{pending} of {n} got no answer"); sys.exit(1)
time.sleep(1.5)
after = rss()
print(f"{(after - before) // n}")
EOF
SLOW=$PORT; PORT=$((PORT + 1))
taskset -c "$OTHER_CPU" python3 "$WORK/slow_upstream.py" "$SLOW" >/dev/null 2>&1 &
PIDS="$PIDS $!"
sleep 0.5
echo
echo "memory per idle proxied connection pair ($PAIRS pairs: a client connection and the"
echo "upstream connection its request held, both idle; VmRSS growth of the proxy / pairs):"
echo
echo "| proxy | bytes per pair |"
echo "|---|---:|"
for row in $ROWS; do
  case $row in
    coreloop_*) start "$row" "$PORT" "$SLOW" --max-per-host $((PAIRS + 100)) --upstream-timeout 60 ;;
    *) start "$row" "$PORT" "$SLOW" ;;
  esac
  pid=$PID
  per=$(timeout 120 python3 "$WORK/pairs.py" "$PORT" "$pid" "$PAIRS" 2>&1 | tail -1)
  echo "| $row | $per |"
  stop "$pid"
  PORT=$((PORT + 1))
done
