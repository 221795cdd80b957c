"""Discovery: the blocks found in VGG, ResNet, transformers and small modern blocks, each one
checked by applying its transformation (the loss must not change), the reasons given where
none exists, and the errors for untraceable models."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nmech.errors import NmechError
from nmech.validation.channels import Group
from nmech.validation.discovery import discover
from nmech.validation.models import DataShape, ViT, build_model


def _batch(size=32, n=16, classes=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def _vector_batch(n=32, features=5, classes=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def _transform(model: nn.Module, group: Group, channel: int, a: float) -> None:
    """Apply the block's symmetry in place: theta_i *= a**s_i (quadratic kinds), += a (linear)."""
    named = dict(model.named_parameters())
    with torch.no_grad():
        for p in group.parts:
            t = named[p.param]
            if p.dim is None:
                view = t
            else:
                lo = p.offset + channel * p.fan
                view = t.narrow(p.dim, lo, p.fan)
            if group.quadratic:
                view.mul_(a**p.sign)
            else:
                view.add_(a)


def _assert_invariant(model, found, batch, loss_fn=F.cross_entropy, tol=1e-6, a=1.7, both=True):
    """Every found block's transformation leaves the loss unchanged (float64 model)."""
    model.double()
    x, y = batch
    x = x.double() if x.is_floating_point() else x

    def loss() -> float:
        torch.manual_seed(0)  # the same dropout masks
        with torch.no_grad():
            return float(loss_fn(model(x), y))

    base = loss()
    for g in found.groups:
        for c in {g.kept[0], g.kept[-1]} if both else {g.kept[-1]}:
            state = {k: v.clone() for k, v in model.state_dict().items()}
            _transform(model, g, c, a)
            moved = loss()
            model.load_state_dict(state)
            assert abs(moved - base) <= tol * abs(base), (g.kind, g.name, c, moved, base)


def test_bn_vgg_blocks(small_vgg):
    found = discover(small_vgg(True), _batch())
    assert not found.failures
    scale = found.of_kind("scale")
    assert len(scale) == 13 and sum(g.channels for g in scale) == 528  # 8,8,16,16,32x3,64x6
    rescale = [g.name for g in found.of_kind("rescale")]
    # BatchNorm affine -> ReLU (-> pool) -> next conv, the last one into fc1, and the fc layers
    assert rescale[:2] == ["features.1->features.3", "features.4->features.7"]
    assert rescale[-3:] == [
        "features.41->classifier.1", "classifier.1->classifier.4", "classifier.4->classifier.7",
    ]  # fmt: skip
    assert len(rescale) == 15
    trans = found.of_kind("translation")
    assert [(g.name, g.channels) for g in trans] == [
        ("classifier.7.weight", 128), ("classifier.7.bias", 1),
    ]  # fmt: skip


def test_plain_net_blocks_and_flatten_fan():
    torch.manual_seed(0)
    from nmech.validation.models import vgg16

    m = vgg16(200, batch_norm=False, image_size=64, width=1 / 8)
    found = discover(m, _batch(64, 4, 200))
    assert not found.failures and not found.of_kind("scale")
    rescale = found.of_kind("rescale")
    assert len(rescale) == 15  # 12 conv->conv, conv13->fc1, fc1->fc2, fc2->fc3
    conv_to_fc = rescale[12]
    assert conv_to_fc.name == "features.28->classifier.1"
    assert conv_to_fc.parts[-1].fan == 4 and conv_to_fc.parts[-1].sign == -1.0  # 2x2 per channel
    assert len(found.of_kind("translation")) == 2
    _assert_invariant(m, found, _batch(64, 4, 200))


def test_eval_mode_batchnorm_is_reported_not_kept(small_vgg):
    m = small_vgg(True)
    with torch.no_grad():  # give eval-mode BN non-trivial running statistics
        m.train()
        m(_batch(n=64)[0])
    m.eval()
    found = discover(m, _batch())
    assert not found.of_kind("scale")
    assert any("eval mode" in why for notes in found.notes.values() for why in notes)
    assert "eval mode" in found.summary()


def test_translation_fails_under_mse_loss(small_vgg):
    def mse(logits, y):
        return F.mse_loss(logits, F.one_hot(y, 10).float())

    found = discover(small_vgg(False), _batch(), loss_fn=mse)
    failed = [f for f in found.failures if f.kind == "translation"]
    assert failed and min(f.violation for f in failed) > 1e-2 * found.tol  # the linear bound
    assert "translation" in found.summary() and "failed" in found.summary()


class LayerNormMLP(nn.Module):
    def __init__(self, norm=nn.LayerNorm, act=nn.ReLU):
        super().__init__()
        self.fc1, self.n1, self.a1 = nn.Linear(5, 16), norm(16), act()
        self.fc2, self.n2, self.a2 = nn.Linear(16, 12), norm(12), act()
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        return self.out(self.a2(self.n2(self.fc2(self.a1(self.n1(self.fc1(x)))))))


@pytest.mark.parametrize("norm", [nn.LayerNorm, nn.RMSNorm])
def test_layer_and_rms_norm_give_layer_wise_scale_blocks(norm):
    """The issue's MLP with LayerNorm had no scale block: the whole layer is one block."""
    torch.manual_seed(0)
    m = LayerNormMLP(norm)
    found = discover(m, _vector_batch())
    scale = found.of_kind("scale")
    assert [(g.name, g.channels) for g in scale] == [("fc1", 1), ("fc2", 1)]
    assert all(p.dim is None for p in scale[0].parts)  # every element of the layer
    rescale = [(g.name, g.channels) for g in found.of_kind("rescale")]
    assert rescale == [("n1->fc2", 16), ("n2->out", 12)]  # affine channel -> next columns
    _assert_invariant(m, found, _vector_batch(), tol=1e-4)  # the norms' eps


