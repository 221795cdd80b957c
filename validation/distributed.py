"""Data-parallel validation runs: DistributedDataParallel under torchrun, records from rank 0.

    torchrun --nproc_per_node=2 -m nmech.validation.distributed --preset cpu-demo --out DIR \\
        [--steps N | --epochs E] [--batch-size B] [--width W] [--models vgg16_bn ...] \\
        [--sync-bn] [--backend gloo|nccl] [--device auto|cpu|cuda] [--no-report] \\
        [--flush-every K] [--channels-last] [--bf16] [--compile]

(``python -m torch.distributed.run`` is the same launcher as ``torchrun``; without a launcher
the module runs as a world of one.)

Every rank builds the same synthetic data set and the same seeded
:class:`~nmech.validation.data.DeviceBatches` stream, so every rank sees the same global batch
of ``B`` images at every step and keeps shard ``rank`` of it (``B / world`` images; ``B`` must
divide evenly). Each model is built from ``preset.seed`` and wrapped in
``torch.nn.parallel.DistributedDataParallel`` (gloo on CPU, NCCL on CUDA); DDP averages the
shard gradients, so after ``backward()`` every rank holds the same g_n, the mean gradient of the
global batch, and the optimizer (``torch.optim.SGD``, or ``torch.optim.AdamW`` with
``--optimizer adamw``, on every rank) applies it. The Recorder
hooks the underlying module on rank 0 only and reads that g_n, so the exact recursion of every
symmetry holds as in a single-process run:

* BatchNorm without ``--sync-bn`` normalises with per-rank batch statistics; each rank's loss is
  then scale invariant on its own, its gradient orthogonal to the scale generator, and so is
  the mean. With ``--sync-bn`` (``nn.SyncBatchNorm``; torch runs it under DDP on GPUs only, so
  it is refused on CPU) the statistics are those of the global batch, and the BN run matches a
  single process with batch ``B`` up to summation order and dropout masks.
* Discovery runs on rank 0, on the full first global batch, before the SyncBatchNorm conversion
  (parameter names are unchanged by it).
* The GPU path switches of ``nmech validate`` (``--channels-last``, ``--bf16``, ``--compile``)
  apply after discovery and the SyncBatchNorm conversion; ``--compile`` compiles the DDP module.

The records' ``train/loss`` and ``train/accuracy`` are the means over ranks (one all-reduce of
two scalars per step). Divergence is found by rank 0's recorder when it flushes (every
``flush_every`` steps and at the end); at each flush rank 0 broadcasts its verdict (one int64),
so that when it raises :class:`~nmech.validation.stops.Diverged` every rank stops at the same
step with a one-line error instead of waiting in the next all-reduce. At the end the ranks all-reduce a float64 checksum of every parameter
tensor (sum and sum of squares) with MIN and MAX and the run fails unless they agree exactly:
parameters identical on every rank. Rank 0 writes ``records-<model>.h5``,
``discovery-<model>.json``, ``distributed.json`` (world size, backend, steps/s, checksum spread)
and the report.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nmech.cli.validate import (
    add_optimizer_option,
    add_switch_options,
    add_training_options,
    check_optimizer,
    with_optimizer,
)
from nmech.errors import NmechError
from nmech.validation.data import DeviceBatches
from nmech.validation.models import MODEL_NAMES
from nmech.validation.presets import PRESETS, Preset, get_preset
from nmech.validation.stops import Diverged


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N -m nmech.validation.distributed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="cpu-demo", choices=tuple(PRESETS))
    p.add_argument("--out", required=True, help="output folder (written by rank 0)")
    add_optimizer_option(p)
    add_training_options(p)
    add_switch_options(p)
    p.add_argument("--per-class", type=int, help="synthetic images per class")
    p.add_argument("--models", nargs="+", choices=MODEL_NAMES, help="subset of the preset's")
    p.add_argument("--sync-bn", action="store_true", help="nn.SyncBatchNorm (CUDA only)")
    p.add_argument("--backend", help="gloo or nccl (default: nccl on CUDA, else gloo)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-report", action="store_true", help="records only, no report")
    p.add_argument("--flush-every", type=int, help="steps between records flushes")
    p.add_argument("--no-progress", action="store_true")
    return p


def _preset(args: argparse.Namespace) -> Preset:
    check_optimizer(args)
    preset = with_optimizer(get_preset(args.preset), args.optimizer).with_overrides(
        batch_size=args.batch_size, width=args.width, per_class=args.per_class, lr=args.lr,
        momentum=args.momentum, weight_decay=args.wd, nesterov=args.nesterov, seed=args.seed,
        dampening=args.dampening, channels_last=args.channels_last, bf16=args.bf16,
        compile=args.compile, flush_every=args.flush_every,
        models=tuple(args.models) if args.models else None,
    )  # fmt: skip
    if args.steps is not None:
        preset = replace(preset, steps=args.steps, epochs=None)
    elif args.epochs is not None:
        preset = replace(preset, steps=None, epochs=args.epochs)
    for name in ("steps", "batch_size", "per_class", "flush_every"):
        value = getattr(preset, name)
        if value is not None and value <= 0:
            raise NmechError(f"--{name.replace('_', '-')} must be positive, got {value}")
    return preset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init(backend: str | None, device_name: str) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (or a world of one); rank, world, device."""
    if "RANK" not in os.environ:  # no launcher: a world of one on this host
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if device_name not in ("auto", "cpu", "cuda"):
        raise NmechError(f"unknown device {device_name!r}; use auto, cpu or cuda")
    if cuda and not torch.cuda.is_available():
        raise NmechError("--device cuda requested but torch sees no CUDA device")
    if cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = backend or ("nccl" if cuda else "gloo")
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


