"""Data-parallel validation runs: DistributedDataParallel under torchrun, records from rank 0.

    torchrun --nproc_per_node=2 -m nmech.cli.torchrun --preset cpu-demo --out DIR [...]

(the command line is :mod:`nmech.cli.torchrun`; ``python -m torch.distributed.run`` is the same
launcher as ``torchrun``; without a launcher the entry runs as a world of one.)

Every rank builds the same data set and the same seeded batch stream (the one run set-up,
:func:`nmech.validation.experiment.prepare_run`), so every rank sees the same global batch of
``B`` samples at every step and keeps shard ``rank`` of it (``B / world``; ``B`` must divide
evenly). Each model is built from ``preset.seed`` and wrapped in
``torch.nn.parallel.DistributedDataParallel`` (gloo on CPU, NCCL on CUDA); DDP averages the
shard gradients, so after ``backward()`` every rank holds the same g_n, the mean gradient of the
global batch, and the optimizer (``torch.optim.SGD``, or ``torch.optim.AdamW`` with
``--optimizer adamw``, on every rank) applies it. The Recorder
hooks the underlying module on rank 0 only and reads that g_n, so the exact recursion of every
symmetry holds as in a single-process run:

* BatchNorm without ``--sync-bn`` normalises with per-rank batch statistics; each rank's loss is
  then scale invariant on its own, its gradient orthogonal to the scale generator, and so is
  the mean. With ``sync_bn`` (``nn.SyncBatchNorm``; torch runs it under DDP on GPUs only, so
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

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nmech.errors import NmechError
from nmech.validation.presets import Preset
from nmech.validation.stops import Diverged


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

    def __init__(self, batches: Any, rank: int, world: int) -> None:
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
    """Train one model of ``preset`` with DDP; rank 0 discovers and records. Returns a summary."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nmech.validation.experiment import prepare_run
    from nmech.validation.recorder import Recorder
    from nmech.validation.train import prepare_model, train

    run = prepare_run(name, preset, data, device, out if rank == 0 else None, rank == 0)
    model = run.model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the same Parameter objects
    prepare_model(model, channels_last=preset.channels_last)
    torch.manual_seed(preset.seed + 1 + rank)  # dropout masks differ across shards
    ids = [device.index] if device.type == "cuda" else None
    ddp = DDP(model, device_ids=ids)
    forward = prepare_model(ddp, compile=preset.compile)
    shards = ShardedBatches(run.batches, rank, world)
    rec = None
    if rank == 0:
        assert run.found is not None
        info = {**run.info, "world_size": world, "shard_batch": shards.shard, "sync_bn": sync_bn,
                "backend": dist.get_backend()}  # fmt: skip
        path = out / f"records-{name}.h5"
        rec = Recorder(model, run.found, path, run.optimizer, preset.flush_every, info, name)
    hooks = RankRecorder(rec, world, preset.flush_every, device)
    try:
        result = train(
            ddp, run.optimizer, shards, run.steps, recorder=hooks,  # type: ignore[arg-type]
            progress=progress and rank == 0, desc=f"{name} x{world}", forward=forward,
            autocast_dtype=torch.bfloat16 if preset.bf16 else None,
            channels_last=preset.channels_last, loss_fn=run.loss_fn,
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
        "steps_per_s": result.steps_per_s, "samples_per_s": result.steps_per_s * preset.batch_size,
        "final_loss_rank0_shard": result.final_loss, "parameter_spread": spread,
    }  # fmt: skip


def run_all(preset: Preset, out: Path, backend: str | None, device_name: str, sync_bn: bool,
            progress: bool, report: bool) -> int:  # fmt: skip
    """Join the process group, train every model of ``preset``, and (rank 0) write
    ``distributed.json`` and the report. Returns the exit status; errors are one line per
    rank, ``nmech: error: rank R: ...``."""
    from nmech.validation.experiment import load_data

    rank = 0
    try:
        rank, world, device = init(backend, device_name)
    except NmechError as exc:
        sys.stderr.write(f"nmech: error: {exc}\n")
        return 2
    try:
        if sync_bn and device.type != "cuda":
            raise NmechError(
                "--sync-bn needs CUDA: torch's SyncBatchNorm runs under DDP on GPUs only"
            )
        data = load_data(preset, None)
        runs = [run_model(m, preset, data, out, rank, world, device, sync_bn, progress)
                for m in preset.models]  # fmt: skip
        dist.barrier()
        if rank == 0:
            summary = {"world_size": world, "backend": dist.get_backend(),
                       "sync_bn": sync_bn, "device": str(device), "runs": runs}  # fmt: skip
            (out / "distributed.json").write_text(json.dumps(summary, indent=2))
            print(json.dumps(summary, indent=2))
            if report:
                from nmech.validation.report import build_report

                result = build_report(out)
                print(f"report: {out / 'report.md'}")
                for kind, forms in result["errors"].items():
                    line = ", ".join(f"{f} max {e['max']:.2e}" for f, e in forms.items())
                    print(f"{kind}: {line}")
        dist.barrier()
    except NmechError as exc:
        # one write per line: the ranks share stderr, and print() writes the text and its
        # newline separately, so two ranks' lines could run together
        sys.stderr.write(f"nmech: error: rank {rank}: {exc}\n")
        sys.stderr.flush()
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # the former entry: python -m nmech.validation.distributed
    from nmech.cli.torchrun import main

    sys.exit(main())
