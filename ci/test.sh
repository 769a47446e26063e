#!/usr/bin/env bash
# The project's test command (README): links, formatting, lints, then every test —
# unit tests, the protocol harness, every scenario in scenarios/, the
# determinism test and a 705-seed fuzz sweep, real and simulated together.
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean build gains nothing from incremental caches; they only take disk.
export CARGO_INCREMENTAL=0
python3 ci/check-links.py
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The seam, enforced: the protocol and the simulator build without the real
# runtime's crates (tokio, SQLite, websockets, OS randomness).
cargo clippy -p hotpocket-node --no-default-features --all-targets -- -D warnings
cargo check -p hotpocket-sim
python3 ci/floors.py
python3 fixtures/contracts/npl.py --selftest
python3 fixtures/contracts/rand.py --selftest
# Files a reader can take in at one sitting.
long=$(find node/src sim/src -name '*.rs' -exec wc -l {} + | awk '$2 != "total" && $1 > 600')
if [ -n "$long" ]; then echo "files over 600 lines:"; echo "$long"; exit 1; fi
# sim/tests/picture.rs opens a run's picture in headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# node/tests/js_client.rs drives the official JS client library with
# Node.js; it installs the library itself (`npm ci` in fixtures/js-client).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
cargo test --workspace
