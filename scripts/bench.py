#!/usr/bin/env python3
"""tickcast benchmark driver (issue #7, "Prove it"): the real release server and bots as
separate processes on 127.0.0.1, markdown tables on stdout, CSV (and a PNG) in --out.

Modes (default: all three; `--soak 10m` alone runs the soak):

  ab        encode-once fan-out (A) vs per-client encode (B) at 100, 500, 1000 clients:
            heap allocations per tick (whole server process, `count-allocs` builds),
            peak RSS, RSS growth over the measured window, server CPU µs per
            client-tick, delivery.
  capacity  the shipped server at 250 → 3000 clients: CPU µs per client-tick, the
            network thread's CPU, delivery, fan-out spread, RSS per client. Stops early
            when fewer than half the bots get in (the machine's limit).
  soak      500 clients (10 % stalled) for --soak (default 10m): server RSS every
            second, its least-squares slope after a warm-up, tick time; soak.csv and a
            PNG chart (drawn by tickcast-chart, no matplotlib needed).
  scrape    (only when named) the cost of the metrics endpoint: one server (with
            --metrics-listen) under 1,000 clients (--counts), its time cut into
            --segments segments of 10 s, a scraper polling GET /metrics every
            --scrape-every (default 1s) in half of them (ABBA order, so drift weighs on
            both sides alike); server CPU µs per client-tick with and without, their
            ratio with its uncertainty, and the metrics thread's own CPU.

  --quick   every mode with small counts and short windows: finishes in under 2 min.
  --baseline-server PATH
            ab also runs this server binary (a `count-allocs` build of an earlier
            commit, e.g. from scripts/ab-baseline.sh) as row "A0", same bots, same run:
            the before/after of a change. A `tickcast-bots` in the same directory (the
            script builds the commit's own) loads it instead: a commit from before a
            wire-protocol change is loaded by bots that speak its protocol.
  --counts  client counts for ab and capacity, e.g. --counts 100,500,1000.

    python3 scripts/bench.py --quick
    python3 scripts/bench.py ab capacity --out bench-out
    python3 scripts/bench.py --soak 10m
    python3 scripts/bench.py scrape --scrape-every 1s
    python3 scripts/bench.py bots --counts 1000
    python3 scripts/bench.py bots --bots-drivers proto --bots-cpu 1 --counts 2000,3000

The driver builds what it runs (each cargo call under `flock /tmp/tickcast-cargo.lock`):
the shipped binaries in target/release, A in target/bench-encode-once and B in
target/bench-per-client (features count-allocs and per-client-encode,count-allocs).
`--no-build` uses the binaries already there. Every process it starts is stopped
before it moves on (SIGTERM, then SIGKILL after 30 s). The bots' exit code 1 (a gate
failed) is a result; 2 (could not run) stops the driver. Exit codes: 0 done, 1 failed.
`--self-test` runs the doctests of the parsing and arithmetic below.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --syscalls: count the server's syscalls over each measured window with `perf stat`.
COUNT_SYSCALLS = False
CLK_TCK = os.sysconf("SC_CLK_TCK")
TICK_RATE = 30  # the server's default, which every run uses
NET_THREAD = "tickcast-net"
# Linux keeps 15 bytes of a thread name (`comm`): "tickcast-metrics" reads "tickcast-metric".
METRICS_THREAD = "tickcast-metrics"[:15]
CARGO_LOCK = os.environ.get("TICKCAST_CARGO_LOCK", "/tmp/tickcast-cargo.lock")
MIB = 1024 * 1024

SHIPPED = os.path.join(ROOT, "target", "release")
SERVER = os.path.join(SHIPPED, "tickcast-server")
BOTS = os.path.join(SHIPPED, "tickcast-bots")
CHART = os.path.join(SHIPPED, "tickcast-chart")
# The A/B builds: the same server, with the counting allocator; B also encodes per
# client. Separate target dirs so both binaries exist at once.
VARIANTS = {
    "A": ("encode once", "count-allocs", "bench-encode-once"),
    "B": ("per-client encode", "per-client-encode,count-allocs", "bench-per-client"),
}


def variant_binary(name):
    return os.path.join(ROOT, "target", VARIANTS[name][2], "release", "tickcast-server")


class BenchError(Exception):
    """A run could not be measured: the message says why."""


# --- pure parsing and arithmetic (doctested by --self-test) ---------------------------

STATUS = re.compile(
    r"clients=(?P<clients>\d+) tick=(?P<tick>\d+) entities=\d+ tick_p99_us=(?P<tick_p99>\d+) "
    r"fanout_mean_us=(?P<fan_mean>\d+) fanout_max_us=(?P<fan_max>\d+) "
    r".*?skipped_peer_ticks=(?P<skipped>\d+) late_ticks=(?P<late>\d+)"
    r"(?: allocs=(?P<allocs>\d+))?(?: fanout_allocs=(?P<fanout_allocs>\d+))?"
)
# The status line of servers before the config-file commit (a --baseline-server may be
# one): units after the numbers, fan-out as mean/max.
STATUS_BEFORE_FIELDS = re.compile(
    r"clients=(?P<clients>\d+) tick=(?P<tick>\d+) entities=\d+ tick_p99=(?P<tick_p99>\d+)us "
    r"fanout=(?P<fan_mean>\d+)/(?P<fan_max>\d+)us .*?skipped_peer_ticks=(?P<skipped>\d+) "
    r"late_ticks=(?P<late>\d+)"
    r"(?: allocs=(?P<allocs>\d+))?(?: fanout_allocs=(?P<fanout_allocs>\d+))?"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_status(line):
    """The numbers of one server status line (docs/OPERATIONS.md), or None for any other
    line.

    >>> s = parse_status("INFO tickcast::status: clients=3 tick=90 entities=203 "
    ...     "tick_p99_us=250 fanout_mean_us=40 fanout_max_us=90 out_bytes_per_s=1048576 "
    ...     "rss_bytes=21076377 skipped_peer_ticks=7 late_ticks=1 allocs=1234 fanout_allocs=5")
    >>> (s["clients"], s["tick"], s["tick_p99"], s["fan_mean"], s["fan_max"], s["allocs"], s["fanout_allocs"])
    (3, 90, 250, 40, 90, 1234, 5)
    >>> s["skipped"], s["late"]
    (7, 1)
    >>> parse_status("clients=3 tick=90 entities=203 tick_p99_us=250 fanout_mean_us=40 "
    ...     "fanout_max_us=90 out_bytes_per_s=0 rss_bytes=1 skipped_peer_ticks=0 "
    ...     "late_ticks=0")["allocs"] is None
    True
    >>> old = parse_status("INFO tickcast::status: clients=3 tick=90 entities=203 "
    ...     "tick_p99=250us fanout=40/90us out=1.0MiB/s rss=20.1MiB skipped_peer_ticks=7 "
    ...     "late_ticks=1 allocs=1234 fanout_allocs=5")
    >>> old == s
    True
    >>> parse_status("INFO tickcast-server listening on 127.0.0.1:4433") is None
    True
    """
    line = ANSI.sub("", line)
    m = STATUS.search(line) or STATUS_BEFORE_FIELDS.search(line)
    if not m:
        return None
    return {k: (int(v) if v is not None else None) for k, v in m.groupdict().items()}


def allocations_per_tick(lines, field="allocs"):
    """Allocations per tick over status lines [(time, status)], in order: each line's
    `allocs` (or `field`) covers the interval since the line before it, and so does its
    tick number's difference. The first line only sets the start. None if the lines
    carry no count.

    >>> lines = [(0, {"tick": 30, "allocs": 500}), (1, {"tick": 60, "allocs": 60}),
    ...          (2, {"tick": 90, "allocs": 30})]
    >>> allocations_per_tick(lines)
    1.5
    >>> allocations_per_tick([(0, {"tick": 30, "allocs": None}), (1, {"tick": 60, "allocs": None})]) is None
    True
    """
    allocs = ticks = 0
    for (_, before), (_, after) in zip(lines, lines[1:]):
        if after.get(field) is None:
            return None
        allocs += after[field]
        ticks += after["tick"] - before["tick"]
    return allocs / ticks if ticks else None


DRIVER_TOTALS = re.compile(r"net driver totals")
KEY_VALUE = re.compile(r"\b([a-z_]+)=(\d+)\b")


def parse_driver_totals(line):
    """The counts of the net driver's last log line (`net driver totals`, written when it
    stops), or None for any other line.

    >>> t = parse_driver_totals("INFO tickcast_net::driver::tally: net driver totals "
    ...     "turns=10 timer_pops=4 drives=20 packets_sent=30 acks_received=29")
    >>> t["turns"], t["packets_sent"], t["acks_received"]
    (10, 30, 29)
    >>> parse_driver_totals("INFO tickcast::status: clients=3 tick=90") is None
    True
    """
    line = ANSI.sub("", line)
    if not DRIVER_TOTALS.search(line):
        return None
    return {k: int(v) for k, v in KEY_VALUE.findall(line)}


def client_ticks(statuses):
    """Client-ticks over a run's status lines [status]: each line's client count times
    the ticks since the line before it.

    >>> client_ticks([{"tick": 30, "clients": 0}, {"tick": 60, "clients": 10}, {"tick": 90, "clients": 20}])
    900
    """
    return sum(after["clients"] * (after["tick"] - before["tick"])
               for before, after in zip(statuses, statuses[1:]))


SYSCALLS = ("sendmsg", "sendmmsg", "recvmsg", "recvmmsg", "epoll_wait", "epoll_pwait", "write")


def parse_perf_stat(text):
    """`perf stat -x ,` output: {syscall name: count} for the syscalls:sys_enter_* events.

    >>> parse_perf_stat("# started on x\\n\\n1234,,syscalls:sys_enter_sendmsg,10,100.00,,\\n"
    ...     "<not counted>,,syscalls:sys_enter_sendmmsg,0,0.00,,\\n")
    {'sendmsg': 1234, 'sendmmsg': 0}
    """
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or not fields[2].startswith("syscalls:sys_enter_"):
            continue
        name = fields[2][len("syscalls:sys_enter_"):]
        counts[name] = int(fields[0]) if fields[0].isdigit() else 0
    return counts


def least_squares_slope(points):
    """Slope of the least-squares line through [(x, y)]; None with fewer than 2 x values.

    >>> least_squares_slope([(0, 1.0), (1, 3.0), (2, 5.0)])
    2.0
    >>> least_squares_slope([(5, 1.0)]) is None
    True
    """
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    return sxy / sxx


def parse_duration(text):
    """Seconds in '10m', '90s', '1h', '1m30s' or a plain number of seconds.

    >>> parse_duration("10m"), parse_duration("1m30s"), parse_duration("45")
    (600.0, 90.0, 45.0)
    """
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 10m, 90s, 1m30s)")
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return float(sum(float(n) * scale[u] for n, u in parts))


def fmt(value, spec, unit=""):
    """A number for a table cell, or '–' when it could not be measured.

    >>> fmt(1.234, ".1f", " ms"), fmt(None, ".1f"), fmt(float("nan"), ".1f")
    ('1.2 ms', '–', '–')
    """
    if value is None or value != value:
        return "–"
    return f"{value:{spec}}{unit}"


# --- processes ------------------------------------------------------------------------


def proc_stat(path):
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def task_cpu(path):
    """CPU seconds of one thread: `schedstat`'s time on CPU (nanoseconds), else
    utime + stime from `stat` (clock ticks: 10 ms steps, coarse over a 4 s window)."""
    try:
        with open(f"{path}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (FileNotFoundError, IndexError, ValueError):
        return proc_stat(f"{path}/stat")


def thread_cpu(pid, name=None):
    """CPU seconds of the process's live threads, or of those called `name` (`comm`).
    Threads that have ended are not counted: the server's threads live as long as it."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{tid}"
        try:
            if name is not None:
                with open(f"{path}/comm") as f:
                    if f.read().strip() != name:
                        continue
            total += task_cpu(path)
        except FileNotFoundError:  # the thread ended between listdir and open
            continue
    return total


