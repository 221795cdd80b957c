"""nmech flow on a real network: reduced runs with asserted slopes, the interpreter against
torch.optim on the network, the output folder, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nmech.cli import main
from nmech.derive import rules
from nmech.numerics.simulate import iterate
from nmech.numerics.torch_loss import module_loss
from nmech.validation.datasets.digits import digits_batch
from nmech.validation.small_models import small_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _network(model: str = "mlp", samples: int = 200):
    x, y, classes = digits_batch(samples)
    net = small_model(model, tuple(x.shape[1:]), classes)
    return net, module_loss(net, (x, y), nn.functional.cross_entropy), x, y


def test_gd_reduced_run_has_the_slopes(tmp_path, capsys):
    """GD on the digits MLP (200 images, T = 0.4): slopes 1, 2 for p = 0, 1 and 2 for the
    gradient flow of L̃ = L + (η/4)‖∇L‖²; flow.json holds the schema's fields."""
    out = tmp_path / "gd"
    argv = ["flow", "gd", "--order", "1", "--etas", "0.1,0.05,0.025", "--horizon", "0.4"]
    assert main([*argv, "--samples", "200", "--out", str(out)]) == 0
    doc = json.loads((out / "flow.json").read_text())
    assert doc["schema"] == "nmech.flow/1" and doc["rule"] == "gd"
    assert doc["orders"] == [0, 1] and doc["etas"] == [0.1, 0.05, 0.025]
    for p in (0, 1):
        assert abs(doc["slopes"][str(p)] - (p + 1)) < 0.3, doc["slopes"]
        errors = [doc["errors"][str(p)][repr(e)] for e in doc["etas"]]
        assert errors[0] > errors[1] > errors[2] > 1e-11
    assert abs(doc["modified_loss"]["slope"] - 2) < 0.3
    assert doc["settings"]["model"] == "mlp" and doc["settings"]["samples"] == 200
    for name in ("trajectory_error", "slopes"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (out / "figures" / f"{name}.pdf").exists()
    assert "| 1 |" in (out / "flow.md").read_text()
    assert not (out / "flow.partial.json").exists()
    assert "order 1: slope 2.0" in capsys.readouterr().out
    assert main([*argv, "--out", str(out)]) == 2  # a finished run is never overwritten
    assert "already holds a flow run" in capsys.readouterr().err


def test_heavy_ball_torch_start_is_corrected(tmp_path):
    """Heavy ball started as torch starts it (at rest): with the initial-condition correction
    and the stated burn-in the order-1 flow matches at O(η²)."""
    out = tmp_path / "hb"
    argv = ["flow", "heavy-ball", "--order", "1", "--etas", "0.02,0.01,0.005", "--start", "torch"]
    argv += ["--horizon", "0.4", "--samples", "100", "--no-modified-loss", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "flow.json").read_text())
    assert abs(doc["slopes"]["1"] - 2) < 0.3, doc["slopes"]
    assert "shadow point" in doc["start_note"]
    assert all(n >= 1 for n in doc["burn_in"]["1"].values())


@pytest.mark.parametrize(
    ("rule", "make", "kw"),
    [
        (rules.torch_sgd(), torch.optim.SGD, {"momentum": 0.5}),
        (rules.adam(), torch.optim.Adam, {"betas": (0.9, 0.95), "eps": 0.1}),
        (rules.rmsprop(), torch.optim.RMSprop, {"alpha": 0.9, "eps": 0.1}),
    ],
    ids=["sgd", "adam", "rmsprop"],
)
def test_the_interpreter_on_tensors_is_torch_optim(rule, make, kw):
    """The rule interpreter stepping the network's flat parameters (torch tensors) gives
    torch.optim's iterates (torch's start: buffer = first gradient, Adam's bias correction)."""
    net, loss, x, y = _network("cnn-bn", samples=60)
    theta0 = loss.theta()
    values = {"eta": 0.05, "beta": 0.5, "beta1": 0.9, "beta2": 0.95, "alpha": 0.9, "eps": 0.1}
    ours = iterate(rule, theta0, 5, values, torch.func.grad(loss))
    opt = make(net.parameters(), lr=0.05, **kw)
    for n in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        assert torch.allclose(ours[n + 1], flat, rtol=0, atol=1e-12), n


