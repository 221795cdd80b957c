"""No lost or mixed runs: existing runs are never overwritten without --overwrite, reports are
written as one set, a run.json is checked before --resume rewrites it, and readers never
modify a records file (a corruption table: one line and exit 2 each)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from nmech.cli import main
from nmech.validation.presets import PRESETS
from nmech.validation.report import REPORT_FILES, build_report

TINY = ["--steps", "3", "--batch-size", "8", "--width", "0.0625", "--models", "vgg16_bn",
        "--device", "cpu", "--no-progress"]  # fmt: skip


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    assert err.startswith("nmech: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny validation run with its report."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["validate", *TINY, "--out", str(out)]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _fake_run(folder: Path, models: tuple[str, ...] = ("vgg16_bn",), **fields) -> Path:
    """run.json (and an empty records file per model) of a run that finished."""
    folder.mkdir(parents=True, exist_ok=True)
    preset = dataclasses.asdict(dataclasses.replace(PRESETS["cpu-demo"], models=models))
    preset.update(fields)
    doc = {"preset": preset, "device": "cpu", "data_dir": None}
    (folder / "run.json").write_text(json.dumps(doc))
    for m in models:
        (folder / f"records-{m}.h5").write_bytes(b"recorded")
    return folder


def test_validate_never_overwrites_a_run(capsys, tmp_path):
    run = _fake_run(tmp_path / "R2", ("vgg16_bn", "vgg16"))
    before = _hashes(run)
    code, err = _cli(capsys, "validate", *TINY, "--no-report", "--out", str(run))
    assert code == 2 and "--resume" in _one_line(err) and "--overwrite" in err
    assert _hashes(run) == before


def test_overwrite_replaces_the_whole_run(capsys, tmp_path):
    run = _fake_run(tmp_path / "R2", ("vgg16_bn", "vgg16"))
    (run / "report.md").write_text("old report")
    (run / "notes.txt").write_text("mine")  # not nmech's: kept
    code, _ = _cli(capsys, "validate", *TINY, "--no-report", "--overwrite", "--out", str(run))
    assert code == 0
    assert not (run / "records-vgg16.h5").exists() and not (run / "report.md").exists()
    assert json.loads((run / "run.json").read_text())["preset"]["steps"] == 3
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_checks_run_json_before_rewriting_it(capsys, tmp_path):
    run = _fake_run(tmp_path / "R", lr="abc")
    before = _hashes(run)
    code, err = _cli(capsys, "validate", "--resume", str(run), "--no-progress")
    assert code == 2 and "--lr must be a number" in _one_line(err)
    assert _hashes(run) == before
    (run / "run.json").write_text(json.dumps({"preset": {"models": ["vgg16_bn"]}}))
    code, err = _cli(capsys, "validate", "--resume", str(run), "--no-progress")
    assert code == 2 and "not a run description" in _one_line(err)


def test_report_of_part_of_a_run_is_refused(capsys, tmp_path, finished_run):
    run = _copy(finished_run, tmp_path)
    doc = json.loads((run / "run.json").read_text())
    doc["preset"]["models"] = ["vgg16_bn", "vgg16"]  # the run named two models
    (run / "run.json").write_text(json.dumps(doc))
    before = _hashes(run)
    code, err = _cli(capsys, "report", str(run))
    assert code == 2 and "records-vgg16.h5 is missing" in _one_line(err)
    assert _hashes(run) == before


def test_report_out_never_overwrites_a_report(capsys, tmp_path, finished_run):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.md").write_text("another report")
    code, err = _cli(capsys, "report", str(finished_run), "--out", str(elsewhere))
    assert code == 2 and "--overwrite" in _one_line(err)
    assert (elsewhere / "report.md").read_text() == "another report"
    code, _ = _cli(capsys, "report", str(finished_run), "--out", str(elsewhere), "--overwrite")
    assert code == 0 and (elsewhere / "report.md").read_text().startswith("# nmech")
    other_run = _fake_run(tmp_path / "other")  # another run's folder, without a report yet
    before = _hashes(other_run)
    code, err = _cli(capsys, "report", str(finished_run), "--out", str(other_run))
    assert code == 2 and "already holds a report or a run" in _one_line(err)
    assert _hashes(other_run) == before


def test_interrupted_report_leaves_the_previous_set_intact(tmp_path, finished_run, monkeypatch):
    import nmech.validation.report as report

    run = _copy(finished_run, tmp_path)
    before = _hashes(run)
    written = [n for n in REPORT_FILES if (run / n).is_file()]
    assert "equations.tex" in written and "figures/symmetries.png" in written

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "per_parameter_figure", interrupted)  # after symmetries.png
    with pytest.raises(KeyboardInterrupt):
        build_report(run)
    assert _hashes(run) == before  # no file of the old set touched, nothing new beside it
    assert not list(run.glob(".nmech-staging-*"))


def test_rebuilt_report_leaves_no_stale_file(tmp_path, finished_run, monkeypatch):
    import nmech.validation.report as report

    run = _copy(finished_run, tmp_path)
    old = [run / "figures" / f"equilibrium.{ext}" for ext in ("png", "pdf")]
    assert all(p.is_file() for p in old)
    monkeypatch.setattr(report, "_equilibria", lambda *args: {})  # the new set lacks it
    build_report(run)
    assert not any(p.exists() for p in old)  # no figure of the old set beside the new one
    assert "equilibrium" not in json.loads((run / "report.json").read_text())
    assert not list(run.glob(".nmech-staging-*"))


# -- records files and run folders that are damaged: one line, exit 2, never modified -----


def _edit(path: Path, change) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def _replace(name: str, data) -> callable:
    def change(f):
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, data=data)
        f[name].attrs.update(attrs)

    return change


def _only_header(path: Path) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = 3
        f.attrs["status"] = np.bytes_(b"complete")
        f.create_dataset("commit", data=np.array([3, 0, 1], np.int64))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nan_row(f) -> None:
    q = f["scale/Q"][()]
    q[1, :] = np.nan
    _replace("scale/Q", q)(f)


CORRUPTIONS = {
    "truncated": _truncate,
    "empty": lambda p: p.write_bytes(b""),
    "not hdf5": lambda p: p.write_text("records"),
    "only format_version, status, commit": _only_header,
    "missing Q": lambda p: _edit(p, lambda f: f.__delitem__("scale/Q")),
    "missing block names": lambda p: _edit(p, lambda f: f.__delitem__("scale/block_names")),
    "missing commit": lambda p: _edit(p, lambda f: f.__delitem__("commit")),
    "missing optimizer": lambda p: _edit(p, lambda f: f.attrs.__delitem__("optimizer")),
    "optimizer not JSON": lambda p: _edit(p, lambda f: f.attrs.__setitem__("optimizer", "{")),
    "unknown optimizer": lambda p: _edit(
        p, lambda f: f.attrs.__setitem__("optimizer", json.dumps({"optimizer": "nope"}))
    ),
    "format version 99": lambda p: _edit(p, lambda f: f.attrs.__setitem__("format_version", 99)),
    "format version text": lambda p: _edit(
        p, lambda f: f.attrs.__setitem__("format_version", "three")
    ),
    "Q of int32": lambda p: _edit(
        p, lambda f: _replace("scale/Q", f["scale/Q"][()].astype(np.int32))(f)
    ),  # fmt: skip
    "Q one-dimensional": lambda p: _edit(
        p, lambda f: _replace("scale/Q", f["scale/Q"][()][:, 0])(f)
    ),  # fmt: skip
    "Q too narrow": lambda p: _edit(p, lambda f: _replace("scale/Q", f["scale/Q"][()][:, :3])(f)),
    "Q too short": lambda p: _edit(p, lambda f: _replace("scale/Q", f["scale/Q"][()][:2])(f)),
    "grad_sq too short": lambda p: _edit(
        p, lambda f: _replace("scale/grad_sq", f["scale/grad_sq"][()][:1])(f)
    ),
    "NaN row in Q": lambda p: _edit(p, _nan_row),
    "commit past the rows": lambda p: _edit(p, lambda f: f["commit"].__setitem__(0, 50)),
    "negative commit": lambda p: _edit(p, lambda f: f["commit"].__setitem__(0, -4)),
    "commit of two entries": lambda p: _edit(p, _replace("commit", np.array([3, 0], np.int64))),
}


@pytest.mark.parametrize("damage", list(CORRUPTIONS))
def test_damaged_records_give_one_line_and_are_never_modified(
    capsys, tmp_path, finished_run, damage
):
    records = tmp_path / "records-vgg16_bn.h5"
    shutil.copy(finished_run / "records-vgg16_bn.h5", records)
    CORRUPTIONS[damage](records)
    before = hashlib.sha256(records.read_bytes()).hexdigest()
    code, err = _cli(capsys, "report", str(records), "--out", str(tmp_path / "report"))
    assert code == 2, (damage, err)
    _one_line(err)
    assert hashlib.sha256(records.read_bytes()).hexdigest() == before
    assert not any((tmp_path / "report").glob("report.*"))


@pytest.mark.parametrize(
    "run_json",
    [
        "{",
        "[]",
        json.dumps({"preset": {}}),
        json.dumps({"preset": {"models": "vgg16_bn"}}),
        json.dumps({"preset": {"models": [1]}}),
    ],  # fmt: skip
)
def test_damaged_run_json_gives_one_line(capsys, tmp_path, finished_run, run_json):
    run = _copy(finished_run, tmp_path)
    (run / "run.json").write_text(run_json)
    before = _hashes(run)
    code, err = _cli(capsys, "report", str(run))
    assert code == 2 and "run.json" in _one_line(err)
    assert _hashes(run) == before


def test_overwrite_refused_by_a_check_keeps_the_old_run(capsys, tmp_path, monkeypatch):
    import nmech.validation.memory as memory

    run = _fake_run(tmp_path / "R2", ("vgg16_bn", "vgg16"))
    before = _hashes(run)
    monkeypatch.setattr(memory, "_host_available", lambda: 1 << 20)  # 1 MiB: nothing fits
    code, err = _cli(capsys, "validate", *TINY, "--no-report", "--overwrite", "--out", str(run))
    assert code == 2 and "--width" in _one_line(err)
    assert _hashes(run) == before
