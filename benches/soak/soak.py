"""The soak itself (benches/soak.sh builds the binaries and runs this; its header
describes the traffic, the checks and the environment variables).

Starts the hello example, runs every traffic class at once for D seconds (loadtest for
keep-alive and pipelined load, the raw-socket clients of clients.py for the rest),
samples the server's RSS and open fds, then checks and prints a summary. Exit status:
0 when every check passed, 1 otherwise (also when the server could not be started).
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clients  # noqa: E402
import hostile  # noqa: E402


def env(name, default, kind=float):
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return kind(v)
    except ValueError:
        sys.exit(f"soak: {name}={v!r} is not a {kind.__name__}")


class Cfg:
    def __init__(self):
        self.duration = env("D", 600.0)
        self.backend = os.environ.get("BACKEND") or "uring"
        self.cores = env("CORES", 2, int)
        self.port = env("PORT", 0, int)
        self.sample = env("SAMPLE", 2.0)
        self.log_every = env("LOG_EVERY", max(10.0, self.duration / 40))
        self.nice = env("NICE", 10, int)
        self.out = os.environ.get("OUT") or ""
        self.hello = os.environ.get("HELLO_BIN", "target/release/examples/hello")
        self.loadtest = os.environ.get("LOADTEST_BIN", "target/release/loadtest")
        # loadtest: keep-alive at a constant rate; pipelined in bursts (closed loop).
        self.ka_conns = env("KA_CONNS", 32, int)
        self.ka_rate = env("KA_RATE", 3000, int)
        self.pl_conns = env("PL_CONNS", 4, int)
        self.pl_depth = env("PL_DEPTH", 16, int)
        self.pl_burst = env("PL_BURST", 2.0)
        self.pl_pause = env("PL_PAUSE", 4.0)
        self.segment = env("SEGMENT", 60.0)
        self.lt_timeout = env("LT_TIMEOUT", 10.0)  # as the raw clients' deadline
        # Raw-socket clients.
        self.churn_rate = env("CHURN_RATE", 60.0)
        self.churn_threads = env("CHURN_THREADS", 2, int)
        self.slowloris = env("SLOWLORIS", 50, int)
        self.bad_rate = env("BAD_RATE", 10.0)
        self.bad_threads = env("BAD_THREADS", 3, int)
        self.big_body_every = env("BIG_BODY_EVERY", 5.0)
        self.never_read = env("NEVER_READ", 4, int)
        self.nr_rate = env("NR_RATE", 1_000_000.0)
        self.nr_hold = env("NR_HOLD", 20.0)
        self.stuck = env("STUCK", 2, int)
        self.stuck_reqs = env("STUCK_REQS", 22000, int)
        self.stuck_limit = env("STUCK_LIMIT", 75.0)
        # The server's timeouts (the hello example runs with HttpConfig's defaults).
        self.hdr = env("HDR_TIMEOUT", 10.0)
        self.body = env("BODY_TIMEOUT", 30.0)
        self.idle = env("IDLE_TIMEOUT", 60.0)
        self.slack = env("SLACK", 5.0)
        # Verdicts.
        self.rss_limit_mb = env("RSS_LIMIT_MB", 64.0)
        self.rss_tol = env("RSS_TOL", 0.10)
        self.rss_slack_mb = env("RSS_SLACK_MB", 8.0)
        self.rss_floor_tol = env("RSS_FLOOR_TOL", 0.05)
        self.rss_floor_slack_mb = env("RSS_FLOOR_SLACK_MB", 2.0)
        self.fd_settle = env("FD_SETTLE", 5.0)


def log(msg):
    print(msg, flush=True)


def num(v):
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def nice_this_thread(n):
    """Linux niceness is per thread: the client threads yield to the server."""
    if n:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), n)
        except OSError:
            pass


def read_proc(pid):
    """(RSS KiB, open fds, utime+stime ticks) of the process, or None once it is gone."""
    try:
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return rss, fds, int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return None


def run_queue_wait_ns(pid):
    """Time the process's threads have spent runnable but waiting for a CPU (the second
    field of each thread's schedstat), ns; 0 if unknown."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        pass
    return total


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