class ShardedBatches:
    """This rank's shard of every global batch of a :class:`DeviceBatches` stream.

    Every rank holds an identical stream (same data, same seed), so the global batches agree
    across ranks and the shards partition each of them.
    """

    def __init__(self, batches: DeviceBatches, rank: int, world: int) -> None:
        if batches.batch_size % world != 0:
            raise NmechError(
                f"global batch {batches.batch_size} does not split evenly over {world} ranks"
            )
        self.batches = batches
        self.device = batches.device
        self.shard = batches.batch_size // world
        self.lo = rank * self.shard

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per pass over the data."""
        return self.batches.steps_per_epoch

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of the next global batch."""
        x, y = self.batches.next()
        return x[self.lo : self.lo + self.shard], y[self.lo : self.lo + self.shard]


class RankRecorder:
    """The Recorder's step hooks on every rank: loss and accuracy are averaged over ranks (one
    all-reduce), and only rank 0 holds a real :class:`Recorder` and writes.

    Every ``flush_every`` steps (when rank 0's recorder flushes) and at ``close`` rank 0
    broadcasts the step at which its recorder found the run diverged (-1: it did not); then
    every rank raises :class:`Diverged` together.
    """

    def __init__(
        self, recorder: Any | None, world: int, flush_every: int, device: torch.device
    ) -> None:
        self.recorder = recorder
        self.world = world
        self.flush_every = flush_every
        self.device = device
        self.steps = 0

    @torch.no_grad()
    def before_step(
        self, loss: torch.Tensor | None = None, accuracy: torch.Tensor | None = None
    ) -> None:
        """All-reduce (loss, accuracy) to their mean, then the rank-0 recorder's before_step."""
        if loss is not None and accuracy is not None:
            both = torch.stack([loss.detach().double(), accuracy.detach().double()])
            dist.all_reduce(both)
            both /= self.world
            loss, accuracy = both[0], both[1]
        if self.recorder is not None:
            self.recorder.before_step(loss, accuracy)

    def after_step(self) -> None:
        """The rank-0 recorder's after_step; at a flush, every rank learns whether it diverged."""
        diverged = self._on_rank0("after_step")
        self.steps += 1
        if self.steps % self.flush_every == 0:
            self._agree(diverged)

    def close(self) -> None:
        """Rank 0 closes its recorder (the last flush); every rank learns whether it diverged."""
        self._agree(self._on_rank0("close"))

    def _on_rank0(self, hook: str) -> Diverged | None:
        """Call the rank-0 recorder's ``hook``; the :class:`Diverged` it raised, if any."""
        if self.recorder is not None:
            try:
                getattr(self.recorder, hook)()
            except Diverged as exc:
                return exc
        return None

    def _agree(self, diverged: Diverged | None) -> None:
        """Broadcast rank 0's verdict on the flush just done; raise on every rank if it diverged."""
        step = -1 if diverged is None or self.recorder is None else self.recorder.steps
        verdict = torch.tensor([step], dtype=torch.int64, device=self.device)
        dist.broadcast(verdict, src=0)
        if diverged is not None:
            raise diverged
        if int(verdict.item()) >= 0:
            raise Diverged(
                f"training diverged at step {int(verdict.item())} (found by rank 0, whose "
                "records and message say where); every rank stopped"
            )

    def __getattr__(self, name: str) -> Any:  # any other hook the loop may call: rank 0 only
        inner = self.__dict__.get("recorder")
        if inner is None:
            return lambda *a, **k: None
        return getattr(inner, name)


def parameter_spread(model: nn.Module) -> float:
    """Largest difference across ranks of a float64 checksum (sum, sum of squares) of every
    parameter tensor: 0.0 when all ranks hold identical parameters."""
    with torch.no_grad():
        sums = [
            torch.stack([p.double().sum(), p.double().square().sum()]) for p in model.parameters()
        ]
        check = torch.cat(sums)
        lo, hi = check.clone(), check.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return float((hi - lo).abs().max().item())


