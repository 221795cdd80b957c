"""The report of any records file: a user's own loop without a loss, a model without any
symmetry, the warnings when a comparison tests little, figures as PNG and PDF."""

import json

import torch
import torch.nn.functional as F
from torch import nn

from nmech.cli import main
from nmech.validation import models
from nmech.validation.discovery import discover
from nmech.validation.models import IMAGES, ModelSpec
from nmech.validation.recorder import Recorder


def _own_loop(model, opt, batch, path, steps, loss=False):
    found = discover(model, batch)
    rec = Recorder(model, found, path, opt)
    x, y = batch
    for _ in range(steps):
        opt.zero_grad()
        value = F.cross_entropy(model(x), y)
        value.backward()
        rec.before_step(value.detach() if loss else None)
        opt.step()
        rec.after_step()
    rec.close()
    return found


def test_report_of_an_own_loop_file_without_loss(small_vgg, tmp_path, capsys):
    """The README's own-loop example: any file name, no loss given; nmech report FILE."""
    model = small_vgg(True)
    batch = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    _own_loop(model, opt, batch, tmp_path / "run" / "records.h5", 6)
    assert main(["report", str(tmp_path / "run" / "records.h5")]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "scale: exact max" in printed
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    run = report["runs"]["VGG"]
    assert run["loss_recorded"] is False and run["final_loss"] is None
    md = (tmp_path / "run" / "report.md").read_text()
    assert "loss" not in md.split("##")[0]  # no "final mini-batch loss nan"
    for fig in report["figures"]:
        png = tmp_path / "run" / fig
        assert png.stat().st_size > 0 and png.with_suffix(".pdf").stat().st_size > 0
    # the short run's warning: far from the relaxation time 1/(eta*lam)
    assert any("relaxation times" in w for w in report["warnings"])


def test_tiny_learning_rate_warns_that_nothing_is_tested(small_vgg, tmp_path):
    model = small_vgg(False)
    batch = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-12)
    _own_loop(model, opt, batch, tmp_path / "r.h5", 3, loss=True)
    assert main(["report", str(tmp_path / "r.h5"), "--out", str(tmp_path / "rep")]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert any("comparison tests nothing measurable" in w for w in report["warnings"])
    assert report["runs"]["VGG"]["loss_recorded"] is True


class NoSymmetry(nn.Module):
    """tanh and a sigmoid head: no scaling, no translation."""

    def __init__(self, classes: int, image_size: int):
        super().__init__()
        self.fc1 = nn.Linear(3 * image_size * image_size, 16)
        self.fc2 = nn.Linear(16, classes)

    def forward(self, x):
        return torch.sigmoid(self.fc2(torch.tanh(self.fc1(x.flatten(1)))))


def test_model_without_symmetry_exits_0_with_an_empty_section(tmp_path, capsys):
    spec = ModelSpec("no_symmetry", IMAGES, lambda d, w: NoSymmetry(d.classes, d.image_size), "")
    models.register_model(spec)
    try:
        out = tmp_path / "run"
        argv = ["validate", "--models", "no_symmetry", "--data", "digits", "--steps", "3",
                "--batch-size", "8", "--out", str(out), "--no-progress"]  # fmt: skip
        assert main(argv) == 0
    finally:
        del models.MODELS["no_symmetry"]
    assert "no symmetry found" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["errors"] == {} and report["figures"] == []
    md = (out / "report.md").read_text()
    assert "No symmetry found" in md and "not positively homogeneous" in md  # the reasons
    discovery = json.loads((out / "discovery-no_symmetry.json").read_text())
    assert discovery["groups"] == [] and discovery["summary"].startswith("no symmetry found")
