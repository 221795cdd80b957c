import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nmech.errors import NmechError
from nmech.validation.discovery import candidate_groups, discover


def _batch(size=32, n=16, classes=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_bn_net_blocks(small_vgg):
    found = discover(small_vgg(True), _batch())
    assert not found.failures
    scale = found.of_kind("scale")
    assert len(scale) == 13 and sum(g.channels for g in scale) == 528  # 8,8,16,16,32x3,64x6
    # no conv->conv rescale in the BN net; the BN-free classifier gives fc1->fc2 and fc2->fc3
    assert [g.name for g in found.of_kind("rescale")] == [
        "classifier.1->classifier.4", "classifier.4->classifier.7",
    ]  # fmt: skip
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


def test_eval_mode_batchnorm_fails_check_and_is_left_out(small_vgg):
    m = small_vgg(True)
    with torch.no_grad():  # give eval-mode BN non-trivial running statistics
        m.train()
        m(_batch(n=64)[0])
    m.eval()
    found = discover(m, _batch())
    failed = {f.kind for f in found.failures}
    assert "scale" in failed
    kept_scale = sum(len(g.kept) for g in found.of_kind("scale"))
    assert kept_scale < 528 - 400
    assert all(f.violation > found.tol for f in found.failures)


def test_translation_fails_under_mse_loss(small_vgg):
    def mse(logits, y):
        return F.mse_loss(logits, F.one_hot(y, 10).float())

    found = discover(small_vgg(False), _batch(), loss_fn=mse)
    assert any(f.kind == "translation" for f in found.failures)
    assert len(found.of_kind("translation")) < 2 or any(
        g.keep for g in found.of_kind("translation")
    )


def test_functional_user_model_and_errors():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(5, 7), nn.Linear(7, 6), nn.Linear(6, 3)

        def forward(self, x):
            h = F.relu(self.a(x))
            return self.c(torch.sigmoid(self.b(h)))  # sigmoid is not homogeneous

    groups = candidate_groups(Net())
    assert [(g.kind, g.name) for g in groups] == [
        ("rescale", "a->b"), ("translation", "c.weight"), ("translation", "c.bias"),
    ]  # fmt: skip

    class Untraceable(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(NmechError, match="torch.fx"):
        candidate_groups(Untraceable())
    with pytest.raises(NmechError):
        candidate_groups("not a module")
