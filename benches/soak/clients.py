"""Raw-socket clients of the soak (benches/soak.sh): each scenario knows the exact bytes
it sends and the exact answer it must get, and records what happened in a `Stats`.

Every socket operation has a timeout, every wait a deadline: nothing here can hang.
Scenario functions take a `Ctx` and return when their one exchange is over; the worker
loops in soak.py call them until the soak's end.
"""

import os
import random
import re
import select
import socket
import struct
import threading
import time

CRLF = b"\r\n"


class Stats:
    """Counters per class and the failures, shared by every thread."""

    MAX_KEPT = 25  # kinds of failure kept per class (all are counted)

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}  # class -> {key: n}
        self.failures = {}  # class -> {kind: [count, first message]}
        self.fail_counts = {}  # class -> n
        self.maxima = {}  # class -> {key: max value}
        self.minima = {}

    def add(self, cls, key="ok", n=1):
        with self.lock:
            d = self.counts.setdefault(cls, {})
            d[key] = d.get(key, 0) + n

    def fail(self, cls, msg):
        """Counts a failure; kept by kind (the message with its numbers blanked), with
        the first message of each kind as its example."""
        kind = re.sub(r"[0-9.]+", "#", msg)
        with self.lock:
            self.fail_counts[cls] = self.fail_counts.get(cls, 0) + 1
            kept = self.failures.setdefault(cls, {})
            if kind in kept:
                kept[kind][0] += 1
            elif len(kept) < self.MAX_KEPT:
                kept[kind] = [1, msg]

    def observe(self, cls, key, value):
        """Keeps the minimum and maximum of a measured value (a lifetime, a size)."""
        with self.lock:
            hi = self.maxima.setdefault(cls, {})
            lo = self.minima.setdefault(cls, {})
            hi[key] = max(hi.get(key, value), value)
            lo[key] = min(lo.get(key, value), value)

    def total_failures(self):
        with self.lock:
            return sum(self.fail_counts.values())

    def count(self, cls, key="ok"):
        with self.lock:
            return self.counts.get(cls, {}).get(key, 0)


class Ctx:
    """What every scenario needs: where the server is, its timeouts, the stop flag."""

    def __init__(self, port, server_pid, stats, stop, hdr, body, idle, slack):
        self.port = port
        self.server_pid = server_pid
        self.stats = stats
        self.stop = stop  # threading.Event: the soak's traffic time is over
        self.hdr = hdr  # the server's header timeout, s
        self.body = body  # its body timeout, s
        self.idle = idle  # its keep-alive idle timeout, s
        self.slack = slack  # s allowed past a server timeout before it counts as a hang
        self.sockets = set()  # every open client socket (closed at the end if left)
        self.stuck = {}  # stuck_once's sockets -> their local port
        self.sock_lock = threading.Lock()
        self.seq = 0

    def connect(self, rcvbuf=None, timeout=10.0):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect, so that the window offered to the server is small too.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            raise
        with self.sock_lock:
            self.sockets.add(s)
        return s

    def close(self, s, rst=False):
        """Closes a client socket: with a FIN, or with a RST (SO_LINGER 0)."""
        with self.sock_lock:
            self.sockets.discard(s)
            self.stuck.pop(s, None)
        try:
            if rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            pass

    def close_all(self, but_stuck=False):
        """Closes (RST) the client sockets left open, or all but the stuck clients'."""
        with self.sock_lock:
            left = [s for s in self.sockets if not (but_stuck and s in self.stuck)]
            self.sockets.difference_update(left)
        for s in left:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass
        return len(left)

    def stuck_held(self):
        """How many stuck clients' connections the server still has an fd for."""
        with self.sock_lock:
            ports = list(self.stuck.values())
        return sum(1 for p in ports if server_holds(self, p, queued=False))

    def next_id(self):
        with self.sock_lock:
            self.seq += 1
            return self.seq


