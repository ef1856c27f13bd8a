"""Train the difficulty / token predictor: ``python -m training.difficulty --config training/configs/difficulty.yaml``.

Problem text → log of the tokens a correct answer needed (targets: :func:`kit.learn.difficulty.targets_frame`
over run records and trace pools), a one-output ``AutoModelForSequenceClassification`` regressor
(``problem_type="regression"``: MSE on standardised log-tokens) trained with transformers ``Trainer``.
A held-out split *by problem* measures Spearman/Pearson/MAE against a constant prediction (the
training targets' geometric mean: what the regressor outputs when the text tells it nothing); the model, its tokenizer, ``difficulty.json`` (target rule, label normalisation, the hook's
reference, metrics) and the held-out predictions are written to ``out``.

:func:`crossfit` trains one model per fold on the other folds and predicts the fold, so every problem of
a small pool gets a prediction from a model that never saw it — what the simulator needs to measure the
hook's effect without flattering it (``bench/difficulty.py``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kit.learn.data import DataError
from kit.learn.difficulty import (
    CLIP,
    DifficultyPredictor,
    PredictorMeta,
    ProblemSamples,
    TargetRule,
    kfold,
    problems_from_records,
    problems_from_traces,
    regression_metrics,
    resolve_encoder,
    split_by_problem,
    targets_frame,
)
from kit.offline.tokenizers import resolve_tokenizer
from training.common import cli, on_gpu


@dataclass
class SourceConfig:
    path: str
    """A bundled trace pool (``skythought_aime24``, ``nemoskills``, ``tora_gsm8k``), a trace folder/file,
    or a run-records ``records.jsonl``."""
    kind: Literal["traces", "records"] = "traces"
    problems: str | None = None
    """Records only: the problem set holding the texts (default: the one named in the run's options)."""


@dataclass
class DifficultyConfig:
    base_model: str = "answerdotai/ModernBERT-base"
    """Encoder to fine-tune; ``tiny-encoder`` is the offline random one (tests)."""
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig("skythought_aime24")])
    profile: str = "aimo2"
    """Answer normalisation when grading trace samples without a recorded verdict."""
    tokenizer: str | None = None
    """Counts sample tokens (traces; records without counts): None = the approximate tokenizer; use the
    *generating* model's tokenizer for exact targets."""
    target: TargetRule = field(default_factory=TargetRule)
    eval_fraction: float = 0.2
    seed: int = 0
    max_length: int = 512
    batch_size: int = 16
    learning_rate: float = 5e-5
    epochs: float = 10.0
    max_steps: int = -1
    """> 0 overrides ``epochs`` (tests)."""
    warmup: float = 0.1
    """Warm-up: a fraction of the steps if < 1, else a step count (transformers' ``warmup_steps``)."""
    weight_decay: float = 0.01
    log_every: int = 10
    """Trainer log (loss, grad norm) every N steps; 0 = none (benchmarks training many fold models)."""
    out: str = "runs/difficulty"

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("sources: at least one source is needed")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        for name in ("max_length", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def load_targets(cfg: DifficultyConfig):
    """Targets of every source in one frame; ids are prefixed with the source index when there are
    several (trace pools reuse ids such as ``0``)."""
    import polars as pl

    tokenizer = resolve_tokenizer(cfg.tokenizer or "approx")
    problems: list[ProblemSamples] = []
    for i, src in enumerate(cfg.sources):
        if src.kind == "records":
            got = problems_from_records(src.path, problems=src.problems, tokenizer=tokenizer)
        else:
            got = problems_from_traces(src.path, profile=cfg.profile, tokenizer=tokenizer)
        if len(cfg.sources) > 1:
            got = [ProblemSamples(f"{i}:{p.pid}", p.text, p.samples) for p in got]
        problems.extend(got)
    frame = targets_frame(problems, cfg.target)
    empty = frame.filter(pl.col("text").str.strip_chars() == "")
    if not empty.is_empty():
        raise DataError(f"problem {empty['pid'][0]!r} has an empty text (field 'problem'): nothing to learn from")
    return frame


def train_predictor(train, cfg: DifficultyConfig, out: str | Path) -> DifficultyPredictor:
    """Fine-tune ``cfg.base_model`` on ``train`` (a targets frame) and save model, tokenizer and metadata
    to ``out``. Labels are standardised log-tokens (token needs span two orders of magnitude; MSE on raw
    counts would be dominated by the censored 30k-token problems)."""
    import numpy as np
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    out = Path(out)
    base = resolve_encoder(cfg.base_model)
    logs = np.log(train["tokens"].to_numpy())
    mean, std = float(logs.mean()), float(logs.std())
    std = std if std > 1e-6 else 1.0
    set_seed(cfg.seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, problem_type="regression")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    data = Dataset.from_dict({"text": train["text"].to_list(), "label": ((logs - mean) / std).tolist()})
    data = data.map(lambda b: tok(b["text"], truncation=True, max_length=cfg.max_length), batched=True,
                    remove_columns=["text"])
    gpu = on_gpu()
    with tempfile.TemporaryDirectory(prefix="difficulty-trainer-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, warmup_steps=cfg.warmup,
            weight_decay=cfg.weight_decay, lr_scheduler_type="cosine", save_strategy="no",
            logging_strategy="steps" if cfg.log_every > 0 else "no", logging_steps=max(cfg.log_every, 1),
            report_to="none", use_cpu=not gpu, bf16=gpu, seed=cfg.seed, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tok),
                          processing_class=tok)
        trainer.train()
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    meta = PredictorMeta(base_model=cfg.base_model, log_mean=mean, log_std=std, reference_tokens=1.0,
                         target=dataclasses.asdict(cfg.target), clip=CLIP, max_length=cfg.max_length, train_problems=train.height,
                         sources=[s.path for s in cfg.sources])
    predictor = DifficultyPredictor(trainer.model, tok, meta)
    predictor.meta = _with(meta, reference_tokens=statistics.median(predictor.predict(train["text"].to_list())))
    predictor.save_meta(out)
    return predictor


