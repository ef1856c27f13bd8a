"""Competition profiles: the one place that knows each AIMO competition's rules.

Every part of the kit that needs an answer range, a modulus, a time limit or the gateway's names reads
them from a :class:`Profile`, so switching AIMO2 -> AIMO3 is one argument, not a hunt for constants.
Facts come from the competitions' pages and their ``kaggle_evaluation`` packages (docs/design.md
"Kaggle gateway"); values we could only assume are marked as such in ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kit.runtime.answers import to_int_answer


@dataclass(frozen=True)
class Profile:
    """Rules of one competition.

    ``modulus`` is applied to integer answers before the range check (AIMO1/2 ask for the answer
    mod 1000); with ``modulus=None`` an out-of-range integer is an abstention, never clamped.
    """

    name: str
    answer_min: int
    answer_max: int
    modulus: int | None
    total_seconds: float
    """Whole-notebook limit (GPU time) in seconds."""
    per_call_seconds: float | None
    """Deadline of every ``predict`` call after the first (None: no per-call deadline)."""
    server_start_seconds: float | None
    """The inference server must be up within this many seconds of the notebook start."""
    n_problems: int
    """Problems per leaderboard run; the gateway does not announce it, this is the convention."""
    gateway_module: str
    gateway_class: str
    competition_slug: str
    input_columns: tuple[str, ...] = ("id", "problem")
    fallback_answer: int = 0
    modulus_wording: str = ""
    """Sentence added to prompts so the model answers in the expected form."""
    notes: tuple[str, ...] = field(default=())
    runs_twice: bool = False
    """The private leaderboard runs the notebook twice (AIMO3): a problem scores 1 when both runs are right,
    0.5 when one is; the simulator reports that penalized score."""

    def __post_init__(self) -> None:
        if self.answer_min > self.answer_max:
            raise ValueError(f"profile {self.name!r}: answer_min {self.answer_min} > answer_max {self.answer_max}")
        if not self.answer_min <= self.fallback_answer <= self.answer_max:
            raise ValueError(f"profile {self.name!r}: fallback_answer {self.fallback_answer} out of range")
        if self.modulus is not None and self.modulus <= 0:
            raise ValueError(f"profile {self.name!r}: modulus must be positive, got {self.modulus}")

    def in_range(self, value: int) -> bool:
        return self.answer_min <= value <= self.answer_max

    def to_answer(self, text: str | None) -> int | None:
        """Canonical integer answer for this competition from an extracted answer string, or None."""

        return to_int_answer(text, self.modulus, bounds=(self.answer_min, self.answer_max))

    def with_overrides(self, **changes: object) -> Profile:
        """A copy with some fields changed (e.g. a shorter ``total_seconds`` for a dry-run)."""
        return replace(self, **changes)  # type: ignore[arg-type]


AIMO1 = Profile(
    name="aimo1",
    answer_min=0,
    answer_max=999,
    modulus=1000,
    total_seconds=9 * 3600,
    per_call_seconds=None,
    server_start_seconds=None,
    n_problems=50,
    gateway_module="aimo",
    gateway_class="make_env",
    competition_slug="ai-mathematical-olympiad-prize",
    modulus_wording="The answer is an integer from 0 to 999; if needed, give it modulo 1000.",
    notes=("AIMO1 used the iterator API `aimo.make_env().iter_test()`, not kaggle_evaluation.",),
)

AIMO2 = Profile(
    name="aimo2",
    answer_min=0,
    answer_max=999,
    modulus=1000,
    total_seconds=5 * 3600,
    per_call_seconds=1800,
    server_start_seconds=900,
    n_problems=50,
    gateway_module="kaggle_evaluation.aimo_2_inference_server",
    gateway_class="AIMO2InferenceServer",
    competition_slug="ai-mathematical-olympiad-progress-prize-2",
    modulus_wording="The answer is an integer from 0 to 999; if needed, give it modulo 1000.",
    notes=("5 h on 4xL4; the first predict call has no deadline (load the model there).",),
)

AIMO3 = Profile(
    name="aimo3",
    answer_min=0,
    answer_max=99999,
    modulus=None,
    total_seconds=5 * 3600,
    per_call_seconds=9 * 3600,
    server_start_seconds=900,
    n_problems=50,
    gateway_module="kaggle_evaluation.aimo_3_inference_server",
    gateway_class="AIMO3InferenceServer",
    competition_slug="ai-mathematical-olympiad-progress-prize-3",
    modulus_wording="The answer is an integer from 0 to 99999.",
    runs_twice=True,
    notes=(
        "No implicit modulus: an out-of-range answer is an abstention.",
        "Private LB runs the notebook twice (both right = 1, one = 0.5): keep runs deterministic.",
        "total_seconds and n_problems are assumed equal to AIMO2's; check the competition page.",
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (AIMO1, AIMO2, AIMO3)}
DEFAULT_PROFILE = "aimo2"


def get_profile(name: str | Profile | None = None) -> Profile:
    """Look a profile up by name (case-insensitive); ``None`` gives the default (AIMO2)."""
    if isinstance(name, Profile):
        return name
    key = (name or DEFAULT_PROFILE).strip().lower()
    try:
        return PROFILES[key]
    except KeyError:
        raise ValueError(f"unknown competition profile {name!r}; choose one of {sorted(PROFILES)}") from None
