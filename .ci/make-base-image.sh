#!/usr/bin/env bash
# CI only: make a CPU stand-in for the PyTorch base image, because no container registry is reachable here.
# Debian bookworm (debootstrap --variant=minbase) + python3 + a venv at /opt/venv (on PATH, so `python` and
# `pip install` work without PEP 668 errors) with the CPU torch 2.13.0 wheel preinstalled, imported with
# `docker import`. Prints nothing but progress; the image name is CI_BASE_IMAGE.
#   CI_BASE_IMAGE        image name (default midog-ci-base:bookworm-torch2.13.0-cpu)
#   CI_BASE_FORCE=1      rebuild even if the image already exists in the engine
#   DEBIAN_MIRROR        Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   CI_CACHE_DIR         where the finished root file system is kept as a tar for later runs on the same machine
#                        (default /var/cache/midog-ci; "" disables the cache)
set -euo pipefail
SECONDS=0
log() { echo "[make-base-image +${SECONDS}s] $*"; }

IMAGE=${CI_BASE_IMAGE:-midog-ci-base:bookworm-torch2.13.0-cpu}
TORCH_VERSION=2.13.0
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${CI_CACHE_DIR-/var/cache/midog-ci}
CACHE_TAR=${CACHE_DIR:+$CACHE_DIR/base-rootfs-$SUITE-torch$TORCH_VERSION-v1.tar}

if [ "${CI_BASE_FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already present; reusing it (CI_BASE_FORCE=1 rebuilds)"
    exit 0
fi

import_rootfs_tar() {
    log "importing $1 as $IMAGE"
    docker import \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
        --change 'CMD ["/bin/bash"]' \
        - "$IMAGE" <"$1" >/dev/null
    docker run --rm --network none "$IMAGE" python -W ignore -c \
        "import torch, sys; print('[make-base-image] image ok: python', sys.version.split()[0], 'torch', torch.__version__)"
    log "done"
}

if [ -n "$CACHE_TAR" ] && [ -s "$CACHE_TAR" ]; then
    import_rootfs_tar "$CACHE_TAR"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

WORK=$(mktemp -d /tmp/midog-ci-base.XXXXXX)
# Work in memory when possible: deleting a 1 GB tree on this machine's disk takes over a minute.
if mount -t tmpfs -o size=6g tmpfs "$WORK" 2>/dev/null; then
    cleanup() { umount -l "$WORK"; rmdir "$WORK"; }
else
    cleanup() { rm -rf "$WORK"; }
fi
trap cleanup EXIT
ROOTFS=$WORK/rootfs
WHEELS=$WORK/wheels
mkdir -p "$ROOTFS" "$WHEELS"

# 1. CPU torch wheel and its dependencies, fetched on the host (the host's pip knows where the local wheel is).
torch_whl=$(find /opt/wheels -maxdepth 1 -name "torch-${TORCH_VERSION}+cpu*cp311*.whl" 2>/dev/null | head -n 1 || true)
if [ -n "$torch_whl" ]; then
    log "using local wheel $torch_whl"
    cp "$torch_whl" "$WHEELS/"
else
    log "no local CPU wheel in /opt/wheels; pip download torch==$TORCH_VERSION --no-deps"
    python3 -m pip download -q --no-deps --only-binary=:all: --dest "$WHEELS" "torch==$TORCH_VERSION"
fi
torch_whl=$(find "$WHEELS" -maxdepth 1 -name "torch-${TORCH_VERSION}*.whl" | head -n 1)
# dependencies of that wheel (filelock, sympy, networkx, jinja2, ...)
python3 -m pip download -q --only-binary=:all: --dest "$WHEELS" "$torch_whl"

# 2. Minimal Debian with Python 3.11 (same ABI as the wheel).
log "debootstrap $SUITE (minbase) from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }

# 3. venv with torch, inside the rootfs.
mkdir -p "$ROOTFS/tmp/wheels"
cp "$WHEELS"/*.whl "$ROOTFS/tmp/wheels/"
# env -i: none of the host's pip settings (find-links, extra indexes, constraints) leak into the chroot.
in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"; }
in_root /usr/bin/python3 -m venv /opt/venv
in_root PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/python -m pip install -q --no-cache-dir \
    --no-index --find-links /tmp/wheels "/tmp/wheels/$(basename "$torch_whl")"
in_root /opt/venv/bin/python -W ignore -c "import torch; print('[make-base-image] torch', torch.__version__, 'in rootfs')"

# 4. Trim (the .pyc files stay: the container cannot write them at run time) and import.
rm -rf "$ROOTFS/tmp/wheels" "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/root/.cache
if [ -n "$CACHE_TAR" ]; then
    mkdir -p "$CACHE_DIR"
    tar -C "$ROOTFS" --numeric-owner -cf "$CACHE_TAR.part" . && mv "$CACHE_TAR.part" "$CACHE_TAR"
    import_rootfs_tar "$CACHE_TAR"
else
    tar -C "$ROOTFS" --numeric-owner -cf "$WORK/rootfs.tar" .
    rm -rf "$ROOTFS"
    import_rootfs_tar "$WORK/rootfs.tar"
fi
