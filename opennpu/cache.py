"""Where opennpu keeps downloaded wheels, extracted models and converted files."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$OPENNPU_CACHE``, else ``$XDG_CACHE_HOME/opennpu``, else ``~/.cache/opennpu``."""
    env = os.environ.get("OPENNPU_CACHE")
    if env:
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opennpu"
    root.mkdir(parents=True, exist_ok=True)
    return root
