"""Every numeric flag of validate, flow, report, bench and figures with NaN, infinities, huge,
negative, zero (where invalid) and wrong-type values: exit 2, one line on stderr, no
traceback, nothing written."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from nmech.cli import main

NAN_INF = ["nan", "inf", "-inf"]
VALIDATE = {
    "--lr": [*NAN_INF, "0", "-1", "1e308", "abc"],
    "--momentum": [*NAN_INF, "-0.1", "1", "abc"],
    "--wd": [*NAN_INF, "-1", "1e308", "abc"],
    "--dampening": [*NAN_INF, "-1", "1"],
    "--width": [*NAN_INF, "0", "-1", "1e6", "abc"],
    "--epochs": [*NAN_INF, "0", "-1", "1e308"],
    "--steps": ["nan", "0", "-1", "10000000000", "1e3", "abc"],
    "--batch-size": ["nan", "0", "-1", "10000000000", "x"],
    "--seed": ["nan", "-1", "100000000000000000000000", "1e23"],
    "--flush-every": ["nan", "0", "-5", "10000000000"],
}
FLOW = {
    "--order": ["nan", "-1", "99", "x"],
    "--etas": ["nan,0.1", "inf,0.1", "-1,0.1", "0,0.1", "1e308,0.1", "abc"],
    "--horizon": [*NAN_INF, "0", "-1", "1e308"],
    "--samples": ["nan", "0", "-1", "1000000000000"],
    "--image-size": ["0", "-1", "1000000"],
    "--seed": ["-1", "100000000000000000000000"],
    "--threads": ["0", "-1", "1000000"],
    "--beta": [*NAN_INF, "1", "-1"],
    "--beta1": ["nan", "1"],
    "--beta2": ["inf", "-0.5"],
    "--alpha": ["nan", "1"],
    "--eps": ["nan", "0", "-1", "inf"],
    "--lam": ["nan", "-1", "inf", "1e308"],
    "--tau": ["nan", "1"],
}


def _cases(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(flag, value) for flag, values in table.items() for value in values]


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of ``nmech ARGV`` (argparse's own errors exit through
    SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, flag: str) -> None:
    assert code == 2, err
    assert err.startswith("nmech: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and flag.lstrip("-").split("-")[0] in err, err


@pytest.mark.parametrize(("flag", "value"), _cases(VALIDATE))
def test_validate_flags(capsys, tmp_path, flag, value):
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["validate", "--out", str(out), f"{flag}={value}"])
    assert_refused(code, err, flag)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flag", "value"), _cases(FLOW))
def test_flow_flags(capsys, tmp_path, flag, value):
    out = tmp_path / "flow"
    code, err = run_cli(capsys, ["flow", "gd", "--out", str(out), f"{flag}={value}"])
    assert_refused(code, err, flag)
    assert list(tmp_path.iterdir()) == []


def _unwritable(tmp_path: Path) -> Path:
    """A path that cannot be a folder, even for root: it lies under a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return blocker / "inside"


@pytest.mark.parametrize("command", ["validate", "flow", "figures", "report"])
@pytest.mark.parametrize("where", ["existing file", "under a file", "/dev/null"])
def test_out_that_cannot_be_a_folder(capsys, tmp_path, command, where):
    target = {"existing file": tmp_path / "a-file", "under a file": _unwritable(tmp_path),
              "/dev/null": Path("/dev/null")}[where]  # fmt: skip
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "records.h5").write_bytes(b"")  # report refuses the target first
    argv = {
        "validate": ["validate", "--steps", "1"],
        "flow": ["flow", "gd"],
        "figures": ["figures", "--paper"],
        "report": ["report", str(tmp_path / "run" / "records.h5")],
    }[command]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, err = run_cli(capsys, [*argv, "--out", str(target)])
    assert_refused(code, err, "--out")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.parametrize("where", ["folder", "under a file", "missing folder"])
def test_bench_json_is_checked_before_running(capsys, tmp_path, monkeypatch, where):
    import nmech.cli.bench as bench

    target = {"folder": tmp_path, "under a file": _unwritable(tmp_path),
              "missing folder": tmp_path / "no" / "b.json"}[where]  # fmt: skip
    ran = []
    real = importlib.import_module

    def spy(name: str):
        if name.startswith("nmech.benchmarks."):
            ran.append(name)
        return real(name)

    monkeypatch.setattr(bench, "MODULES", ("derivation",))
    monkeypatch.setattr(importlib, "import_module", spy)
    code, err = run_cli(capsys, ["bench", "--json", str(target)])
    assert_refused(code, err, "--json")
    assert ran == []  # refused before any benchmark ran