def memory(pid):
    """(RSS, peak RSS) in bytes from /proc/PID/status (VmRSS, VmHWM)."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_summary(samples):
    """Scrapes [(seconds taken, bytes, HTTP status)] summed up: how many, how many
    failed (not 200), mean time in ms, mean size in bytes.

    >>> scrape_summary([(0.002, 9000, 200), (0.004, 9100, 200), (1.0, 0, 503)])
    {'scrapes': 3, 'failed': 1, 'mean_ms': 3.0, 'mean_bytes': 9050.0}
    >>> scrape_summary([])
    {'scrapes': 0, 'failed': 0, 'mean_ms': None, 'mean_bytes': None}
    """
    ok = [(t, n) for t, n, status in samples if status == 200]
    return {"scrapes": len(samples), "failed": len(samples) - len(ok),
            "mean_ms": round(statistics.fmean(t for t, _ in ok) * 1000, 3) if ok else None,
            "mean_bytes": statistics.fmean(n for _, n in ok) if ok else None}


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """A tickcast-server in its own work dir, its log read line by line on a thread:
    status lines are kept with the monotonic time they arrived; a sampler thread reads
    its RSS once a second."""

    def __init__(self, binary, work, clients, npcs, metrics=False, prefix=()):
        self.addr = f"127.0.0.1:{free_udp_port()}"
        self.metrics_addr = f"127.0.0.1:{free_tcp_port()}" if metrics else None
        self.work = work
        self.log_path = os.path.join(work, "server.log")
        self.status = []  # (monotonic time, parse_status dict)
        self.rss = []  # (monotonic time, RSS bytes)
        self.lines = []
        self.done = threading.Event()
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        self.proc = subprocess.Popen(
            [*prefix, binary, "--listen", self.addr, "--max-clients", str(max(clients + 10, 100)),
             "--npcs", str(npcs)]
            + (["--metrics-listen", self.metrics_addr] if metrics else []),
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _read(self):
        with open(self.log_path, "w") as log:
            for line in self.proc.stdout:
                log.write(line)
                now = time.monotonic()
                self.lines.append(line)
                status = parse_status(line)
                if status:
                    self.status.append((now, status))

    def _sample(self):
        while not self.done.wait(1.0):
            try:
                self.rss.append((time.monotonic(), memory(self.proc.pid)[0]))
            except (FileNotFoundError, ProcessLookupError):
                return

    def log_tail(self, n=15):
        return "".join(self.lines[-n:])

    def wait_ready(self, timeout=20):
        cert = os.path.join(self.work, ".tickcast", "cert.der")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.reader.join(timeout=5)
                raise BenchError(f"tickcast-server exited ({self.proc.returncode}):\n{self.log_tail()}")
            if os.path.exists(cert) and any("listening on" in line for line in self.lines):
                return
            time.sleep(0.05)
        raise BenchError(f"tickcast-server did not start in {timeout} s:\n{self.log_tail()}")

    def features(self):
        return {m.group(1) for m in map(re.compile(r"built with feature (\S+)").search, self.lines) if m}

    def snapshot(self):
        """Now: (time, process CPU s, network thread CPU s, RSS, peak RSS)."""
        pid = self.proc.pid
        rss, peak = memory(pid)
        return {"t": time.monotonic(), "cpu": thread_cpu(pid),
                "net_cpu": thread_cpu(pid, NET_THREAD),
                "metrics_cpu": thread_cpu(pid, METRICS_THREAD), "rss": rss, "peak": peak}

    def status_between(self, t0, t1):
        """Status lines that arrived in (t0, t1], with the last line before t0 first (the
        start of the first interval)."""
        before = [s for s in self.status if s[0] <= t0][-1:]
        return before + [s for s in self.status if t0 < s[0] <= t1]

    def stop(self):
        self.done.set()
        stop_process(self.proc)
        self.reader.join(timeout=10)


class SyscallCounter:
    """`perf stat` counting a process's syscalls (every thread) until stopped; nothing
    when --syscalls is off or perf cannot run."""

    def __init__(self, pid, work):
        self.proc = None
        self.path = os.path.join(work, f"syscalls-{pid}-{time.monotonic_ns()}.csv")
        if not COUNT_SYSCALLS or not shutil.which("perf"):
            return
        events = ",".join(f"syscalls:sys_enter_{name}" for name in SYSCALLS)
        self.proc = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "-o", self.path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        """{syscall: count} over the time it ran, or None."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        try:
            with open(self.path) as f:
                return parse_perf_stat(f.read()) or None
        except FileNotFoundError:
            return None


