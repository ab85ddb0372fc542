#!/usr/bin/env bash
# Builds the `count-allocs` tickcast-server of an earlier commit, for
# `scripts/bench.py ab --baseline-server`: the before/after of a change, same bots, same
# run. Prints the binary's path. Usage: scripts/ab-baseline.sh REV
#   python3 scripts/bench.py ab --counts 100,500,1000 \
#     --baseline-server "$(scripts/ab-baseline.sh cc64706)"
# The commit is checked out in a temporary git worktree and built with its own target
# dir under target/bench-baseline/REV (so its binary and ours exist at once); the server
# was in package tickcast-sim before commit bcd83bf, in tickcast-server after.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rev="$(git -C "$root" rev-parse --short=12 "${1:?usage: ab-baseline.sh REV}")"
target="$root/target/bench-baseline/$rev"
binary="$target/release/tickcast-server"
if [ ! -x "$binary" ]; then
  tree="$(mktemp -d)"
  trap 'git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
  git -C "$root" worktree add --detach --force "$tree" "$rev" >&2
  package=tickcast-server
  if ! grep -q '"sim/server"' "$tree/Cargo.toml"; then package=tickcast-sim; fi
  (cd "$tree" && flock "${TICKCAST_CARGO_LOCK:-/tmp/tickcast-cargo.lock}" \
    cargo build --release --locked -p "$package" --bin tickcast-server \
      --features count-allocs --target-dir "$target") >&2
fi
echo "$binary"
