"""GPU path switches of ``nmech validate``: --channels-last, --bf16, --compile (on CPU here)."""

import json
import math
from pathlib import Path

import pytest
import torch

from nmech.cli import main
from nmech.validation.records import load_records, records_progress

TINY = ["--steps", "6", "--batch-size", "8", "--width", "0.0625", "--device", "cpu"]
KINDS = {"scale", "rescale", "translation"}


def _validate(out: Path, *switches: str) -> int:
    return main(["validate", *TINY, "--no-progress", "--out", str(out), *switches])


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _assert_exact(report: dict) -> None:
    assert set(report["errors"]) == KINDS
    for kind, forms in report["errors"].items():
        assert forms["exact"]["channels"] > 0, kind
        assert forms["exact"]["max"] < 1e-4, (kind, forms["exact"])


def test_channels_last_keeps_the_exact_recursion(tmp_path):
    assert _validate(tmp_path, "--channels-last") == 0
    report = _report(tmp_path)
    _assert_exact(report)
    for run in report["runs"].values():
        assert run["switches"] == ["channels-last"]
        assert run["run"]["switches"] == {"channels-last": True, "bf16": False, "compile": False}
    assert "GPU path switches: channels-last" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "run.json").read_text())["preset"]["channels_last"] is True


def test_bf16_runs_and_the_report_names_it(tmp_path):
    assert _validate(tmp_path, "--bf16", "--models", "vgg16_bn,vgg16") == 0
    report = _report(tmp_path)
    # bf16 breaks the translation law at ~3e-2: only check that every error is reported
    assert set(report["errors"]) == KINDS
    for kind, forms in report["errors"].items():
        assert forms["exact"]["channels"] > 0 and math.isfinite(forms["exact"]["max"]), kind
    for run in report["runs"].values():
        assert run["switches"] == ["bf16"]
    assert "GPU path switches: bf16" in (tmp_path / "report.md").read_text()
    records = load_records(tmp_path / "records-vgg16_bn.h5")
    assert json.loads(records.attrs["run"])["switches"]["bf16"] is True


def test_default_run_reports_no_switch(tmp_path):
    argv = ["validate", *TINY, "--steps", "2", "--models", "vgg16", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert _report(tmp_path)["runs"]["vgg16"]["switches"] == []
    assert "GPU path switches: none" in (tmp_path / "report.md").read_text()


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with the eager backend: dynamo traces, no C++ build (fast on CPU)."""
    real = torch.compile
    compiled = []

    def fake(model, **kw):
        out = real(model, backend="eager")
        compiled.append((model, out))
        return out

    monkeypatch.setattr(torch, "compile", fake)
    return compiled


def test_compile_forward_keeps_parameters_and_exact_recursion(tmp_path, eager_compile):
    assert _validate(tmp_path, "--compile") == 0
    assert len(eager_compile) == 2
    model, forward = eager_compile[0]
    assert [id(p) for p in forward.parameters()] == [id(p) for p in model.parameters()]
    report = _report(tmp_path)
    _assert_exact(report)
    assert all(run["switches"] == ["compile"] for run in report["runs"].values())


def test_compile_failure_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    real = torch.compile

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend=broken_backend))
    argv = ["--models", "vgg16", "--steps", "2"]
    assert _validate(tmp_path, "--compile", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmech: error: --compile: torch.compile failed") and err.count("\n") == 1
    assert records_progress(tmp_path / "records-vgg16.h5")[0] != "complete"


def test_switches_are_kept_on_resume_and_fixed(tmp_path, capsys):
    argv = ["--models", "vgg16_bn", "--no-report", "--channels-last", "--bf16"]
    assert _validate(tmp_path, *argv, "--flush-every", "2", "--stop-after", "3") == 0
    capsys.readouterr()
    assert main(["validate", "--resume", str(tmp_path), "--no-progress", "--no-report"]) == 0
    records = load_records(tmp_path / "records-vgg16_bn.h5")
    assert (records.attrs["status"], records.steps) == ("complete", 6)
    switches = json.loads(records.attrs["run"])["switches"]
    assert switches == {"channels-last": True, "bf16": True, "compile": False}
    for flag in ("--channels-last", "--bf16", "--compile"):
        assert main(["validate", "--resume", str(tmp_path), flag]) == 2
        assert f"{flag} cannot be changed on --resume" in capsys.readouterr().err
