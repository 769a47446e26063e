#!/usr/bin/env bash
# The second pass of mutation testing: the mutants a ci/mutants.sh run
# missed (the simulator's fuzz did not catch them), judged by the node's
# own tests (its unit tests and the protocol harness, node/tests/
# consensus.rs and beacon.rs). What survives both is what the docs triage.
#
# Usage: ci/mutants-unit.sh MISSED_TXT OUT_DIR [extra cargo-mutants args]
#   MISSED_TXT: a first pass's mutants.out/missed.txt (one name a line)
#   OUT_DIR:    where this pass writes its mutants.out
# Run it in a throwaway worktree at the first pass's commit (line numbers
# must match), with its own CARGO_TARGET_DIR, as for ci/mutants.sh.
set -euo pipefail
missed=$1
out=$2
shift 2
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=target/mutants-unit}"
export CARGO_TARGET_DIR
# Each name, matched whole; struct-field deletions ignore --re in
# cargo-mutants 27.1 and are tested whatever the list says.
re=$(python3 - "$missed" <<'PY'
import sys
names = [l.rstrip('\n') for l in open(sys.argv[1]) if l.strip()]
esc = lambda s: ''.join('\\' + c if c in '\\.+*?()|[]{}^$#&-~' else c for c in s)
print('^(' + '|'.join(esc(n) for n in names) + ')$')
PY
)
exec cargo mutants -p hotpocket-node \
  -f 'node/src/consensus/**' -f 'node/src/beacon/**' -f 'node/src/npl/**' \
  -f 'node/src/sync/**' -f 'node/src/users/**' \
  --in-place --baseline=skip --timeout 300 --build-timeout 900 \
  --re "$re" -o "$out" "$@" -- --lib --test consensus --test beacon
