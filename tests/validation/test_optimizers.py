"""The optimizer registry: settings read from live torch optimizers, refused flags, the exact
recursion under every registered optimizer and the fallback, compiled vs torch passes, the
equilibrium check and the CLI option."""

import json
import re

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
from nmech.validation.optimizers import (
    OPTIMIZERS,
    Settings,
    adapter_for,
    read_optimizer,
    settings_from_dict,
)
from nmech.validation.recorder import Recorder
from nmech.validation.records import KindRecords, load_records
from nmech.validation.train import train


def _params():
    return [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]


@pytest.mark.parametrize(
    "make, name, values",
    [
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=5e-4),
         "sgd", {"eta": 0.1, "beta": 0.9, "lam": 5e-4, "tau": 0.1}),
        (lambda p: torch.optim.AdamW(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
         "adamw", {"eta": 0.02, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "lam": 0.1}),
        (lambda p: torch.optim.Adam(p, lr=0.03, weight_decay=0.2),
         "adam", {"eta": 0.03, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "lam": 0.2}),
        (lambda p: torch.optim.RMSprop(p, lr=0.04, alpha=0.9, momentum=0.5),
         "rmsprop", {"eta": 0.04, "alpha": 0.9, "eps": 1e-8, "lam": 0.0, "beta": 0.5}),
        (lambda p: torch.optim.Adagrad(p, lr=0.05, weight_decay=0.3),
         "adagrad", {"eta": 0.05, "eps": 1e-10, "lam": 0.3}),
        (lambda p: torch.optim.Adamax(p, lr=0.06), "fallback", {"eta": 0.06}),
    ],
)  # fmt: skip
def test_settings_are_read_from_the_live_optimizer(make, name, values):
    opt = make(_params())
    s = read_optimizer(opt)
    assert s.optimizer == name and s.values() == pytest.approx(values)
    assert settings_from_dict(json.loads(json.dumps(s.as_dict()))) == s
    assert s.rule() is not None


def test_records_format_2_settings_are_read():
    sgd = settings_from_dict({"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": False,
                              "weight_decay": 5e-4})  # fmt: skip
    assert sgd.optimizer == "sgd" and sgd.values()["beta"] == 0.9
    adamw = settings_from_dict({"optimizer": "adamw", "lr": 0.01, "beta1": 0.9, "beta2": 0.99,
                                "eps": 1e-8, "weight_decay": 0.5})  # fmt: skip
    assert adamw["betas"] == (0.9, 0.99) and adamw.values()["lam"] == 0.5


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: torch.optim.RMSprop(p, centered=True), "RMSprop(centered=True) is not supported"),
        (lambda p: torch.optim.Adagrad(p, lr_decay=0.1), "Adagrad(lr_decay=0.1) is not supported"),
        (lambda p: torch.optim.AdamW([{"params": p[:1]}, {"params": p[1:], "lr": 0.5}]),
         "lr differs"),
        (lambda p: torch.optim.Adamax([{"params": p[:1]}, {"params": p[1:], "lr": 0.5}]),
         "one learning rate"),
    ],
)  # fmt: skip
def test_unsupported_flags_are_named(make, message):
    with pytest.raises(NmechError, match=re.escape(message)) as info:
        read_optimizer(make(_params()))
    assert "\n" not in str(info.value)


def test_every_registered_optimizer_meets_the_exact_error_bar(small_vgg, tmp_path):
    """The exact recursion of every kind holds to float32 round-off under each registered
    optimizer (u_n from its state where it has one) and under the fallback, where it holds by
    construction (float64 round-off)."""
    settings = {
        "sgd": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, maximize=True),
        "adam": dict(lr=0.01, weight_decay=1e-3, amsgrad=True),
        "adamw": dict(lr=0.01, weight_decay=0.5),
        "rmsprop": dict(lr=1e-3, weight_decay=1e-3, momentum=0.5),
        "adagrad": dict(lr=0.01, weight_decay=1e-3),
    }
    assert set(settings) == set(OPTIMIZERS)
    cases = [(OPTIMIZERS[n].torch_class, kw) for n, kw in settings.items()]
    cases.append((torch.optim.Adamax, dict(lr=0.01)))
    for cls, kw in cases:
        model = small_vgg(True)
        batches = DeviceBatches(synthetic(10, 8, 32, seed=0), 8, seed=0)
        found = discover(model, batches.next())
        opt = cls(model.parameters(), **kw)
        rec = Recorder(model, found, tmp_path / f"{cls.__name__}.h5", opt)
        train(model, opt, batches, 8, rec, progress=False)
        rec.close()
        bound = 1e-12 if adapter_for(opt).name == "fallback" else 1e-4
        for kind, comp in rec.compare().items():
            err = float(comp.errors["exact"].max())
            assert err < bound, (cls.__name__, kind, err)
            assert np.abs(comp.Q[-1] - comp.Q[0]).max() > 0, (cls.__name__, kind)


def _recorded_run(model, path, steps, fused=True, optimizer="adamw"):
    """Records of ``steps`` AdamW steps (lr 0.01, weight decay 0.5; or Adagrad) of ``model``."""
    batches = DeviceBatches(synthetic(10, 20, 32, seed=0), 8, seed=0)
    found = discover(model, batches.next())
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    else:
        opt = torch.optim.Adagrad(model.parameters(), lr=0.01, weight_decay=1e-3)
    rec = Recorder(model, found.groups, path, opt, fused=fused)
    train(model, opt, batches, steps, rec, progress=False)
    rec.close()
    return load_records(path)


