#!/usr/bin/env bash
# User-space instructions per request of the hello server (epoll, one core), measured
# with callgrind: the total of a run with N2 batches minus that of a run with N1
# batches, divided by the extra requests, so start-up and shut-down cancel out.
#
#   benches/http_instructions.sh          # prints Ir/request, pipelined and keep-alive
#
# Pipelined: batches of 16 `GET / HTTP/1.1` requests in one write, each batch read
# whole before the next. Keep-alive: one request, one response, N*16 times. One client
# connection; loopback only. Needs valgrind and python3.
# Environment: N1=200 N2=1200 PORT=27100 BACKEND=epoll
#   HELLO=path/to/hello (another build to compare, e.g. one of an earlier commit)
#   HELLO_ARGS="--no-recording" (extra flags for the server)
set -eu
cd "$(dirname "$0")/.."
N1=${N1:-200}
N2=${N2:-1200}
PORT=${PORT:-27100}
BACKEND=${BACKEND:-epoll}
if [ -z "${HELLO:-}" ]; then
  cargo build --release --example hello >/dev/null 2>&1
  HELLO=target/release/examples/hello
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

client() { # mode batches
  python3 - "$PORT" "$1" "$2" <<'PY'
import socket, sys, time
port, mode, batches = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for _ in range(600):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        time.sleep(0.05)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
one = None
def read_n(n, one_len):
    want = n * one_len
    got = 0
    while got < want:
        d = s.recv(65536)
        if not d: raise SystemExit("server closed")
        got += len(d)
# learn one response's length
s.sendall(req)
buf = b""
while b"Hello, world" not in buf:
    buf += s.recv(65536)
one = len(buf)
for _ in range(batches):
    if mode == "pipelined":
        s.sendall(req * 16); read_n(16, one)
    else:
        for _ in range(16):
            s.sendall(req); read_n(1, one)
s.close()
PY
}

measure() { # mode batches -> total Ir
  local f="$OUT/cg.$1.$2"
  valgrind --tool=callgrind --callgrind-out-file="$f" \
    "$HELLO" --port "$PORT" --cores 1 --backend "$BACKEND" ${HELLO_ARGS:-} \
    >/dev/null 2>"$f.log" &
  local pid=$!
  client "$1" "$2"
  sleep 0.5
  kill -INT "$pid"
  wait "$pid" || true
  grep -m1 '^summary:\|^totals:' "$f" | awk '{print $2}'
}

for mode in pipelined keepalive; do
  a=$(measure "$mode" "$N1")
  b=$(measure "$mode" "$N2")
  echo "$mode: $(( (b - a) / ((N2 - N1) * 16) )) Ir/request ($a at N=$N1, $b at N=$N2)"
done
