#!/usr/bin/env bash
# Run the built image the way grand-challenge does, once per track, and check each output against the expected one.
#
#   ./test.sh
#
# Track 1 (detection): the container gets test/container/input/ read-only at
# /input/images/histopathology-roi-cropout/ and a fresh writable host folder at /output/, with no network, 4 GB of
# memory, no capabilities, no privilege escalation, a read-only root file system with a tmpfs /tmp, at most 256
# processes, and the image's own non-root user. test/container/compare_output.py checks the schema of
# /output/mitotic-figures.json and compares it point by point with test/container/expected_output.json.
# Track 2 (MIDOG 2025, atypical): the same, with test/container/input-atypical/ (one TIFF stack of 128x128 crops) at
# /input/images/stacked-histopathology-roi-cropouts/; test/container/compare_classification.py checks
# /output/multiple-mitotic-figure-classification.json against test/container/expected_atypical_output.json.
# Exit code: 0 when both PASS, non-zero on FAIL (a comparison's, or the container's if it failed). The output
# folders are removed afterwards.
#
# Environment (all optional):
#   IMAGE            image to test (default: midog-p4-detector)
#   INPUT_DIR        folder with the input image (default: test/container/input)
#   EXPECTED_OUTPUT  expected JSON (default: test/container/expected_output.json)
#   ATYPICAL_INPUT_DIR, EXPECTED_ATYPICAL_OUTPUT  the same for track 2 (defaults under test/container/)
#   MEMORY           memory limit (default: 4g)
#   DOCKER_RUN_ARGS  extra `docker run` arguments, split on whitespace (e.g. "--gpus all")
#   SAVE_OUTPUT      also copy the container's mitotic-figures.json to this path
#   PYTHON           host Python used for the comparison (default: python3)
#   COMPARE_ABOVE    candidates below this probability are compared for information only (default: 0.3)
set -euo pipefail

cd "$(dirname "$0")"
IMAGE=${IMAGE:-midog-p4-detector}
INPUT_DIR=$(realpath "${INPUT_DIR:-test/container/input}")
EXPECTED=${EXPECTED_OUTPUT:-test/container/expected_output.json}
ATYPICAL_INPUT=$(realpath "${ATYPICAL_INPUT_DIR:-test/container/input-atypical}")
EXPECTED_ATYPICAL=${EXPECTED_ATYPICAL_OUTPUT:-test/container/expected_atypical_output.json}
MEMORY=${MEMORY:-4g}
PYTHON=${PYTHON:-python3}
# shellcheck disable=SC2206  # word splitting of DOCKER_RUN_ARGS is intended
extra=(${DOCKER_RUN_ARGS:-})

fail() { echo "FAIL: $*"; exit 1; }

[ -d "$INPUT_DIR" ] || fail "input folder $INPUT_DIR does not exist"
[ -f "$EXPECTED" ] || fail "expected output $EXPECTED does not exist"
[ -d "$ATYPICAL_INPUT" ] || fail "track 2 input folder $ATYPICAL_INPUT does not exist"
[ -f "$EXPECTED_ATYPICAL" ] || fail "expected track 2 output $EXPECTED_ATYPICAL does not exist"
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "image $IMAGE not found: run ./build.sh first"
user=$(docker image inspect --format '{{.Config.User}}' "$IMAGE")
case "$user" in
    "" | root | 0 | 0:*) fail "image $IMAGE runs as root (USER '$user'); grand-challenge runs it as a non-root user" ;;
esac

OUTPUT_DIRS=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    # Files the container wrote belong to its user: they can be unlinked from our own folder, but a folder it made
    # could not be emptied by us, hence the fallback through the image (as root, no network).
    for dir in "${OUTPUT_DIRS[@]}"; do
        rm -rf "$dir" 2>/dev/null \
            || { docker run --rm --network none --user 0 --entrypoint /bin/sh -v "$dir:/output" "$IMAGE" \
                     -c 'rm -rf /output/* /output/.[!.]*' >/dev/null 2>&1; rm -rf "$dir"; } \
            || echo "warning: could not remove $dir" >&2
    done
}
trap cleanup EXIT

# run_track INPUT MOUNT_POINT: one container run as grand-challenge makes it; sets OUTPUT_DIR
run_track() {
    OUTPUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/midog-test-output.XXXXXX")
    OUTPUT_DIRS+=("$OUTPUT_DIR")
    chmod 0777 "$OUTPUT_DIR"   # the container's user (not ours) must be able to write there
    echo "test.sh: running $IMAGE (user $user) on $1 at $2"
    local start run_rc
    start=$(date +%s)
    set +e
    docker run --rm \
        --network none \
        --memory="$MEMORY" \
        --cap-drop ALL \
        --security-opt no-new-privileges \
        --read-only \
        --tmpfs /tmp \
        --pids-limit 256 \
        --volume "$1:$2:ro" \
        --volume "$OUTPUT_DIR:/output/" \
        "${extra[@]}" \
        "$IMAGE"
    run_rc=$?
    set -e
    echo "test.sh: container exited with $run_rc after $(( $(date +%s) - start )) s"
    [ "$run_rc" -eq 0 ] || fail "the container exited with code $run_rc"
}

run_track "$INPUT_DIR" /input/images/histopathology-roi-cropout/
result=$OUTPUT_DIR/mitotic-figures.json
if [ -n "${SAVE_OUTPUT:-}" ] && [ -f "$result" ]; then
    cp "$result" "$SAVE_OUTPUT"
    echo "test.sh: output copied to $SAVE_OUTPUT"
fi
[ -f "$result" ] || fail "the container wrote no /output/mitotic-figures.json (found: $(ls -A "$OUTPUT_DIR"))"
# Strict: every "mitotic figure" and every candidate >= COMPARE_ABOVE; lower candidates, which bf16 / fp32 and
# different CPUs place or keep differently, are reported as INFO. A name may flip only at the bundle's threshold.
# With a verifier the names come from its two thresholds (inside the image, border strip), else the bundle's.
read -r -a thresholds <<< "$("$PYTHON" -c 'import json; b = json.load(open("model/weights/bundle.json")); v = b.get("verifier"); print(*([v["threshold"], v["strip_threshold"]] if v else [b["threshold"]]))')"
"$PYTHON" test/container/compare_output.py "$result" "$EXPECTED" --compare-above "${COMPARE_ABOVE:-0.3}" \
    --threshold "${thresholds[@]}" || fail "track 1 output differs from $EXPECTED"

run_track "$ATYPICAL_INPUT" /input/images/stacked-histopathology-roi-cropouts/
result=$OUTPUT_DIR/multiple-mitotic-figure-classification.json
[ -f "$result" ] || fail "the container wrote no /output/multiple-mitotic-figure-classification.json (found: $(ls -A "$OUTPUT_DIR"))"
atypical_threshold=$("$PYTHON" -c 'import json; print(json.load(open("model/weights/bundle.json"))["atypical"]["threshold"])')
"$PYTHON" test/container/compare_classification.py "$result" "$EXPECTED_ATYPICAL" --threshold "$atypical_threshold" \
    || fail "track 2 output differs from $EXPECTED_ATYPICAL"
echo "test.sh: both tracks PASS"
