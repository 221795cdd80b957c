"""Output folders and files of the commands: checked before any work, never a lost run.

* :func:`writable_dir` -- ``--out DIR`` (or a run folder) exists as a folder, or can be made,
  and can be written: an existing file, ``/dev/null``, a path under a file or a read-only
  folder is one line naming the flag, before anything runs.
* :func:`writable_file` -- the same for an output file (``nmech bench --json FILE``).
* :func:`new_output_dir` -- a folder that already holds a command's output (a run, a report,
  a flow check, figures) is refused unless ``--overwrite`` says to replace it;
  :func:`clear_outputs` then removes the previous output's files (a run), so that nothing of
  the old run mixes with the new one.
* :class:`FileSet` -- a set of files written together (a report: report.json, report.md, the
  LaTeX files, the figures): written into a hidden temporary folder beside the target and
  moved into place only when every file is complete, with Ctrl-C and SIGTERM held off during
  the moves; the previous set's files that the new set lacks are removed. An interrupted or
  failed write leaves the previous set as it was.

This module does not import torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from nmech.errors import NmechError


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def writable_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder that exists (created with its parents if needed) and is writable;
    one-line NmechError naming ``flag`` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NmechError(f"{flag} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NmechError(f"{flag} {path}: cannot create the folder ({_reason(exc)})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise NmechError(f"{flag} {path}: the folder is not writable")
    return path


def writable_file(path: str | Path, flag: str) -> Path:
    """``path`` as a file this process can create or replace (its folder must exist); checked
    before any work, so that a long run does not end in an unwritable path."""
    path = Path(path)
    if path.is_dir():
        raise NmechError(f"{flag} {path} is a folder, not a file")
    folder = path.parent
    if not folder.is_dir():
        raise NmechError(f"{flag} {path}: no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise NmechError(f"{flag} {path}: not writable")
    return path


def new_output_dir(
    path: str | Path, patterns: Iterable[str], overwrite: bool, what: str,
    flag: str = "--out", hint: str = "",
) -> Path:  # fmt: skip
    """``path`` as a writable folder that holds no earlier output (files matching
    ``patterns``) unless ``overwrite``. ``what`` names the output in the message (e.g. "a
    validation run"), ``hint`` adds another way out (e.g. ``--resume DIR``)."""
    folder = writable_dir(path, flag)
    found = outputs_in(folder, patterns)
    if found and not overwrite:
        also = f"{hint} or " if hint else ""
        raise NmechError(f"{flag} {folder} already holds {what} ({found[0].name}); use "
                         f"{also}--overwrite to replace it, or choose another {flag}")  # fmt: skip
    return folder


def outputs_in(folder: Path, patterns: Iterable[str]) -> list[Path]:
    """The files and folders of ``folder`` matching any of ``patterns`` (glob)."""
    return sorted({p for pattern in patterns for p in folder.glob(pattern)})


def clear_outputs(folder: Path, patterns: Iterable[str]) -> None:
    """Remove the earlier output in ``folder`` (``--overwrite``), so nothing of it mixes with
    the new one."""
    for p in outputs_in(folder, patterns):
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError as exc:
            raise NmechError(f"--overwrite: cannot remove {p} ({_reason(exc)})") from None


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (main thread only) until the block ends, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _frame: held.append(signum)) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in held[:1]:
            os.kill(os.getpid(), s)


class FileSet:
    """Files written as one set into ``folder`` (module docstring).

    ``names`` lists every file the set may hold, relative to ``folder`` (e.g. ``report.json``,
    ``figures/symmetries.png``); :attr:`staging` is the folder to write them into, with the
    same relative paths. :meth:`commit` moves what was written into place and removes the
    files of ``names`` it did not write; leaving the ``with`` block without committing (an
    error, Ctrl-C) removes the staging folder and keeps the previous set.
    """

    def __init__(self, folder: str | Path, names: Iterable[str], flag: str = "--out") -> None:
        self.folder = writable_dir(folder, flag)
        self.names = tuple(names)
        self.staging = Path(tempfile.mkdtemp(prefix=".nmech-staging-", dir=self.folder))

    def __enter__(self) -> FileSet:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self) -> list[Path]:
        """Move the written files into place (signals held); returns their final paths."""
        written = [n for n in self.names if (self.staging / n).is_file()]
        unknown = [p for p in self.staging.rglob("*") if p.is_file()
                   and str(p.relative_to(self.staging)) not in written]  # fmt: skip
        if unknown:
            raise NmechError(f"internal: {unknown[0]} is not one of the set's files")
        try:
            with _signals_held():
                for name in written:
                    target = self.folder / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(self.staging / name, target)
                for name in set(self.names) - set(written):
                    (self.folder / name).unlink(missing_ok=True)
        except OSError as exc:
            raise NmechError(f"cannot write into {self.folder}: {_reason(exc)}") from None
        return [self.folder / n for n in written]
