from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from nmech.errors import NmechError
from nmech.validation.compare import compare
from nmech.validation.data import DeviceBatches, synthetic
from nmech.validation.discovery import discover
from nmech.validation.recorder import Recorder
from nmech.validation.records import load_records
from nmech.validation.train import train


def _run(model, path: Path, steps: int, flush_every: int = 100, **sgd) -> Recorder:
    batches = DeviceBatches(synthetic(10, 20, 32, seed=0), 8, seed=0)
    found = discover(model, batches.next())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, **sgd)
    rec = Recorder(model, found.groups, path, opt, flush_every=flush_every)
    train(model, opt, batches, steps, rec, progress=False)
    return rec


def _heavy_ball_reference(kr, eta, beta, lam):
    """Private numpy check of the recursion (heavy ball, coupled weight decay)."""
    s, q = kr.signals["step_sq"], kr.Q
    x = np.empty_like(q)
    x[0] = q[0]
    p = None
    for n in range(len(s)):
        p = -eta * lam * x[0] if n == 0 else beta * (p + s[n - 1]) - eta * lam * x[n]
        x[n + 1] = x[n] + 2 * p + s[n]
    return x


def test_records_layout_chunked_flush_and_values(small_vgg, tmp_path):
    model = small_vgg(False)
    rec = _run(model, tmp_path / "r.h5", steps=10, flush_every=4, momentum=0.9, weight_decay=5e-4)
    assert rec.writer.file["rescale/grad_sq"].shape[0] == 8  # two flushes of 4, 2 rows buffered
    assert rec.committed == 8 and rec.writer.file["commit"][0] == 8
    rec.close()
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f.attrs["format_version"] == 3 and f["commit"][0] == 10
        assert f["rescale/Q"].shape == (11, 784) and f["rescale/step_sq"].shape == (10, 784)
        assert f["translation/Q"].shape == (11, 129) and "grad_sq" not in f["translation"]
        assert f["rescale/Q"].chunks is not None and f["rescale/Q"].maxshape[0] is None
        assert f["train/loss"].shape == (10,)
    r = load_records(tmp_path / "r.h5")
    names = r.kinds["rescale"].block_names
    # Q_N of channel 3 of conv13 -> fc1, recomputed by hand (fc1 columns 3*1 .. 3*1+1, fan 1)
    c = names.index("features.28->classifier.1[3]")
    conv, fc = model.features[28], model.classifier[1]
    q = (conv.weight[3].double() ** 2).sum() + conv.bias[3].double() ** 2
    q -= (fc.weight[:, 3].double() ** 2).sum()
    assert r.kinds["rescale"].Q[-1, c] == pytest.approx(q.item(), rel=1e-12)
    t = r.kinds["translation"].block_names.index("classifier.7.weight[5]")
    col = model.classifier[7].weight[:, 5].double().sum().item()
    assert r.kinds["translation"].Q[-1, t] == pytest.approx(col, rel=1e-12)
    ref = _heavy_ball_reference(r.kinds["rescale"], 0.1, 0.9, 5e-4)
    err = np.abs(ref - r.kinds["rescale"].Q).max(0) / np.abs(r.kinds["rescale"].Q_abs).max(0)
    assert err.max() < 1e-5


def test_recorder_misuse_is_reported(small_vgg, tmp_path):
    model = small_vgg(True)
    found = discover(model, (torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(model, found.groups, tmp_path / "m.h5", opt)
    with pytest.raises(NmechError, match="no gradient"):
        rec.before_step()
    with pytest.raises(NmechError, match="without before_step"):
        rec.after_step()
    rec.abort()
    with pytest.raises(NmechError, match="centered=True"):
        opt = torch.optim.RMSprop(model.parameters(), centered=True)
        Recorder(model, found.groups, tmp_path / "a.h5", opt)
    bad = [replace(found.groups[0], kind="dilation")]
    with pytest.raises(NmechError, match="unknown symmetry kind 'dilation'"):
        Recorder(model, bad, tmp_path / "k.h5", torch.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.parametrize(
    "sgd",
    [dict(momentum=0.0, weight_decay=5e-4), dict(momentum=0.9, nesterov=True, weight_decay=5e-4)],
)
def test_exact_recursion_meets_error_bar(small_vgg, tmp_path, sgd):
    worst = {}
    for bn in (True, False):
        rec = _run(small_vgg(bn), tmp_path / f"r{bn}.h5", steps=30, **sgd)
        rec.close()
        for kind, comp in compare(load_records(tmp_path / f"r{bn}.h5")).items():
            worst[(bn, kind)] = float(comp.forms["exact"].errors.max())
    for key in ((True, "scale"), (False, "rescale"), (True, "translation"), (False, "translation")):
        assert worst[key] < 1e-4, (key, worst)
