"""nmech validate: train VGG-16 (with and without BatchNorm) under torch SGD (or, with
``--optimizer adamw``, torch AdamW), record every symmetry block per step, and compare with the
derived dynamics (report, table, figures).

Presets: cpu-demo (width 1/8, 32x32 synthetic data, about a minute on 2 CPU cores),
paper-vgg16-bn and paper-vgg16 (64x64, 200 classes, batch 256; Tiny ImageNet with --data-dir,
else synthetic data of that shape). Options given on the command line override the preset.

Faults: a non-finite loss or gradient stops the run (records keep the finite steps; exit 2).
SIGINT/SIGTERM flush the records, write a checkpoint and exit 130/143; ``--resume DIR``
continues (bitwise identically on the same device), optionally to a larger ``--steps``.

GPU path switches (off by default; kept on --resume; the report names those that were on):
--channels-last (model and batches in channels_last memory format), --bf16 (forward and loss
under bfloat16 autocast; optimizer and records stay float32/float64), --compile
(torch.compile for the forward pass; a one-line error where it cannot compile).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from nmech.errors import NmechError
from nmech.validation.presets import OPTIMIZERS, Preset

PRESET_NAMES = ("cpu-demo", "paper-vgg16-bn", "paper-vgg16")
#: Options that fix the run's dynamics: a resumed run takes them from run.json.
FIXED_ON_RESUME = ("preset", "data_dir", "device", "lr", "momentum", "wd", "nesterov",
                   "dampening", "batch_size", "seed", "width", "models", "flush_every", "out",
                   "channels_last", "bf16", "compile", "optimizer")  # fmt: skip


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Run length and torch SGD settings, shared by ``nmech validate`` and the torchrun entry."""
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--epochs", type=float, help="passes over the training data")
    parser.add_argument("--lr", type=float, help="learning rate eta")
    parser.add_argument("--momentum", type=float, help="momentum beta")
    parser.add_argument("--wd", type=float, help="weight decay lambda (coupled, torch SGD)")
    parser.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    parser.add_argument("--dampening", type=float, help="momentum dampening tau")
    parser.add_argument("--batch-size", type=int, help="mini-batch size (global under torchrun)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--width", type=float, help="VGG width multiplier (e.g. 0.125)")


def add_switch_options(parser: argparse.ArgumentParser) -> None:
    """The GPU path switches (each off by default), shared with the torchrun entry."""
    parser.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="model and input batches in torch.channels_last memory format",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        default=None,
        help="forward and loss under torch.autocast(dtype=torch.bfloat16)",
    )
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile(model) for the forward pass")  # fmt: skip


def add_optimizer_option(parser: argparse.ArgumentParser) -> None:
    """The ``--optimizer`` option, shared with the torchrun entry."""
    parser.add_argument(
        "--optimizer",
        help="sgd (default: torch.optim.SGD) or adamw (torch.optim.AdamW; lr 0.01 and --wd 0.5 "
        "unless given; --momentum, --nesterov and --dampening do not apply)",
    )


def check_optimizer(args: argparse.Namespace) -> None:
    """--optimizer names a known optimizer, and SGD-only options are not given with adamw."""
    if args.optimizer is not None and args.optimizer not in OPTIMIZERS:
        raise NmechError(f"unknown optimizer {args.optimizer!r}; choose sgd or adamw")
    if args.optimizer == "adamw":
        given = [n for n in ("momentum", "nesterov", "dampening") if getattr(args, n) is not None]
        if given:
            raise NmechError(f"--{given[0]} applies to --optimizer sgd only")


