"""Train the answer scorer (outcome reward model): ``python -m training.scorer --config training/configs/scorer.yaml``.

Pairs (same problem, a correct vs a wrong answered sample) come from a recorded trace pool or from our run
records; problems are split into training and hold-out *by problem*; trl's ``RewardTrainer`` trains a
``num_labels=1`` sequence classifier from ``model``; the folder ``out`` then holds the model, its
tokenizer and ``scorer.json`` (input format, the split, hold-out pair accuracy), ready for
:class:`kit.learn.scorer.Scorer` and the ``scorer`` selection strategy. See ``docs/selection.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kit.learn.data import DataError
from kit.learn.scorer import InputFormat, TrainResult, TrainSettings, split_problems, train_scorer
from kit.offline.selection import ProblemCandidates, problems_from_pool, problems_from_records
from training.common import cli, resolve_model


@dataclass
class ScorerConfig:
    model: str = "tiny"
    """Base model folder or hub id (a causal LM; a scalar head is added); ``tiny``: the offline tiny Qwen2."""
    out: str = "runs/scorer"
    pool: str | None = "skythought_aime24"
    """Trace pool (bundled name or folder) to build pairs from; or set ``records`` instead."""
    records: str | None = None
    """A ``records.jsonl`` of our runs (finished samples; gold and problem text from its ``problem`` events)."""
    problems: str | None = None
    """Problem set (bundled name or file) replacing the recorded problem texts of ``records`` (older records
    without texts need it)."""
    profile: str = "aimo2"
    """Answer normalisation of trace pools (``Profile.to_answer``)."""
    holdout_fraction: float = 0.3
    split_seed: int = 0
    pairs_per_problem: int = 16
    format: InputFormat = field(default_factory=InputFormat)
    """How (problem, sample) becomes the scorer's input: ``max_length``, ``max_problem_tokens``, ``keep``."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """The trainer knobs (``learning_rate``, ``max_steps``, batch sizes, ...): ``kit.learn.scorer.TrainSettings``."""

    def __post_init__(self) -> None:
        if (self.pool is None) == (self.records is None):
            raise ValueError("set exactly one of 'pool' and 'records'")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"'holdout_fraction' must be in [0, 1), got {self.holdout_fraction}")


def load_problems_for(cfg: ScorerConfig) -> tuple[list[ProblemCandidates], str]:
    """The configured source as selection problems, and its name for messages."""
    if cfg.pool is not None:
        return problems_from_pool(cfg.pool, cfg.profile), f"pool {cfg.pool}"
    from kit.runtime.problems import load_problems

    assert cfg.records is not None
    texts = None
    if cfg.problems is not None:
        try:
            texts = {p.id: p.problem for p in load_problems(cfg.problems)}
        except ValueError as exc:  # ProblemFileError
            raise DataError(str(exc)) from None
    problems = problems_from_records(cfg.records, texts)
    missing = sorted(pid for pid, text, _, _ in problems if not text)
    if missing:
        where = f"the problem set {cfg.problems} (field 'id')" if cfg.problems else "the records (no 'problem' text)"
        raise DataError(f"{cfg.records}: no text for problem id(s) {missing[:5]} in {where}: set 'problems' to "
                        "the problem set the run solved")
    return problems, str(cfg.records)


def run(cfg: ScorerConfig) -> TrainResult:
    problems, source = load_problems_for(cfg)
    _, hold_ids = split_problems([p[0] for p in problems], cfg.holdout_fraction, cfg.split_seed)
    held = set(hold_ids)
    result = train_scorer(
        resolve_model(cfg.model), [p for p in problems if p[0] not in held], cfg.out,
        holdout=[p for p in problems if p[0] in held], fmt=cfg.format, settings=cfg.train,
        pairs_per_problem=cfg.pairs_per_problem, source=source,
        extra_meta={"config_model": cfg.model, "split_seed": cfg.split_seed})
    return result


def main(argv: list[str] | None = None) -> int:
    return cli("python -m training.scorer", __doc__, ScorerConfig, lambda c: run(c).summary(),
               "training/configs/scorer.yaml", argv)


if __name__ == "__main__":
    raise SystemExit(main())
