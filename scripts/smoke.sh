#!/usr/bin/env bash
# Starts tickcast-server on its defaults in a scratch directory, runs 50 bots against
# it for 10 s, and fails unless every bot connected and delivery is at least 0.99.
# Loopback only; the server is stopped (SIGTERM) before the script exits.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --locked -p tickcast-server -p tickcast-bots --bins
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
"$root/target/release/tickcast-server" > server.log 2>&1 &
server_pid=$!
# The server writes its certificate on start; wait for it (at most 10 s).
for _ in $(seq 1 100); do
  [ -f .tickcast/cert.der ] && grep -q "listening" server.log && break
  sleep 0.1
done
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "tickcast-server did not start:"; cat server.log; exit 1
fi
"$root/target/release/tickcast-bots" --clients 50 --duration 10s --json > report.json
cat report.json
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
grep -q "stopped" server.log || { echo "server did not stop cleanly"; cat server.log; exit 1; }
python3 - report.json <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
problems = []
if report["connected"] != report["clients"]:
    problems.append(f"only {report['connected']} of {report['clients']} clients connected")
if report["delivery_ratio"] < 0.99:
    problems.append(f"delivery_ratio {report['delivery_ratio']:.4f} < 0.99")
# Interest management: a bot is sent the 3 x 3 cells around its player (about 4 % of
# the default 1000 x 1000 arena), so it sees itself and some of the 250 entities, never
# the whole world.
seen = report["entities_last_snapshot"]
if not 1 <= seen < 250:
    problems.append(f"entities_last_snapshot {seen}: expected at least the bot itself and "
                    "fewer than the 250 entities of the whole world")
if problems:
    sys.exit("smoke failed: " + "; ".join(problems))
print(f"smoke: 1 passed, 0 failed (delivery {report['delivery_ratio']:.4f})")
PY
