"""nmech flow: check a rule's modified equations on a real network trained on real data.

Trains a small smooth network (``--model mlp|cnn|cnn-bn``) full-batch in float64 with the
rule's own steps on scikit-learn's bundled digits (default; no download) or a Tiny ImageNet
folder (``--data-dir``), integrates the order-p modified flows p = 0..P from the same start for
several η at a fixed time T, and writes flow.json, flow.md and figures to ``--out``: the
log-log slope of the error against η is p + 1 when the order-p equation is right.
See nmech.validation.flow.run for the method, the starts and the burn-in.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from nmech.cli.derive import NORM_RULES, RULE_NAMES, SIGN_RULES, load_rule
from nmech.errors import NmechError
from nmech.validation.limits import check_number

if TYPE_CHECKING:
    from nmech.validation.flow.run import FlowSettings

#: a network's gradient entries cross zero within any horizon, leaving the region of fixed
#: signs where a sign rule's modified equation holds: those built-ins are not offered here, nor
#: the norm rules, whose scalars r (SAM) and c (clipping) this command has no options for;
#: schedule-free declares an average, whose flow nmech flow does not check (it tracks θ)
FLOW_RULES = tuple(r for r in RULE_NAMES if r not in (*SIGN_RULES, *NORM_RULES, "schedule-free"))
#: (order P, learning rates, start) per rule: slopes p+1 ± 0.3 on the default MLP (README)
DEFAULTS = {
    "gd": (3, (0.1, 0.05, 0.025), "manifold"),
    "heavy-ball": (2, (0.05, 0.025, 0.0125, 0.00625), "manifold"),
    "nesterov": (2, (0.05, 0.025, 0.0125, 0.00625), "manifold"),
    "torch-sgd": (2, (0.05, 0.025, 0.0125, 0.00625), "manifold"),
    "adam": (1, (0.02, 0.01, 0.005), "torch"),
    "rmsprop": (1, (0.02, 0.01, 0.005), "torch"),
    "adamw": (1, (0.02, 0.01, 0.005), "torch"),
    None: (1, (0.05, 0.025, 0.0125, 0.00625), "manifold"),
}
HYPER = {"beta": 0.5, "tau": 0.0, "lam": 0.0, "beta1": 0.5, "beta2": 0.6, "alpha": 0.6, "eps": 0.1}
#: Valid values of the numeric options: option -> (type, low, high, excluded ends).
LIMITS: dict[str, tuple[type, float, float, str]] = {
    "order": (int, 0, 4, ""), "horizon": (float, 0.0, 1e6, "("),
    "samples": (int, 2, 10**6, ""), "image_size": (int, 1, 64, ""),
    "seed": (int, 0, 2**32 - 1, ""), "threads": (int, 1, 1024, ""),
    "beta": (float, 0.0, 1.0, ")"), "tau": (float, 0.0, 1.0, ")"), "lam": (float, 0.0, 1e3, ""),
    "beta1": (float, 0.0, 1.0, ")"), "beta2": (float, 0.0, 1.0, ")"),
    "alpha": (float, 0.0, 1.0, ")"), "eps": (float, 0.0, 1.0, "("),
}  # fmt: skip
#: Valid learning rates (--etas).
ETA_LIMITS = (float, 0.0, 10.0, "(")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech flow`` (hyper-parameter defaults in :data:`HYPER`)."""
    parser.add_argument("rule", nargs="?", choices=FLOW_RULES, help="a built-in rule")
    parser.add_argument("--rule-file", type=Path, help="a rule written in the rule language")
    parser.add_argument("--out", type=Path, required=True, help="output folder (must be new)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the flow run (finished or not) --out holds")  # fmt: skip
    parser.add_argument("--order", type=int, help="highest order P (default per rule)")
    parser.add_argument("--etas", help="comma-separated learning rates (default per rule)")
    parser.add_argument("--horizon", type=float, default=1.0, help="time T = n*eta compared")
    parser.add_argument("--start", choices=("manifold", "torch"), help="how states start")
    parser.add_argument("--model", default="mlp", help="mlp, cnn or cnn-bn")
    parser.add_argument("--data", default="digits", help="digits or tiny-imagenet")
    parser.add_argument("--data-dir", type=Path, help="tiny-imagenet-200 folder")
    parser.add_argument("--samples", type=int, help="images in the full batch")
    parser.add_argument("--image-size", type=int, default=16, help="tiny-imagenet: pooled size")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument("--weight-decay", action="store_true", help="coupled weight decay lam")
    parser.add_argument("--torch-nesterov", action="store_true", help="torch-sgd: nesterov=True")
    parser.add_argument("--dampening", action="store_true", help="torch-sgd: dampening tau")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (small networks: 1 is fastest)"
    )
    parser.add_argument(
        "--no-modified-loss", action="store_true", help="skip the modified-loss route"
    )
    for name, value in HYPER.items():
        parser.add_argument(f"--{name}", type=float, default=value, help=f"default {value}")


