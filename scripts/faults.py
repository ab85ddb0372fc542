#!/usr/bin/env python3
"""tickcast fault drills (issue #14, "Real networks"): the release server and its tools as
separate processes on 127.0.0.1, each drill bounded in count and time; markdown on stdout.

  churn  100 bots churning every second for 22 s (over 2,000 connect/leave cycles),
         every other session ending without a close (`--churn-leave alternate`: the
         bot's socket falls silent and the server has to time it out), after a 12 s
         warm-up of the same churn. The server's RSS once everything has left is
         compared with its RSS after the warm-up (gate: within 5 %); clients,
         handshakes and remembered nonces must return to 0 (tokens live 20 s).
  flood  200 walking bots for 40 s; from 10 s on, tickcast-flood sends 100,000 QUIC
         Initials at 5,000/s from 512 source ports plus 100 half-open connections
         (QUIC handshake done, no Hello). Run twice: with the server's stateless Retry
         (its default, from 16 handshakes in flight) and with `--retry-from-handshakes
         never`. Gate (with Retry): the bots' delivery >= 0.99.
  crash  20 servers recording (`--record`) under 30 bots, each SIGKILLed at a seeded
         random moment 0.5-8 s after the bots are in; each file must read up to its
         torn tail (`tickcast-replay info`), `tickcast-replay repair` must make it
         whole, and `tickcast-replay verify` must pass on what remains. SIGKILL alone
         cannot tear a frame (each tick is one write(2), which the kernel finishes), so
         each file is also cut at a seeded point in its last 20,000 bytes, as a power
         loss could leave it, and the copy goes through the same checks.

    python3 scripts/faults.py churn
    python3 scripts/faults.py flood
    python3 scripts/faults.py crash --kills 20 --seed 14
    python3 scripts/faults.py --quick          # every drill, small: a few minutes

Builds what it runs (release, each cargo call under `flock /tmp/tickcast-cargo.lock`);
`--no-build` uses target/release as it is. Every process it starts is stopped before it
moves on. Exit codes: 0 every gate passed, 1 a gate failed, 2 could not run.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the benchmark driver's process helpers)

ROOT = bench.ROOT
RELEASE = os.path.join(ROOT, "target", "release")
SERVER = os.path.join(RELEASE, "tickcast-server")
BOTS = os.path.join(RELEASE, "tickcast-bots")
FLOOD = os.path.join(RELEASE, "tickcast-flood")
REPLAY = os.path.join(RELEASE, "tickcast-replay")
MIB = 1024 * 1024

FAULTS = re.compile(
    r"clients=(?P<clients>\d+) .*?handshaking=(?P<handshaking>\d+) nonces=(?P<nonces>\d+) "
    r"timed_out=(?P<timed_out>\d+) retries=(?P<retries>\d+)"
)


class DrillError(Exception):
    """A drill could not run: the message says why."""


def parse_faults(line):
    """The fault counters of one status line, or None.

    >>> parse_faults("INFO tickcast::status: clients=3 tick=90 entities=203 tick_p99_us=250 "
    ...     "fanout_mean_us=40 fanout_max_us=90 out_bytes_per_s=0 rss_bytes=1 "
    ...     "skipped_peer_ticks=0 late_ticks=0 handshaking=2 nonces=17 timed_out=5 retries=300")
    {'clients': 3, 'handshaking': 2, 'nonces': 17, 'timed_out': 5, 'retries': 300}
    >>> parse_faults("INFO listening") is None
    True
    """
    m = FAULTS.search(bench.ANSI.sub("", line))
    return {k: int(v) for k, v in m.groupdict().items()} if m else None


class Server:
    """A release tickcast-server in its own work dir: status lines kept as they arrive,
    RSS and the net thread's CPU sampled every half second."""

    def __init__(self, work, extra=(), npcs=200):
        self.addr = f"127.0.0.1:{bench.free_udp_port()}"
        self.work = work
        self.faults = []  # (monotonic time, parse_faults dict)
        self.samples = []  # (monotonic time, RSS bytes, net thread CPU s)
        self.lines = []
        self.done = threading.Event()
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        self.log = open(os.path.join(work, "server.log"), "w")
        self.proc = subprocess.Popen(
            [SERVER, "--listen", self.addr, "--npcs", str(npcs), *extra],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.log.write(line)
            self.lines.append(line)
            faults = parse_faults(line)
            if faults:
                self.faults.append((time.monotonic(), faults))

    def _sample(self):
        while not self.done.wait(0.5):
            try:
                rss = bench.memory(self.proc.pid)[0]
                net = bench.thread_cpu(self.proc.pid, bench.NET_THREAD)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples.append((time.monotonic(), rss, net))

    def wait_ready(self, timeout=20):
        cert = os.path.join(self.work, ".tickcast", "cert.der")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DrillError(f"tickcast-server exited ({self.proc.returncode}):\n"
                                 + "".join(self.lines[-15:]))
            if os.path.exists(cert) and any("listening on" in line for line in self.lines):
                return
            time.sleep(0.05)
        raise DrillError("tickcast-server did not start")

    def latest(self):
        return self.faults[-1][1] if self.faults else None

    def rss(self):
        return bench.memory(self.proc.pid)[0]

    def wait_settled(self, timeout, nonces=True):
        """Waits until a status line says no client, no handshake (and no nonce);
        returns (seconds waited, that status) or raises."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            s = [f for t, f in self.faults if t > start]
            if s and s[-1]["clients"] == 0 and s[-1]["handshaking"] == 0 \
                    and (not nonces or s[-1]["nonces"] == 0):
                return time.monotonic() - start, s[-1]
            time.sleep(0.25)
        raise DrillError(f"the server did not settle in {timeout} s: {self.latest()}")

    def steady_rss(self, seconds=3.0):
        """The median of the RSS samples over the next `seconds`."""
        t0 = time.monotonic()
        time.sleep(seconds)
        values = [rss for t, rss, _ in self.samples if t >= t0]
        return int(statistics.median(values)) if values else self.rss()

    def stop(self, kill=False):
        self.done.set()
        if kill:
            self.proc.kill()
            self.proc.wait()
        else:
            bench.stop_process(self.proc)
        self.log.close()


def bots(server, clients, duration, extra=(), gate=None, none_is_a_result=False):
    """Runs tickcast-bots to the end; returns its JSON report. With `none_is_a_result`,
    no client getting in (exit 2) is a finding, reported as connected 0 and the bots'
    reason."""
    command = [BOTS, "--server", server.addr, "--data-dir", os.path.join(server.work, ".tickcast"),
               "--clients", str(clients), "--duration", duration, "--json", "--quiet", *extra]
    if gate is not None:
        command += ["--min-delivery", str(gate)]
    out = subprocess.run(command, cwd=server.work, capture_output=True, text=True, timeout=600)
    if out.returncode == 2 and none_is_a_result and "no client connected" in out.stderr:
        reason = re.search(r"most common error: (.*?)(?: × (\d+))?\)?\s*$", out.stderr.strip())
        key, count = (reason.group(1), int(reason.group(2) or 1)) if reason else (out.stderr.strip()[-200:], 1)
        return {"clients": clients, "connected": 0, "errors": {key: count}}
    if out.returncode not in (0, 1):
        raise DrillError(f"tickcast-bots exited {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def mib(n):
    return f"{n / MIB:.1f} MiB"


# --- churn -------------------------------------------------------------------------------


def drill_churn(work, quick):
    clients, every, warm_s, run_s = (20, "1s", 6, 6) if quick else (100, "1s", 12, 22)
    churn = ["--mix", "churn=100", "--churn-every", every, "--churn-leave", "alternate",
             "--ramp", "2s", "--token-ttl", "20s"]
    server = Server(work)
    try:
        server.wait_ready()
        warm = bots(server, clients, f"{warm_s}s", churn)
        # Vanished peers time out after 10 s; tokens expire 20 s after their mint.
        waited, _ = server.wait_settled(60)
        baseline = server.steady_rss()
        before_timed_out = server.latest()["timed_out"]
        t0 = time.monotonic()
        report = bots(server, clients, f"{run_s}s", churn)
        peak = max((rss for t, rss, _ in server.samples if t >= t0), default=0)
        settle_s, settled = server.wait_settled(60)
        final = server.steady_rss()
    finally:
        server.stop()
    churn_group = report["groups"]["churn"]
    sessions = churn_group["connected"] + churn_group["reconnects"]
    growth = (final - baseline) / baseline
    rows = [
        ("warm-up sessions", warm["groups"]["churn"]["connected"] + warm["groups"]["churn"]["reconnects"]),
        ("sessions (connect/leave cycles)", sessions),
        ("of them vanished (timed out by the server)", settled["timed_out"] - before_timed_out),
        ("connect errors", sum(v for k, v in report["errors"].items() if k.startswith("connect:"))),
        ("RSS after warm-up (baseline)", mib(baseline)),
        ("RSS peak during the run", mib(peak)),
        ("RSS after everyone left", f"{mib(final)} ({growth * 100:+.1f} %)"),
        ("clients / handshaking / nonces after", f"{settled['clients']} / {settled['handshaking']} / {settled['nonces']}"),
        ("seconds until settled", f"{settle_s:.1f}"),
    ]
    print("\n### churn\n")
    print("| | |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    failures = []
    if abs(growth) > 0.05:
        failures.append(f"RSS {growth * 100:+.1f} % from its post-warm-up baseline (gate: 5 %)")
    if not quick and sessions < 2000:
        failures.append(f"only {sessions} sessions")
    return failures


# --- flood -------------------------------------------------------------------------------


def flood_run(work, retry, quick):
    players, play_s, start_s = (50, 20, 5) if quick else (200, 40, 10)
    initials, rate = (20_000, 5_000) if quick else (100_000, 5_000)
    half_open = 20 if quick else 100
    extra = [] if retry else ["--retry-from-handshakes", "never"]
    server = Server(work, extra)
    result = {}
    try:
        server.wait_ready()
        report_box = {}
        def play():
            report_box["report"] = bots(server, players, f"{play_s}s", ["--ramp", "2s"], gate=0.99)
        player_thread = threading.Thread(target=play)
        player_thread.start()
        time.sleep(start_s)
        before = server.samples[-1] if server.samples else (time.monotonic(), server.rss(), 0.0)
        t0 = time.monotonic()
        flood = subprocess.Popen(
            [FLOOD, "--server", server.addr, "--data-dir", os.path.join(work, ".tickcast"),
             "--initials", str(initials), "--rate", str(rate), "--source-ports", "512",
             "--half-open", str(half_open), "--hold", "15s"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # New players arriving in the middle of the flood: do they get in?
        time.sleep(2)
        joiners = bots(server, 20, "3s", ["--ramp", "1s"], none_is_a_result=True)
        try:
            out, err = flood.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            bench.stop_process(flood)
            raise DrillError("tickcast-flood did not finish")
        t1 = time.monotonic()
        if flood.returncode != 0:
            raise DrillError(f"tickcast-flood exited {flood.returncode}: {err[-2000:]}")
        player_thread.join(timeout=600)
        during = [s for s in server.samples if t0 <= s[0] <= t1]
        faults = [f for t, f in server.faults if t0 <= t <= t1 + 2]
        net_cpu = (during[-1][2] - during[0][2]) / (during[-1][0] - during[0][0]) if len(during) > 1 else 0
        if "report" not in report_box:
            raise DrillError("the players' bots gave no report")
        report = report_box["report"]
        result = {
            "retry": retry,
            "flood": json.loads(out),
            "joiners": f"{joiners['connected']}/{joiners['clients']}",
            "joiner_errors": ", ".join(f"{k}: {v}" for k, v in sorted(joiners["errors"].items())) or "none",
            "flood_s": t1 - t0,
            "delivery": report["gates"]["delivery_ratio"],
            "delivery_min": report["delivery_min"],
            "connected": f"{report['connected']}/{report['clients']}",
            "rss_before": before[1],
            "rss_peak": max((s[1] for s in during), default=0),
            "rss_after": server.steady_rss(),
            "handshaking_max": max((f["handshaking"] for f in faults), default=0),
            "retries": server.latest()["retries"],
            "net_cpu": net_cpu,
        }
    finally:
        server.stop()
    return result


def drill_flood(work, quick):
    runs = []
    for retry in (True, False):
        sub = os.path.join(work, "retry" if retry else "no-retry")
        os.makedirs(sub)
        runs.append(flood_run(sub, retry, quick))
    print("\n### flood\n")
    print("| server | Initials sent (flood tool ran) | half-open established | players connected "
          "| delivery (worst player) | new players joining mid-flood | handshaking, max of 1 s samples "
          "| Retries sent | net thread CPU during the flood | RSS before → peak → after |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for r in runs:
        f = r["flood"]
        print(f"| {'Retry from 16 handshakes (default)' if r['retry'] else '--retry-from-handshakes never'} "
              f"| {f['initials_sent']} ({r['flood_s']:.1f} s) | {f['half_open_established']}/{f['half_open']} "
              f"| {r['connected']} | {r['delivery']:.4f} ({r['delivery_min']:.4f}) "
              f"| {r['joiners']} (errors: {r['joiner_errors']}) | {r['handshaking_max']} "
              f"| {r['retries']} | {r['net_cpu']:.2f} cores "
              f"| {mib(r['rss_before'])} → {mib(r['rss_peak'])} → {mib(r['rss_after'])} |")
    failures = []
    if runs[0]["delivery"] < 0.99:
        failures.append(f"delivery {runs[0]['delivery']:.4f} through the flood with Retry (gate 0.99)")
    return failures


# --- crash -------------------------------------------------------------------------------


def replay(*args):
    return subprocess.run([REPLAY, *args], capture_output=True, text=True, timeout=300)


def check_recording(path):
    """info, repair, info, verify on one file: what they said and whether it held."""
    info = replay("info", path)
    ticks = re.search(r"ticks\s+(\d+)", info.stdout)
    torn = "torn" in info.stdout
    repair = replay("repair", path)
    removed = re.search(r"removed (\d+) torn bytes", repair.stdout)
    after = replay("info", path)
    verify = replay("verify", path)
    ok = (info.returncode == 0 and repair.returncode == 0 and after.returncode == 0
          and "torn" not in after.stdout and verify.returncode == 0 and ticks is not None
          and (removed is not None) == torn)
    return {
        "ticks": int(ticks.group(1)) if ticks else None, "torn": torn,
        "removed": int(removed.group(1)) if removed else 0,
        "verify": (verify.stdout.strip().splitlines() or [""])[-1], "ok": ok,
        "why": "" if ok else f"info {info.returncode} {info.stderr[-300:]} repair {repair.returncode} "
                             f"{repair.stdout[-200:]}{repair.stderr[-300:]} verify {verify.returncode} "
                             f"{verify.stdout[-300:]}",
    }


def crash_round(work, moment_s, cut_back, players):
    """One server recording under bots, SIGKILLed `moment_s` after they are in. The
    file is checked as it is, and a copy cut `cut_back` bytes before its end (what a
    power loss could leave: SIGKILL alone cannot tear a frame, each tick is one write)."""
    path = os.path.join(work, "match.tcrec")
    server = Server(work, ["--record", path, "--keyframe-interval", "30"], npcs=100)
    player_proc = None
    try:
        server.wait_ready()
        player_proc = subprocess.Popen(
            [BOTS, "--server", server.addr, "--data-dir", os.path.join(work, ".tickcast"),
             "--clients", str(players), "--duration", "30s", "--ramp", "1s",
             "--mix", "walk=80,churn=20", "--churn-every", "2s", "--quiet", "--json"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (server.latest() and server.latest()["clients"] >= players // 2):
            if time.monotonic() > deadline:
                raise DrillError("the bots did not get in")
            time.sleep(0.1)
        time.sleep(moment_s)
        server.stop(kill=True)  # SIGKILL
    finally:
        if server.proc.poll() is None:
            server.stop(kill=True)
        if player_proc is not None:
            player_proc.kill()
            player_proc.wait()
    size = os.path.getsize(path)
    cut_path = os.path.join(work, "cut.tcrec")
    with open(path, "rb") as f:
        whole = f.read()
    cut_at = max(size - cut_back, 0)
    with open(cut_path, "wb") as f:
        f.write(whole[:cut_at])
    return {"moment": moment_s, "size": size, "cut_at": cut_at,
            "killed": check_recording(path), "cut": check_recording(cut_path)}


def drill_crash(work, quick, kills, seed):
    rng = random.Random(seed)
    rows = []
    for k in range(kills):
        sub = os.path.join(work, f"kill-{k + 1:02}")
        os.makedirs(sub)
        moment = round(rng.uniform(0.5, 8.0), 3)
        cut_back = rng.randint(1, 20_000)
        rows.append(crash_round(sub, moment, cut_back, 10 if quick else 30))
        ok = rows[-1]["killed"]["ok"] and rows[-1]["cut"]["ok"]
        print(f"faults: crash {k + 1}/{kills}: {'ok' if ok else 'FAILED'}", file=sys.stderr, flush=True)
    print(f"\n### crash (seed {seed})\n")
    print("| kill | moment after the bots were in | file | ticks read | its tail | repair removed "
          "| verify | cut at (a power loss) | ticks read | its tail | repair removed | verify |")
    print("|---:|---:|---:|---:|---|---:|---|---:|---:|---|---:|---|")

    def cells(c):
        verdict = c["verify"] if c["ok"] else "FAILED: " + c["why"]
        return f"{c['ticks']} | {'torn' if c['torn'] else 'whole'} | {c['removed']} B | {verdict}"
    failures = []
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['moment']:.3f} s | {r['size']} B | {cells(r['killed'])} | {r['cut_at']} B "
              f"| {cells(r['cut'])} |")
        failures += [f"kill {i} ({what}): {r[what]['why']}" for what in ("killed", "cut") if not r[what]["ok"]]
    return failures


# --- main --------------------------------------------------------------------------------


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drills", nargs="*", metavar="churn|flood|crash")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args(argv)
    if args.self_test:
        import doctest
        failed, tried = doctest.testmod()
        print(f"faults.py self-test: {tried - failed} passed, {failed} failed")
        return 1 if failed else 0
    drills = args.drills or ["churn", "flood", "crash"]
    unknown = [d for d in drills if d not in ("churn", "flood", "crash")]
    if unknown:
        print(f"faults: unknown drill {unknown[0]} (churn, flood or crash)", file=sys.stderr)
        return 2
    if not args.no_build and not bench.cargo(
            "build", "--release", "-p", "tickcast-server", "-p", "tickcast-bots",
            "-p", "tickcast-tools", "--bins"):
        print("faults: the release build failed", file=sys.stderr)
        return 2
    missing = [p for p in (SERVER, BOTS, FLOOD, REPLAY) if not os.path.exists(p)]
    if missing:
        print("faults: missing " + ", ".join(missing), file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="tickcast-faults-")
    print(f"## tickcast fault drills: {' '.join(drills)}{' (quick)' if args.quick else ''}\n")
    print(f"`python3 scripts/faults.py {' '.join(argv)}` at {bench.commit()}, {bench.machine()}")
    failures = []
    try:
        for drill in drills:
            sub = os.path.join(work, drill)
            os.makedirs(sub)
            if drill == "churn":
                failures += drill_churn(sub, args.quick)
            elif drill == "flood":
                failures += drill_flood(sub, args.quick)
            else:
                failures += drill_crash(sub, args.quick, 3 if args.quick and args.kills == 20 else args.kills,
                                        args.seed)
    except (DrillError, subprocess.TimeoutExpired) as e:
        print(f"faults: could not run: {e}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"faults: work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for failure in failures:
        print(f"faults: gate failed: {failure}")
    print(f"faults: {'FAILED' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
