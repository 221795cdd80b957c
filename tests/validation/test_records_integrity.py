"""A damaged or foreign records file is a one-line NmechError, never silent garbage."""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from nmech.cli import main
from nmech.errors import NmechError
from nmech.validation.data import DeviceBatches, synthetic
from nmech.validation.discovery import discover
from nmech.validation.models import vgg16
from nmech.validation.recorder import Recorder
from nmech.validation.records import FORMAT_VERSION, Records, load_records
from nmech.validation.train import train


@pytest.fixture(scope="module")
def records_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "records-vgg16_bn.h5"
    torch.manual_seed(0)
    model = vgg16(10, batch_norm=True, image_size=32, width=1 / 16)
    batches = DeviceBatches(synthetic(10, 4, 32), 8)
    found = discover(model, batches.next())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder(model, found.groups, path, opt, flush_every=4, model_name="vgg16_bn")
    train(model, opt, batches, 6, rec, progress=False)
    rec.close()
    return path


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dst / src.name))


def _same(a: Records, b: Records, attrs: bool = True) -> bool:
    arrays = [(a.train[k], b.train[k]) for k in a.train] + [(a.trace, b.trace)]
    for kind, ka in a.kinds.items():
        kb = b.kinds[kind]
        arrays += [(ka.Q, kb.Q), (ka.Q_abs, kb.Q_abs), (ka.channel, kb.channel)]
        arrays += [(ka.signals[s], kb.signals[s]) for s in ka.signals]
        if ka.block_names != kb.block_names or ka.group_names != kb.group_names:
            return False
    return (not attrs or a.attrs == b.attrs) and all(np.array_equal(x, y) for x, y in arrays)


def _one_line_error(path: Path) -> str:
    with pytest.raises(NmechError) as info:
        load_records(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_intact_file_loads(records_file):
    r = load_records(records_file)
    assert r.steps == 6 and r.attrs["status"] == "complete" and r.attrs["lr_constant"]
    assert r.kinds["scale"].Q.shape[0] == 7 and r.train["loss"].shape == (6,)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file_is_detected(records_file, tmp_path, keep):
    path = _copy(records_file, tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))
    assert "corrupt or truncated" in _one_line_error(path)


def test_truncated_file_makes_report_exit_2(records_file, tmp_path, capsys):
    path = _copy(records_file, tmp_path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and path.name in err


def test_flipped_bytes_raise_or_leave_the_data_unchanged(records_file, tmp_path):
    """Anywhere in the file: metadata has checksums, every dataset Fletcher-32."""
    good = load_records(records_file)
    raw = records_file.read_bytes()
    rng = np.random.default_rng(1)
    offsets = np.unique(np.concatenate([np.arange(0, 512, 7), rng.integers(0, len(raw), 300)]))
    detected = 0
    path = tmp_path / records_file.name
    for off in offsets:
        damaged = bytearray(raw)
        damaged[off] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            loaded = load_records(path)
        except NmechError as exc:
            assert "\n" not in str(exc)
            detected += 1
            continue
        assert _same(loaded, good), f"byte {off} changed the data silently"
    assert detected > len(offsets) // 2


def test_other_format_version_is_refused(records_file, tmp_path):
    path = _copy(records_file, tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    before = path.read_bytes()
    msg = _one_line_error(path)
    assert f"format version {FORMAT_VERSION + 1}" in msg and "reads version 2 or 3" in msg
    assert path.read_bytes() == before  # left as it is


def test_format_2_file_is_read_whole(records_file, tmp_path):
    """A file of the previous format (same layout, SGD settings without an optimizer name) is
    read with every row, and reported."""
    path = _copy(records_file, tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 2
        f.attrs["optimizer"] = np.bytes_(
            b'{"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": false, '
            b'"weight_decay": 0.0}'
        )
    old, new = load_records(path), load_records(records_file)
    assert _same(old, new, attrs=False) and old.optimizer.get("optimizer") is None
    assert main(["report", str(path)]) == 0


def test_foreign_hdf5_and_non_hdf5_files_are_refused(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["x"] = np.zeros(3)
    assert "format version None" in _one_line_error(tmp_path / "a.h5")
    (tmp_path / "b.h5").write_text("hello")
    assert "corrupt or truncated" in _one_line_error(tmp_path / "b.h5")
