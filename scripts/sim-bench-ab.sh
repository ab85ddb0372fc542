#!/usr/bin/env bash
# Same-run A/B of the sim benches (`cargo bench -p tickcast-sim --bench tick`) between two
# builds, alternating A and B ROUNDS times so the machine's noise falls on both.
#
#   scripts/sim-bench-ab.sh A_REV B_REV [ROUNDS]   # e.g. 771fa37 HEAD 5
#
# Builds each revision's bench binary in a git worktree under target/ab-sim/ (first run
# builds for minutes), then prints, for each bench, the median over rounds of each side's
# median and the median of the per-round B/A ratios, then each side's fastest sample of
# all rounds and their ratio (the least disturbed reading, when other work shares the
# cores). Run it on a quiet machine (nothing else building).
set -euo pipefail
cd "$(dirname "$0")/.."
a_rev=$1 b_rev=$2 rounds=${3:-5}
root=$PWD/target/ab-sim
mkdir -p "$root"
build() {
  local rev=$1 dir=$root/src-$1
  [[ -d $dir ]] || git worktree add -q --detach "$dir" "$rev"
  (cd "$dir" && CARGO_TARGET_DIR=$root/target-$rev cargo bench -q -p tickcast-sim --bench tick --no-run >&2)
  ls -t "$root"/target-"$rev"/release/deps/tick-* | grep -v '\.d$' | head -1
}
a_bin=$(build "$a_rev")
b_bin=$(build "$b_rev")
out=$(mktemp)
for round in $(seq "$rounds"); do
  for side in A B; do
    bin=$a_bin; [[ $side == B ]] && bin=$b_bin
    "$bin" --bench 2>/dev/null | sed "s/^/$side $round /" >>"$out"
  done
done
python3 - "$out" "$a_rev" "$b_rev" <<'PY'
import re, statistics, sys
unit = {"ns": 1e-3, "µs": 1.0, "ms": 1e3, "s": 1e6}
rows, name = {}, None
for line in open(sys.argv[1], encoding="utf-8"):
    side, rnd, text = line.rstrip("\n").split(" ", 2)
    m = re.match(r"^[├╰]─ (\w+)", text)
    if m:
        name = m.group(1)
        continue
    m = re.match(r"^[│ ]  [├╰]─ (\d+)", text)
    if m and name:
        # Divan's columns: fastest (after the argument), slowest, median, mean, …; a
        # group's rows but the last start with its tree's own "│", which is no column.
        cells = re.sub(r"^│", "", text).split("│")
        def micros(cell):
            value, u = re.match(r"([0-9.]+) (\S+)", cell.strip()).groups()
            return float(value) * unit[u]
        fastest = micros(re.sub(r"^.*─ \d+", "", cells[0]))
        rows.setdefault((name, m.group(1)), {}).setdefault(rnd, {})[side] = (micros(cells[2]), fastest)
a_name, b_name = sys.argv[2], sys.argv[3]
print(f"{'bench':<22}{'entities':>9}{a_name+' µs':>16}{b_name+' µs':>16}{'B/A':>8}"
      f"{'fastest A':>12}{'fastest B':>12}{'B/A':>8}")
for (name, arg), rounds in rows.items():
    pairs = [(r["A"], r["B"]) for r in rounds.values() if "A" in r and "B" in r]
    a = statistics.median(p[0][0] for p in pairs)
    b = statistics.median(p[1][0] for p in pairs)
    ratio = statistics.median(p[1][0] / p[0][0] for p in pairs)
    fa = min(p[0][1] for p in pairs)
    fb = min(p[1][1] for p in pairs)
    print(f"{name:<22}{arg:>9}{a:>16.1f}{b:>16.1f}{ratio:>8.2f}{fa:>12.1f}{fb:>12.1f}{fb / fa:>8.2f}")
PY
rm -f "$out"