@pytest.mark.parametrize("command", ["validate --out", "validate --resume", "report"])
def test_read_only_folder_is_refused_when_not_root(capsys, tmp_path, command):
    import dataclasses
    import json
    import os

    from nmech.validation.presets import PRESETS

    folder = tmp_path / "ro"
    folder.mkdir()
    preset = dataclasses.asdict(PRESETS["cpu-demo"])
    (folder / "run.json").write_text(json.dumps({"preset": preset, "device": "cpu",
                                                 "data_dir": None}))  # fmt: skip
    (folder / "records.h5").write_bytes(b"")
    argv = {
        "validate --out": ["validate", "--steps", "1", "--out", str(folder / "new")],
        "validate --resume": ["validate", "--resume", str(folder)],
        "report": ["report", str(folder)],
    }[command]
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user can write into a read-only folder (root)")
        code, err = run_cli(capsys, argv)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "not writable" in err or "cannot create" in err, err
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize(
    ("argv", "available", "flag"),
    [
        (["--width", "1"], 50 << 20, "--width"),  # 15M parameters: about 0.7 GiB
        (["--width", "0.0625", "--flush-every", "1000000"], 1 << 30, "--flush-every"),
    ],
)
def test_memory_is_bounded_before_anything_is_written(
    capsys, tmp_path, monkeypatch, argv, available, flag
):
    import nmech.validation.memory as memory

    monkeypatch.setattr(memory, "_host_available", lambda: available)
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["validate", "--steps", "2", "--batch-size", "8", "--models",
                                 "vgg16_bn", "--device", "cpu", "--no-progress", *argv,
                                 "--out", str(out)])  # fmt: skip
    assert_refused(code, err, flag)
    assert f"{flag}" in err and "GiB" in err and "available" in err
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_recorder_bounds_its_row_buffers(tmp_path, monkeypatch):
    import torch

    import nmech.validation.memory as memory
    from nmech.errors import NmechError
    from nmech.validation.data import DeviceBatches, synthetic
    from nmech.validation.discovery import discover
    from nmech.validation.models import vgg16
    from nmech.validation.recorder import Recorder

    torch.manual_seed(0)
    model = vgg16(10, batch_norm=True, image_size=32, width=1 / 16)
    groups = discover(model, DeviceBatches(synthetic(10, 4, 32), 8).next())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monkeypatch.setattr(memory, "_host_available", lambda: 1 << 30)
    with pytest.raises(
        NmechError, match=r"--flush-every: 100000 rows of \d+ values .* needs about .* GiB"
    ):
        Recorder(model, groups, tmp_path / "r.h5", opt, flush_every=100_000)
    with pytest.raises(NmechError, match=r"--flush-every 10000000: .* past HDF5's 4 GiB limit"):
        Recorder(model, groups, tmp_path / "r.h5", opt, flush_every=10_000_000)
    assert not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--width", "nan"], "--width"),
        (["--steps", "0"], "--steps"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--per-class", "0"], "--per-class"),
        (["--out", "/dev/null"], "--out"),
    ],  # fmt: skip
)
def test_device_check_flags(capsys, tmp_path, argv, flag):
    from nmech.cli.device_check import main as device_main

    code = device_main(["--out", str(tmp_path / "dc"), "--device", "cpu", *argv])
    err = capsys.readouterr().err
    assert_refused(code, err, flag)
    assert list(tmp_path.iterdir()) == []


def test_flow_gives_the_thread_count_back(capsys, tmp_path):
    """nmech flow sets torch's thread count for its run and restores it, also on an error: a
    caller in the same process (tests, nmech demo) keeps its own (its bitwise results depend
    on it)."""
    import torch

    before = torch.get_num_threads()
    argv = ["flow", "gd", "--order", "0", "--samples", "50", "--etas", "0.3,0.07"]
    code, err = run_cli(capsys, [*argv, "--threads", str(before + 1), "--out", str(tmp_path)])
    assert code == 2 and "not a whole number" in err
    assert torch.get_num_threads() == before
