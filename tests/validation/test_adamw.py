"""torch.optim.AdamW: settings reader, recorded update signals, the exact recursion's error
bar, the equilibrium check and the CLI option."""

import json

import numpy as np
import pytest
import torch

from nmech.cli import main
from nmech.derive import rules
from nmech.derive.symmetry import scale
from nmech.derive.symmetry.dynamics import derive
from nmech.errors import NmechError
from nmech.validation.compare import compare
from nmech.validation.data import DeviceBatches, synthetic
from nmech.validation.discovery import discover
from nmech.validation.equilibrium import check
from nmech.validation.optim import AdamWSettings, read_adamw, read_optimizer, settings_from_dict
from nmech.validation.recorder import Recorder
from nmech.validation.records import KindRecords, load_records
from nmech.validation.train import train


def test_settings_are_read_from_the_optimizer():
    p = [torch.nn.Parameter(torch.zeros(3))]
    opt = torch.optim.AdamW(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    s = read_optimizer(opt)
    assert s == AdamWSettings(0.02, 0.8, 0.95, 1e-6, 0.1)
    assert settings_from_dict(json.loads(json.dumps(s.as_dict()))) == s
    assert s.engine_values() == {"eta": 0.02, "lam": 0.1}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: torch.optim.AdamW(p, amsgrad=True), "amsgrad=True"),
        (lambda p: torch.optim.AdamW(p, maximize=True), "maximize=True"),
        (lambda p: torch.optim.Adam(p), "expected torch.optim.AdamW, got Adam"),
        (
            lambda p: torch.optim.AdamW([{"params": p[:1]}, {"params": p[1:], "lr": 0.5}]),
            "must share",
        ),
    ],
)
def test_settings_reader_refuses_other_rules(make, message):
    p = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(NmechError, match=message) as info:
        read_adamw(make(p))
    assert "\n" not in str(info.value)


def _recorded_adamw_run(model, path, steps, fused=True):
    """Records of ``steps`` AdamW steps (lr 0.01, weight decay 0.5) of ``model``."""
    batches = DeviceBatches(synthetic(10, 20, 32, seed=0), 8, seed=0)
    found = discover(model, batches.next())
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    rec = Recorder(model, found.groups, path, opt, fused=fused)
    train(model, opt, batches, steps, rec, progress=False)
    rec.close()
    return load_records(path)


def test_exact_recursion_meets_error_bar_under_adamw(small_vgg, tmp_path):
    worst = {}
    for bn in (True, False):
        records = _recorded_adamw_run(small_vgg(bn), tmp_path / f"r{bn}.h5", 12)
        assert set(records.kinds["translation"].signals) == {"c_u"}
        quad = records.kinds["scale" if bn else "rescale"]
        assert {"theta_u", "u_sq"} <= set(quad.signals) and quad.size is not None
        for kind, comp in compare(records).items():
            worst[(bn, kind)] = float(comp.forms["exact"].errors.max())
            moved = np.abs(comp.measured.Q[-1] - comp.measured.Q[0]).max()
            assert moved > 1e-3 * np.abs(comp.measured.Q).max(), kind
    for key in ((True, "scale"), (False, "rescale"), (True, "translation"), (False, "translation")):
        assert worst[key] < 1e-4, (key, worst)


@pytest.mark.parametrize("bn", [True, False])
def test_adamw_signals_agree_between_compiled_and_torch_routes(small_vgg, tmp_path, bn):
    """The recorder's compiled CPU passes (step signals, and theta_u, u_sq, c_u with u_n formed
    in registers from the moments) record what its torch ops record, to round-off."""
    records = {
        fused: _recorded_adamw_run(small_vgg(bn), tmp_path / f"r{fused}.h5", 6, fused=fused)
        for fused in (True, False)
    }
    kinds = records[True].kinds
    assert set(kinds) == set(records[False].kinds) and "translation" in kinds
    for kind, kr in kinds.items():
        other = records[False].kinds[kind]
        pairs = {"Q": (kr.Q, other.Q), **{s: (v, other.signals[s]) for s, v in kr.signals.items()}}
        assert {"theta_u", "u_sq"} <= set(pairs) or "c_u" in pairs
        for name, (got, want) in pairs.items():
            scale = np.abs(want).max(axis=0, keepdims=True)
            assert np.all(np.abs(got - want) <= 1e-10 * scale + 1e-300), (kind, name)


def test_equilibrium_check_measures_angles_and_norms():
    """Channels rotating by a fixed angle phi at the predicted norm: measured = predicted."""
    settings = AdamWSettings(0.01, 0.9, 0.999, 1e-8, 0.5)
    eq = derive(rules.adamw(), scale()).equilibrium
    size = np.array([10, 40])
    q_eq = 0.01 * size / (2 * 0.5)
    phi = np.sqrt(2 * 0.01 * 0.5 * 0.1 / 1.9)
    steps = 8
    Q = np.tile(q_eq, (steps + 1, 1))
    step_sq = 2 * Q[:-1] * (1 - np.cos(phi))
    kr = KindRecords(Q, Q, {"step_sq": step_sq, "grad_sq": step_sq}, ["a", "b"], ["g"],
                     np.zeros(2), np.arange(2), size)  # fmt: skip
    found = check(kr, settings, eq)
    np.testing.assert_allclose(found.norm_predicted, np.sqrt(q_eq), rtol=1e-12)
    summary = found.summary()
    assert summary["norm_ratio_median"] == pytest.approx(1.0, rel=1e-12)
    assert summary["angular_update_measured_median"] == pytest.approx(phi, rel=1e-6)
    assert summary["angular_update_predicted"] == pytest.approx(phi, rel=1e-12)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--optimizer", "lion"], "unknown optimizer"),
        (["--optimizer", "adamw", "--momentum", "0.9"], "--momentum applies to --optimizer sgd"),
    ],
)
def test_cli_bad_optimizer_input(tmp_path, capsys, argv, message):
    assert main(["validate", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_validate_adamw_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["validate", "--preset", "cpu-demo", "--steps", "6", "--batch-size", "8"]
    assert main([*argv, "--optimizer", "adamw", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["runs"]["vgg16_bn"]["optimizer"]["optimizer"] == "adamw"
    assert report["runs"]["vgg16"]["optimizer"]["lr"] == 0.01
    for kind in ("scale", "rescale", "translation"):
        assert report["errors"][kind]["exact"]["max"] < 1e-4
    assert "equilibrium.png" in " ".join(report["figures"])
    assert report["equilibrium"]["vgg16_bn"]["angular_update_predicted"] == pytest.approx(
        np.sqrt(2 * 0.01 * 0.5 * 0.1 / 1.9)
    )
    assert "AdamW" in (out / "report.md").read_text()
    assert "theta_u" in (out / "equations.tex").read_text()
