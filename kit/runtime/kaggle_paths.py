"""Paths under ``/kaggle/input`` in both of Kaggle's mount layouts.

Kaggle moved attached inputs: competitions from ``/kaggle/input/<slug>/`` to
``/kaggle/input/competitions/<slug>/``, models from ``/kaggle/input/<model>/<framework>/<variation>/
<version>`` to ``/kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>`` (docs/design.md
"AIMO3"), and a notebook written for one layout meets the other. A configured path is used as given when
it exists, else its twin in the other layout.
"""

from __future__ import annotations

from pathlib import Path

KAGGLE_INPUT = Path("/kaggle/input")


def input_candidates(path: str | Path, root: Path = KAGGLE_INPUT) -> list[Path]:
    """``path`` first, then where the same input sits in the other mount layout (existing ones only for
    the globbed owner folders)."""
    path = Path(path)
    try:
        rel = path.relative_to(root)
    except ValueError:
        return [path]
    parts = rel.parts
    out = [path]
    if not parts:
        return out
    if parts[0] == "competitions" and len(parts) >= 2:
        out.append(root.joinpath(*parts[1:]))
    elif parts[0] in ("models", "datasets") and len(parts) >= 3:  # <kind>/<owner>/<name>/...
        out.append(root.joinpath(*parts[2:]))
    else:  # the old layout: <name>/...
        out.append(root / "competitions" / rel)
        for kind in ("models", "datasets"):
            out += sorted(p for p in (root / kind).glob(f"*/{rel.as_posix()}")) if (root / kind).is_dir() else []
    return out


def find_input(path: str | Path, root: Path = KAGGLE_INPUT) -> Path:
    """The first existing of :func:`input_candidates`, else ``path`` unchanged (its absence is reported by
    whoever opens it)."""
    for candidate in input_candidates(path, root):
        if candidate.exists():
            return candidate
    return Path(path)
