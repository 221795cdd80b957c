"""The validation report of a run folder: report.json, report.md, errors.tex, equations.tex, PNGs.

``equilibrium`` (runs with a scale kind whose optimizer has a derived rotational equilibrium:
AdamW, torch SGD with momentum and weight decay) compares the measured per-channel norms and
angular updates with the prediction (:mod:`nmech.validation.equilibrium`, figure
``equilibrium.png``).

``errors[kind][form]`` pools the per-channel errors (see :mod:`nmech.validation.compare`) of
every records file in the folder that has that kind, with ``max``, ``median`` and ``end`` (the
largest error at the last step); ``runs[model]`` holds the same per records file, with the
run info the recorder stored (``run``) and the GPU path switches that were on (``switches``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from nmech.errors import NmechError
from nmech.validation.compare import FLOOR, FORMS, EnginePredictor, KindComparison, Predictor
from nmech.validation.compare import compare as compare_records
from nmech.validation.equilibrium import check as equilibrium_check
from nmech.validation.figures import equilibrium_figure, per_parameter_figure, symmetry_figure
from nmech.validation.optimizers import Settings, settings_from_dict
from nmech.validation.records import Records, load_records

KIND_ORDER = ("scale", "rescale", "translation")
REPORT_VERSION = 1


def records_files(folder: Path) -> list[Path]:
    """The ``records-*.h5`` files of a run folder (error if there are none)."""
    if not folder.is_dir():
        raise NmechError(f"no such run folder: {folder}")
    files = sorted(folder.glob("records-*.h5"))
    if not files:
        raise NmechError(f"no records-*.h5 files in {folder}")
    return files


def _pooled(results: list[KindComparison], form: str) -> dict[str, Any]:
    errs = [r.forms[form].errors for r in results if r.forms[form].errors is not None]
    ends = [r.forms[form].end_errors for r in results if r.forms[form].end_errors is not None]
    problems = [r.forms[form].problem for r in results if r.forms[form].problem]
    if not errs:
        nan = float("nan")
        return {
            "max": nan,
            "median": nan,
            "end": nan,
            "channels": 0,
            "problem": "; ".join(problems),
        }
    e, end = np.concatenate(errs), np.concatenate(ends)
    return {
        "max": float(e.max()), "median": float(np.median(e)), "end": float(end.max()),
        "channels": int(e.size), "floored": sum(r.forms[form].floored for r in results),
    }  # fmt: skip


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.2e}"


def _optimizer_name(settings: dict[str, Any]) -> str:
    return settings_from_dict(settings).adapter.title


def _equations(settings: Settings, kinds: list[str], predictor: Predictor) -> str:
    """LaTeX of each kind's derived dynamics (``SymmetryDynamics.latex()``)."""
    engine = predictor if isinstance(predictor, EnginePredictor) else EnginePredictor()
    name = _optimizer_name(settings.as_dict())
    parts = [f"% {name} {json.dumps(settings.as_dict())}"]
    for kind in kinds:
        try:
            body = engine.dynamics(kind, settings).latex()
        except Exception as exc:  # the report is still useful without the equations
            body = f"% derivation unavailable: {type(exc).__name__}: {exc}"
        parts.append(f"% --- {kind} ---\n{body}")
    return "\n\n".join(parts) + "\n"


