#!/usr/bin/env bash
# Runs Drover on this machine: a manager on embedded SQLite (data in
# ./drover-data) plus a local agent enrolled automatically, so the console
# shows one live host. Ctrl-C stops both; run it again to resume.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DROVER_DATA_DIR:-./drover-data}
HTTP=${DROVER_HTTP_ADDR:-127.0.0.1:7180}
GRPC_PORT=${DROVER_GRPC_PORT:-7182}
BIN=target/release

echo "==> building (release; the first build takes a few minutes)"
cargo build --release --locked --bin drover-manager --bin drover-agent --bin drover

mkdir -p "$DATA"
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$BIN/drover-manager" --data-dir "$DATA" --http-addr "$HTTP" --grpc-addr "127.0.0.1:$GRPC_PORT" &
pids+=($!)

echo "==> waiting for the manager"
for _ in $(seq 1 100); do
  if curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then echo "error: the manager exited; see its output above" >&2; exit 1; fi
  sleep 0.2
done

export DROVER_URL="http://$HTTP"
if [ -n "${DROVER_ADMIN_PASSWORD:-}" ]; then export DROVER_PASSWORD="$DROVER_ADMIN_PASSWORD"; else export DROVER_PASSWORD_FILE="$DATA/initial-admin-password"; fi

AGENT_DIR="$DATA/local-agent"
token_args=()
if [ ! -f "$AGENT_DIR/cert.pem" ]; then
  token=$("$BIN/drover" --output json tokens create --ttl 10m --max-uses 1 --label local=true | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
  [ -n "$token" ] || { echo "error: could not create an enrollment token" >&2; exit 1; }
  token_args=(--token "$token")
fi
"$BIN/drover-agent" --manager "https://127.0.0.1:$GRPC_PORT" --data-dir "$AGENT_DIR" "${token_args[@]}" &
pids+=($!)

cat <<MSG

Drover is running.
  console:  http://$HTTP/   (user admin, password in $DATA/initial-admin-password)
  REST API: curl -u admin:\$(cat $DATA/initial-admin-password) http://$HTTP/api/v1/hosts
  CLI:      DROVER_PASSWORD_FILE=$DATA/initial-admin-password $BIN/drover hosts list
Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}"
