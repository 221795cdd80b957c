"""Faults of a validation run: divergence, SIGTERM/SIGKILL, resume, determinism, bad data."""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from nmech.cli import main
from nmech.errors import NmechError
from nmech.validation.checkpoint import checkpoint_path
from nmech.validation.data import DeviceBatches, synthetic
from nmech.validation.datasets.tiny_imagenet import load_tiny_imagenet
from nmech.validation.discovery import discover
from nmech.validation.models import vgg16
from nmech.validation.recorder import Recorder
from nmech.validation.records import load_records, records_progress
from nmech.validation.stops import HINT, Diverged
from nmech.validation.train import train

STEPS = 12
TINY = ["--batch-size", "8", "--width", "0.0625", "--models", "vgg16_bn", "--device", "cpu"]
QUIET = ["--no-progress", "--no-report"]
RECORDS = "records-vgg16_bn.h5"


def _argv(out: Path, *extra: str) -> list[str]:
    return ["validate", "--steps", str(STEPS), *TINY, *QUIET, "--out", str(out), *extra]


def _spawn(out: Path, *extra: str) -> subprocess.Popen:
    """The run in a child process with this process's torch thread count (the bitwise
    comparisons with runs made here depend on it)."""
    cmd = [sys.executable, "-m", "nmech.cli", *_argv(out, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.02)


def _datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of the file (visititems stops at the first callback that returns a
    value, so the callback returns None)."""
    out: dict[str, np.ndarray] = {}

    def keep(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    with h5py.File(path, "r", swmr=True) as f:
        f.visititems(keep)
    return out


def _assert_identical(a: Path, b: Path) -> None:
    da, db = _datasets(a), _datasets(b)
    assert da.keys() == db.keys()
    assert {"scale/Q", "scale/Q_abs", "rescale/Q", "train/loss", "trace/values"} <= da.keys()
    for name in da:
        assert np.array_equal(da[name], db[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of STEPS steps."""
    out = tmp_path_factory.mktemp("reference")
    assert main(_argv(out, "--flush-every", "2")) == 0
    return out / RECORDS


def test_same_seed_gives_identical_records(reference, tmp_path):
    assert main(_argv(tmp_path, "--flush-every", "2")) == 0
    _assert_identical(reference, tmp_path / RECORDS)
    assert load_records(tmp_path / RECORDS).attrs["status"] == "complete"


def test_stop_after_then_resume_is_bitwise(reference, tmp_path, capsys):
    assert main(_argv(tmp_path, "--flush-every", "4", "--stop-after", "5")) == 0
    assert f"--resume {tmp_path}" in capsys.readouterr().err
    partial = load_records(tmp_path / RECORDS)
    assert (partial.attrs["status"], partial.steps) == ("interrupted", 5)
    assert main(["validate", "--resume", str(tmp_path), "--no-progress", "--no-report"]) == 0
    _assert_identical(reference, tmp_path / RECORDS)


def test_sigterm_flushes_checkpoints_and_resume_is_bitwise(reference, tmp_path):
    proc = _spawn(tmp_path, "--flush-every", "1")
    _wait_for(checkpoint_path(tmp_path, "vgg16_bn").is_file, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and f"nmech validate --resume {tmp_path}" in err
    partial = load_records(tmp_path / RECORDS)
    assert partial.attrs["status"] == "interrupted" and 1 <= partial.steps < STEPS
    state = torch.load(checkpoint_path(tmp_path, "vgg16_bn"), weights_only=True)
    assert state["step"] == partial.steps and state["optimizer"]["state"]  # momentum buffers
    assert main(["validate", "--resume", str(tmp_path), "--no-progress", "--no-report"]) == 0
    _assert_identical(reference, tmp_path / RECORDS)


def test_sigkill_mid_write_loses_at_most_the_unflushed_rows(reference, tmp_path):
    proc = _spawn(tmp_path, "--flush-every", "1")
    _wait_for(lambda: records_progress(tmp_path / RECORDS)[1] >= 3, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = load_records(tmp_path / RECORDS)  # opens although the writer never closed it
    assert killed.attrs["status"] == "unfinished" and killed.steps >= 2
    full = load_records(reference)
    n = killed.steps
    assert np.array_equal(killed.train["loss"], full.train["loss"][:n])
    assert np.array_equal(killed.kinds["scale"].Q, full.kinds["scale"].Q[: n + 1])
    assert main(["validate", "--resume", str(tmp_path), "--no-progress", "--no-report"]) == 0
    _assert_identical(reference, tmp_path / RECORDS)


def test_resume_input_errors(tmp_path, capsys):
    assert main(["validate", "--resume", str(tmp_path / "none")]) == 2
    assert main(["validate", "--resume", str(tmp_path)]) == 2
    assert main(["validate", "--resume", str(tmp_path), "--lr", "0.2"]) == 2
    assert main(["validate", "--steps", "3"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "run folder not found" in err[0] and "no run.json" in err[1]
    assert "--lr cannot be changed on --resume" in err[2] and "--out is required" in err[3]


def _recorded_run(path: Path, steps: int, loss_fn=None, hook=None):
    torch.manual_seed(0)
    model = vgg16(10, batch_norm=True, image_size=32, width=1 / 16)
    batches = DeviceBatches(synthetic(10, 4, 32), 8)
    found = discover(model, batches.next())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder(model, found.groups, path, opt, flush_every=4)
    if hook is not None:
        hook(model)
    kwargs = {} if loss_fn is None else {"loss_fn": loss_fn}
    train(model, opt, batches, steps, rec, progress=False, **kwargs)
    rec.close()


def test_nan_loss_stops_at_that_step_and_keeps_the_finite_ones(tmp_path):
    calls = []

    def loss_fn(logits, y):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, y)
        return loss * float("nan") if len(calls) == 6 else loss  # step 5

    with pytest.raises(Diverged) as info:
        _recorded_run(tmp_path / "r.h5", 20, loss_fn)
    msg = str(info.value)
    assert "step 5: loss is nan" in msg and "steps 0..4" in msg and HINT in msg
    assert "\n" not in msg and len(calls) == 8  # detected at the flush of steps 4..7
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["train/loss"].shape == (5,) and np.isfinite(f["train/loss"][:]).all()
        assert f["scale/grad_sq"].shape[0] == 5 and f["scale/Q"].shape[0] == 6
        assert f.attrs["status"] == b"diverged" and b"step 5" in f.attrs["stop_reason"]
    r = load_records(tmp_path / "r.h5")
    assert r.steps == 5 and r.attrs["status"] == "diverged"


def test_nonfinite_gradient_names_its_layer(tmp_path):
    steps = []

    def hook(model):
        conv = model.features[7]  # the third conv
        model.register_forward_pre_hook(lambda m, a: steps.append(1))
        conv.weight.register_hook(lambda g: g * float("inf") if len(steps) == 4 else g)

    with pytest.raises(
        Diverged, match=r"step 3: gradient first non-finite in block features\.7\[0\]"
    ):
        _recorded_run(tmp_path / "r.h5", 8, hook=hook)  # the 4th forward is step 3


def test_cli_divergence_exits_2_with_one_line(tmp_path, capsys):
    assert main(_argv(tmp_path, "--lr", "1e6", "--flush-every", "2")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged at step" in err and "--lr" in err
    assert load_records(tmp_path / RECORDS).attrs["status"] == "diverged"


# -- data -------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _tiny(root: Path, size: int = 32) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "wnids.txt").write_text("n01\nn02\n")
    rng = np.random.default_rng(0)
    for w in ("n01", "n02"):
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 255, (size, size, 3), np.uint8)
            Image.fromarray(arr).save(folder / f"{w}_{i}.JPEG")
    return root


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "train/n02/images/n02_1.JPEG").write_text("not an image"), "n02_1.JPEG"),
        (lambda r: (r / "train/n02/images/n02_0.JPEG").write_bytes(b""), "n02_0.JPEG"),
        (lambda r: Image.new("RGB", (16, 16)).save(r / "train/n01/images/n01_0.JPEG"), "16x16"),
        (lambda r: os.rename(r / "train/n02", r / "n02"), "missing class folder"),
        (lambda r: (r / "wnids.txt").write_text(""), "lists no classes"),
        (lambda r: (r / "wnids.txt").write_bytes(b"n01\n\xff\xfe\n"), "not UTF-8"),
        (lambda r: (r / "wnids.txt").write_text("n" * (5 << 20)), "larger than 1024 KiB"),
        (lambda r: (r / "wnids.txt").write_text("n01\n" + "n" * 300 + "\n"), "300 characters"),
        (lambda r: (r / "train/n01/images/x.JPEG").symlink_to(r / "gone"), "x.JPEG is not a"),
        (lambda r: (r / "train/n01/images/x.JPEG").symlink_to("x.JPEG"), "x.JPEG is not a"),
    ],
)
def test_bad_data_names_the_problem_and_leaves_the_folder_unchanged(tmp_path, damage, message):
    root = _tiny(tmp_path / "tiny")
    damage(root)
    before = _tree(root)
    with pytest.raises(NmechError, match=message):
        load_tiny_imagenet(root, cache_dir=tmp_path / "cache", image_size=32)
    assert _tree(root) == before


