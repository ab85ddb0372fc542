#!/usr/bin/env python3
"""A fleet on one machine (issue #13): N release tickcast-servers on free 127.0.0.1 ports,
each with its own fake Agones sidecar (tickcast-fake-agones), a bot swarm spread across
them through an allocation step, and a table of per-server clients, delivery, CPU and RSS.

    python3 scripts/fleet.py 4 --clients 250     # 4 servers x 250 bots
    python3 scripts/fleet.py 1 --clients 1000    # the same load on one server

What it does, in order:
  1. builds the release binaries (under `flock /tmp/tickcast-cargo.lock`; --no-build skips);
  2. writes one connect-token key (32 random bytes) that every server reads with
     --token-key-file, as a Kubernetes Secret would give them all;
  3. starts N fake sidecars and N servers (AGONES_SDK_HTTP_PORT set, so Agones is on) and
     waits until every sidecar has heard Ready;
  4. allocates N times with `tickcast-fake-agones allocate` (the first Ready GameServer
     becomes Allocated; the answer is its address, port and the certificate fingerprint
     it annotated itself with) and starts one tickcast-bots process per allocation,
     pinning that fingerprint and minting tokens with the shared key;
  5. measures every server's CPU (schedstat) and RSS over a window in which all bots are
     connected, reads the bots' reports, then SIGTERMs the servers (each drains, tells its
     sidecar POST /shutdown, exits 0) and checks that it happened.

Connects are spread at 100 per second over the whole fleet, as scripts/bench.py does,
so N × C bots put the same handshake load on the machine as one × N·C.
Exit codes: 0 done, 1 failed.
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (process and /proc helpers shared with the benchmark driver)

ROOT = bench.ROOT
RELEASE = os.path.join(ROOT, "target", "release")
SERVER = os.path.join(RELEASE, "tickcast-server")
BOTS = os.path.join(RELEASE, "tickcast-bots")
FAKE = os.path.join(RELEASE, "tickcast-fake-agones")
TICK_RATE = bench.TICK_RATE


class FleetError(Exception):
    pass


def free_tcp_port():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sidecar_get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def calls_of(path):
    """The fake sidecar's recorded calls (JSON lines)."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class Member:
    """One GameServer: a fake sidecar and a tickcast-server talking to it."""

    def __init__(self, index, work, token_key, max_clients, npcs):
        self.name = f"gs-{index}"
        self.dir = os.path.join(work, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.sidecar_port = free_tcp_port()
        self.game_port = bench.free_udp_port()
        self.calls_path = os.path.join(self.dir, "calls.jsonl")
        self.fake_log = open(os.path.join(self.dir, "fake.log"), "w")
        self.fake = subprocess.Popen(
            [FAKE, "serve", "--listen", f"127.0.0.1:{self.sidecar_port}", "--name", self.name,
             "--game-port", str(self.game_port), "--calls", self.calls_path],
            stdout=self.fake_log, stderr=subprocess.STDOUT,
        )
        self.server_log = open(os.path.join(self.dir, "server.log"), "w")
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1",
                   AGONES_SDK_HTTP_PORT=str(self.sidecar_port))
        self.server = subprocess.Popen(
            [SERVER, "--listen", f"127.0.0.1:{self.game_port}",
             "--data-dir", os.path.join(self.dir, "data"), "--token-key-file", token_key,
             "--max-clients", str(max_clients), "--npcs", str(npcs)],
            stdout=self.server_log, stderr=subprocess.STDOUT, env=env,
        )

    def state(self):
        try:
            status, game_server = sidecar_get(self.sidecar_port, "/gameserver")
        except OSError:
            return None
        return game_server["status"]["state"] if status == 200 else None

    def snapshot(self):
        rss, peak = bench.memory(self.server.pid)
        return {"t": time.monotonic(), "cpu": bench.thread_cpu(self.server.pid), "rss": rss, "peak": peak}

    def stop(self):
        """SIGTERM the server (it drains and tells the sidecar), then stop the sidecar.
        Returns the server's exit code."""
        code = None
        if self.server.poll() is None:
            self.server.terminate()
            try:
                code = self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        else:
            code = self.server.returncode
        bench.stop_process(self.fake)
        self.fake_log.close()
        self.server_log.close()
        return code


