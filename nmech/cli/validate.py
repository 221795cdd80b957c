"""nmech validate: train registered models with a registered torch optimizer (SGD by default),
record every symmetry block per step, and compare with the derived dynamics (report, table,
figures).

Presets: cpu-demo (VGG-16 with and without BatchNorm, width 1/8, 32x32 synthetic data, about a
minute on 2 CPU cores), cpu-resnet (ResNet-18 on scikit-learn's digits), cpu-transformer (a
pre-LN character-level transformer on the Python standard library's source), paper-vgg16-bn
and paper-vgg16 (64x64, 200 classes, batch 256; Tiny ImageNet with --data-dir, else synthetic
data of that shape). Options given on the command line override the preset; --optimizer
switches to another registered optimizer with its defaults (adamw: lr 0.01, --wd 0.5).

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
from nmech.validation.presets import PRESETS, Preset, check_value, check_values

#: Options that fix the run's dynamics: a resumed run takes them from run.json.
FIXED_ON_RESUME = ("preset", "data_dir", "data", "device", "lr", "momentum", "wd", "nesterov",
                   "dampening", "batch_size", "seed", "width", "models", "flush_every", "out",
                   "channels_last", "bf16", "compile", "optimizer")  # fmt: skip
#: Command-line option -> the preset field it sets (those an optimizer may or may not read).
OPTIMIZER_OPTIONS = {"lr": "lr", "momentum": "momentum", "wd": "weight_decay",
                     "nesterov": "nesterov", "dampening": "dampening"}  # fmt: skip
#: Preset field -> the numeric command-line option that sets it (checked before anything runs).
OPTION_FIELDS = {"lr": "lr", "momentum": "momentum", "weight_decay": "wd",
                 "dampening": "dampening", "width": "width", "epochs": "epochs",
                 "steps": "steps", "batch_size": "batch_size", "seed": "seed",
                 "flush_every": "flush_every", "per_class": "per_class"}  # fmt: skip


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Run length and optimizer settings, shared by ``nmech validate`` and the torchrun entry."""
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--epochs", type=float, help="passes over the training data")
    parser.add_argument("--lr", type=float, help="learning rate eta")
    parser.add_argument("--momentum", type=float, help="momentum beta (SGD, RMSprop)")
    parser.add_argument(
        "--wd", type=float, help="weight decay lambda (as the optimizer applies it)"
    )
    parser.add_argument(
        "--nesterov", action="store_true", default=None, help="Nesterov momentum (SGD)"
    )
    parser.add_argument("--dampening", type=float, help="momentum dampening tau (SGD)")
    parser.add_argument("--batch-size", type=int, help="mini-batch size (global under torchrun)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--width", type=float, help="width multiplier of the models (e.g. 0.125)")


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
    """The ``--optimizer`` option, shared with the torchrun entry and the device check."""
    parser.add_argument(
        "--optimizer",
        help="a registered optimizer: sgd (default: torch.optim.SGD), adam, adamw (lr 0.01 and "
        "--wd 0.5 unless given), rmsprop, adagrad; options it does not read are refused",
    )


def check_optimizer_options(args: argparse.Namespace, preset: Preset) -> None:
    """Every optimizer option given is one the preset's optimizer reads."""
    from nmech.validation.optimizers import adapter_named

    adapter = adapter_named(preset.optimizer)
    for option, field in OPTIMIZER_OPTIONS.items():
        if getattr(args, option, None) is not None and field not in adapter.options:
            reads = ", ".join(
                f"--{o}" for o, f in OPTIMIZER_OPTIONS.items() if f in adapter.options
            )
            raise NmechError(
                f"--{option} does not apply to --optimizer {preset.optimizer} (it reads {reads})"
            )


def configure_preset(args: argparse.Namespace, preset: Preset) -> Preset:
    """``preset`` with the optimizer, the command line's overrides and run length applied."""
    from nmech.validation.presets import with_optimizer

    preset = with_optimizer(preset, args.optimizer)
    check_optimizer_options(args, preset)
    models = None
    if getattr(args, "models", None) is not None:
        given = args.models if isinstance(args.models, list) else args.models.split(",")
        models = tuple(m.strip() for m in given if m.strip())
        if not models:
            raise NmechError("--models names no model")
    preset = preset.with_overrides(
        lr=args.lr, momentum=args.momentum, weight_decay=args.wd, nesterov=args.nesterov,
        dampening=args.dampening, batch_size=args.batch_size, seed=args.seed,
        width=args.width, models=models, flush_every=args.flush_every,
        channels_last=args.channels_last, bf16=args.bf16, compile=args.compile,
        per_class=getattr(args, "per_class", None),
    )  # fmt: skip
    if args.steps is not None:
        preset = replace(preset, steps=args.steps, epochs=None)
    elif args.epochs is not None:
        preset = replace(preset, steps=None, epochs=args.epochs)
    check_preset(preset)
    return preset


