"""Outcome reward model ("scorer") for reranking sample answers: pairs → trl ``RewardTrainer`` → :class:`Scorer`.

What it learns: for one problem, a sample that reached the gold answer should score higher than one that
reached a wrong answer (an outcome-supervised reward model, Bradley–Terry loss ``-log σ(r_c − r_r)``, as
trl's ``RewardTrainer`` computes it). Training pairs come from our run records or recorded trace pools:
same problem, one correct and one wrong *answered* sample (samples without an answer are never scored at
selection time, so they are not used as "rejected" either: they would teach the trivial "no box → bad").

Input format (:class:`InputFormat`, saved with the model so scoring matches training exactly):
``"Problem:\\n{problem head}\\n\\nSolution:\\n{sample tail}" + eos``, tokenized here and handed to trl as
``chosen_ids``/``rejected_ids`` (trl's pre-tokenized path; its ``max_length`` would otherwise *drop*
long pairs, and long-CoT samples are all long). The problem keeps its head (``max_problem_tokens``), the
sample its **tail** by default: the final answer and the last checks are where a right and a wrong
sample differ, and a 16k-token trace does not fit a scorer's context. No chat template: reasoning-model
templates (R1, Qwen3) strip the ``<think>`` part of assistant turns, i.e. the very text to be judged.

Held-out evaluation is by problem (:func:`split_problems`, :func:`cross_fit`): a scorer is only ever
judged on problems it never saw, since pairs of the same problem share the problem text and often the
same wrong answer.

TriMER (AIMO2) reranked samples from a multi-temperature sampler with a preference reward model; the
production recipe (a 1.5B math model as the base, on a GPU) is in ``docs/selection.md``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kit.learn.data import DataError
from kit.offline.selection import Candidate, ProblemCandidates, Strategy, scored_strategy

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import RewardConfig

META_FILE = "scorer.json"
"""Written next to the model: input format, base model, split and hold-out metrics."""
FORMAT_VERSION = 1


@dataclass(frozen=True)
class InputFormat:
    """How (problem, sample text) becomes the scorer's input ids."""

    max_length: int = 1024
    """Total tokens per input (problem + sample + eos)."""
    max_problem_tokens: int = 256
    keep: Literal["tail", "head"] = "tail"
    """Which end of a long sample to keep."""
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.max_problem_tokens < 1 or self.max_length < self.max_problem_tokens + 16:
            raise ValueError(f"input format needs max_length >= max_problem_tokens + 16 and max_problem_tokens "
                             f">= 1, got {self.max_length} and {self.max_problem_tokens}")
        if self.keep not in ("tail", "head"):
            raise ValueError(f"keep must be 'tail' or 'head', got {self.keep!r}")


CHARS_PER_TOKEN_BOUND = 16
"""Before tokenizing, a sample is cut to ``budget × 16`` characters on the kept side (a 100k-character trace
need not be tokenized to keep its last 800 tokens); real text averages 3–5 characters per token, so the cut
only ever changes the token at the cut."""


