#!/usr/bin/env bash
# CI only: stop the Docker engine that .ci/start-docker.sh started (by its pid file; nothing else), and unmount
# the tmpfs data root if start-docker.sh mounted one.
set -uo pipefail
DATA_ROOT=${DOCKER_CI_DATA_ROOT:-/var/lib/docker-ci}
RUN_DIR=${DOCKER_CI_RUN_DIR:-/run/docker-ci}
PIDFILE=$RUN_DIR/dockerd.pid
if [ -f "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        echo "[stop-docker] stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid"
            sleep 1
        fi
    fi
    rm -f "$PIDFILE"
fi
# mounts the engine may leave behind (network namespace files, shm of containers)
grep -o " $RUN_DIR/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
if [ -f "$RUN_DIR/data-root-tmpfs" ]; then
    echo "[stop-docker] unmounting the tmpfs data root $DATA_ROOT"
    # the engine's own mounts below the data root go first
    grep -o " $DATA_ROOT/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
    umount -l "$DATA_ROOT" && rm -f "$RUN_DIR/data-root-tmpfs"
fi
exit 0
