"""One preset run end to end: data, model, symmetry discovery, recorded SGD training.

For each model of the preset: seed torch with ``preset.seed``, build the model on the device,
discover and check its symmetry blocks on the first batch, then train with
``torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov)`` while a Recorder writes
``records-<model>.h5`` (and ``discovery-<model>.json`` lists the blocks and failures).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch

from nmech.validation.data import DeviceBatches, ImageSet, synthetic
from nmech.validation.discovery import Discovery, discover
from nmech.validation.models import build_model
from nmech.validation.presets import Preset
from nmech.validation.recorder import Recorder
from nmech.validation.train import TrainResult, train


def load_data(preset: Preset, data_dir: str | Path | None) -> ImageSet:
    """Tiny ImageNet's training split when ``data_dir`` is given, else synthetic data."""
    if data_dir is None:
        return synthetic(preset.num_classes, preset.per_class, preset.image_size, preset.seed)
    from nmech.validation.tiny_imagenet import load_tiny_imagenet

    return load_tiny_imagenet(data_dir, "train", image_size=preset.image_size)


def total_steps(preset: Preset, batches: DeviceBatches) -> int:
    """``preset.steps``, or epochs * batches per epoch."""
    if preset.steps is not None:
        return preset.steps
    return math.ceil((preset.epochs or 1) * batches.steps_per_epoch)


def _write_discovery(path: Path, found: Discovery) -> None:
    groups = [
        {"kind": g.kind, "name": g.name, "channels": g.channels, "kept": len(g.kept)}
        for g in found.groups
    ]
    failures = [asdict(f) for f in found.failures]
    payload = {"tolerance": found.tol, "groups": groups, "failures": failures}
    path.write_text(json.dumps(payload, indent=2))


def run_model(
    name: str,
    preset: Preset,
    data: ImageSet,
    out_dir: Path,
    device: torch.device,
    progress: bool = True,
) -> tuple[Path, TrainResult, Discovery]:
    """Train one model of the preset with recording; returns the records path."""
    torch.manual_seed(preset.seed)
    model = build_model(name, data.num_classes, preset.image_size, preset.width).to(device)
    model.train()
    batches = DeviceBatches(data, preset.batch_size, device, seed=preset.seed)
    found = discover(model, batches.next())
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_discovery(out_dir / f"discovery-{name}.json", found)
    opt = torch.optim.SGD(
        model.parameters(), lr=preset.lr, momentum=preset.momentum, dampening=preset.dampening,
        weight_decay=preset.weight_decay, nesterov=preset.nesterov,
    )  # fmt: skip
    steps = total_steps(preset, batches)
    info = {
        "preset": preset.name, "batch_size": batches.batch_size, "seed": preset.seed,
        "device": str(device), "width": preset.width, "image_size": preset.image_size,
        "num_classes": data.num_classes, "train_images": len(data.y),
    }  # fmt: skip
    path = out_dir / f"records-{name}.h5"
    rec = Recorder(model, found.groups, path, opt, preset.flush_every, info, name)
    try:
        result = train(model, opt, batches, steps, rec, progress=progress, desc=name)
    except BaseException:
        rec.abort()
        raise
    rec.close()
    return path, result, found


def run_preset(
    preset: Preset,
    out_dir: str | Path,
    device: torch.device,
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> list[Path]:
    """Run every model of ``preset``; returns the records files written under ``out_dir``."""
    out = Path(out_dir)
    data = load_data(preset, data_dir)
    return [run_model(m, preset, data, out, device, progress)[0] for m in preset.models]
