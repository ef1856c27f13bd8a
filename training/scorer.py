"""Train the answer scorer (outcome reward model): ``python -m training.scorer --config training/configs/scorer.yaml``.

Pairs (same problem, a correct vs a wrong answered sample) come from a recorded trace pool or from our run
records; problems are split into training and hold-out *by problem*; trl's ``RewardTrainer`` trains a
``num_labels=1`` sequence classifier from ``model``; the folder ``out`` then holds the model, its
tokenizer and ``scorer.json`` (input format, the split, hold-out pair accuracy), ready for
:class:`kit.scorer.Scorer` and the ``scorer`` selection strategy. See ``docs/selection.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kit.data import DataError
from kit.scorer import InputFormat, TrainResult, TrainSettings, split_problems, train_scorer
from kit.selection import ProblemCandidates, problems_from_pool, problems_from_records
from training.common import cli, resolve_model


@dataclass
class ScorerConfig:
    model: str = "tiny"
    """Base model folder or hub id (a causal LM; a scalar head is added); ``tiny``: the offline tiny Qwen2."""
    out: str = "runs/scorer"
    pool: str | None = "skythought_aime24"
    """Trace pool (bundled name or folder) to build pairs from; or set ``records`` instead."""
    records: str | None = None
    """A ``records.jsonl`` of our runs (finished samples; gold from its ``problem`` events)."""
    problems: str | None = None
    """Problem set (bundled name or file) giving the problem texts of ``records`` (records hold ids only)."""
    profile: str = "aimo2"
    """Answer normalisation of trace pools (``Profile.to_answer``)."""
    holdout_fraction: float = 0.3
    split_seed: int = 0
    pairs_per_problem: int = 16
    max_length: int = 1024
    max_problem_tokens: int = 256
    keep: Literal["tail", "head"] = "tail"
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    center_rewards_coefficient: float | None = 0.01
    warmup_steps: float = 0.0
    logging_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.pool is None) == (self.records is None):
            raise ValueError("set exactly one of 'pool' and 'records'")
        if self.records is not None and self.problems is None:
            raise ValueError("'records' needs 'problems' (the problem texts: run records hold only ids)")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"'holdout_fraction' must be in [0, 1), got {self.holdout_fraction}")
        InputFormat(self.max_length, self.max_problem_tokens, self.keep)  # validates the format fields

    def input_format(self) -> InputFormat:
        return InputFormat(max_length=self.max_length, max_problem_tokens=self.max_problem_tokens, keep=self.keep)

    def settings(self) -> TrainSettings:
        return TrainSettings(
            learning_rate=self.learning_rate, num_train_epochs=self.num_train_epochs, max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            gradient_checkpointing=self.gradient_checkpointing,
            center_rewards_coefficient=self.center_rewards_coefficient, warmup_steps=self.warmup_steps,
            logging_steps=self.logging_steps, seed=self.seed)


def load_problems_for(cfg: ScorerConfig) -> tuple[list[ProblemCandidates], str]:
    """The configured source as selection problems, and its name for messages."""
    if cfg.pool is not None:
        return problems_from_pool(cfg.pool, cfg.profile), f"pool {cfg.pool}"
    from kit.problems import load_problems

    assert cfg.records is not None and cfg.problems is not None
    try:
        texts = {p.id: p.problem for p in load_problems(cfg.problems)}
    except ValueError as exc:  # ProblemFileError
        raise DataError(str(exc)) from None
    problems = problems_from_records(cfg.records, texts)
    missing = sorted(pid for pid, text, _, _ in problems if not text)
    if missing:
        raise DataError(f"{cfg.records}: problem id(s) {missing[:5]} not found in the problem set {cfg.problems} "
                        "(field 'id'): use the problem set the run solved")
    return problems, str(cfg.records)


def run(cfg: ScorerConfig) -> TrainResult:
    problems, source = load_problems_for(cfg)
    _, hold_ids = split_problems([p[0] for p in problems], cfg.holdout_fraction, cfg.split_seed)
    held = set(hold_ids)
    result = train_scorer(
        resolve_model(cfg.model), [p for p in problems if p[0] not in held], cfg.out,
        holdout=[p for p in problems if p[0] in held], fmt=cfg.input_format(), settings=cfg.settings(),
        pairs_per_problem=cfg.pairs_per_problem, source=source,
        extra_meta={"config_model": cfg.model, "split_seed": cfg.split_seed})
    return result


def main(argv: list[str] | None = None) -> int:
    return cli("python -m training.scorer", __doc__, ScorerConfig, lambda c: run(c).summary(),
               "training/configs/scorer.yaml", argv)


if __name__ == "__main__":
    raise SystemExit(main())
