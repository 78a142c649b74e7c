#!/usr/bin/env bash
# HTTPS Hello World: coreloop (examples/hello --tls-cert/--tls-key, io_uring and epoll)
# against Debian's nginx (worker_processes 1, OpenSSL), same ECDSA P-256 certificate,
# TLS 1.3 with TLS_AES_128_GCM_SHA256, X25519.
#
#   benches/tls_compare.sh             # R=3 rounds, D=5 seconds per measurement
#
# Each server runs alone on CPU $SERVER_CPU (one core); the clients run on CPU
# $CLIENT_CPU. Per server and round:
#   keepalive  h2load --h1 -c 256 -t 1 for D s: requests/s, and the server's CPU per
#              request (utime+stime of every thread from /proc/PID/stat, over the run)
#   full       new TLS connections with full handshakes, one request each
#              (openssl s_time -new, $STIME parallel clients for D s): server CPU per
#              connection (accept, handshake, request, close)
#   resumed    the same with resumed sessions (h2load -H 'Connection: close', which
#              resumes its first session on every later connection; counted from
#              coreloop's metrics where it is coreloop): server CPU per connection
#   idle       $IDLE idle TLS connections held open (handshake done, nothing sent):
#              the server's RSS growth per connection
# Rows alternate order each round; the table gives medians over rounds. Loopback only,
# bounded (about 4*D+10 s per server and round). Needs nginx, h2load (nghttp2-client),
# openssl, python3. Kernel TLS is reported if the kernel offers the tls ULP.
#
# Environment: D=5 R=3 SERVER_CPU=0 CLIENT_CPU=1 PORT=26443 IDLE=2000 STIME=4
#   ROWS="coreloop_uring coreloop_epoll nginx" (coreloop_pool: io_uring with the
#   ClientHellos answered on the blocking pool, here on the server's one CPU)
set -u
cd "$(dirname "$0")/.."
. benches/lib.sh
D=${D:-5}
R=${R:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-26443}
IDLE=${IDLE:-2000}
STIME=${STIME:-4}
ROWS=${ROWS:-"coreloop_uring coreloop_epoll nginx"}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for tool in h2load openssl python3 "$NGINX"; do
  command -v "$tool" >/dev/null || [ -x "$tool" ] || { echo "needs $tool"; exit 1; }
done
HZ=$(getconf CLK_TCK)

echo "building coreloop hello (release)..."
cargo build --release --quiet --example hello || exit 1
HELLO=target/release/examples/hello

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
test_certs "$W"
cat >"$W/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $W/nginx.pid;
error_log $W/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $W; proxy_temp_path $W; fastcgi_temp_path $W;
  uwsgi_temp_path $W; scgi_temp_path $W;
  server {
    listen 127.0.0.1:$PORT ssl;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    ssl_session_tickets on;
    location / { default_type text/plain; return 200 "Hello, world"; }
  }
}
EOF
cat >"$W/idle.py" <<'EOF'
import socket, ssl, sys, time
port, n, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
held = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    held.append(s)
print("ready", flush=True)
sys.stdin.readline()
EOF

cpu_of() { awk -v hz="$HZ" '{ printf "%.6f", ($14 + $15) / hz }' "/proc/$1/stat"; }
user_of() { awk -v hz="$HZ" '{ printf "%.6f", $14 / hz }' "/proc/$1/stat"; }
rss_of() { awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$1/status"; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "server did not listen on $PORT"; return 1
}

start() {
  case $1 in
    coreloop_uring | coreloop_epoll | coreloop_pool)
      local b=${1#coreloop_} pool=""
      [ "$b" = pool ] && b=uring pool=--tls-on-pool
      taskset -c "$SERVER_CPU" "$HELLO" --port "$PORT" --cores 1 --backend "$b" \
        --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" --metrics $((PORT + 1)) $pool \
        >"$W/server.log" 2>&1 &
      ;;
    nginx)
      taskset -c "$SERVER_CPU" "$NGINX" -p "$W" -c "$W/nginx.conf" >"$W/server.log" 2>&1 &
      ;;
  esac
  SPID=$!
  wait_port
}

stop() { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }

client() { taskset -c "$CLIENT_CPU" "$@"; }

CIPHER=--tls13-ciphers=TLS_AES_128_GCM_SHA256
URL=https://127.0.0.1:$PORT/

