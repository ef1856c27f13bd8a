"""How confident a sample was: token entropies from the top-k log-probabilities the engine streams.

The AIMO3 winners weighted each attempt's vote by its confidence (docs/design.md "AIMO3"): the per-token
entropy over the top-5 log-probabilities, ``H = −Σ p·log2 p`` with ``p = exp(logprob)`` (the top-k as
the engine returns them, not renormalised), averaged over the attempt's tokens; the 2nd place used the
mean over the last tokens before the answer instead (a tail window), and the median per answer. A
:class:`Confidence` accumulates one sample's token entropies as its chunks stream (a few microseconds
per token) and summarises them into the ``entropy_*`` fields of the sample's record.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

TAIL_TOKENS = 256
"""Tokens of the tail window (2nd place AIMO3: 256 in the write-up, 96 in the submitted notebook)."""
ENTROPY_FLOOR = 1e-9
"""A weight is ``1 / max(H, ENTROPY_FLOOR)``: a fully certain sample weighs a lot, not infinitely."""


def token_entropy(top_logprobs: Sequence[float]) -> float:
    """``−Σ p·log2 p`` over one position's top-k log-probabilities (natural log, as engines give them)."""
    total = 0.0
    for lp in top_logprobs:
        if lp > -700.0:  # exp underflows below: those terms are 0
            p = math.exp(lp)
            total -= p * lp
    return total / math.log(2.0)


def weight_of(entropy: float | None) -> float:
    """The vote weight of a sample with this entropy (1 when the engine gave no log-probabilities)."""
    return 1.0 if entropy is None else 1.0 / max(entropy, ENTROPY_FLOOR)


@dataclass
class Confidence:
    """One sample's token entropies, in generation order."""

    entropies: list[float] = field(default_factory=list)

    def add(self, positions: Iterable[Sequence[float]]) -> None:
        self.entropies.extend(token_entropy(p) for p in positions if p)

    def summary(self, tail: int = TAIL_TOKENS) -> dict[str, float | None]:
        """``entropy_mean`` (all tokens), ``entropy_tail`` (the last ``tail``), ``entropy_median``; None
        each when no log-probabilities came."""
        h = self.entropies
        if not h:
            return {"entropy_mean": None, "entropy_tail": None, "entropy_median": None}
        last = h[-tail:] if tail > 0 else h
        return {"entropy_mean": round(math.fsum(h) / len(h), 6), "entropy_tail": round(math.fsum(last) / len(last), 6),
                "entropy_median": round(statistics.median(h), 6)}
