"""One registry type for the validation's vocabularies (symmetry kinds, signals, optimizers,
models, data sets): a name -> entry mapping (entries carry their ``name``) that refuses a
repeated name and answers an unknown one with a one-line error listing the known names."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from nmech.errors import NmechError

T = TypeVar("T", bound=Any)


class Registry(dict[str, T], Generic[T]):
    """Entries by name. ``what`` names the vocabulary in messages ("model", "data set", ...);
    ``allowed[field]`` lists the values an entry's ``field`` may take."""

    def __init__(self, what: str, **allowed: tuple[Any, ...]) -> None:
        super().__init__()
        self.what = what
        self.allowed = allowed

    def register(self, entry: T) -> T:
        """Add ``entry`` under its ``name`` (new names only); returns it."""
        name = getattr(entry, "name", "")
        if not name or name in self:
            raise NmechError(f"{self.what} {name!r} is already registered (or unnamed)")
        for key, values in self.allowed.items():
            if getattr(entry, key) not in values:
                raise NmechError(f"{self.what} {name!r}: {key} must be one of {', '.join(values)}")
        self[name] = entry
        return entry

    def entry(self, name: str) -> T:
        """The entry ``name``, or a one-line error listing the known names."""
        if name not in self:
            raise NmechError(f"unknown {self.what} {name!r}; choose from {', '.join(self)}")
        return self[name]
