#!/usr/bin/env bash
# Mutation testing of the protocol (node/src/{consensus,beacon,npl,sync,users})
# against the simulator's bounded fuzz campaign (the fuzzer work), not the
# unit tests: each mutant of hotpocket-node is built and then judged by the
# hotpocket-sim integration tests scenarios.rs (fuzz_swarm, fuzz_byzzfuzz,
# fuzz_coalition, fuzz_check_probers, and the regressions), planted.rs and
# reached.rs (every test: the filters after those match all of theirs and
# nothing else in scenarios.rs).
#
# Usage: ci/mutants.sh [extra cargo-mutants args], e.g.
#   ci/mutants.sh --list                      # 1826 mutants at 9960b57
#   ci/mutants.sh --shard 3/40                # one slice
#   ci/mutants.sh --re 'tally.rs:170:18'      # one mutant
#
# Notes:
# - --in-place builds in this tree with CARGO_TARGET_DIR, so one warm test
#   build is reused and each mutant only recompiles hotpocket-node and the
#   simulator (run it in a throwaway worktree; cargo-mutants restores the
#   file after each mutant).
# - -C --test=... restricts the build phase too (the test args after `--`
#   are only given to the test phase, so without -C the build would compile
#   every sim test target for every mutant).
# - Do not pass --cap-lints=true: cargo-mutants then sets
#   CARGO_ENCODED_RUSTFLAGS, which overrides build.rustflags in
#   .cargo/config.toml and silently drops `--cfg madsim`.
# - --baseline=skip: cargo-mutants 27.1.0 builds its baseline for the
#   mutated package alone, ignoring --test-package, and fails on
#   --test=scenarios ("no test target named `scenarios` in
#   hotpocket-node"); the timeouts below stand in for the baseline's.
# - A mutant that hangs the simulator is reported as "timeout" (counted as
#   caught, but listed separately in mutants.out/timeout.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=target/mutants}"
export CARGO_TARGET_DIR
exec cargo mutants \
  -p hotpocket-node --test-package hotpocket-sim \
  -f 'node/src/consensus/**' -f 'node/src/beacon/**' -f 'node/src/npl/**' \
  -f 'node/src/sync/**' -f 'node/src/users/**' \
  --in-place --baseline=skip \
  --timeout "${MUTANTS_TEST_TIMEOUT:-240}" --build-timeout "${MUTANTS_BUILD_TIMEOUT:-900}" \
  -C --test=scenarios -C --test=planted -C --test=reached \
  "$@" \
  -- -- fuzz_swarm fuzz_byzzfuzz fuzz_coalition fuzz_check_probers regressions_stay_fixed \
  fork a_node_that planted_bug input_forger relay refused_rollback is_refused_by