def encode(tokenizer: PreTrainedTokenizerBase, problem: str, text: str, fmt: InputFormat) -> list[int]:
    """Input ids of one (problem, sample) pair under ``fmt``."""
    head = tokenizer("Problem:\n", add_special_tokens=True)["input_ids"]
    prob = tokenizer(problem, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    prob = prob[: fmt.max_problem_tokens]
    mid = tokenizer("\n\nSolution:\n", add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    budget = fmt.max_length - len(head) - len(prob) - len(mid) - len(eos)
    cut = budget * CHARS_PER_TOKEN_BOUND
    piece = text[-cut:] if fmt.keep == "tail" else text[:cut]
    body = tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    body = body[len(body) - budget:] if fmt.keep == "tail" and len(body) > budget else body[:budget]
    return head + prob + mid + body + eos


# --- pairs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    problem_id: str
    problem: str
    chosen: str
    """Text of a sample with the gold answer."""
    rejected: str
    """Text of an answered sample with a wrong answer."""


def build_pairs(problems: Sequence[ProblemCandidates], *, pairs_per_problem: int = 16, seed: int = 0,
                source: str = "problems") -> list[Pair]:
    """Correct-vs-wrong pairs of the same problem (at most ``pairs_per_problem`` each, drawn with ``seed``
    from all combinations so every problem weighs about the same).

    Raises :class:`kit.learn.data.DataError` naming ``source`` when no problem has both a correct and a wrong
    answered sample (nothing to learn from).
    """
    if pairs_per_problem < 1:
        raise ValueError(f"pairs_per_problem must be >= 1, got {pairs_per_problem}")
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for pid, text, gold, cands in problems:
        if gold is None:
            continue
        good = [c.text for c in cands if c.answer == gold]
        bad = [c.text for c in cands if c.answer is not None and c.answer != gold]
        combos = [(g, b) for g in range(len(good)) for b in range(len(bad))]
        rng.shuffle(combos)
        pairs += [Pair(pid, text, good[g], bad[b]) for g, b in combos[:pairs_per_problem]]
    if not pairs:
        raise DataError(f"{source}: no problem has both a correct and a wrong answered sample (field 'answer' "
                        "vs gold); a scorer needs such pairs to train")
    return pairs


def split_problems(problem_ids: Sequence[str], holdout_fraction: float, seed: int = 0,
                   ) -> tuple[list[str], list[str]]:
    """(train ids, hold-out ids): a seeded shuffle of the distinct ids, the last ``holdout_fraction`` held out."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    ids = sorted(set(problem_ids))
    random.Random(seed).shuffle(ids)
    n_hold = round(len(ids) * holdout_fraction)
    return ids[: len(ids) - n_hold], ids[len(ids) - n_hold:]


# --- training ---------------------------------------------------------------------------------------


def reward_config(output_dir: str | Path, **overrides: Any) -> RewardConfig:
    """trl's :class:`~trl.RewardConfig` with the kit's scorer settings, for callers without a config file.

    ``center_rewards_coefficient`` 0.01 keeps scores near 0 (trl docs; Eisenstein et al. 2023), so
    σ(score) stays informative in the vote; no checkpoints, no trackers; weights load in float32 (trl's
    default) and on a GPU bf16 is autocast (pure-bf16 AdamW loses small updates). ``overrides`` are any
    ``RewardConfig`` keys.
    """
    from trl import RewardConfig

    gpu = _gpu()
    settings: dict[str, Any] = {"use_cpu": not gpu, "bf16": gpu, "center_rewards_coefficient": 0.01,
                                "report_to": "none", "save_strategy": "no", "seed": 0}
    return RewardConfig(output_dir=str(output_dir), **{**settings, **overrides})


@dataclass
class TrainResult:
    path: str
    train_pairs: int
    holdout_pairs: int
    holdout_pair_accuracy: float | None
    """Share of held-out pairs where the correct sample scored higher (0.5 = chance)."""
    pair_problems: int = 0
    """Training problems that gave pairs (both a correct and a wrong answered sample)."""
    train_problems: list[str] = field(default_factory=list)
    holdout_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        acc = "n/a" if self.holdout_pair_accuracy is None else f"{self.holdout_pair_accuracy:.3f}"
        return (f"scorer saved to {self.path}: {self.train_pairs} training pairs from {self.pair_problems} of "
                f"{len(self.train_problems)} training problems; hold-out ({len(self.holdout_problems)} problems, {self.holdout_pairs} pairs) "
                f"pair accuracy {acc} (0.5 = chance); {self.seconds:.1f} s")


def _gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _settings_record(args: RewardConfig) -> dict[str, Any]:
    """The trainer settings that shape a scorer, for ``scorer.json`` (trl's full dump is ~200 keys)."""
    keys = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "center_rewards_coefficient", "warmup_steps", "seed", "max_length")
    return {k: getattr(args, k) for k in keys}


def train_scorer(model: str, train: Sequence[ProblemCandidates], out: str | Path, *,
                 holdout: Sequence[ProblemCandidates] = (), fmt: InputFormat = InputFormat(),
                 args: RewardConfig | None = None, pairs_per_problem: int = 16,
                 source: str = "problems", extra_meta: dict[str, Any] | None = None) -> TrainResult:
    """Train an outcome reward model on correct-vs-wrong pairs of ``train`` and save it to ``out``.

    ``model`` is a local folder or hub id of a causal LM (or sequence classifier); trl loads it as
    ``AutoModelForSequenceClassification`` with ``num_labels=1`` (a fresh scalar head). The saved folder holds
    the model, its tokenizer and ``scorer.json`` (format, split, metrics); hold-out pair accuracy is measured
    by reloading it with :class:`Scorer`, i.e. through the exact path selection uses. ``args`` are trl's
    training settings (default :func:`reward_config`); its ``max_length`` is at least ``fmt.max_length``.
    """

    start = time.perf_counter()
    out = Path(out)
    args = args or reward_config(out / "trainer", max_length=fmt.max_length)
    if args.max_length is not None and args.max_length < fmt.max_length:
        raise ValueError(f"max_length {args.max_length} of the trainer is below the input format's {fmt.max_length}")
    pairs = build_pairs(train, pairs_per_problem=pairs_per_problem, seed=args.seed, source=source)
    # heavy imports only once the data is known to be usable: bad input fails in a second
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [{"chosen_ids": encode(tokenizer, p.problem, p.chosen, fmt),
             "rejected_ids": encode(tokenizer, p.problem, p.rejected, fmt)} for p in pairs]
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    train_ids = sorted({p[0] for p in train})
    hold_ids = sorted({p[0] for p in holdout})
    overlap = set(train_ids) & set(hold_ids)
    if overlap:
        raise ValueError(f"hold-out problems also in training: {sorted(overlap)[:5]}")
    meta: dict[str, Any] = {"format": asdict(fmt), "base_model": model, "source": source,
                            "train_problems": train_ids, "holdout_problems": hold_ids,
                            "train_pairs": len(pairs), "settings": _settings_record(args), **(extra_meta or {})}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    del trainer
    hold_pairs: list[Pair] = []
    accuracy = None
    if holdout:
        try:
            hold_pairs = build_pairs(holdout, pairs_per_problem=pairs_per_problem, seed=args.seed,
                                     source=f"{source} (hold-out)")
        except DataError:
            hold_pairs = []
    if hold_pairs:
        scorer = Scorer.load(out)
        chosen = scorer.score_many([(p.problem, p.chosen) for p in hold_pairs])
        rejected = scorer.score_many([(p.problem, p.rejected) for p in hold_pairs])
        accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(hold_pairs)
    meta.update(holdout_pairs=len(hold_pairs), holdout_pair_accuracy=accuracy)
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return TrainResult(str(out), len(pairs), len(hold_pairs), accuracy, len({p.problem_id for p in pairs}),
                       train_ids, hold_ids, time.perf_counter() - start)


# --- scoring ----------------------------------------------------------------------------------------


class Scorer:
    """A trained scorer: ``score(problem, texts)`` → one float per text (higher = more likely correct)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fmt: InputFormat, *,
                 batch_size: int = 8, meta: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.batch_size = batch_size
        self.meta = meta or {}
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = tokenizer.pad_token_id

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, batch_size: int = 8) -> Scorer:
        """Load a folder written by :func:`train_scorer` (model, tokenizer, ``scorer.json``)."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: not a scorer folder (no {META_FILE}; train one with "
                                    "python -m training.scorer)")
        meta = json.loads(meta_path.read_text())
        fmt_data = meta.get("format", {})
        if fmt_data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: input format version {fmt_data.get('version')!r}, this kit reads "
                             f"{FORMAT_VERSION} (field 'format.version'): retrain the scorer")
        fmt = InputFormat(**fmt_data)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(device)
        if model.config.num_labels != 1:
            raise ValueError(f"{path}: the model has {model.config.num_labels} labels; a scorer has 1")
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(f"{path}: tokenizer ({len(tokenizer)} tokens) does not match the model "
                             f"(vocab_size {model.config.vocab_size})")
        return cls(model, tokenizer, fmt, batch_size=batch_size, meta=meta)

    def score(self, problem: str, texts: Sequence[str]) -> list[float]:
        return self.score_many([(problem, t) for t in texts])

    def score_many(self, items: Sequence[tuple[str, str]]) -> list[float]:
        """Scores of (problem, text) items, batched by similar length (less padding)."""
        import torch

        ids = [encode(self.tokenizer, p, t, self.fmt) for p, t in items]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        scores = [0.0] * len(ids)
        device = self.model.device
        with torch.inference_mode():
            for k in range(0, len(order), self.batch_size):
                batch = order[k: k + self.batch_size]
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, padding=True, return_tensors="pt")
                logits = self.model(input_ids=enc["input_ids"].to(device),
                                    attention_mask=enc["attention_mask"].to(device)).logits
                for i, s in zip(batch, logits.float().squeeze(-1).tolist(), strict=True):
                    scores[i] = float(s)
        return scores

    def fill(self, problems: Sequence[ProblemCandidates]) -> list[ProblemCandidates]:
        """The problems with every answered candidate's ``score`` filled (one batched pass for all)."""
        items = [(text, c.text) for _, text, _, cands in problems for c in cands if c.answer is not None]
        scores = iter(self.score_many(items))
        return [(pid, text, gold, [replace(c, score=next(scores)) if c.answer is not None else c for c in cands])
                for pid, text, gold, cands in problems]


