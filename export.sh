#!/usr/bin/env bash
# Save the built image as the gzipped tarball that is uploaded to grand-challenge.org.
#
#   ./export.sh            -> midog-p4-detector.tar.gz
#
# Environment (all optional):
#   IMAGE    image to save (default: midog-p4-detector)
#   OUTPUT   tarball to write (default: <image name without tag>.tar.gz, in the current folder)
set -euo pipefail

IMAGE=${IMAGE:-midog-p4-detector}
name=${IMAGE##*/}
OUTPUT=${OUTPUT:-${name%%:*}.tar.gz}

docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "export.sh: image $IMAGE not found: run ./build.sh first" >&2; exit 1; }
echo "export.sh: docker save $IMAGE | gzip -c > $OUTPUT"
docker save "$IMAGE" | gzip -c > "$OUTPUT.part"
mv "$OUTPUT.part" "$OUTPUT"
echo "export.sh: wrote $OUTPUT ($(du -h "$OUTPUT" | cut -f1), $(stat -c %s "$OUTPUT") bytes)"
