#!/usr/bin/env bash
# Builds the `count-allocs` tickcast-server of an earlier commit, for
# `scripts/bench.py ab --baseline-server`: the before/after of a change, same bots, same
# run. Prints the binary's path. Usage: scripts/ab-baseline.sh REV
#   python3 scripts/bench.py ab --counts 100,500,1000 \
#     --baseline-server "$(scripts/ab-baseline.sh cc64706)"
# The commit is checked out in a temporary git worktree and built with its own target
# dir under target/bench-baseline/REV (so its binary and ours exist at once); the server
# was in package tickcast-sim before commit bcd83bf, in tickcast-server after.
# The commit's own `tickcast-bots` is built beside it when it has one: bench.py runs a
# baseline server against the bots found next to it, so a commit from before a change of
# the wire protocol (v3: commit 771fa37 and earlier speak v2) is loaded by bots that
# speak its protocol.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rev="$(git -C "$root" rev-parse --short=12 "${1:?usage: ab-baseline.sh REV}")"
target="$root/target/bench-baseline/$rev"
binary="$target/release/tickcast-server"
bots="$target/release/tickcast-bots"
if [ ! -x "$binary" ] || { [ ! -x "$bots" ] && git -C "$root" cat-file -e "$rev:clients/bots/Cargo.toml" 2>/dev/null; }; then
  tree="$(mktemp -d)"
  trap 'git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
  git -C "$root" worktree add --detach --force "$tree" "$rev" >&2
  package=tickcast-server
  if ! grep -q '"sim/server"' "$tree/Cargo.toml"; then package=tickcast-sim; fi
  (cd "$tree" && flock "${TICKCAST_CARGO_LOCK:-/tmp/tickcast-cargo.lock}" \
    cargo build --release --locked -p "$package" --bin tickcast-server \
      --features count-allocs --target-dir "$target") >&2
  if [ -f "$tree/clients/bots/Cargo.toml" ]; then
    (cd "$tree" && flock "${TICKCAST_CARGO_LOCK:-/tmp/tickcast-cargo.lock}" \
      cargo build --release --locked -p tickcast-bots --bin tickcast-bots \
        --target-dir "$target") >&2
  fi
fi
echo "$binary"
