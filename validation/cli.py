"""nmech validate: train VGG-16 (with and without BatchNorm) under torch SGD, record every
symmetry block per step, and compare with the derived dynamics (report, table, figures).

Presets: cpu-demo (width 1/8, 32x32 synthetic data, about a minute on 2 CPU cores),
paper-vgg16-bn and paper-vgg16 (64x64, 200 classes, batch 256; Tiny ImageNet with --data-dir,
else synthetic data of that shape). Options given on the command line override the preset.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from nmech.errors import NmechError

PRESET_NAMES = ("cpu-demo", "paper-vgg16-bn", "paper-vgg16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech validate``."""
    parser.add_argument("--preset", default="cpu-demo", help=f"one of {', '.join(PRESET_NAMES)}")
    parser.add_argument("--data-dir", help="tiny-imagenet-200/ folder (default: synthetic data)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--epochs", type=float, help="passes over the training data")
    parser.add_argument("--lr", type=float, help="learning rate eta")
    parser.add_argument("--momentum", type=float, help="momentum beta")
    parser.add_argument("--wd", type=float, help="weight decay lambda (coupled, torch SGD)")
    parser.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    parser.add_argument("--dampening", type=float, help="momentum dampening tau")
    parser.add_argument("--batch-size", type=int, help="mini-batch size")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _check(args: argparse.Namespace) -> None:
    if args.preset not in PRESET_NAMES:
        raise NmechError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESET_NAMES)}")
    for name in ("steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise NmechError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.epochs is not None and args.epochs <= 0:
        raise NmechError(f"--epochs must be positive, got {args.epochs}")
    if args.lr is not None and args.lr <= 0:
        raise NmechError(f"--lr must be positive, got {args.lr}")
    for name in ("momentum", "dampening"):
        value = getattr(args, name)
        if value is not None and not 0 <= value < 1:
            raise NmechError(f"--{name} must lie in [0, 1), got {value}")
    if args.wd is not None and args.wd < 0:
        raise NmechError(f"--wd must be non-negative, got {args.wd}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise NmechError(f"data folder not found: {args.data_dir}")


def run(args: argparse.Namespace) -> int:
    """Train, record and report; prints where the report and figures are."""
    _check(args)
    from nmech.validation.experiment import run_preset
    from nmech.validation.presets import get_preset
    from nmech.validation.report import build_report
    from nmech.validation.train import resolve_device

    preset = get_preset(args.preset).with_overrides(
        lr=args.lr, momentum=args.momentum, weight_decay=args.wd, nesterov=args.nesterov,
        dampening=args.dampening, batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    if args.steps is not None:
        preset = replace(preset, steps=args.steps, epochs=None)
    elif args.epochs is not None:
        preset = replace(preset, steps=None, epochs=args.epochs)
    if preset.nesterov and (preset.momentum <= 0 or preset.dampening != 0):
        raise NmechError("--nesterov needs momentum > 0 and zero dampening (torch SGD's rule)")
    device = resolve_device(args.device)
    out = Path(args.out)
    run_preset(preset, out, device, args.data_dir, progress=not args.no_progress)
    report = build_report(out)
    print(f"report: {out / 'report.md'} (JSON: {out / 'report.json'}, LaTeX: {out / 'errors.tex'})")
    for fig in report["figures"]:
        print(f"figure: {out / fig}")
    for kind, forms in report["errors"].items():
        line = ", ".join(f"{form} max {e['max']:.2e}" for form, e in forms.items())
        print(f"{kind}: {line}")
    return 0
