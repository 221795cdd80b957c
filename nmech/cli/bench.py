"""nmech bench: the benchmark suite; every figure is a ratio against a baseline measured in the
same run or a documented fixed budget (these machines are shared and noisy, so no absolute
timing is asserted in tests).

Modules, in order: ``derivation`` (engine vs naive coordinate route), ``numerics`` (predict vs a
per-step loop), ``recorder`` (training step with vs without recording), ``end_to_end``
(``nmech validate --preset cpu-demo`` wall time and peak memory). Every record is
``{name, value, unit, baseline, ratio, target, met}`` with ratio = baseline / value (None when
there is no baseline).
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from typing import Any

from nmech.errors import NmechError

MODULES: tuple[str, ...] = ("derivation", "numerics", "torch_field", "recorder", "end_to_end")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech bench``."""
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", help="write the records to this file")
    parser.add_argument(
        "--only", action="append", choices=MODULES, help="run only this module (repeatable)"
    )


def _num(x: float | None, spec: str) -> str:
    return f"{'-':>{spec.split('.')[0].lstrip('>')}}" if x is None else format(x, spec)


def format_record(r: dict[str, Any]) -> str:
    """One aligned line of a record (missing baseline/ratio/target shown as '-')."""
    verdict = "" if r["met"] is None else ("met" if r["met"] else "MISSED")
    return (
        f"{r['name']:<48} {_num(r['value'], '>10.4g')} {r['unit']:<3} baseline "
        f"{_num(r['baseline'], '>10.4g')}  x{_num(r['ratio'], '>8.3g')}  "
        f"target {r['target'] or '-':<22} {verdict}"
    )


def run(args: argparse.Namespace) -> int:
    """Run the selected modules in order, print every record, optionally write them as JSON."""
    if args.json:  # checked before the benchmarks run, not after
        from nmech.validation.outputs import writable_file

        writable_file(args.json, "--json")
    records: list[dict[str, Any]] = []
    for name in args.only or MODULES:
        try:
            module = importlib.import_module(f"nmech.benchmarks.{name}")
        except ImportError:
            continue
        start = time.perf_counter()
        got = module.run(quick=args.quick)
        print(f"# {name}: {len(got)} records in {time.perf_counter() - start:.1f} s", flush=True)
        for r in got:
            print(format_record(r), flush=True)
        records += got
    if args.json:
        try:
            with open(args.json, "w") as fh:
                json.dump(records, fh, indent=2)
        except OSError as exc:
            raise NmechError(f"--json {args.json}: {exc.strerror or exc}") from None
    return 0
