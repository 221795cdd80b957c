"""The Recorder's fused sparse reductions against a per-group, per-part reference."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nmech.validation.channels import (
    ChannelSums,
    Group,
    Part,
    flat_order,
    part_sums,
)
from nmech.validation.data import DeviceBatches, synthetic
from nmech.validation.discovery import discover
from nmech.validation.kinds import is_quadratic
from nmech.validation.recorder import Recorder
from nmech.validation.records import load_records

STEPS = 5


def _reference(group: Group, v: dict[str, torch.Tensor], unsigned: bool = False) -> np.ndarray:
    """sum_parts s * (per-channel sum of v[part]) over the kept channels, one part at a time."""
    total = sum(
        (1.0 if unsigned else p.sign) * part_sums(p, v[p.param].double(), group.channels)
        for p in group.parts
    )
    return total[list(group.kept)].numpy()


def _products(kind: str, theta: dict, nxt: dict | None, grad: dict | None) -> dict[str, dict]:
    """The elementwise float64 products each signal of ``kind`` sums over a block (signed)."""
    t = {k: v.double() for k, v in theta.items()}
    if not is_quadratic(kind):
        return {"Q": t}
    out = {"Q": {k: v**2 for k, v in t.items()}}
    if nxt is not None and grad is not None:
        g = {k: v.double() for k, v in grad.items()}
        d = {k: nxt[k].double() - t[k] for k in t}
        out["grad_sq"] = {k: v**2 for k, v in g.items()}
        out["step_sq"] = {k: v**2 for k, v in d.items()}
        out["step_grad"] = {k: d[k] * g[k] for k in t}
    return out


def _expected(
    groups: list[Group], states: list[dict], grads: list[dict]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dataset ``kind/signal``: (reference rows, rows of sum_A |products|, the scale of
    float64 rounding), computed group by group from the saved tensors."""
    rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for n, theta in enumerate(states):
        nxt, grad = (states[n + 1], grads[n]) if n < len(grads) else (None, None)
        for kind in sorted({g.kind for g in groups}):
            of = [g for g in groups if g.kind == kind]
            prods = _products(kind, theta, nxt, grad)
            absq = {k: v.abs() for k, v in prods["Q"].items()}
            prods["Q_abs"] = absq
            for sig, v in prods.items():
                absv = {k: t.abs() for k, t in v.items()}
                want = [_reference(g, v, unsigned=sig == "Q_abs") for g in of]
                scale = [_reference(g, absv, unsigned=True) for g in of]
                rows.setdefault(f"{kind}/{sig}", []).append(
                    (np.concatenate(want), np.concatenate(scale))
                )
    return {k: (np.stack([w for w, _ in v]), np.stack([a for _, a in v])) for k, v in rows.items()}


@pytest.mark.parametrize("fused", [True, False], ids=["compiled-pass", "torch-ops"])
@pytest.mark.parametrize("bn", [True, False])
def test_fused_reductions_match_per_group_reference(small_vgg, tmp_path, bn, fused):
    """Every recorded signal equals the group-by-group float64 reference, through the compiled
    CPU pass (:mod:`nmech.validation.fused`) and through the torch ops the GPU takes, with g_n
    copied or read in place."""
    model = small_vgg(bn)
    batches = DeviceBatches(synthetic(10, 20, 32, seed=0), 8, seed=0)
    found = discover(model, batches.next())
    # record a subset of channels of every other group, so that kept channels are exercised
    groups = [
        replace(g, keep=tuple(range(0, g.channels, 3))) if i % 2 and g.channels > 3 else g
        for i, g in enumerate(found.groups)
    ]
    # Nesterov adds into p.grad during the step (g_n copied before it); without it the
    # compiled route reads g_n in p.grad after the step
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=bn)
    rec = Recorder(model, groups, tmp_path / "r.h5", opt, flush_every=2, fused=fused)
    assert rec.quad.fused == fused and rec.grad_in_place == (fused and not bn)
    named = dict(model.named_parameters())
    names = sorted({p.param for g in groups for p in g.parts})
    states: list[dict] = []
    grads: list[dict] = []
    for n in range(STEPS):
        if n == 3:  # a write between steps: theta_n must be re-read, not taken from after_step
            with torch.no_grad():
                named[names[0]].mul_(1.5)
        x, y = batches.next()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        states.append({k: named[k].detach().clone() for k in names})
        grads.append({k: named[k].grad.clone() for k in names})
        rec.before_step()
        opt.step()
        rec.after_step()
    states.append({k: named[k].detach().clone() for k in names})
    rec.close()
    r = load_records(tmp_path / "r.h5")
    expected = _expected(groups, states, grads)
    assert expected, "no blocks"
    for name, (want, scale) in expected.items():
        kind, sig = name.split("/")
        kr = r.kinds[kind]
        got = {"Q": kr.Q, "Q_abs": kr.Q_abs}.get(sig)
        got = kr.signals[sig] if got is None else got
        assert got.shape == want.shape, name
        if sig in ("step_sq", "step_grad"):  # theta_3 (rescaled) - theta_2 is not D_2
            got, want, scale = (np.delete(a, 2, axis=0) for a in (got, want, scale))
        # relative to sum_A |s_i v_i|: a signed sum (rescale Q) may cancel far below its terms
        err = np.abs(got - want) / np.maximum(scale, 1e-300)
        assert err.max() < 1e-12, (name, err.max())


