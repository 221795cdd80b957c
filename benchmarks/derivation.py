"""Derivation benchmark: wall time of the dimension-free engine, and its speed-up over the naive
coordinate route (:mod:`nmech.reference.naive`).

Every measurement runs in a fresh (spawned) process, so each derivation starts with cold caches,
as ``nmech derive`` does, and a naive run that passes the time cap can be stopped.

* ``derive <rule> order <p>``: ``modified_equation(rule, p)`` for GD (orders 2-8), heavy ball and
  Nesterov (orders 2-5), signSGD, signum and Lion with decoupled decay (orders 2-3), normalised
  GD, SAM (normalised ascent) and clipped GD (orders 2-3), hyper-parameters symbolic. Target: GD
  order 8 under 2 s. Also (orders 2-4, no target) the averaged iterates' flow
  (``averaged_equation``) of EMA over heavy ball and of schedule-free SGD, and Lookahead over
  torch's SGD with k = 3 (docs/math.md section 11).
* ``target <rule> order <p>``: the engine's targets of issue 14 in absolute seconds (:data:`TARGETS`:
  Adam, AdamW, RMSProp order 2 < 10 s and order 3 < 120 s, heavy ball and Nesterov order 8
  < 10 s, GD order 12 < 5 s, Adam with coupled weight decay order 1 < 5 s). The route these
  replaced (sympy's fraction field and sympy canonical forms of the element-wise functions) is
  not kept; its times on this machine were Adam order 2 184 s, order 1 20 s, with coupled
  weight decay 63 s, heavy ball order 6 27 s, GD order 12 24 s. The ratio reported here is
  against the naive coordinate route, below.
* ``naive vs engine <rule> order <p>``: the naive route on a fixed 2-D polynomial loss, with
  symbolic hyper-parameters as in a real derivation, at increasing order until one run passes
  the cap (60 s; 10 s when quick); the engine is timed on the same job (derivation plus the
  field on that loss). The summary record gives ratio = naive / engine at the largest order
  where both finished. Target: ratio >= 50.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

NAIVE_CAP_S = 60.0
NAIVE_CAP_QUICK_S = 10.0
ENGINE_CAP_S = 600.0
STARTUP_S = 120.0
MAX_NAIVE_ORDER = 12
GD8_TARGET_S = 2.0
RATIO_TARGET = 50.0

SIGN_ORDERS = {"signsgd+wd": range(2, 4), "signum+wd": range(2, 4), "lion+wd": range(2, 4)}
AVERAGED_ORDERS = {
    "ema(heavy-ball)": range(2, 5),
    "schedule-free": range(2, 5),
    "lookahead(torch-sgd, k=3)": range(2, 5),
}
FULL_ORDERS = {"gd": range(2, 9), "heavy-ball": range(2, 6), "nesterov": range(2, 6)}
FULL_ORDERS |= SIGN_ORDERS
FULL_ORDERS |= AVERAGED_ORDERS
FULL_ORDERS |= {"normalized-gd": range(2, 4), "sam": range(2, 4), "clip-gd": range(2, 4)}
QUICK_ORDERS = {"gd": range(2, 7), "heavy-ball": range(2, 4), "nesterov": range(2, 4)}
QUICK_ORDERS |= {"lion+wd": range(2, 4)}
NAIVE_RULES = ("gd", "heavy-ball")
#: (rule, order, target seconds); "+wd" is the built-in with (coupled) weight decay
TARGETS = (
    ("adam", 2, 10.0),
    ("adamw", 2, 10.0),
    ("rmsprop", 2, 10.0),
    ("adam", 3, 120.0),
    ("adamw", 3, 120.0),
    ("rmsprop", 3, 120.0),
    ("heavy-ball", 8, 10.0),
    ("nesterov", 8, 10.0),
    ("gd", 12, 5.0),
    ("adam+wd", 1, 5.0),
)
QUICK_TARGETS = (("adam", 2, 10.0), ("heavy-ball", 8, 10.0), ("adam+wd", 1, 5.0))


#: Rules built from a base rule, by their names in the records.
COMPOSITE = {
    "ema(heavy-ball)": lambda rules: rules.ema(rules.heavy_ball()),
    "lookahead(torch-sgd, k=3)": lambda rules: rules.lookahead(rules.torch_sgd(), 3),
}


def _rule(name: str):
    from nmech.derive import rules

    if name in COMPOSITE:
        return COMPOSITE[name](rules)
    base, _, extra = name.partition("+")
    return rules.builtin(base, weight_decay=extra == "wd")


def _loss():
    import sympy as sp

    x, y = sp.symbols("x y", real=True)
    return x**2 / 2 + y**2 + x**3 / 3 + x * y**2 / 2, [x, y]


def _measure(task: str, rule_name: str, order: int, conn=None) -> float:
    """Seconds for one job, timed in this (fresh) process; ``conn`` is told when timing starts."""
    from nmech.derive import averaged_equation, modified_equation
    from nmech.reference.naive import naive_modified_field

    rule = _rule(rule_name)
    loss, coords = _loss()
    if conn is not None:
        conn.send(("started", None))
    start = time.perf_counter()
    if task == "derive":
        (averaged_equation if rule.averages else modified_equation)(rule, order)
    elif task == "engine-field":
        modified_equation(rule, order).field(loss, coords)
    elif task == "naive":
        naive_modified_field(rule, order, loss, coords)
    else:
        raise ValueError(f"unknown task {task!r}")
    return time.perf_counter() - start


def _child(conn, task: str, rule_name: str, order: int) -> None:
    try:
        conn.send(("ok", _measure(task, rule_name, order, conn)))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _timed(task: str, rule_name: str, order: int, cap: float) -> float | None:
    """Seconds for the job in a fresh process, or None if it ran past ``cap`` (then stopped)."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, task, rule_name, order), daemon=True)
    proc.start()
    send.close()
    try:
        if not receive.poll(STARTUP_S):
            raise RuntimeError(f"{task} {rule_name} order {order}: worker did not start")
        status, value = receive.recv()
        if status == "started":
            if not receive.poll(cap + 1.0):  # the worker's clock decides; this is the backstop
                return None
            status, value = receive.recv()
    except EOFError:
        raise RuntimeError(f"{task} {rule_name} order {order}: worker died") from None
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        proc.join()
        receive.close()
    if status != "ok":
        raise RuntimeError(f"{task} {rule_name} order {order}: {value}")
    return None if value > cap else float(value)


