"""The validation under torchrun (DistributedDataParallel), one process per rank:

    torchrun --standalone --nproc_per_node=N -m nmech.cli.torchrun --preset cpu-demo --out DIR \\
        [--optimizer NAME] [--steps N | --epochs E] [--batch-size B] [--width W] \\
        [--models vgg16_bn,...] [--sync-bn] [--backend gloo|nccl] [--device auto|cpu|cuda] \\
        [--no-report] [--flush-every K] [--channels-last] [--bf16] [--compile]

The options mean what they mean in ``nmech validate``; rank 0 records and reports
(:mod:`nmech.validation.distributed`). Bad input is one line ``nmech: error: ...`` and exit 2
on every rank.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nmech.cli import Parser
from nmech.errors import NmechError
from nmech.validation.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    """The torchrun entry's options."""
    from nmech.cli.validate import add_optimizer_option, add_switch_options, add_training_options

    p = Parser(
        prog="torchrun --nproc_per_node=N -m nmech.cli.torchrun",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="cpu-demo", choices=tuple(PRESETS))
    p.add_argument("--out", required=True, help="output folder (written by rank 0)")
    add_optimizer_option(p)
    add_training_options(p)
    add_switch_options(p)
    p.add_argument("--data", help="a registered data set (default: the preset's)")
    p.add_argument("--per-class", type=int, help="synthetic images per class")
    p.add_argument("--models", help="comma-separated registered models (default: the preset's)")
    p.add_argument("--sync-bn", action="store_true", help="nn.SyncBatchNorm (CUDA only)")
    p.add_argument("--backend", help="gloo or nccl (default: nccl on CUDA, else gloo)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-report", action="store_true", help="records only, no report")
    p.add_argument("--flush-every", type=int, help="steps between records flushes")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for every rank."""
    from dataclasses import replace

    from nmech.cli.validate import configure_preset
    from nmech.validation.experiment import RUN_OUTPUTS
    from nmech.validation.outputs import new_output_dir
    from nmech.validation.presets import get_preset

    args = build_parser().parse_args(argv)
    try:
        preset = get_preset(args.preset)
        if args.data is not None:
            preset = replace(preset, data=args.data)
        preset = configure_preset(args, preset)
        # every rank checks before joining the process group, i.e. before any rank writes
        new_output_dir(args.out, RUN_OUTPUTS, False, "a validation run")
    except NmechError as exc:
        sys.stderr.write(f"nmech: error: {exc}\n")
        return 2
    from nmech.validation.distributed import run_all

    return run_all(preset, Path(args.out), args.backend, args.device, args.sync_bn,
                   not args.no_progress, not args.no_report)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
