"""The benchmark suite's record schema, and the device check's switch JSON (no timing asserted)."""

from __future__ import annotations

import json
import math

import pytest

from nmech.cli import bench as bench_cli

KEYS = {"name", "value", "unit", "baseline", "ratio", "target", "met"}


def _check_schema(records: list[dict]) -> None:
    assert records
    for r in records:
        assert set(r) == KEYS, r
        assert isinstance(r["name"], str) and r["name"]
        assert isinstance(r["unit"], str) and r["unit"]
        assert isinstance(r["value"], int | float) and math.isfinite(r["value"])
        assert r["met"] is None or isinstance(r["met"], bool)
        assert r["target"] is None or isinstance(r["target"], str)
        assert (r["met"] is None) == (r["target"] is None), r
        if r["baseline"] is None:
            assert r["ratio"] is None, r
        else:
            assert r["value"] > 0 and r["ratio"] == pytest.approx(r["baseline"] / r["value"]), r


@pytest.fixture
def tiny_suite(monkeypatch):
    """Every benchmark module shrunk to seconds (same code paths, smaller sizes)."""
    from nmech.benchmarks import derivation, end_to_end, recorder

    monkeypatch.setattr(derivation, "QUICK_ORDERS", {"gd": range(2, 3)})
    monkeypatch.setattr(derivation, "QUICK_TARGETS", (("gd", 3, 60.0),))
    monkeypatch.setattr(derivation, "NAIVE_RULES", ("gd",))
    monkeypatch.setattr(derivation, "MAX_NAIVE_ORDER", 2)
    monkeypatch.setattr(recorder, "PAIRS_QUICK", 2)
    monkeypatch.setattr(recorder, "WARMUP", 1)
    monkeypatch.setattr(end_to_end, "QUICK_STEPS", 2)


@pytest.mark.slow
def test_bench_quick_json_records_have_the_schema(tmp_path, tiny_suite, capsys):
    from nmech.cli import main

    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    records = json.loads(path.read_text())
    _check_schema(records)
    names = " | ".join(r["name"] for r in records)
    for part in ("derive gd order 2", "numerics.predict", "recorder step vgg16_bn", "end-to-end"):
        assert part in names
    recorder_rec = next(r for r in records if r["name"].startswith("recorder step"))
    assert recorder_rec["met"] == (recorder_rec["value"] / recorder_rec["baseline"] < 1.10)
    printed = capsys.readouterr().out
    assert printed.count("\n") >= len(records)


def test_format_record_without_baseline():
    line = bench_cli.format_record(
        {"name": "x", "value": 1.5, "unit": "s", "baseline": None, "ratio": None,
         "target": None, "met": None}
    )  # fmt: skip
    assert line.startswith("x") and "1.5" in line and "MISSED" not in line


def test_device_check_switches_on_cpu(tmp_path):
    from nmech.cli.device_check import main
    from nmech.validation.device_check import PAPER_BATCH, PAPER_STEPS

    argv = ["--out", str(tmp_path), "--steps", "2", "--batch-size", "4", "--width", "0.0625"]
    argv += ["--device", "cpu", "--per-class", "2", "--switches", "base", "channels-last", "bf16"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "device_check.json").read_text())
    assert set(result["switches"]) == {"base", "channels-last", "bf16"}
    for spec, r in result["switches"].items():
        assert r["peak_gpu_memory_bytes"] is None  # CPU
        assert r["overhead_ratio"] == pytest.approx(
            r["images_per_s_plain"] / r["images_per_s_recorded"]
        )
        assert r["projected_100_epochs_s"] == pytest.approx(
            PAPER_STEPS * PAPER_BATCH / r["images_per_s_recorded"]
        )
        assert set(r["errors"]) == {"scale", "rescale", "translation"}, spec
        assert (tmp_path / spec / "report.json").exists()
    for spec in ("base", "channels-last"):  # float32 paths: the exact recursion holds
        for kind, forms in result["switches"][spec]["errors"].items():
            assert forms["exact"]["max"] < 1e-4, (spec, kind)
    assert result["overhead_ratio"] == result["switches"]["base"]["overhead_ratio"]


def test_unknown_switch_is_an_error(tmp_path, capsys):
    from nmech.cli.device_check import main

    assert main(["--out", str(tmp_path), "--device", "cpu", "--switches", "fp8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmech: error: unknown switch") and err.count("\n") == 1