def _etas(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
    if text is None:
        return default
    try:
        etas = tuple(float(e) for e in text.split(","))
    except ValueError:
        raise NmechError(f"--etas must be comma-separated numbers, got '{text}'") from None
    for eta in etas:
        check_number("--etas", eta, *ETA_LIMITS)
    return etas


def _check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option given lies in its range (:data:`LIMITS`), before anything runs."""
    for name, limits in LIMITS.items():
        value = getattr(args, name)
        if value is not None:
            check_number(f"--{name.replace('_', '-')}", value, *limits)


def run(args: argparse.Namespace) -> int:
    """Check the settings, run the comparison with a progress bar, write the folder."""
    import torch

    from nmech.validation.flow.data import DATASETS
    from nmech.validation.flow.report import FLOW_FILES
    from nmech.validation.flow.run import FlowSettings
    from nmech.validation.outputs import clear_outputs, new_output_dir
    from nmech.validation.small_models import SMALL_MODELS

    _check_numbers(args)
    etas_given = _etas(args.etas, ())
    if args.model not in SMALL_MODELS:
        raise NmechError(f"unknown model '{args.model}'; choose from {', '.join(SMALL_MODELS)}")
    data = "tiny-imagenet" if args.data_dir is not None and args.data == "digits" else args.data
    if data not in DATASETS:
        raise NmechError(f"unknown data '{args.data}'; choose from {', '.join(DATASETS)}")
    if args.lam != 0 and not args.weight_decay:
        raise NmechError("--lam is the weight decay: add --weight-decay to use it")
    rule = load_rule(args)
    if rule.averages:
        raise NmechError(
            f"nmech flow checks theta's own flow; the rule declares the average "
            f"'{rule.averages[0]}', whose flow 'nmech derive --rule-file' gives"
        )
    out: Path = new_output_dir(args.out, FLOW_FILES, args.overwrite, "a flow run")
    if args.overwrite:
        clear_outputs(out, FLOW_FILES)
    order, etas, start = DEFAULTS.get(args.rule, DEFAULTS[None])
    order = order if args.order is None else args.order
    start = args.start or start
    hyper = {name: getattr(args, name) for name in HYPER}
    settings = FlowSettings(
        rule=rule,
        orders=order,
        etas=etas_given or etas,
        horizon=args.horizon,
        start=start,
        hyper=hyper,
        modified_loss=not args.no_modified_loss,
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:  # called in-process (tests, nmech demo), the caller's thread count comes back
        return _check_and_write(args, settings, data, hyper, out)
    finally:
        torch.set_num_threads(previous)


def _check_and_write(
    args: argparse.Namespace, settings: FlowSettings, data: str, hyper: dict[str, float], out: Path
) -> int:
    """Train, integrate and compare with a progress bar; write the folder; print the slopes."""
    import torch
    from tqdm import tqdm

    from nmech.numerics.torch_loss import module_loss
    from nmech.validation.flow.data import full_batch
    from nmech.validation.flow.report import write, write_partial
    from nmech.validation.flow.run import check_settings, largest_curvature, run_flow
    from nmech.validation.small_models import small_model

    rule, order = settings.rule, settings.orders
    x, y, classes = full_batch(data, args.data_dir, args.samples, args.image_size)
    model = small_model(args.model, tuple(x.shape[1:]), classes, args.seed)
    loss = module_loss(model, (x, y), torch.nn.functional.cross_entropy)
    theta0 = loss.theta()
    curvature = largest_curvature(loss, theta0)
    check_settings(settings, curvature)  # before the progress bar: errors stay one line
    recorded = {
        "model": args.model,
        "data": data,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "samples": int(x.shape[0]),
        "parameters": loss.numel,
        "horizon": settings.horizon,
        "seed": args.seed,
        "hyper_parameters": hyper,
    }

    def checkpoint(so_far) -> None:
        write_partial(so_far, {**recorded, "integrator": so_far.integrator}, out)

    units = len(settings.etas) * (order + 3)
    with tqdm(total=units, desc=f"nmech flow {rule.name}", unit="run", leave=False) as bar:
        result = run_flow(
            settings, loss, theta0, lambda label: _tick(bar, label), curvature, checkpoint
        )
    recorded["integrator"] = result.integrator
    doc = write(result, recorded, out)
    for p in doc["orders"]:
        verdict = "ok" if doc["verdict"][str(p)] else "OFF"
        print(f"order {p}: slope {doc['slopes'][str(p)]:.2f} (expected {p + 1}) {verdict}")
    if doc["modified_loss"] is not None:
        print(f"modified loss (order 1): slope {doc['modified_loss']['slope']:.2f} (expected 2)")
    print(f"wrote {out / 'flow.json'}, {out / 'flow.md'}, {out / 'figures'}")
    return 0


def _tick(bar, label: str) -> None:
    bar.set_postfix_str(label)
    bar.update(1)
