#!/usr/bin/env bash
# User-space instructions per request of HTTP Hello World servers, one core each,
# measured with callgrind: coreloop's hello on epoll and on io_uring and, when
# ../shared/peers is built, may_minihttp, bare_epoll and bare_uring, all in the same run
# with the same client. Instruction counts do not drift with the machine's load, as
# wall-clock CPU does.
#
#   benches/http_instructions.sh          # the table: pipelined and keep-alive Ir/request
#   FUNCS=25 benches/http_instructions.sh # and where coreloop's go, by function
#
# Per request: the total of a run with N2 batches minus that of a run with N1 batches,
# divided by the extra requests, so start-up and shut-down cancel out. Pipelined:
# batches of 16 `GET / HTTP/1.1\r\nHost: x\r\n\r\n` in one write, each batch's answers
# read whole before the next. Keep-alive: one request, its answer, 16 times a batch. One
# client connection (Python); loopback only. Needs valgrind and python3.
#
# valgrind (3.19 here) keeps its one-thread-at-a-time lock while a thread blocks in
# io_uring_enter, so a loop waiting on io_uring would starve the runtime's other
# threads: coreloop on io_uring runs with `--tick-ms 100`, a timer that yields the
# thread every 100 ms (a few instructions per request at most, from the longer run).
# (bare_uring, which has no such timer, cannot be stopped under valgrind.)
#
# Environment: N1=100 N2=600 PORT=27100
#   ROWS="coreloop_epoll coreloop_uring may_minihttp bare_epoll" (those to run)
#   HELLO=path/to/hello (another build to measure, e.g. one of an earlier commit)
#   HELLO_ARGS="--no-recording" (extra flags for coreloop's server)
#   PEERS_TARGET=/tmp/peers-target (where ../shared/peers was built; see its README)
#   FUNCS=N (also print coreloop's N costliest functions, self Ir per request)
#   KEEP=dir (keep the callgrind outputs there)
set -eu
cd "$(dirname "$0")/.."
N1=${N1:-100}
N2=${N2:-600}
PORT=${PORT:-27100}
PEERS_TARGET=${PEERS_TARGET:-/tmp/peers-target}
ROWS=${ROWS:-coreloop_epoll coreloop_uring may_minihttp bare_epoll}
FUNCS=${FUNCS:-0}
if [ -z "${HELLO:-}" ]; then
  cargo build --release --example hello >/dev/null 2>&1
  HELLO=target/release/examples/hello
fi
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$OUT"' EXIT

client() { # port mode batches
  python3 - "$1" "$2" "$3" <<'PY'
import socket, sys, time
port, mode, batches = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for _ in range(1200):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        time.sleep(0.05)
else:
    raise SystemExit("server did not start")
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
def read_n(n, one_len):
    want, got = n * one_len, 0
    while got < want:
        d = s.recv(65536)
        if not d: raise SystemExit("server closed")
        got += len(d)
# learn one response's length (every answer here has the same)
s.sendall(req)
buf = b""
while b"Hello, world" not in buf:
    d = s.recv(65536)
    if not d: raise SystemExit("server closed")
    buf += d
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

# The command line of row $1 on port $2 (empty if that server is not built).
server() {
  case $1 in
    coreloop_epoll) echo "$HELLO --port $2 --cores 1 --backend epoll ${HELLO_ARGS:-}" ;;
    coreloop_uring) echo "$HELLO --port $2 --cores 1 --backend uring --tick-ms 100 ${HELLO_ARGS:-}" ;;
    may_minihttp) [ -x "$PEERS_TARGET/release/may_minihttp_peer" ] && echo "$PEERS_TARGET/release/may_minihttp_peer $2 1" ;;
    bare_epoll) [ -x "$PEERS_TARGET/release/$1" ] && echo "$PEERS_TARGET/release/$1 $2 1" ;;
  esac
  return 0
}

