"""The soak's hostile clients (benches/soak.sh): bad requests, which must be refused
or closed and never answered twice; clients that pipeline and never read, whose cost
the server must bound; and clients that end their side with answers they never read,
which the server must let go of.
"""

import socket
import time

from clients import CRLF, HOST, Closed, Garbled, Reader, server_holds


# ---- bad requests --------------------------------------------------------------------

# (name, bytes, expectation):
#   "reject": a 4xx/5xx answer, or none and a close, within the header timeout;
#   "reject+close": the same, and the server closes after its answer (the framing cannot
#       be trusted, so nothing after it may be read as a request);
#   "close": one answer at most (any status), then the server closes;
#   "once": one answer at most (any status), or none and a close.
# Never two answers (the rest of the bytes read as a further request).
H = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
BAD = [
    ("request-line-garbage", b"GARBAGE\r\n\r\n", "reject+close"),
    ("header-without-colon", H + b"Bad Header\r\n\r\n", "reject+close"),
    ("content-length-not-a-number", H + b"Content-Length: abc\r\n\r\n", "reject+close"),
    ("content-length-negative", H + b"Content-Length: -1\r\n\r\n", "reject+close"),
    ("content-length-list-differs", H + b"Content-Length: 3, 4\r\n\r\nabcd", "reject+close"),
    ("content-length-twice-differs", H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
     "reject+close"),
    ("content-length-and-chunked", b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "close"),
    ("transfer-encoding-gzip", H + b"Transfer-Encoding: gzip\r\n\r\n", "reject+close"),
    ("transfer-encoding-chunked-then-gzip", H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
     "reject+close"),
    ("chunk-size-not-hex", H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "reject+close"),
    ("chunk-size-huge", H + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n", "reject+close"),
    ("chunk-extension-ctl", H + b"Transfer-Encoding: chunked\r\n\r\n3;x=\x01\r\nabc\r\n0\r\n\r\n",
     "reject+close"),
    ("trailer-without-colon", H + b"Transfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
     "reject+close"),
    ("content-length-over-limit", H + b"Content-Length: 9000000\r\n\r\n", "reject+close"),
    ("nul-in-header", H + b"X: a\x00b\r\n\r\n", "reject+close"),
    ("bare-cr-in-header", H + b"X: a\rb\r\n\r\n", "reject+close"),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "reject+close"),
    ("http11-without-host", b"GET / HTTP/1.1\r\n\r\n", "reject"),
    ("host-twice", H + b"Host: other\r\n\r\n", "reject"),
    ("host-invalid", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "reject"),
    ("target-with-space", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "reject+close"),
    ("target-with-fragment", b"GET /#frag HTTP/1.1\r\nHost: x\r\n\r\n", "reject"),
    ("head-over-limit", H + b"X: " + b"a" * 20000 + b"\r\n\r\n", "reject+close"),
    ("target-over-limit", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "reject+close"),
    ("too-many-headers", H + b"X: y\r\n" * 100 + CRLF, "reject+close"),
    ("binary-garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 2,
     "reject+close"),
    ("http10-chunked-then-request", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "close"),
    ("obs-fold", H + b"X: a\r\n b\r\n\r\n", "once"),
    ("bare-lf-head", b"GET / HTTP/1.1\nHost: x\n\n", "once"),
]

# A body over the server's 8 MB limit, sent for real (9 MB in 64 KB chunks). Sent by one
# client at a steady pace rather than among the others: the server's allocator keeps
# such a buffer per thread once it has had one, and two at once on a thread would keep
# two; at random times, these steps of 8 MB would read as growth after the warm-up.
BIG_BODY = ("body-over-limit-sent", H + b"Transfer-Encoding: chunked\r\n\r\n"
            + (b"10000\r\n" + b"z" * 0x10000 + CRLF) * 144 + b"0\r\n\r\n", "reject+close")


def bad_once(ctx, i):
    """Sends bad request `i` on a new connection and judges what comes back."""
    bad_case(ctx, *BAD[i % len(BAD)])