class Closed(Exception):
    """The server closed (FIN or RST) before a whole response arrived."""


class Garbled(Exception):
    """What arrived is not the HTTP/1.1 response expected."""


class Reader:
    """Reads HTTP responses off a socket, each before a deadline."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self, deadline, max_bytes=65536):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(max_bytes)
        except (ConnectionResetError, BrokenPipeError) as e:
            self.eof = True
            raise Closed(f"reset: {e}")
        if not d:
            self.eof = True
            raise Closed("EOF")
        self.buf += d

    def response(self, deadline, head_request=False, trickle=None):
        """One whole response: (status, headers {lowercase name: value}, body). Skips
        100 Continue. `trickle` = (bytes, pause): read that many bytes at a time, with
        that pause before each read (a slow reader)."""
        while True:
            while CRLF + CRLF not in self.buf:
                if len(self.buf) > 65536:
                    raise Garbled(f"no end of head in {len(self.buf)} bytes")
                self._step(deadline, trickle)
            end = self.buf.index(CRLF + CRLF)
            lines = self.buf[:end].split(CRLF)
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise Garbled(f"status line {lines[0][:80]!r}")
            status = int(parts[1])
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    raise Garbled(f"header line {line[:80]!r}")
                headers[name.strip().lower().decode("latin-1")] = value.strip()
            self.buf = self.buf[end + 4:]
            if status == 100:
                continue
            if head_request or status in (204, 304):
                return status, headers, b""
            if b"chunked" in headers.get("transfer-encoding", b"").lower():
                return status, headers, self._chunked(deadline, trickle)
            if "content-length" not in headers:
                raise Garbled(f"{status} response without Content-Length")
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._step(deadline, trickle)
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body

    def _chunked(self, deadline, trickle):
        body = b""
        while True:
            while CRLF not in self.buf:
                self._step(deadline, trickle)
            line, self.buf = self.buf.split(CRLF, 1)
            size = int(line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                self._step(deadline, trickle)
            body += self.buf[:size]
            self.buf = self.buf[size + 2:]
            if size == 0:
                return body

    def _step(self, deadline, trickle):
        if trickle:
            time.sleep(trickle[1])
            self._fill(deadline, trickle[0])
        else:
            self._fill(deadline)

    def until_close(self, deadline):
        """Reads until the server closes; True if it did before the deadline."""
        try:
            while True:
                self._fill(deadline)
        except Closed:
            return True
        except socket.timeout:
            return False


# Valid requests and their exact answers (the hello example serves "/" only).
HOST = b"Host: 127.0.0.1\r\n"
HELLO = (200, b"Hello, world")


def valid_requests(n):
    """(name, bytes to send, expected status, expected body, is HEAD) of request n."""
    k = n % 8
    if k == 0:
        return "get", b"GET / HTTP/1.1\r\n" + HOST + CRLF, 200, HELLO[1], False
    if k == 1:
        return ("get_404", b"GET /missing/%d HTTP/1.1\r\n" % n + HOST + CRLF,
                404, b"404: Not Found", False)
    if k == 2:
        return "head", b"HEAD / HTTP/1.1\r\n" + HOST + CRLF, 200, b"", True
    if k == 3:
        return ("post_405", b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello",
                405, b"405: Method Not Allowed", False)
    if k == 4:
        body = bytes(random.getrandbits(8) for _ in range(64)) * 16
        return ("get_body", b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % len(body)
                + body, 200, HELLO[1], False)
    if k == 5:
        return ("get_chunked", b"GET / HTTP/1.1\r\n" + HOST
                + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                200, HELLO[1], False)
    if k == 6:
        return "get_query", b"GET /?a=1&b=%d HTTP/1.1\r\n" % n + HOST + CRLF, 200, HELLO[1], False
    return ("get_headers", b"GET / HTTP/1.1\r\n" + HOST + b"User-Agent: soak\r\nAccept: */*\r\n"
            b"X-Many: " + b"x" * 2000 + b"\r\n\r\n", 200, HELLO[1], False)


def check_answer(ctx, cls, name, got, status, body, head):
    """Records one valid request's answer: right (ok) or wrong (a failure)."""
    st, headers, b = got
    if st != status or b != body:
        ctx.stats.fail(cls, f"{name}: expected {status} {body[:40]!r}, got {st} {b[:60]!r}")
        return False
    if head and headers.get("content-length") != b"12":
        ctx.stats.fail(cls, f"{name}: HEAD answer without Content-Length 12: {headers}")
        return False
    ctx.stats.add(cls, "valid_ok")
    return True


