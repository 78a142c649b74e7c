#!/usr/bin/env bash
# Soak: the hello example under mixed, partly hostile traffic for D seconds, watched for
# memory growth, leaked file descriptors and wrong or missing answers.
#
#   D=600 BACKEND=uring benches/soak.sh     # the 10-minute soak (about 11-12 minutes)
#   D=600 BACKEND=epoll benches/soak.sh
#   D=20 benches/soak.sh                    # a short run by hand (1-2 minutes)
#
# Builds target/release/examples/hello and target/release/loadtest, starts
# `hello --port P --cores CORES --backend BACKEND` (P: a free port unless PORT is set),
# and runs all of the following at once against 127.0.0.1 for D seconds
# (benches/soak/soak.py runs the show; the raw clients are in benches/soak/clients.py,
# the hostile ones in benches/soak/hostile.py):
#
#   keepalive   loadtest -c KA_CONNS -R KA_RATE (constant rate), back-to-back runs of
#               SEGMENT s;
#   pipelined   loadtest -c PL_CONNS --pipeline PL_DEPTH (closed loop) in bursts of
#               PL_BURST s every PL_BURST+PL_PAUSE s (the rate caps and the pauses leave
#               the server CPU headroom, so that a late answer means a bug);
#   churn       CHURN_RATE short connections/s: 1-6 valid requests (GET, 404, HEAD,
#               POST->405, bodies by Content-Length and chunked, query, big headers),
#               one by one or pipelined, then FIN, RST, or `Connection: close`; HTTP/1.0;
#               half-close after a request; RST mid-head, mid-body, mid-response (300
#               pipelined answers on a 4 KB window, a few read), before reading;
#               connect-and-leave;
#   slow        heads trickled 3 bytes/0.15 s and bodies 10 bytes/0.25 s (answered);
#               readers taking 200 pipelined answers 64 bytes/5 ms on a 4 KB window;
#   slowloris   SLOWLORIS connections each adding a byte a second to a head that never
#               ends (replaced as the server closes them);
#   timeouts    a 1 MB body trickled 10 bytes/s, an idle keep-alive connection, a second
#               head begun and never finished, one of each at a time;
#   bad         BAD_RATE malformed requests/s from BAD_THREADS clients: garbage, bad or
#               conflicting framing (Content-Length lists, CL+TE, TE not ending in
#               chunked, bad chunk sizes/extensions/trailers), oversized head, target,
#               header count and declared body, NUL/CR in fields, Host missing/
#               doubled/invalid, fragments, HTTP/2 preface, TLS bytes, HTTP/1.0 with
#               chunked, obs-fold, bare-LF heads; and every BIG_BODY_EVERY s, from one
#               client, a 9 MB chunked body (over the 8 MB limit) sent for real;
#   never_read  NEVER_READ connections pipelining GETs at NR_RATE bytes/s on a 4 KB
#               window for NR_HOLD s and reading nothing, then a RST;
#   stuck       STUCK connections sending STUCK_REQS pipelined GETs whose last ends their
#               side (shutdown, `Connection: close`, HTTP/1.0), reading nothing: more
#               answers than the socket buffers hold.
#
# The server's RSS (VmRSS) and open fds (/proc/PID/fd) are sampled every SAMPLE s
# (samples.csv in OUT) and logged every LOG_EVERY s. Every client thread runs at
# nice NICE (loadtest too); the server does not.
#
# Fails (exit 1, with the numbers) if:
#   - rss bound: the server's RSS ever exceeds RSS_LIMIT_MB;
#   - rss growth: the first third of the traffic is warm-up; then the peak (max) of the
#     RSS over the last third exceeds the peak over the middle third by more than
#     RSS_TOL (a fraction) plus RSS_SLACK_MB, or its floor (min) exceeds the middle
#     third's floor by more than RSS_FLOOR_TOL plus RSS_FLOOR_SLACK_MB (not judged with
#     fewer than 3 samples in a third, and the summary says so); a least-squares slope
#     over the second half is printed for the record;
#   - fds: FD_SETTLE s after every client but the stuck ones has closed, the server's
#     open fds are more than the baseline (taken before any traffic) plus the stuck
#     connections it still holds; or, once those are closed too, more than the baseline;
#   - loadtest: any run with a connect/read/write/timeout (LT_TIMEOUT)/status error, no
#     answer, or answers whose bytes are not requests x the right answer's size (such a
#     failure also says how late the niced clients woke and how long the server waited
#     for a CPU meanwhile, both also in samples.csv: the machine is shared);
#   - any valid request from a raw client unanswered (10 s) or answered wrong (status
#     and body checked);
#   - a bad request answered 2xx/3xx where a 4xx/5xx is due, answered twice (the rest
#     read as another request), or left open past HDR_TIMEOUT+SLACK; a slowloris head
#     past HDR_TIMEOUT+SLACK, a half-sent second head past HDR_TIMEOUT+SLACK, a trickled
#     body past BODY_TIMEOUT+SLACK, an idle connection past IDLE_TIMEOUT+SLACK;
#   - stuck: the server still holds the connection (its fd, matched through
#     /proc/net/tcp) STUCK_LIMIT s after the client's side ended; connections begun
#     before the end of the traffic are watched to their limit, so a run may last up
#     to STUCK_LIMIT s past D;
#   - the server died, stopped answering GET / afterwards, or did not exit 0 on SIGINT.
#
# Environment (defaults): D=600 BACKEND=uring (or epoll, auto) CORES=2 PORT=(free)
#   SAMPLE=2 LOG_EVERY=max(10,D/40) NICE=10 OUT=target/soak/BACKEND-TIME
#   KA_CONNS=32 KA_RATE=3000 SEGMENT=60 PL_CONNS=4 PL_DEPTH=16 PL_BURST=2 PL_PAUSE=4
#   LT_TIMEOUT=10 CHURN_RATE=60 CHURN_THREADS=2 SLOWLORIS=50 BAD_RATE=10 BAD_THREADS=3
#   BIG_BODY_EVERY=5
#   NEVER_READ=4 NR_RATE=1000000 NR_HOLD=20 STUCK=2 STUCK_REQS=22000 STUCK_LIMIT=75
#   HDR_TIMEOUT=10 BODY_TIMEOUT=30 IDLE_TIMEOUT=60 (the hello example's HttpConfig)
#   SLACK=5 RSS_LIMIT_MB=64 RSS_TOL=0.10 RSS_SLACK_MB=8 RSS_FLOOR_TOL=0.05
#   RSS_FLOOR_SLACK_MB=2 FD_SETTLE=5
#   A class is left out with its count at 0: NEVER_READ=0 STUCK=0 SLOWLORIS=0
#   CHURN_THREADS=0 BAD_THREADS=0 BIG_BODY_EVERY=0.
#
# Loopback only; bounded: the whole run is killed (every child with it: they share
# one process group) after D+STUCK_LIMIT+240 s, and on Ctrl-C or exit. Needs python3
# (3.8+, standard library only) and Linux's /proc.
set -u
cd "$(dirname "$0")/.."
export D=${D:-600} BACKEND=${BACKEND:-uring}
case $BACKEND in uring | epoll | auto) ;; *) echo "soak: BACKEND is uring, epoll or auto, not $BACKEND"; exit 1 ;; esac

export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
command -v python3 >/dev/null || { echo "soak: needs python3"; exit 1; }
echo "soak: building hello and loadtest (release)..."
cargo build --release --quiet --example hello -p coreloop || exit 1
cargo build --release --quiet -p loadtest || exit 1

LIMIT=$(awk -v d="$D" -v s="${STUCK_LIMIT:-75}" 'BEGIN { printf "%d", d + s + 240 }')
set -m # the soak gets a process group of its own: killing it kills every child
timeout --kill-after=10 "$LIMIT" python3 benches/soak/soak.py &
PID=$!
cleanup() {
  kill -TERM -- -"$PID" 2>/dev/null && sleep 2
  kill -KILL -- -"$PID" 2>/dev/null
}
trap 'cleanup; exit 1' INT TERM
trap cleanup EXIT
wait "$PID"
rc=$?
[ "$rc" = 124 ] && echo "soak: FAIL: not finished within ${LIMIT} s (killed)"
[ "$rc" = 0 ] && exit 0
exit 1
