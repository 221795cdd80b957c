"""GPU check: throughput with and without the recorder, peak memory and prediction errors per
GPU path switch (JSON).

    python -m nmech.validation.device_check --out DIR [--steps 50] [--batch-size 256]
        [--width 1.0] [--model vgg16_bn] [--optimizer sgd|adamw] [--device auto] [--per-class 20]
        [--switches base channels-last bf16 compile channels-last+bf16+compile]

(the command line is :mod:`nmech.cli.device_check`; this module is the check itself.)

Paper shape on synthetic data (64x64, 200 classes, batch 256, torch SGD lr 0.1, momentum 0.9,
weight decay 5e-4; or ``--optimizer adamw``: torch AdamW lr 0.01, weight decay 0.5, whose
recorder also forms the update direction u_n). A *switch spec* is ``base`` or switches joined by ``+``:

* ``channels-last``: model and every input batch in ``torch.channels_last`` memory format.
* ``bf16``: forward and loss under ``torch.autocast(device, dtype=torch.bfloat16)``; parameters,
  gradients and the optimizer's update stay float32, so the recorder measures what the optimizer does.
* ``compile``: the forward runs through ``torch.compile(model)``; the recorder hooks the
  underlying module (same parameter objects). Compilation happens in the warm-up steps, whose
  wall time is reported as ``warmup_s``.

Per spec, from the same seed: build the model, discover its symmetry blocks on the first batch
(float32, before any switch), run ``WARMUP`` steps, time ``steps`` steps without the recorder
(every phase is :func:`nmech.validation.train.train` with the spec's switches),
then restore the initial parameters and buffers in place (a compiled forward keeps its graphs),
a fresh optimizer and the same data stream, and time ``steps`` steps with the recorder (records and
report in ``DIR/<spec>/``): the recorded trajectory starts where discovery checked the blocks. Reported per spec:
images/s without and with recording, overhead = (images/s without) / (images/s with), the
projected wall time of the paper's 100 epochs, ``PAPER_STEPS`` = 39,100 steps of batch 256,
at the recorded rate (``PAPER_STEPS * 256 / images_per_s_recorded``), peak GPU memory over the
recorded phase (``torch.cuda.max_memory_allocated``; None on CPU, where the process's peak RSS
is given instead), and the report's prediction errors (exact and continuous forms, per kind).
The top level of ``DIR/device_check.json`` repeats the first spec's figures (``base`` by
default) under the names earlier versions used.

Default specs: all five above on CUDA; ``base channels-last bf16`` on CPU (``compile`` on CPU
builds C++ kernels for minutes; name it to include it).
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from pathlib import Path
from typing import Any

from nmech.errors import NmechError

SWITCHES: tuple[str, ...] = ("channels-last", "bf16", "compile")
DEFAULT_SPECS_CUDA: tuple[str, ...] = (
    "base", "channels-last", "bf16", "compile", "channels-last+bf16+compile",
)  # fmt: skip
DEFAULT_SPECS_CPU: tuple[str, ...] = ("base", "channels-last", "bf16")
PAPER_STEPS = 39_100
PAPER_BATCH = 256
WARMUP = 3


def parse_spec(spec: str) -> frozenset[str]:
    """The switches of ``spec`` (``base`` is the empty set); unknown names are an error."""
    if spec == "base":
        return frozenset()
    names = spec.split("+")
    unknown = [n for n in names if n not in SWITCHES]
    if unknown or not names:
        raise NmechError(
            f"unknown switch {', '.join(unknown) or spec!r}; use base or a '+'-joined subset of "
            f"{', '.join(SWITCHES)}"
        )
    return frozenset(names)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_spec(spec: str, model_name: str, steps_n: int, preset: Any, data: Any, device: Any,
              out: Path) -> dict[str, Any]:  # fmt: skip
    """Warm-up, plain and recorded phases of one switch spec (module docstring)."""
    import torch

    from nmech.validation.datasets import batches as make_batches
    from nmech.validation.experiment import build_optimizer, prepare_run
    from nmech.validation.recorder import Recorder
    from nmech.validation.report import build_report
    from nmech.validation.train import prepare_model, train

    switches = parse_spec(spec)
    channels_last = "channels-last" in switches
    run = prepare_run(model_name, preset, data, device, None)
    model, found, batches = run.model, run.found, run.batches
    assert found is not None
    forward = prepare_model(model, channels_last, "compile" in switches)
    initial = copy.deepcopy(model.state_dict())
    opt = run.optimizer

    def steps(n: int, rec: Recorder | None) -> float:
        _sync(device)
        start = time.perf_counter()
        train(model, opt, batches, n, rec, progress=False, desc=spec, forward=forward,
              autocast_dtype=torch.bfloat16 if "bf16" in switches else None,
              channels_last=channels_last, loss_fn=run.loss_fn)  # fmt: skip
        return time.perf_counter() - start  # train() synchronises a CUDA device at its end

    warmup_s = steps(WARMUP, None)
    plain_s = steps(steps_n, None)
    # the recorded phase restarts from the initial state, where discovery checked the blocks
    # (in place: a compiled forward keeps its graphs), with a fresh optimizer and data stream
    model.load_state_dict(initial)
    opt = build_optimizer(preset, model)
    batches = make_batches(preset.data, data, preset, device)
    batches.next()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    folder = out / spec
    info = {**run.info, "switches": spec}
    path = folder / f"records-{model_name}.h5"
    rec = Recorder(model, found, path, opt, min(100, steps_n), info, model_name)
    try:
        recorded_s = steps(steps_n, rec)
    except BaseException:
        rec.abort()
        raise
    rec.close()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    report = build_report(folder)
    images = steps_n * batches.batch_size
    ips_plain, ips_rec = images / plain_s, images / recorded_s
    return {
        "switches": sorted(switches), "warmup_s": warmup_s,
        "steps_per_s_plain": steps_n / plain_s, "steps_per_s_recorded": steps_n / recorded_s,
        "images_per_s_plain": ips_plain, "images_per_s_recorded": ips_rec,
        "overhead_ratio": ips_plain / ips_rec,
        "projected_100_epochs_s": PAPER_STEPS * PAPER_BATCH / ips_rec,
        "projected_100_epochs_plain_s": PAPER_STEPS * PAPER_BATCH / ips_plain,
        "peak_gpu_memory_bytes": peak,
        "blocks": {k: found.blocks(k) for k in ("scale", "rescale", "translation")},
        "failed_blocks": len(found.failures),
        "errors": report["errors"],
    }  # fmt: skip


def check(out: str | Path, steps: int = 50, batch_size: int = 256, width: float = 1.0,
          model: str = "vgg16_bn", optimizer: str = "sgd", device_name: str = "auto",
          per_class: int = 20, specs: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run every switch spec and return the JSON-ready result (module docstring)."""
    import torch

    from nmech.validation.experiment import load_data
    from nmech.validation.presets import get_preset, with_optimizer
    from nmech.validation.train import resolve_device

    if steps < 1 or batch_size < 1 or per_class < 1:
        raise NmechError("--steps, --batch-size and --per-class must be positive")
    if model not in ("vgg16_bn", "vgg16"):
        raise NmechError(f"the device check runs vgg16_bn or vgg16, not {model!r}")
    device = resolve_device(device_name)
    specs = specs or list(DEFAULT_SPECS_CUDA if device.type == "cuda" else DEFAULT_SPECS_CPU)
    for spec in specs:
        parse_spec(spec)
    preset = with_optimizer(get_preset("paper-vgg16-bn"), optimizer).with_overrides(
        models=(model,), batch_size=batch_size, width=width, per_class=per_class,
    )  # fmt: skip
    data = load_data(preset, None)
    folder = Path(out)
    results = {spec: _run_spec(spec, model, steps, preset, data, device, folder) for spec in specs}
    first = results[specs[0]]
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "model": model, "width": width,
        "optimizer": preset.optimizer,
        "batch_size": min(preset.batch_size, len(data.y)), "steps": steps,
        "paper_projection": f"{PAPER_STEPS} steps x batch {PAPER_BATCH} at the recorded rate",
        "steps_per_s_plain": first["steps_per_s_plain"],
        "steps_per_s_recorded": first["steps_per_s_recorded"],
        "overhead_ratio": first["overhead_ratio"],
        "peak_memory_bytes_recorded": first["peak_gpu_memory_bytes"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "blocks": first["blocks"], "failed_blocks": first["failed_blocks"],
        "errors": first["errors"], "switches": results,
    }  # fmt: skip


if __name__ == "__main__":  # python -m nmech.validation.device_check: the command line
    from nmech.cli.device_check import main

    sys.exit(main())