def exchange(ctx, cls, s, reqs, pipelined, deadline, trickle=None):
    """Sends the valid requests `reqs` (all at once or one by one) and checks each answer.
    Returns the Reader (for what follows), or None after recording a failure."""
    r = Reader(s)
    try:
        if pipelined:
            s.sendall(b"".join(q[1] for q in reqs))
        for i, (name, data, status, body, head) in enumerate(reqs):
            if not pipelined:
                s.sendall(data)
            got = r.response(deadline, head, trickle)
            if not check_answer(ctx, cls, name, got, status, body, head):
                return None
        return r
    except (Closed, Garbled, OSError) as e:
        # socket.timeout is an OSError: an unanswered valid request.
        ctx.stats.fail(cls, f"request {len(reqs)} x {reqs[0][0]}.. "
                            f"({'pipelined' if pipelined else 'one by one'}): {type(e).__name__}: {e}")
        return None


# ---- connect/close churn, with resets ----------------------------------------------

def churn_once(ctx, rng):
    """One short connection of a random kind; valid requests are checked."""
    cls = "churn"
    kind = rng.choice(CHURN_KINDS)
    try:
        kind(ctx, cls, rng)
        ctx.stats.add(cls, kind.__name__)
    except OSError as e:
        ctx.stats.fail(cls, f"{kind.__name__}: {type(e).__name__}: {e}")


def keepalive_close(ctx, cls, rng):
    """1-6 valid requests (one by one or pipelined), then a FIN, a RST, or a last request
    with Connection: close after which the server must close."""
    s = ctx.connect()
    base = rng.randrange(1 << 30)
    reqs = [valid_requests(base + i) for i in range(rng.randint(1, 6))]
    deadline = time.monotonic() + 10
    r = exchange(ctx, cls, s, reqs, rng.random() < 0.5, deadline)
    if r is not None:
        end = rng.randrange(3)
        if end == 2:
            s.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
            try:
                check_answer(ctx, cls, "get_close", r.response(deadline), 200, HELLO[1], False)
                if not r.until_close(deadline):
                    ctx.stats.fail(cls, "Connection: close answered, but still open 10 s later")
            except (Closed, Garbled, OSError) as e:
                ctx.stats.fail(cls, f"get_close: {type(e).__name__}: {e}")
        ctx.close(s, rst=end == 1)
    else:
        ctx.close(s, rst=True)


def http10(ctx, cls, rng):
    """An HTTP/1.0 request: answered, then closed by the server."""
    s = ctx.connect()
    deadline = time.monotonic() + 10
    r = exchange(ctx, cls, s, [("get_1.0", b"GET / HTTP/1.0\r\n\r\n", 200, HELLO[1], False)],
                 False, deadline)
    if r is not None and not r.until_close(deadline):
        ctx.stats.fail(cls, "HTTP/1.0 answered but the connection stayed open 10 s")
    ctx.close(s)


def half_close(ctx, cls, rng):
    """A request, then shutdown(SHUT_WR): the answer must still come, then the close."""
    s = ctx.connect()
    deadline = time.monotonic() + 10
    r = Reader(s)
    try:
        s.sendall(b"GET / HTTP/1.1\r\n" + HOST + CRLF)
        s.shutdown(socket.SHUT_WR)
        check_answer(ctx, cls, "get_half_closed", r.response(deadline), 200, HELLO[1], False)
        if not r.until_close(deadline):
            ctx.stats.fail(cls, "half-closed after a request: answered but not closed in 10 s")
    except (Closed, Garbled, OSError) as e:
        ctx.stats.fail(cls, f"get_half_closed: {type(e).__name__}: {e}")
    ctx.close(s)


