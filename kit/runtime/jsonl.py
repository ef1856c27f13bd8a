"""Reading JSON-lines files with errors that name the file and the line: the one loop behind every reader.

Run records, trace files, training datasets and replay recordings are all one JSON object per line;
each reader raises its own error type (the caller's ``error``), but how a line is read, what a bad line
says, and how a run killed mid-write is handled are the same everywhere.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def json_lines(path: str | Path, error: type[Exception], *, partial_last_line: bool = False
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line of ``path`` (``.gz`` files are decompressed).

    A line that is not JSON or not an object raises ``error`` naming ``path:line``. With
    ``partial_last_line`` an unparsable *last* line without its newline ends the file instead: what a run
    killed mid-write leaves, with everything before it good."""
    path = Path(path)
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if partial_last_line and not line.endswith("\n"):
                    return
                raise error(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise error(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
            yield lineno, obj
