#!/usr/bin/env bash
# Measures environments (docs/benchmarks.md, "Environments"): a manager on a
# private Docker network's gateway with the jre, zookeeper and redis parcels
# uploaded; then RUNS times `drover env up` of templates/zk-redis.yaml (three
# agent containers: a ZooKeeper server on each, a Redis primary and two
# replicas), timed from the command to every role running and healthy, and
# `drover env down`, timed to nothing left on the engine. Removes everything
# it made.
#
#   scripts/bench-env.sh [RUNS]   (default 3; BIN=target/debug for debug builds)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
BIN=${BIN:-target/release}
WORK=$(mktemp -d /tmp/drover-bench-env.XXXXXX)
NET=drover-bench-env-$$
HTTP=127.0.0.1:17290
export DROVER_ADMIN_PASSWORD=bench-password DROVER_URL=http://$HTTP DROVER_PASSWORD=bench-password

if [ "$BIN" = target/release ]; then
  cargo build --release --locked --bin drover-manager --bin drover-agent --bin drover >&2
fi
scripts/build-images.sh --agent-bin "$BIN/drover-agent" --tag bench agent >&2
for recipe in jre zookeeper redis; do
  "$BIN/drover" parcel build "parcels/$recipe" --out "$WORK/parcels" --cache-dir target/parcel-cache >&2
done

docker network create "$NET" >/dev/null
GW=$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' "$NET" | tr ' ' '\n' | grep -m1 '\.')
mgr_pid=
cleanup() {
  [ -n "$mgr_pid" ] && kill "$mgr_pid" 2>/dev/null || true
  docker ps -aq --filter "name=bench-" | xargs -r docker rm -f -v >/dev/null
  docker volume ls -q --filter "name=bench-" | xargs -r docker volume rm -f >/dev/null
  docker network rm "$NET" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/drover-manager" --data-dir "$WORK/manager" --http-addr "$HTTP" --grpc-addr "$GW:17292" \
  --advertise "$GW" --heartbeat-interval 1s >"$WORK/manager.log" 2>&1 &
mgr_pid=$!
for _ in $(seq 1 100); do curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
for p in "$WORK"/parcels/*.parcel; do "$BIN/drover" parcel upload "$p" >&2; done
"$BIN/drover" template upload templates/zk-redis.yaml >&2

now() { date +%s.%N; }
all_healthy() {
  curl -fsS -u admin:bench-password "http://$HTTP/api/v1/clusters/$1/services/$2/roles" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["items"]; sys.exit(0 if r and all(x["status"]=="running" and x["health"]=="good" for x in r) else 1)'
}
echo "## drover env up / down of templates/zk-redis.yaml (3 containers), $RUNS runs, binaries $BIN"
for i in $(seq 1 "$RUNS"); do
  name=bench-$i
  t0=$(now)
  "$BIN/drover" env up "$name" -f zk-redis --image drover/agent:bench --network "$NET" --ttl 1h \
    >"$WORK/up-$i.txt" 2>"$WORK/up-$i.err"
  t1=$(now)
  until all_healthy "$name" zk && all_healthy "$name" cache; do sleep 0.2; done
  t2=$(now)
  # Where the time went: the instantiation's slowest steps.
  cmd=$(curl -fsS -u admin:bench-password "http://$HTTP/api/v1/environments/$name" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["command_id"])')
  curl -fsS -u admin:bench-password "http://$HTTP/api/v1/commands/$cmd" | python3 -c '
import json, sys
from datetime import datetime
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
steps = [(t(s["finished_at"]) - t(s["started_at"]), s["description"]) for s in json.load(sys.stdin)["steps"]
         if s.get("started_at") and s.get("finished_at")]
print("  slowest steps: " + "; ".join(f"{d:.1f} s {desc[:60]}" for d, desc in sorted(steps, reverse=True)[:4]))'
  "$BIN/drover" env down "$name" >&2
  t3=$(now)
  left=$(docker ps -aq --filter "name=$name-" | wc -l)
  python3 - "$t0" "$t1" "$t2" "$t3" "$left" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
print(f"run: up {t1 - t0:.1f} s (command done), every role healthy {t2 - t0:.1f} s; down {t3 - t2:.1f} s; "
      f"containers left {sys.argv[5]}")
PY
done
grep -h "containers enrolled" "$WORK"/up-*.err | head -3 || true
