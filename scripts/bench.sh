#!/usr/bin/env bash
# Reproduces the figures in docs/benchmarks.md: builds release binaries, runs
# a manager on embedded SQLite in a scratch dir, and drives it with the load
# generator. Everything stays on loopback.
#
#   scripts/bench.sh [AGENTS] [FANOUT]   (defaults 10000 and 1000; FANOUT <= AGENTS)
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${1:-10000}
FANOUT=${2:-1000}
BIN=target/release
WORK=$(mktemp -d /tmp/drover-bench.XXXXXX)
# The fan-out agents' role files go to tmpfs: one disk cannot stand in for
# the fsyncs of a thousand hosts.
FILES=$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo "$WORK")/drover-bench-files.XXXXXX")
HTTP=127.0.0.1:17180
GRPC=127.0.0.1:17182
export DROVER_PASSWORD=bench-password
export DROVER_ADMIN_PASSWORD=$DROVER_PASSWORD
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --locked --bin drover-manager --bin drover-agent --bin drover-loadgen >&2

mgr_pid=
start_manager() {  # $1 = heartbeat interval
  "$BIN/drover-manager" --data-dir "$WORK/manager" --http-addr $HTTP --grpc-addr $GRPC \
    --heartbeat-interval "$1" --host-lost-after 60s >"$WORK/manager.log" 2>&1 &
  mgr_pid=$!
  for _ in $(seq 1 100); do curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "manager did not start" >&2; cat "$WORK/manager.log" >&2; exit 1
}
stop_manager() { kill -TERM "$mgr_pid"; wait "$mgr_pid" || true; }
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$FILES"' EXIT
LG() { "$BIN/drover-loadgen" --http $HTTP --manager "https://$GRPC" "$@"; }

echo "## enrollment: 1000 agents"
start_manager 10s
LG enroll --count 1000 --concurrency 64

echo "## enrollment of the $AGENTS-agent fleet (identities saved for the session runs)"
LG enroll --count "$AGENTS" --concurrency 64 --save "$WORK/ids.jsonl" | grep -E 'rate|count|failures'

echo "## $AGENTS agents at a 10 s heartbeat"
LG sessions --identities "$WORK/ids.jsonl" --duration 60s --manager-pid "$mgr_pid"
stop_manager

echo "## sustained heartbeat throughput: $AGENTS agents at a 1 s heartbeat (state persisted every second)"
start_manager 1s
LG sessions --identities "$WORK/ids.jsonl" --duration 60s --manager-pid "$mgr_pid"

echo "## config push fan-out: 100 roles added one request each (cost of the single-role path)"
stop_manager
start_manager 10s
LG fanout --identities "$WORK/ids.jsonl" --count 100 --roles-per-request 1 --cluster fanout-single \
  --files-dir "$FILES/single" --manager-pid "$mgr_pid"

echo "## config push fan-out: $FANOUT file-writing agents, one Redis role each, 5 maxmemory changes"
LG fanout --identities "$WORK/ids.jsonl" --count "$FANOUT" --cluster fanout --files-dir "$FILES/bulk" \
  --apply-timeout 600s --manager-pid "$mgr_pid"

echo "## two services on disjoint halves of $AGENTS agents: 5 changes to the first alone, then 5 to both at once"
stop_manager
start_manager 10s
LG fanout --identities "$WORK/ids.jsonl" --count "$AGENTS" --services 2 --cluster fanout-pair \
  --files-dir "$FILES/pair" --apply-timeout 600s --manager-pid "$mgr_pid"

echo "## config push fan-out: $AGENTS agents (their $AGENTS roles added in one request), 5 changes, then a manager restart"
stop_manager
start_manager 10s
rm -f "$WORK/restart-ready" "$WORK/restart-pid"
LG fanout --identities "$WORK/ids.jsonl" --count "$AGENTS" --cluster fanout-big --files-dir "$FILES/big" \
  --apply-timeout 600s --manager-pid "$mgr_pid" \
  --restart-ready-file "$WORK/restart-ready" --restart-pid-file "$WORK/restart-pid" &
