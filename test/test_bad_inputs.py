"""Every bad or odd input of process.py answers with one line and exit code 1 (and no output file), or rightly.

Most cases must fail before the models load: `app.algorithm.Detector` is replaced by a tripwire there. Permission
cases need an unprivileged process (root ignores file modes): when the suite runs as root they run in a forked child
that drops to user `nobody`.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from test_process import tissue_like, validate_schema, write_tiff

import process
from app import algorithm, preflight
from model import Detector


class ModelsMustNotLoad(AssertionError):
    pass


@pytest.fixture
def no_models(monkeypatch):
    """Any attempt to build the detector fails the test: the error had to come first."""

    def tripwire(*args, **kwargs):
        raise ModelsMustNotLoad("the models were loaded before the bad input was noticed")

    monkeypatch.setattr(algorithm, "Detector", tripwire)


def one_line_error(capsys, code: int) -> str:
    error = capsys.readouterr().err.strip()
    assert code == 1, error
    assert len(error.splitlines()) == 1 and error.startswith("error: "), error
    assert "Traceback" not in error
    return error


def image_folder(tmp_path: Path, names: tuple[str, ...] = ("001.tiff",), size_px: int = 120) -> Path:
    folder = tmp_path / "in"
    for index, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_tiff(folder / name, tissue_like(size_px, size_px, seed=index))
    return folder


def leftovers(folder: Path) -> list[str]:
    """Files (probe files included) left in a folder."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- 1. outputs are checked before the models run -----------------------------------------------------------------


def test_output_is_an_existing_folder(tmp_path, capsys, no_models):
    (tmp_path / "out").mkdir()
    code = process.main(["--input", str(image_folder(tmp_path)), "--output", str(tmp_path / "out")])
    assert "is a folder" in one_line_error(capsys, code)
    assert leftovers(tmp_path / "out") == []


def test_output_parent_is_a_file(tmp_path, capsys, no_models):
    (tmp_path / "plain-file").write_text("x")
    out = tmp_path / "plain-file" / "sub" / "result.json"
    code = process.main(["--input", str(image_folder(tmp_path)), "--output", str(out)])
    assert "plain-file is a file, not a folder" in one_line_error(capsys, code)


def test_output_dir_is_a_file(tmp_path, capsys, no_models):
    (tmp_path / "out").write_text("x")
    code = process.main(["--input", str(image_folder(tmp_path)), "--output-dir", str(tmp_path / "out")])
    assert "is a file, not a folder" in one_line_error(capsys, code)


def test_overlay_with_unknown_picture_type(tmp_path, capsys, no_models):
    out = tmp_path / "out" / "result.json"
    code = process.main(
        ["--input", str(image_folder(tmp_path)), "--output", str(out), "--overlay", str(tmp_path / "o.xyz")]
    )
    assert "picture format" in one_line_error(capsys, code)
    assert not out.exists()


def test_overlay_in_a_folder_that_is_a_file(tmp_path, capsys, no_models):
    (tmp_path / "f").write_text("x")
    code = process.main(
        [
            "--input",
            str(image_folder(tmp_path)),
            "--output",
            str(tmp_path / "r.json"),
            "--overlay",
            str(tmp_path / "f/o.png"),
        ]
    )
    assert "--overlay" in one_line_error(capsys, code)
    assert not (tmp_path / "r.json").exists()


NOBODY = pwd.getpwnam("nobody")