class LagProbe:
    """A thread at the clients' niceness that sleeps 50 ms at a time and notes how late
    it wakes: when the machine's other work starves the niced clients, their late
    answers are the machine's doing, and the failure says so (it still fails)."""

    def __init__(self, nice):
        self.nice = nice
        self.worst = 0.0
        self.stop = threading.Event()

    def run(self):
        nice_this_thread(self.nice)
        while not self.stop.is_set():
            t = time.monotonic()
            time.sleep(0.05)
            self.worst = max(self.worst, time.monotonic() - t - 0.05)

    def take(self):
        w, self.worst = self.worst, 0.0
        return w


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(port, timeout=2.0):
    """One GET /: (status, headers, body), or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
            return clients.Reader(s).response(time.monotonic() + timeout)
    except (OSError, clients.Closed, clients.Garbled):
        return None


def response_length(port, timeout=2.0):
    """Bytes of the whole answer to the request loadtest sends (its `bytes` count)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise OSError("closed before the head")
            buf += d
        head = buf[: buf.index(b"\r\n\r\n") + 4]
        length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
        return len(head) + int(length[0].split(b":")[1])


class Soak:
    def __init__(self, cfg):
        self.cfg = cfg
        self.stats = clients.Stats()
        self.stop = threading.Event()
        self.samples = []  # (t, rss KiB, fds, cpu ticks, client lag s, server wait s)
        self.lt = {}  # "keepalive"/"pipelined" -> totals
        self.lt_lock = threading.Lock()
        self.lag = LagProbe(0)
        self.problems = []  # failures of the soak's own machinery (server died, ...)
        self.server = None
        self.t0 = None

    # -- the server ------------------------------------------------------------------

    def start_server(self):
        c = self.cfg
        if not c.port:
            c.port = free_port()
        self.server_out = open(os.path.join(c.out, "server.log"), "wb")
        self.server = subprocess.Popen(
            [c.hello, "--port", str(c.port), "--cores", str(c.cores), "--backend", c.backend],
            stdout=self.server_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                break
            got = probe(c.port, 0.5)
            if got and got[0] == 200 and got[2] == b"Hello, world":
                # It serves before it prints which backend it runs: wait for the line.
                while time.monotonic() < deadline:
                    with open(os.path.join(c.out, "server.log"), "rb") as f:
                        first = f.readline().decode(errors="replace")
                    if first.endswith("\n"):
                        return first.strip()
                    time.sleep(0.1)
                break
            time.sleep(0.1)
        raise RuntimeError(f"the server did not answer GET / and say its backend within 15 s "
                           f"(exit code {self.server.poll()}); see {c.out}/server.log")

    def stop_server(self):
        if self.server is None or self.server.poll() is not None:
            return self.server.returncode if self.server else None
        self.server.send_signal(signal.SIGINT)  # graceful: finishes within 5 s
        try:
            return self.server.wait(timeout=8)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(timeout=5)
            return "killed (did not stop within 8 s of SIGINT)"

    # -- sampling ----------------------------------------------------------------------

    def sampler(self, until):
        c = self.cfg
        csv = open(os.path.join(c.out, "samples.csv"), "w")
        csv.write("t_s,rss_kib,fds,cpu_ticks,client_lag_s,server_runqueue_wait_s,load1\n")
        hz = os.sysconf("SC_CLK_TCK")
        last_log = (time.monotonic(), None)
        last_wait = None
        next_t = time.monotonic()
        while not until.is_set():
            now = time.monotonic()
            p = read_proc(self.server.pid)
            if p is None:
                break
            t = now - self.t0
            wait_ns = run_queue_wait_ns(self.server.pid)
            wait = (wait_ns - last_wait) / 1e9 if last_wait is not None else 0.0
            last_wait = wait_ns
            lag = self.lag.take()
            self.samples.append((t, p[0], p[1], p[2], lag, wait))
            csv.write(f"{t:.1f},{p[0]},{p[1]},{p[2]},{lag:.3f},{wait:.3f},{load_average()}\n")
            csv.flush()
            if now - last_log[0] >= c.log_every or last_log[1] is None:
                cpu = ""
                if last_log[1] is not None:
                    cpu = f" cpu {100 * (p[2] - last_log[1]) / hz / (now - last_log[0]):4.0f}%"
                valid = self.valid_total()
                failures = self.stats.total_failures() + len(self.problems)
                lag = max((x[4] for x in self.samples if x[0] > t - c.log_every), default=0)
                log(f"  t={t:6.0f}s rss={p[0] / 1024:7.1f} MB fds={p[1]:5d}{cpu}  "
                    f"valid answered={valid:9d}  failures={failures}  "
                    f"(load {load_average()}, client lag {lag * 1000:.0f} ms)")
                last_log = (now, p[2])
            next_t += c.sample
            until.wait(max(0.0, next_t - time.monotonic()))
        csv.close()

    def valid_total(self):
        with self.lt_lock:
            lt = sum(v["requests"] for v in self.lt.values())
        with self.stats.lock:
            small = sum(d.get("valid_ok", 0) for d in self.stats.counts.values())
        return lt + small

    # -- loadtest ----------------------------------------------------------------------

    def loadtest(self, name, seconds, extra):
        c = self.cfg
        url = f"http://127.0.0.1:{c.port}/"
        cmd = (["nice", "-n", str(c.nice)] if c.nice else []) + [
            c.loadtest, "-t", "1", "--timeout", f"{c.lt_timeout}s", "-d", f"{seconds:.1f}s",
            "--json"] + extra + [url]
        start = time.monotonic() - self.t0
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=seconds + c.lt_timeout + 30)
        except subprocess.TimeoutExpired:
            return self.stats.fail(name, f"loadtest did not finish within {seconds + 30:.0f} s: {cmd}")
        if p.returncode != 0:
            return self.stats.fail(name, f"loadtest exit {p.returncode}: {p.stderr.decode()[-300:]}")
        try:
            r = json.loads(p.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return self.stats.fail(name, f"loadtest printed no JSON: {p.stdout[-300:]!r}")
        with self.lt_lock:
            t = self.lt.setdefault(name, {"runs": 0, "requests": 0, "bytes": 0, "errors": {},
                                          "p99_us_max": 0, "max_us": 0})
            t["runs"] += 1
            t["requests"] += r["requests"]
            t["bytes"] += r["bytes"]
            for k, v in r["errors"].items():
                t["errors"][k] = t["errors"].get(k, 0) + v
            t["p99_us_max"] = max(t["p99_us_max"], r["latency_us"]["p99"])
            t["max_us"] = max(t["max_us"], r["latency_us"]["max"])
        errs = {k: v for k, v in r["errors"].items() if v}
        if errs:
            self.stats.fail(name, f"loadtest errors {errs} over {r['requests']} answers "
                                  f"({' '.join(extra)}; p99 {r['latency_us']['p99'] / 1000:.0f} "
                                  f"ms, max {r['latency_us']['max'] / 1000:.0f} ms) "
                                  + self.machine_during(start, time.monotonic() - self.t0))
        if r["requests"] == 0:
            self.stats.fail(name, f"loadtest got no answer in {seconds:.0f} s")
        elif r["bytes"] != r["requests"] * self.resp_len:
            self.stats.fail(name, f"{r['bytes']} bytes for {r['requests']} answers: not "
                                  f"{self.resp_len} bytes each (the right answer's size)")

    def machine_during(self, t0, t1):
        """What the machine did to the soak between t0 and t1 (s into the run)."""
        w = [x for x in self.samples if t0 <= x[0] <= t1 + self.cfg.sample]
        lag = max((x[4] for x in w), default=0.0)
        wait = max((x[5] for x in w), default=0.0)
        return (f"[t={t0:.0f}-{t1:.0f} s: the niced clients woke up to {lag:.2f} s late, the "
                f"server's threads waited up to {wait:.2f} s for a CPU per {self.cfg.sample:g} s "
                f"sample; load average now {load_average()}]")

    def keepalive_runner(self):
        c = self.cfg
        while not self.stop.is_set():
            left = self.stop_at - time.monotonic()
            if left < 1:
                break
            self.loadtest("keepalive", min(c.segment, left),
                          ["-c", str(c.ka_conns), "-R", str(c.ka_rate)])

    def pipelined_runner(self):
        c = self.cfg
        self.stop.wait(random.random() * c.pl_pause)
        while not self.stop.is_set():
            left = self.stop_at - time.monotonic()
            if left < 1:
                break
            self.loadtest("pipelined", min(c.pl_burst, left),
                          ["-c", str(c.pl_conns), "--pipeline", str(c.pl_depth)])
            self.stop.wait(c.pl_pause)

    # -- raw-socket workers --------------------------------------------------------------

    def worker(self, cls, fn, interval=0.0, start_delay=0.0):
        """Calls fn() until the stop, at most once per `interval` s; an exception in the
        client code is a failure, never a silently dead thread."""
        def run():
            nice_this_thread(self.cfg.nice)
            if start_delay and self.stop.wait(start_delay):
                return
            nxt = time.monotonic()
            while not self.stop.is_set():
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - report whatever broke
                    self.stats.fail(cls, f"{type(e).__name__}: {e} "
                                         f"[{traceback.format_exc(limit=2).splitlines()[-3].strip()}]")
                    self.stop.wait(0.5)
                nxt = max(nxt + interval, time.monotonic()) if interval else time.monotonic()
                self.stop.wait(max(0.0, nxt - time.monotonic()))
        th = threading.Thread(target=run, name=cls, daemon=True)
        th.start()
        return th

    def start_clients(self):
        c, ctx = self.cfg, self.ctx
        threads = [threading.Thread(target=self.keepalive_runner, name="keepalive", daemon=True),
                   threading.Thread(target=self.pipelined_runner, name="pipelined", daemon=True)]
        for t in threads:
            t.start()
        for i in range(c.churn_threads):
            rng = random.Random(i)
            threads.append(self.worker("churn", lambda rng=rng: clients.churn_once(ctx, rng),
                                       c.churn_threads / c.churn_rate))
        rng = random.Random(100)
        for cls, fn in (("slow", clients.slow_head_ok), ("slow", clients.slow_body_ok),
                        ("slow", clients.slow_reader), ("slow_timeout", clients.slow_body_endless),
                        ("slow_timeout", clients.idle_keepalive),
                        ("slow_timeout", clients.partial_next_head)):
            threads.append(self.worker(cls, lambda fn=fn: fn(ctx, rng), 0.5))
        if c.slowloris:
            pool = clients.Slowloris(ctx, c.slowloris)

            def slowloris():
                nice_this_thread(c.nice)
                pool.run()
            threads.append(threading.Thread(target=slowloris, name="slowloris", daemon=True))
            threads[-1].start()
        counter = iter(range(1 << 60))
        lock = threading.Lock()

        def bad():
            with lock:
                i = next(counter)
            hostile.bad_once(ctx, i)
        for i in range(c.bad_threads):
            threads.append(self.worker("bad", bad, c.bad_threads / c.bad_rate))
        if c.big_body_every:
            threads.append(self.worker("bad", lambda: hostile.bad_case(ctx, *hostile.BIG_BODY),
                                       c.big_body_every))
        for i in range(c.never_read):
            threads.append(self.worker("never_read",
                                       lambda: hostile.never_read(ctx, c.nr_hold, c.nr_rate),
                                       0.0, start_delay=i * c.nr_hold / c.never_read))
        stuck_n = iter(range(1 << 60))
        for i in range(c.stuck):
            def stuck():
                with lock:
                    n = next(stuck_n)
                hostile.stuck_once(ctx, n, c.stuck_reqs, c.stuck_limit, wait_past_stop=True)
            threads.append(self.worker("stuck", stuck, 1.0, start_delay=i * 3.0))
        return threads

    # -- the run -------------------------------------------------------------------------

    def run(self):
        c = self.cfg
        log(f"soak: hello --backend {c.backend} --cores {c.cores} on "
            f"127.0.0.1:{c.port or '(free port)'}, D={c.duration:.0f}s; output in {c.out}")
        try:
            banner = self.start_server()
        except (RuntimeError, OSError) as e:
            log(f"soak: FAIL: {e}")
            return 1
        log(f"soak: {banner}")
        if c.backend != "auto" and (("uring" in c.backend) != ("uring" in banner)):
            log(f"soak: FAIL: asked for {c.backend}, the server runs {banner!r}")
            self.stop_server()
            return 1
        self.resp_len = response_length(c.port)
        time.sleep(1.0)  # let the probes' connections go
        base = read_proc(self.server.pid)
        self.baseline = base
        log(f"soak: baseline before traffic: rss {base[0] / 1024:.1f} MB, {base[1]} fds; "
            f"the answer to GET / is {self.resp_len} bytes")
        self.ctx = clients.Ctx(c.port, self.server.pid, self.stats, self.stop,
                               c.hdr, c.body, c.idle, c.slack)
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + c.duration
        self.lag = LagProbe(c.nice)
        threading.Thread(target=self.lag.run, name="lag", daemon=True).start()
        self.load_at_start = load_average()
        sampling_done = threading.Event()
        sampler = threading.Thread(target=self.sampler, args=(sampling_done,), daemon=True)
        sampler.start()
        workers = self.start_clients()
        died = None
        while time.monotonic() < self.stop_at:
            if self.server.poll() is not None:
                died = self.server.returncode
                break
            time.sleep(0.5)
        self.traffic_end = time.monotonic() - self.t0
        self.stop.set()
        if died is not None:
            self.problems.append(f"the server died during the traffic (exit status {died}; "
                                 f"negative: killed by that signal); see {c.out}/server.log")
        log(f"soak: traffic over at t={self.traffic_end:.0f}s; waiting for the clients "
            f"(connections stuck on unread answers are watched up to {c.stuck_limit:.0f} s)")
        # Every client but the stuck ones ends within seconds of the stop; then the
        # server must be back to its baseline fds, but for the stuck connections it
        # still holds (those are judged by their own limit).
        others = [th for th in workers if th.name != "stuck"]
        join_until = time.monotonic() + 60
        for th in others:
            th.join(max(0.0, join_until - time.monotonic()))
        hung = sorted({th.name for th in others if th.is_alive()})
        left = self.ctx.close_all(but_stuck=True)
        self.fd_result = self.settle_fds(left, self.ctx.stuck_held)
        log(f"soak: {self.fd_result['final']} open fds {self.fd_result['took']:.1f} s after the "
            f"clients closed (baseline {self.baseline[1]} + {self.fd_result['allowed_extra']} "
            "connections stuck clients still hold)")
        join_until = time.monotonic() + c.stuck_limit + 30
        for th in workers:
            th.join(max(0.0, join_until - time.monotonic()))
        hung = sorted(set(hung) | {th.name for th in workers if th.is_alive()})
        if hung:
            self.problems.append(f"client threads still running past their deadlines: {hung}")
        left = self.ctx.close_all()
        self.fd_final = self.settle_fds(left, lambda: 0)
        sampling_done.set()
        sampler.join(5)
        final = probe(c.port, 3.0) if self.server.poll() is None else None
        if self.server.poll() is not None and died is None:
            died = self.server.returncode
            self.problems.append(f"the server died (exit status {died}); see {c.out}/server.log")
        elif final is None or final[0] != 200 or final[2] != b"Hello, world":
            self.problems.append(f"after the soak, GET / was not answered 200 Hello, world: {final}")
        code = self.stop_server() if died is None else None
        if died is None and code != 0:
            self.problems.append(f"the server's exit on SIGINT: {code} (expected 0)")
        return self.report()

    def settle_fds(self, closed_left, extra):
        """Waits up to FD_SETTLE s for the server's open fds to fall to the baseline
        plus `extra()` (connections that may still be open)."""
        c = self.cfg
        t0 = time.monotonic()
        first = read_proc(self.server.pid)
        fds, allowed = (first[1] if first else None), extra()
        while fds is not None and fds > self.baseline[1] + allowed \
                and time.monotonic() - t0 < c.fd_settle:
            time.sleep(0.1)
            p = read_proc(self.server.pid)
            fds, allowed = (p[1] if p else None), extra()
        return {"at_stop": first[1] if first else None, "final": fds, "allowed_extra": allowed,
                "took": time.monotonic() - t0, "client_sockets_closed_at_end": closed_left}

    # -- verdicts ------------------------------------------------------------------------

    def rss_checks(self):
        """[(name, ok, text)] for the RSS bound and its growth after the warm-up."""
        c = self.cfg
        traffic = [s for s in self.samples if s[0] <= self.traffic_end]
        if not traffic:
            return [("rss", False, "no RSS sample")]
        peak = max(s[1] for s in self.samples) / 1024
        out = [("rss bound", peak <= c.rss_limit_mb,
                f"max RSS {peak:.1f} MB (limit RSS_LIMIT_MB={c.rss_limit_mb:.0f} MB; "
                f"baseline {self.baseline[0] / 1024:.1f} MB)")]
        third = self.traffic_end / 3
        mid = [s[1] / 1024 for s in traffic if third <= s[0] < 2 * third]
        last = [s[1] / 1024 for s in traffic if s[0] >= 2 * third]
        if len(mid) < 3 or len(last) < 3:
            out.append(("rss growth", True, f"not judged: {len(mid)} and {len(last)} samples in "
                                            "the middle and last thirds (fewer than 3; longer D)"))
            return out
        # The peak catches growth of what connections hold at once; the floor (the RSS
        # between bursts) is steadier and catches a slow leak with a tighter margin.
        for what, f, tol, slack in (("peak", max, c.rss_tol, c.rss_slack_mb),
                                    ("floor", min, c.rss_floor_tol, c.rss_floor_slack_mb)):
            a, b = f(mid), f(last)
            allowed = a * (1 + tol) + slack
            out.append((f"rss growth ({what})", b <= allowed,
                        f"{what} of the last third {b:.1f} MB vs middle third {a:.1f} MB "
                        f"(allowed {allowed:.1f} = x{1 + tol:.2f} + {slack:g} MB)"))
        # A least-squares slope over the second half, for the record (not a verdict).
        half = [(s[0], s[1] / 1024) for s in traffic if s[0] >= self.traffic_end / 2]
        if len(half) >= 3:
            n = len(half)
            mx = sum(t for t, _ in half) / n
            my = sum(r for _, r in half) / n
            sxx = sum((t - mx) ** 2 for t, _ in half)
            slope = sum((t - mx) * (r - my) for t, r in half) / sxx * 60 if sxx else 0
            out.append(("rss slope (info)", True, f"{slope:+.2f} MB/min over the second half"))
        return out

    def report(self):
        c, st = self.cfg, self.stats
        log("")
        log(f"==== soak summary: backend {c.backend}, {c.cores} cores, "
            f"{self.traffic_end:.0f} s of traffic ====")
        log("loadtest (every error count must be 0, every answer "
            f"{self.resp_len} bytes):")
        for name in ("keepalive", "pipelined"):
            t = self.lt.get(name)
            if t:
                log(f"  {name:10s} runs {t['runs']:4d}  answers {t['requests']:10d}  errors "
                    f"{t['errors']}  p99 max {t['p99_us_max'] / 1000:.1f} ms  "
                    f"max {t['max_us'] / 1000:.1f} ms")
        log("raw-socket clients (counts by outcome; min..max of measured times):")
        with st.lock:
            for cls in sorted(set(st.counts) | set(st.fail_counts) | set(st.maxima)):
                counts = " ".join(f"{k}={v}" for k, v in sorted(st.counts.get(cls, {}).items()))
                ranges = " ".join(f"{k}={num(st.minima[cls][k])}..{num(v)}"
                                  for k, v in sorted(st.maxima.get(cls, {}).items()))
                log(f"  {cls:18s} {counts} {ranges} failures={st.fail_counts.get(cls, 0)}")
        traffic = [s for s in self.samples if s[0] <= self.traffic_end]
        if len(traffic) >= 2:
            busy = (traffic[-1][3] - traffic[0][3]) / os.sysconf("SC_CLK_TCK")
            log(f"server CPU: {100 * busy / (traffic[-1][0] - traffic[0][0]):.0f}% of one core on "
                f"average during the traffic ({c.cores} cores available to it)")
        if traffic:
            log(f"machine: load average {self.load_at_start} at the start, {load_average()} at "
                f"the end; the niced clients woke up to {max(x[4] for x in traffic):.2f} s late; "
                f"the server's threads waited up to {max(x[5] for x in traffic):.2f} s for a CPU "
                f"per {c.sample:g} s sample")
        rss = [s[1] / 1024 for s in self.samples]
        fds = [s[2] for s in self.samples]
        if rss:
            log(f"server RSS: baseline {self.baseline[0] / 1024:.1f} MB, min {min(rss):.1f}, "
                f"max {max(rss):.1f} MB over {len(rss)} samples ({c.out}/samples.csv)")
            fr, ff = self.fd_result, self.fd_final
            log(f"server fds: baseline {self.baseline[1]}, peak {max(fds)}; after the traffic "
                f"{fr['at_stop']} -> {fr['final']} in {fr['took']:.1f} s (allowed baseline + "
                f"{fr['allowed_extra']} held for stuck clients; {fr['client_sockets_closed_at_end']} "
                f"client sockets closed by the soak at the end); after the stuck clients "
                f"{ff['at_stop']} -> {ff['final']} in {ff['took']:.1f} s")

        checks = []
        checks += self.rss_checks()
        for name, fr in (("fds after traffic", self.fd_result), ("fds at the end", self.fd_final)):
            limit = self.baseline[1] + fr["allowed_extra"]
            ok = fr["final"] is not None and fr["final"] <= limit
            checks.append((name, ok, f"{fr['final']} open fds {fr['took']:.1f} s after the clients "
                                     f"closed (at most baseline {self.baseline[1]} + "
                                     f"{fr['allowed_extra']} stuck, within FD_SETTLE={c.fd_settle:.0f} s)"))
        for name in ("keepalive", "pipelined"):
            n = st.fail_counts.get(name, 0)
            checks.append((f"loadtest {name}", n == 0 and name in self.lt,
                           f"{n} runs with errors or wrong answers" if name in self.lt else "never ran"))
        described = {
            "churn": "connect/close churn (resets mid-request/body/response): answers right",
            "slow": "trickled heads and bodies, slow readers: every answer right",
            "slowloris": "endless trickled heads closed within the header timeout",
            "slow_timeout": "endless bodies, idle keep-alive, half-sent second heads closed on time",
            "bad": "bad requests: a 4xx/5xx or a close, one answer at most, no hang",
            "never_read": "pipeliners that never read (their cost shows in the RSS bound)",
            "stuck": "finished clients with unflushable answers: the server lets go in time",
        }
        for cls, what in described.items():
            n = st.fail_counts.get(cls, 0)
            checks.append((cls, n == 0, f"{what}: {n} failures"))
        for cls, n in sorted(st.fail_counts.items()):
            if cls not in described and cls not in ("keepalive", "pipelined"):
                checks.append((cls, False, f"{n} failures"))
        for p in self.problems:
            checks.append(("soak", False, p))
        log("checks:")
        ok = True
        for name, passed, text in checks:
            ok &= passed
            log(f"  {'PASS' if passed else 'FAIL'}  {name:24s} {text}")
        with st.lock:
            for cls, kinds in sorted(st.failures.items()):
                log(f"failures of {cls} ({st.fail_counts[cls]} in all), by kind:")
                for n, example in kinds.values():
                    log(f"  {n:6d} x {example}")
        log(f"soak: {'PASS' if ok else 'FAIL'} ({c.backend})")
        return 0 if ok else 1


def main():
    cfg = Cfg()
    if not cfg.out:
        cfg.out = os.path.join("target", "soak", f"{cfg.backend}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(cfg.out, exist_ok=True)
    soak = Soak(cfg)

    def on_signal(signum, _frame):
        # Once: the shell's trap and `timeout` may both forward the signal.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = soak.run()
    except KeyboardInterrupt as e:
        log(f"soak: interrupted ({e}); stopping")
        code = 1
    except Exception:  # noqa: BLE001 - a broken soak fails, it never passes
        log(f"soak: FAIL: the soak itself broke:\n{traceback.format_exc()}")
        code = 1
    finally:
        soak.stop.set()
        if soak.server is not None and soak.server.poll() is None:
            soak.server.kill()
            soak.server.wait(5)
    sys.exit(code)


if __name__ == "__main__":
    main()
