#!/usr/bin/env bash
# The "real networks" table of docs/PERFORMANCE.md: release builds of tickcast-server
# and tickcast-bots, one server on its defaults (200 NPCs, 3 x 3-cell views), and for
# each row a fresh swarm of walking bots through an in-process tickcast-netsim link
# (`tickcast-bots --netsim`). Two passes, each on a fresh server: the shipped congestion
# policy (`floor`: Cubic with a floor and a queueing-delay bound), then stock Cubic
# (`stock-cubic`, --congestion-window-floor 0, which turns off both).
# Prints a markdown table per pass; the bots' JSON reports and the server logs stay in
# the output directory.
#
#   scripts/netsim-table.sh [--clients N] [--duration 20s] [--out DIR]
#
# The capped row runs eight bots behind one 256 kbit/s link (the link is shared by every
# client behind it): each is sent its view, ~8 KB/s with QUIC's overhead, so together
# they offer about twice what the link carries.
# Loopback only; the server is stopped (SIGTERM) before the script exits.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
clients=50
duration=20s
out="$root/target/netsim-table"
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) clients="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--clients N] [--duration 20s] [--out DIR]" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -p tickcast-server -p tickcast-bots --bins
mkdir -p "$out"
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

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
skipped() { grep -o 'skipped_peer_ticks=[0-9]*' "$log" | tail -1 | cut -d= -f2; }

# name | one-way delay (ms) | bots | spec
rows=(
  "clean|0|$clients|seed=7"
  "5 % + 40 ms|40|$clients|loss=5%,delay=40ms,seed=7"
  "20 % + 100 ms|100|$clients|loss=20%,delay=100ms,seed=7"
  "2 % bursty (mean burst 4) + 40 ms|40|$clients|loss=2%,burst=4,delay=40ms,seed=7"
  "8 bots behind one 256 kbit/s link, 64 KiB queue, 40 ms|40|8|down:rate=256kbit,down:queue=64KiB,delay=40ms,seed=7"
)

# One pass: a fresh server with extra flags, every row, one JSON line per row.
run_pass() {
  local pass="$1"; shift
  log="$out/server-$pass.log"
  rm -rf .tickcast
  "$root/target/release/tickcast-server" "$@" > "$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    [ -f .tickcast/cert.der ] && grep -q "listening" "$log" && break
    sleep 0.1
  done
  kill -0 "$server_pid" 2>/dev/null || { echo "tickcast-server did not start:"; cat "$log"; exit 1; }
  : > "$out/$pass.jsonl"
  local index=0 row name delay bots spec
  for row in "${rows[@]}"; do
    IFS='|' read -r name delay bots spec <<<"$row"
    index=$((index + 1))
    sleep 2 # let the previous row's connections close
    local rss_before skipped_before rss_after skipped_after
    rss_before=$(rss_kib)
    skipped_before=$(skipped || true)
    # 30 s to connect: at 20 % loss each way QUIC's doubling retransmission timer can
    # take a handshake past the default 10 s and still succeed.
    "$root/target/release/tickcast-bots" --clients "$bots" --duration "$duration" \
      --connect-timeout 30s --netsim "$spec" --json --quiet > "$out/$pass-row$index.json" || true
    sleep 2 # one more status line
    rss_after=$(rss_kib)
    skipped_after=$(skipped || true)
    python3 - "$out/$pass-row$index.json" "$name" "$delay" "$rss_before" "$rss_after" \
      "${skipped_before:-0}" "${skipped_after:-0}" >> "$out/$pass.jsonl" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
name, delay, rss0, rss1, skip0, skip1 = sys.argv[2:8]
print(json.dumps({"name": name, "delay_ms": float(delay), "rss_before_kib": int(rss0),
                  "rss_after_kib": int(rss1), "skipped": int(skip1) - int(skip0),
                  "report": report}))
PY
  done
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}

run_pass floor
run_pass stock-cubic --congestion-window-floor 0

for pass in floor stock-cubic; do
echo
echo "$pass:"
python3 - "$out/$pass.jsonl" <<'PY'
import json, sys
print("| link | bots | packets lost (link, down) | chunks lost | complete ticks | latency p99 (target) | from the 5th s: latency p50 / p99 | staleness p50 / p99 | disconnects | ticks skipped | server RSS before → after |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    row = json.loads(line)
    r = row["report"]
    down = (r.get("netsim") or {}).get("down", {})
    dealt = down.get("lost", 0) + down.get("queue_dropped", 0)
    packets = max(down.get("packets", 0), 1)
    lost = r["chunks_lost"] / max(r["chunks_lost"] + r["chunks_received"], 1)
    target = row["delay_ms"] + 2 * 1000 / max(r["tick_rate"], 1)
    fmt = lambda v: "-" if v is None else f"{v:.0f} ms"
    print(f"| {row['name']} | {r['connected']}/{r['clients']} | {100 * dealt / packets:.1f} % "
          f"| {100 * lost:.1f} % | {r['delivery_ratio']:.3f} | {fmt(r['latency_ms_p99'])} "
          f"(≤ {target:.0f} ms) | {fmt(r.get('settled_latency_ms_p50'))} / {fmt(r.get('settled_latency_ms_p99'))} "
          f"| {fmt(r['staleness_ms_p50'])} / {fmt(r['staleness_ms_p99'])} "
          f"| {r['disconnects']} | {row['skipped']} "
          f"| {row['rss_before_kib'] / 1024:.1f} → {row['rss_after_kib'] / 1024:.1f} MiB |")
PY
done
