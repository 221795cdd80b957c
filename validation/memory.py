"""Memory a run will need, bounded up front from what the machine has.

A setting that implies more memory than the device has (``--width 1e6``, ``--flush-every
1000000``) is refused with one line naming the option, the estimate and the limit, before the
memory is allocated, instead of failing gigabytes later (or being killed).

:func:`available_bytes` is what the device can still give: on the CPU ``MemAvailable`` of
/proc/meminfo (else physical memory), capped by a cgroup limit; on a GPU the free memory torch
reports. :func:`require` compares an estimate with it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nmech.errors import NmechError

#: Bytes per parameter a recorded run holds besides activations, at most: the float32
#: parameter, its gradient and up to two optimizer states (4 x 4), the recorder's theta_n and
#: theta_{n+1} and its copies of the gradient and the states (5 x 8, float64 on the torch route;
#: the compiled CPU route keeps them in float32).
BYTES_PER_PARAMETER = 56
#: Values the recorder keeps per block and step at most: Q, Q_abs and four signals.
ROW_VALUES = 6


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def _host_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
        else:
            raise OSError("no MemAvailable")
    except (OSError, ValueError, IndexError):
        found = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return found if limit is None else min(found, limit)


def available_bytes(device: torch.device) -> int:
    """Memory ``device`` can still give (module docstring)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return _host_available()


def gib(n: float) -> str:
    """``n`` bytes as GiB with two digits."""
    return f"{n / 2**30:.2f} GiB"


def require(need: float, device: torch.device, option: str, what: str) -> None:
    """Raise a one-line NmechError naming ``option`` when ``need`` bytes (``what`` they are
    for) exceed what ``device`` has available."""
    have = available_bytes(device)
    if need > have:
        raise NmechError(f"{option}: {what} needs about {gib(need)}, more than the {gib(have)} "
                         f"available on {device.type}; choose a smaller {option}")  # fmt: skip
