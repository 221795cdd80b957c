"""The records file: append-only HDF5 (h5py), readable by anyone with h5py or pandas.

Layout (``FORMAT_VERSION`` = 3)::

    /                      attrs: format_version, model, optimizer (JSON: "optimizer" = the
                                  registered name, e.g. sgd, adamw, fallback, and the torch
                                  param-group entries that define its rule), run (JSON: batch
                                  size, seed, device, data, ...); once the writer stops cleanly
                                  also status (complete | interrupted | diverged | aborted)
                                  and stop_reason
    /commit                int64 [3]   (steps committed N, 1 if the lr changed, 1 if Q_N is
                                       committed): the only row count a reader trusts
    /<kind>/Q              float64 [N+1, blocks]   Q_0 .. Q_N  (kind: a registered symmetry kind,
                                                   nmech.validation.kinds)
    /<kind>/Q_abs          float64 [N+1, blocks]   the block's magnitude: sum_A theta_i^2, or
                                                   sum_A |theta_i| (translation)
    /<kind>/grad_sq        float64 [N, blocks]     <g_n, J g_n>      (scale, rescale only)
    /<kind>/step_sq        float64 [N, blocks]     <D_n, J D_n>,  D_n = theta_{n+1} - theta_n
    /<kind>/step_grad      float64 [N, blocks]     <D_n, J g_n>
    /<kind>/theta_u        float64 [N, blocks]     <J theta_n, u_n>   (optimizers with an update
    /<kind>/u_sq           float64 [N, blocks]     <u_n, J u_n>        direction u_n, theta_{n+1} =
    /<kind>/c_u            float64 [N, blocks]     <1_A, u_n>          a theta_n - eta u_n; c_u:
                                                                        linear kinds only)
    /<kind>/<signal>       float64 [N, blocks]     any signal of nmech.validation.signals
    /<kind>/size           int64 [blocks]          elements per block (absent in older files)
    /<kind>/block_names, group_names   fixed-length UTF-8 [blocks], [groups]
    /<kind>/group_index, channel       int64 [blocks]
    /train/loss, /train/accuracy   float64 [N]   mini-batch loss and accuracy at step n
    /trace/values          float64 [N+1, P]      a few single parameters theta_i (for Figure 1)
    /trace                 attrs: param, flat_index, block

Crash safety (SIGKILL, power aside): the file is written with ``libver='latest'`` in HDF5's
single-writer/multiple-reader (SWMR) mode, whose ordered metadata flushes keep the file
consistent at every instant (a stress test of 40 SIGKILLs at random instants of a flush-every-
step writer left 40 readable files). Each flush appends whole chunks (chunk rows = flush interval, so
committed chunks are never rewritten), flushes, and only then advances ``/commit`` and flushes
again; readers slice every dataset to the committed rows. A killed run therefore loses at most
the rows after its last flush. Its file still carries HDF5's "open for writing" mark, so it is
opened with ``swmr=True`` (``h5py.File(path, "r", swmr=True)``; HDF5 >= 1.10).

Older files: format 2 (written before the optimizer registry: SGD settings without an
``optimizer`` name, AdamW's betas as ``beta1``, ``beta2``) is read as it is; any other version
is refused with one line, the file untouched.

Integrity: every dataset is chunked with the Fletcher-32 checksum, strings are fixed-length and
attributes live in checksummed object headers, so flipped or missing bytes raise an error
(:func:`load_records` turns it into a one-line NmechError) instead of being read as data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nmech.errors import NmechError
from nmech.validation.kinds import ordered

FORMAT_VERSION = 3
#: Versions this reader reads (2: the same layout, older optimizer settings).
READABLE_VERSIONS: tuple[int, ...] = (2, 3)
#: Datasets holding one row per state theta_0 .. theta_N (the others hold one row per step).
STATE_ROWS: tuple[str, ...] = ("Q", "Q_abs", "values")
COPY_ROWS = 4096


def _attr(value: Any) -> Any:
    """Strings as fixed-length bytes (stored in the checksummed header), others as given."""
    if isinstance(value, str):
        return np.bytes_(value.encode())
    if isinstance(value, int | float | bool | np.ndarray | np.generic):
        return value
    return np.bytes_(json.dumps(value).encode())


def _strings(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def is_state_dataset(name: str) -> bool:
    """True for the datasets with N+1 rows (Q, Q_abs, trace values)."""
    return name.rsplit("/", 1)[-1] in STATE_ROWS


class RecordsWriter:
    """Write ``path`` crash-safely: declare datasets, :meth:`start`, append, :meth:`commit`.

    The new file is built next to ``path`` and renamed over it by :meth:`start`, so an existing
    file (the one a resumed run keeps rows from) stays intact until then.
    """

    def __init__(self, path: str | Path, attrs: dict[str, Any], chunk_rows: int) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.chunk_rows = chunk_rows
        self.committed = 0
        self.lr_changed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = h5py.File(self.tmp, "w", libver="latest")
        except OSError as exc:
            raise NmechError(f"cannot create records file {self.tmp}: {exc}") from exc
        self.file.attrs["format_version"] = FORMAT_VERSION
        for key, value in attrs.items():
            self.file.attrs[key] = _attr(value)
        self.file.create_dataset("commit", data=np.zeros(3, np.int64), chunks=(3,), fletcher32=True)

    def _fixed(self, name: str, data: np.ndarray) -> None:
        self.file.create_dataset(
            name, data=data, maxshape=(None,), chunks=(max(1, len(data)),), fletcher32=True
        )

    def create(self, name: str, width: int | None) -> None:
        """Declare the appendable float64 dataset ``name`` ([0] or [0, width])."""
        tail = () if width is None else (width,)
        self.file.create_dataset(
            name, shape=(0, *tail), maxshape=(None, *tail), dtype=np.float64,
            chunks=(self.chunk_rows, *tail), fletcher32=True,
        )  # fmt: skip

    def describe_kind(self, kind: str, block_names: list[str], group_names: list[str],
                      group_index: np.ndarray, channel: np.ndarray,
                      size: np.ndarray | None = None) -> None:  # fmt: skip
        """Block metadata of one symmetry kind (``size``: elements per block)."""
        if size is not None:
            self._fixed(f"{kind}/size", np.asarray(size, dtype=np.int64))
        for name, strings in (("block_names", block_names), ("group_names", group_names)):
            encoded = [s.encode() for s in strings]
            width = max((len(s) for s in encoded), default=1) or 1
            self._fixed(f"{kind}/{name}", np.array(encoded, dtype=f"S{width}"))
        self._fixed(f"{kind}/group_index", np.asarray(group_index, dtype=np.int64))
        self._fixed(f"{kind}/channel", np.asarray(channel, dtype=np.int64))

    def set_attrs(self, path: str, **attrs: Any) -> None:
        """Set attributes on the group ``path`` (created if needed); only before :meth:`start`."""
        grp = self.file.require_group(path) if path != "/" else self.file
        for key, value in attrs.items():
            grp.attrs[key] = _attr(value)

    def start(self, keep_from: Path | None = None, steps: int = 0) -> None:
        """Copy the first ``steps`` steps of ``keep_from`` (a resumed run), replace ``path`` by
        the new file and switch to SWMR appends."""
        if keep_from is not None and steps > 0:
            try:
                self._copy(keep_from, steps)
            except NmechError:
                self.file.close()
                self.tmp.unlink()
                raise
        self.file["commit"][:] = (self.committed, int(self.lr_changed), 0)
        self.file.flush()
        os.replace(self.tmp, self.path)
        self.file.swmr_mode = True

    def _copy(self, source: Path, steps: int) -> None:
        try:
            with open_for_reading(source) as old:
                check_version(old, source, (FORMAT_VERSION,))
                done, lr_changed = int(old["commit"][0]), bool(old["commit"][1])
                if done < steps:
                    raise NmechError(
                        f"{source} holds {done} committed steps, the checkpoint needs {steps}"
                    )
                for name, ds in _appendable(self.file):
                    src = old[name]
                    for lo in range(0, steps, COPY_ROWS):
                        self._append(ds, src[lo : min(steps, lo + COPY_ROWS)])
        except (OSError, KeyError, ValueError) as exc:
            raise NmechError(f"cannot resume from records file {source}: {exc}") from exc
        self.committed, self.lr_changed = steps, lr_changed

    @staticmethod
    def _append(ds: h5py.Dataset, rows: np.ndarray) -> None:
        start = ds.shape[0]
        ds.resize(start + len(rows), axis=0)
        ds[start:] = rows

    def append(self, name: str, rows: np.ndarray) -> None:
        """Append ``rows`` ([n] or [n, width], float64) to the declared dataset ``name``."""
        self._append(self.file[name], np.asarray(rows, dtype=np.float64))

    def commit(self, steps: int, lr_changed: bool, final_state: bool = False) -> None:
        """Make the appended rows durable, then declare ``steps`` steps (and Q_N) committed."""
        self.file.flush()
        self.committed, self.lr_changed = steps, lr_changed
        self.file["commit"][:] = (steps, int(lr_changed), int(final_state))
        self.file.flush()

    def finish(self, status: str, reason: str = "") -> None:
        """Close and stamp ``status`` (attributes cannot change under SWMR, hence a reopen)."""
        if not self.file.id.valid:
            return
        self.file.close()
        with h5py.File(self.path, "r+", libver="latest") as f:
            f.attrs["status"] = _attr(status)
            f.attrs["stop_reason"] = _attr(reason)

    def close(self) -> None:
        """Close the file as it is (idempotent)."""
        if self.file.id.valid:
            self.file.close()


def open_for_reading(path: Path) -> h5py.File:
    """Open read-only; a file still marked open for writing (a live or killed writer) is
    opened in SWMR-read mode. Plain mode comes first because SWMR readers retry every failed
    metadata checksum (a writer might be mid-flush), which makes damaged files slow to refuse.
    """
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise
    return h5py.File(path, "r", swmr=True)


def _appendable(f: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    """The float64 row datasets of ``f`` (everything but commit and block metadata)."""
    found: list[tuple[str, h5py.Dataset]] = []
    f.visititems(
        lambda name, obj: (
            found.append((name, obj))
            if isinstance(obj, h5py.Dataset) and obj.dtype == np.float64
            else None
        )
    )
    return found


def check_version(f: h5py.File, path: Path, versions: tuple[int, ...] = READABLE_VERSIONS) -> None:
    """Raise unless ``f`` is a records file of one of ``versions``."""
    version = _plain(f.attrs.get("format_version"))
    if version not in versions:
        known = " or ".join(str(v) for v in versions)
        raise NmechError(
            f"{path}: records format version {version}, this nmech reads version {known} "
            "(the file is left as it is; re-run nmech validate to record again)"
        )


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
    size: np.ndarray | None = None


@dataclass
class Records:
    """A records file loaded into memory (``attrs`` adds steps, lr_constant and status)."""

    path: Path
    attrs: dict[str, Any]
    kinds: dict[str, KindRecords]
    train: dict[str, np.ndarray] = field(default_factory=dict)
    trace: np.ndarray | None = None
    trace_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def optimizer(self) -> dict[str, Any]:
        """The optimizer settings the run used (``optimizer`` names its registry entry)."""
        return json.loads(self.attrs["optimizer"])

    @property
    def loss_recorded(self) -> bool:
        """True when the training loop passed its loss (a finite value in train/loss)."""
        loss = self.train.get("loss")
        return loss is not None and bool(np.isfinite(loss).any())

    @property
    def steps(self) -> int:
        """Number of recorded steps N."""
        return int(self.attrs.get("steps", 0))


def records_progress(path: str | Path) -> tuple[str, int]:
    """``(status, committed steps)`` of a records file; status ``unfinished`` if the writer
    never stopped cleanly (killed), ``missing`` if there is no readable file."""
    try:
        with open_for_reading(Path(path)) as f:
            check_version(f, Path(path))
            return str(_plain(f.attrs.get("status", b"unfinished"))), int(f["commit"][0])
    except (OSError, KeyError, ValueError, NmechError):
        return "missing", 0


#: What every kind's group holds besides its signals.
KIND_MEMBERS: tuple[str, ...] = ("Q", "Q_abs", "block_names", "group_names", "group_index",
                                 "channel")  # fmt: skip


def _commit(f: h5py.File) -> tuple[int, bool, bool]:
    """(steps committed, lr changed, Q_N committed) from ``/commit``, checked."""
    ds = f["commit"]
    if ds.shape != (3,) or ds.dtype.kind not in "iu":
        raise NmechError(f"/commit is {ds.dtype}{list(ds.shape)}, not int64 [3]")
    committed, lr_changed, final_state = (int(v) for v in ds[:])
    if committed < 0 or lr_changed not in (0, 1) or final_state not in (0, 1):
        raise NmechError(f"/commit holds {[committed, lr_changed, final_state]}")
    return committed, bool(lr_changed), bool(final_state)


def _rows(g: h5py.Group, name: str, rows: int, width: int) -> np.ndarray:
    """The first ``rows`` rows of the float64 [>= rows, width] dataset ``name``, all finite."""
    ds = g[name]
    if ds.dtype != np.float64 or ds.ndim != 2 or ds.shape[1] != width or ds.shape[0] < rows:
        raise NmechError(f"{g.name}/{name} is {ds.dtype}{list(ds.shape)} where float64 "
                         f"[{rows}, {width}] was committed")  # fmt: skip
    data = ds[:rows]
    if not np.isfinite(data).all():
        bad = int(np.argmax(~np.isfinite(data).all(axis=1)))
        raise NmechError(f"{g.name}/{name} holds a non-finite value in committed row {bad}")
    return data


def _kind(g: h5py.Group, n: int) -> KindRecords:
    """One kind's committed rows, every member checked against the block count."""
    missing = [m for m in KIND_MEMBERS if m not in g]
    if missing:
        raise NmechError(f"{g.name} has no {missing[0]}")
    names = _strings(g["block_names"][:])
    width = len(names)
    index, channel = g["group_index"][:], g["channel"][:]
    if index.shape != (width,) or channel.shape != (width,):
        raise NmechError(f"{g.name}: block metadata of different lengths")
    state = {name: _rows(g, name, n + 1, width) for name in STATE_ROWS[:2]}
    signals = {s: _rows(g, s, n, width) for s, ds in g.items()
               if s not in STATE_ROWS and isinstance(ds, h5py.Dataset)
               and ds.dtype == np.float64 and ds.ndim == 2}  # fmt: skip
    return KindRecords(
        state["Q"], state["Q_abs"], signals, names, _strings(g["group_names"][:]), index,
        channel, g["size"][:] if "size" in g else None,
    )  # fmt: skip


