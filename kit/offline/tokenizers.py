"""Token counts and token boundaries of recorded text, for budget curves, lengths and targets.

One interface (:class:`TokenSplitter`: ``count`` a text, or the character offsets where its tokens end)
with two implementations: the kit's approximate tokenizer (:class:`kit.runtime.tokens.ApproxTokenizer`,
what the replay engine and the simulator count with) and a model's own fast tokenizer (:class:`HFTokenizer`). Every offline
reader, the budget curve and the difficulty targets count through it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from kit.runtime.tiny_model import build_tiny_model
from kit.runtime.tokens import ApproxTokenizer


class TokenSplitter(Protocol):
    """Where the tokens of a text end (character offsets): cutting at token ``B`` is ``text[:ends[B-1]]``."""

    name: str
    identity: str
    """Equal for the same tokenizer (the mismatch check compares these)."""

    def ends(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def count(self, text: str) -> int: ...


class HFTokenizer:
    """A model's own (fast) tokenizer; offsets come from the Rust backend in batches."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # transformers raises OSError, ValueError, TypeError... for bad folders
            raise ValueError(f"cannot load a tokenizer from {path}: {type(exc).__name__}: {exc}") from None
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"{path}: the budget curve needs a fast tokenizer (tokenizer.json) for offsets")
        self._backend = backend
        self.name = name or str(path)
        self.identity = "hf:" + hashlib.sha256(backend.to_str().encode()).hexdigest()

    def count(self, text: str) -> int:
        return len(self._backend.encode(text, add_special_tokens=False).ids)

    def ends(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for enc in self._backend.encode_batch(list(texts), add_special_tokens=False):
            e = np.fromiter((o[1] for o in enc.offsets), dtype=np.int64, count=len(enc.offsets))
            # bytes of one character split over several tokens share offsets; keep the cut monotone
            out.append(np.maximum.accumulate(e) if len(e) else e)
        return out


def resolve_tokenizer(spec: str | Path) -> TokenSplitter:
    """``approx`` (kit.runtime.tokens.ApproxTokenizer), ``tiny`` (the built-in tiny model's) or a tokenizer folder."""
    if str(spec) == "approx":
        return ApproxTokenizer()
    if str(spec) == "tiny":
        return HFTokenizer(build_tiny_model(), name="tiny")
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer not found: {path} (use approx, tiny or a model/tokenizer folder)")
    return HFTokenizer(path)


def own_tokenizer(model: str | None) -> TokenSplitter | None:
    """The tokenizer a recorded run generated with, when it is available here."""
    if not model:
        return None
    if model.startswith("replay:"):
        return ApproxTokenizer()  # the replay engine counts with ApproxTokenizer
    path = Path(model)
    if path.is_dir() and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return HFTokenizer(path)
    return None