def rst_after_response(ctx, cls, rng):
    s = ctx.connect()
    exchange(ctx, cls, s, [valid_requests(rng.randrange(1 << 30))], False, time.monotonic() + 10)
    ctx.close(s, rst=True)


def rst_before_reading(ctx, cls, rng):
    """A request, then a RST before the answer is read (the server may be writing)."""
    s = ctx.connect()
    s.sendall(b"".join(valid_requests(rng.randrange(1 << 30))[1] for _ in range(rng.randint(1, 20))))
    if rng.random() < 0.5:
        time.sleep(0.001)
    ctx.close(s, rst=True)


def rst_mid_head(ctx, cls, rng):
    s = ctx.connect()
    data = valid_requests(rng.randrange(1 << 30))[1]
    head_len = data.index(CRLF + CRLF)
    s.sendall(data[: rng.randint(1, head_len)])
    time.sleep(rng.random() * 0.02)
    ctx.close(s, rst=True)


def rst_mid_body(ctx, cls, rng):
    """A head announcing a 100 KB body (Content-Length or chunked), part of it, a RST."""
    s = ctx.connect()
    if rng.random() < 0.5:
        s.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 100000\r\n\r\n"
                  + b"b" * rng.randint(0, 5000))
    else:
        s.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n1000\r\n"
                  + b"b" * rng.randint(0, 3000))
    time.sleep(rng.random() * 0.05)
    ctx.close(s, rst=True)


def rst_mid_response(ctx, cls, rng):
    """300 pipelined requests on a small receive window, a few KB of answers read, a
    RST while the server still has answers to write."""
    s = ctx.connect(rcvbuf=4096)
    s.sendall((b"GET / HTTP/1.1\r\n" + HOST + CRLF) * 300)
    r = Reader(s)
    deadline = time.monotonic() + 10
    try:
        for _ in range(rng.randint(1, 20)):
            check_answer(ctx, cls, "get_then_rst", r.response(deadline), 200, HELLO[1], False)
    except (Closed, Garbled, OSError) as e:
        ctx.stats.fail(cls, f"get_then_rst: {type(e).__name__}: {e}")
    ctx.close(s, rst=True)


def connect_only(ctx, cls, rng):
    """Connects and leaves at once, with a FIN or a RST."""
    s = ctx.connect()
    ctx.close(s, rst=rng.random() < 0.5)


CHURN_KINDS = [keepalive_close, keepalive_close, http10, half_close, rst_after_response,
               rst_before_reading, rst_mid_head, rst_mid_body, rst_mid_response, connect_only]


# ---- slow clients ------------------------------------------------------------------

def trickle_send(ctx, s, data, piece, pause):
    for i in range(0, len(data), piece):
        if ctx.stop.is_set():
            return False
        s.sendall(data[i:i + piece])
        time.sleep(pause)
    return True


def slow_head_ok(ctx, rng):
    """A valid head trickled 3 bytes every 0.15 s (about 2 s): answered."""
    cls = "slow"
    s = ctx.connect()
    data = b"GET /?slow=%d HTTP/1.1\r\n" % rng.randrange(1000) + HOST + b"Accept: */*\r\n\r\n"
    try:
        if trickle_send(ctx, s, data, 3, 0.15):
            check_answer(ctx, cls, "slow_head", Reader(s).response(time.monotonic() + 10),
                         200, HELLO[1], False)
    except (Closed, Garbled, OSError) as e:
        ctx.stats.fail(cls, f"slow_head: {type(e).__name__}: {e}")
    ctx.close(s)


