#!/usr/bin/env python3
"""The memory budget inside a real memory cgroup (issue #12): a release tickcast-server
started inside a cgroup v1 group with a memory limit, bots outside it ramping up until
the server refuses them; then every bot is frozen (SIGSTOP) so every admitted client
stops acknowledging at once, held, and the server must still be alive.

Modes:

  admission  (default) the server on its defaults (the budget comes from the group's
             limit): clients admitted, refused, peak memory of the group
             (memory.max_usage_in_bytes), failcnt, OOM kills, the server's RSS.
  fits       the same with the budget check switched off (--memory-budget 1TiB,
             --max-clients above --clients): how many clients the group really holds,
             connected and then frozen, before the kernel's OOM killer ends the server.

    sudo python3 scripts/cgroup_admission.py                      # 128 MiB, admission
    sudo python3 scripts/cgroup_admission.py fits --clients 2600
    sudo python3 scripts/cgroup_admission.py --limit 96MiB --clients 1500 --hold 20

Needs root and the cgroup v1 memory controller (this project's CI machine). The test
group is created inside this process's own memory group
(<mount>/<own group>/tickcast-admission-<pid>), the server's log is piped out of the
group (a log file written from inside would be charged to it as page cache), and the
group is removed at the end. The bots run outside the group. Bounded: the bots play
ramp + settle + hold + 10 s, every process is stopped before the script exits (SIGTERM,
then SIGKILL). Not part of `cargo test`. Prints a markdown table; logs stay in --out.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target", "release", "tickcast-server")
BOTS = os.path.join(ROOT, "target", "release", "tickcast-bots")
MIB = 1024 * 1024
# The server's once-a-second status line (docs/OPERATIONS.md): `clients=N tick=…`.
STATUS = re.compile(r"tickcast::status: clients=(\d+) ")
UNITS = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}


class ScriptError(Exception):
    pass


def parse_size(text):
    """'128MiB' -> bytes (KiB/MiB/GiB or a plain number)."""
    match = re.fullmatch(r"(\d+)\s*(B|KiB|MiB|GiB)?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 128MiB)")
    return int(match.group(1)) * UNITS[match.group(2) or "B"]


def memory_cgroup_dir():
    """This process's own cgroup v1 memory group directory, from /proc/self/cgroup and
    /proc/self/mountinfo."""
    group = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                group = path
    if group is None:
        raise ScriptError("no cgroup v1 memory controller in /proc/self/cgroup "
                          "(this script needs cgroup v1 with the memory controller)")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup" and "memory" in fields[sep + 3].split(","):
                root, mount_point = fields[3], fields[4]
                relative = group[len(root.rstrip("/")):] if group.startswith(root) else ""
                return os.path.join(mount_point, relative.lstrip("/"))
    raise ScriptError("the cgroup v1 memory controller is not mounted")


def read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def oom_kills(group):
    """The `oom_kill` count of memory.oom_control (kernels ≥ 4.13), else None."""
    with open(os.path.join(group, "memory.oom_control")) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return None


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc, sig=signal.SIGTERM):
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def vm_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


class ServerInGroup:
    """tickcast-server started inside `group` (the shell writes its own pid into
    cgroup.procs, then execs the server), its log (stderr) piped out and read on a
    thread."""

    def __init__(self, group, work, args):
        self.addr = f"127.0.0.1:{free_udp_port()}"
        self.work = work
        self.lines = []
        self.clients = []  # (monotonic time, clients from the status line)
        script = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        self.proc = subprocess.Popen(
            ["sh", "-c", script, "sh", group, SERVER, "--listen", self.addr, *args],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(os.path.join(self.work, "server.log"), "w") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self.lines.append(line)
                status = STATUS.search(line)
                if status:
                    self.clients.append((time.monotonic(), int(status.group(1))))

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ScriptError("tickcast-server exited:\n" + "".join(self.lines[-15:]))
            if any("listening on" in line for line in self.lines):
                return
            time.sleep(0.05)
        raise ScriptError("tickcast-server did not start:\n" + "".join(self.lines[-15:]))

    def plan_line(self):
        return next((line.strip() for line in self.lines if "memory budget" in line), "")

    def admitted(self):
        return max((n for _, n in self.clients), default=0)


def run(args):
    group_parent = memory_cgroup_dir()
    if not os.access(group_parent, os.W_OK):
        raise ScriptError(f"{group_parent} is not writable: run as root")
    group = os.path.join(group_parent, f"tickcast-admission-{os.getpid()}")
    out = args.out or tempfile.mkdtemp(prefix="tickcast-cgroup-")
    os.makedirs(out, exist_ok=True)
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    server_args = []
    if args.mode == "fits":
        server_args = ["--memory-budget", "1TiB", "--max-clients", str(args.clients + 100)]
    server_args += args.server_arg

    os.mkdir(group)
    server = bots = None
    samples = []  # (phase, seconds, group usage, server RSS)
    try:
        with open(os.path.join(group, "memory.limit_in_bytes"), "w") as f:
            f.write(str(args.limit))
        server = ServerInGroup(group, work, server_args)
        server.wait_ready()
        bot_duration = args.ramp + args.settle + args.hold + 10
        bots_log = open(os.path.join(out, "bots.log"), "w")
        bots = subprocess.Popen(
            [BOTS, "--server", server.addr, "--data-dir", os.path.join(work, ".tickcast"),
             "--clients", str(args.clients), "--ramp", f"{args.ramp}s",
             "--duration", f"{bot_duration}s", "--json", "--quiet"],
            cwd=work, stdout=subprocess.PIPE, stderr=bots_log, text=True,
        )
        started = time.monotonic()

        def sample(phase, seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end and server.proc.poll() is None:
                samples.append((phase, round(time.monotonic() - started, 1),
                                read_int(os.path.join(group, "memory.usage_in_bytes")),
                                vm_rss(server.proc.pid)))
                time.sleep(0.5)

        sample("ramp", args.ramp + args.settle)
        died_in = "ramp" if server.proc.poll() is not None else None
        admitted_before_stop = server.admitted()
        ramp_samples = [row for row in samples if row[0] == "ramp"]
        usage_before_stop = ramp_samples[-1][2] if ramp_samples else None
        rss_before_stop = ramp_samples[-1][3] if ramp_samples else None
        if died_in is None:
            bots.send_signal(signal.SIGSTOP)
            sample("frozen", args.hold)
            if server.proc.poll() is not None:
                died_in = "freeze"
        alive = died_in is None
        bots.send_signal(signal.SIGCONT)
        try:
            report_text, _ = bots.communicate(timeout=bot_duration + 60)
            report = json.loads(report_text) if report_text.strip() else {}
        except subprocess.TimeoutExpired:
            stop(bots, signal.SIGKILL)
            report = {}
        bots_log.close()
        result = {
            "mode": args.mode,
            "limit": args.limit,
            "clients_requested": args.clients,
            "plan": server.plan_line(),
            "admitted": admitted_before_stop,
            "connected_report": report.get("connected"),
            "errors": report.get("errors", {}),
            "usage_before_freeze": usage_before_stop,
            "rss_before_freeze": rss_before_stop,
            "peak_usage": read_int(os.path.join(group, "memory.max_usage_in_bytes")),
            "peak_rss_frozen": max((s[3] or 0 for s in samples if s[0] == "frozen"), default=None),
            "failcnt": read_int(os.path.join(group, "memory.failcnt")),
            "oom_kills": oom_kills(group),
            "server_alive_after_hold": alive,
            "server_died_in": died_in,
            "server_exit": server.proc.poll(),
        }
    finally:
        if bots is not None:
            stop(bots, signal.SIGKILL)
        if server is not None:
            stop(server.proc)
            server.reader.join(timeout=10)
        for _ in range(50):
            try:
                os.rmdir(group)
                break
            except OSError:
                time.sleep(0.1)
        else:
            print(f"warning: could not remove {group}", file=sys.stderr)
    with open(os.path.join(out, "samples.csv"), "w") as f:
        f.write("phase,seconds,group_usage_bytes,server_rss_bytes\n")
        for row in samples:
            f.write(",".join("" if v is None else str(v) for v in row) + "\n")
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result, out


def mib(value):
    return "—" if value is None else f"{value / MIB:.1f} MiB"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=["admission", "fits"], default="admission")
    parser.add_argument("--limit", type=parse_size, default=128 * MIB,
                        help="the group's memory.limit_in_bytes (default 128MiB)")
    parser.add_argument("--clients", type=int, default=2000,
                        help="bots to ramp up (default 2000: more than the budget admits)")
    parser.add_argument("--ramp", type=int, default=20, help="seconds to bring the bots in")
    parser.add_argument("--settle", type=int, default=5, help="seconds after the ramp")
    parser.add_argument("--hold", type=int, default=20, help="seconds every bot stays frozen")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="an extra server flag (repeatable), e.g. --server-arg=--npcs=20")
    parser.add_argument("--out", help="directory for logs and result.json (default a temp dir)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("cgroup_admission: needs root (it creates a memory cgroup)", file=sys.stderr)
        return 2
    for binary in (SERVER, BOTS):
        if not os.path.exists(binary):
            print(f"cgroup_admission: {binary} is missing; build it with\n"
                  "  flock /tmp/tickcast-cargo.lock cargo build --release "
                  "-p tickcast-server -p tickcast-clients --bins", file=sys.stderr)
            return 2
    try:
        r, out = run(args)
    except ScriptError as e:
        print(f"cgroup_admission: {e}", file=sys.stderr)
        return 1
    refused = {k: v for k, v in r["errors"].items() if k.startswith("connect:")}
    print(f"<!-- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"`{' '.join(['scripts/cgroup_admission.py', *argv])}`, logs in {out} -->")
    print(f"plan: {r['plan']}")
    print()
    print("| mode | limit | bots | admitted | connect errors | group usage before freeze | "
          "peak group usage | server RSS before freeze / peak frozen | failcnt | OOM kills | "
          "server alive after the hold |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    print(f"| {r['mode']} | {mib(r['limit'])} | {r['clients_requested']} | {r['admitted']} | "
          f"{', '.join(f'{k} {v}' for k, v in sorted(refused.items())) or '—'} | "
          f"{mib(r['usage_before_freeze'])} | {mib(r['peak_usage'])} | "
          f"{mib(r['rss_before_freeze'])} / {mib(r['peak_rss_frozen'])} | {r['failcnt']} | "
          f"{'—' if r['oom_kills'] is None else r['oom_kills']} | "
          f"{'yes' if r['server_alive_after_hold'] else 'NO: died in the ' + r['server_died_in']} |")
    return 0 if r["server_alive_after_hold"] or r["mode"] == "fits" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