def allocate(members):
    out = subprocess.run(
        [FAKE, "allocate"] + [arg for m in members for arg in ("--sidecar", f"127.0.0.1:{m.sidecar_port}")],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode != 0:
        raise FleetError(f"allocation failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def build():
    cmd = ["flock", bench.CARGO_LOCK, "cargo", "build", "--release", "--locked",
           "-p", "tickcast-server", "--bin", "tickcast-server",
           "-p", "tickcast-bots", "--bin", "tickcast-bots",
           "-p", "tickcast-tools", "--bin", "tickcast-fake-agones"]
    print("$ " + " ".join(cmd), file=sys.stderr)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise FleetError("the release build failed")


def run(servers, clients, npcs, settle, window, work):
    os.makedirs(work, exist_ok=True)
    token_key = os.path.join(work, "token.key")
    with open(token_key, "wb") as f:
        f.write(os.urandom(32))
    total = servers * clients
    ramp = max(3.0, total / 100)
    duration = ramp + settle + window + 1
    members, bots = [], []
    try:
        members = [Member(i, work, token_key, clients + 10, npcs) for i in range(servers)]
        deadline = time.monotonic() + 30
        while any(m.state() != "Ready" for m in members):
            for m in members:
                if m.server.poll() is not None:
                    raise FleetError(f"{m.name}'s server exited ({m.server.returncode}); see {m.dir}/server.log")
            if time.monotonic() > deadline:
                raise FleetError("not every server became Ready in 30 s")
            time.sleep(0.1)
        idle = {m.name: m.snapshot() for m in members}
        allocations = []
        for _ in members:
            allocation = allocate(members)
            allocations.append(allocation)
            err = open(os.path.join(work, f"bots-{allocation['name']}.log"), "w")
            proc = subprocess.Popen(
                [BOTS, "--server", f"{allocation['address']}:{allocation['port']}",
                 "--fingerprint", allocation["fingerprint"], "--token-key-file", token_key,
                 "--clients", str(clients), "--duration", f"{duration:g}s", "--ramp", f"{ramp:g}s",
                 "--mix", "walk=100", "--json"],
                stdout=subprocess.PIPE, stderr=err, text=True,
            )
            bots.append((allocation, proc, err))
        time.sleep(ramp + settle)
        w0 = {m.name: m.snapshot() for m in members}
        time.sleep(window)
        w1 = {m.name: m.snapshot() for m in members}
        reports = {}
        for allocation, proc, err in bots:
            out, _ = proc.communicate(timeout=duration + ramp + 60)
            err.close()
            if proc.returncode not in (0, 1):
                raise FleetError(f"tickcast-bots for {allocation['name']} exited {proc.returncode}")
            reports[allocation["name"]] = json.loads(out)
        bots = []
    finally:
        for _, proc, err in bots:
            bench.stop_process(proc)
            err.close()
        codes = {m.name: m.stop() for m in members}
    rows = []
    for m in members:
        seconds = w1[m.name]["t"] - w0[m.name]["t"]
        report = reports[m.name]
        calls = calls_of(m.calls_path)
        routes = [f"{c['method']} {c['path']}" for c in calls]
        rows.append({
            "name": m.name,
            "port": m.game_port,
            "connected": report["connected"],
            "delivery": report["delivery_ratio"] if report.get("snapshots_expected") else None,
            "cpu_s": w1[m.name]["cpu"] - w0[m.name]["cpu"],
            "seconds": seconds,
            "rss": w1[m.name]["rss"],
            "idle_rss": idle[m.name]["rss"],
            "health": routes.count("POST /health"),
            "counter": routes.count("PATCH /v1beta1/counters/players"),
            "ready": routes.count("POST /ready"),
            "shutdown": routes.count("POST /shutdown"),
            "exit": codes[m.name],
        })
    return rows


def table(rows, clients):
    print("| server | clients | delivery | server CPU (cores) | µs CPU per client-tick | RSS | RSS per client | Agones calls (ready/health/counter/shutdown) | exit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ticks = r["seconds"] * TICK_RATE
        per = r["cpu_s"] * 1e6 / (r["connected"] * ticks) if r["connected"] else None
        print(f"| {r['name']} (:{r['port']}) | {r['connected']} | {bench.fmt(r['delivery'], '.4f')} "
              f"| {r['cpu_s'] / r['seconds']:.2f} | {bench.fmt(per, '.2f')} | {r['rss'] / bench.MIB:.1f} MiB "
              f"| {bench.fmt((r['rss'] / r['connected'] / 1024) if r['connected'] else None, '.0f', ' KiB')} "
              f"| {r['ready']}/{r['health']}/{r['counter']}/{r['shutdown']} | {r['exit']} |")
    connected = sum(r["connected"] for r in rows)
    seconds = max(r["seconds"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    rss = sum(r["rss"] for r in rows)
    grown = sum(r["rss"] - r["idle_rss"] for r in rows)
    expected = sum(r["connected"] * (r["delivery"] or 0) for r in rows)
    print()
    print(f"fleet: {len(rows)} servers, {connected} clients connected of {len(rows) * clients}; "
          f"delivery (client-weighted) {expected / connected if connected else 0:.4f}; "
          f"CPU {cpu / seconds:.2f} cores = {cpu * 1e6 / (connected * seconds * TICK_RATE) if connected else 0:.2f} µs per client-tick; "
          f"RSS {rss / bench.MIB:.1f} MiB in all = {rss / connected / 1024 if connected else 0:.0f} KiB per client "
          f"({grown / connected / 1024 if connected else 0:.0f} KiB per client above the idle servers)")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("servers", type=int, help="how many servers (each with its fake sidecar)")
    parser.add_argument("--clients", type=int, default=250, help="bots per server (default 250)")
    parser.add_argument("--npcs", type=int, default=200, help="NPCs per server's world (default 200)")
    parser.add_argument("--settle", type=float, default=5, help="seconds after the ramp before measuring")
    parser.add_argument("--window", type=float, default=10, help="seconds measured")
    parser.add_argument("--out", help="work dir (default target/fleet-out/<servers>x<clients>)")
    parser.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    args = parser.parse_args(argv)
    if args.servers < 1 or args.clients < 1:
        parser.error("servers and clients must be positive")
    work = os.path.abspath(args.out or os.path.join(ROOT, "target", "fleet-out", f"{args.servers}x{args.clients}"))
    try:
        if not args.no_build:
            build()
        for binary in (SERVER, BOTS, FAKE):
            if not os.path.exists(binary):
                raise FleetError(f"{binary} is missing (build it, or drop --no-build)")
        print(f"## fleet: {args.servers} × {args.clients} clients ({args.npcs} NPCs each)\n")
        print(f"`python3 scripts/fleet.py {' '.join(argv)}` on {bench.machine()}\n")
        rows = run(args.servers, args.clients, args.npcs, args.settle, args.window, work)
        table(rows, args.clients)
        failed = [r["name"] for r in rows if r["exit"] != 0 or r["shutdown"] < 1 or r["ready"] != 1]
        if failed:
            raise FleetError(f"did not drain to exit 0 with one Ready and a POST /shutdown: {failed}")
    except (FleetError, bench.BenchError) as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
