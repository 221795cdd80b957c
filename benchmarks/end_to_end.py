"""End-to-end benchmark: ``nmech validate --preset cpu-demo`` as a user runs it.

What is measured, each in its own fresh Python process (so imports, data synthesis, discovery,
training with recording of both models, the comparison, figures and the report are all in):

* wall time of ``nmech validate --preset cpu-demo --device cpu --no-progress --out TMP``
  (quick mode adds ``--steps 30``), from process start to exit, against a fixed budget of
  ``BUDGET_S`` = 180 s (three minutes on a 2-core laptop); ratio = budget / wall.
* that run's peak resident memory, ``VmHWM`` of /proc/self/status (else ``ru_maxrss``) read by the run's
  own process as it exits (so no other process of the suite counts), against ``MEMORY_BUDGET_MIB``
  = 2048 MiB; ratio = budget / peak.
* the run's pure training time: a second process trains the same models of the same preset for
  the same steps with the same loop (:func:`nmech.validation.train.train`), without recorder,
  discovery or report; the record gives value = end-to-end wall, baseline = summed training
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
print("NMECH_BENCH " + json.dumps({"rc": rc, "maxrss_kib": peak_kib,
                                   "inner_s": time.perf_counter() - t0}))
sys.exit(rc)
"""

_TRAIN = """
import json, sys
import torch
from dataclasses import replace
from nmech.validation.data import DeviceBatches
from nmech.validation.experiment import load_data, total_steps
from nmech.validation.models import build_model
from nmech.validation.presets import get_preset
from nmech.validation.train import train
steps = json.loads(sys.argv[1])
preset = get_preset("cpu-demo")
if steps is not None:
    preset = replace(preset, steps=steps, epochs=None)
data = load_data(preset, None)
seconds = 0.0
for name in preset.models:
    torch.manual_seed(preset.seed)
    model = build_model(name, data.num_classes, preset.image_size, preset.width)
    batches = DeviceBatches(data, preset.batch_size, "cpu", seed=preset.seed)
    batches.next()  # the batch discovery would take
    opt = torch.optim.SGD(model.parameters(), lr=preset.lr, momentum=preset.momentum,
                          dampening=preset.dampening, weight_decay=preset.weight_decay,
                          nesterov=preset.nesterov)
    seconds += train(model, opt, batches, total_steps(preset, batches), progress=False).seconds
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


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Records ``{name, value, unit, baseline, ratio, target, met}`` (ratio = baseline / value)."""
    steps = QUICK_STEPS if quick else None
    label = f"cpu-demo --steps {steps}" if quick else "cpu-demo"
    with tempfile.TemporaryDirectory(prefix="nmech-bench-e2e-") as tmp:
        argv = ["validate", "--preset", "cpu-demo", "--device", "cpu", "--no-progress"]
        argv += ["--out", str(Path(tmp) / "run")]
        if steps is not None:
            argv += ["--steps", str(steps)]
        wall, info = _child(_VALIDATE, argv)
    _, trained = _child(_TRAIN, steps)
    peak_mib = info["maxrss_kib"] / 1024.0
    return [
        _record(f"end-to-end nmech validate {label} wall", wall, "s", BUDGET_S,
                f"< {BUDGET_S:g} s", wall < BUDGET_S),
        _record(f"end-to-end nmech validate {label} peak RSS", peak_mib, "MiB",
                MEMORY_BUDGET_MIB, f"< {MEMORY_BUDGET_MIB:g} MiB", peak_mib < MEMORY_BUDGET_MIB),
        _record(f"end-to-end {label} wall vs its bare training (ratio = share)", wall, "s",
                trained["train_s"], None, None),
    ]  # fmt: skip
