#!/usr/bin/env bash
# Reproduces the log search and diagnostic bundle figures in
# docs/benchmarks.md: builds release binaries, runs a manager on embedded
# SQLite in a scratch dir, enrolls HOSTS synthetic agents and runs
# `drover-loadgen logs` (SIZE_MB MiB of Redis log lines per host, searches
# across every host, then a bundle of BUNDLE_HOSTS hosts under a 200 MiB cap).
# Everything stays on loopback.
#
#   scripts/bench-logs.sh [HOSTS] [SIZE_MB] [BUNDLE_HOSTS]   (defaults 100, 100, 20)
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${1:-100}
SIZE_MB=${2:-100}
BUNDLE_HOSTS=${3:-20}
BIN=target/release
WORK=$(mktemp -d /tmp/drover-bench-logs.XXXXXX)
HTTP=127.0.0.1:17280
GRPC=127.0.0.1:17282
export DROVER_PASSWORD=bench-password
export DROVER_ADMIN_PASSWORD=$DROVER_PASSWORD
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --locked --bin drover-manager --bin drover-loadgen >&2

"$BIN/drover-manager" --data-dir "$WORK/manager" --http-addr $HTTP --grpc-addr $GRPC \
  --heartbeat-interval 10s >"$WORK/manager.log" 2>&1 &
mgr_pid=$!
trap 'kill $mgr_pid 2>/dev/null || true; rm -rf "$WORK/files"' EXIT
for _ in $(seq 1 100); do curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
LG() { "$BIN/drover-loadgen" --http $HTTP --manager "https://$GRPC" "$@"; }

echo "## $HOSTS synthetic hosts, $SIZE_MB MiB of Redis log each: searches across all, then a bundle of $BUNDLE_HOSTS"
LG enroll --count "$HOSTS" --save "$WORK/ids.jsonl" | grep -E 'count|failures'
LG logs --identities "$WORK/ids.jsonl" --size-mb "$SIZE_MB" --bundle-hosts "$BUNDLE_HOSTS" \
  --bundle-max-mb 200 --files-dir "$WORK/files" --manager-pid "$mgr_pid"
echo "(work dir: $WORK)"
