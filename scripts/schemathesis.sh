#!/usr/bin/env bash
# Checks the REST API against its own OpenAPI document with schemathesis:
# starts a manager (the binary given, default target/debug/drover-manager; this
# script builds nothing) on free loopback ports with a throw-away data dir,
# runs every schemathesis check (server errors, undocumented status codes,
# response schemas, valid requests refused, invalid ones accepted, ...) on
# every operation except SSH bootstrap and the Docker provider, which would
# reach out to machines and a Docker engine, then stops the manager. Exits
# non-zero on any failure or a manager panic. A fixed seed and a bounded
# number of examples per operation (about a minute); what the requests find
# on the server still varies a little from run to run. The statuses that
# count as refusing a valid request for a good reason, and the one check that
# cannot hold for an operation, are in scripts/schemathesis.toml, with why.
#
# Usage: scripts/schemathesis.sh [MANAGER_BINARY] [extra `st run` options...]
# Env: SCHEMATHESIS_MAX_EXAMPLES (default 50), SCHEMATHESIS_SEED (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
target_dir=${CARGO_TARGET_DIR:-target}
manager=${1:-$target_dir/debug/drover-manager}
[ $# -gt 0 ] && shift
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-50}
seed=${SCHEMATHESIS_SEED:-1}

log() { printf '==> schemathesis: %s\n' "$*" >&2; }

if [ ! -x "$manager" ]; then
  echo "scripts/schemathesis.sh: no manager binary at $manager; build it with cargo build -p drover-manager --bins" >&2
  exit 1
fi

# schemathesis lives in its own virtualenv (a Debian system Python refuses
# pip installs), kept under the target dir so later runs reuse it.
venv=$(realpath -m "$target_dir/schemathesis-venv")
st=$venv/bin/st
if ! "$st" --version 2>/dev/null | grep -qx "st, version $SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
manager_pid=
cleanup() {
  if [ -n "$manager_pid" ]; then
    kill "$manager_pid" 2>/dev/null || true
    wait "$manager_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
log "starting $manager"
DROVER_ADMIN_PASSWORD=$password "$manager" \
  --data-dir "$work/data" \
  --http-addr 127.0.0.1:0 \
  --grpc-addr 127.0.0.1:0 \
  --docker-socket "$work/no-docker.sock" \
  --log-format json \
  >"$work/manager.log" 2>&1 &
manager_pid=$!

# The manager prints its address once it listens.
addr=
for _ in $(seq 1 300); do
  addr=$(sed -n 's|.*console and REST API: http://\([0-9.:]*\)/.*|\1|p' "$work/manager.log" | head -n1)
  [ -n "$addr" ] && break
  if ! kill -0 "$manager_pid" 2>/dev/null; then
    echo "scripts/schemathesis.sh: the manager exited at start:" >&2
    cat "$work/manager.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "scripts/schemathesis.sh: the manager printed no address within 30s:" >&2
  cat "$work/manager.log" >&2
  exit 1
fi
log "manager at http://$addr; $max_examples examples per operation, seed $seed"

status=0
# Every check runs (scripts/schemathesis.toml says so, with the one
# per-operation exception and why). Run in the temp dir, where schemathesis
# leaves its cache. One worker: with two, Hypothesis sometimes parses Python
# source in two threads at once, and CPython 3.11's ast module, whose
# recursion-depth count the threads share, then fails the run with "AST
# constructor recursion depth mismatch" (one run in six here).
config=$(realpath scripts/schemathesis.toml)
(cd "$work" && "$st" --config-file "$config" run "http://$addr/api/v1/openapi.json" \
  --auth "admin:$password" \
  --exclude-path-regex '^/api/v1/(hosts/bootstrap|providers/)' \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --generation-database none \
  --workers 1 \
  --no-color \
  "$@") || status=$?

if ! kill -0 "$manager_pid" 2>/dev/null; then
  echo "scripts/schemathesis.sh: the manager died during the run; its last log lines:" >&2
  tail -n 40 "$work/manager.log" >&2
  manager_pid=
  status=1
fi
# A panic is a bug even when the request that caused it got an answer.
if grep -q 'panicked' "$work/manager.log"; then
  echo "scripts/schemathesis.sh: the manager panicked:" >&2
  grep -A5 'panicked' "$work/manager.log" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "scripts/schemathesis.sh: failed (schemathesis exit $status); see above" >&2
fi
exit "$status"
