#!/usr/bin/env bash
# An idle server's memory: starts BINARY on a free loopback port with --max-clients N
# (default 510) and 200 NPCs, waits 3 s, prints the Rss and Anonymous lines of its
# /proc/PID/smaps_rollup, and stops it. What a fixed, per-process cost (channels, pools)
# weighs before any client connects (docs/PERFORMANCE.md, "Bring your own game").
#
#   scripts/idle-rss.sh target/release/tickcast-server [MAX_CLIENTS]
set -euo pipefail
binary=${1:?usage: idle-rss.sh BINARY [MAX_CLIENTS]}
max_clients=${2:-510}
dir=$(mktemp -d)
"$binary" --listen 127.0.0.1:0 --data-dir "$dir" --max-clients "$max_clients" --npcs 200 \
  >"$dir/log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 3
if ! kill -0 "$pid" 2>/dev/null; then
  echo "the server exited:" >&2; cat "$dir/log" >&2; exit 1
fi
awk -v what="$(basename "$binary") --max-clients $max_clients" \
  '/^(Rss|Anonymous):/ {line = line sprintf(" %s %s kB", $1, $2)} END {print what ":" line}' \
  "/proc/$pid/smaps_rollup"