def _read(f: h5py.File, path: Path) -> Records:
    check_version(f, path)
    attrs = {k: _plain(v) for k, v in f.attrs.items()}
    settings = attrs.get("optimizer")
    try:
        if not isinstance(json.loads(settings), dict):
            raise ValueError("not an object")
    except (TypeError, ValueError) as exc:
        raise NmechError(f"no readable optimizer settings ({exc})") from None
    committed, lr_changed, final_state = _commit(f)
    n = committed if final_state else max(committed - 1, 0)  # no Q_N: the last step is lost
    attrs.update(steps=n, lr_constant=not lr_changed)
    attrs.setdefault("status", "unfinished")
    kinds = {
        kind: _kind(g, n)
        for kind, g in f.items()
        if isinstance(g, h5py.Group) and kind not in ("train", "trace")
    }
    kinds = {k: kinds[k] for k in ordered(kinds)}
    train = {k: f["train"][k][:n] for k in f["train"]} if "train" in f else {}
    trace, trace_attrs = None, {}
    if "trace" in f and "values" in f["trace"]:
        trace = f["trace"]["values"][: n + 1]
        trace_attrs = {k: _plain(v) for k, v in f["trace"].attrs.items()}
    return Records(path, attrs, kinds, train, trace, trace_attrs)


def load_records(path: str | Path) -> Records:
    """Read the committed rows of a records file; a truncated, corrupted or foreign file is a
    one-line NmechError. Files of killed runs (never closed) are read too."""
    path = Path(path)
    if not path.is_file():
        raise NmechError(f"no records file at {path}")
    try:
        with open_for_reading(path) as f:
            return _read(f, path)
    except NmechError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise NmechError(f"records file {path} is corrupt or truncated ({exc})") from None
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, RuntimeError, ...
        detail = " ".join(str(exc).split())[:200]
        raise NmechError(f"records file {path} is corrupt or truncated ({detail})") from exc
