"""The recipes of docs/extending.md, followed literally: a new optimizer (one adapter), a new
model (one registry entry) and a new symmetry kind (a kind and its finder), each trained and
checked end to end. The registries are restored after each test."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nmech.cli import main
from nmech.derive import rules
from nmech.derive.symmetry import Symmetry
from nmech.validation import discovery, kinds, models, optimizers
from nmech.validation.channels import Group, Part
from nmech.validation.discovery import Traced, discover
from nmech.validation.kinds import LINEAR_FAMILY, Kind
from nmech.validation.models import IMAGES, ModelSpec
from nmech.validation.optimizers import OptimizerAdapter, Settings
from nmech.validation.recorder import Recorder


# --- an optimizer: SGD with decoupled weight decay, theta+ = (1 - eta lam) theta - eta g ----
class SGDW(torch.optim.Optimizer):
    def __init__(self, params, lr=0.1, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(p.grad, alpha=-group["lr"])


class SGDWAdapter(OptimizerAdapter):
    name = "sgdw"
    torch_class = SGDW
    keys = ("lr", "weight_decay")
    options = ("lr", "weight_decay")

    def rule(self, settings: Settings):
        return rules.parse("theta_next = (1 - eta*lam)*theta - eta*grad(theta)")

    def values(self, settings: Settings) -> dict[str, float]:
        return {"eta": settings.lr, "lam": float(settings["weight_decay"])}

    def build(self, params, preset):
        return SGDW(params, lr=preset.lr, weight_decay=preset.weight_decay)


@pytest.fixture
def registries():
    """Registrations made by a test are undone after it (the registries restored in place)."""
    saved = {id(r): (r, r.copy()) for r in (optimizers.OPTIMIZERS, models.MODELS, kinds.KINDS)}
    finders = list(discovery.FINDERS)
    yield
    for registry, copy in saved.values():
        registry.clear()
        registry.update(copy)
    discovery.FINDERS[:] = finders


def _record(model, opt, batch, path, steps):
    """A user's own loop with the Recorder; returns the closed recorder."""
    x, y = batch
    rec = Recorder(model, discover(model, batch), path, opt)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        rec.before_step()
        opt.step()
        rec.after_step()
    rec.close()
    return rec


def test_new_optimizer(registries, small_vgg, tmp_path):
    optimizers.register_optimizer(SGDWAdapter())
    model = small_vgg(True)
    batch = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = SGDW(model.parameters(), lr=0.1, weight_decay=5e-3)
    rec = _record(model, opt, batch, tmp_path / "records.h5", 8)
    assert rec.settings.optimizer == "sgdw"  # its adapter, not the fallback
    for kind, comp in rec.compare().items():
        assert comp.errors["exact"].max() < 1e-4, kind
    # and from the command line, with the registered name
    out = tmp_path / "cli"
    argv = ["validate", "--optimizer", "sgdw", "--steps", "4", "--batch-size", "8",
            "--models", "vgg16_bn", "--wd", "0.01", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["runs"]["vgg16_bn"]["optimizer"]["optimizer"] == "sgdw"
    assert all(f["exact"]["max"] < 1e-4 for f in report["errors"].values())


# --- a model: a two-layer MLP with LayerNorm on flattened images ----------------------------
class NormMLP(nn.Module):
    def __init__(self, classes: int, image_size: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(3 * image_size * image_size, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(F.relu(self.norm(self.fc1(x.flatten(1)))))


def test_new_model(registries, tmp_path):
    spec = ModelSpec("norm_mlp", IMAGES, lambda d, w: NormMLP(d.classes, d.image_size, round(64 * w)),
                     "an MLP with LayerNorm")  # fmt: skip
    models.register_model(spec)
    out = tmp_path / "run"
    argv = ["validate", "--models", "norm_mlp", "--data", "digits", "--steps", "20",
            "--batch-size", "16", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["errors"]) == {"scale", "rescale", "translation"}
    assert all(f["exact"]["max"] < 1e-4 for f in report["errors"].values())
    assert report["runs"]["norm_mlp"]["run"]["data"] == "digits"


# --- a symmetry kind: centring, a bias added to a LayerNorm's input --------------------------
def centring_symmetry() -> Symmetry:
    """LayerNorm subtracts the mean: adding t to every entry of the bias before it changes
    nothing. J = 0, c = 1_A."""
    return Symmetry("centring", has_J=False, has_c=True, description="J = 0, c = 1_A")


def find_centring(t: Traced) -> list[Group]:
    """The bias of every Linear whose only user is a LayerNorm over its output features."""
    out = []
    for node in t.gm.graph.nodes:
        users = list(node.users)
        if node.op != "call_module" or len(users) != 1 or users[0].op != "call_module":
            continue
        layer, norm = t.gm.get_submodule(node.target), t.gm.get_submodule(users[0].target)
        if (
            isinstance(layer, nn.Linear)
            and isinstance(norm, nn.LayerNorm)
            and layer.bias is not None
        ):
            out.append(
                Group("centring", f"{node.target}.bias", (Part(f"{node.target}.bias", None),), 1)
            )
    return out


def test_new_symmetry_kind(registries, tmp_path):
    kinds.register_kind(Kind("centring", LINEAR_FAMILY, centring_symmetry,
                             r"centring: $\langle 1_A,\theta\rangle$", "<1_A, theta>", "[θ]"))  # fmt: skip
    discovery.FINDERS.append(find_centring)
    torch.manual_seed(0)
    model = NormMLP(10, 8, 32)
    batch = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    assert [g.name for g in discover(model, batch).of_kind("centring")] == ["fc1.bias"]
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    rec = _record(model, opt, batch, tmp_path / "records.h5", 10)
    result = rec.compare()
    assert result["centring"].errors["exact"].max() < 1e-4
    assert main(["report", str(tmp_path / "records.h5")]) == 0  # the report shows it too
    assert "centring" in json.loads((tmp_path / "report.json").read_text())["errors"]