def run_model(
    name: str,
    preset: Preset,
    data: Any,
    out: Path,
    rank: int,
    world: int,
    device: torch.device,
    sync_bn: bool,
    progress: bool,
) -> dict[str, Any]:
    """Train one model of ``preset`` with DDP; rank 0 records. Returns a summary."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nmech.validation.discovery import discover
    from nmech.validation.experiment import _write_discovery, build_optimizer, total_steps
    from nmech.validation.models import build_model
    from nmech.validation.recorder import Recorder
    from nmech.validation.train import prepare_model, train

    torch.manual_seed(preset.seed)
    model = build_model(name, data.num_classes, preset.image_size, preset.width).to(device)
    model.train()
    batches = DeviceBatches(data, preset.batch_size, device, seed=preset.seed)
    first = batches.next()  # every rank draws it: the streams stay in step
    found = discover(model, first) if rank == 0 else None
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    prepare_model(model, channels_last=preset.channels_last)
    torch.manual_seed(preset.seed + 1 + rank)  # dropout masks differ across shards
    ids = [device.index] if device.type == "cuda" else None
    ddp = DDP(model, device_ids=ids)
    forward = prepare_model(ddp, compile=preset.compile)
    opt = build_optimizer(preset, model)
    shards = ShardedBatches(batches, rank, world)
    steps = total_steps(preset, batches)
    rec = None
    if rank == 0:
        assert found is not None
        out.mkdir(parents=True, exist_ok=True)
        _write_discovery(out / f"discovery-{name}.json", found)
        info = {
            "preset": preset.name, "batch_size": batches.batch_size, "seed": preset.seed,
            "device": str(device), "width": preset.width, "image_size": preset.image_size,
            "num_classes": data.num_classes, "train_images": len(data.y),
            "world_size": world, "shard_batch": shards.shard, "sync_bn": sync_bn,
            "backend": dist.get_backend(), "switches": preset.switches,
        }  # fmt: skip
        path = out / f"records-{name}.h5"
        rec = Recorder(model, found.groups, path, opt, preset.flush_every, info, name)
    hooks = RankRecorder(rec, world, preset.flush_every, device)
    try:
        result = train(
            ddp, opt, shards, steps, recorder=hooks,  # type: ignore[arg-type]
            progress=progress and rank == 0, desc=f"{name} x{world}", forward=forward,
            autocast_dtype=torch.bfloat16 if preset.bf16 else None,
            channels_last=preset.channels_last,
        )  # fmt: skip
    except BaseException:
        if rec is not None:
            rec.abort()
        raise
    hooks.close()
    spread = parameter_spread(model)
    if spread != 0.0:
        raise NmechError(f"{name}: parameters differ across ranks after training ({spread:.3e})")
    return {
        "model": name, "steps": result.steps, "seconds": result.seconds,
        "steps_per_s": result.steps_per_s, "images_per_s": result.steps_per_s * preset.batch_size,
        "final_loss_rank0_shard": result.final_loss, "parameter_spread": spread,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point for every rank; rank 0 prints the report's error summary."""
    args = _parser().parse_args(argv)
    try:
        preset = _preset(args)
        rank, world, device = init(args.backend, args.device)
    except NmechError as exc:
        print(f"distributed: error: {exc}", file=sys.stderr)
        return 2
    try:
        from nmech.validation.experiment import load_data

        if args.sync_bn and device.type != "cuda":
            raise NmechError(
                "--sync-bn needs CUDA: torch's SyncBatchNorm runs under DDP on GPUs only"
            )
        out = Path(args.out)
        data = load_data(preset, None)
        progress = not args.no_progress
        runs = [
            run_model(m, preset, data, out, rank, world, device, args.sync_bn, progress)
            for m in preset.models
        ]
        dist.barrier()
        if rank == 0:
            summary = {"world_size": world, "backend": dist.get_backend(),
                       "sync_bn": args.sync_bn, "device": str(device), "runs": runs}  # fmt: skip
            (out / "distributed.json").write_text(json.dumps(summary, indent=2))
            print(json.dumps(summary, indent=2))
            if not args.no_report:
                from nmech.validation.report import build_report

                report = build_report(out)
                print(f"report: {out / 'report.md'}")
                for kind, forms in report["errors"].items():
                    line = ", ".join(f"{f} max {e['max']:.2e}" for f, e in forms.items())
                    print(f"{kind}: {line}")
        dist.barrier()
    except NmechError as exc:
        # one write per line: the ranks share stderr, and print() writes the text and its
        # newline separately, so two ranks' lines could run together
        sys.stderr.write(f"distributed (rank {rank}): error: {exc}\n")
        sys.stderr.flush()
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
