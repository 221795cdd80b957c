"""DDP under torchrun: two gloo ranks on CPU train a tiny VGG-16-BN; rank 0 alone records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nmech.validation.records import load_records

pytest.importorskip("torch.distributed")

STEPS = 6
BATCH = 8


def _launcher() -> list[str]:
    """``torchrun`` next to this interpreter, else ``python -m torch.distributed.run``."""
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = _torchrun(out, "--steps", str(STEPS))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def _torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    """Two gloo ranks of the torchrun entry on a tiny VGG-16-BN writing to ``out``."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    cmd = [
        *_launcher(), "--standalone", "--nproc_per_node=2",
        "-m", "nmech.cli.torchrun", "--preset", "cpu-demo", "--out", str(out),
        "--batch-size", str(BATCH), "--width", "0.0625", "--per-class", "8",
        "--models", "vgg16_bn", "--device", "cpu", "--no-progress", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_ddp_run_writes_records_once(ddp_run):
    out, proc = ddp_run
    assert sorted(p.name for p in out.glob("records-*.h5")) == ["records-vgg16_bn.h5"]
    rec = load_records(out / "records-vgg16_bn.h5")
    assert rec.steps == STEPS
    run = json.loads(rec.attrs["run"])
    assert run["world_size"] == 2 and run["shard_batch"] == BATCH // 2
    assert rec.kinds["scale"].Q.shape[0] == STEPS + 1
    assert rec.train["loss"].shape == (STEPS,)
    assert proc.stdout.count('"world_size": 2') == 1  # the summary is printed by rank 0 only
    summary = json.loads((out / "distributed.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["runs"][0]["parameter_spread"] == 0.0


def test_ddp_exact_recursion_meets_error_bar(ddp_run):
    out, _ = ddp_run
    report = json.loads((out / "report.json").read_text())
    assert set(report["errors"]) == {"scale", "rescale", "translation"}
    for kind, forms in report["errors"].items():
        assert forms["exact"]["channels"] > 0, kind
        assert forms["exact"]["max"] < 1e-4, (kind, forms["exact"])


def test_sharded_batches_partition_the_global_batch():
    import torch

    from nmech.validation.data import DeviceBatches, synthetic
    from nmech.validation.distributed import ShardedBatches

    data = synthetic(3, 4, 32, seed=0)
    full = DeviceBatches(data, 6, "cpu", seed=1).next()
    shards = [ShardedBatches(DeviceBatches(data, 6, "cpu", seed=1), r, 2).next() for r in (0, 1)]
    assert torch.equal(torch.cat([s[0] for s in shards]), full[0])
    assert torch.equal(torch.cat([s[1] for s in shards]), full[1])


def test_uneven_global_batch_is_an_error():
    from nmech.errors import NmechError
    from nmech.validation.data import DeviceBatches, synthetic
    from nmech.validation.distributed import ShardedBatches

    with pytest.raises(NmechError, match="split evenly"):
        ShardedBatches(DeviceBatches(synthetic(3, 4, 32), 5, "cpu"), 0, 2)


def test_divergence_stops_every_rank(tmp_path):
    """Rank 0 finds the divergence at a flush; the broadcast verdict stops rank 1 there too,
    each with a one-line error, instead of leaving it waiting in the next all-reduce."""
    out = tmp_path / "run"
    proc = _torchrun(out, "--steps", "8", "--lr", "1e6", "--flush-every", "2", "--no-report")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("nmech: error: rank")]
    assert len(errors) == 2, proc.stderr[-3000:]
    assert all("diverged at step" in line for line in errors), errors
    rec = load_records(out / "records-vgg16_bn.h5")
    assert rec.attrs["status"] == "diverged" and rec.steps < 8


def test_ddp_adamw_meets_error_bar(tmp_path):
    """--optimizer adamw on every rank: the recorded u_n closes the exact recursion as in the
    single-process run, and the ranks' parameters stay identical."""
    out = tmp_path / "run"
    proc = _torchrun(out, "--steps", str(STEPS), "--optimizer", "adamw")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["runs"]["vgg16_bn"]["optimizer"]["optimizer"] == "adamw"
    for kind, forms in report["errors"].items():
        assert forms["exact"]["channels"] > 0 and forms["exact"]["max"] < 1e-4, (kind, forms)
    summary = json.loads((out / "distributed.json").read_text())
    assert summary["runs"][0]["parameter_spread"] == 0.0


def test_ddp_refuses_sgd_options_with_adamw(tmp_path):
    proc = _torchrun(tmp_path / "run", "--steps", "2", "--optimizer", "adamw", "--momentum", "0.5")
    assert proc.returncode != 0
    assert "nmech: error: --momentum does not apply to --optimizer adamw" in proc.stderr


def test_ddp_never_overwrites_a_finished_run(ddp_run):
    """Every rank checks --out before the process group forms (before any rank writes): a
    second launch into a finished run is refused by both ranks (one line each; the launcher
    adds its own failure summary) and leaves the run's files as they were."""
    import hashlib

    out, _ = ddp_run
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir() if p.is_file()}  # fmt: skip
    proc = _torchrun(out, "--steps", "2")
    assert proc.returncode != 0
    refusals = [ln for ln in proc.stderr.splitlines() if "already holds a validation run" in ln]
    assert len(refusals) == 2 and all(ln.startswith("nmech: error: --out ") for ln in refusals)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir() if p.is_file()}  # fmt: skip
    assert after == digest
