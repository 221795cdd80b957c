import json
import subprocess
import sys

import pytest

from nmech.cli import main
from nmech.errors import NmechError


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "gpu-max"], "unknown preset"),
        (["--steps", "0"], "--steps must be an integer in [1, "),
        (["--data-dir", "/nonexistent/tiny"], "data folder not found"),
        (["--momentum", "1.5"], "--momentum"),
    ],
)
def test_validate_bad_input_exits_2(tmp_path, capsys, argv, message):
    assert main(["validate", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_report_of_missing_folder_is_an_error(tmp_path):
    from nmech.validation.report import build_report

    with pytest.raises(NmechError, match="no records files"):
        build_report(tmp_path)
    with pytest.raises(NmechError, match="no such run folder or records file"):
        build_report(tmp_path / "missing")


def test_cli_modules_do_not_import_torch():
    code = "import sys, nmech.cli.validate, nmech.cli.report\n"
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_validate_then_report_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["validate", "--preset", "cpu-demo", "--steps", "4", "--batch-size", "8"]
    assert main([*argv, "--nesterov", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "report.md" in printed and "symmetries.png" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["errors"]) == {"scale", "rescale", "translation"}
    assert report["runs"]["vgg16_bn"]["optimizer"]["nesterov"] is True
    for name in ("report.md", "errors.tex", "equations.tex", "figures/per_parameter.png"):
        assert (out / name).stat().st_size > 0
    (out / "report.json").unlink()
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["errors"].keys() == report["errors"].keys()


def test_device_check_runs_on_cpu(tmp_path):
    from nmech.cli.device_check import main as device_main

    argv = ["--out", str(tmp_path), "--steps", "3", "--batch-size", "8", "--width", "0.125"]
    assert device_main([*argv, "--device", "cpu", "--per-class", "2"]) == 0
    result = json.loads((tmp_path / "device_check.json").read_text())
    assert result["steps"] == 3 and result["overhead_ratio"] > 0
    assert result["blocks"]["scale"] == 528 and "exact" in result["errors"]["scale"]


def test_device_check_module_keeps_its_command(tmp_path):
    """``python -m nmech.validation.device_check`` (the brief's command) runs the CLI."""
    cmd = [sys.executable, "-m", "nmech.validation.device_check", "--out", str(tmp_path),
           "--device", "cpu", "--switches", "fp8"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("nmech: error: unknown switch")


def test_device_check_adamw_on_cpu(tmp_path):
    from nmech.cli.device_check import main as device_main

    argv = ["--out", str(tmp_path), "--steps", "2", "--batch-size", "8", "--width", "0.0625"]
    assert device_main([*argv, "--device", "cpu", "--per-class", "2", "--optimizer", "adamw"]) == 0
    result = json.loads((tmp_path / "device_check.json").read_text())
    assert result["optimizer"] == "adamw" and result["overhead_ratio"] > 0
    assert all(f["exact"]["max"] < 1e-4 for f in result["errors"].values()), result["errors"]
