"""One preset run end to end: data, model, symmetry discovery, recorded training.

:func:`prepare_run` is the one run set-up, shared with the torchrun entry
(:mod:`nmech.validation.distributed`) and the device check: seed torch with ``preset.seed``,
build the model on the device (train mode), draw the first batch of the seeded stream,
discover and check the symmetry blocks on it (``discovery-<model>.json`` lists what was found,
what failed and why nothing was proposed where nothing was), and build the preset's optimizer
(:mod:`nmech.validation.optimizers`). :func:`run_model` then trains while a Recorder writes
``records-<model>.h5``.

``run.json`` keeps the preset (after overrides), device and data folder, so ``--resume DIR``
can rebuild the run. Resuming a model repeats the same set-up (seed, model, batch stream,
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nmech.errors import NmechError
from nmech.validation import datasets
from nmech.validation.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from nmech.validation.discovery import Discovery, discover
from nmech.validation.memory import BYTES_PER_PARAMETER, ROW_VALUES, require
from nmech.validation.models import build_model
from nmech.validation.optimizers import adapter_named
from nmech.validation.outputs import clear_outputs
from nmech.validation.presets import Preset, check_values
from nmech.validation.recorder import Recorder
from nmech.validation.records import records_progress
from nmech.validation.report import REPORT_FILES, RUN_FILES
from nmech.validation.stops import Interrupted, StopRequest
from nmech.validation.train import TrainResult, prepare_model, train

RUN_FILE = "run.json"
#: Everything a run writes: its files and its report.
RUN_OUTPUTS: tuple[str, ...] = (*RUN_FILES, *REPORT_FILES)


def load_data(preset: Preset, data_dir: str | Path | None) -> Any:
    """The preset's data set (Tiny ImageNet's training split from ``data_dir``)."""
    return datasets.load(preset.data, preset, data_dir)


def total_steps(preset: Preset, batches: Any) -> int:
    """``preset.steps``, or epochs * batches per epoch."""
    if preset.steps is not None:
        return preset.steps
    return math.ceil((preset.epochs or 1) * batches.steps_per_epoch)


def planned_steps(preset: Preset, data: Any) -> int:
    """:func:`total_steps` without building the batch stream."""
    if preset.steps is not None:
        return preset.steps
    return math.ceil(
        (preset.epochs or 1)
        * datasets.batches(preset.data, data, preset, torch.device("cpu")).steps_per_epoch
    )


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
        if "data" not in fields and payload["data_dir"] is not None:  # before data sets
            extra["data"] = "tiny-imagenet"
        preset = Preset(**{**fields, "models": tuple(fields["models"]), **extra})
        device, data_dir = payload["device"], payload["data_dir"]
        if not isinstance(device, str) or not isinstance(data_dir, str | None):
            raise TypeError("device and data_dir must be strings")
    except FileNotFoundError:
        raise NmechError(f"nothing to resume: no {RUN_FILE} in {out_dir}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise NmechError(f"{path} is not a run description of this nmech: {detail}") from None
    try:
        check_values(preset)
    except NmechError as exc:
        raise NmechError(f"{path} is not a valid run description: {exc}") from None
    return preset, device, data_dir


def check_memory(name: str, preset: Preset, data: Any, device: torch.device) -> None:
    """Refuse (one line naming the option) a width or flush interval whose memory the device
    lacks, from the model built on the meta device: ``BYTES_PER_PARAMETER`` a parameter
    (``--width``), and the recorder's row buffers bounded by every parameter's leading two
    dimensions as blocks, ``ROW_VALUES`` values each (``--flush-every``)."""
    shape = datasets.shape_of(preset.data, data, preset)
    with torch.device("meta"):
        try:
            model = build_model(name, shape, preset.width)
        except RuntimeError as exc:  # a size that overflows even on the meta device
            raise NmechError(f"--width {preset.width:g}: model {name} is too large to build "
                             f"({' '.join(str(exc).split())[:120]})") from None  # fmt: skip
    params = [p.shape for p in model.parameters()]
    count = sum(math.prod(s) for s in params)
    require(count * BYTES_PER_PARAMETER, device, "--width",
            f"model {name} at width {preset.width:g} ({count:,} parameters)")  # fmt: skip
    channels = sum(sum(s[:2]) for s in params if len(s))
    rows = 2 * preset.flush_every * 8 * ROW_VALUES * channels  # device rows and host copy
    require(rows, device, "--flush-every",
            f"{preset.flush_every} rows of up to {channels:,} blocks")  # fmt: skip


def build_optimizer(preset: Preset, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The preset's registered optimizer with its settings, over every parameter."""
    return adapter_named(preset.optimizer).build(model.parameters(), preset)


