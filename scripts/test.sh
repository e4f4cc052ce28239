#!/usr/bin/env bash
# Runs Drover's whole test suite on a fresh Debian 12 machine: installs the
# system packages the tests need (PostgreSQL, chromium and chromedriver,
# redis-server, debootstrap, openssh-client, python3-venv, slapd, prometheus,
# prometheus-alertmanager, python3-aiosmtpd, nginx-light, zookeeper; ZooKeeper and Java
# come from parcels the tests build), starts PostgreSQL with a test role, builds
# the binaries the end-to-end tests run, checks the REST API against its OpenAPI
# document with schemathesis (scripts/schemathesis.sh; installed from PyPI into
# target/ the first time), builds the container images (Docker must be running;
# nothing is pulled), then runs every test in the workspace against SQLite and
# PostgreSQL. Exits non-zero when schemathesis or any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
# The console test drives a real browser.
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Real services: the agent's supervisor tests run the host's redis-server; the end-to-end
# tests run Redis and ZooKeeper from parcels they build (target/test-parcels).
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
# drover/base is made with debootstrap (scripts/build-images.sh).
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# The SSH bootstrap tests make a throw-away key pair with ssh-keygen.
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
# scripts/schemathesis.sh installs schemathesis into a virtualenv.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The LDAP sign-in tests start their own slapd (manager/tests/ldap.rs).
[ -x /usr/sbin/slapd ] || missing+=(slapd)
command -v ldapmodify >/dev/null 2>&1 || missing+=(ldap-utils)
# Monitoring (#13): a real Prometheus scrapes the manager, a real Alertmanager takes alerts
# and aiosmtpd is the SMTP server e-mail notifications are sent to.
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
# The agent's collector and supervisor tests run the host's nginx and ZooKeeper (the
# end-to-end tests use the parcels); DROVER_REQUIRE_SERVICES=1 below makes them fail, not
# skip, when a service is missing.
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
# mold links the ~80 test binaries several times faster than GNU ld (see "linker" below).
command -v mold >/dev/null 2>&1 || missing+=(mold)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The end-to-end tests build parcels from the recipes in parcels/ (drover parcel build), which
# resolves and fetches Debian packages with apt-cache and apt-get download: both need the
# package lists, which a fresh machine or image may not have.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  log "fetching the package lists for the parcel builds"
  apt-get update -qq
fi

log "starting PostgreSQL for the store tests"
pg_env=$(bash scripts/postgres-test-db.sh)
# Only the export line is trusted; anything else on stdout is reported, not run.
DROVER_TEST_POSTGRES_URL=$(printf '%s\n' "$pg_env" | sed -n 's/^export DROVER_TEST_POSTGRES_URL=//p' | tail -n1)
if [ -z "$DROVER_TEST_POSTGRES_URL" ]; then
  echo "scripts/test.sh: postgres-test-db.sh printed no DROVER_TEST_POSTGRES_URL; it printed: $pg_env" >&2
  exit 1
fi
export DROVER_TEST_POSTGRES_URL
export DROVER_REQUIRE_SERVICES=1

# The end-to-end tests open many sockets.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# A full build takes several GiB; a linker dying of SIGBUS is how a full disk shows.
# Incremental compilation state would double what a one-off build leaves in target/.
export CARGO_INCREMENTAL=0
log "disk: $(df -h --output=avail . | tail -n1 | tr -d ' ') free where target/ is built"
# Linking dominates a clean test build (some 80 test binaries, each with the manager or the
# agent in it): link with mold. The default linker is `cc` found on PATH, so a `cc` that adds
# -fuse-ld=mold changes nothing cargo fingerprints: builds made outside this script stay valid.
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir/linker"
printf '#!/bin/sh\nexec /usr/bin/cc -fuse-ld=mold "$@"\n' >"$target_dir/linker/cc"
chmod +x "$target_dir/linker/cc"
export PATH="$PWD/$target_dir/linker:$PATH"

log "building binaries"
cargo build --workspace --bins --locked

# Every operation of the REST API against its own OpenAPI document, in the background while the
# images and the test binaries build (it needs only the manager binary). A failure fails the
# run, but only at the end: the tests below still run.
log "checking the REST API against its OpenAPI document (schemathesis), in the background"
api_log=$(mktemp)
out=$(mktemp)
msgs=$(mktemp)
trap 'rm -f "$api_log" "$out" "$msgs"' EXIT
bash scripts/schemathesis.sh "$target_dir/debug/drover-manager" >"$api_log" 2>&1 &
api_pid=$!

# The container tests run the agent under test in drover/agent:e2e, on
# drover/base:latest (a debootstrap the first time, about two minutes; seconds
# when nothing changed).
log "building container images"
scripts/build-images.sh --tag e2e --base-tag latest --agent-bin "$target_dir/debug/drover-agent" agent sshd sshd-systemd

log "building the test binaries"
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$msgs"

api_status=0
wait "$api_pid" || api_status=$?
log "schemathesis report"
cat "$api_log"

# The test binaries in two lanes (scripts/test-lanes.py): the end-to-end ones mostly wait on
# containers, agents and browsers, so two side by side take little more than one. Every
# binary runs (no fail-fast); its output is printed whole when it ends, with its time.
log "running tests (${DROVER_TEST_LANES:-2} lanes)"
status=0
python3 scripts/test-lanes.py "$msgs" -- "$@" 2>&1 | tee "$out" || status=$?
log "running doc tests"
cargo test --workspace --locked --doc "$@" 2>&1 | tee -a "$out" || status=$?
if [ "$api_status" -eq 0 ]; then
  echo "schemathesis: passed"
else
  echo "schemathesis: failed (exit $api_status); see its report above"
  [ "$status" -ne 0 ] || status=$api_status
fi
exit "$status"