lg_pid=$!
while [ ! -e "$WORK/restart-ready" ] && kill -0 "$lg_pid" 2>/dev/null; do sleep 0.2; done
if [ -e "$WORK/restart-ready" ]; then
  echo "manager before the restart: $(grep -E 'VmRSS|VmHWM' /proc/$mgr_pid/status | tr -s ' \t\n' ' ')"
  stop_manager
  # The new manager's pid goes to the load generator at once: it samples the
  # process while the sessions come back.
  "$BIN/drover-manager" --data-dir "$WORK/manager" --http-addr $HTTP --grpc-addr $GRPC \
    --heartbeat-interval 10s --host-lost-after 60s >"$WORK/manager-restarted.log" 2>&1 &
  mgr_pid=$!
  echo "$mgr_pid" >"$WORK/restart-pid"
fi
wait "$lg_pid"

echo "## parcel distribution: a 100 MiB parcel of random data uploaded, then fetched by 10 and by 100 agents at once"
for n in 10 100; do
  LG parcels --identities "$WORK/ids.jsonl" --count "$n" --size-mb 100 --manager-pid "$mgr_pid"
done

echo "## idle agent RSS (real drover-agent binary, 60 s after connecting, 10 s heartbeat)"
stop_manager
start_manager 10s
token=$(curl -fsS -u admin:$DROVER_PASSWORD -H 'content-type: application/json' -d '{"max_uses":1}' \
  "http://$HTTP/api/v1/enrollment-tokens" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
"$BIN/drover-agent" --manager "https://$GRPC" --token "$token" --data-dir "$WORK/agent" --hostname bench-idle \
  >"$WORK/agent.log" 2>&1 &
agent_pid=$!
sleep 60
awk '/VmRSS|VmHWM/ {printf "agent.%s %.1f MiB\n", $1, $2/1024}' "/proc/$agent_pid/status"
kill -TERM "$agent_pid"; wait "$agent_pid" || true
stop_manager
echo "## where the manager's memory goes: heaptrack over $AGENTS connected agents and $AGENTS roles, 3 changes"
# heaptrack follows the system malloc, not jemalloc: a manager built without
# it, in its own target dir so the release binaries above stay as they are.
command -v heaptrack >/dev/null || sudo apt-get install -y heaptrack >&2
CARGO_TARGET_DIR=target/heap cargo build --release --locked -p drover-manager --no-default-features \
  --bin drover-manager >&2
HEAP_BIN=target/heap/release/drover-manager
heaptrack -o "$WORK/heaptrack.manager" "$HEAP_BIN" --data-dir "$WORK/manager" --http-addr $HTTP \
  --grpc-addr $GRPC --heartbeat-interval 10s --host-lost-after 60s >"$WORK/manager.log" 2>&1 &
for _ in $(seq 1 300); do curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
mgr_pid=$(pgrep -n -f "^$HEAP_BIN --data-dir $WORK/manager")
rm -f "$WORK/heap-ready"
LG fanout --identities "$WORK/ids.jsonl" --count "$AGENTS" --changes 3 --cluster fanout-heap \
  --files-dir "$FILES/heap" --apply-timeout 600s --manager-pid "$mgr_pid" --keep \
  --restart-ready-file "$WORK/heap-ready" --restart-pid-file "$WORK/heap-pid" >"$WORK/heap-fanout.txt" 2>&1 &
lg_pid=$!
while [ ! -e "$WORK/heap-ready" ] && kill -0 "$lg_pid" 2>/dev/null; do sleep 0.2; done
# Killed while every session is still open: what heaptrack then counts as
# leaked is the live heap of a manager serving them all.
sleep 3
kill -KILL "$mgr_pid"; sleep 10; kill "$lg_pid" 2>/dev/null; wait || true
grep -E 'rss|applied_from_request_p99|setup_seconds' "$WORK/heap-fanout.txt"
heaptrack_print -f "$WORK"/heaptrack.manager*.zst --print-peaks 0 --print-allocators 0 --print-temporary 0 \
  --print-leaks 1 --peak-limit 40 --sub-peak-limit 20 2>/dev/null | tee "$WORK/heap-report.txt" | \
  grep -E '^(peak heap memory|peak RSS|total memory leaked)'
echo "live heap by call site: $WORK/heap-report.txt (heaptrack_gui $WORK/heaptrack.manager*.zst for the flame graph)"
echo "(work dir: $WORK)"