class Scraper:
    """GET /metrics every `every` seconds while switched on, on a thread of the driver
    (not the server's CPU), the way Prometheus would: one connection per scrape,
    Connection: close."""

    def __init__(self, addr, every):
        host, port = addr.rsplit(":", 1)
        self.target = (host, int(port))
        self.every = every
        self.samples = []  # (seconds taken, bytes, status)
        self.on = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def switch(self, on):
        (self.on.set if on else self.on.clear)()

    def _scrape(self):
        began = time.monotonic()
        chunks = []
        with socket.create_connection(self.target, timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: tickcast\r\nConnection: close\r\n\r\n")
            while chunk := s.recv(65536):
                chunks.append(chunk)
        response = b"".join(chunks)
        head, _, body = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        return time.monotonic() - began, len(body), status

    def _run(self):
        while not self.done.is_set():
            if not self.on.is_set():
                self.done.wait(0.02)
                continue
            began = time.monotonic()
            try:
                self.samples.append(self._scrape())
            except OSError:
                self.samples.append((0.0, 0, 0))
            self.done.wait(max(0.0, self.every - (time.monotonic() - began)))

    def stop(self):
        self.done.set()
        self.thread.join(timeout=10)
        return scrape_summary(self.samples)


class Bots:
    def __init__(self, work, server, clients, duration_s, ramp_s, mix, prefix=(), extra=(), log="bots.log",
                 binary=None):
        self.err_path = os.path.join(work, log)
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [*prefix, binary or BOTS, "--server", server.addr, "--data-dir", os.path.join(work, ".tickcast"),
             "--clients", str(clients), "--duration", f"{duration_s:g}s",
             "--ramp", f"{ramp_s:g}s", "--mix", mix, "--json", *extra],
            cwd=work, stdout=subprocess.PIPE, stderr=self.err, text=True,
        )

    def report(self, timeout):
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            raise BenchError(f"tickcast-bots did not finish in {timeout:.0f} s")
        finally:
            self.err.close()
        code = self.proc.returncode
        if code not in (0, 1):  # 1: a gate failed, still a report; 2: could not run
            with open(self.err_path) as f:
                tail = "".join(f.readlines()[-10:])
            raise BenchError(f"tickcast-bots exited {code}:\n{tail}")
        return json.loads(out)

    def stop(self):
        stop_process(self.proc)
        if not self.err.closed:
            self.err.close()


def run_load(binary, clients, timing, work, mix="walk=100", npcs=200, bots_binary=None):
    """Starts the server, lets it idle, brings the bots in over `ramp`, waits `settle`,
    measures over `window`, waits for the bots' report, stops the server.

    Bots play ramp + settle + window + 1 s each from their own connect, so every bot is
    connected for the whole window (the last connects at `ramp`, the first leaves at
    ramp + settle + window + 1)."""
    os.makedirs(work, exist_ok=True)
    ramp, settle, window = timing["ramp"], timing["settle"], timing["window"]
    duration = ramp + settle + window + 1
    server = Server(binary, work, clients, npcs)
    bots = None
    try:
        server.wait_ready()
        time.sleep(timing["idle"])
        idle = server.snapshot()
        bots = Bots(work, server, clients, duration, ramp, mix, binary=bots_binary)
        started = time.monotonic()
        time.sleep(ramp + settle)
        w0 = server.snapshot()
        counter = SyscallCounter(server.proc.pid, work)
        time.sleep(window)
        w1 = server.snapshot()
        syscalls = counter.stop()
        report = bots.report(timeout=ramp + duration + 60)
        if server.proc.poll() is not None:
            why = ("it was told to stop (SIGTERM, SIGINT or SIGHUP) by another process — "
                   "is something on this machine killing tickcast-server by name?"
                   if any("stopping tick=" in line for line in server.lines)
                   else f"it exited with {server.proc.returncode}")
            raise BenchError(f"tickcast-server ended during the run in {work}: {why}\n{server.log_tail(5)}")
    finally:
        if bots:
            bots.stop()
        server.stop()
    lines = server.status_between(w0["t"], w1["t"])
    in_window = [s for t, s in lines if t > w0["t"]]
    seconds = w1["t"] - w0["t"]
    ticks = seconds * TICK_RATE
    peers = statistics.fmean(s["clients"] for s in in_window) if in_window else None
    cpu = w1["cpu"] - w0["cpu"]
    totals = next((t for t in map(parse_driver_totals, reversed(server.lines)) if t), None)
    return {
        "clients": clients,
        "connected": report["connected"],
        "peers": peers,
        "syscalls_per_client_tick": ({k: v / (peers * ticks) for k, v in syscalls.items()}
                                     if syscalls and peers else None),
        "driver_totals": totals,
        "run_client_ticks": client_ticks([s for _, s in server.status]),
        "report": report,
        "features": server.features(),
        "idle_rss": idle["rss"],
        "rss_start": w0["rss"],
        "rss_end": w1["rss"],
        "peak_rss": w1["peak"],
        "server_cores": cpu / seconds,
        "net_cores": (w1["net_cpu"] - w0["net_cpu"]) / seconds,
        "us_per_client_tick": cpu * 1e6 / (peers * ticks) if peers else None,
        "allocs_per_tick": allocations_per_tick(lines),
        "fanout_allocs_per_tick": allocations_per_tick(lines, "fanout_allocs"),
        "spread_mean_ms": statistics.fmean(s["fan_mean"] for s in in_window) / 1000 if in_window else None,
        "spread_max_ms": max(s["fan_max"] for s in in_window) / 1000 if in_window else None,
        "late_ticks": (in_window[-1]["late"] - lines[0][1]["late"]) if in_window else None,
        "status": server.status,
        "rss_series": server.rss,
        "started": started,
        "window": (w0["t"], w1["t"]),
    }


