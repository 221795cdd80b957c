"""The bundled real data: scikit-learn's digits as images, the standard library's source as
characters, their batch streams and the registry's errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nmech.errors import NmechError
from nmech.validation import datasets
from nmech.validation.datasets.digits import load_digits
from nmech.validation.datasets.text import (
    VOCAB,
    TokenBatches,
    load_python_source,
    sequence_cross_entropy,
)
from nmech.validation.presets import get_preset


def test_digits_are_the_real_images_upsampled():
    from sklearn.datasets import load_digits as raw_digits

    raw = raw_digits()
    data = load_digits(16)
    assert data.x.shape == (1797, 16, 16, 3) and data.x.dtype == np.uint8
    assert np.array_equal(data.y, raw.target) and data.num_classes == 10
    assert np.array_equal(data.x[..., 0], data.x[..., 2])  # grey repeated over channels
    # bilinear with half-pixel centres, separable: output o samples the input at (o + 0.5)/2 - 0.5
    grid = (np.arange(16) + 0.5) / 2 - 0.5
    pixels = raw.images * 255 / 16
    rows = np.stack([[np.interp(grid, np.arange(8), r) for r in img] for img in pixels[:50]])
    both = np.stack([[np.interp(grid, np.arange(8), c) for c in img.T] for img in rows])
    expected = np.round(np.transpose(both, (0, 2, 1)))
    assert np.abs(data.x[:50, ..., 0] - expected).max() <= 1  # rounding


def test_python_source_text_and_windows(tmp_path):
    text = load_python_source(max_chars=20_000)
    assert len(text.tokens) == 20_000 and text.num_classes == len(VOCAB) == 97
    assert set(text.decode(text.tokens[:5000])) <= set(VOCAB)
    assert "def " in text.decode(text.tokens) and "files" in text.source
    a, b = TokenBatches(text, 4, 32, seed=3), TokenBatches(text, 4, 32, seed=3)
    x, y = a.next()
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one character
    assert torch.equal(x, b.next()[0])  # deterministic in the seed
    state = a.state_dict()
    following = a.next()
    a.load_state_dict(state)
    assert torch.equal(a.next()[0], following[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NmechError, match="no Python source files"):
        load_python_source(folder=tmp_path / "empty")


def test_sequence_cross_entropy_is_the_mean_over_positions():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(2, 5, 7, generator=g), torch.randint(0, 7, (2, 5), generator=g)
    per = [
        F.cross_entropy(logits[i, t][None], targets[i, t][None]) for i in range(2) for t in range(5)
    ]
    assert torch.allclose(sequence_cross_entropy(logits, targets), torch.stack(per).mean())


def test_registry_and_preset_data():
    preset = get_preset("cpu-transformer")
    text = datasets.load("python-source", preset)
    shape = datasets.shape_of("python-source", text, preset)
    assert (shape.inputs, shape.classes, shape.context) == ("tokens", 97, 64)
    assert datasets.loss_for("python-source") is sequence_cross_entropy
    with pytest.raises(NmechError, match="unknown data set 'cifar'; choose from synthetic"):
        datasets.dataset("cifar")
    with pytest.raises(NmechError, match="needs --data-dir"):
        datasets.load("tiny-imagenet", get_preset("paper-vgg16-bn"))
