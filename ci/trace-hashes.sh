#!/usr/bin/env bash
# Prints "scenario seed trace_hash" for every scenario in scenarios/ (and
# scenarios/regressions/ if present) and seeds 1..=20, then a digest of the
# whole table. A change that must not alter behaviour leaves the digest as
# it was: run this before and after and compare.
#
#   bash ci/trace-hashes.sh [SIM_BINARY] > hashes.txt
set -euo pipefail
cd "$(dirname "$0")/.."
# The binary: the argument, else the release build in $CARGO_TARGET_DIR
# (or ./target), where a worktree with its own target dir builds it.
sim=${1:-${CARGO_TARGET_DIR:-target}/release/hotpocket-sim}
[ -x "$sim" ] || { echo "build it first: cargo build --release -p hotpocket-sim" >&2; exit 2; }
seeds=${SEEDS:-20}
table=$(mktemp)
trap 'rm -f "$table"' EXIT
for f in scenarios/*.toml scenarios/regressions/*.toml; do
    [ -f "$f" ] || continue
    for seed in $(seq 1 "$seeds"); do
        # A failing run still prints its report (and exits non-zero): its hash counts too.
        json=$("$sim" run "$f" --seed "$seed" --json 2>/dev/null || true)
        hash=$(python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["trace_hash"], "pass" if r["passed"] else "FAIL")' <<<"$json")
        echo "$(basename "$f" .toml) $seed $hash" | tee -a "$table"
    done
done
echo "digest $(sha256sum < "$table" | cut -c1-16) over $(wc -l < "$table") runs"