# --- the modes --------------------------------------------------------------------------

QUICK = {
    "quick": True,
    "ab_counts": [100],
    "capacity_counts": [100, 250],
    "timing": {"idle": 1, "ramp": 2, "settle": 2, "window": 4},
    "soak_clients": 100,
    "soak_duration": 45,
    "scrape_counts": [100],
    "scrape_segments": 4,
    "scrape_segment_s": 3,
    "bots_counts": [100],
}
FULL = {
    "quick": False,
    "ab_counts": [100, 500, 1000],
    "capacity_counts": [250, 500, 1000, 1400, 2000, 3000],
    "timing": {"idle": 2, "ramp": 5, "settle": 5, "window": 10},
    "soak_clients": 500,
    "soak_duration": 600,
    # One server, scraper on and off in alternate 10 s segments: separate runs of the
    # same load differed by up to 50 % in CPU per client-tick within five minutes here
    # (fresh server and bots each time, and whatever else the machine was doing), far
    # more than the 2 % in question.
    "scrape_counts": [1000],
    "scrape_segments": 12,
    "scrape_segment_s": 10,
    "bots_counts": [1000],
}


def timing_for(preset, clients):
    """Full runs spread connects at ≤ 100 per second: a burst of handshakes is a test of
    its own, not of steady state. (At 200 per second, 1,400 connects on top of ~1,000
    clients already playing saturated both cores for a few seconds: 53 connects timed
    out and that stretch's delivery fell to 0.93, while steady state stayed at 1.0.)"""
    timing = dict(preset["timing"])
    if not preset["quick"]:
        timing["ramp"] = max(timing["ramp"], clients / 100)
    return timing


def delivery(report, group=None):
    if group:
        report = report.get("groups", {}).get(group)
        if report is None:
            return None
    return report["delivery_ratio"] if report.get("snapshots_expected") else None


