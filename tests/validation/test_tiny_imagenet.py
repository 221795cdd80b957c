import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nmech.errors import NmechError
from nmech.validation.datasets.tiny_imagenet import load_tiny_imagenet

WNIDS = ["n01", "n02", "n03"]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _make(root: Path, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    (root / "wnids.txt").parent.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for k, w in enumerate(WNIDS):
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            arr = np.full((64, 64, 3), 40 * k, np.uint8) + rng.integers(
                0, 20, (64, 64, 3), np.uint8
            )
            img = Image.fromarray(arr)
            if k == 1 and i == 0:
                img = img.convert("L")  # one grayscale image, as in the real data set
            img.save(folder / f"{w}_{i}.JPEG", quality=95)
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(WNIDS):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(
            root / "val/images" / f"val_{i}.JPEG"
        )
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_loads_both_splits_and_leaves_folder_unchanged(tmp_path):
    root = _make(tmp_path / "tiny-imagenet-200")
    before = _tree_hash(root)
    cache = tmp_path / "cache"
    train = load_tiny_imagenet(root, "train", cache_dir=cache)
    assert train.x.shape == (9, 64, 64, 3) and train.x.dtype == np.uint8
    assert train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and train.num_classes == 3
    gray = train.x[3]  # the grayscale image became RGB with equal channels
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert abs(train.x[6].mean() - 89.5) < 6  # class 2 images are ~80 + U(0, 20)
    val = load_tiny_imagenet(root, "val", cache_dir=cache)
    assert val.y.tolist() == [0, 1, 2]
    assert len(list(cache.glob("*.npy"))) == 4
    again = load_tiny_imagenet(root, "train", cache_dir=cache)  # served from the cache
    assert np.array_equal(again.x, train.x)
    assert _tree_hash(root) == before


def test_corrupt_image_names_the_file(tmp_path):
    root = _make(tmp_path / "tiny")
    bad = root / "train" / "n02" / "images" / "n02_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(NmechError, match="n02_1.JPEG"):
        load_tiny_imagenet(root, cache_dir=tmp_path / "cache")


def test_layout_errors(tmp_path):
    with pytest.raises(NmechError, match="not found"):
        load_tiny_imagenet(tmp_path / "missing", cache_dir=tmp_path / "c")
    root = _make(tmp_path / "tiny")
    for f in (root / "train" / "n03" / "images").iterdir():
        f.unlink()
    with pytest.raises(NmechError, match="empty class n03"):
        load_tiny_imagenet(root, cache_dir=tmp_path / "c")
    with pytest.raises(NmechError, match="outside"):
        load_tiny_imagenet(root, "val", cache_dir=root / "cache")
    (root / "wnids.txt").unlink()
    with pytest.raises(NmechError, match="wnids.txt"):
        load_tiny_imagenet(root, cache_dir=tmp_path / "c")


def test_paper_preset_runs_on_a_tiny_imagenet_folder(tmp_path, monkeypatch):
    """``nmech validate --preset paper-vgg16-bn --data-dir D``: Tiny ImageNet is read, the run
    records and reports, and the report names the data."""
    import json

    from nmech.cli import main

    monkeypatch.setenv("NMECH_CACHE", str(tmp_path / "cache"))
    root = _make(tmp_path / "tiny-imagenet-200", per_class=4)
    out = tmp_path / "run"
    argv = ["validate", "--preset", "paper-vgg16-bn", "--data-dir", str(root), "--steps", "2",
            "--batch-size", "4", "--width", "0.0625", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    run = report["runs"]["vgg16_bn"]["run"]
    assert run["data"] == "tiny-imagenet" and run["train_images"] == 12 and run["num_classes"] == 3
    assert report["errors"]["scale"]["exact"]["max"] < 1e-4
    assert json.loads((out / "run.json").read_text())["preset"]["data"] == "tiny-imagenet"