def slow_body_ok(ctx, rng):
    """A 120-byte body trickled 10 bytes every 0.25 s (3 s, within the body timeout)."""
    cls = "slow"
    s = ctx.connect()
    chunked = rng.random() < 0.5
    try:
        if chunked:
            s.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
            body = b"".join(b"a\r\n0123456789\r\n" for _ in range(12)) + b"0\r\n\r\n"
        else:
            s.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 120\r\n\r\n")
            body = b"0123456789" * 12
        if trickle_send(ctx, s, body, 10, 0.25):
            check_answer(ctx, cls, "slow_body_" + ("chunked" if chunked else "length"),
                         Reader(s).response(time.monotonic() + 10), 200, HELLO[1], False)
    except (Closed, Garbled, OSError) as e:
        ctx.stats.fail(cls, f"slow_body: {type(e).__name__}: {e}")
    ctx.close(s)


def slow_reader(ctx, rng):
    """200 pipelined requests on a 4 KB receive buffer, the answers read 64 bytes every
    5 ms (some 5 s): every answer right, then the close the last request asked for."""
    cls = "slow"
    s = ctx.connect(rcvbuf=4096)
    n = 200
    reqs = [("slow_read", b"GET / HTTP/1.1\r\n" + HOST + CRLF, 200, HELLO[1], False)] * (n - 1)
    reqs.append(("slow_read_close", b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n",
                 200, HELLO[1], False))
    deadline = time.monotonic() + 60
    r = exchange(ctx, cls, s, reqs, True, deadline, trickle=(64, 0.005))
    if r is not None and not r.until_close(time.monotonic() + 10):
        ctx.stats.fail(cls, "slow reader: Connection: close answered but not closed in 10 s")
    ctx.close(s)


def wait_server_close(ctx, s, limit, keep_sending=None):
    """Waits for the server to close `s`, up to `limit` s (sending `keep_sending()` bytes
    each second if given). Returns the seconds it took, None if still open at the limit,
    or "stopped" if the soak ended first."""
    t0 = time.monotonic()
    s.setblocking(False)
    try:
        while True:
            waited = time.monotonic() - t0
            if waited > limit:
                return None
            if ctx.stop.is_set():
                return "stopped"
            readable, _, _ = select.select([s], [], [], 1.0)
            if readable:
                try:
                    if not s.recv(65536):
                        return time.monotonic() - t0
                except BlockingIOError:
                    pass
                except OSError:
                    return time.monotonic() - t0
            if keep_sending is not None:
                try:
                    s.send(keep_sending())
                except BlockingIOError:
                    pass
                except OSError:
                    return time.monotonic() - t0
    finally:
        s.setblocking(True)


def timed_close(ctx, cls, what, s, limit, server_timeout, keep_sending=None):
    took = wait_server_close(ctx, s, limit, keep_sending)
    if took == "stopped":
        ctx.stats.add(cls, what + "_cut_by_end")
    elif took is None:
        ctx.stats.fail(cls, f"{what}: still open {limit:.0f} s later (server timeout "
                            f"{server_timeout:.0f} s)")
    else:
        ctx.stats.add(cls, what)
        ctx.stats.observe(cls, what + "_s", took)
    ctx.close(s, rst=True)


def slow_body_endless(ctx, rng):
    """A head announcing 1 MB, then 10 bytes a second: closed at the body timeout."""
    s = ctx.connect()
    s.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 1000000\r\n\r\n")
    timed_close(ctx, "slow_timeout", "body_trickle_closed", s, ctx.body + ctx.slack, ctx.body,
                keep_sending=lambda: b"x" * 10)


def idle_keepalive(ctx, rng):
    """One request, then silence: closed at the keep-alive idle timeout."""
    s = ctx.connect()
    if exchange(ctx, "slow_timeout", s, [valid_requests(0)], False, time.monotonic() + 10):
        timed_close(ctx, "slow_timeout", "idle_closed", s, ctx.idle + ctx.slack, ctx.idle)
    else:
        ctx.close(s, rst=True)