def _record(
    name: str,
    value: float,
    unit: str = "s",
    baseline: float | None = None,
    target: str | None = None,
    met: bool | None = None,
) -> dict[str, Any]:
    ratio = None if baseline is None or value <= 0 else baseline / value
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def _derivation_records(orders: dict[str, range]) -> list[dict[str, Any]]:
    records = []
    for rule_name, order_range in orders.items():
        for order in order_range:
            seconds = _timed("derive", rule_name, order, ENGINE_CAP_S)
            if seconds is None:
                raise RuntimeError(f"derive {rule_name} order {order} took over {ENGINE_CAP_S} s")
            target = met = None
            if rule_name == "gd" and order == 8:
                target, met = f"< {GD8_TARGET_S:g} s", seconds < GD8_TARGET_S
            records.append(
                _record(f"derive {rule_name} order {order}", seconds, target=target, met=met)
            )
    return records


def _target_records(targets: tuple[tuple[str, int, float], ...]) -> list[dict[str, Any]]:
    records = []
    for rule_name, order, target in targets:
        seconds = _timed("derive", rule_name, order, max(2 * target, 30.0))
        name = f"target {rule_name} order {order}"
        if seconds is None:
            records.append(
                _record(
                    f"{name} (stopped at {2 * target:g} s)",
                    0.0,
                    target=f"< {target:g} s",
                    met=False,
                )
            )
            continue
        records.append(_record(name, seconds, target=f"< {target:g} s", met=seconds < target))
    return records


def _naive_records(rule_name: str, cap: float) -> list[dict[str, Any]]:
    records = []
    best: tuple[int, float, float] | None = None  # (order, engine, naive)
    for order in range(1, MAX_NAIVE_ORDER + 1):
        naive = _timed("naive", rule_name, order, cap)
        engine = _timed("engine-field", rule_name, order, ENGINE_CAP_S)
        if engine is None:
            raise RuntimeError(f"engine {rule_name} order {order} took over {ENGINE_CAP_S} s")
        name = f"naive vs engine {rule_name} order {order}"
        if naive is None:
            # the naive time is only known to exceed the cap: no baseline, no ratio
            records.append(_record(f"{name} (naive stopped at {cap:g} s)", engine))
            break
        records.append(_record(name, engine, baseline=naive))
        best = (order, engine, naive)
    if best is None:
        records.append(
            _record(
                f"naive/engine {rule_name}: no order finished",
                0.0,
                unit="x",
                target=f">= {RATIO_TARGET:g}",
                met=False,
            )
        )
        return records
    order, engine, naive = best
    records.append(
        _record(
            f"naive/engine {rule_name} at order {order} (largest finished under {cap:g} s)",
            engine,
            baseline=naive,
            target=f"ratio >= {RATIO_TARGET:g}",
            met=naive / engine >= RATIO_TARGET,
        )
    )
    return records


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The benchmark records ``{name, value, unit, baseline, ratio, target, met}``; value is the
    engine's seconds, baseline the naive route's (ratio = baseline / value) where there is one."""
    records = _derivation_records(QUICK_ORDERS if quick else FULL_ORDERS)
    records += _target_records(QUICK_TARGETS if quick else TARGETS)
    cap = NAIVE_CAP_QUICK_S if quick else NAIVE_CAP_S
    for rule_name in NAIVE_RULES:
        records += _naive_records(rule_name, cap)
    return records
