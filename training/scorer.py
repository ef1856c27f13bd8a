"""Train the answer scorer (outcome reward model): ``python -m training.scorer --config training/configs/scorer.yaml``.

Pairs (same problem, a correct vs a wrong answered sample) come from a recorded trace pool or from our run
records; problems are split into training and hold-out *by problem*; trl's ``RewardTrainer`` trains a
``num_labels=1`` sequence classifier from ``model``; ``output_dir`` then holds the model, its tokenizer and
``scorer.json`` (input format, the split, hold-out pair accuracy), ready for :class:`kit.learn.scorer.Scorer`
and the ``scorer`` selection strategy. See ``docs/selection.md``.

The config *is* trl's ``RewardConfig`` (:class:`ScorerConfig` adds the kit's keys), parsed by trl's
``TrlParser``: every trl key works in the YAML and as ``--key value``; ``max_length`` is both trl's and the
input format's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trl import RewardConfig

from kit.learn.data import DataError
from kit.learn.scorer import InputFormat, TrainResult, split_problems, train_scorer
from kit.offline.selection import ProblemCandidates, problems_from_pool, problems_from_records
from training.common import cli, resolve_model


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ScorerConfig(RewardConfig):
    """trl's :class:`trl.RewardConfig` plus where the pairs come from, the split and the input format."""

    model: str = field(default="tiny", metadata=_help(
        "Base model folder or hub id (a causal LM; a scalar head is added); 'tiny': the offline tiny Qwen2."))
    pool: str | None = field(default="skythought_aime24", metadata=_help(
        "Trace pool (bundled name or folder) to build pairs from; or set records instead (and pool: null)."))
    records: str | None = field(default=None, metadata=_help(
        "A records.jsonl of our runs (finished samples; gold and problem text from its problem events)."))
    problems: str | None = field(default=None, metadata=_help(
        "Problem set (bundled name or file) replacing the recorded problem texts of records (older records "
        "without texts need it)."))
    profile: str = field(default="aimo2", metadata=_help("Answer normalisation of trace pools (Profile.to_answer)."))
    holdout_fraction: float = 0.3
    split_seed: int = 0
    pairs_per_problem: int = 16
    max_problem_tokens: int = field(default=256, metadata=_help(
        "Tokens of the problem statement kept at the start of each input."))
    keep: Literal["tail", "head"] = field(default="tail", metadata=_help("Which end of a long sample to keep."))

    def __post_init__(self) -> None:
        if self.pool in ("", "null", "none"):
            self.pool = None
        if (self.pool is None) == (self.records is None):
            raise ValueError("set exactly one of 'pool' and 'records'")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"'holdout_fraction' must be in [0, 1), got {self.holdout_fraction}")
        self.input_format()
        super().__post_init__()

    def input_format(self) -> InputFormat:
        """How (problem, sample) becomes the scorer's input: trl's ``max_length`` and the kit's two keys."""
        if self.max_length is None:
            raise ValueError("max_length: required (tokens per scorer input)")
        return InputFormat(max_length=self.max_length, max_problem_tokens=self.max_problem_tokens, keep=self.keep)


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
    return train_scorer(
        resolve_model(cfg.model), [p for p in problems if p[0] not in held], cfg.output_dir,
        holdout=[p for p in problems if p[0] in held], fmt=cfg.input_format(), args=cfg,
        pairs_per_problem=cfg.pairs_per_problem, source=source,
        extra_meta={"config_model": cfg.model, "split_seed": cfg.split_seed})


def main(argv: list[str] | None = None) -> int:
    return cli("python -m training.scorer", __doc__, ScorerConfig, lambda c: run(c).summary(),
               "training/configs/scorer.yaml", argv)


if __name__ == "__main__":
    raise SystemExit(main())