def test_smooth_models_and_digits():
    x, y, classes = digits_batch()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float64 and classes == 10
    assert float(x.max()) == 1.0 and set(y.tolist()) == set(range(10))
    for name in ("mlp", "cnn", "cnn-bn"):
        net = small_model(name, (1, 8, 8), 10)
        assert net(x[:3]).shape == (3, 10)
        assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in net.modules())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--data", "mnist"], "unknown data 'mnist'"),
        (["--etas", "0.3,0.07"], "not a whole number"),
        (["--etas", "2.0,1.0", "--horizon", "8"], "outside the range where the modified flow"),
        (["--etas", "0.1"], "at least two distinct learning rates"),
        (["--etas", "0.1,fast"], "--etas must be comma-separated numbers"),
        (["--data-dir", "no/such/folder"], "Tiny ImageNet folder not found"),
        (["--samples", "5"], "--samples must be 10..1797"),
        (["--lam", "0.1"], "add --weight-decay"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, extra, message):
    argv = ["flow", "gd", "--order", "0", "--samples", "50", "--out", str(tmp_path / "x")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmech: error: ") and message in err and err.count("\n") == 1, err


def test_adaptive_manifold_start_refuses_a_negative_second_moment(tmp_path, capsys):
    """Adam's slow-manifold v ≈ ∇L⊙∇L + O(η) is not uniform where gradient entries are small:
    a start there would take √ of a negative number, so the run refuses and says why."""
    argv = ["flow", "adam", "--start", "manifold", "--etas", "0.02,0.01", "--horizon", "0.2"]
    assert main([*argv, "--samples", "100", "--eps", "0.001", "--out", str(tmp_path / "a")]) == 2
    assert "use --start torch" in capsys.readouterr().err


def test_tiny_imagenet_folder_with_the_cnn(tmp_path, monkeypatch):
    """--data-dir: a Tiny ImageNet folder through the project's loader, pooled to 16x16, the
    BatchNorm CNN (λ_max ≈ 10² here, hence the small η); GD's order-0 slope is 1 there too."""
    from tests.validation.test_tiny_imagenet import _make

    monkeypatch.setenv("NMECH_CACHE", str(tmp_path / "cache"))
    root = _make(tmp_path / "tiny-imagenet-200", per_class=4)
    out = tmp_path / "run"
    argv = ["flow", "gd", "--order", "0", "--etas", "0.004,0.002", "--horizon", "0.04"]
    argv += ["--model", "cnn-bn", "--data-dir", str(root), "--no-modified-loss", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "flow.json").read_text())
    assert doc["settings"]["data"] == "tiny-imagenet" and doc["settings"]["samples"] == 12
    assert abs(doc["slopes"]["0"] - 1) < 0.3, doc


def test_an_interrupted_run_keeps_the_finished_etas(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the second η: exit 130, flow.partial.json holds the first η's errors,
    no flow.json; the unfinished run is never overwritten without --overwrite."""
    from nmech.validation.flow import run as flow_run

    calls = {"n": 0}
    compare = flow_run._compare

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return compare(*args, **kwargs)

    monkeypatch.setattr(flow_run, "_compare", interrupted)
    out = tmp_path / "cut"
    argv = ["flow", "gd", "--order", "0", "--etas", "0.1,0.05", "--horizon", "0.4"]
    assert main([*argv, "--samples", "50", "--no-modified-loss", "--out", str(out)]) == 130
    partial = json.loads((out / "flow.partial.json").read_text())
    assert partial["finished_etas"] == [0.1] and partial["errors"]["0"]["0.1"] > 0
    assert not (out / "flow.json").exists()
    capsys.readouterr()
    assert main([*argv, "--samples", "50", "--no-modified-loss", "--out", str(out)]) == 2
    assert "already holds a flow run (flow.partial.json)" in capsys.readouterr().err
    assert json.loads((out / "flow.partial.json").read_text()) == partial


def test_a_rule_file(tmp_path):
    """--rule-file: GD written in the rule language goes through the same comparison."""
    rule = tmp_path / "mygd.rule"
    rule.write_text("theta_next = theta - eta*grad(theta)\n")
    out = tmp_path / "file"
    argv = ["flow", "--rule-file", str(rule), "--order", "1", "--etas", "0.1,0.05"]
    assert main([*argv, "--horizon", "0.4", "--samples", "50", "--out", str(out)]) == 0
    doc = json.loads((out / "flow.json").read_text())
    assert doc["rule"] == "mygd" and abs(doc["slopes"]["1"] - 2) < 0.3


def test_a_rule_with_an_average_is_refused(tmp_path, capsys):
    """nmech flow tracks θ: a declared average would be silently ignored, so it is refused."""
    path = tmp_path / "ema.rule"
    path.write_text(
        "theta_next = theta - eta*grad(theta)\n"
        "average avg_next = gamma*avg + (1 - gamma)*theta_next\n",
        encoding="utf-8",
    )
    argv = ["flow", "--rule-file", str(path), "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "declares the average 'avg'" in err and err.count("\n") == 1, err