measure() { # row mode batches port -> total Ir (empty if the run failed)
  local f="$OUT/cg.$1.$2.$3" cmd pid
  cmd=$(server "$1" "$4")
  # shellcheck disable=SC2086 # (the command line is split on purpose)
  valgrind --tool=callgrind --callgrind-out-file="$f" $cmd >/dev/null 2>"$f.log" &
  pid=$!
  # (A server that exited at once, say its port was taken, served nobody: no figure.)
  if client "$4" "$2" "$3" >"$f.client" 2>&1 && kill -0 "$pid" 2>/dev/null; then
    sleep 0.5
    kill -TERM "$pid" # (coreloop drains on it; may_minihttp ignores SIGINT under valgrind)
  else
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return
  fi
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  grep -m1 '^summary:\|^totals:' "$f" 2>/dev/null | awk '{print $2}'
}

# Self Ir per request by function, N2's run less N1's: the FUNCS costliest.
by_function() { # row mode
  python3 - "$OUT/cg.$1.$2.$N1" "$OUT/cg.$1.$2.$N2" $(((N2 - N1) * 16)) "$FUNCS" <<'PY'
import re, subprocess, sys
a, b, reqs, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def funcs(f):
    # The summary by function (inlined code counts in the function it was inlined in,
    # whichever file it came from).
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100",
                          "--inclusive=no", f], capture_output=True, text=True).stdout
    d, on = {}, False
    for line in out.splitlines():
        if line.strip().endswith("file:function"):
            on = True
            continue
        m = on and re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*?)(?:\s+\[[^\]]*\])?$", line)
        if m:
            name = m.group(2).split(":", 1)[-1]
            d[name] = d.get(name, 0) + int(m.group(1).replace(",", ""))
    return d
fa, fb = funcs(a), funcs(b)
rows = sorted(((fb.get(k, 0) - fa.get(k, 0)) / reqs, k) for k in set(fa) | set(fb))
rows.reverse()
total = sum(r for r, _ in rows)
for r, k in rows[:top]:
    print(f"| {r:7.0f} | {k[:110]} |")
print(f"| {total:7.0f} | (all functions) |")
PY
}

declare -A RESULT
for row in $ROWS; do
  if [ -z "$(server "$row" 0)" ]; then
    echo "($row: not built, skipped)" >&2
    continue
  fi
  for mode in pipelined keepalive; do
    a=$(measure "$row" "$mode" "$N1" "$PORT")
    b=$(measure "$row" "$mode" "$N2" $((PORT + 1)))
    PORT=$((PORT + 2))
    if [ -z "$a" ] || [ -z "$b" ]; then
      RESULT[$row.$mode]="did not run"
      echo "($row $mode: did not run under callgrind; see its log with KEEP=dir)" >&2
    else
      RESULT[$row.$mode]=$(((b - a) / ((N2 - N1) * 16)))
      echo "$row $mode: ${RESULT[$row.$mode]} Ir/request ($a at N=$N1, $b at N=$N2)" >&2
    fi
  done
done

echo
echo "callgrind, user-space instructions per request (N1=$N1, N2=$N2 batches of 16; one connection, one core)"
echo
echo "| server | pipelined Ir/request | keep-alive Ir/request |"
echo "|---|---:|---:|"
for row in $ROWS; do
  [ -n "${RESULT[$row.pipelined]:-}" ] || continue
  echo "| $row | ${RESULT[$row.pipelined]} | ${RESULT[$row.keepalive]} |"
done
if [ "$FUNCS" -gt 0 ]; then
  for row in $ROWS; do
    case $row in coreloop_*) ;; *) continue ;; esac
    for mode in pipelined keepalive; do
      case ${RESULT[$row.$mode]:-x} in *[!0-9]*) continue ;; esac
      echo
      echo "$row, $mode: self Ir per request by function (the $FUNCS costliest)"
      echo
      echo "| Ir/req | function |"
      echo "|---:|---|"
      by_function "$row" "$mode"
    done
  done
fi