def scorer_strategy(scorer: Scorer, mode: str = "vote") -> Strategy:
    """The ``scorer`` strategy: score the answered candidates that have no score yet, then
    :func:`kit.offline.selection.scored_strategy` (``mode`` "vote": σ(score)-weighted vote; "best": best-of-n)."""
    choose_scored = scored_strategy(mode)

    def choose(problem: str, candidates: Sequence[Candidate]) -> int | None:
        todo = [i for i, c in enumerate(candidates) if c.answer is not None and c.score is None]
        if todo:
            scores = scorer.score(problem, [candidates[i].text for i in todo])
            filled = list(candidates)
            for i, s in zip(todo, scores, strict=True):
                filled[i] = replace(filled[i], score=s)
            candidates = filled
        return choose_scored(problem, candidates)

    choose.__name__ = f"scorer_{mode}"
    return choose


def cross_fit(model: str, problems: Sequence[ProblemCandidates], out: str | Path, *, folds: int = 2,
              seed: int = 0, source: str = "problems", **train_kwargs: Any,
              ) -> tuple[list[ProblemCandidates], list[TrainResult]]:
    """Out-of-fold scores: problems split into ``folds`` groups; for each, a scorer trained on the other
    groups scores it. Every problem then has scores from a scorer that never saw it, so the whole pool can
    go into the strategy table (the hold-out rule, without giving up most of a 30-problem pool)."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    ids = sorted({p[0] for p in problems})
    random.Random(seed).shuffle(ids)
    fold_of = {pid: k % folds for k, pid in enumerate(ids)}
    scored: dict[str, ProblemCandidates] = {}
    results = []
    for k in range(folds):
        test = [p for p in problems if fold_of[p[0]] == k]
        train = [p for p in problems if fold_of[p[0]] != k]
        result = train_scorer(model, train, Path(out) / f"fold{k}", holdout=test,
                              source=f"{source} (cross-fit fold {k} of {folds})", **train_kwargs)
        results.append(result)
        scorer = Scorer.load(result.path)
        for p in scorer.fill(test):
            scored[p[0]] = p
        del scorer
    return [scored[p[0]] for p in problems], results


__all__ = ["CHARS_PER_TOKEN_BOUND", "META_FILE", "InputFormat", "Pair", "Scorer", "TrainResult", "build_pairs", "cross_fit",
           "encode", "reward_config", "scorer_strategy", "split_problems", "train_scorer"]
