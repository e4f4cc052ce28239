#!/usr/bin/env bash
# Makes the console screenshots in docs/console/ from the browser tests
# (tests/tests/console.rs): a real chromium, real agents and Redis from its
# parcel. Needs what the test suite needs (scripts/test.sh installs it):
# chromium, chromium-driver, and the binaries built.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/console
cargo build --workspace --bins --locked
DROVER_SCREENSHOT_DIR="$PWD/docs/console" cargo test --locked -p drover-tests --test console -- --test-threads 1
ls -l docs/console