def test_silu_and_gelu_are_reported_not_guessed():
    torch.manual_seed(0)
    m = LayerNormMLP(nn.LayerNorm, nn.SiLU)
    found = discover(m, _vector_batch())
    assert not found.of_kind("rescale")  # SiLU is not positively homogeneous
    assert "SiLU a1 is not positively homogeneous" in found.summary()
    assert [g.name for g in found.of_kind("scale")] == ["fc1", "fc2"]  # the norms still absorb


class SmallCNN(nn.Module):
    """conv -> BatchNorm -> ReLU -> conv -> GroupNorm -> ReLU -> pool -> Linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.gn = nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(4, 8)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.c1(x)))
        x = F.relu(self.gn(self.c2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_batchnorm_affine_rescale_and_group_norm_groups():
    torch.manual_seed(0)
    m = SmallCNN()
    with torch.no_grad():  # non-trivial affine parameters
        for p in (m.bn.weight, m.bn.bias, m.gn.weight, m.gn.bias):
            p.add_(0.3 * torch.randn_like(p))
    batch = _batch(16, 8)
    found = discover(m, batch)
    groups = {g.name: g for g in found.groups}
    assert groups["c1"].kind == "scale" and groups["c1"].channels == 8
    c2 = groups["c2"]
    assert c2.kind == "scale" and c2.channels == 4 and c2.parts[0].fan == 2  # per group of 2
    assert groups["bn->c2"].kind == "rescale"  # BatchNorm affine -> ReLU -> conv
    assert groups["gn->fc"].kind == "rescale"  # GroupNorm affine -> ReLU -> pool -> Linear
    _assert_invariant(m, found, batch, tol=1e-4)  # BN/GN eps: invariance to ~eps/var


def test_resnet18_residual_streams():
    torch.manual_seed(0)
    m = build_model("resnet18", DataShape("images", 10, 8), width=0.125)
    batch = _batch(8, 8)
    found = discover(m, batch)
    assert not found.failures
    names = [g.name for g in found.of_kind("rescale")]
    stem = "bn1+layer1.0.bn2+layer1.1.bn2->layer1.0.conv1+layer1.1.conv1+layer2.0.conv1+layer2.0.shortcut.0"
    assert stem in names  # one stream channel: every writer with every reader
    assert "layer4.0.bn2+layer4.0.shortcut.1+layer4.1.bn2->layer4.1.conv1+fc" in names
    assert len(found.of_kind("scale")) == 20  # every conv (17 + 3 shortcuts) feeds a BatchNorm
    _assert_invariant(m, found, batch, tol=1e-4, both=False)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_vit_stream_attention_and_qk_norm(qk_norm):
    torch.manual_seed(0)
    m = ViT(10, 16, dim=16, depth=2, heads=2, qk_norm=qk_norm)
    batch = _batch(16, 8)
    found = discover(m, batch)
    assert not found.failures
    scale = {g.name: g for g in found.of_kind("scale")}
    stream = next(g for name, g in scale.items() if name.startswith("patch+"))
    assert stream.channels == 1 and {"cls", "pos", "blocks.1.mlp.fc2.weight"} <= {
        p.param for p in stream.parts
    }
    names = {g.name for g in found.groups}
    assert "blocks.0.attn.qkv->blocks.0.attn.proj" in names  # values with the output columns
    if qk_norm:  # q and k of each head: one scale block per head (8 rows each), no key bias
        heads = scale["blocks.0.attn.qkv"]
        assert heads.channels == 4 and heads.parts[0].fan == 8
        assert (
            "blocks.0.attn.k_norm.bias:key" in names and "blocks.0.attn.qkv.bias:key" not in names
        )
    else:
        key = next(g for g in found.groups if g.name == "blocks.0.attn.qkv.bias:key")
        assert key.channels == 16 and key.parts[0].offset == 16  # rows E..2E of the fused bias
    assert "GELU blocks.0.mlp.act is not positively homogeneous" in found.summary()
    _assert_invariant(m, found, batch, tol=1e-4)


class ExplicitAttention(nn.Module):
    """Separate q, k, v Linears and softmax(q kᵀ / √d) written out."""

    def __init__(self, dim=8):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        y = self.o(scores.softmax(dim=-1) @ v)
        return self.head(y.mean(1))


def test_explicit_softmax_attention_key_bias_has_zero_gradient():
    torch.manual_seed(0)
    m = ExplicitAttention()
    g = torch.Generator().manual_seed(3)
    batch = (torch.randn(8, 6, 8, generator=g), torch.randint(0, 3, (8,), generator=g))
    found = discover(m, batch)
    key = next(g for g in found.groups if g.name == "k.bias:key")
    assert key.kind == "translation" and key.channels == 8 and key.keep is None
    assert not any(g.name.startswith("q.bias") for g in found.groups)
    assert any(g.name == "v->o" for g in found.groups)
    _assert_invariant(m, found, batch, tol=1e-6)


def test_model_without_symmetry_says_so():
    m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Sigmoid())
    found = discover(m, _vector_batch(), loss_fn=lambda out, y: out.sum())
    assert found.groups == [] and not found.failures
    summary = found.summary()
    assert summary.startswith("no symmetry found")
    assert "Tanh 1 is not positively homogeneous" in summary


def test_untraceable_model_names_the_layer():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), Branchy()))
    with pytest.raises(NmechError, match=r"layer '1\.1' \(Branchy\): .*control flow") as info:
        discover(model, _vector_batch(features=4))
    assert "\n" not in str(info.value)
    with pytest.raises(NmechError, match="expected an nn.Module"):
        discover("not a module", _vector_batch())
