"""The records file: append-only HDF5 (h5py), readable by anyone with h5py or pandas.

Layout (``FORMAT_VERSION`` = 1)::

    /                      attrs: format_version, model, optimizer (JSON of SGDSettings),
                                  run (JSON: batch size, seed, device, ...), steps (rows flushed),
                                  lr_constant (False if the learning rate changed mid-run)
    /<kind>/Q              float64 [N+1, blocks]   Q_0 .. Q_N  (kind: scale|rescale|translation)
    /<kind>/Q_abs          float64 [N+1, blocks]   the block's magnitude: sum_A theta_i^2, or
                                                   sum_A |theta_i| (translation)
    /<kind>/grad_sq        float64 [N, blocks]     <g_n, J g_n>      (scale, rescale only)
    /<kind>/step_sq        float64 [N, blocks]     <D_n, J D_n>,  D_n = theta_{n+1} - theta_n
    /<kind>/step_grad      float64 [N, blocks]     <D_n, J g_n>
    /<kind>                attrs: block_names, group_names; datasets group_index, channel [blocks]
    /train/loss, /train/accuracy   float64 [N]   mini-batch loss and accuracy at step n
    /trace/values          float64 [N+1, P]      a few single parameters theta_i (for Figure 1)
    /trace                 attrs: param, flat_index, block

Every dataset is chunked and resizable along axis 0; the writer appends rows and updates
``steps`` at each flush, so an interrupted run leaves a readable file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nmech.errors import NmechError

FORMAT_VERSION = 1
SIGNALS: tuple[str, ...] = ("grad_sq", "step_sq", "step_grad")


class RecordsWriter:
    """Create ``path`` (overwriting) and append rows to resizable datasets."""

    def __init__(self, path: str | Path, attrs: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = h5py.File(self.path, "w")
        except OSError as exc:
            raise NmechError(f"cannot create records file {self.path}: {exc}") from exc
        self.file.attrs["format_version"] = FORMAT_VERSION
        for key, value in attrs.items():
            self.file.attrs[key] = (
                value if isinstance(value, str | int | float | bool) else json.dumps(value)
            )

    def describe_kind(self, kind: str, block_names: list[str], group_names: list[str],
                      group_index: np.ndarray, channel: np.ndarray) -> None:  # fmt: skip
        """Block metadata of one symmetry kind."""
        grp = self.file.require_group(kind)
        grp.attrs["block_names"] = np.array(block_names, dtype=h5py.string_dtype())
        grp.attrs["group_names"] = np.array(group_names, dtype=h5py.string_dtype())
        grp.create_dataset("group_index", data=np.asarray(group_index, dtype=np.int64))
        grp.create_dataset("channel", data=np.asarray(channel, dtype=np.int64))

    def set_attrs(self, path: str, **attrs: Any) -> None:
        """Set attributes on the group ``path`` (created if needed)."""
        grp = self.file.require_group(path) if path != "/" else self.file
        for key, value in attrs.items():
            grp.attrs[key] = value

    def append(self, name: str, rows: np.ndarray) -> None:
        """Append ``rows`` ([n] or [n, width], float64) to dataset ``name``."""
        rows = np.asarray(rows, dtype=np.float64)
        if name not in self.file:
            chunk = (max(1, min(256, len(rows))), *rows.shape[1:])
            self.file.create_dataset(
                name, shape=(0, *rows.shape[1:]), maxshape=(None, *rows.shape[1:]),
                dtype=np.float64, chunks=chunk,
            )  # fmt: skip
        ds = self.file[name]
        start = ds.shape[0]
        ds.resize(start + len(rows), axis=0)
        ds[start:] = rows

    def flush(self, steps: int) -> None:
        """Record that ``steps`` steps are complete and push everything to disk."""
        self.file.attrs["steps"] = steps
        self.file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self.file.id.valid:
            self.file.close()


@dataclass
class KindRecords:
    """Measurements of one symmetry kind."""

    Q: np.ndarray
    Q_abs: np.ndarray
    signals: dict[str, np.ndarray]
    block_names: list[str]
    group_names: list[str]
    group_index: np.ndarray
    channel: np.ndarray


@dataclass
class Records:
    """A records file loaded into memory."""

    path: Path
    attrs: dict[str, Any]
    kinds: dict[str, KindRecords]
    train: dict[str, np.ndarray] = field(default_factory=dict)
    trace: np.ndarray | None = None
    trace_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def optimizer(self) -> dict[str, Any]:
        """The SGD settings the run used."""
        return json.loads(self.attrs["optimizer"])

    @property
    def steps(self) -> int:
        """Number of recorded steps N."""
        return int(self.attrs.get("steps", 0))


def _strings(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def load_records(path: str | Path) -> Records:
    """Read a records file written by :class:`RecordsWriter` (any h5py-readable copy works)."""
    path = Path(path)
    if not path.is_file():
        raise NmechError(f"no records file at {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise NmechError(f"cannot read records file {path}: {exc}") from exc
    with f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        if attrs.get("format_version") != FORMAT_VERSION:
            raise NmechError(f"{path}: unsupported records format {attrs.get('format_version')}")
        n = int(attrs.get("steps", 0))
        for kind in ("scale", "rescale", "translation"):  # an aborted run has no Q_N
            if kind in f and "Q" in f[kind]:
                n = min(n, f[kind]["Q"].shape[0] - 1)
        n = attrs["steps"] = max(n, 0)
        kinds = {}
        for kind in ("scale", "rescale", "translation"):
            if kind not in f or "Q" not in f[kind]:
                continue
            g = f[kind]
            signals = {s: g[s][:n] for s in SIGNALS if s in g}
            kinds[kind] = KindRecords(
                g["Q"][: n + 1], g["Q_abs"][: n + 1], signals, _strings(g.attrs["block_names"]),
                _strings(g.attrs["group_names"]), g["group_index"][:], g["channel"][:],
            )  # fmt: skip
        train = {k: f["train"][k][:n] for k in f["train"]} if "train" in f else {}
        trace, trace_attrs = None, {}
        if "trace" in f and "values" in f["trace"]:
            trace = f["trace"]["values"][: n + 1]
            trace_attrs = {k: v for k, v in f["trace"].attrs.items()}
    return Records(path, attrs, kinds, train, trace, trace_attrs)
