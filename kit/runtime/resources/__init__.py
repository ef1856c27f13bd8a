"""The data bundled with the kit (problem sets, recorded traces; see SOURCES.md here), inside the runtime
layer: the submission notebook embeds it with the runtime's modules."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    """Path of a bundled file, with a clear error if it is missing (e.g. a partial install)."""
    path = ROOT.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"bundled resource {'/'.join(parts)!r} not found under {ROOT}")
    return path


CACHE_ENV = "AIMO_KIT_CACHE"


def cache_dir(*parts: str) -> Path:
    """The kit's cache (built tiny models, the unpacked o200k file): ``$AIMO_KIT_CACHE`` or
    ``~/.cache/aimo-kit``, joined with ``parts``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "aimo-kit").joinpath(*parts)