@dataclass
class ModelRun:
    """A model ready to train: its batch stream, checked symmetry blocks (None where this
    process does not record), optimizer, step count, run info and loss."""

    name: str
    model: torch.nn.Module
    batches: Any
    found: Discovery | None
    optimizer: torch.optim.Optimizer
    steps: int
    info: dict[str, Any]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prepare_run(
    name: str,
    preset: Preset,
    data: Any,
    device: torch.device,
    out_dir: Path | None,
    discover_blocks: bool = True,
) -> ModelRun:
    """The one run set-up (module docstring); writes ``discovery-<name>.json`` to ``out_dir``
    when it discovers."""
    torch.manual_seed(preset.seed)
    shape = datasets.shape_of(preset.data, data, preset)
    check_memory(name, preset, data, device)
    model = build_model(name, shape, preset.width).to(device)
    model.train()
    batches = datasets.batches(preset.data, data, preset, device)
    first = batches.next()  # every process draws it: the streams stay in step
    loss_fn = datasets.loss_for(preset.data)
    found = discover(model, first, loss_fn=loss_fn) if discover_blocks else None
    if found is not None and out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"model": name, **found.to_json(), "summary": found.summary()}
        (out_dir / f"discovery-{name}.json").write_text(json.dumps(payload, indent=2))
    info = {
        "preset": preset.name, "batch_size": batches.batch_size, "seed": preset.seed,
        "device": str(device), "width": preset.width, "image_size": preset.image_size,
        "num_classes": data.num_classes, "switches": preset.switches,
        **datasets.describe(preset.data, data),
    }  # fmt: skip
    opt = build_optimizer(preset, model)
    return ModelRun(name, model, batches, found, opt, total_steps(preset, batches), info, loss_fn)


def run_model(
    name: str,
    preset: Preset,
    data: Any,
    out_dir: Path,
    device: torch.device,
    progress: bool = True,
    resume: bool = False,
    stop: StopRequest | None = None,
) -> tuple[Path, TrainResult, Discovery]:
    """Train one model of the preset with recording (continuing its checkpoint when
    ``resume``); returns the records path, the training summary and the discovery."""
    run = prepare_run(name, preset, data, device, out_dir)
    assert run.found is not None
    model, opt, batches, steps = run.model, run.optimizer, run.batches, run.steps
    forward = prepare_model(model, preset.channels_last, preset.compile)
    ckpt = checkpoint_path(out_dir, name)
    start = 0
    if resume and ckpt.is_file():
        start = load_checkpoint(ckpt, model, opt, batches)
        if start > steps:
            raise NmechError(f"{ckpt} is at step {start}, past the requested {steps} steps")
    else:
        ckpt.unlink(missing_ok=True)
    path = out_dir / f"records-{name}.h5"
    rec = Recorder(model, run.found, path, opt, preset.flush_every, run.info, name, start)

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt, step, model, opt, batches)

    try:
        result = train(model, opt, batches, steps, rec, progress=progress, desc=name,
                       start=start, on_commit=checkpoint, stop=stop, forward=forward,
                       autocast_dtype=torch.bfloat16 if preset.bf16 else None,
                       channels_last=preset.channels_last, loss_fn=run.loss_fn)  # fmt: skip
    except Interrupted as exc:
        rec.close("interrupted", str(exc))
        checkpoint(exc.step)
        raise
    except BaseException:
        rec.abort()
        raise
    rec.close()
    checkpoint(steps)
    return path, result, run.found


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
    overwrite: bool = False,
) -> list[Path]:
    """Run every model of ``preset`` (continuing where a previous run stopped when
    ``resume``); returns the records files written under ``out_dir``. ``overwrite`` removes
    an earlier run's files (:data:`RUN_OUTPUTS`) from ``out_dir`` once the data loaded and
    the memory checks passed, before anything is written."""
    out = Path(out_dir)
    data = load_data(preset, data_dir)
    for name in preset.models:  # before anything is written
        check_memory(name, preset, data, device)
    if overwrite:
        clear_outputs(out, RUN_OUTPUTS)
    save_run(out, preset, device, None if data_dir is None else str(data_dir))
    paths = []
    for name in preset.models:
        if resume and _done(out, name, planned_steps(preset, data)):
            paths.append(out / f"records-{name}.h5")
            continue
        paths.append(run_model(name, preset, data, out, device, progress, resume, stop)[0])
    return paths
