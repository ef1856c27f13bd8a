"""What solving produced: one :class:`SampleResult` per sample and a :class:`ProblemResult` per problem.

These are the fields the run records carry (``sample`` and ``problem`` events, :mod:`kit.runtime.records`)
and that the offline reader reads back (:mod:`kit.offline.runs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kit.runtime.sandbox.result import OK_STATUSES
from kit.runtime.voting import VoteKind, vote_kind

DONE_REASONS = frozenset({"stop", "length", "repetition", "context"})
"""Finish reasons of samples that ended on their own; aborted/cancelled/errored ones were cut by early
stopping or a failure, not by the model. Votes, evaluation and training targets count only these."""


@dataclass
class SampleResult:
    index: int
    prompt: str
    kind: str
    temperature: float
    top_p: float
    min_p: float = 0.0
    agent: int = 0
    """Position in the sampling schedule (``SolverConfig.sampling``) this sample used."""
    text: str = ""
    tokens: int = 0
    code: list[dict] = field(default_factory=list)
    raw_answer: str | None = None
    answer: int | None = None
    finish_reason: str = "pending"
    """stop | length | abort | repetition | context | error | cancelled | pending."""
    started: float = 0.0
    finished: float | None = None
    error: str | None = None
    prompt_tokens: int = 0
    """Tokens of the sample's first prompt (its context use starts there)."""
    entropy_mean: float | None = None
    """Mean token entropy (bits, top-k log-probabilities; :mod:`kit.runtime.confidence`); None without them."""
    entropy_tail: float | None = None
    """Mean token entropy over the last ``SolverConfig.entropy_tail`` tokens."""
    entropy_median: float | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason in DONE_REASONS

    @property
    def vote_kind(self) -> VoteKind:
        """What its vote counts as (:data:`kit.runtime.voting.VOTE_KINDS`): no code, code all ran, code failed."""
        return vote_kind(len(self.code), sum(c.get("status") not in OK_STATUSES for c in self.code))


@dataclass
class ProblemResult:
    problem_id: str
    answer: int
    reason: str
    """Why solving stopped: a stop rule ("agreement: …", "certain", "quorum: …", "hopeless: …"), "all
    finished", "deadline", "cancelled" (the caller gave up: ``predict``'s timeout), or "error"."""
    samples: list[SampleResult]
    tally: dict[int, float]
    tokens: int
    seconds: float
    error: str | None = None
    prompt_tokens: int = 0
    """Mean prompt tokens over the samples (the throughput model's context term)."""
    engine_dead: str | None = None
    """The engine died during the solve (why): the session restarts it and may retry the problem."""

    @property
    def samples_finished(self) -> int:
        return sum(s.done for s in self.samples)

    @property
    def code_calls(self) -> int:
        return sum(len(s.code) for s in self.samples)
