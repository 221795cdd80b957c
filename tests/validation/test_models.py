import pytest
import torch
from torch import nn

from nmech.errors import NmechError
from nmech.validation.models import build_model, vgg16


def test_paper_vgg16_layout_and_init():
    m = vgg16(200, batch_norm=True, image_size=64, width=1.0)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(convs) == 13 and sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 13
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.modules()) == 5
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (2048, 1024), (1024, 1024), (1024, 200),
    ]  # fmt: skip
    w = convs[5].weight  # 256 out channels: Kaiming fan_out std = sqrt(2 / (256 * 9))
    assert abs(w.std().item() / (2 / (256 * 9)) ** 0.5 - 1) < 0.05
    assert abs(linears[0].weight.std().item() - 0.01) < 5e-4
    assert all(x.bias.abs().max() == 0 for x in convs + linears)
    assert vgg16(200, batch_norm=False).features[0].bias is not None


def test_width_and_32px_variant_forward():
    m = vgg16(10, batch_norm=False, image_size=32, width=1 / 8)
    assert m.classifier[1].in_features == 64 and m.classifier[1].out_features == 128
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_model_arguments():
    with pytest.raises(NmechError):
        build_model("resnet", 10, 32, 1.0)
    with pytest.raises(NmechError):
        vgg16(10, image_size=48)
