#!/usr/bin/env python3
"""Server CPU per connection-tick and fan-out spread at several client counts.

Runs the release tickcast-server and tickcast-bots as separate processes on 127.0.0.1,
for each client count: connects the bots (ramped), waits for them to settle, samples the
server's CPU time (utime + stime from /proc/PID/stat) over a fixed window, and reads the
fan-out spread from the server's status lines in that window. Prints a markdown table.

    cargo build --release -p tickcast-sim -p tickcast-clients --bins
    python3 scripts/net_cost.py 100 500 1000

Bounded: each count runs for ramp + settle + window + a few seconds, then both processes
are stopped. Loopback only.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target", "release", "tickcast-server")
BOTS = os.path.join(ROOT, "target", "release", "tickcast-bots")
RAMP_S, SETTLE_S, WINDOW_S = 5, 5, 10
TICK_RATE = 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATUS = re.compile(r"clients=(\d+) .*fanout=(\d+)/(\d+)us")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def measure(clients, port):
    work = tempfile.mkdtemp(prefix="tickcast-netcost-")
    log = open(os.path.join(work, "server.log"), "w+")
    server = subprocess.Popen(
        [SERVER, "--listen", f"127.0.0.1:{port}", "--max-clients", str(max(clients + 10, 100))],
        cwd=work, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(1.5)
        duration = RAMP_S + SETTLE_S + WINDOW_S + 3
        bots = subprocess.Popen(
            [BOTS, "--server", f"127.0.0.1:{port}", "--clients", str(clients),
             "--duration", f"{duration}s", "--ramp", f"{RAMP_S}s", "--json"],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        time.sleep(RAMP_S + SETTLE_S)
        log.flush()
        lines_before = len(open(log.name).read().splitlines())
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(WINDOW_S)
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        status = open(log.name).read().splitlines()[lines_before:]
        out, _ = bots.communicate(timeout=duration + 60)
        report = json.loads(out)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    samples = [tuple(map(int, m.groups())) for m in map(STATUS.search, status) if m]
    connected = [s[0] for s in samples]
    ticks = (t1 - t0) * TICK_RATE
    peers = sum(connected) / len(connected) if connected else clients
    return {
        "clients": clients,
        "connected": report["connected"],
        "us_per_connection_tick": (cpu1 - cpu0) * 1e6 / (peers * ticks),
        "server_cores": (cpu1 - cpu0) / (t1 - t0),
        "spread_mean_ms": sum(s[1] for s in samples) / len(samples) / 1000 if samples else float("nan"),
        "spread_max_ms": max(s[2] for s in samples) / 1000 if samples else float("nan"),
        "delivery": report["delivery_ratio"],
    }


def main():
    counts = [int(a) for a in sys.argv[1:]] or [100, 500, 1000]
    for path in (SERVER, BOTS):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release -p tickcast-sim -p tickcast-clients --bins")
    print("| clients | connected | server CPU µs per connection-tick | server cores | fan-out spread mean / max | delivery |")
    print("|---:|---:|---:|---:|---:|---:|")
    for i, clients in enumerate(counts):
        r = measure(clients, 4700 + i)
        print(f"| {r['clients']} | {r['connected']} | {r['us_per_connection_tick']:.1f} | "
              f"{r['server_cores']:.2f} | {r['spread_mean_ms']:.2f} / {r['spread_max_ms']:.2f} ms | "
              f"{r['delivery']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
