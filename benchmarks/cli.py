"""nmech bench: the benchmark suite; every figure is a ratio against a baseline measured in the
same run (these machines are shared and noisy, so no absolute timing is asserted in tests)."""

from __future__ import annotations

import argparse
import importlib
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", help="write the records to this file")


def run(args: argparse.Namespace) -> int:
    records = []
    for name in ("derivation", "numerics"):
        try:
            module = importlib.import_module(f"nmech.benchmarks.{name}")
        except ImportError:
            continue
        records += module.run(quick=args.quick)
    for r in records:
        print(
            f"{r['name']:<48} {r['value']:>10.4g} {r['unit']:<3} baseline {r['baseline']:>10.4g}"
            f"  x{r['ratio']:>8.1f}  target {r['target']:<18} {'met' if r['met'] else 'MISSED'}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=2)
    return 0
