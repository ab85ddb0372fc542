#!/usr/bin/env bash
# The crate graph of docs/ARCHITECTURE.md as a check: the simulation library links no
# network stack, and the client library links no CLI, report or terminal-UI crate.
# Fails naming the crate that crossed a wall.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
forbid() { # package, then the crates it must not link (normal dependencies)
  local package="$1"; shift
  local tree
  tree="$(cargo tree --locked -p "$package" -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)"
  for crate in "$@"; do
    if grep -qx "$crate" <<<"$tree"; then
      echo "crate graph: $package links $crate" >&2
      fail=1
    fi
  done
}
forbid tickcast-sim quinn quinn-proto tokio tickcast-net
# The library a game developer imports: no command line, report, terminal UI or
# logging setup (those are tickcast-bots'), and no server.
forbid tickcast-clients clap ratatui crossterm serde serde_json tracing-subscriber anyhow humantime tickcast-bots tickcast-sim
exit "$fail"
