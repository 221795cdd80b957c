"""nmech derive: the modified equation (and modified loss) of an update rule.

Built-in rules by name, or a rule file in the rule language (see nmech.derive.rules.language);
``minibatch --batches M`` for mini-batch SGD over an epoch (random reshuffling, or
``--replacement``), ``--format sde`` for its stochastic modified equation (with replacement);
``--inverse [--target T]`` for the inverse problem, the rule fed a corrected gradient whose
modified equation is the target (``--format rule``: the corrected rule in the rule language).
``--lookahead K`` wraps the rule in Lookahead (K inner steps, slow step rho), ``--ema`` adds the
exponential average of its iterates; a rule that declares an average (``--ema``,
``schedule-free``, ``average X_next = ...`` in a rule file) gives the flow of that average.
A derivation shows its progress level by level on stderr (on a terminal) and stops with one
line when it passes ``--max-seconds`` or ``--max-memory``, or, from the levels done so far, is
predicted to.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import stat
import time
from pathlib import Path
from types import FrameType

from nmech.derive import latex, rules
from nmech.derive.bea.averaged import averaged_equation
from nmech.derive.bea.modified_equation import ModifiedEquation, modified_equation
from nmech.derive.bea.modifying import modifying_rule, parse_target
from nmech.derive.bea.slow_manifold import MAX_ORDER
from nmech.derive.stochastic.minibatch import (
    REPLACEMENT,
    RESHUFFLING,
    MinibatchEquation,
    general_minibatch_equation,
    minibatch_equation,
)
from nmech.derive.stochastic.sde import minibatch_sde
from nmech.errors import NmechError

RULE_NAMES = (
    "gd",
    "heavy-ball",
    "nesterov",
    "torch-sgd",
    "rmsprop",
    "adam",
    "adamw",
    "signsgd",
    "signum",
    "lion",
    "schedule-free",
    "normalized-gd",
    "sam",
    "clip-gd",
)
#: Built-ins whose modified equation holds only on a region where the signs of ∇L are fixed.
SIGN_RULES = ("signsgd", "signum", "lion")
#: Built-ins with a global norm: smooth only where ∇L ≠ 0 (clip-gd: on its active region).
NORM_RULES = ("normalized-gd", "sam", "clip-gd")
MINIBATCH = "minibatch"
MAX_RULE_FILE = 1 << 20
DEFAULT_MAX_SECONDS = 600.0
CHECK_EVERY_S = 0.25
MAX_SECONDS = 1e6  # about 11 days
MAX_MEMORY_MIB = float(2**30)  # 1 PiB
MIN_LEVEL_S = 1.0  # levels shorter than this are not extrapolated from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech derive``."""
    parser.add_argument(
        "rule", nargs="?", choices=RULE_NAMES + (MINIBATCH,), help="a built-in rule"
    )
    parser.add_argument("--rule-file", type=Path, help="a rule written in the rule language")
    parser.add_argument(
        "--weight-decay",
        action="store_true",
        help="weight decay lam (coupled; decoupled for adamw, signsgd, signum, lion)",
    )
    parser.add_argument("--torch-nesterov", action="store_true", help="torch-sgd: nesterov=True")
    parser.add_argument("--dampening", action="store_true", help="torch-sgd: dampening tau")
    parser.add_argument(
        "--ema", action="store_true", help="the flow of the iterates' average (decay gamma)"
    )
    parser.add_argument(
        "--lookahead",
        type=int,
        metavar="K",
        help="Lookahead over the rule: K inner steps, then the slow step rho",
    )
    parser.add_argument("--order", type=int, default=1, help="keep corrections through eta^P")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help=f"stop (or refuse early) a derivation longer than this (default {DEFAULT_MAX_SECONDS:g}; 0: no limit)",
    )
    parser.add_argument(
        "--max-memory",
        type=float,
        default=None,
        help="stop a derivation whose resident memory passes this many MiB (default: no limit)",
    )
    parser.add_argument("--batches", type=int, help="minibatch: the number m of mini-batches")
    parser.add_argument(
        "--replacement", action="store_true", help="minibatch: draw batches with replacement"
    )
    parser.add_argument(
        "--general", action="store_true", help="minibatch: reshuffling for any number m of batches"
    )
    parser.add_argument(
        "--inverse",
        action="store_true",
        help="the inverse problem: the rule fed a corrected gradient whose modified equation is "
        "--target through eta^P",
    )
    parser.add_argument(
        "--target",
        help="--inverse: gradient-flow (default) or regularised:C, the gradient flow of "
        "L + C*eta*|grad L|^2, at the rule's own rate",
    )
    parser.add_argument(
        "--format",
        choices=("latex", "json", "text", "sde", "sde-json", "rule"),
        default="latex",
        help="sde, sde-json: minibatch's stochastic modified equation (LaTeX, JSON); rule: "
        "--inverse's corrected rule in the rule language",
    )
    add_standalone(parser)