def partial_next_head(ctx, rng):
    """One request answered, then the start of a second head and nothing more: the
    header timeout (not the idle one) governs a head that has begun."""
    s = ctx.connect()
    if exchange(ctx, "slow_timeout", s, [valid_requests(0)], False, time.monotonic() + 10):
        s.sendall(b"GET / HTTP/1.1\r\nHo")
        timed_close(ctx, "slow_timeout", "partial_second_head_closed", s,
                    ctx.hdr + ctx.slack, ctx.hdr)
    else:
        ctx.close(s, rst=True)


class Slowloris:
    """`n` connections, each sending one more byte of a head that never ends every
    second: each must be closed by the server within its header timeout (plus slack)
    of connecting; a closed one is replaced at once."""

    def __init__(self, ctx, n):
        self.ctx, self.n = ctx, n
        self.conns = {}  # socket -> (opened at, next send at)

    def run(self):
        ctx, cls = self.ctx, "slowloris"
        limit = ctx.hdr + ctx.slack
        while not ctx.stop.is_set():
            now = time.monotonic()
            while len(self.conns) < self.n and not ctx.stop.is_set():
                try:
                    s = ctx.connect(timeout=5)
                    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    s.setblocking(False)
                    self.conns[s] = (time.monotonic(), time.monotonic() + random.random())
                except OSError as e:
                    ctx.stats.fail(cls, f"connect: {e}")
                    time.sleep(0.5)
                    break
            socks = list(self.conns)
            readable, _, _ = select.select(socks, [], [], 0.2) if socks else ([], [], [])
            now = time.monotonic()
            for s in socks:
                opened, next_send = self.conns[s]
                closed = False
                if s in readable:
                    try:
                        data = s.recv(4096)
                        closed = True
                        # A 408 (or other refusal) before the close is fine; an answer
                        # that accepts an unfinished head is not.
                        if data and not data.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5")):
                            ctx.stats.fail(cls, f"an unfinished head was answered: {data[:60]!r}")
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed = True
                elif now >= next_send:
                    try:
                        s.send(b"a")
                        self.conns[s] = (opened, now + 1.0)
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed = True
                if closed:
                    ctx.stats.add(cls, "closed_by_server")
                    ctx.stats.observe(cls, "lifetime_s", now - opened)
                    del self.conns[s]
                    ctx.close(s)
                elif now - opened > limit:
                    ctx.stats.fail(cls, f"open {now - opened:.1f} s (header timeout {ctx.hdr:.0f} s)")
                    del self.conns[s]
                    ctx.close(s, rst=True)
        for s in list(self.conns):
            ctx.stats.add(cls, "cut_by_end")
            ctx.close(s, rst=True)
        self.conns.clear()


# ---- the server's side of a connection ----------------------------------------------

def server_holds(ctx, client_port, queued=True):
    """True while the server has its end of our connection from `client_port`: an fd
    for it (found through /proc/net/tcp by ports, then by inode among the process's
    fds), or, if `queued`, a socket still waiting in its accept queue (no inode yet,
    and established or half-closed by us: a socket the server closed is in FIN-WAIT or
    LAST-ACK)."""
    want = ":%04X" % ctx.port
    peer = ":%04X" % client_port
    entry = None
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[1].endswith(want) and p[2].endswith(peer):
                        entry = p
                        break
        except OSError:
            continue
        if entry:
            break
    if entry is None:
        return False
    state, inode = entry[3], entry[9]
    if inode == "0":
        # ESTABLISHED or CLOSE_WAIT without a file: not accepted yet; otherwise orphaned.
        return queued and state in ("01", "08")
    target = f"socket:[{inode}]"
    fd_dir = f"/proc/{ctx.server_pid}/fd"
    try:
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    return True
            except OSError:
                pass
    except OSError:
        return False
    return False
