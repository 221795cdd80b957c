"""nmech demo: the main job on the embedded default (no downloads, no GPU).

1. derives and prints the modified equations (and modified losses) of GD, heavy ball and
   Nesterov in LaTeX, and the broken conservation laws of the scale symmetry under torch SGD;
2. checks GD's modified equations on a real network (``nmech flow gd`` on the digits MLP,
   orders 0-2, a reduced run of about half a minute) and prints where its slope figure is;
3. runs the ``cpu-demo`` validation (VGG-16 with and without batch norm, width 1/8, synthetic
   data, torch.optim.SGD) and prints where the report and figures are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nmech.cli.derive import latex_output, present
from nmech.derive import modified_equation, rules, symmetry
from nmech.derive.symmetry.dynamics import derive
from nmech.errors import NmechError

#: ``nmech flow``'s arguments in the demo: GD, orders 0-2, a reduced run of about half a minute.
ETAS = [0.1, 0.05, 0.025]
FLOW = ["flow", "gd", "--order", "2", "--etas", ",".join(map(str, ETAS)), "--horizon", "0.5",
        "--samples", "500"]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech demo``."""
    parser.add_argument("--order", type=int, default=2, help="order of the modified equations")
    parser.add_argument(
        "--out",
        default="runs/cpu-demo",
        help="folder for the validation run (replaced by each demo)",
    )
    parser.add_argument("--flow-out", default="runs/flow-demo", help="folder for the flow check")
    parser.add_argument("--skip-flow", action="store_true", help="no nmech flow check")
    parser.add_argument("--skip-validation", action="store_true", help="no cpu-demo validation")


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 (bad input raises NmechError: one line, exit 2)."""
    if not args.skip_validation:
        _refuse_other_run(Path(args.out))  # before any work
    if not args.skip_flow:
        _refuse_other_flow(Path(args.flow_out))
    latex = argparse.Namespace(format="latex", standalone=False)
    for rule in (rules.gd(), rules.heavy_ball(), rules.nesterov()):
        title = f"{rule.name}, order {args.order}"
        print(present(title, modified_equation(rule, args.order), latex))
        print()
    dyn = derive(rules.torch_sgd(weight_decay=True), symmetry.scale())
    print(latex_output("torch SGD + weight decay, scale symmetry", dyn.latex(), latex))
    print()
    from nmech.cli import main

    if not args.skip_flow:
        if (Path(args.flow_out) / "flow.json").exists():
            print(f"% nmech flow: {args.flow_out} holds a finished run (kept)")
        else:
            # the demo's own folder: an interrupted earlier demo's partial run is replaced
            status = main([*FLOW, "--out", args.flow_out, "--overwrite"])
            if status:
                return status
        print(f"% slopes figure: {Path(args.flow_out) / 'figures' / 'slopes.png'}")
    if args.skip_validation:
        return 0
    # each demo run replaces the previous demo's run in its folder, never another run
    return main(["validate", "--preset", "cpu-demo", "--out", args.out, "--overwrite"])


def _refuse_other_run(folder: Path) -> None:
    """One line when ``folder`` holds a validation run that the demo did not make (its
    ``run.json`` names another preset, or cannot be read): the demo never replaces it."""
    from nmech.validation.experiment import RUN_FILE, load_run

    if not (folder / RUN_FILE).exists():
        return
    try:
        preset = load_run(folder)[0].name
    except NmechError:  # unreadable: someone's run all the same
        preset = None
    if preset != "cpu-demo":
        raise NmechError(
            f"--out {folder} holds another validation run (not the demo's): choose another --out"
        )


def _refuse_other_flow(folder: Path) -> None:
    """One line when ``folder`` holds an unfinished flow run that the demo did not make (its
    ``flow.partial.json`` names another rule, η or sample count, or cannot be read; or flow
    outputs without either file): the demo replaces only its own interrupted run."""
    from nmech.validation.flow.report import FLOW_FILES, PARTIAL

    if (folder / "flow.json").exists() or not folder.is_dir():
        return
    partial = folder / PARTIAL
    if partial.exists():
        try:
            doc = json.loads(partial.read_text())
            own = (doc["rule"], doc["etas"], doc["settings"]["samples"]) == ("gd", ETAS, 500)
        except (OSError, ValueError, KeyError, TypeError):
            own = False  # unreadable: someone's run all the same
    else:
        own = not any(any(folder.glob(pattern)) for pattern in FLOW_FILES)
    if not own:
        raise NmechError(
            f"--flow-out {folder} holds another, unfinished flow run (not the demo's): choose "
            "another --flow-out"
        )