def test_exact_recursion_meets_error_bar_under_adamw(small_vgg, tmp_path):
    worst = {}
    for bn in (True, False):
        records = _recorded_run(small_vgg(bn), tmp_path / f"r{bn}.h5", 12)
        assert set(records.kinds["translation"].signals) == {"c_u"}
        quad = records.kinds["scale" if bn else "rescale"]
        assert {"theta_u", "u_sq"} <= set(quad.signals) and quad.size is not None
        for kind, comp in compare(records).items():
            worst[(bn, kind)] = float(comp.forms["exact"].errors.max())
            moved = np.abs(comp.measured.Q[-1] - comp.measured.Q[0]).max()
            assert moved > 1e-3 * np.abs(comp.measured.Q).max(), kind
    for key in ((True, "scale"), (False, "rescale"), (True, "translation"), (False, "translation")):
        assert worst[key] < 1e-4, (key, worst)


@pytest.mark.parametrize("bn, optimizer", [(True, "adamw"), (False, "adamw"), (True, "adagrad")])
def test_update_signals_agree_between_compiled_and_torch_routes(small_vgg, tmp_path, bn, optimizer):
    """The recorder's compiled CPU passes (step signals, and theta_u, u_sq, c_u with u_n formed
    in registers from the optimizer's state, and from g_n and theta_n under Adagrad) record what
    its torch ops record, to round-off."""
    records = {
        fused: _recorded_run(small_vgg(bn), tmp_path / f"r{fused}.h5", 6, fused, optimizer)
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


def test_a_step_that_changes_the_gradient_is_refused(small_vgg, tmp_path):
    """AdamW's step leaves p.grad alone, so the compiled route reads g_n there after the step
    instead of copying it; a gradient changed during the step is named, not recorded."""
    model = small_vgg(True)
    batches = DeviceBatches(synthetic(10, 20, 32, seed=0), 8, seed=0)
    found = discover(model, batches.next())
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    rec = Recorder(model, found.groups, tmp_path / "r.h5", opt)
    train(model, opt, batches, 2, rec, progress=False)
    x, y = batches.next()[:2]
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    rec.before_step()
    opt.step()
    model.features[0].weight.grad.mul_(2.0)
    with pytest.raises(NmechError, match=r"changed features\.0\.weight\.grad"):
        rec.after_step()
    assert load_records(rec.abort()).kinds["scale"].Q.shape[0] == 2


def _swap_state(opt):
    """Give every AdamW state new tensor objects with the same values: exp_avg contiguous,
    exp_avg_sq of the weights strided (transposed storage); returns the strided count."""
    strided = 0
    for st in opt.state.values():
        st["exp_avg"] = st["exp_avg"].clone()
        v = st["exp_avg_sq"]
        if v.ndim >= 2:
            st["exp_avg_sq"] = v.transpose(0, 1).contiguous().transpose(0, 1)
            strided += not st["exp_avg_sq"].is_contiguous()
    return strided


def test_compiled_pass_follows_state_the_optimizer_replaces(small_vgg, tmp_path):
    """The compiled pass reads AdamW's state in place: when the optimizer's state tensors are
    replaced mid-run (new objects, some strided, as after loading a checkpoint), it records what
    the torch ops record from copies, to round-off."""
    records = {}
    for fused in (True, False):
        model = small_vgg(True)
        batches = DeviceBatches(synthetic(10, 20, 32, seed=0), 8, seed=0)
        found = discover(model, batches.next())
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
        path = tmp_path / f"r{fused}.h5"
        rec = Recorder(model, found.groups, path, opt, fused=fused)
        train(model, opt, batches, 3, rec, progress=False)
        assert _swap_state(opt) > 10
        train(model, opt, batches, 3, rec, progress=False)
        rec.close()
        records[fused] = load_records(path)
    for kind, kr in records[True].kinds.items():
        other = records[False].kinds[kind]
        assert kr.Q.shape[0] == 7
        for name, got in {"Q": kr.Q, **kr.signals}.items():
            want = other.Q if name == "Q" else other.signals[name]
            scale = np.abs(want).max(axis=0, keepdims=True)
            assert np.all(np.abs(got - want) <= 1e-10 * scale + 1e-300), (kind, name)


def test_equilibrium_check_measures_angles_and_norms():
    """Channels rotating by a fixed angle phi at the predicted norm: measured = predicted."""
    settings = Settings.of("adamw", {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8,
                                     "weight_decay": 0.5})  # fmt: skip
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
        (["--optimizer", "lion"], "unknown optimizer 'lion'"),
        (
            ["--optimizer", "adamw", "--momentum", "0.9"],
            "--momentum does not apply to --optimizer adamw (it reads --lr, --wd)",
        ),
        (["--optimizer", "adagrad", "--nesterov"], "--nesterov does not apply to --optimizer"),
        (["--models", "charlm"], "model charlm takes tokens, data set synthetic gives images"),
        (["--data", "mnist"], "unknown data set 'mnist'"),
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
