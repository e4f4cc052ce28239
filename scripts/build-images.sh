#!/usr/bin/env bash
# Builds Drover's container images without any image registry:
#
#   drover/base   minimal Debian (debootstrap --variant=minbase + docker import)
#   drover/agent  drover/base + drover-agent as the entry point
#   drover/sshd   drover/base + openssh-server, no agent
#   drover/sshd-systemd  drover/sshd + systemd as PID 1 (built only when asked for)
#
# Each image carries a `drover.inputs` label, a hash of what it was built from
# (recipe files, the agent binary, the parent image). An image whose label
# matches is left alone, so a second run with nothing changed takes seconds.
# See docs/containers.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: scripts/build-images.sh [--rebuild] [--agent-bin PATH] [--tag TAG] [--base-tag TAG] [IMAGE...]

IMAGE is base, agent, sshd or sshd-systemd (default: the first three; a child image builds its
parent first if that is missing).

  --rebuild         rebuild even when an image is up to date (a new debootstrap too)
  --agent-bin PATH  the drover-agent binary to put in drover/agent
                    (env DROVER_AGENT_BIN; default target/agent/drover-agent, the
                    size-optimised `agent` profile, or under CARGO_TARGET_DIR;
                    built with cargo if missing)
  --tag TAG         image tag (env DROVER_IMAGE_TAG; default latest)
  --base-tag TAG    the drover/base tag the other images build on (default:
                    --tag); lets tests put their own agent on the usual base
EOF
}

rebuild=0
agent_bin=${DROVER_AGENT_BIN:-}
tag=${DROVER_IMAGE_TAG:-latest}
base_tag=
wanted=()
while [ $# -gt 0 ]; do
  case $1 in
    --rebuild) rebuild=1 ;;
    --agent-bin) agent_bin=${2:?--agent-bin needs a path}; shift ;;
    --agent-bin=*) agent_bin=${1#*=} ;;
    --tag) tag=${2:?--tag needs a value}; shift ;;
    --tag=*) tag=${1#*=} ;;
    --base-tag) base_tag=${2:?--base-tag needs a value}; shift ;;
    --base-tag=*) base_tag=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    base|agent|sshd|sshd-systemd) wanted+=("$1") ;;
    *) echo "build-images.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[ ${#wanted[@]} -gt 0 ] || wanted=(base agent sshd)
base_tag=${base_tag:-$tag}