def add_standalone(parser: argparse.ArgumentParser) -> None:
    """The ``--standalone`` option (LaTeX output as a complete document)."""
    parser.add_argument(
        "--standalone", action="store_true", help="LaTeX: a complete document (pdflatex)"
    )


def latex_output(title: str, body: str, args: argparse.Namespace) -> str:
    """LaTeX lines as display math with their legend (:mod:`nmech.derive.latex`), a complete
    document with ``--standalone``."""
    shown = latex.display(body)
    return latex.document(shown, title) if args.standalone else shown


def rule_name(path: Path) -> str:
    """A rule's name from its file: the stem with anything but letters, digits, '-', '_' and
    '.' replaced by '_' (a name is printed in LaTeX comments and JSON)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:64] or "rule"


def read_rule_file(path: Path) -> str:
    """The text of a rule file: a regular file of at most 1 MiB, UTF-8 (a byte-order mark is
    accepted); one-line errors that say what the path is otherwise."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise NmechError(f"rule file '{path}' does not exist") from None
    except OSError as exc:
        raise NmechError(f"rule file '{path}' cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise NmechError(f"rule file '{path}' is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise NmechError(f"rule file '{path}' is not a regular file")
    if info.st_size > MAX_RULE_FILE:
        raise NmechError(f"rule file '{path}' is larger than 1 MiB")
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_RULE_FILE + 1)
    except OSError as exc:
        raise NmechError(f"rule file '{path}' cannot be read ({exc.strerror})") from None
    if len(data) > MAX_RULE_FILE:
        raise NmechError(f"rule file '{path}' is larger than 1 MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NmechError(f"rule file '{path}' is not UTF-8 text") from None


def load_rule(args: argparse.Namespace) -> rules.Rule:
    """The rule named by the options: a built-in (with its flags) or a rule file (UTF-8, at
    most 1 MiB); the built-ins' flags with a rule file are an error, not ignored."""
    if (args.rule is None) == (args.rule_file is None):
        raise NmechError("give exactly one of a built-in rule name or --rule-file FILE")
    if args.rule_file is None:
        return rules.builtin(
            args.rule,
            weight_decay=args.weight_decay,
            nesterov=getattr(args, "torch_nesterov", False),
            dampening=getattr(args, "dampening", False),
        )
    for flag in ("weight_decay", "torch_nesterov", "dampening"):
        if getattr(args, flag, False):
            option = "--" + flag.replace("_", "-")
            raise NmechError(
                f"{option} applies to the built-in rules: write it into the rule file instead"
            )
    path: Path = args.rule_file
    return rules.parse(read_rule_file(path), name=rule_name(path))


def wrapped(rule: rules.Rule, args: argparse.Namespace) -> rules.Rule:
    """``rule`` inside Lookahead (``--lookahead K``), then with its EMA (``--ema``)."""
    if args.lookahead is not None:
        rule = rules.lookahead(rule, args.lookahead)
    return rules.ema(rule) if args.ema else rule


class Stopped(NmechError):
    """A derivation stopped by its time or memory guard."""


def _resident_mib() -> float:
    """The process's resident memory in MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Guard:
    """Bounds a derivation: a timer checks elapsed time and resident memory every
    :data:`CHECK_EVERY_S` seconds, and after each level of the solver the time of the levels
    still to come is extrapolated geometrically (each level costs the last one times the last
    ratio) so that what cannot finish in time is refused early. Shows a progress bar (tqdm, on
    stderr, when stderr is a terminal)."""

    def __init__(self, max_seconds: float, max_memory: float | None, total: int) -> None:
        if not (0 <= max_seconds <= MAX_SECONDS):  # False for nan
            raise NmechError(
                f"--max-seconds must be a finite number in 0..{MAX_SECONDS:g}, got {max_seconds}"
            )
        if max_memory is not None and not (0 < max_memory <= MAX_MEMORY_MIB):
            raise NmechError(
                f"--max-memory must be a finite number of MiB in (0, {MAX_MEMORY_MIB:g}], got "
                f"{max_memory}"
            )
        self.max_seconds, self.max_memory, self.total = max_seconds, max_memory, total
        self.start = self.last = time.monotonic()
        self.levels: list[float] = []
        self.bar = None

    def __enter__(self) -> Guard:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc="derive", unit="level", disable=None, leave=False)
        self._previous = signal.signal(signal.SIGALRM, self._check)
        signal.setitimer(signal.ITIMER_REAL, CHECK_EVERY_S, CHECK_EVERY_S)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self._previous)
        self.bar.close()

    def _check(self, _signum: int, _frame: FrameType | None) -> None:
        elapsed = time.monotonic() - self.start
        if self.max_seconds and elapsed > self.max_seconds:
            raise Stopped(
                f"derivation stopped after {elapsed:.0f} s (--max-seconds {self.max_seconds:g}; "
                f"{len(self.levels)} of {self.total} levels done): lower --order or raise the limit"
            )
        if self.max_memory is not None and _resident_mib() > self.max_memory:
            raise Stopped(
                f"derivation stopped at {_resident_mib():.0f} MiB resident "
                f"(--max-memory {self.max_memory:g}): lower --order or raise the limit"
            )

    def level(self, done: int, total: int) -> None:
        """The solver's progress callback: level ``done`` of ``total`` finished."""
        now = time.monotonic()
        self.levels.append(now - self.last)
        self.last = now
        self.bar.update(1)
        if not self.max_seconds or len(self.levels) < 3 or done >= total:
            return
        a, b = self.levels[-2], self.levels[-1]
        if b < max(MIN_LEVEL_S, self.max_seconds / 50):
            return  # too short to extrapolate from: the timer still bounds the run
        growth = max(b / a, 1.0) if a > 0 else 1.0
        ahead = sum(b * growth**k for k in range(1, total - done + 1))
        elapsed = now - self.start
        if elapsed + ahead > self.max_seconds:
            raise Stopped(
                f"refused: the remaining {total - done} levels would take about {ahead:.0f} s "
                f"(last level {b:.1f} s, growing x{growth:.1f} a level), past --max-seconds "
                f"{self.max_seconds:g}; lower --order or raise the limit"
            )


def present(
    title: str, result: ModifiedEquation | MinibatchEquation, args: argparse.Namespace
) -> str:
    """A modified equation and its modified loss (or why there is none) in ``args.format``."""
    if args.standalone and args.format not in ("latex", "sde"):
        raise NmechError("--standalone is for LaTeX output (--format latex or sde)")
    if args.format == "json":
        return result.to_json_text()
    loss = result.modified_loss()
    if args.format == "text":
        shown = f"\n  {loss.text()}" if loss.terms else ""
        return f"{title}: {result.text()}{shown}\n  {loss.verdict()}"
    shown = f"{loss.latex()}\n" if loss.terms else ""
    return latex_output(title, f"% {title}\n{result.latex()}\n{shown}% {loss.verdict()}", args)


def _minibatch(args: argparse.Namespace) -> MinibatchEquation:
    if args.general:
        if args.batches is not None or args.replacement:
            raise NmechError(
                "--general is random reshuffling for any m: drop --batches/--replacement"
            )
        return general_minibatch_equation(args.order)
    if args.batches is None:
        raise NmechError("minibatch needs --batches M (the number of mini-batches) or --general")
    sampling = REPLACEMENT if args.replacement else RESHUFFLING
    return minibatch_equation(args.batches, args.order, sampling)


def render_minibatch(args: argparse.Namespace) -> str:
    """``nmech derive minibatch``: the mean-epoch flow and loss, or the SDE with ``--format sde``."""
    if args.rule_file is not None:
        raise NmechError("give either minibatch or --rule-file, not both")
    if args.ema or args.lookahead is not None:
        raise NmechError("--ema and --lookahead apply to a rule, not to minibatch")
    if args.format in ("sde", "sde-json"):
        if args.batches is None or args.general:
            raise NmechError("--format sde needs --batches M")
        if args.order != 1:
            raise NmechError(
                "--format sde is the first-order SDE (drift through eta): drop --order"
            )
        if not args.replacement:
            raise NmechError(
                "--format sde is the SDE of batches drawn with replacement (one uniform draw a "
                "step): add --replacement"
            )
        sde = minibatch_sde(args.batches)
        if args.format == "sde-json":
            if args.standalone:
                raise NmechError("--standalone is for LaTeX output (--format latex or sde)")
            return sde.to_json_text()
        title = f"stochastic modified equation of SGD, m = {args.batches}"
        return latex_output(title, f"% {title}\n{sde.latex()}", args)
    me = _minibatch(args)
    return present(me.title(), me, args)


def render_inverse(rule: rules.Rule, args: argparse.Namespace) -> str:
    """``nmech derive RULE --inverse``: the modifying rule in ``args.format`` (``rule``: the
    corrected rule's text, which ``--rule-file`` reads back)."""
    target = parse_target("gradient-flow" if args.target is None else args.target)
    if args.standalone and args.format != "latex":
        raise NmechError("--standalone is for LaTeX output (--format latex)")
    with Guard(args.max_seconds, args.max_memory, args.order + 1) as guard:
        result = modifying_rule(rule, target, args.order, progress=guard.level)
    if args.format == "rule":
        return result.to_rule_text().rstrip("\n")
    if args.format == "json":
        return result.to_json_text()
    if args.format == "text":
        return result.text()
    return latex_output(result.title(), result.latex(), args)


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 (bad input raises NmechError: one line, exit 2)."""
    if not args.inverse and (args.target is not None or args.format == "rule"):
        raise NmechError("--target and --format rule belong to --inverse")
    if args.inverse and args.rule == MINIBATCH:
        raise NmechError("--inverse needs a rule (a built-in or --rule-file), not minibatch")
    if args.rule == MINIBATCH:
        print(render_minibatch(args))
        return 0
    if args.batches is not None or args.replacement or args.general or "sde" in args.format:
        raise NmechError("--batches, --replacement, --general, --format sde: minibatch only")
    rule = wrapped(load_rule(args), args)
    if args.inverse:
        if rule.averages or args.lookahead is not None:
            raise NmechError(
                "--inverse corrects a rule's own flow: not for an average (--ema, "
                "schedule-free, 'average' in a rule file) or --lookahead"
            )
        print(render_inverse(rule, args))
        return 0
    if not isinstance(args.order, int) or not 0 <= args.order <= MAX_ORDER:
        raise NmechError(f"order {args.order} is outside the supported range 0..{MAX_ORDER}")
    with Guard(args.max_seconds, args.max_memory, args.order + 2) as guard:
        if rule.averages:
            me = averaged_equation(rule, args.order, progress=guard.level)
        else:
            me = modified_equation(rule, args.order, progress=guard.level)
    print(present(title(rule, args), me, args))
    return 0


def title(rule: rules.Rule, args: argparse.Namespace) -> str:
    """The rule's name, with what is derived for an average or a Lookahead rule."""
    name = rule.name
    if args.lookahead is not None:
        name += ", one outer step taking time eta"
    if rule.averages:
        name += f": the flow of the average {rule.averages[0]} of the iterates"
    return name