def check_preset(preset: Preset) -> None:
    """The preset's models, data set and optimizer are registered and fit together."""
    from nmech.validation.datasets import dataset
    from nmech.validation.models import MODELS

    data = dataset(preset.data)
    for name in preset.models:
        if name not in MODELS:
            raise NmechError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        if MODELS[name].inputs != data.inputs:
            raise NmechError(
                f"model {name} takes {MODELS[name].inputs}, data set {preset.data} gives "
                f"{data.inputs} (choose --data or --models to match)"
            )
    if preset.nesterov and (preset.momentum <= 0 or preset.dampening != 0):
        raise NmechError("--nesterov needs momentum > 0 and zero dampening (torch SGD's rule)")
    check_values(preset)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech validate``."""
    parser.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (default cpu-demo)")
    add_optimizer_option(parser)
    parser.add_argument(
        "--data",
        help="a registered data set: synthetic, digits, tiny-imagenet (needs --data-dir), "
        "python-source (default: the preset's)",
    )
    parser.add_argument(
        "--data-dir", help="tiny-imagenet-200/ folder (implies --data tiny-imagenet)"
    )
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    add_training_options(parser)
    add_switch_options(parser)
    parser.add_argument(
        "--models",
        help="comma-separated registered models (vgg16_bn, vgg16, resnet18, vit, charlm)",
    )
    parser.add_argument(
        "--flush-every", type=int, help="steps between records flushes and checkpoints"
    )
    parser.add_argument("--out", help="output folder (required unless --resume)")
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run (records, checkpoints, report) --out holds")  # fmt: skip
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
        if args.overwrite:
            raise NmechError("--overwrite and --resume exclude each other")
    elif args.out is None:
        raise NmechError("--out is required (or --resume DIR)")
    if args.preset is not None and args.preset not in PRESETS:
        raise NmechError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    for field, option in OPTION_FIELDS.items():
        if getattr(args, option, None) is not None:
            check_value(field, getattr(args, option))
    if args.stop_after is not None and args.stop_after <= 0:
        raise NmechError(f"--stop-after must be positive, got {args.stop_after}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise NmechError(f"data folder not found: {args.data_dir}")


def _configure(args: argparse.Namespace) -> tuple[Preset, str, str | None, Path]:
    """The run's preset, device name, data folder and output folder."""
    from nmech.validation.experiment import load_run
    from nmech.validation.presets import get_preset

    if args.resume is not None:
        out = Path(args.resume)
        preset, device, data_dir = load_run(out)
        if args.steps is not None:
            preset = replace(preset, steps=args.steps, epochs=None)
        elif args.epochs is not None:
            preset = replace(preset, steps=None, epochs=args.epochs)
        return preset, device, data_dir, out
    out, device, data_dir = Path(args.out), args.device or "auto", args.data_dir
    preset = get_preset(args.preset or "cpu-demo")
    data = args.data or ("tiny-imagenet" if data_dir is not None else None)
    if data is not None:
        preset = replace(preset, data=data)
    return configure_preset(args, preset), device, data_dir, out


def _check_folder(args: argparse.Namespace, out: Path) -> None:
    """The run folder, checked before anything is written: a resumed one must be writable;
    a new one must not hold a run unless --overwrite (run_preset removes that run once the
    run's own checks have passed)."""
    from nmech.validation.experiment import RUN_OUTPUTS
    from nmech.validation.outputs import new_output_dir, writable_dir

    if args.resume is not None:
        writable_dir(out, "--resume")
        return
    new_output_dir(out, RUN_OUTPUTS, args.overwrite, "a validation run", hint=f"--resume {out}")


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
    _check_folder(args, out)
    device = resolve_device(device_name)
    try:
        with StopRequest(args.stop_after) as stop:
            run_preset(preset, out, device, data_dir, not args.no_progress, args.resume is not None,
                       stop, overwrite=args.overwrite)  # fmt: skip
    except Interrupted as exc:
        print(f"nmech: {exc}; records and checkpoint saved in {out}; resume with: "
              f"nmech validate --resume {out}", file=sys.stderr)  # fmt: skip
        return exc.exit_code
    if args.no_report:
        print(f"records: {out}; build the report with: nmech report {out}")
        return 0
    report = build_report(out)
    print_report(report, out)
    return 0


def print_report(report: dict, out: Path) -> None:
    """Where the report and figures are, and each kind's errors (shared with nmech report)."""
    print(f"report: {out / 'report.md'} (JSON: {out / 'report.json'}, LaTeX: {out / 'errors.tex'})")
    for fig in report["figures"]:
        print(f"figure: {out / fig}")
    if not report["errors"]:
        print("no symmetry found: nothing to compare (see report.md)")
    for kind, forms in report["errors"].items():
        line = ", ".join(f"{form} max {e['max']:.2e}" for form, e in forms.items())
        print(f"{kind}: {line}")
    for warning in report.get("warnings", []):
        print(f"warning: {warning}")
