"""GPU check: throughput with and without the recorder, peak memory, prediction errors (JSON).

    python -m nmech.validation.device_check --out DIR [--steps 50] [--batch-size 256]
        [--width 1.0] [--model vgg16_bn] [--device auto]

Paper shape on synthetic data (64x64, 200 classes, batch 256). The same seeded model trains
``steps`` steps without the recorder, then again from the same seed with it; the overhead is
(steps/s without) / (steps/s with). Writes ``DIR/device_check.json`` and the run's report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from nmech.errors import NmechError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nmech.validation.device_check", description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--model", default="vgg16_bn", choices=("vgg16_bn", "vgg16"))
    p.add_argument("--device", default="auto")
    p.add_argument("--per-class", type=int, default=20, help="synthetic images per class")
    return p


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Run the check and return the JSON-ready result."""
    import torch

    from nmech.validation.channels import KINDS
    from nmech.validation.data import DeviceBatches
    from nmech.validation.experiment import load_data, run_model
    from nmech.validation.models import build_model
    from nmech.validation.presets import get_preset
    from nmech.validation.report import build_report
    from nmech.validation.train import resolve_device, train

    if args.steps < 1 or args.batch_size < 1:
        raise NmechError("--steps and --batch-size must be positive")
    device = resolve_device(args.device)
    preset = replace(
        get_preset("paper-vgg16-bn"), models=(args.model,), steps=args.steps, epochs=None,
        batch_size=args.batch_size, width=args.width, per_class=args.per_class,
        flush_every=min(100, args.steps),
    )  # fmt: skip
    data = load_data(preset, None)
    torch.manual_seed(preset.seed)
    model = build_model(args.model, data.num_classes, preset.image_size, preset.width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=preset.lr, momentum=preset.momentum,
                          weight_decay=preset.weight_decay)  # fmt: skip
    batches = DeviceBatches(data, preset.batch_size, device, seed=preset.seed)
    train(model, opt, batches, min(3, args.steps), progress=False)  # warm-up (cuDNN autotune)
    plain = train(model, opt, batches, args.steps, progress=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = Path(args.out)
    start = time.perf_counter()
    _, recorded, found = run_model(args.model, preset, data, out, device, progress=False)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    report = build_report(out)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": args.model, "width": args.width, "batch_size": preset.batch_size,
        "steps": args.steps, "steps_per_s_plain": plain.steps_per_s,
        "steps_per_s_recorded": recorded.steps_per_s,
        "overhead_ratio": plain.steps_per_s / recorded.steps_per_s,
        "recorded_run_wall_s": wall, "peak_memory_bytes_recorded": peak,
        "blocks": {k: sum(len(g.kept) for g in found.of_kind(k)) for k in KINDS},
        "failed_blocks": len(found.failures), "errors": report["errors"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point: writes ``<out>/device_check.json`` and prints it."""
    args = _parser().parse_args(argv)
    try:
        result = check(args)
    except NmechError as exc:
        print(f"device_check: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    (out / "device_check.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