def as_unprivileged(function: Callable[[], object]) -> object:
    """`function()` as a user that file modes apply to, returning its (JSON-able) result or raised message.

    As root: in a forked child that drops to `nobody` (the modules are already imported, so it reads nothing from
    root's home). Otherwise: directly.
    """
    if os.geteuid() != 0:
        return function()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            payload = json.dumps({"result": function()})
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            payload = json.dumps({"raised": f"{type(error).__name__}: {error}"})
        os.write(write_fd, payload.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as stream:
        payload = stream.read()
    os.waitpid(pid, 0)
    answer = json.loads(payload)
    if "raised" in answer:
        raise AssertionError(answer["raised"])
    return answer["result"]


@pytest.fixture
def shared_dir():
    """A folder every user can reach (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="midog-bad-inputs-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(folder)


def run_main_captured(argv: list[str]) -> dict:
    """process.main with stderr captured in-process (works in the forked child too)."""
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = process.main(argv)
    return {"code": code, "stderr": stderr.getvalue()}


def read_only_setup(shared_dir: Path) -> tuple[Path, Path]:
    inputs = image_folder(shared_dir)
    for path in [inputs, *inputs.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    read_only = shared_dir / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    return inputs, read_only


@pytest.mark.parametrize("option", ["--output", "--output-dir", "--overlay"])
def test_unwritable_outputs_fail_before_the_models(shared_dir, no_models, option):
    inputs, read_only = read_only_setup(shared_dir)
    target = {"--output": "result.json", "--output-dir": "batch", "--overlay": "overlay.png"}[option]
    argv = ["--input", str(inputs), option, str(read_only / target)]
    if option == "--overlay":
        (shared_dir / "writable").mkdir(mode=0o777)
        (shared_dir / "writable").chmod(0o777)
        argv += ["--output", str(shared_dir / "writable" / "result.json")]
    answer = as_unprivileged(lambda: run_main_captured(argv))
    assert answer["code"] == 1
    lines = answer["stderr"].strip().splitlines()
    assert len(lines) == 1 and "is not writable by user id" in lines[0] and option in lines[0], lines
    assert leftovers(read_only) == [] and leftovers(shared_dir / "writable") == []


def test_docker_bind_mount_owned_by_another_user_gets_the_user_hint(shared_dir, no_models, monkeypatch):
    """README's local-mode example without --user: Docker makes ./out as root, the image runs as `algorithm`."""
    marker = shared_dir / "dockerenv"
    marker.write_text("")
    monkeypatch.setattr(preflight, "CONTAINER_MARKER", marker)
    inputs, read_only = read_only_setup(shared_dir)
    read_only.chmod(0o755)  # root's folder, as Docker creates a missing bind-mount source
    answer = as_unprivileged(lambda: run_main_captured(["--input", str(inputs), "--output", str(read_only / "r.json")]))
    assert answer["code"] == 1
    assert '--user "$(id -u):$(id -g)"' in answer["stderr"] and len(answer["stderr"].strip().splitlines()) == 1


def test_unreadable_image_is_not_called_missing(shared_dir, no_models):
    inputs, _ = read_only_setup(shared_dir)
    (inputs / "001.tiff").chmod(0o000)
    out = shared_dir / "out.json"
    answer = as_unprivileged(lambda: run_main_captured(["--input", str(inputs), "--output", str(out)]))
    assert answer["code"] == 1 and "cannot be read (permission denied" in answer["stderr"], answer
    assert "does not exist" not in answer["stderr"]


def test_unreadable_input_folder(shared_dir, no_models):
    inputs, _ = read_only_setup(shared_dir)
    inputs.chmod(0o000)
    answer = as_unprivileged(
        lambda: run_main_captured(["--input", str(inputs), "--output", str(shared_dir / "o.json")])
    )
    assert answer["code"] == 1 and "cannot be read (permission denied" in answer["stderr"], answer


# --- 2. device and precision ---------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid where a GPU is the default device")
def test_fp16_on_cpu(tmp_path, capsys, no_models):
    code = process.main(
        ["--input", str(image_folder(tmp_path)), "--output", str(tmp_path / "o.json"), "--precision", "fp16"]
    )
    assert "--precision fp16" in one_line_error(capsys, code)
    assert not (tmp_path / "o.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu(tmp_path, capsys, no_models):
    code = process.main(
        ["--input", str(image_folder(tmp_path)), "--output", str(tmp_path / "o.json"), "--device", "cuda"]
    )
    assert "no CUDA GPU is available" in one_line_error(capsys, code)


@pytest.mark.parametrize("device", ["gpu", "meta"])
def test_unknown_device(tmp_path, capsys, no_models, device):
    code = process.main(
        ["--input", str(image_folder(tmp_path)), "--output", str(tmp_path / "o.json"), "--device", device]
    )
    assert f"--device {device}" in one_line_error(capsys, code)


# --- 3. several images in container / local mode -----------------------------------------------------------------


def test_two_images_sharing_the_first_integer(tmp_path, capsys, no_models):
    inputs = image_folder(tmp_path, ("001_a.tiff", "001_b.tiff"))
    code = process.main(["--input", str(inputs), "--output", str(tmp_path / "o.json")])
    error = one_line_error(capsys, code)
    assert "001_a.tiff" in error and "001_b.tiff" in error and "--output-dir" in error
    assert not (tmp_path / "o.json").exists()


# --- 4. batch mode --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("names", [("a/001.tiff", "b/001.tiff"), ("001.tif", "001.TIFF"), ("x/002.tiff", "002.mha")])
def test_batch_refuses_images_that_would_share_an_output(tmp_path, capsys, no_models, names):
    if names[1].endswith(".mha"):
        image_folder(tmp_path, names[:1])
        (tmp_path / "in" / names[1]).write_bytes(b"not read: refused before")
    else:
        image_folder(tmp_path, names)
    code = process.main(["--input", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out")])
    error = one_line_error(capsys, code)
    assert all(name in error for name in names) and "would all be written to" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, message",
    [(["--overlay", "o.png"], "--overlay-dir"), (["--output", "o.json"], "--overlay-dir, not --output")],
)
def test_batch_refuses_single_file_options(tmp_path, capsys, no_models, extra, message):
    code = process.main(["--input", str(image_folder(tmp_path)), "--output-dir", str(tmp_path / "out"), *extra])
    assert message in one_line_error(capsys, code)


def test_overlay_dir_outside_batch_mode(tmp_path, capsys, no_models):
    code = process.main(["--input", str(image_folder(tmp_path)), "--output", "o.json", "--overlay-dir", "pngs"])
    assert "batch mode" in one_line_error(capsys, code)


def test_batch_overlay_dir_gets_one_picture_per_image(tmp_path, random_bundle_dir):
    inputs = image_folder(tmp_path, ("001.tiff", "sub/002.tiff"), size_px=100)
    code = process.main(
        [
            "--input", str(inputs),
            "--output-dir", str(tmp_path / "out"),
            "--overlay-dir", str(tmp_path / "pngs"),
            "--bundle", str(random_bundle_dir),
        ]
    )  # fmt: skip
    assert code == 0
    assert leftovers(tmp_path / "out") == ["001.json", "002.json"]
    assert leftovers(tmp_path / "pngs") == ["001.png", "002.png"]
    for path in (tmp_path / "out").iterdir():
        validate_schema(json.loads(path.read_text()))


# --- 6. messages that tell the truth --------------------------------------------------------------------------------


def write_raw_tiff(path: Path, pixels: np.ndarray, **kwargs) -> None:
    tifffile.imwrite(path, pixels, resolution=(40000, 40000), resolutionunit="CENTIMETER", **kwargs)


def _palette(folder: Path) -> None:
    colormap = np.zeros((3, 256), np.uint16)
    colormap[0] = np.arange(256) * 257
    write_raw_tiff(folder / "001.tiff", np.zeros((100, 100), np.uint8), photometric="palette", colormap=colormap)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda d: write_raw_tiff(
                d / "001.tiff", np.zeros((100, 100, 2), np.uint8), photometric="minisblack", planarconfig="contig"
            ),
            "a grayscale image with 1 extra channel (2 channels)",
        ),
        (
            lambda d: write_raw_tiff(
                d / "001.tiff",
                np.zeros((100, 100, 2), np.uint8),
                photometric="minisblack",
                planarconfig="contig",
                extrasamples=[2],
            ),
            "a grayscale image with alpha (2 channels)",
        ),
        (_palette, "a palette (indexed-colour) image"),
        (
            lambda d: write_raw_tiff(d / "001.tiff", np.zeros((100, 100, 3), np.uint16), photometric="rgb"),
            "16-bit integer samples",
        ),
        (
            lambda d: write_raw_tiff(d / "001.tiff", np.zeros((100, 100, 4), np.uint8), photometric="separated"),
            "a CMYK image (4 channels)",
        ),
        (lambda d: (d / "001.tiff").write_bytes(b""), "the file is empty"),
    ],
    ids=["two-channels", "grey-alpha", "palette", "16-bit", "cmyk", "empty"],
)
def test_image_layout_messages_are_true(tmp_path, capsys, no_models, make, message):
    (tmp_path / "in").mkdir()
    make(tmp_path / "in")
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o.json")])
    assert message in one_line_error(capsys, code)


