#!/usr/bin/env bash
# Build the grand-challenge algorithm image.
#
#   ./build.sh [extra docker build arguments...]
#
# Environment (all optional):
#   IMAGE              image name/tag to build (default: midog-p4-detector)
#   BASE_IMAGE         base image with Python >= 3.11 and torch (default: the Dockerfile's,
#                      pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime)
#   EXTRA_CA_CERT      host path of a PEM file with extra CA certificate(s) that pip must trust during the build
#                      (TLS-intercepting proxies). It is staged in the build context as .build-extra-ca.pem for the
#                      build and removed afterwards; used only by pip in the build, never at run time.
#   DOCKER_BUILD_ARGS  extra `docker build` arguments, split on whitespace (e.g. "--network host --no-cache")
# Works with BuildKit and with the classic builder (DOCKER_BUILDKIT=0).
set -euo pipefail

cd "$(dirname "$0")"
IMAGE=${IMAGE:-midog-p4-detector}
STAGED_CA=.build-extra-ca.pem

args=(--tag "$IMAGE")
if [ -n "${BASE_IMAGE:-}" ]; then
    args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

staged=0
cleanup() { if [ "$staged" = 1 ]; then rm -f "$STAGED_CA"; fi; }
trap cleanup EXIT
if [ -n "${EXTRA_CA_CERT:-}" ]; then
    if [ ! -f "$EXTRA_CA_CERT" ]; then
        echo "build.sh: EXTRA_CA_CERT=$EXTRA_CA_CERT is not a file" >&2
        exit 2
    fi
    if [ "$(realpath "$EXTRA_CA_CERT")" != "$(realpath -m "$STAGED_CA")" ]; then
        cp "$EXTRA_CA_CERT" "$STAGED_CA"
        staged=1
    fi
fi

# shellcheck disable=SC2206  # word splitting of DOCKER_BUILD_ARGS is intended
extra=(${DOCKER_BUILD_ARGS:-})

echo "build.sh: docker build ${args[*]} ${extra[*]} $* ."
docker build "${args[@]}" "${extra[@]}" "$@" .
echo "build.sh: built $IMAGE"
