"""The validation report of records files: report.json, report.md, errors.tex, equations.tex and
figures (PNG and PDF).

:func:`build_report` takes a run folder (its ``records*.h5``, else every ``*.h5``) or a single
records file, however it was written (``nmech validate``, torchrun, a user's own loop with the
Recorder), and writes the report beside it.

``errors[kind][form]`` pools the per-channel errors (see :mod:`nmech.validation.compare`) of
every records file that has that kind, with ``max``, ``median`` and ``end`` (the largest error
at the last step); ``runs[label]`` holds the same per records file, with the run info the
recorder stored (``run``: data set, batch size, ...), the GPU path switches that were on, and
the final mini-batch loss when the loop gave one. A file without any symmetry block reports
"no symmetry found" with an empty error section.

``warnings`` says when a comparison tests little: the learning rate changed; a kind's Q did not
move measurably (relative to its magnitude) over the run; the run is shorter than
``RELAXATION_MULTIPLE`` relaxation times 1/(ηλ) of the weight-decay equilibrium, so the
equilibrium prediction meets a transient; the optimizer is read by the fallback, whose exact
form holds by construction.

``equilibrium`` (runs with a scale kind whose optimizer has a derived rotational equilibrium:
AdamW, torch SGD with momentum and weight decay) compares the measured per-channel norms and
angular updates with the prediction (:mod:`nmech.validation.equilibrium`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from nmech.errors import NmechError
from nmech.validation.compare import (
    FLOOR,
    FORMS,
    NOISE,
    EnginePredictor,
    KindComparison,
    Predictor,
)
from nmech.validation.compare import compare as compare_records
from nmech.validation.equilibrium import check as equilibrium_check
from nmech.validation.figures import (
    FIGURE_FORMATS,
    FIGURE_NAMES,
    equilibrium_figure,
    per_parameter_figure,
    symmetry_figure,
)
from nmech.validation.kinds import is_quadratic, ordered
from nmech.validation.optimizers import Settings, settings_from_dict
from nmech.validation.outputs import FileSet
from nmech.validation.records import Records, load_records

REPORT_VERSION = 2
#: What a run folder of ``nmech validate`` holds besides its report: a folder holding any of
#: them holds a run (never written into without --overwrite).
RUN_FILES: tuple[str, ...] = ("run.json", "records*.h5", "records*.h5.tmp", "checkpoint-*.pt",
                              "checkpoint-*.pt.tmp", "discovery-*.json")  # fmt: skip
#: Every file a report may hold, relative to its folder (written as one set: a rebuilt
#: report replaces them all, and never leaves a previous report's file beside new ones).
REPORT_FILES: tuple[str, ...] = (
    "report.json", "report.md", "errors.tex", "equations.tex",
    *(f"figures/{name}.{ext}" for name in FIGURE_NAMES for ext in FIGURE_FORMATS),
)  # fmt: skip
#: A kind "did not move" when max_n |Q_n − Q_0| stays below this fraction of its magnitude.
STILL = 1e-6
#: Runs shorter than this many relaxation times 1/(ηλ) get a warning on the equilibrium.
RELAXATION_MULTIPLE = 3.0


def records_files(target: Path) -> list[Path]:
    """The records files of a run folder (``records*.h5``, else every ``*.h5``), or the file.

    A run folder of ``nmech validate`` (one with run.json) must hold the records file of every
    model its run.json names: a report of part of a run is refused."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise NmechError(f"no such run folder or records file: {target}")
    for model in _run_models(target):
        if not (target / f"records-{model}.h5").is_file():
            raise NmechError(f"{target / 'run.json'} names model {model}, but records-{model}.h5 "
                             "is missing: no report of part of a run (the folder is left as it "
                             "is)")  # fmt: skip
    files = sorted(target.glob("records*.h5")) or sorted(target.glob("*.h5"))
    if not files:
        raise NmechError(f"no records files (*.h5) in {target}")
    return files


