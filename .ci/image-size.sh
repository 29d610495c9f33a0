#!/usr/bin/env bash
# CI / maintainers: the container image's size for the current tree and for an older commit, built the same way on
# the same base image, so that the README's "before / after" figure can be re-measured:
#   .ci/image-size.sh [REV]        (default REV: 9747328^, the last commit whose container installed training packages)
# Needs a running Docker engine (.ci/start-docker.sh) and CI_BASE_IMAGE (.ci/make-base-image.sh). Prints the total
# image size and what the Dockerfile adds on top of the base image (Python packages + code + weights).
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:-9747328^}
BASE=${CI_BASE_IMAGE:-midog-ci-base:bookworm-torch2.13.0-cpu}
ca_bundle=/etc/ssl/certs/ca-certificates.crt
export DOCKER_BUILDKIT=0 BASE_IMAGE=$BASE DOCKER_BUILD_ARGS="--network host"
[ -f "$ca_bundle" ] && export EXTRA_CA_CERT=$ca_bundle

worktree=$(mktemp -d)
cleanup() { git worktree remove --force "$worktree" >/dev/null 2>&1 || true; git worktree prune; }
trap cleanup EXIT
git worktree add --detach "$worktree" "$REV" >/dev/null

size() { docker image inspect "$1" --format '{{.Size}}'; }
base=$(size "$BASE")
measure() {  # name, folder: build, print, delete (vfs keeps a full copy per layer: one image at a time)
    (cd "$2" && IMAGE=$1 ./build.sh >/dev/null)
    awk -v n="$1" -v t="$(size "$1")" -v b="$base" \
        'BEGIN { printf "%-18s total %6.2f GB   added to the base image %6.0f MB\n", n, t / 1e9, (t - b) / 1e6 }'
    docker image rm "$1" >/dev/null
}
measure midog-size-before "$worktree"
measure midog-size-now .
echo "(base image $BASE: $(awk -v b="$base" 'BEGIN { printf "%.2f GB", b / 1e9 }'); before = $(git rev-parse --short "$REV"))"