def bad_case(ctx, name, data, expect):
    cls = "bad"
    limit = ctx.hdr + ctx.slack
    t0 = time.monotonic()
    try:
        s = ctx.connect()
    except OSError as e:
        ctx.stats.fail(cls, f"{name}: connect: {e}")
        return
    r = Reader(s)
    try:
        s.sendall(data)
    except OSError:
        pass  # the server refused and closed before all of it was sent: fine
    deadline = t0 + limit
    answers = []
    closed = False
    try:
        while True:
            if answers and (expect == "reject" or (expect == "once" and answers[-1] < 300)):
                # No close required after this answer: is anything else coming?
                deadline = min(deadline, time.monotonic() + 1.0)
            try:
                st, _, _ = r.response(deadline)
                answers.append(st)
            except Closed:
                closed = True
                break
            except socket.timeout:
                break
    except (Garbled, OSError) as e:
        ctx.stats.fail(cls, f"{name}: {type(e).__name__}: {e}")
        ctx.close(s, rst=True)
        return
    took = time.monotonic() - t0
    ctx.close(s, rst=True)
    what = f"{name}: answers {answers or 'none'}, {'closed' if closed else 'open'} after {took:.1f} s"
    if len(answers) > 1:
        return ctx.stats.fail(cls, what + " (more than one answer: the rest read as a request)")
    if expect.startswith("reject") and answers and answers[0] < 400:
        return ctx.stats.fail(cls, what + " (a bad request must get a 4xx/5xx or a close)")
    must_close = not answers or expect in ("reject+close", "close")
    if must_close and not closed:
        return ctx.stats.fail(cls, what + f" (the server must close: within {limit:.0f} s, "
                                          f"its header timeout {ctx.hdr:.0f} s + {ctx.slack:.0f})")
    ctx.stats.add(cls, f"answered_{answers[0]}" if answers else "closed_unanswered")
    ctx.stats.observe(cls, "time_to_close_s", took)


# ---- clients that never read ---------------------------------------------------------

def never_read(ctx, hold, rate):
    """Pipelines GETs at `rate` bytes/s for `hold` s on a 4 KB receive window and never
    reads an answer: the server may stop reading, but must not buffer the answers
    without bound (the RSS check sees that). Then a RST."""
    cls = "never_read"
    try:
        s = ctx.connect(rcvbuf=4096)
    except OSError as e:
        return ctx.stats.fail(cls, f"connect: {e}")
    req = b"GET / HTTP/1.1\r\n" + HOST + CRLF
    block = req * (16384 // len(req))
    s.setblocking(False)
    t0 = time.monotonic()
    sent = 0
    server_closed = False
    while not ctx.stop.is_set() and time.monotonic() - t0 < hold:
        due = (time.monotonic() - t0) * rate
        if sent < due:
            try:
                sent += s.send(block)
                continue
            except BlockingIOError:
                pass
            except OSError:
                server_closed = True
                break
        time.sleep(0.02)
    ctx.stats.add(cls, "connections")
    ctx.stats.observe(cls, "requests_accepted", sent // len(req))
    if server_closed:
        ctx.stats.add(cls, "closed_by_server")
        ctx.stats.observe(cls, "closed_by_server_after_s", time.monotonic() - t0)
    ctx.close(s, rst=True)


# ---- clients whose side is over, with answers they never read ------------------------

STUCK_WAYS = ["shutdown", "connection_close", "http10"]


def stuck_once(ctx, n, requests, limit, wait_past_stop):
    """`requests` pipelined GETs on a 4 KB window whose last ends the client's side
    (shutdown(SHUT_WR), `Connection: close`, or HTTP/1.0), then nothing read: more
    answers than the kernel's socket buffers hold, so the server cannot flush them. The
    server must close (let go of its fd) within `limit` s. `wait_past_stop`: keep
    watching after the soak's traffic time is over (until the limit)."""
    cls = "stuck"
    way = STUCK_WAYS[n % len(STUCK_WAYS)]
    try:
        s = ctx.connect(rcvbuf=4096, timeout=10)
    except OSError as e:
        return ctx.stats.fail(cls, f"connect: {e}")
    if way == "http10":
        one = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        last = b"GET / HTTP/1.0\r\n\r\n"
    else:
        one = b"GET / HTTP/1.1\r\n" + HOST + CRLF
        last = (b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
                if way == "connection_close" else one)
    data = one * (requests - 1) + last
    try:
        s.settimeout(10)
        s.sendall(data)
        if way == "shutdown":
            s.shutdown(socket.SHUT_WR)
    except OSError as e:
        # The server stopped reading before all the requests were in (backpressure):
        # still a connection it cannot flush; watch it all the same.
        ctx.stats.add(cls, "requests_not_all_taken")
        ctx.stats.fail(cls, f"{way}: only part of {requests} requests taken in 10 s ({e})")
    ctx.stats.add(cls, "connections")
    client_port = s.getsockname()[1]
    with ctx.sock_lock:
        ctx.stuck[s] = client_port
    t0 = time.monotonic()
    released = None
    while True:
        held = server_holds(ctx, client_port)
        waited = time.monotonic() - t0
        if not held:
            released = waited
            break
        if waited > limit or (ctx.stop.is_set() and not wait_past_stop):
            break
        time.sleep(1.0)
    if released is not None:
        ctx.stats.add(cls, way + "_released")
        ctx.stats.observe(cls, "released_after_s", released)
    elif ctx.stop.is_set() and not wait_past_stop:
        ctx.stats.add(cls, way + "_cut_by_end")
    else:
        ctx.stats.fail(cls, f"{way}: {requests} unread answers, the server still holds the "
                            f"connection {limit:.0f} s after the client's side ended")
    ctx.close(s, rst=True)