def _run_models(folder: Path) -> list[str]:
    """The models named by the run.json of ``folder`` (none without a run.json)."""
    path = folder / "run.json"
    if not path.is_file():
        return []
    try:
        models = json.loads(path.read_text())["preset"]["models"]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise TypeError("preset.models is not a list of names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NmechError(f"{path} is not a run description of this nmech ({exc})") from None
    return models


def _pooled(results: list[KindComparison], form: str) -> dict[str, Any]:
    usable = [r.forms[form] for r in results if r.forms[form].errors is not None]
    errs = [f.measurable()[0] for f in usable]
    ends = [f.measurable()[1] for f in usable]
    noise = sum(len(f.errors) - len(f.measurable()[0]) for f in usable)
    problems = [r.forms[form].problem for r in results if r.forms[form].problem]
    if not errs or not sum(e.size for e in errs):
        nan = float("nan")
        return {"max": nan, "median": nan, "end": nan, "channels": 0, "at_noise_floor": noise,
                "problem": "; ".join(p for p in problems if p)}  # fmt: skip
    e, end = np.concatenate(errs), np.concatenate(ends)
    return {
        "max": float(e.max()), "median": float(np.median(e)), "end": float(end.max()),
        "channels": int(e.size), "floored": sum(r.forms[form].floored for r in results),
        "at_noise_floor": noise,
    }  # fmt: skip


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.2e}"


def _equations(settings: Settings, kinds: list[str], predictor: Predictor) -> str:
    """LaTeX of each kind's derived dynamics (``SymmetryDynamics.latex()``)."""
    engine = predictor if isinstance(predictor, EnginePredictor) else EnginePredictor()
    parts = [f"% {settings.adapter.title} {json.dumps(settings.as_dict())}"]
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
    if not errors:
        rows.append(r"\multicolumn{5}{l}{no symmetry found} \\")
    rows += [r"\hline", r"\end{tabular}"]
    return "\n".join(rows) + "\n"


def _run_line(label: str, run: dict[str, Any]) -> str:
    info = run["run"]
    data = info.get("data_source") or info.get("data") or "not recorded"
    loss = f", final mini-batch loss {run['final_loss']:.3f}" if run["loss_recorded"] else ""
    return (
        f"- **{label}**: {run['steps']} steps, {run['optimizer_title']} {run['optimizer']}, "
        f"data {data}{loss}, lr constant: {run['lr_constant']}, GPU path switches: "
        f"{', '.join(run['switches']) or 'none'}"
    )


