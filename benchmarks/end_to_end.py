"""End-to-end benchmark: ``nmech validate --preset P`` as a user runs it.

What is measured, each in its own fresh Python process (so imports, data loading, discovery,
training with recording of every model, the comparison, figures and the report are all in),
for ``cpu-demo`` (quick mode: ``--steps 30``) and, in the full run, ``cpu-resnet`` and
``cpu-transformer`` under SGD and under AdamW (``--optimizer adamw``):

* wall time of ``nmech validate --preset P --device cpu --no-progress --out TMP``, from process
  start to exit, against a fixed budget of ``BUDGET_S`` = 180 s (three minutes on a 2-core
  laptop); ratio = budget / wall. The name adds the process's CPU time (user + system), which
  a machine shared with other work inflates less than the wall time, and the largest exact
  error of the run's report (each preset must stay below 1e-4 on every block).
* that run's peak resident memory, ``VmHWM`` of /proc/self/status (else ``ru_maxrss``) read by the run's
  own process as it exits (so no other process of the suite counts), against ``MEMORY_BUDGET_MIB``
  = 2048 MiB; ratio = budget / peak.
* cpu-demo's pure training time: a second process trains the same models of the same preset
  for the same steps with the same loop (:func:`nmech.validation.train.train`), without
  recorder or report; the record gives value = end-to-end wall, baseline = summed training
  seconds, ratio = baseline / value (the share of the wall that is bare training). No target.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUDGET_S = 180.0
EXACT_TARGET = 1e-4
MEMORY_BUDGET_MIB = 2048.0
QUICK_STEPS = 30
TIMEOUT_S = 1800.0

_VALIDATE = """
import json, resource, sys, time
t0 = time.perf_counter()
from nmech.cli import main
rc = main(json.loads(sys.argv[1]))
# VmHWM: the peak of this process image. ru_maxrss would also count the forking parent's peak
# (Linux keeps it across fork + exec), e.g. the numerics benchmark's 13 GB run before this one.
try:
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak_kib = int(status.split()[0])
except (OSError, IndexError, ValueError):
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
usage = resource.getrusage(resource.RUSAGE_SELF)
print("NMECH_BENCH " + json.dumps({"rc": rc, "maxrss_kib": peak_kib,
                                   "inner_s": time.perf_counter() - t0,
                                   "cpu_s": usage.ru_utime + usage.ru_stime}))
sys.exit(rc)
"""

_TRAIN = """
import json, sys
import torch
from dataclasses import replace
from nmech.validation.experiment import load_data, prepare_run
from nmech.validation.presets import get_preset
from nmech.validation.train import train
steps = json.loads(sys.argv[1])
preset = get_preset("cpu-demo")
if steps is not None:
    preset = replace(preset, steps=steps, epochs=None)
data = load_data(preset, None)
seconds = 0.0
for name in preset.models:
    run = prepare_run(name, preset, data, torch.device("cpu"), None, discover_blocks=False)
    seconds += train(run.model, run.optimizer, run.batches, run.steps, progress=False,
                     loss_fn=run.loss_fn).seconds
print("NMECH_BENCH " + json.dumps({"train_s": seconds}))
"""


def _child(code: str, arg: Any) -> tuple[float, dict[str, Any]]:
    """Run ``code`` in a fresh interpreter; its wall seconds and its ``NMECH_BENCH`` JSON line."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(arg)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("NMECH_BENCH ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise RuntimeError(f"benchmark child failed (exit {proc.returncode}):\n{tail}")
    return wall, json.loads(lines[-1].removeprefix("NMECH_BENCH "))


def _record(name: str, value: float, unit: str, baseline: float | None,
            target: str | None, met: bool | None) -> dict[str, Any]:  # fmt: skip
    ratio = None if baseline is None or value <= 0 else baseline / value
    return {"name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio,
            "target": target, "met": met}  # fmt: skip


def _validate(preset: str, steps: int | None, optimizer: str | None) -> dict[str, Any]:
    """One ``nmech validate`` in a fresh process: wall, CPU time, peak RSS, largest exact error."""
    with tempfile.TemporaryDirectory(prefix="nmech-bench-e2e-") as tmp:
        out = Path(tmp) / "run"
        argv = [
            "validate",
            "--preset",
            preset,
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(out),
        ]
        if steps is not None:
            argv += ["--steps", str(steps)]
        if optimizer is not None:
            argv += ["--optimizer", optimizer]
        wall, info = _child(_VALIDATE, argv)
        report = json.loads((out / "report.json").read_text())
    exact = [forms["exact"]["max"] for forms in report["errors"].values()]
    return {**info, "wall": wall, "exact": max(exact) if exact else float("nan")}


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Records ``{name, value, unit, baseline, ratio, target, met}`` (ratio = baseline / value)."""
    steps = QUICK_STEPS if quick else None
    cases: list[tuple[str, int | None, str | None]] = [("cpu-demo", steps, None)]
    if not quick:
        cases += [(p, None, o) for p in ("cpu-resnet", "cpu-transformer") for o in (None, "adamw")]
    records = []
    demo: dict[str, Any] = {}
    for preset, n, optimizer in cases:
        m = _validate(preset, n, optimizer)
        label = (
            preset
            + (f" --steps {n}" if n is not None else "")
            + (f" --optimizer {optimizer}" if optimizer else "")
        )
        demo = demo or m
        records.append(
            _record(f"end-to-end nmech validate {label} wall (CPU {m['cpu_s']:.0f} s, exact max "
                    f"{m['exact']:.1e})", m["wall"], "s", BUDGET_S, f"< {BUDGET_S:g} s",
                    m["wall"] < BUDGET_S and m["exact"] < EXACT_TARGET)
        )  # fmt: skip
    peak_mib = demo["maxrss_kib"] / 1024.0
    _, trained = _child(_TRAIN, steps)
    label = f"cpu-demo --steps {steps}" if quick else "cpu-demo"
    return records + [
        _record(f"end-to-end nmech validate {label} peak RSS", peak_mib, "MiB",
                MEMORY_BUDGET_MIB, f"< {MEMORY_BUDGET_MIB:g} MiB", peak_mib < MEMORY_BUDGET_MIB),
        _record(f"end-to-end {label} wall vs its bare training (ratio = share)", demo["wall"], "s",
                trained["train_s"], None, None),
    ]  # fmt: skip
