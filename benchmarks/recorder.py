"""Recorder overhead benchmark: a training step with the Recorder against one without.

What is measured: seconds per optimizer step of a preset's model (quick: the ``cpu-demo``
VGG-16-BN, width 1/8, 32x32 synthetic images, batch 32, torch SGD lr 0.1, momentum 0.9, weight
decay 5e-4), set up as ``nmech validate`` sets it up
(:func:`nmech.validation.experiment.prepare_run`), through
the production loop :func:`nmech.validation.train.train`, once with ``recorder=None`` and once
with a :class:`~nmech.validation.recorder.Recorder` on every block that discovery keeps
(``flush_every`` as in the preset, 100; default ``fused=True``, i.e. on the CPU the compiled
pass of :mod:`nmech.validation.fused`). A step is the whole loop iteration: next batch
(augmentation on the device), forward, cross-entropy, backward, the recorder's
``before_step``, ``SGD.step``, ``after_step``. The full run adds VGG-16 without batch norm,
VGG-16-BN under ``torch.optim.AdamW`` (``nmech validate --optimizer adamw``'s settings; the
recorder then also forms AdamW's update signals), the paper's 64x64 input size, and the
``cpu-resnet`` ResNet-18 (also at CIFAR's 32x32 images and batch 128) and ``cpu-transformer``
character-level transformer, each under SGD and AdamW.

Both variants train the same model in the same process, interleaved in blocks of ``BLOCK``
consecutive steps (``pairs`` steps each in all, the order inside a pair of blocks alternating),
so that drift of a shared machine falls on both while the recorder still sees consecutive
steps, as in a real run (it reuses θ_{n+1} of one step as θ_n of the next).
baseline = median plain s/step over blocks; value = baseline times the median, over the pairs
whose recorded block has no flush, of (recorded s/step) / (plain s/step) of the two blocks of
the pair (neighbours in time, so load that drifts over the run cancels), plus the flushes'
excess over the recorded blocks' median spread over all recorded steps (the HDF5 append, at the
production rate). ratio = baseline / value, the relative throughput with recording.
Target: overhead under 10 %, i.e. value / baseline < 1.10.

The name also gives the recorder's own time: the median over steps of the wall time spent
inside ``before_step`` and ``after_step`` (what the hooks cost; the rest of the overhead is
their effect on the training step, e.g. the caches they evict, plus noise).

torch's thread count is left as it is (all cores) unless ``NMECH_BENCH_THREADS`` is set; on a
2-core machine shared with another busy process, 2 threads oversubscribe and the step times
swing by 10x, so compare runs at the same setting.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WARMUP = 5
BLOCK = 10
PAIRS_FULL = 300
PAIRS_QUICK = 100
#: ResNet-18 and the transformer take ~5x a cpu-demo step: fewer steps measure as well.
PAIRS_HEAVY = 60
OVERHEAD_TARGET = 0.10


def _bench_model(preset_name: str, name: str, pairs: int, overrides: dict[str, Any] | None = None,
                 optimizer: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Median s/step with and without recording for one model of a preset (``overrides``:
    preset fields, e.g. the paper's 64x64 images; ``optimizer``: another registered one)."""
    import dataclasses

    import torch

    from nmech.validation.experiment import load_data, prepare_run
    from nmech.validation.presets import get_preset, with_optimizer
    from nmech.validation.recorder import Recorder
    from nmech.validation.train import train

    threads = os.environ.get("NMECH_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    preset = dataclasses.replace(get_preset(preset_name), **(overrides or {}))
    preset = with_optimizer(preset, optimizer)
    device = torch.device("cpu")
    data = load_data(preset, None)
    run = prepare_run(name, preset, data, device, None)
    model, opt, batches, found = run.model, run.optimizer, run.batches, run.found
    assert found is not None
    plain: list[float] = []
    recorded: list[float] = []
    flushed: list[bool] = []

    def steps(n: int, rec: Recorder | None) -> float:
        return train(model, opt, batches, n, rec, progress=False, loss_fn=run.loss_fn).seconds

    with tempfile.TemporaryDirectory(prefix="nmech-bench-rec-") as tmp:
        path = Path(tmp) / "records.h5"
        rec = Recorder(model, found, path, opt, flush_every=preset.flush_every)
        hooks: dict[str, list[float]] = {"before": [], "after": []}
        rec.before_step = _timed(rec.before_step, hooks["before"])  # type: ignore[method-assign]
        rec.after_step = _timed(rec.after_step, hooks["after"])  # type: ignore[method-assign]
        try:
            steps(WARMUP, None)
            steps(WARMUP, rec)
            for i in range(max(pairs // BLOCK, 4)):
                for r in (None, rec) if i % 2 == 0 else (rec, None):
                    before = rec.row
                    seconds = steps(BLOCK, r) / BLOCK
                    if r is None:
                        plain.append(seconds)
                    else:
                        recorded.append(seconds)
                        flushed.append(rec.row < before + BLOCK)
        finally:
            rec.abort()
    steady = [t for t, f in zip(recorded, flushed) if not f]
    median = statistics.median(steady)
    excess = sum(t - median for t, f in zip(recorded, flushed) if f)  # per-step units
    paired = statistics.median(r / p for r, p, f in zip(recorded, plain, flushed) if not f)
    baseline = statistics.median(plain)
    n = min(len(hooks["before"]), len(hooks["after"]))
    return {
        "plain": baseline,
        "recorded": baseline * paired + excess / len(recorded),
        "hooks": statistics.median(hooks["before"][i] + hooks["after"][i] for i in range(n)),
        "flushes": sum(flushed),
        "blocks": sum(len(g.kept) for g in found.groups),
        "threads": torch.get_num_threads(),
    }


def _timed(hook: Callable[..., None], seconds: list[float]) -> Callable[..., None]:
    """``hook`` that appends the wall time of each call to ``seconds``."""

    def call(*args: Any) -> None:
        start = time.perf_counter()
        hook(*args)
        seconds.append(time.perf_counter() - start)

    return call


#: The recorder's cost grows with the parameters (width²), a step's with the FLOPs (width² ×
#: pixels × batch): the paper's 64x64 images at a quarter of its width and batch 64 show the
#: overhead at a size closer to real training (full mode only, fewer steps: ~0.5 s each).
PAPER_SHAPE = {"image_size": 64, "width": 0.25, "batch_size": 64}
PAIRS_PAPER_SHAPE = 40
#: ResNet-18 as CIFAR-10 trains it (32x32 images, batch 128) at a quarter of its width: the
#: ``cpu-resnet`` preset's 16x16 images and batch 32 make a step ~16x cheaper per parameter,
#: the worst case for a cost that grows with the parameters.
CIFAR_SHAPE = {"image_size": 32, "batch_size": 128}


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Records ``{name, value, unit, baseline, ratio, target, met}``: value = recorded s/step,
    baseline = plain s/step (same run, interleaved), ratio = baseline / value."""
    pairs = PAIRS_QUICK if quick else PAIRS_FULL
    # (preset, model, label, steps per variant, preset overrides, optimizer)
    cases: list[tuple[str, str, str, int, dict[str, Any] | None, str | None]] = [
        ("cpu-demo", "vgg16_bn", "cpu-demo", pairs, None, None)
    ]
    if not quick:
        cases += [
            ("cpu-demo", "vgg16", "cpu-demo", pairs, None, None),
            ("cpu-demo", "vgg16_bn", "cpu-demo AdamW", pairs, None, "adamw"),
            ("cpu-demo", "vgg16_bn", "64x64 width 1/4 batch 64", PAIRS_PAPER_SHAPE, PAPER_SHAPE,
             None),
            ("cpu-resnet", "resnet18", "cpu-resnet", PAIRS_HEAVY, None, None),
            ("cpu-resnet", "resnet18", "cpu-resnet AdamW", PAIRS_HEAVY, None, "adamw"),
            ("cpu-resnet", "resnet18", "32x32 batch 128", PAIRS_PAPER_SHAPE, CIFAR_SHAPE, None),
            ("cpu-resnet", "resnet18", "32x32 batch 128 AdamW", PAIRS_PAPER_SHAPE, CIFAR_SHAPE,
             "adamw"),
            ("cpu-transformer", "charlm", "cpu-transformer", PAIRS_HEAVY, None, None),
            ("cpu-transformer", "charlm", "cpu-transformer AdamW", PAIRS_HEAVY, None, "adamw"),
        ]  # fmt: skip
    records = []
    for preset, name, label, n, shape, optimizer in cases:
        m = _bench_model(preset, name, n, shape, optimizer)
        value, baseline = m["recorded"], m["plain"]
        overhead = value / baseline - 1.0
        records.append(
            {
                "name": (
                    f"recorder step {name} {label} ({m['blocks']} blocks, "
                    f"{m['threads']} threads, overhead {100 * overhead:+.0f} %, hooks "
                    f"{1e3 * m['hooks']:.2f} ms = {100 * m['hooks'] / baseline:.1f} %)"
                ),
                "value": value,
                "unit": "s",
                "baseline": baseline,
                "ratio": baseline / value,
                "target": f"overhead < {100 * OVERHEAD_TARGET:g} %",
                "met": bool(overhead < OVERHEAD_TARGET),
            }
        )
    return records
