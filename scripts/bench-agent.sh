#!/usr/bin/env bash
# The memory of a real agent supervising Redis, ZooKeeper and nginx roles with their metric
# collectors (docs/benchmarks.md, "Agent memory"): the agent as images get it (the `agent`
# profile), the manager and the bench as release builds, the shipped parcels (built with the
# .deb cache under target/ when missing). Usage: scripts/bench-agent.sh [DURATION, default 60s]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --profile agent --locked -p drover-agent
cargo build --release --locked --bin drover-manager --bin drover --bin drover-agent-rss
# The bench finds the binaries next to itself.
bin="$target/agent-rss"
mkdir -p "$bin"
cp "$target/release/drover-manager" "$target/release/drover" "$target/release/drover-agent-rss" "$bin/"
cp "$target/agent/drover-agent" "$bin/"
CARGO_TARGET_DIR="$target" "$bin/drover-agent-rss" --duration "${1:-60s}"
