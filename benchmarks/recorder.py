"""Recorder overhead benchmark: a cpu-demo training step with the Recorder against one without.

What is measured: seconds per optimizer step of the ``cpu-demo`` model (VGG-16-BN, width 1/8,
32x32 synthetic images, batch 32, torch SGD lr 0.1, momentum 0.9, weight decay 5e-4) through
the production loop :func:`nmech.validation.train.train`, once with ``recorder=None`` and once
with a :class:`~nmech.validation.recorder.Recorder` on every block that discovery keeps
(``flush_every`` as in the preset, 100; default ``fused=True``, i.e. on the CPU the compiled
pass of :mod:`nmech.validation.fused`). A step is the whole loop iteration: next batch
(augmentation on the device), forward, cross-entropy, backward, the recorder's
``before_step``, ``SGD.step``, ``after_step``. The full run adds VGG-16 without batch norm,
VGG-16-BN under ``torch.optim.AdamW`` (``nmech validate --optimizer adamw``'s settings; the
recorder then also forms AdamW's update signals), and the paper's 64x64 input size.

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

from nmech.validation.presets import ADAMW_DEFAULTS

WARMUP = 5
BLOCK = 10
PAIRS_FULL = 300
PAIRS_QUICK = 100
OVERHEAD_TARGET = 0.10


def _bench_model(name: str, pairs: int, shape: dict[str, Any] | None = None) -> dict[str, Any]:
    """Median s/step with and without recording for one model of the cpu-demo preset
    (``shape``: preset fields to override, e.g. the paper's 64x64 images)."""
    import dataclasses

    import torch

    from nmech.validation.data import DeviceBatches
    from nmech.validation.discovery import discover
    from nmech.validation.experiment import build_optimizer, load_data
    from nmech.validation.models import build_model
    from nmech.validation.presets import get_preset
    from nmech.validation.recorder import Recorder
    from nmech.validation.train import train

    threads = os.environ.get("NMECH_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    preset = dataclasses.replace(get_preset("cpu-demo"), **(shape or {}))
    device = torch.device("cpu")
    data = load_data(preset, None)
    torch.manual_seed(preset.seed)
    model = build_model(name, data.num_classes, preset.image_size, preset.width).to(device)
    model.train()
    batches = DeviceBatches(data, preset.batch_size, device, seed=preset.seed)
    found = discover(model, batches.next())
    opt = build_optimizer(preset, model)
    plain: list[float] = []
    recorded: list[float] = []
    flushed: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="nmech-bench-rec-") as tmp:
        path = Path(tmp) / "records.h5"
        rec = Recorder(model, found.groups, path, opt, flush_every=preset.flush_every)
        hooks: dict[str, list[float]] = {"before": [], "after": []}
        rec.before_step = _timed(rec.before_step, hooks["before"])  # type: ignore[method-assign]
        rec.after_step = _timed(rec.after_step, hooks["after"])  # type: ignore[method-assign]
        try:
            train(model, opt, batches, WARMUP, None, progress=False)
            train(model, opt, batches, WARMUP, rec, progress=False)
            for i in range(max(pairs // BLOCK, 4)):
                for r in (None, rec) if i % 2 == 0 else (rec, None):
                    before = rec.row
                    seconds = train(model, opt, batches, BLOCK, r, progress=False).seconds / BLOCK
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
    steps = min(len(hooks["before"]), len(hooks["after"]))
    return {
        "plain": baseline,
        "recorded": baseline * paired + excess / len(recorded),
        "hooks": statistics.median(hooks["before"][i] + hooks["after"][i] for i in range(steps)),
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
#: ``nmech validate --optimizer adamw``'s settings (the recorder then also records AdamW's
#: update signals theta_u, u_sq, c_u).
ADAMW = {"optimizer": "adamw", **ADAMW_DEFAULTS}


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Records ``{name, value, unit, baseline, ratio, target, met}``: value = recorded s/step,
    baseline = plain s/step (same run, interleaved), ratio = baseline / value."""
    pairs = PAIRS_QUICK if quick else PAIRS_FULL
    cases: list[tuple[str, str, int, dict[str, Any] | None]] = [
        ("vgg16_bn", "cpu-demo", pairs, None)
    ]
    if not quick:
        cases += [
            ("vgg16", "cpu-demo", pairs, None),
            ("vgg16_bn", "cpu-demo AdamW", pairs, ADAMW),
            ("vgg16_bn", "64x64 width 1/4 batch 64", PAIRS_PAPER_SHAPE, PAPER_SHAPE),
        ]
    records = []
    for name, label, n, shape in cases:
        m = _bench_model(name, n, shape)
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
