"""The GPU check's command line (``python -m nmech.validation.device_check`` or
``python -m nmech.cli.device_check``): throughput with and without recording, projected paper
time, peak memory and prediction errors per GPU path switch, written to
``<out>/device_check.json`` (:mod:`nmech.validation.device_check`). Bad input is one line
``nmech: error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from nmech.cli import Parser
from nmech.errors import NmechError


def build_parser() -> argparse.ArgumentParser:
    """The device check's options."""
    from nmech.validation import device_check

    p = Parser(
        prog="python -m nmech.validation.device_check",
        description=device_check.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--model", default="vgg16_bn", choices=("vgg16_bn", "vgg16"))
    p.add_argument(
        "--optimizer", default="sgd",
        help="a registered optimizer: sgd (lr 0.1, momentum 0.9, wd 5e-4), adamw (lr 0.01, wd 0.5), ...",
    )  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument("--per-class", type=int, default=20, help="synthetic images per class")
    p.add_argument(
        "--switches", nargs="+", metavar="SPEC", help="switch specs (default: see above)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: writes ``<out>/device_check.json`` and prints it."""
    from nmech.validation.device_check import check
    from nmech.validation.outputs import writable_dir
    from nmech.validation.presets import check_value

    args = build_parser().parse_args(argv)
    try:
        for field in ("steps", "batch_size", "width", "per_class"):
            check_value(field, getattr(args, field))
        writable_dir(args.out)
        result = check(args.out, args.steps, args.batch_size, args.width, args.model,
                       args.optimizer, args.device, args.per_class, args.switches)  # fmt: skip
    except NmechError as exc:
        print(f"nmech: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