def with_optimizer(preset: Preset, optimizer: str | None) -> Preset:
    """The preset with AdamW and its defaults when ``optimizer`` is adamw."""
    from nmech.validation.presets import ADAMW_DEFAULTS

    return replace(preset, optimizer="adamw", **ADAMW_DEFAULTS) if optimizer == "adamw" else preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech validate``."""
    parser.add_argument("--preset", help=f"one of {', '.join(PRESET_NAMES)} (default cpu-demo)")
    add_optimizer_option(parser)
    parser.add_argument("--data-dir", help="tiny-imagenet-200/ folder (default: synthetic data)")
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    add_training_options(parser)
    add_switch_options(parser)
    parser.add_argument("--models", help="comma-separated subset of vgg16_bn,vgg16")
    parser.add_argument(
        "--flush-every", type=int, help="steps between records flushes and checkpoints"
    )
    parser.add_argument("--out", help="output folder (required unless --resume)")
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    parser.add_argument("--no-report", action="store_true", help="train and record only")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # test hook


def _check(args: argparse.Namespace) -> None:
    if args.resume is not None:
        given = [n for n in FIXED_ON_RESUME if getattr(args, n) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise NmechError(f"{flag} cannot be changed on --resume (the run's settings are in "
                             f"{Path(args.resume) / 'run.json'}); only --steps/--epochs can")  # fmt: skip
        if not Path(args.resume).is_dir():
            raise NmechError(f"run folder not found: {args.resume}")
    elif args.out is None:
        raise NmechError("--out is required (or --resume DIR)")
    if args.preset is not None and args.preset not in PRESET_NAMES:
        raise NmechError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESET_NAMES)}")
    for name in ("steps", "batch_size", "flush_every", "stop_after"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise NmechError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.epochs is not None and args.epochs <= 0:
        raise NmechError(f"--epochs must be positive, got {args.epochs}")
    if args.lr is not None and args.lr <= 0:
        raise NmechError(f"--lr must be positive, got {args.lr}")
    if args.width is not None and args.width <= 0:
        raise NmechError(f"--width must be positive, got {args.width}")
    for name in ("momentum", "dampening"):
        value = getattr(args, name)
        if value is not None and not 0 <= value < 1:
            raise NmechError(f"--{name} must lie in [0, 1), got {value}")
    if args.wd is not None and args.wd < 0:
        raise NmechError(f"--wd must be non-negative, got {args.wd}")
    check_optimizer(args)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise NmechError(f"data folder not found: {args.data_dir}")


def _configure(args: argparse.Namespace) -> tuple[Preset, str, str | None, Path]:
    """The run's preset, device name, data folder and output folder."""
    from nmech.validation.experiment import load_run
    from nmech.validation.models import MODEL_NAMES
    from nmech.validation.presets import get_preset

    if args.resume is not None:
        out = Path(args.resume)
        preset, device, data_dir = load_run(out)
    else:
        out, device, data_dir = Path(args.out), args.device or "auto", args.data_dir
        models = None
        if args.models is not None:
            models = tuple(m.strip() for m in args.models.split(",") if m.strip())
            unknown = [m for m in models if m not in MODEL_NAMES] or ([] if models else [""])
            if unknown:
                raise NmechError(f"unknown model {unknown[0]!r}; choose from vgg16_bn, vgg16")
        preset = with_optimizer(get_preset(args.preset or "cpu-demo"), args.optimizer)
        preset = preset.with_overrides(
            lr=args.lr, momentum=args.momentum, weight_decay=args.wd, nesterov=args.nesterov,
            dampening=args.dampening, batch_size=args.batch_size, seed=args.seed,
            width=args.width, models=models, flush_every=args.flush_every,
            channels_last=args.channels_last, bf16=args.bf16, compile=args.compile,
        )  # fmt: skip
    if args.steps is not None:
        preset = replace(preset, steps=args.steps, epochs=None)
    elif args.epochs is not None:
        preset = replace(preset, steps=None, epochs=args.epochs)
    if preset.nesterov and (preset.momentum <= 0 or preset.dampening != 0):
        raise NmechError("--nesterov needs momentum > 0 and zero dampening (torch SGD's rule)")
    return preset, device, data_dir, out


def run(args: argparse.Namespace) -> int:
    """Train, record and report; prints where the report and figures are.

    Exit status: 0, or 130/143 after SIGINT/SIGTERM (records and checkpoint saved).
    """
    _check(args)
    from nmech.validation.experiment import run_preset
    from nmech.validation.report import build_report
    from nmech.validation.stops import Interrupted, StopRequest
    from nmech.validation.train import resolve_device

    preset, device_name, data_dir, out = _configure(args)
    device = resolve_device(device_name)
    try:
        with StopRequest(args.stop_after) as stop:
            run_preset(preset, out, device, data_dir, not args.no_progress, args.resume is not None,
                       stop)  # fmt: skip
    except Interrupted as exc:
        print(f"nmech: {exc}; records and checkpoint saved in {out}; resume with: "
              f"nmech validate --resume {out}", file=sys.stderr)  # fmt: skip
        return exc.exit_code
    if args.no_report:
        print(f"records: {out}; build the report with: nmech report {out}")
        return 0
    report = build_report(out)
    print(f"report: {out / 'report.md'} (JSON: {out / 'report.json'}, LaTeX: {out / 'errors.tex'})")
    for fig in report["figures"]:
        print(f"figure: {out / fig}")
    for kind, forms in report["errors"].items():
        line = ", ".join(f"{form} max {e['max']:.2e}" for form, e in forms.items())
        print(f"{kind}: {line}")
    return 0