started=$SECONDS
log() { printf '==> [%3ds] %s\n' "$((SECONDS - started))" "$*"; }
die() { echo "build-images.sh: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker engine (is dockerd running, may this user use it?)"

tmp_dirs=()
cleanup() { for d in "${tmp_dirs[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT
new_tmp() {
  local d
  d=$(mktemp -d "${TMPDIR:-/var/tmp}/drover-image.XXXXXX")
  tmp_dirs+=("$d")
  printf '%s\n' "$d"
}

sha() { sha256sum | cut -c1-64; }
# The drover.inputs label of an image, empty when it does not exist.
inputs_of() { docker image inspect --format '{{ index .Config.Labels "drover.inputs" }}' "$1" 2>/dev/null || true; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
size_of() { docker image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.1f MiB", $1 / 1048576 }'; }

# Removes the image a rebuild replaced, if nothing else uses it.
drop_replaced() {
  local old=$1 name=$2
  if [ -n "$old" ] && [ "$old" != "$(image_id "$name")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}

# Whether $1 must be (re)built for inputs hash $2.
stale() {
  local name=$1 hash=$2 have
  have=$(inputs_of "$name")
  if [ "$rebuild" = 1 ]; then
    log "$name: rebuilding (--rebuild)"
    return 0
  elif [ -z "$have" ]; then
    log "$name: not built yet"
    return 0
  elif [ "$have" != "$hash" ]; then
    log "$name: inputs changed (${have:0:12} -> ${hash:0:12}); rebuilding"
    return 0
  fi
  log "$name: up to date (inputs ${hash:0:12}, $(size_of "$name"))"
  return 1
}

build_base() {
  local name=drover/base:$base_tag hash old root
  hash=$(cat images/base/recipe.env images/base/finish.sh | sha)
  stale "$name" "$hash" || return 0
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  # shellcheck source=../images/base/recipe.env
  . images/base/recipe.env
  root=$(new_tmp)/rootfs
  log "$name: debootstrap --variant=$VARIANT $SUITE with $INCLUDE (about a minute)"
  if ! debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" \
       > "$root.log" 2>&1; then
    tail -n 30 "$root.log" >&2
    die "debootstrap failed (full log above, last 30 lines)"
  fi
  sh images/base/finish.sh "$root"
  log "$name: importing $(du -sh "$root" | cut -f1) into Docker"
  old=$(image_id "$name")
  tar --numeric-owner -C "$root" -c . | docker import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "CMD [\"/bin/bash\"]" \
    --change "LABEL drover.inputs=$hash" \
    --change "LABEL org.opencontainers.image.title=drover/base" \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE $VARIANT with $INCLUDE\"" \
    - "$name" >/dev/null
  drop_replaced "$old" "$name"
  log "$name: built ($(size_of "$name"))"
}

# Builds images/$1 on top of drover/base with the context dir $2.
docker_build() {
  local what=$1 ctx=$2 hash=$3 name=drover/$1:$tag old
  shift 3
  old=$(image_id "$name")
  if ! docker build --quiet --build-arg "BASE=drover/base:$base_tag" \
       --label "drover.inputs=$hash" --label "org.opencontainers.image.title=drover/$what" \
       "$@" -t "$name" "$ctx" > "$ctx.log" 2>&1; then
    cat "$ctx.log" >&2
    die "docker build of $name failed"
  fi
  drop_replaced "$old" "$name"
}

ensure_base() {
  [ -n "$(image_id "drover/base:$base_tag")" ] || build_base
}

build_agent() {
  local name=drover/agent:$tag hash ctx bin
  ensure_base
  bin=${agent_bin:-${CARGO_TARGET_DIR:-target}/agent/drover-agent}
  if [ ! -x "$bin" ]; then
    if [ -n "$agent_bin" ]; then
      die "agent binary $bin not found or not executable"
    fi
    log "$name: $bin missing; cargo build --profile agent -p drover-agent"
    cargo build --profile agent --locked -p drover-agent
  fi
  hash=$( { cat images/agent/Dockerfile; sha < "$bin"; image_id "drover/base:$base_tag"; } | sha)
  stale "$name" "$hash" || return 0
  ctx=$(new_tmp)
  cp images/agent/Dockerfile "$ctx/"
  cp "$bin" "$ctx/drover-agent"
  log "$name: docker build with $bin ($(du -h "$bin" | cut -f1))"
  docker_build agent "$ctx" "$hash"
  # The binary must run on the base image's C library.
  docker run --rm --entrypoint /usr/local/bin/drover-agent "$name" --version >/dev/null \
    || die "$bin does not run in $name (built against a newer glibc than Debian's?)"
  log "$name: built ($(size_of "$name"))"
}

build_sshd() {
  local name=drover/sshd:$tag hash ctx
  ensure_base
  hash=$( { cat images/sshd/Dockerfile images/sshd/entrypoint.sh; image_id "drover/base:$base_tag"; } | sha)
  stale "$name" "$hash" || return 0
  ctx=$(new_tmp)
  cp images/sshd/Dockerfile images/sshd/entrypoint.sh "$ctx/"
  log "$name: docker build (apt-get install openssh-server)"
  # The host's network: apt must reach the Debian mirror the way the host does.
  docker_build sshd "$ctx" "$hash" --network host
  log "$name: built ($(size_of "$name"))"
}

build_sshd-systemd() {
  local name=drover/sshd-systemd:$tag hash ctx
  build_once sshd
  hash=$( { cat images/sshd-systemd/Dockerfile; image_id "drover/sshd:$tag"; } | sha)
  stale "$name" "$hash" || return 0
  ctx=$(new_tmp)
  cp images/sshd-systemd/Dockerfile "$ctx/"
  log "$name: docker build (apt-get install systemd)"
  docker_build sshd-systemd "$ctx" "$hash" --network host --build-arg "SSHD=drover/sshd:$tag"
  log "$name: built ($(size_of "$name"))"
}

# Each image at most once per run, whichever asks for it first.
finished=" "
build_once() {
  case $finished in *" $1 "*) return 0 ;; esac
  "build_$1"
  finished+="$1 "
}

for image in "${wanted[@]}"; do
  build_once "$image"
done
log "done: $(for i in "${wanted[@]}"; do [ "$i" = base ] && t=$base_tag || t=$tag; printf 'drover/%s:%s ' "$i" "$t"; done)"
