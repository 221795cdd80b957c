"""Where nmech keeps derived files between runs (decoded data sets, generated kernels).

``$NMECH_CACHE``, else ``$XDG_CACHE_HOME/nmech``, else ``~/.cache/nmech``. Nothing there is
ever needed for correctness: every entry is keyed by a hash of what it was built from.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$NMECH_CACHE``, else ``$XDG_CACHE_HOME/nmech``, else ``~/.cache/nmech``."""
    if os.environ.get("NMECH_CACHE"):
        return Path(os.environ["NMECH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nmech"