measure() {
  local row=$1 out c0 c1 n r0 r1
  start "$row" || return 1
  # Idle connections first, on a fresh server: RSS per connection.
  r0=$(rss_of "$SPID")
  coproc IDLEC { client python3 "$W/idle.py" "$PORT" "$IDLE" "$W/ca.pem"; }
  read -r _ <&"${IDLEC[0]}"
  sleep 0.5
  r1=$(rss_of "$SPID")
  echo >&"${IDLEC[1]}"
  wait "$IDLEC_PID" 2>/dev/null
  echo "$row idle_bytes $(echo "($r1 - $r0) / $IDLE" | bc -l)" >>"$W/results"
  # Warm-up.
  client h2load --h1 -c 16 -n 2000 "$CIPHER" "$URL" >/dev/null 2>&1
  # (a) keep-alive, 256 connections.
  c0=$(cpu_of "$SPID")
  out=$(client h2load --h1 -c 256 -t 1 -D "$D" "$CIPHER" "$URL" 2>&1)
  c1=$(cpu_of "$SPID")
  n=$(echo "$out" | awk '/^requests:/ { print $8 }')
  local rps
  rps=$(echo "$out" | awk '/^finished in/ { gsub(",", "", $4); print $4 }')
  echo "$row keepalive_rps $rps" >>"$W/results"
  echo "$row keepalive_us $(echo "($c1 - $c0) * 1000000 / $n" | bc -l)" >>"$W/results"
  # (b) full handshakes: s_time -new, STIME clients in parallel.
  c0=$(cpu_of "$SPID")
  local u0 u1
  u0=$(user_of "$SPID")
  for _ in $(seq "$STIME"); do
    client openssl s_time -connect "127.0.0.1:$PORT" -new -www / -time "$D" \
      -ciphersuites TLS_AES_128_GCM_SHA256 >"$W/stime.$_" 2>&1 &
  done
  wait $(jobs -p | grep -v "^$SPID$") 2>/dev/null
  c1=$(cpu_of "$SPID")
  u1=$(user_of "$SPID")
  n=$(cat "$W"/stime.* | awk '/connections in .* real seconds/ { s += $1 } END { print s }')
  echo "$row full_conns_per_s $(echo "$n / $D" | bc -l)" >>"$W/results"
  echo "$row full_us $(echo "($c1 - $c0) * 1000000 / $n" | bc -l)" >>"$W/results"
  echo "$row full_user_us $(echo "($u1 - $u0) * 1000000 / $n" | bc -l)" >>"$W/results"
  # (b) resumed: h2load resumes its first session on every new connection.
  c0=$(cpu_of "$SPID")
  n=$((D * 1000))
  out=$(client h2load --h1 -c 32 -t 1 -n "$n" -H 'Connection: close' "$CIPHER" "$URL" 2>&1)
  c1=$(cpu_of "$SPID")
  local ok
  ok=$(echo "$out" | awk '/^requests:/ { print $8 }')
  echo "$row resumed_us $(echo "($c1 - $c0) * 1000000 / $ok" | bc -l)" >>"$W/results"
  if [ "${row#coreloop}" != "$row" ]; then
    curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | grep '^coreloop_tls_handshakes_total' \
      | tr '\n' ' ' >>"$W/handshakes.$row"
    echo >>"$W/handshakes.$row"
  fi
  stop
}

: >"$W/results"
for round in $(seq "$R"); do
  rows=$ROWS
  # Alternate the order: odd rounds forward, even rounds backward.
  if [ $((round % 2)) = 0 ]; then rows=$(echo "$ROWS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for row in $rows; do
    echo "round $round: $row"
    measure "$row"
  done
done

get() { awk -v r="$1" -v k="$2" '$1 == r && $2 == k { print $3 }' "$W/results" | median; }

echo
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
  echo "kernel TLS: the tls ULP is available (not used by coreloop yet)"
else
  echo "kernel TLS: not available here (tcp_available_ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null))"
fi
printf "\nmedians of %s rounds, D=%ss, server on CPU %s, clients on CPU %s\n" "$R" "$D" "$SERVER_CPU" "$CLIENT_CPU"
printf "| server | keep-alive c=256 req/s | us CPU/req | full handshakes conn/s | us CPU/conn (user) | resumed us CPU/conn | idle TLS conn bytes |\n"
printf "|---|---:|---:|---:|---:|---:|---:|\n"
for row in $ROWS; do
  printf "| %s | %.0f | %.2f | %.0f | %.1f (%.1f) | %.1f | %.0f |\n" "$row" \
    "$(get "$row" keepalive_rps)" "$(get "$row" keepalive_us)" \
    "$(get "$row" full_conns_per_s)" "$(get "$row" full_us)" "$(get "$row" full_user_us)" \
    "$(get "$row" resumed_us)" "$(get "$row" idle_bytes)"
done
for f in "$W"/handshakes.*; do
  [ -e "$f" ] && { echo; echo "${f##*.}: coreloop's own count after each round:"; cat "$f"; }
done
