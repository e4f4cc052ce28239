#!/usr/bin/env bash
# Measures SSH bootstrap (docs/benchmarks.md, "SSH bootstrap"): starts N
# drover/sshd containers on a private Docker network, a release manager on its
# gateway, bootstraps all N in one command (key login, accept-new), and prints
# the time to the last healthy host, per-host step durations, the agent binary
# size and the manager's peak RSS. Removes everything it made.
#
#   scripts/bench-bootstrap.sh [N] [PARALLELISM]   (defaults 20 and 20)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
PAR=${2:-20}
BIN=${BIN:-target/release}
WORK=$(mktemp -d /tmp/drover-bench-ssh.XXXXXX)
NET=drover-bench-ssh-$$
HTTP=127.0.0.1:17190
export DROVER_ADMIN_PASSWORD=bench-password

[ "$BIN" = target/release ] && cargo build --release --locked --bin drover-manager --bin drover-agent >&2
scripts/build-images.sh sshd >&2

third=$((RANDOM % 200 + 20))
docker network create --subnet "10.233.$third.0/24" --gateway "10.233.$third.1" "$NET" >/dev/null
GW=10.233.$third.1
mgr_pid=
cleanup() {
  [ -n "$mgr_pid" ] && kill "$mgr_pid" 2>/dev/null || true
  docker ps -aq --filter "label=drover-bench=$NET" | xargs -r docker rm -f >/dev/null
  docker network rm "$NET" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N "" -C bench -f "$WORK/key"
addresses=()
for i in $(seq 1 "$N"); do
  ip=10.233.$third.$((i + 10))
  docker run -d --label "drover-bench=$NET" --network "$NET" --ip "$ip" --hostname "bench-ssh-$i" \
    -e SSH_AUTHORIZED_KEYS="$(cat "$WORK/key.pub")" drover/sshd:latest >/dev/null
  addresses+=("$ip")
done
for ip in "${addresses[@]}"; do
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$ip/22") 2>/dev/null && break; sleep 0.1; done
done

"$BIN/drover-manager" --data-dir "$WORK/manager" --http-addr "$HTTP" --grpc-addr "$GW:17192" \
  --advertise "$GW" --heartbeat-interval 2s >"$WORK/manager.log" 2>&1 &
mgr_pid=$!
for _ in $(seq 1 100); do curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

python3 - "$WORK/key" "$PAR" "${addresses[@]}" >"$WORK/req.json" <<'EOF'
import json, sys
key, par, addrs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(json.dumps({"addresses": addrs, "auth": {"private_key": open(key).read()},
                  "host_key_policy": "accept-new", "parallelism": par, "labels": {"bench": "ssh"}}))
EOF

agent_size=$(stat -c %s "$BIN/drover-agent")
echo "## SSH bootstrap of $N hosts, parallelism $PAR, agent binary $((agent_size / 1048576)) MiB"
start=$(date +%s.%N)
id=$(curl -fsS -u admin:bench-password -H 'content-type: application/json' -d @"$WORK/req.json" \
  "http://$HTTP/api/v1/hosts/bootstrap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
peak=0
while :; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$mgr_pid/status")
  [ "$rss" -gt "$peak" ] && peak=$rss
  state=$(curl -fsS -u admin:bench-password "http://$HTTP/api/v1/commands/$id" | tee "$WORK/cmd.json" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  [ "$state" != running ] && break
  sleep 0.2
done
end=$(date +%s.%N)
python3 - "$WORK/cmd.json" "$start" "$end" "$peak" <<'EOF'
import json, sys, re
c = json.load(open(sys.argv[1]))
total = float(sys.argv[3]) - float(sys.argv[2])
per = sorted(float(m.group(1)) for s in c["steps"] for m in [re.search(r"\(([0-9.]+) s\)$", s["message"])] if m)
ok = sum(s["state"] == "succeeded" for s in c["steps"])
print(f"command {c['state']}: {ok}/{len(c['steps'])} hosts enrolled and healthy in {total:.1f} s "
      f"({ok / total:.2f} hosts/s)")
if per:
    print(f"per host: min {per[0]:.1f} s, median {per[len(per) // 2]:.1f} s, max {per[-1]:.1f} s")
print(f"manager peak RSS during the run: {int(sys.argv[4]) / 1024:.0f} MiB")
for s in c["steps"]:
    if s["state"] != "succeeded":
        print("  ", s["description"], s["state"], s["message"])
EOF
