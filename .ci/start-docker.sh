#!/usr/bin/env bash
# CI only: install (if missing) and start a Docker engine by hand, as this CI machine allows it:
# its own data root, vfs storage, no iptables, no default bridge, explicit default ulimits.
# Leaves the daemon running; stop it with .ci/stop-docker.sh (which uses the pid file written here).
#
#   DOCKER_CI_DATA_ROOT    data root (default /var/lib/docker-ci, outside the repository)
#   DOCKER_CI_TMPFS_SIZE   mount a tmpfs of this size on the data root (default 20g, a cap, not a reservation; "0" = plain disk).
#                          vfs copies the whole image for every build step and container, and deleting those
#                          copies on this machine's disk takes ~1 min per GB: in memory the build is 10x faster.
#   DOCKER_CI_RUN_DIR      pid file, log and exec root (default /run/docker-ci)
set -euo pipefail

DATA_ROOT=${DOCKER_CI_DATA_ROOT:-/var/lib/docker-ci}
TMPFS_SIZE=${DOCKER_CI_TMPFS_SIZE:-20g}
RUN_DIR=${DOCKER_CI_RUN_DIR:-/run/docker-ci}
PIDFILE=$RUN_DIR/dockerd.pid
LOG=$RUN_DIR/dockerd.log

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1 \
   || ! command -v debootstrap >/dev/null 2>&1; then
    echo "[start-docker] installing docker.io and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

if docker info >/dev/null 2>&1; then
    echo "[start-docker] a Docker engine already answers; using it"
    exit 0
fi

mkdir -p "$DATA_ROOT" "$RUN_DIR"
if [ "$TMPFS_SIZE" != 0 ] && ! mountpoint -q "$DATA_ROOT"; then
    mount -t tmpfs -o "size=$TMPFS_SIZE,mode=0711" tmpfs "$DATA_ROOT"
    touch "$RUN_DIR/data-root-tmpfs"   # tells stop-docker.sh to unmount it
fi
echo "[start-docker] starting dockerd (data root $DATA_ROOT$([ -f "$RUN_DIR/data-root-tmpfs" ] && echo ", tmpfs $TMPFS_SIZE"), log $LOG)"
# setsid: the daemon gets its own session, so it outlives this script; it is stopped by its pid only.
setsid dockerd \
    --data-root "$DATA_ROOT" \
    --exec-root "$RUN_DIR/exec" \
    --pidfile "$PIDFILE" \
    --storage-driver vfs \
    --iptables=false \
    --bridge=none \
    --default-ulimit nofile=20000:20000 \
    --default-ulimit nproc=4096:4096 \
    >"$LOG" 2>&1 </dev/null &

for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        echo "[start-docker] ready: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}')"
        exit 0
    fi
    sleep 1
done
echo "[start-docker] dockerd did not come up within 120 s; last log lines:" >&2
tail -n 40 "$LOG" >&2 || true
exit 1