def test_other_image_modes_are_converted_and_parent_folder_is_pointed_to(tmp_path):
    root = _tiny(tmp_path / "tiny-imagenet-200")
    Image.new("L", (32, 32), 90).save(root / "train/n01/images/n01_0.JPEG")
    Image.new("CMYK", (32, 32), (0, 0, 0, 0)).save(root / "train/n02/images/n02_0.JPEG")
    Image.new("P", (32, 32), 3).save(root / "train/n02/images/n02_1.JPEG", format="PNG")
    data = load_tiny_imagenet(root, cache_dir=tmp_path / "cache", image_size=32)
    assert data.x.shape == (4, 32, 32, 3) and (data.x[0] == data.x[0, :, :, :1]).all()
    with pytest.raises(NmechError, match="tiny-imagenet-200"):
        load_tiny_imagenet(tmp_path, cache_dir=tmp_path / "cache", image_size=32)


def _big_png(path: Path, width: int, height: int) -> None:
    """A small file whose header declares a huge image (1-bit PNG under a .JPEG name)."""
    Image.new("1", (width, height)).save(path, format="PNG")


def test_huge_images_are_refused_from_the_header_without_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    root = _tiny(tmp_path / "tiny")
    _big_png(root / "train/n01/images/n01_0.JPEG", 9000, 9000)
    _big_png(root / "train/n02/images/n02_0.JPEG", 12000, 8000)  # past Pillow's bomb limit
    before = _tree(root)

    def no_decoding(self):
        raise AssertionError("decoded an image of the wrong size")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(NmechError, match=r"n01_0.JPEG is 9000x9000, expected 32x32"):
        load_tiny_imagenet(root, cache_dir=tmp_path / "cache", image_size=32)
    monkeypatch.undo()
    (root / "train/n01/images/n01_0.JPEG").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning is never shown raw
        with pytest.raises(NmechError, match=r"cannot decode image .*n02_0.JPEG.*decompression"):
            load_tiny_imagenet(root, cache_dir=tmp_path / "cache", image_size=32)
    del before["train/n01/images/n01_0.JPEG"]
    assert _tree(root) == before