def _with(meta: PredictorMeta, **changes: Any) -> PredictorMeta:
    from dataclasses import replace

    return replace(meta, **changes)


@dataclass
class TrainReport:
    out: str
    train_problems: int
    eval_problems: int
    censored: int
    metrics: dict[str, float]

    def __str__(self) -> str:
        m = self.metrics
        held = (f"held-out ({self.eval_problems} problems): Spearman {m['spearman']:.3f}, Pearson(log) "
                f"{m['pearson_log']:.3f}, MAE(log) {m['mae_log']:.3f} vs constant {m['mae_log_baseline']:.3f}"
                if m else "no held-out split (eval_fraction 0)")
        return (f"difficulty predictor: {self.train_problems} training problems ({self.censored} censored "
                f"targets in all); {held}; saved to {self.out}")


def run(cfg: DifficultyConfig) -> TrainReport:
    """Targets → split by problem → train → held-out metrics → save."""
    import polars as pl

    frame = load_targets(cfg)
    train_ids, eval_ids = split_by_problem(frame["pid"].to_list(), cfg.eval_fraction, cfg.seed)
    train = frame.filter(pl.col("pid").is_in(train_ids))
    held = frame.filter(pl.col("pid").is_in(eval_ids))
    out = Path(cfg.out)
    predictor = train_predictor(train, cfg, out)
    metrics: dict[str, float] = {}
    if held.height:
        pred = predictor.predict(held["text"].to_list())
        baseline = math.exp(predictor.meta.log_mean)
        metrics = regression_metrics(pred, held["tokens"].to_list(), baseline=baseline)
        held.with_columns(predicted=pl.Series(pred)).drop("text").write_ndjson(out / "heldout.jsonl")
    predictor.meta = _with(predictor.meta, eval_problems=held.height, metrics=metrics)
    predictor.save_meta(out)
    return TrainReport(str(out), train.height, held.height, int(frame["censored"].sum()), metrics)


def crossfit(cfg: DifficultyConfig, frame, folds: int):
    """Out-of-fold predictions: ``frame`` plus ``predicted`` (tokens) and ``factor`` (the hook's factor
    under the fold model's own reference, exactly as a deployed predictor would compute it) and ``fold``."""
    import polars as pl

    parts = []
    for k, ids in enumerate(kfold(frame["pid"].to_list(), folds, cfg.seed)):
        held = frame.filter(pl.col("pid").is_in(ids))
        with tempfile.TemporaryDirectory(prefix="difficulty-fold-") as tmp:
            predictor = train_predictor(frame.filter(~pl.col("pid").is_in(ids)), cfg, tmp)
        pred = predictor.predict(held["text"].to_list())
        parts.append(held.with_columns(predicted=pl.Series(pred, dtype=pl.Float64),
                                       factor=pl.Series([predictor.factor(p) for p in pred], dtype=pl.Float64),
                                       fold=pl.lit(k)))
    return pl.concat(parts)


def quiet() -> None:
    """Training CLI and benchmark output without per-load weight reports and map/save progress bars."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _run_quietly(cfg: DifficultyConfig) -> TrainReport:
    quiet()  # after the config is validated: a typo fails in a second, not after importing transformers
    return run(cfg)


def main(argv: list[str] | None = None) -> int:
    return cli("python -m training.difficulty", __doc__, DifficultyConfig, _run_quietly,
               "training/configs/difficulty.yaml", argv)


__all__ = ["DifficultyConfig", "SourceConfig", "TrainReport", "crossfit", "load_targets", "main", "quiet", "run",
           "train_predictor"]

if __name__ == "__main__":
    sys.exit(main())
