import pytest
import torch
from torch import nn

from nmech.errors import NmechError
from nmech.validation.models import MODELS, DataShape, build_model, vgg16


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
    with pytest.raises(NmechError, match="unknown model 'resnet'; choose from vgg16_bn"):
        build_model("resnet", DataShape("images", 10))
    with pytest.raises(NmechError, match="charlm takes tokens, the data set gives images"):
        build_model("charlm", DataShape("images", 10))
    with pytest.raises(NmechError):
        vgg16(10, image_size=48)


def test_resnet18_layout():
    m = build_model("resnet18", DataShape("images", 10, 32))
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 20 and all(c.bias is None for c in convs)  # 17 + 3 shortcuts
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)  # CIFAR stem
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    assert 11.1e6 < sum(p.numel() for p in m.parameters()) < 11.2e6  # ResNet-18's 11.17M
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_builds_and_runs(name):
    spec = MODELS[name]
    data = DataShape(spec.inputs, 7, image_size=32, context=12)
    model = build_model(name, data, width=0.25)
    x = torch.randn(2, 3, 32, 32) if spec.inputs == "images" else torch.randint(0, 7, (2, 12))
    out = model(x)
    assert out.shape == ((2, 7) if spec.inputs == "images" else (2, 12, 7))


def test_char_transformer_is_causal():
    torch.manual_seed(0)
    m = build_model("charlm", DataShape("tokens", 11, context=8), width=0.25).eval()
    x = torch.randint(0, 11, (1, 8))
    y = x.clone()
    y[0, 5:] = (y[0, 5:] + 1) % 11  # change the future
    assert torch.equal(m(x)[0, :5], m(y)[0, :5])
