"""Range checks of numeric settings: one line naming the option and its valid range.

Used for every numeric option of ``nmech validate``, ``flow`` and the torchrun entry, and for
the settings a run.json brings back on ``--resume``, so that NaN, infinities, huge values,
values of the wrong sign and values of the wrong type are refused before anything runs or is
written. This module does not import torch.
"""

from __future__ import annotations

import math

from nmech.errors import NmechError


def interval(kind: type, low: float, high: float, excluded: str = "") -> str:
    """``[low, high]`` with ``(`` / ``)`` for the ends in ``excluded``."""
    show = str if kind is int else "{:g}".format
    left = "(" if "(" in excluded else "["
    right = ")" if ")" in excluded else "]"
    return f"{left}{show(low)}, {show(high)}{right}"


def check_number(
    option: str, value: object, kind: type, low: float, high: float, excluded: str = ""
) -> None:
    """Raise a one-line NmechError unless ``value`` is a finite number of ``kind`` (int: an
    integer; float: an int or float, never a bool) in the interval of :func:`interval`."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        number = number and isinstance(value, int)
    ok = number and math.isfinite(value)  # type: ignore[arg-type]
    if ok:
        above = value > low if "(" in excluded else value >= low  # type: ignore[operator]
        below = value < high if ")" in excluded else value <= high  # type: ignore[operator]
        ok = above and below
    if not ok:
        what = "an integer" if kind is int else "a number"
        raise NmechError(f"{option} must be {what} in {interval(kind, low, high, excluded)}, "
                         f"got {value!r}")  # fmt: skip