def test_input_that_is_a_file(tmp_path, capsys, no_models):
    inputs = image_folder(tmp_path)
    code = process.main(["--input", str(inputs / "001.tiff"), "--output", str(tmp_path / "o.json")])
    error = one_line_error(capsys, code)
    assert "is a file: --input takes the folder" in error and "does not exist" not in error


# --- a failure no check could foresee still gives one line and no file ------------------------------------------------


def test_write_failure_after_detection_is_one_line(tmp_path, capsys, random_bundle_dir, monkeypatch):
    def disk_full(data, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(algorithm, "write_json_atomically", disk_full)
    code = process.main(
        [
            "--input",
            str(image_folder(tmp_path, size_px=90)),
            "--output",
            str(tmp_path / "o.json"),
            "--bundle",
            str(random_bundle_dir),
        ]
    )
    stderr = capsys.readouterr().err.replace("\r", "\n")  # after detection: tqdm's progress bars come first
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in stderr
    assert not (tmp_path / "o.json").exists()


# --- outputs never land on an input or on each other; names and odd folders ---------------------------------------


def test_output_naming_the_input_image_is_refused(tmp_path, capsys, no_models):
    inputs = image_folder(tmp_path)
    before = (inputs / "001.tiff").read_bytes()
    code = process.main(["--input", str(inputs), "--output", str(inputs / "001.tiff")])
    assert "is the input image" in one_line_error(capsys, code)
    code = process.main(
        ["--input", str(inputs), "--output", str(tmp_path / "o.json"), "--overlay", str(inputs / "001.tiff")]
    )
    assert "is the input image" in one_line_error(capsys, code)
    assert (inputs / "001.tiff").read_bytes() == before


def test_output_and_overlay_naming_one_file_are_refused(tmp_path, capsys, no_models):
    out = tmp_path / "same.png"
    code = process.main(["--input", str(image_folder(tmp_path)), "--output", str(out), "--overlay", str(out)])
    assert "name the same file" in one_line_error(capsys, code)
    assert not out.exists()


def test_empty_input_is_not_the_current_folder(tmp_path, capsys, no_models, monkeypatch):
    image_folder(tmp_path)
    monkeypatch.chdir(tmp_path / "in")  # an image here: '' must not quietly mean "."
    code = process.main(["--input", "", "--output", str(tmp_path / "o.json")])
    assert "--input is empty" in one_line_error(capsys, code)


def test_output_name_longer_than_the_file_system_takes(tmp_path, capsys, no_models):
    code = process.main(["--input", str(image_folder(tmp_path)), "--output", str(tmp_path / ("x" * 300 + ".json"))])
    assert "is longer than the" in one_line_error(capsys, code)


def test_image_in_a_folder_named_like_an_image_and_a_long_output_name(tmp_path, random_bundle_dir):
    """A folder `x.tiff/` is a folder, not an image; a 250-character output name is a legal name (the temporary file
    beside it must not be longer)."""
    inputs = tmp_path / "in"
    write_tiff((inputs / "scan.tiff").mkdir(parents=True) or inputs / "scan.tiff" / "001.tiff", tissue_like(90, 90))
    out = tmp_path / ("y" * 245 + ".json")
    assert process.main(["--input", str(inputs), "--output", str(out), "--bundle", str(random_bundle_dir)]) == 0
    validate_schema(json.loads(out.read_text()))
    assert leftovers(tmp_path) == sorted(["001.tiff", out.name])


def test_batch_goes_on_past_an_image_whose_output_name_is_too_long(tmp_path, capsys, random_bundle_dir, monkeypatch):
    inputs = image_folder(tmp_path, ("001.tiff", "a-rather-long-name.tiff"), size_px=90)
    monkeypatch.setattr(preflight, "name_max", lambda folder: 12)  # 001.json fits, the other name does not
    out = tmp_path / "out"
    code = process.main(["--input", str(inputs), "--output-dir", str(out), "--bundle", str(random_bundle_dir)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "is longer than the 12 bytes" in errors[0]
    assert leftovers(out) == ["001.json"]


def test_truncated_bundle_json_is_one_line(tmp_path, capsys, random_bundle_dir):
    bundle = tmp_path / "bundle"
    shutil.copytree(random_bundle_dir, bundle)
    text = (bundle / "bundle.json").read_text()
    (bundle / "bundle.json").write_text(text[: len(text) // 2])
    code = process.main(
        ["--input", str(image_folder(tmp_path)), "--output", str(tmp_path / "o.json"), "--bundle", str(bundle)]
    )
    assert "cannot be read as JSON" in one_line_error(capsys, code)


def test_ctrl_c_is_one_line_and_leaves_no_file(tmp_path, capsys, random_bundle_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(algorithm.Detector, "detect", interrupted)
    out = tmp_path / "o.json"
    code = process.main(
        ["--input", str(image_folder(tmp_path)), "--output", str(out), "--bundle", str(random_bundle_dir)]
    )
    error = capsys.readouterr().err.strip()
    assert code == 130 and error.startswith("error: interrupted") and len(error.splitlines()) == 1
    assert leftovers(tmp_path) == ["001.tiff"]


def test_closed_stdout_and_stderr_are_no_error(tmp_path, random_bundle_dir):
    """Started with both streams closed (a daemon, `2>&-`): the JSON is written and the exit code is 0."""
    import subprocess
    import sys

    out = tmp_path / "o.json"
    command = [sys.executable, "process.py", "--input", str(image_folder(tmp_path, size_px=90)), "--output", str(out)]
    command += ["--bundle", str(random_bundle_dir)]
    root = Path(process.__file__).parent
    code = subprocess.call(
        command,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        preexec_fn=lambda: (os.close(1), os.close(2)),
    )
    assert code == 0
    validate_schema(json.loads(out.read_text()))


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((0, 0, 3), {}, "smaller than the 78 px receptive field"),
        ((30, 30, 3), {}, "smaller than the 78 px receptive field"),
        ((200, 200, 3), {"origin_mm": (float("nan"), 0.0)}, "origin_mm must be two finite numbers"),
        ((200, 200, 3), {"spacing_mm": "fine"}, "spacing_mm must be two finite numbers"),
    ],
)
def test_detector_refuses_what_it_cannot_detect_in_one_line(random_bundle_dir, shape, kwargs, message):
    """An empty image, one smaller than the receptive field (not the screen's 96 px), a NaN origin: one clear
    ValueError each, never numpy's own or NaN coordinates."""
    detector = Detector(random_bundle_dir)
    with pytest.raises(ValueError, match=message):
        detector.detect(np.full(shape, 180, np.uint8), **kwargs)


def test_detector_takes_one_number_for_both_axes(random_bundle_dir):
    detector = Detector(random_bundle_dir, precision="fp32")
    image = np.random.default_rng(0).integers(120, 255, (160, 150, 3), dtype=np.uint8)
    one, two = detector.detect(image, 0.00025), detector.detect(image, (0.00025, 0.00025))
    np.testing.assert_array_equal(one.xy_mm, two.xy_mm)


def test_ctrl_c_while_starting_is_one_line_and_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the seconds of importing torch and evalutils: one line and exit 130, as later, no traceback."""
    from model import threads

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(threads, "configure", interrupted)
    code = process.main(["--input", str(tmp_path), "--output", str(tmp_path / "out.json")])
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: interrupted while starting; nothing was written"]
    assert not (tmp_path / "out.json").exists()


def test_image_in_an_unreadable_subfolder_says_permission_denied(shared_dir, no_models):
    """An image inside a subfolder this user may not list: the one line says why nothing was found."""
    inputs, _ = read_only_setup(shared_dir)
    hidden = inputs / "scanner"
    hidden.mkdir()
    (inputs / "001.tiff").rename(hidden / "001.tiff")
    hidden.chmod(0o000)
    answer = as_unprivileged(
        lambda: run_main_captured(["--input", str(inputs), "--output", str(shared_dir / "o.json")])
    )
    hidden.chmod(0o755)
    assert answer["code"] == 1 and len(answer["stderr"].strip().splitlines()) == 1, answer
    assert (
        "no .tif/.tiff/.mha image" in answer["stderr"]
        and "scanner cannot be read (permission denied" in answer["stderr"]
    )
    assert not (shared_dir / "o.json").exists()


def write_with_thumbnail(path: Path, rgb: np.ndarray, compression: str | None = None) -> Path:
    """A scanner's export: the image on page 1, a smaller thumbnail on page 2 without the reduced-resolution flag."""
    per_cm = 1e4 / 0.25
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(
            rgb, photometric="rgb", resolution=(per_cm, per_cm), resolutionunit="CENTIMETER", compression=compression
        )
        tiff.write(rgb[::4, ::4], photometric="rgb")
    return path


def test_unflagged_thumbnail_page_reads_page_one_and_says_so(tmp_path, random_bundle_dir, caplog):
    rgb = tissue_like(160, 140)
    (tmp_path / "thumb").mkdir()
    (tmp_path / "plain").mkdir()
    write_with_thumbnail(tmp_path / "thumb" / "001.tiff", rgb)
    write_tiff(tmp_path / "plain" / "001.tiff", rgb)
    outputs = []
    for name in ("thumb", "plain"):
        out = tmp_path / f"{name}.json"
        code = process.main(["--input", str(tmp_path / name), "--output", str(out), "--bundle", str(random_bundle_dir)])
        assert code == 0
        outputs.append(json.loads(out.read_text()))
    assert outputs[0] == outputs[1]
    assert "reading page 1 (140x160 px); 1 page after it" in caplog.text


def test_thumbnail_tiff_whose_first_page_needs_another_decoder_is_one_line(tmp_path, capsys, no_models):
    (tmp_path / "in").mkdir()
    write_with_thumbnail(tmp_path / "in" / "001.tiff", tissue_like(160, 140), compression="lzma")
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o.json")])
    assert "page 1 is not a plain uncompressed or deflate" in one_line_error(capsys, code)
    assert not (tmp_path / "o.json").exists()