def print_traffic(results):
    """Two tables after a mode's own, from its runs' extras: the server's syscalls per
    client-tick over the window (--syscalls), and what the net driver counted over the
    whole run (its last log line) per client-tick of the run. [(label, result)]."""
    counted = [(label, r) for label, r in results if r.get("syscalls_per_client_tick")]
    if counted:
        names = [n for n in SYSCALLS if any(r["syscalls_per_client_tick"].get(n) for _, r in counted)]
        print("\nServer syscalls per client-tick over the window (`perf stat -e syscalls:sys_enter_*`, every thread):\n")
        print("| run | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for label, r in counted:
            per = r["syscalls_per_client_tick"]
            print(f"| {label} | " + " | ".join(fmt(per.get(n), ".3f") for n in names) + " |")
    totalled = [(label, r) for label, r in results if r.get("driver_totals") and r.get("run_client_ticks")]
    if totalled:
        keys = ["turns", "drives", "timer_pops", "timer_pops_idle", "packets_sent", "send_calls",
                "packets_received", "acks_sent", "acks_received", "datagrams_sent", "pings_sent"]
        print("\nThe net driver's own counts over the whole run (ramp included), per client-tick of the run:\n")
        print("| run | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for label, r in totalled:
            t, n = r["driver_totals"], r["run_client_ticks"]
            print(f"| {label} | " + " | ".join(fmt(t.get(k, 0) / n, ".3f") for k in keys) + " |")
    print(flush=True)


def mode_ab(preset, work, out, baselines=(), names=None):
    print("## A/B: encode once vs per-client encode\n")
    print(f"A = `tickcast-server` built with `--features {VARIANTS['A'][1]}` (the shipped fan-out); "
          f"B = `--features {VARIANTS['B'][1]}`. 200 NPCs, 30 Hz, bots `walk=100`. "
          "Window of " f"{preset['timing']['window']} s after ramp + settle.\n")
    print("| clients | mode | connected | allocations per tick (whole process) | per client-tick | fan-out's own allocations per tick | peak RSS | RSS growth in window | server CPU µs per client-tick | delivery |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    extras = []
    baseline_of = {f"A{i}": path for i, path in enumerate(baselines)}
    names = [n for n in (*baseline_of, "A", "B") if names is None or n in names]
    for clients in preset["ab_counts"]:
        for name in names:
            bots_binary = None
            if name in baseline_of:
                baseline = baseline_of[name]
                label, features, binary = f"baseline {show_path(baseline)}", "count-allocs", baseline
                # A commit from before a wire-protocol change needs bots that speak its
                # protocol: scripts/ab-baseline.sh builds the commit's own beside it.
                beside = os.path.join(os.path.dirname(baseline), "tickcast-bots")
                if os.access(beside, os.X_OK):
                    bots_binary = beside
                    label += f" (its own bots, {show_path(beside)})"
            else:
                label, features, _ = VARIANTS[name]
                binary = variant_binary(name)
            r = run_load(binary, clients, timing_for(preset, clients),
                         os.path.join(work, f"ab-{clients}-{name}"), bots_binary=bots_binary)
            missing = set(features.split(",")) - r["features"]
            if missing:
                raise BenchError(f"the {name} binary does not say it was built with {', '.join(sorted(missing))}")
            if r["allocs_per_tick"] is None:
                raise BenchError(f"the {name} server printed no allocs= in its status lines")
            per_client = r["allocs_per_tick"] / r["peers"] if r["peers"] else None
            growth = (r["rss_end"] - r["rss_start"]) / MIB
            print(f"| {clients} | {name}: {label} | {r['connected']} | {fmt(r['allocs_per_tick'], ',.1f')} | "
                  f"{fmt(per_client, '.2f')} | {fmt(r['fanout_allocs_per_tick'], ',.1f')} | "
                  f"{fmt(r['peak_rss'] / MIB, '.1f', ' MiB')} | "
                  f"{growth:+.2f} MiB | {fmt(r['us_per_client_tick'], '.1f')} | "
                  f"{fmt(delivery(r['report']), '.4f')} |", flush=True)
            rows.append({"clients": clients, "mode": name, "connected": r["connected"],
                         "allocs_per_tick": r["allocs_per_tick"], "allocs_per_client_tick": per_client,
                         "fanout_allocs_per_tick": r["fanout_allocs_per_tick"],
                         "peak_rss_bytes": r["peak_rss"], "rss_growth_bytes": r["rss_end"] - r["rss_start"],
                         "window_s": r["window"][1] - r["window"][0],
                         "us_per_client_tick": r["us_per_client_tick"], "delivery": delivery(r["report"]),
                         "net_cores": r["net_cores"], "server_cores": r["server_cores"]})
            extras.append((f"{clients} {name}", r))
    write_csv(os.path.join(out, "ab.csv"), rows)
    print_traffic(extras)


def mode_capacity(preset, work, out):
    print("## Capacity: the shipped server from few clients to the machine's limit\n")
    print(f"`target/release/tickcast-server` on its defaults (200 NPCs, 30 Hz), bots `{preset.get('mix', 'walk=100')}` "
          "in another process on the same cores. Network thread: its CPU over the window "
          "(1.00 = one core, the target is ≤ 1).\n")
    print("| clients | connected | server CPU µs per client-tick | server cores | network thread cores | fan-out spread mean / max | delivery | RSS per client | bots CPU µs per client-tick | bots cores |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    extras = []
    for clients in preset["capacity_counts"]:
        r = run_load(SERVER, clients, timing_for(preset, clients), os.path.join(work, f"capacity-{clients}"),
                     mix=preset.get("mix", "walk=100"))
        per_client = (r["rss_start"] - r["idle_rss"]) / r["peers"] if r["peers"] else None
        bots_cores, bots_us = bots_cpu_figures(r["report"])
        print(f"| {clients} | {r['connected']} | {fmt(r['us_per_client_tick'], '.1f')} | "
              f"{r['server_cores']:.2f} | {r['net_cores']:.2f} | "
              f"{fmt(r['spread_mean_ms'], '.2f')} / {fmt(r['spread_max_ms'], '.2f')} ms | "
              f"{fmt(delivery(r['report']), '.4f')} | {fmt(per_client and per_client / 1024, '.1f', ' KiB')} | "
              f"{fmt(bots_us, '.1f')} | {fmt(bots_cores, '.2f')} |",
              flush=True)
        rows.append({"clients": clients, "connected": r["connected"], "us_per_client_tick": r["us_per_client_tick"],
                     "server_cores": r["server_cores"], "net_cores": r["net_cores"],
                     "spread_mean_ms": r["spread_mean_ms"], "spread_max_ms": r["spread_max_ms"],
                     "delivery": delivery(r["report"]), "rss_per_client_bytes": per_client,
                     "idle_rss_bytes": r["idle_rss"], "rss_bytes": r["rss_start"],
                     "bots_us_per_client_tick": bots_us, "bots_cores": bots_cores})
        extras.append((f"{clients}", r))
        if r["connected"] < clients / 2:
            print(f"\nStopped after {clients}: fewer than half the bots connected, this machine's limit.")
            break
    write_csv(os.path.join(out, "capacity.csv"), rows)
    print_traffic(extras)


def mode_soak(preset, work, out, duration):
    clients = preset["soak_clients"]
    ramp = preset["timing"]["ramp"]
    # RSS settles while connections warm up: in every quick run it stepped up twice,
    # about 14 s and 18 s after the bots connected (~30 and ~90 KiB at 100 clients),
    # then stayed flat. The slope is taken after this.
    warmup = min(60.0, max(20.0, duration / 10))
    window = duration - ramp - warmup - 1
    if window < 5:
        raise BenchError(f"--soak {duration:g}s leaves no window after the {ramp} s ramp and {warmup:g} s warm-up")
    mix = "walk=90,stall=10"
    print(f"## Soak: {clients} clients for {duration:g} s, 10 % stalled\n")
    print(f"`target/release/tickcast-server` on its defaults, bots `--mix {mix}`, ramp {ramp} s. "
          f"RSS sampled every second from /proc; slope = least squares over the window after a "
          f"{warmup:g} s warm-up ({window:g} s); tick time = the status line's `tick_p99_us` (99th "
          "percentile of each second's ticks).\n")
    r = run_load(SERVER, clients, {"idle": preset["timing"]["idle"], "ramp": ramp, "settle": warmup,
                                   "window": window}, os.path.join(work, "soak"), mix=mix)
    t0, t1 = r["window"]
    in_window = [(t - t0, rss) for t, rss in r["rss_series"] if t0 <= t <= t1]
    slope = least_squares_slope([(t / 60, rss / 1024) for t, rss in in_window])  # KiB/min
    p99 = [s["tick_p99"] for t, s in r["status"] if t0 < t <= t1]
    rows = soak_rows(r)
    csv_path = os.path.join(out, "soak.csv")
    write_csv(csv_path, rows)
    png = chart(csv_path, os.path.join(out, "soak.png"))
    report = r["report"]
    per_client = (r["rss_end"] - r["idle_rss"]) / r["connected"] / 1024 if r["connected"] else None
    print("| clients | connected | idle RSS | RSS at warm-up end | RSS at end | RSS per client | peak RSS | RSS slope | tick p99 median / max | late ticks | walk delivery | stall delivery |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {clients} | {r['connected']} | {r['idle_rss'] / MIB:.1f} MiB | {r['rss_start'] / MIB:.1f} MiB | "
          f"{r['rss_end'] / MIB:.1f} MiB | {fmt(per_client, '.1f', ' KiB')} | "
          f"{r['peak_rss'] / MIB:.1f} MiB | {fmt(slope, '+.1f', ' KiB/min')} | "
          f"{fmt(statistics.median(p99) if p99 else None, '.0f')} / {fmt(max(p99) if p99 else None, '.0f')} µs | "
          f"{fmt(r['late_ticks'], 'd')} | {fmt(delivery(report, 'walk'), '.4f')} | "
          f"{fmt(delivery(report, 'stall'), '.4f')} |")
    print(f"\nSeries: `{show_path(csv_path)}`; chart: `{show_path(png)}`.\n")


def scrape_change(without, with_):
    """CPU per client-tick with a scraper over without it: (ratio, change in %).

    >>> scrape_change(50.0, 50.5)
    (1.01, 1.0)
    >>> scrape_change(None, 50.0)
    (None, None)
    """
    if not without or with_ is None:
        return None, None
    ratio = with_ / without
    return round(ratio, 4), round((ratio - 1) * 100, 2)


def scrape_order(segments):
    """Whether each segment scrapes, in ABBA order (off, on, on, off, off, on, …): a
    linear drift in the machine's load weighs on both sides alike.

    >>> scrape_order(4), scrape_order(6)
    ([False, True, True, False], [False, True, True, False, False, True])
    """
    return [(i % 4) in (1, 2) for i in range(segments)]


def mean_and_change(off, on):
    """Means of two samples, the change from `off` to `on` in %, and twice its standard
    error in % (Welch): a change smaller than that is not measurable with these samples.

    >>> mean_and_change([10.0, 10.2, 9.8], [10.1, 10.3, 9.9])
    (10.0, 10.1, 1.0, 3.27)
    >>> mean_and_change([10.0], [10.0])
    (10.0, 10.0, 0.0, None)
    """
    m_off, m_on = statistics.fmean(off), statistics.fmean(on)
    change = round((m_on / m_off - 1) * 100, 2)
    if len(off) < 2 or len(on) < 2:
        return m_off, m_on, change, None
    se = (statistics.variance(off) / len(off) + statistics.variance(on) / len(on)) ** 0.5
    return m_off, m_on, change, round(2 * se / m_off * 100, 2)


def run_interleaved(clients, timing, work, every, segments, segment_s, mix="walk=100", npcs=200):
    """One server (with --metrics-listen) and one swarm: after the ramp and `settle`,
    `segments` segments of `segment_s` seconds, the scraper switched on in half of them
    (`scrape_order`). Per segment: CPU µs per client-tick, the metrics thread's CPU,
    skipped peer ticks, the scrapes made."""
    os.makedirs(work, exist_ok=True)
    ramp, settle = timing["ramp"], timing["settle"]
    duration = ramp + settle + segments * segment_s + 1
    server = Server(SERVER, work, clients, npcs, metrics=True)
    bots = scraper = None
    spans = []
    try:
        server.wait_ready()
        bots = Bots(work, server, clients, duration, ramp, mix)
        scraper = Scraper(server.metrics_addr, every)
        time.sleep(ramp + settle)
        for scraping in scrape_order(segments):
            scraper.switch(scraping)
            first_scrape = len(scraper.samples)
            s0 = server.snapshot()
            time.sleep(segment_s)
            s1 = server.snapshot()
            spans.append((scraping, s0, s1, scraper.samples[first_scrape:]))
        scraper.switch(False)
        report = bots.report(timeout=ramp + duration + 60)
        if server.proc.poll() is not None:
            raise BenchError(f"tickcast-server ended during the run in {work}\n{server.log_tail(5)}")
    finally:
        if scraper:
            scraper.stop()
        if bots:
            bots.stop()
        server.stop()
    rows = []
    for scraping, s0, s1, samples in spans:
        lines = server.status_between(s0["t"], s1["t"])
        in_span = [s for t, s in lines if t > s0["t"]]
        seconds = s1["t"] - s0["t"]
        peers = statistics.fmean(s["clients"] for s in in_span) if in_span else None
        cpu = s1["cpu"] - s0["cpu"]
        rows.append({
            "scraping": scraping,
            "peers": peers,
            "us_per_client_tick": cpu * 1e6 / (peers * seconds * TICK_RATE) if peers else None,
            "server_cores": cpu / seconds,
            "metrics_cpu_ms_per_s": (s1["metrics_cpu"] - s0["metrics_cpu"]) * 1000 / seconds,
            "skipped": (in_span[-1]["skipped"] - lines[0][1]["skipped"]) if in_span else None,
            **scrape_summary(samples),
        })
    return rows, report


def mode_scrape(preset, work, out, every):
    segments, segment_s = preset["scrape_segments"], preset["scrape_segment_s"]
    print(f"## Scrape cost: the metrics endpoint polled every {every:g} s\n")
    print("`target/release/tickcast-server` on its defaults (200 NPCs, 30 Hz) with "
          "`--metrics-listen 127.0.0.1:<port>`, bots `walk=100`; after ramp + settle, "
          f"{segments} segments of {segment_s} s, the driver GETting /metrics every {every:g} s "
          "(one connection per scrape) in half of them, in ABBA order. Metrics thread = the "
          "CPU of the server's `tickcast-metrics` thread; skipped = (client, tick) pairs "
          "skipped by backpressure, a sign the bots were short of CPU. ± = twice the standard "
          "error of the difference (Welch).\n")
    print("| clients | scraper | segments | server CPU µs per client-tick (mean; min–max) | server cores | metrics thread CPU | skipped | scrapes (failed) | mean scrape time | exposition size | delivery |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    for clients in preset["scrape_counts"]:
        spans, report = run_interleaved(clients, timing_for(preset, clients),
                                        os.path.join(work, f"scrape-{clients}"), every, segments, segment_s)
        for i, span in enumerate(spans, 1):
            rows.append({"clients": clients, "segment": i, "scrape_every_s": every if span["scraping"] else "",
                         **{k: v for k, v in span.items() if k != "scraping"}})
        side = {on: [s for s in spans if s["scraping"] == on] for on in (False, True)}
        values = {on: [s["us_per_client_tick"] for s in side[on] if s["us_per_client_tick"]] for on in side}
        for on in (False, True):
            got = side[on]
            made = sum(s["scrapes"] for s in got)
            failed = sum(s["failed"] for s in got)
            timed = [s["mean_ms"] for s in got if s["mean_ms"] is not None]
            sizes = [s["mean_bytes"] for s in got if s["mean_bytes"] is not None]
            print(f"| {clients} | {f'every {every:g} s' if on else 'none'} | {len(got)} | "
                  f"{fmt(statistics.fmean(values[on]) if values[on] else None, '.2f')}; "
                  f"{fmt(min(values[on], default=None), '.2f')}–{fmt(max(values[on], default=None), '.2f')} | "
                  f"{statistics.fmean(s['server_cores'] for s in got):.3f} | "
                  f"{statistics.fmean(s['metrics_cpu_ms_per_s'] for s in got):.3f} ms/s | "
                  f"{fmt(sum(s['skipped'] or 0 for s in got), ',d')} | {made} ({failed}) | "
                  f"{fmt(statistics.fmean(timed) if timed else None, '.2f', ' ms')} | "
                  f"{fmt(statistics.fmean(sizes) if sizes else None, ',.0f', ' B')} | "
                  f"{fmt(delivery(report), '.4f')} |", flush=True)
        if values[False] and values[True]:
            _, _, change, two_se = mean_and_change(values[False], values[True])
            thread = (statistics.fmean(s["metrics_cpu_ms_per_s"] for s in side[True])
                      - statistics.fmean(s["metrics_cpu_ms_per_s"] for s in side[False]))
            server_ms = statistics.fmean(s["server_cores"] for s in side[False]) * 1000
            print(f"\nAt {clients} clients: server CPU per client-tick with a scraper "
                  f"{change:+.2f} % ± {fmt(two_se, '.2f')} % against without. The metrics thread's "
                  f"own CPU with a scraper: {thread:+.3f} ms/s = {thread / server_ms * 100:+.3f} % of "
                  f"the server's CPU without one ({server_ms:.0f} ms/s).\n", flush=True)
    write_csv(os.path.join(out, "scrape.csv"), rows)


def soak_rows(r):
    """One row per RSS sample (seconds since the bots started), with the tick p99 of the
    status line that arrived since the previous sample, if one did. `rss_window_mib`
    repeats RSS inside the slope's window only, so the chart can zoom on it.

    >>> r = {"status": [(1.0, {"tick_p99": 200, "clients": 5})], "started": 0.5,
    ...      "rss_series": [(0.5, MIB), (1.5, 2 * MIB), (2.5, 2 * MIB)], "window": (1.4, 2.0)}
    >>> [list(row.values()) for row in soak_rows(r)]
    [[0.0, 1.0, '', '', ''], [1.0, 2.0, 2.0, 200, 5], [2.0, 2.0, '', '', '']]
    >>> list(soak_rows(r)[0])
    ['t_s', 'rss_mib', 'rss_window_mib', 'tick_p99_us', 'clients']
    """
    rows, status, i = [], r["status"], 0
    t0, t1 = r["window"]
    for t, rss in r["rss_series"]:
        line = None
        while i < len(status) and status[i][0] <= t:
            line = status[i][1]
            i += 1
        # + 0.0 turns a rounded -0.0 into 0.0 (no "-0" label on the chart).
        rows.append({"t_s": round(t - r["started"], 2) + 0.0, "rss_mib": round(rss / MIB, 3),
                     "rss_window_mib": round(rss / MIB, 3) if t0 <= t <= t1 else "",
                     "tick_p99_us": line["tick_p99"] if line else "",
                     "clients": line["clients"] if line else ""})
    return rows


def chart(csv_path, png_path):
    result = subprocess.run([CHART, csv_path, "--output", png_path, "--x", "t_s",
                             "--columns", "rss_mib,rss_window_mib,tick_p99_us,clients", "--zoom", "rss_window_mib"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"tickcast-chart failed: {result.stderr.strip()}")
    return png_path


def show_path(path):
    """`path` relative to the checkout when inside it, else absolute."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def write_csv(path, rows):
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def bots_cpu_figures(report):
    """The bots process's own figures from its report (`bots_process`), or Nones.

    >>> bots_cpu_figures({"bots_process": {"cores": 0.5, "cpu_us_per_client_tick": 12.5}})
    (0.5, 12.5)
    >>> bots_cpu_figures({})
    (None, None)
    """
    process = report.get("bots_process") or {}
    return process.get("cores"), process.get("cpu_us_per_client_tick")


def mode_bots(preset, work, out, drivers, bots_cpu, baseline_bots=()):
    """One server per count; against it, one bots run per driver, one after the other, so
    every driver meets the same server process. With `bots_cpu` the bots run on that CPU
    alone (`taskset`, one thread) and the server on the others."""
    print("## Bots: CPU of the load generator per client-tick, by driver\n")
    pinned = bots_cpu is not None
    others = ",".join(str(c) for c in range(os.cpu_count() or 1) if c != bots_cpu) if pinned else None
    print(f"`target/release/tickcast-server` on its defaults (200 NPCs, 30 Hz), bots `walk=100`, drivers "
          f"{', '.join(drivers)} in turn against the same server. "
          + (f"Bots pinned to CPU {bots_cpu} with one thread (`taskset -c {bots_cpu}`), the server to CPU {others}. "
             if pinned else "Bots on their default two threads, unpinned. ")
          + "Bots CPU: the whole bots process over its run (user + system, /proc/self/stat) "
          "per connected client-tick; server CPU: over the window.\n")
    print("| clients | driver | connected | delivery | bots cores | bots CPU µs per client-tick | server CPU µs per client-tick | server cores |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    for clients in preset["bots_counts"]:
        timing = timing_for(preset, clients)
        ramp, settle, window = timing["ramp"], timing["settle"], timing["window"]
        duration = ramp + settle + window + 1
        run_work = os.path.join(work, f"bots-{clients}")
        os.makedirs(run_work, exist_ok=True)
        server = Server(SERVER, run_work, clients, 200,
                        prefix=("taskset", "-c", others) if pinned else ())
        try:
            server.wait_ready()
            runs = [(f"proto, baseline {show_path(path)}", "proto", path) for path in baseline_bots] \
                + [(driver, driver, BOTS) for driver in drivers]
            for n, (label, driver, binary) in enumerate(runs):
                time.sleep(timing["idle"])
                extra = ["--driver", driver] + (["--threads", "1"] if pinned else [])
                bots = Bots(run_work, server, clients, duration, ramp, "walk=100",
                            prefix=("taskset", "-c", str(bots_cpu)) if pinned else (),
                            extra=extra, log=f"bots-{n}-{driver}.log", binary=binary)
                try:
                    time.sleep(ramp + settle)
                    w0 = server.snapshot()
                    time.sleep(window)
                    w1 = server.snapshot()
                    report = bots.report(timeout=ramp + duration + 60)
                finally:
                    bots.stop()
                lines = server.status_between(w0["t"], w1["t"])
                in_window = [s for t, s in lines if t > w0["t"]]
                seconds = w1["t"] - w0["t"]
                peers = statistics.fmean(s["clients"] for s in in_window) if in_window else None
                cpu = w1["cpu"] - w0["cpu"]
                server_us = cpu * 1e6 / (peers * seconds * TICK_RATE) if peers else None
                cores, bots_us = bots_cpu_figures(report)
                print(f"| {clients} | {label} | {report['connected']} | {fmt(delivery(report), '.4f')} | "
                      f"{fmt(cores, '.2f')} | {fmt(bots_us, '.1f')} | {fmt(server_us, '.1f')} | "
                      f"{cpu / seconds:.2f} |", flush=True)
                rows.append({"clients": clients, "driver": label, "connected": report["connected"],
                             "delivery": delivery(report), "bots_cores": cores,
                             "bots_us_per_client_tick": bots_us, "server_us_per_client_tick": server_us,
                             "server_cores": cpu / seconds, "bots_pinned_cpu": bots_cpu})
                if server.proc.poll() is not None:
                    raise BenchError(f"tickcast-server ended during the run in {run_work}\n{server.log_tail(5)}")
        finally:
            server.stop()
    write_csv(os.path.join(out, "bots.csv"), rows)
    by = {(r["clients"], r["driver"]): r["bots_us_per_client_tick"] for r in rows}
    for clients in preset["bots_counts"]:
        old, new = by.get((clients, "quinn-endpoint")), by.get((clients, "proto"))
        if old and new:
            print(f"\nAt {clients} clients: proto / quinn-endpoint bots CPU per client-tick = {new / old:.2f}.")
        for r in rows:
            base = r["bots_us_per_client_tick"]
            if r["clients"] == clients and r["driver"].startswith("proto, baseline") and base and new:
                print(f"\nAt {clients} clients: this build's proto / {r['driver']} bots CPU per client-tick "
                      f"= {new / base:.2f}.")
    print()


# --- building and the header ------------------------------------------------------------


def cargo(*args):
    command = ["cargo", *args]
    if shutil.which("flock"):
        command = ["flock", CARGO_LOCK, *command]
    print(f"bench: {shlex.join(command)}", file=sys.stderr, flush=True)
    result = subprocess.run(command, cwd=ROOT, stdout=sys.stderr)
    return result.returncode == 0


def build(modes):
    if not cargo("build", "--release", "-p", "tickcast-server", "-p", "tickcast-bots", "--bins"):
        raise BenchError("building the release server and bots failed (output above)")
    if "soak" in modes and not cargo("build", "--release", "-p", "tickcast-tools", "--bin", "tickcast-chart"):
        raise BenchError("building tickcast-chart failed (output above)")
    if "ab" in modes:
        for name, (label, features, target) in VARIANTS.items():
            if not cargo("build", "--release", "-p", "tickcast-server", "--bin", "tickcast-server",
                         "--features", features, "--target-dir", os.path.join("target", target)):
                hint = (" — the per-client-encode feature comes with the fan-out rewrite "
                        "(tickcast-server forwards it to tickcast-net/per-client-encode)") if name == "B" else ""
                raise BenchError(f"building the {name} server ({label}: --features {features}) failed{hint}")


def check_binaries(modes, ab_names=None):
    needed = [SERVER, BOTS] + ([CHART] if "soak" in modes else []) \
        + ([variant_binary(n) for n in ("A", "B") if ab_names is None or n in ab_names] if "ab" in modes else [])
    missing = [p for p in needed if not os.path.exists(p)]
    if missing:
        raise BenchError("missing (run without --no-build): " + ", ".join(missing))


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
        with open("/proc/meminfo") as f:
            mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        mem_kib = 0
    return f"{os.cpu_count()} cores (nproc), {model}, {mem_kib / MIB:.1f} GiB, {platform.system()} {platform.release()}"


def commit():
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" (with uncommitted changes)" if dirty else "")


def header(argv, out):
    print("# tickcast benchmark\n")
    print(f"* date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"* machine: {machine()}; load average {os.getloadavg()[0]:.2f} at the start "
          "(other work on the machine shows up in every figure)")
    print(f"* commit: {commit()}")
    print(f"* command: `{shlex.join(['python3', 'scripts/bench.py', *argv])}`")
    print(f"* output: `{show_path(out)}` (CSV, chart, each run's server and bot logs)\n", flush=True)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modes", nargs="*", metavar="MODE",
                        help="all, ab, capacity, soak, scrape, bots (default: all = ab, capacity, soak; "
                             "`--soak D` alone: soak)")
    parser.add_argument("--quick", action="store_true", help="small counts, short windows: under 2 minutes")
    parser.add_argument("--soak", type=parse_duration, metavar="DURATION",
                        help="soak length, e.g. 10m (default 10m; 45s with --quick)")
    parser.add_argument("--counts", type=lambda t: [int(n) for n in t.split(",")], metavar="N,N,…",
                        help="client counts for ab and capacity instead of the preset's")
    parser.add_argument("--mix", metavar="MIX",
                        help="capacity: the bots' --mix instead of walk=100 (e.g. walk=90,stall=10 for RSS "
                             "per client with stalled clients)")
    parser.add_argument("--soak-clients", type=int, metavar="N", help="soak: clients instead of the preset's")
    parser.add_argument("--out", help="directory for CSV, PNG and logs (default target/bench-out/<UTC time>)")
    parser.add_argument("--scrape-every", type=parse_duration, default=1.0, metavar="DURATION",
                        help="scrape mode: how often the scraper polls /metrics (default 1s)")
    parser.add_argument("--segments", type=int, metavar="N",
                        help="scrape mode: segments of 10 s, half with the scraper (default 12)")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    parser.add_argument("--baseline-server", metavar="PATH", action="append", default=[],
                        help="ab: also run this count-allocs server binary (an earlier commit or another "
                             "build) as A0; repeat for A1, A2, …. A tickcast-bots beside it loads it "
                             "instead of the shipped bots (scripts/ab-baseline.sh builds one)")
    parser.add_argument("--ab-modes", metavar="M,M",
                        help="ab: only these rows, e.g. A0,A1,A (default: every baseline, A and B)")
    parser.add_argument("--baseline-bots", metavar="PATH", action="append", default=[],
                        help="bots: also run this tickcast-bots binary (proto driver) first, against the same "
                             "server; repeatable")
    parser.add_argument("--syscalls", action="store_true",
                        help="count the server's syscalls over each window with perf stat (ab, capacity)")
    parser.add_argument("--bots-drivers", default="quinn-endpoint,proto", metavar="D,D",
                        help="bots mode: the bot drivers to compare, in order (default quinn-endpoint,proto)")
    parser.add_argument("--bots-cpu", type=int, metavar="CPU",
                        help="bots mode: pin the bots to this CPU with one thread, the server to the others")
    parser.add_argument("--self-test", action="store_true", help="run the doctests and exit")
    args = parser.parse_args(argv)
    global COUNT_SYSCALLS
    COUNT_SYSCALLS = args.syscalls
    if args.self_test:
        import doctest
        failures, tests = doctest.testmod()
        print(f"bench.py self-test: {tests - failures} passed, {failures} failed")
        return 1 if failures else 0
    unknown = set(args.modes) - {"all", "ab", "capacity", "soak", "scrape", "bots"}
    if unknown:
        parser.error(f"unknown mode {', '.join(sorted(unknown))} (all, ab, capacity, soak, scrape, bots)")
    drivers = [d for d in args.bots_drivers.split(",") if d]
    if not drivers or set(drivers) - {"proto", "quinn-endpoint"}:
        parser.error("--bots-drivers takes proto and/or quinn-endpoint")
    if args.bots_cpu is not None and not shutil.which("taskset"):
        parser.error("--bots-cpu needs taskset")
    if args.segments is not None and (args.segments < 2 or args.segments % 2):
        parser.error("--segments must be even and at least 2")
    if args.scrape_every <= 0:
        parser.error("--scrape-every must be more than zero")
    modes = set(args.modes) - {"all"}
    if not modes:
        modes = {"soak"} if args.soak and not args.modes else {"ab", "capacity", "soak"}
    preset = QUICK if args.quick else FULL
    if args.counts:
        if min(args.counts) < 1:
            parser.error("--counts must be positive")
        preset = dict(preset, ab_counts=args.counts, capacity_counts=args.counts,
                      scrape_counts=args.counts, bots_counts=args.counts)
    if args.segments:
        preset = dict(preset, scrape_segments=args.segments)
    if args.mix:
        preset = dict(preset, mix=args.mix)
    if args.soak_clients:
        preset = dict(preset, soak_clients=args.soak_clients)
    duration = args.soak or preset["soak_duration"]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = os.path.abspath(args.out or os.path.join(ROOT, "target", "bench-out", stamp))
    os.makedirs(out, exist_ok=True)
    work = os.path.join(out, "runs")
    try:
        if not args.no_build:
            build(modes)
        check_binaries(modes, args.ab_modes and args.ab_modes.split(","))
        header(argv, out)
        if "ab" in modes:
            mode_ab(preset, work, out, [os.path.abspath(p) for p in args.baseline_server],
                    args.ab_modes and args.ab_modes.split(","))
        if "capacity" in modes:
            mode_capacity(preset, work, out)
        if "soak" in modes:
            mode_soak(preset, work, out, duration)
        if "scrape" in modes:
            mode_scrape(preset, work, out, args.scrape_every)
        if "bots" in modes:
            mode_bots(preset, work, out, drivers, args.bots_cpu,
                      [os.path.abspath(p) for p in args.baseline_bots])
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted (every process it started was stopped)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