def _latex_table(errors: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = [
        r"\begin{tabular}{llrrr}", r"\hline",
        r"symmetry & form & max & median & at end \\", r"\hline",
    ]  # fmt: skip
    for kind in errors:
        for form in FORMS:
            e = errors[kind][form]
            cells = " & ".join(
                _fmt(e[k]).replace("e", r"\mathrm{e}") for k in ("max", "median", "end")
            )
            rows.append(f"{kind} & {form} & ${cells.replace(' & ', '$ & $')}$ \\\\")
    rows += [r"\hline", r"\end{tabular}"]
    return "\n".join(rows) + "\n"


def _markdown(report: dict[str, Any], figures: list[str]) -> str:
    lines = ["# nmech validation report", ""]
    for model, run in report["runs"].items():
        lines.append(
            f"- **{model}**: {run['steps']} steps, {_optimizer_name(run['optimizer'])} "
            f"{run['optimizer']}, final mini-batch loss "
            f"{run['final_loss']:.3f}, lr constant: {run['lr_constant']}, GPU path switches: "
            f"{', '.join(run['switches']) or 'none'}"
        )
        if not run["lr_constant"]:
            lines.append("  - WARNING: the learning rate changed; predictions assume it constant.")
    lines += ["", "## Prediction errors (per channel, max over steps, relative)", ""]
    lines += ["| symmetry | form | channels | max | median | at end |", "|---|---|---|---|---|---|"]
    for kind, forms in report["errors"].items():
        for form, e in forms.items():
            row = f"| {kind} | {form} | {e['channels']} | {_fmt(e['max'])} | {_fmt(e['median'])} "
            lines.append(row + f"| {_fmt(e['end'])} |")
            if e.get("problem"):
                lines.append(f"|  | {form} unavailable: {e['problem']} | | | | |")
    lines += ["", f"Normalisation: {report['normalisation']}", ""]
    for model, eq in report.get("equilibrium", {}).items():
        lines += [
            f"## Rotational equilibrium ({model}, scale channels, last {eq['tail_steps']} steps)",
            "",
            f"- angular update: predicted {eq['angular_update_predicted']:.3e} rad/step, "
            f"measured median {eq['angular_update_measured_median']:.3e}",
            f"- norm / predicted equilibrium norm: median {eq['norm_ratio_median']:.3f} "
            f"(10-90%: {eq['norm_ratio_p10']:.3f}-{eq['norm_ratio_p90']:.3f}), "
            f"{eq['channels']} channels",
            "",
        ]
    lines += ["## Figures", ""]
    lines += [f"![{f}]({f})" for f in figures]
    lines += ["", "Derived equations: `equations.tex`; table: `errors.tex`.", ""]
    return "\n".join(lines)


def _run_summary(rec: Records) -> dict[str, Any]:
    loss = rec.train.get("loss", np.array([]))
    info = json.loads(rec.attrs.get("run", "{}"))
    switches = info.get("switches") or {}
    if isinstance(switches, str):  # device_check writes its spec, e.g. "channels-last+bf16"
        switches = {n: True for n in switches.split("+") if n != "base"}
    return {
        "records": rec.path.name, "steps": rec.steps, "optimizer": rec.optimizer,
        "run": info, "switches": sorted(n for n, on in switches.items() if on),
        "lr_constant": bool(rec.attrs["lr_constant"]),
        "final_loss": float(loss[-1]) if len(loss) else float("nan"),
        "first_loss": float(loss[0]) if len(loss) else float("nan"),
    }  # fmt: skip


def _equilibria(
    loaded: list[tuple[Records, dict[str, KindComparison]]], predictor: Predictor
) -> dict[str, Any]:
    """Measured vs predicted equilibrium of every run with scale channels and a derived
    equilibrium for its optimizer."""
    engine = predictor if isinstance(predictor, EnginePredictor) else EnginePredictor()
    out = {}
    for rec, comps in loaded:
        if "scale" not in comps:
            continue
        settings = settings_from_dict(rec.optimizer)
        eq = engine.dynamics("scale", settings).equilibrium
        found = None if eq is None else equilibrium_check(comps["scale"].measured, settings, eq)
        if found is not None:
            out[str(rec.attrs.get("model", rec.path.stem))] = found
    return out


def build_report(folder: str | Path, predictor: Predictor | None = None) -> dict[str, Any]:
    """Compare every records file in ``folder`` and write the report files there."""
    folder = Path(folder)
    predictor = predictor or EnginePredictor()
    runs: dict[str, Any] = {}
    by_kind: dict[str, list[KindComparison]] = {}
    loaded: list[tuple[Records, dict[str, KindComparison]]] = []
    for path in records_files(folder):
        rec = load_records(path)
        if rec.steps < 1:
            raise NmechError(f"{path} holds no completed step")
        comps = compare_records(rec, predictor)
        model = str(rec.attrs.get("model", path.stem))
        runs[model] = _run_summary(rec)
        runs[model]["errors"] = {
            k: {f: c.forms[f].summary() for f in FORMS} for k, c in comps.items()
        }
        for kind, comp in comps.items():
            by_kind.setdefault(kind, []).append(comp)
        loaded.append((rec, comps))
    kinds = [k for k in KIND_ORDER if k in by_kind]
    errors = {k: {f: _pooled(by_kind[k], f) for f in FORMS} for k in kinds}
    report = {
        "format_version": REPORT_VERSION,
        "errors": errors,
        "runs": runs,
        "normalisation": (
            "per channel, max over steps of |pred - meas| divided by max(max |Q|, "
            f"{FLOOR:g} * max magnitude), magnitude = sum theta_i^2 (scale, rescale) or "
            "sum |theta_i| (translation); pooled over all records files"
        ),
    }
    figs_dir = folder / "figures"
    figs_dir.mkdir(exist_ok=True)
    panels = {}
    for rec, comps in loaded:
        for kind, comp in comps.items():
            panels.setdefault(kind, (str(rec.attrs.get("model")), comp))
    figures = [symmetry_figure(panels, figs_dir / "symmetries.png")]
    ranked = sorted(loaded, key=lambda rc: ("scale" not in rc[1], "rescale" not in rc[1]))
    rec0, comps0 = ranked[0]  # prefer a BatchNorm run: its single weights wander the most
    quad = next((comps0[k] for k in ("scale", "rescale") if k in comps0), None)
    if quad is not None:
        figures.append(per_parameter_figure(rec0, quad, figs_dir / "per_parameter.png"))
    equilibria = _equilibria(loaded, predictor)
    if equilibria:
        report["equilibrium"] = {model: eq.summary() for model, eq in equilibria.items()}
        model, eq = next(iter(equilibria.items()))
        figures.append(equilibrium_figure(eq, model, figs_dir / "equilibrium.png"))
    names = [str(f.relative_to(folder)) for f in figures if f is not None]
    report["figures"] = names
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (folder / "report.md").write_text(_markdown(report, names))
    (folder / "errors.tex").write_text(_latex_table(errors))
    settings = settings_from_dict(rec0.optimizer)
    (folder / "equations.tex").write_text(_equations(settings, kinds, predictor))
    return report