def _markdown(report: dict[str, Any], figures: list[str], discoveries: dict[str, str]) -> str:
    lines = ["# nmech validation report", ""]
    lines += [_run_line(label, run) for label, run in report["runs"].items()]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += ["", "## Prediction errors (per channel, max over steps, relative)", ""]
    if not report["errors"]:
        lines += ["No symmetry found: no block was recorded, so there is nothing to compare.", ""]
    else:
        lines += ["| symmetry | form | channels | max | median | at end |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for kind, forms in report["errors"].items():
            for form, e in forms.items():
                lines.append(f"| {kind} | {form} | {e['channels']} | {_fmt(e['max'])} | "
                             f"{_fmt(e['median'])} | {_fmt(e['end'])} |")  # fmt: skip
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
    for model, summary in discoveries.items():
        lines += [f"## Symmetry discovery ({model})", "", "```", summary, "```", ""]
    if figures:
        lines += ["## Figures (PDF beside each PNG)", ""] + [f"![{f}]({f})" for f in figures]
    lines += ["", "Derived equations: `equations.tex`; table: `errors.tex`.", ""]
    return "\n".join(lines)


def _run_summary(rec: Records) -> dict[str, Any]:
    loss = rec.train.get("loss", np.array([]))
    info = json.loads(rec.attrs.get("run", "{}"))
    switches = info.get("switches") or {}
    if isinstance(switches, str):  # device_check writes its spec, e.g. "channels-last+bf16"
        switches = {n: True for n in switches.split("+") if n != "base"}
    settings = settings_from_dict(rec.optimizer)
    recorded = rec.loss_recorded
    return {
        "records": rec.path.name, "steps": rec.steps, "optimizer": rec.optimizer,
        "optimizer_title": settings.adapter.title, "run": info,
        "switches": sorted(n for n, on in switches.items() if on),
        "lr_constant": bool(rec.attrs["lr_constant"]), "loss_recorded": recorded,
        "final_loss": float(loss[-1]) if recorded else None,
        "first_loss": float(loss[0]) if recorded else None,
    }  # fmt: skip


def _warnings(label: str, rec: Records, comps: dict[str, KindComparison]) -> list[str]:
    """What this run's comparison cannot test (module docstring)."""
    out = []
    settings = settings_from_dict(rec.optimizer)
    if not rec.attrs["lr_constant"]:
        out.append(f"{label}: the learning rate changed; the predictions assume it constant")
    if getattr(settings.adapter, "exact_by_construction", False):
        out.append(
            f"{label}: {settings.adapter.title}: u_n is measured from the step, so the exact "
            "form holds by construction (it checks the records, not the optimizer); the "
            "continuous form is the test"
        )
    for kind, comp in comps.items():
        noise = comp.forms["exact"].noise if "exact" in comp.forms else None
        if noise is not None and noise.any():
            out.append(
                f"{label}: {kind}: {int(noise.sum())} blocks stay below {NOISE:g} of the "
                "kind's largest magnitude (float32 round-off only, e.g. a zero-initialised "
                "key bias): left out of the error summary"
            )
        q, mag = comp.measured.Q, np.abs(comp.measured.Q_abs).max(axis=0)
        moved = np.abs(q - q[0]).max(axis=0) / np.maximum(mag, np.finfo(float).tiny)
        if q.shape[0] > 1 and moved.max() < STILL:
            out.append(
                f"{label}: {kind}: Q moved by at most {moved.max():.1e} of its magnitude in "
                f"{rec.steps} steps; the comparison tests nothing measurable"
            )
    values = settings.values()
    decay = values.get("eta", 0.0) * values.get("lam", 0.0)
    if "scale" in comps and decay > 0 and rec.steps < RELAXATION_MULTIPLE / decay:
        out.append(
            f"{label}: {rec.steps} steps are fewer than {RELAXATION_MULTIPLE:g} relaxation "
            f"times 1/(eta*lam) = {1 / decay:.0f} steps: the rotational equilibrium is not "
            "reached, its prediction is not tested"
        )
    return out


def _equilibria(
    loaded: list[tuple[str, Records, dict[str, KindComparison]]], predictor: Predictor
) -> dict[str, Any]:
    """Measured vs predicted equilibrium of every run with scale channels and a derived
    equilibrium for its optimizer."""
    engine = predictor if isinstance(predictor, EnginePredictor) else EnginePredictor()
    out = {}
    for label, rec, comps in loaded:
        if "scale" not in comps:
            continue
        settings = settings_from_dict(rec.optimizer)
        try:
            eq = engine.dynamics("scale", settings).equilibrium
        except Exception:  # no dynamics for this rule: no equilibrium to show
            eq = None
        found = None if eq is None else equilibrium_check(comps["scale"].measured, settings, eq)
        if found is not None:
            out[label] = found
    return out


def _labels(records: list[Records]) -> list[str]:
    """The model name of each file, made unique with the file name where it repeats."""
    names = [str(r.attrs.get("model", r.path.stem)) for r in records]
    return [n if names.count(n) == 1 else f"{n} ({r.path.name})" for n, r in zip(names, records)]


def build_report(
    target: str | Path, predictor: Predictor | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Compare every records file of ``target`` (a folder or one file) and write the report
    files to ``out`` (default: the folder, or the file's folder)."""
    target = Path(target)
    folder = Path(out) if out is not None else (target.parent if target.is_file() else target)
    predictor = predictor or EnginePredictor()
    records = [load_records(p) for p in records_files(target)]
    for rec in records:
        if rec.steps < 1:
            raise NmechError(f"{rec.path} holds no completed step")
    runs: dict[str, Any] = {}
    by_kind: dict[str, list[KindComparison]] = {}
    loaded: list[tuple[str, Records, dict[str, KindComparison]]] = []
    warnings: list[str] = []
    for label, rec in zip(_labels(records), records, strict=True):
        comps = compare_records(rec, predictor)
        runs[label] = _run_summary(rec)
        runs[label]["errors"] = {
            k: {f: c.forms[f].summary() for f in FORMS} for k, c in comps.items()
        }
        for kind, comp in comps.items():
            by_kind.setdefault(kind, []).append(comp)
        loaded.append((label, rec, comps))
        warnings += _warnings(label, rec, comps)
    kinds = ordered(by_kind)
    errors = {k: {f: _pooled(by_kind[k], f) for f in FORMS} for k in kinds}
    report: dict[str, Any] = {
        "format_version": REPORT_VERSION,
        "errors": errors,
        "runs": runs,
        "warnings": warnings,
        "normalisation": (
            "per channel, max over steps of |pred - meas| divided by max(max |Q|, "
            f"{FLOOR:g} * max magnitude), magnitude = sum theta_i^2 (quadratic kinds) or "
            "sum |theta_i| (linear kinds); pooled over all records files"
        ),
    }
    discoveries = {}
    for label, rec, _ in loaded:
        path = rec.path.parent / f"discovery-{rec.attrs.get('model', '')}.json"
        if path.is_file():
            discoveries[label] = json.loads(path.read_text()).get("summary", "")
    settings = settings_from_dict(records[0].optimizer)
    with FileSet(folder, REPORT_FILES) as files:
        stage = files.staging
        figures = _figures(loaded, stage / "figures", predictor, report)
        names = [str(f.relative_to(stage)) for f in figures]
        report["figures"] = names
        (stage / "report.json").write_text(json.dumps(report, indent=2, default=str))
        (stage / "report.md").write_text(_markdown(report, names, discoveries))
        (stage / "errors.tex").write_text(_latex_table(errors))
        (stage / "equations.tex").write_text(_equations(settings, kinds, predictor))
        files.commit()
    return report


def _figures(
    loaded: list[tuple[str, Records, dict[str, KindComparison]]],
    figs_dir: Path,
    predictor: Predictor,
    report: dict[str, Any],
) -> list[Path]:
    """The figures of a report (PNG paths; a PDF is written beside each)."""
    if not any(comps for _, _, comps in loaded):
        return []
    figs_dir.mkdir(exist_ok=True)
    panels: dict[str, tuple[str, KindComparison]] = {}
    for label, _, comps in loaded:
        for kind, comp in comps.items():
            panels.setdefault(kind, (label, comp))
    figures = [symmetry_figure(panels, figs_dir / "symmetries.png")]
    quadratic = [x for x in loaded if any(is_quadratic(k) for k in x[2])]
    ranked = sorted(quadratic, key=lambda x: "scale" not in x[2])
    if ranked:  # prefer a run with scale blocks (BatchNorm): its single weights wander most
        _, rec0, comps0 = ranked[0]
        quad = next(comps0[k] for k in ordered(comps0) if is_quadratic(k))
        fig = per_parameter_figure(rec0, quad, figs_dir / "per_parameter.png")
        if fig is not None:
            figures.append(fig)
    equilibria = _equilibria(loaded, predictor)
    if equilibria:
        report["equilibrium"] = {model: eq.summary() for model, eq in equilibria.items()}
        model, eq = next(iter(equilibria.items()))
        short = [w for w in report["warnings"] if w.startswith(f"{model}:") and "relaxation" in w]
        figures.append(equilibrium_figure(eq, model, figs_dir / "equilibrium.png", bool(short)))
    return figures
