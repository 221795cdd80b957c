"""The one protocol every derivation result follows.

A :class:`Derivation` (a modified equation, a modified loss, a second-order flow, a mini-batch
equation or SDE, the dynamics of a symmetry's observable) presents itself four ways:

* ``latex()`` -- LaTeX, one equation a line (``%`` lines carry context for a reader of the file);
* ``text()`` -- the same in plain Unicode text;
* ``to_json()`` -- a JSON-able dict whose ``"schema"`` key names its layout and version;
* in Jupyter, ``_repr_latex_()`` renders the equations, and ``repr()`` is a one-glance summary
  (the class name and the text form) instead of a dump of trees.

Results with a potential offer ``modified_loss()``, which always returns a
:class:`~nmech.derive.bea.modified_loss.ModifiedLoss` (also when none exists: then its
``obstruction`` and ``reason`` say why).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any


class Derivation(ABC):
    """Base of every derivation result: ``latex``, ``text`` and ``to_json`` are the contract;
    ``to_json_text``, ``_repr_latex_`` and ``__repr__`` follow from them."""

    @abstractmethod
    def latex(self) -> str:
        """The result in LaTeX (math mode content, one equation a line)."""

    @abstractmethod
    def text(self) -> str:
        """The result as plain Unicode text."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-able dict with a ``"schema"`` key."""

    def to_json_text(self) -> str:
        """:meth:`to_json` serialised (indented, Unicode kept)."""
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False)

    def _repr_latex_(self) -> str:
        """Jupyter's rich display: the equations of :meth:`latex` (context lines dropped)."""
        lines = [
            line
            for line in self.latex().splitlines()
            if line.strip() and not line.lstrip().startswith("%")
        ]
        if not lines:
            return f"$\\text{{{type(self).__name__}}}$"
        if len(lines) == 1:
            return f"$\\displaystyle {lines[0]}$"
        return "$$\\begin{gathered}" + " \\\\ ".join(lines) + "\\end{gathered}$$"

    def __repr__(self) -> str:
        return f"{type(self).__name__}: {self.text()}"