def test_channel_sums_match_per_part_reference():
    """Rows of one length merged across parameters, conv columns (rest 3x3) merged across two
    parameters of one shape, a column part with fan > 1, parameters with both a row and a
    column part, a whole-tensor part and kept subsets: the dense part sums and their signed
    combination equal sum_parts s * part_sums, stacked or not (channels along dim 2,
    groups starting at an offset)."""
    shapes = {
        "a.w": torch.Size([6, 4, 3, 3]), "a.b": torch.Size([6]), "e.w": torch.Size([2, 4, 3, 3]),
        "b.w": torch.Size([5, 6, 3, 3]), "b.b": torch.Size([5]), "f.w": torch.Size([5, 6, 3, 3]),
        "c.w": torch.Size([7, 20]), "c.b": torch.Size([7]), "d.w": torch.Size([3, 7]),
        "d.b": torch.Size([3]), "p.pos": torch.Size([1, 4, 6]),
    }  # fmt: skip
    a_own = (Part("a.w", 0), Part("a.b", 0))
    groups = [
        Group("scale", "a", a_own, 6, keep=(0, 2, 5)),
        Group("scale", "pos", (Part("p.pos", 2),), 6, keep=(1, 5)),
        Group("rescale", "c2->d2", (Part("c.w", 0, offset=2), Part("d.w", 1, 1, -1.0, 2)), 3),
        Group("scale", "e", (Part("e.w", 0),), 2),
        Group("scale", "f", (Part("f.w", 0),), 5),
        Group("rescale", "a->b", (*a_own, Part("b.w", 1, 1, -1.0)), 6, keep=(1, 4)),
        Group("rescale", "a->f", (*a_own, Part("f.w", 1, 1, -1.0)), 6),
        Group("rescale", "b->c", (Part("b.w", 0), Part("b.b", 0), Part("c.w", 1, 4, -1.0)), 5),
        Group("rescale", "c->d", (Part("c.w", 0), Part("c.b", 0), Part("d.w", 1, 1, -1.0)), 7),
        Group("translation", "d.b", (Part("d.b", None),), 1),
    ]
    order = flat_order(groups, shapes)
    assert abs(order.index("e.w") - order.index("a.w")) == 1  # rows of 36 back to back
    assert abs(order.index("f.w") - order.index("b.w")) == 1  # one shape back to back
    offsets = dict(zip(order, np.cumsum([0] + [shapes[n].numel() for n in order]).tolist()))
    numel = sum(s.numel() for s in shapes.values())
    sums = ChannelSums(groups, offsets, shapes, torch.device("cpu"))
    parts = {(p.param, p.dim) for g in groups for p in g.parts}
    assert len(sums.runs) < len(parts) - 3
    assert any(blocks == 2 and pre == 5 for _, blocks, pre, _, _ in sums.runs)  # b.w, f.w cols
    v = torch.randn(2, numel, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    per_param = [{n: v[j, offsets[n] : offsets[n] + shapes[n].numel()].view(shapes[n])
                  for n in shapes} for j in range(2)]  # fmt: skip
    for unsigned in (False, True):
        want = np.stack(
            [np.concatenate([_reference(g, p, unsigned) for g in groups]) for p in per_param], 1
        )
        for got in (sums.blocks(sums.sums(v), unsigned), sums.blocks(sums.sums(v[1]), unsigned)):
            k = got.shape[1]
            np.testing.assert_allclose(got.numpy(), want[:, 2 - k :], rtol=0, atol=1e-12)
    assert sums.signed.shape[0] == sum(len(g.kept) for g in groups)


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.float64])
def test_compiled_step_sums_match_the_torch_reductions(grad_dtype):
    """The compiled pass generated from the step signals' summands (nmech.validation.fused,
    codegen) gives ChannelSums.sums of the stacked [D^2; D*g; g^2; theta'^2] for rows, columns
    with fan > 1, whole-tensor parts and parameters with both; so does the torch pass; its
    sparse products equal torch's; a NaN gradient entry reaches its sums."""
    from nmech.validation.addresses import AddressTable
    from nmech.validation.fused import CompiledPass, CsrMatrix, TorchPass, shares
    from nmech.validation.recorder import ELEMENT

    shapes = {
        "a.w": torch.Size([6, 4, 3, 3]), "a.b": torch.Size([6]), "b.w": torch.Size([5, 6, 3, 3]),
        "b.b": torch.Size([5]), "c.w": torch.Size([7, 20]), "c.b": torch.Size([7]),
        "d.w": torch.Size([3, 7]), "d.b": torch.Size([3]), "p.pos": torch.Size([1, 4, 6]),
    }  # fmt: skip
    a_own = (Part("a.w", 0), Part("a.b", 0))
    groups = [
        Group("scale", "a", a_own, 6, keep=(0, 2, 5)),
        Group("rescale", "a->b", (*a_own, Part("b.w", 1, 1, -1.0)), 6),
        Group("rescale", "b->c", (Part("b.w", 0), Part("b.b", 0), Part("c.w", 1, 4, -1.0)), 5),
        Group("rescale", "c->d", (Part("c.w", 0), Part("c.b", 0), Part("d.w", 1, 1, -1.0)), 7),
        Group("scale", "d.b", (Part("d.b", None),), 1),
        # channels along dim 2 of a [1, N, D] tensor; a group starting at row / column 2
        Group("scale", "pos", (Part("p.pos", 2),), 6),
        Group("rescale", "c2->d2", (Part("c.w", 0, offset=2), Part("d.w", 1, 1, -1.0, 2)), 3),
    ]
    order = flat_order(groups, shapes)
    offsets = dict(zip(order, np.cumsum([0] + [shapes[n].numel() for n in order]).tolist()))
    numel = sum(s.numel() for s in shapes.values())
    sums = ChannelSums(groups, offsets, shapes, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(numel, dtype=torch.float64, generator=gen)
    nxt = theta + 1e-3 * torch.randn(numel, dtype=torch.float64, generator=gen)
    grad = torch.randn(numel, generator=gen).to(grad_dtype)
    g = grad.double()
    want = sums.sums(torch.stack([(nxt - theta) ** 2, (nxt - theta) * g, g * g, nxt * nxt]))
    e = ELEMENT
    d = e["theta_next"] - e["theta"]
    summands = [d**2, d * e["g"], e["g"] ** 2, e["theta_next"] ** 2]
    arrays = [e["theta_next"], e["theta"], e["g"]]
    compiled = CompiledPass(summands, arrays, sums, offsets, shapes)
    inputs = {"theta": theta, "theta_next": nxt, "g": grad}
    got = compiled.sums(inputs, np.zeros(0))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-13, atol=1e-13)
    by_torch = TorchPass(summands, arrays, sums).sums({**inputs, "g": g}, [])
    np.testing.assert_allclose(by_torch.numpy(), want.numpy(), rtol=1e-13, atol=1e-13)
    for unsigned in (False, True):
        out = np.full((sums.signed.shape[0], 3), np.nan)
        CsrMatrix(sums.unsigned if unsigned else sums.signed).into(got[:, :3].numpy(), out)
        np.testing.assert_allclose(out, sums.blocks(want[:, :3], unsigned).numpy(), rtol=1e-13)
    # the same sums from per-parameter tensors read in place (their addresses), and from any
    # split of the parameters among workers, bit for bit
    pieces = [grad[offsets[n] : offsets[n] + shapes[n].numel()].view(shapes[n]) for n in order]
    table = AddressTable.of(pieces, [shapes[n] for n in order])
    assert table is not None
    by_address = compiled.sums({**inputs, "g": table}, np.zeros(0)).clone()
    assert torch.equal(by_address, got)
    for workers in (1, 3):
        compiled.order, compiled.starts = shares([shapes[n].numel() for n in order], workers)
        compiled.scratch = np.zeros((workers, *compiled.scratch.shape[1:]))
        assert torch.equal(compiled.sums(inputs, np.zeros(0)), by_address), workers
    grad[offsets["b.w"] + 10] = float("nan")  # b.w row 0, column 1 (a->b block 1)
    got = compiled.sums({**inputs, "g": grad}, np.zeros(0))
    bad = ~np.isfinite(got.numpy()).all(axis=1)
    assert bad.sum() == 2 and np.isfinite(got[:, [0, 3]].numpy()).all()  # one row, one column


def test_tensors_a_kernel_cannot_read_in_place_get_no_address_table():
    """Only contiguous CPU float32/float64 tensors of one dtype, shaped like their parameters,
    are read in place; anything else is refused (and the recorder copies it instead)."""
    from nmech.validation.addresses import AddressTable

    shapes = [torch.Size([4, 3]), torch.Size([5])]
    good = [torch.zeros(4, 3), torch.zeros(5)]
    table = AddressTable.of(good, shapes)
    assert table is not None and table.like.dtype == np.float32
    assert list(table.addresses) == [t.data_ptr() for t in good]
    for bad in (
        [torch.zeros(3, 4).T, torch.zeros(5)],  # strided
        [torch.zeros(4, 3), torch.zeros(5, dtype=torch.float64)],  # mixed dtypes
        [torch.zeros(12), torch.zeros(5)],  # same size, other shape
        [torch.zeros(4, 3, dtype=torch.float16), torch.zeros(5, dtype=torch.float16)],
        [torch.zeros(4, 3, dtype=torch.int64), torch.zeros(5, dtype=torch.int64)],
    ):
        assert AddressTable.of(bad, shapes) is None
