"""One preset run end to end: data, model, symmetry discovery, recorded SGD training.

For each model of the preset: seed torch with ``preset.seed``, build the model on the device,
discover and check its symmetry blocks on the first batch, then train with
``torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov)`` (or, with
``preset.optimizer == "adamw"``, the unmodified ``torch.optim.AdamW(lr, betas, eps,
weight_decay)``) while a Recorder writes
``records-<model>.h5`` (and ``discovery-<model>.json`` lists the blocks and failures).

``run.json`` keeps the preset (after overrides), device and data folder, so ``--resume DIR``
can rebuild the run. Resuming a model repeats the same start-up (seed, model, batch stream,
discovery on the first batch), then loads ``checkpoint-<model>.pt`` over it and keeps that
many steps of the records file: the continued records are bitwise those of an uninterrupted
run on the same device. A model whose records are complete is skipped; one without a
checkpoint starts afresh.

The preset's GPU path switches (``channels_last``, ``bf16``, ``compile``) apply after discovery,
which always checks the blocks in float32 on the contiguous, uncompiled model; they are kept in
``run.json`` (so a resumed run uses them) and in the records' run info (``switches``), which the
report repeats.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch

from nmech.errors import NmechError
from nmech.validation.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from nmech.validation.data import DeviceBatches, ImageSet, synthetic
from nmech.validation.discovery import Discovery, discover
from nmech.validation.models import build_model
from nmech.validation.presets import Preset
from nmech.validation.recorder import Recorder
from nmech.validation.records import records_progress
from nmech.validation.stops import Interrupted, StopRequest
from nmech.validation.train import TrainResult, prepare_model, train

RUN_FILE = "run.json"


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


def planned_steps(preset: Preset, data: ImageSet) -> int:
    """:func:`total_steps` without building the batch stream."""
    if preset.steps is not None:
        return preset.steps
    per_epoch = max(1, len(data.y) // min(preset.batch_size, len(data.y)))
    return math.ceil((preset.epochs or 1) * per_epoch)


def save_run(out_dir: Path, preset: Preset, device: torch.device, data_dir: str | None) -> None:
    """Write ``run.json``: what ``--resume`` needs to rebuild the run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"preset": asdict(preset), "device": str(device), "data_dir": data_dir}
    (out_dir / RUN_FILE).write_text(json.dumps(payload, indent=2))


def load_run(out_dir: Path) -> tuple[Preset, str, str | None]:
    """The preset, device name and data folder of the run in ``out_dir``."""
    path = out_dir / RUN_FILE
    try:
        payload = json.loads(path.read_text())
        fields = payload["preset"]
        extra = {"betas": tuple(fields["betas"])} if "betas" in fields else {}
        preset = Preset(**{**fields, "models": tuple(fields["models"]), **extra})
        return preset, str(payload["device"]), payload["data_dir"]
    except FileNotFoundError:
        raise NmechError(f"nothing to resume: no {RUN_FILE} in {out_dir}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise NmechError(f"{path} is not a run description of this nmech: {exc}") from exc


def build_optimizer(preset: Preset, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``torch.optim.AdamW`` with the preset's settings."""
    if preset.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=preset.lr, betas=tuple(preset.betas), eps=preset.eps,
            weight_decay=preset.weight_decay,
        )  # fmt: skip
    return torch.optim.SGD(
        model.parameters(), lr=preset.lr, momentum=preset.momentum, dampening=preset.dampening,
        weight_decay=preset.weight_decay, nesterov=preset.nesterov,
    )  # fmt: skip


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
    resume: bool = False,
    stop: StopRequest | None = None,
) -> tuple[Path, TrainResult, Discovery]:
    """Train one model of the preset with recording (continuing its checkpoint when
    ``resume``); returns the records path."""
    torch.manual_seed(preset.seed)
    model = build_model(name, data.num_classes, preset.image_size, preset.width).to(device)
    model.train()
    batches = DeviceBatches(data, preset.batch_size, device, seed=preset.seed)
    found = discover(model, batches.next())
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_discovery(out_dir / f"discovery-{name}.json", found)
    forward = prepare_model(model, preset.channels_last, preset.compile)
    opt = build_optimizer(preset, model)
    steps = total_steps(preset, batches)
    ckpt = checkpoint_path(out_dir, name)
    start = 0
    if resume and ckpt.is_file():
        start = load_checkpoint(ckpt, model, opt, batches)
        if start > steps:
            raise NmechError(f"{ckpt} is at step {start}, past the requested {steps} steps")
    else:
        ckpt.unlink(missing_ok=True)
    info = {
        "preset": preset.name, "batch_size": batches.batch_size, "seed": preset.seed,
        "device": str(device), "width": preset.width, "image_size": preset.image_size,
        "num_classes": data.num_classes, "train_images": len(data.y),
        "switches": preset.switches,
    }  # fmt: skip
    path = out_dir / f"records-{name}.h5"
    rec = Recorder(model, found.groups, path, opt, preset.flush_every, info, name, start)

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt, step, model, opt, batches)

    try:
        result = train(model, opt, batches, steps, rec, progress=progress, desc=name,
                       start=start, on_commit=checkpoint, stop=stop, forward=forward,
                       autocast_dtype=torch.bfloat16 if preset.bf16 else None,
                       channels_last=preset.channels_last)  # fmt: skip
    except Interrupted as exc:
        rec.close("interrupted", str(exc))
        checkpoint(exc.step)
        raise
    except BaseException:
        rec.abort()
        raise
    rec.close()
    checkpoint(steps)
    return path, result, found


def _done(out: Path, name: str, steps: int) -> bool:
    """True when ``name``'s records are complete and ``steps`` long."""
    status, committed = records_progress(out / f"records-{name}.h5")
    return status == "complete" and committed == steps


def run_preset(
    preset: Preset,
    out_dir: str | Path,
    device: torch.device,
    data_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    stop: StopRequest | None = None,
) -> list[Path]:
    """Run every model of ``preset`` (continuing where a previous run stopped when
    ``resume``); returns the records files written under ``out_dir``."""
    out = Path(out_dir)
    save_run(out, preset, device, None if data_dir is None else str(data_dir))
    data = load_data(preset, data_dir)
    paths = []
    for name in preset.models:
        if resume and _done(out, name, planned_steps(preset, data)):
            paths.append(out / f"records-{name}.h5")
            continue
        paths.append(run_model(name, preset, data, out, device, progress, resume, stop)[0])
    return paths
