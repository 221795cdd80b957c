"""Real text for the language model: the Python standard library's own source files, which
every machine that runs nmech has, as characters.

The ``.py`` files at the top of ``sysconfig.get_paths()["stdlib"]`` are read in sorted order
and concatenated (a blank line between files) until ``max_chars`` characters; characters
outside the vocabulary (tab, newline and printable ASCII, 97 symbols) are dropped. Which files
exist depends on the Python version; a run's records name the folder and the character count.

:class:`TokenBatches` draws windows of T + 1 characters at uniformly random offsets
(a ``torch.Generator`` on the device): x = window[:-1], y = window[1:], both int64 [B, T].
The loss is the mean cross-entropy over every position, :func:`sequence_cross_entropy`.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nmech.errors import NmechError

VOCAB = "\t\n" + "".join(chr(c) for c in range(32, 127))
MAX_CHARS = 1_000_000


@dataclass(frozen=True)
class TextSet:
    """Token ids ``tokens`` uint8 [N] over ``vocab`` (a string), from ``source``."""

    tokens: np.ndarray
    vocab: str
    source: str

    @property
    def num_classes(self) -> int:
        """The vocabulary size (the language model's classes)."""
        return len(self.vocab)

    def decode(self, ids: Any) -> str:
        """The text of token ids."""
        return "".join(self.vocab[int(i)] for i in ids)


def load_python_source(max_chars: int = MAX_CHARS, folder: str | Path | None = None) -> TextSet:
    """The standard library's source as a :class:`TextSet` (module docstring)."""
    root = Path(folder or sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    if not files:
        raise NmechError(f"no Python source files in {root} for the python-source data set")
    index = np.full(256, 255, dtype=np.uint8)
    index[[ord(c) for c in VOCAB]] = np.arange(len(VOCAB), dtype=np.uint8)
    pieces, total = [], 0
    for path in files:
        raw = np.frombuffer(path.read_bytes() + b"\n\n", dtype=np.uint8)
        ids = index[raw]
        ids = ids[ids != 255]
        pieces.append(ids[: max_chars - total])
        total += len(pieces[-1])
        if total >= max_chars:
            break
    tokens = np.concatenate(pieces)
    return TextSet(tokens, VOCAB, f"{root} ({len(pieces)} files, {len(tokens)} characters)")


def sequence_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: logits [B, T, V], targets [B, T]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class TokenBatches:
    """Endless batches ``(x, y)`` of random windows, int64 [B, T] on a device (module
    docstring); deterministic given ``seed``."""

    def __init__(self, text: TextSet, batch_size: int, context: int,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:  # fmt: skip
        if batch_size < 1 or context < 1:
            raise NmechError(
                f"batch size and context must be positive, got {batch_size}, {context}"
            )
        if len(text.tokens) <= context + 1:
            raise NmechError(f"the text has {len(text.tokens)} characters, fewer than a window")
        self.device = torch.device(device)
        self.tokens = torch.from_numpy(text.tokens).to(self.device)
        self.batch_size, self.context = batch_size, context
        self.num_classes = text.num_classes
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self._offsets = torch.arange(context + 1, device=self.device)

    @property
    def steps_per_epoch(self) -> int:
        """Batches whose windows add up to one pass over the text."""
        return max(1, len(self.tokens) // (self.batch_size * self.context))

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of windows."""
        high = len(self.tokens) - self.context - 1
        starts = torch.randint(
            0, high, (self.batch_size, 1), generator=self.gen, device=self.device
        )
        window = self.tokens[starts + self._offsets].long()
        return window[:, :-1], window[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        """The generator state (for checkpoints)."""
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where :meth:`state_dict` was taken."""
        self.gen.set_state(state["gen"])
