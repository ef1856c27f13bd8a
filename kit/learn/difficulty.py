"""Difficulty / token predictor: problem text → tokens a model needs for a correct answer, for the time bank.

Why: the time bank (:class:`kit.runtime.schedule.Ours`) gives every problem a share of the time left, stretched
by an optional ``difficulty(problem) → factor`` hook. AIMO2's 9th place (Fast-Math-R1) fed per-problem
budgets from a ModernBERT regressor on the problem text; this module is that hook's inference side:

* **targets** — per problem, the tokens a correct sample needed (median, or min, over the correct
  samples of recorded runs or trace pools); a problem no sample solved is *censored*: it gets a small
  fixed value (rule ``cap``, the default: not worth time), its longest attempt (``longest``: the need
  is at least that), or is dropped — see :class:`TargetRule`;
* **model** — any ``AutoModelForSequenceClassification`` with one regression output on standardised
  log-tokens (``answerdotai/ModernBERT-base`` for real runs; ``tiny-encoder``, a random ModernBERT built
  offline around the tiny model's tokenizer, for tests); training lives in ``training/difficulty.py``;
* **hook** — factor = predicted tokens / the median prediction over the training problems, clipped to
  the range :class:`~kit.runtime.schedule.Ours` accepts, so an average problem keeps factor ≈ 1;
* **simulation** — :func:`simulate_hooks` plays the same simulated competitions (common random numbers)
  with ``Ours()`` and ``Ours(difficulty=hook)`` for each hook and reports score deltas with paired CIs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from kit.learn.data import DataError
from kit.offline.runs import RecordFormatError, load_pool_run, load_records_run
from kit.offline.tokenizers import TokenSplitter
from kit.offline.traces import TraceFormatError
from kit.runtime.config import ConfigError, read_json
from kit.runtime.difficulty_hook import (
    CLIP,
    META_FILE,
    DifficultyPredictor,
    Hook,
    PredictorMeta,
    clip_factor,
    policy_with_difficulty,
    problem_text,
)
from kit.runtime.problems import ProblemFileError, load_problems
from kit.runtime.profiles import get_profile
from kit.runtime.schedule import Ours
from kit.runtime.throughput import SpeedModel
from kit.runtime.tiny_model import MARKER_FILE, build_tiny_model, default_path
from kit.sim.simulate import run_competition

log = logging.getLogger(__name__)

TINY_ENCODER = "tiny-encoder"
"""Base-model name that resolves to the offline tiny encoder (:func:`build_tiny_encoder`)."""
PRODUCTION_ENCODER = "answerdotai/ModernBERT-base"


# --- targets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetRule:
    """How one problem's token need is read off its samples."""

    statistic: Literal["median", "min"] = "median"
    """Over the *correct* samples: the median is robust to a lucky short sample; min is the best case."""
    unsolved: Literal["cap", "longest", "drop"] = "cap"
    """Problems no sample solved (their need is censored): ``cap`` — ``cap_tokens``; ``longest`` — the
    longest attempt (a true lower bound on the need); ``drop`` — leave them out.

    Why ``cap`` with a *small* cap by default: the target is read as "time worth spending". In simulated
    competitions where time binds, the ``longest`` rule's oracle hook pours time into problems no sample
    ever wins and loses ~7 points of 50; capping them low gains (docs/difficulty.md)."""
    cap_tokens: int = 1024
    """About a quarter of the solved problems' median need of an R1-class model on AIME (≈ 4k tokens), so
    a never-solved problem maps to the policy's minimum factor; scale it with the model's trace lengths."""

    def __post_init__(self) -> None:
        if self.cap_tokens <= 0:
            raise ValueError(f"cap_tokens must be > 0, got {self.cap_tokens}")


@dataclass(frozen=True)
class ProblemSamples:
    """One problem's statement and its recorded attempts."""

    pid: str
    text: str
    samples: tuple[tuple[bool, int], ...]
    """(correct, generated tokens) per finished sample."""


def problems_from_traces(pool: str | Path, *, profile: Any = None,
                         tokenizer: TokenSplitter | None = None) -> list[ProblemSamples]:
    """Problems of a recorded trace pool (bundled name, folder or file), read by
    :func:`kit.offline.runs.load_pool_run`.

    A sample is correct by the harness's own verdict when the file records one (symbolic answers graded
    properly), else when its answer normalised for ``profile`` equals the gold. Tokens are counted with
    ``tokenizer`` (default: the approximate tokenizer).
    """
    try:
        run = load_pool_run(pool, profile=profile, tokenizer=tokenizer)
    except TraceFormatError as exc:
        raise DataError(str(exc)) from None
    out = []
    for p in run.problems:
        rows = tuple((bool(s.recorded_correct) if s.recorded_correct is not None
                      else p.gold is not None and s.answer == p.gold, max(s.tokens, 1)) for s in p.samples)
        out.append(ProblemSamples(p.problem_id, p.problem, rows))
    if not out:
        raise DataError(f"trace pool {pool}: no samples")
    return out


def problems_from_records(path: str | Path, *, problems: str | Path | None = None,
                          tokenizer: TokenSplitter | None = None) -> list[ProblemSamples]:
    """Problems of our own run records, read by :func:`kit.offline.runs.load_records_run`: finished samples,
    correct when their normalised answer equals the ``problem`` event's gold; problems without a gold are
    skipped.

    Texts come from ``problems`` (a problem set, see :mod:`kit.runtime.problems`) when given — then every
    problem must be in it —, else from the ``problem`` events (the solver records each statement). Token counts are the engine's (``tokens``); a
    sample without one is an error unless ``tokenizer`` is given — a silent approximation would mix two
    token scales in one target.
    """
    try:
        texts = None if problems is None else {p.id: p.problem for p in load_problems(problems)}
        run = load_records_run(path, tokenizer=tokenizer, texts=texts)
    except (RecordFormatError, ProblemFileError) as exc:
        raise DataError(str(exc)) from None
    out = []
    for p in run.problems:
        if p.gold is None or not p.done:
            continue
        if (texts is not None and p.problem_id not in texts) or not p.problem.strip():
            raise DataError(f"{path}: problem {p.problem_id!r} has no recorded text and is not in the problem set "
                            f"{problems or '(none given)'} (field 'problems'): no text to learn from")
        out.append(ProblemSamples(p.problem_id, p.problem, tuple((s.answer == p.gold, max(s.tokens, 1)) for s in p.done)))
    if not out:
        raise DataError(f"{path}: no finished samples of a problem with a gold answer")
    return out


def targets_frame(problems: Sequence[ProblemSamples], rule: TargetRule = TargetRule()):
    """One row per problem: ``pid, text, n_samples, n_correct, censored, tokens`` (the target)."""

    if not problems:
        raise DataError("no problems to compute difficulty targets from (empty pool)")
    seen: set[str] = set()
    for p in problems:
        if p.pid in seen:
            raise DataError(f"problem id {p.pid!r} appears twice; ids must be unique across sources")
        if not p.samples:
            raise DataError(f"problem {p.pid!r} has no samples")
        seen.add(p.pid)
    long = pl.DataFrame(
        [(p.pid, c, t) for p in problems for c, t in p.samples],
        schema={"pid": pl.String, "correct": pl.Boolean, "tokens": pl.Int64}, orient="row")
    solved = pl.col("tokens").filter(pl.col("correct"))
    agg = long.group_by("pid", maintain_order=True).agg(
        n_samples=pl.len(),
        n_correct=pl.col("correct").sum(),
        solved=solved.median() if rule.statistic == "median" else solved.min().cast(pl.Float64),
        longest=pl.col("tokens").max().cast(pl.Float64),
    )
    censor = pl.col("longest") if rule.unsolved == "longest" else pl.lit(float(rule.cap_tokens))
    texts = pl.DataFrame({"pid": [p.pid for p in problems], "text": [p.text for p in problems]})
    frame = (agg.with_columns(censored=pl.col("n_correct") == 0)
             .with_columns(tokens=pl.when(pl.col("censored")).then(censor).otherwise(pl.col("solved")))
             .join(texts, on="pid", maintain_order="left")
             .select("pid", "text", "n_samples", "n_correct", "censored", "tokens"))
    if rule.unsolved == "drop":
        frame = frame.filter(~pl.col("censored"))
        if frame.is_empty():
            raise DataError("no problem was ever solved: with unsolved='drop' nothing is left to learn from")
    return frame


# --- splits and metrics -----------------------------------------------------------------------------


def split_by_problem(pids: Sequence[str], eval_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out) problem ids: a seeded shuffle of the unique ids; the held-out part has
    ``ceil(fraction × n)`` problems (none when the fraction is 0), the training part at least one."""
    ids = sorted(set(pids))
    random.Random(seed).shuffle(ids)
    n_eval = min(math.ceil(eval_fraction * len(ids)), len(ids) - 1) if eval_fraction > 0 else 0
    return ids[n_eval:], ids[:n_eval]


def kfold(pids: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint folds of the unique problem ids (seeded shuffle, round-robin)."""
    ids = sorted(set(pids))
    if not 2 <= k <= len(ids):
        raise ValueError(f"cross-fitting needs 2 <= folds <= problems ({len(ids)}), got {k}")
    random.Random(seed).shuffle(ids)
    return [ids[i::k] for i in range(k)]


def _corr(x: Sequence[float], y: Sequence[float]) -> float:

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(predicted: Sequence[float], actual: Sequence[float], *,
                       baseline: float | None = None) -> dict[str, float]:
    """Held-out quality of token predictions: Spearman (Pearson of average ranks), Pearson and MAE on
    log-tokens; with ``baseline`` (a constant prediction, e.g. the training median) its MAE too, the bar
    a predictor has to clear to be worth plugging in."""

    if len(predicted) != len(actual) or not len(actual):
        raise ValueError(f"need equal, non-empty lists (got {len(predicted)} and {len(actual)})")
    lp, la = np.log(np.asarray(predicted, dtype=float)), np.log(np.asarray(actual, dtype=float))
    ranks = [pl.Series(v, dtype=pl.Float64).rank("average").to_list() for v in (lp, la)]
    out = {"n": float(len(la)), "spearman": _corr(*ranks), "pearson_log": _corr(lp, la),
           "mae_log": float(np.abs(lp - la).mean())}
    if baseline is not None:
        out["mae_log_baseline"] = float(np.abs(math.log(baseline) - la).mean())
    return out


# --- the tiny offline encoder -----------------------------------------------------------------------


@dataclass(frozen=True)
class TinyEncoderSpec:
    """A random ModernBERT small enough to train in seconds on a CPU (~0.2 M parameters)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    seed: int = 0


def build_tiny_encoder(path: str | Path | None = None, *, spec: TinyEncoderSpec | None = None) -> Path:
    """Build (or reuse) the tiny encoder: a random ``ModernBertModel`` with mean pooling and the tokenizer
    of :func:`kit.runtime.tiny_model.build_tiny_model`, saved where ``AutoModelForSequenceClassification`` loads it
    like a hub checkpoint (the regression head is initialised on load, as with ModernBERT-base).

    Cached beside the tiny model (``…/aimo-kit/tiny-encoder-v1``), reused while its marker matches the
    spec and the tiny model build; built in a temporary sibling and renamed, so parallel tests never see
    half a model.
    """
    import torch
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel

    spec = spec or TinyEncoderSpec()
    tiny = build_tiny_model()
    marker = {"spec": dataclasses.asdict(spec), "tokenizer": json.loads((tiny / MARKER_FILE).read_text())["digest"]}
    path = Path(path) if path is not None else default_path().parent / "tiny-encoder-v1"
    if read_json(path / MARKER_FILE) == marker:
        return path
    if path.exists() and any(path.iterdir()) and not (path / MARKER_FILE).exists():
        raise ConfigError(f"{path} exists and is not a tiny encoder build; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.build-", dir=path.parent))
    try:
        tok = AutoTokenizer.from_pretrained(tiny)
        cfg = ModernBertConfig(
            vocab_size=len(tok), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            max_position_embeddings=spec.max_position_embeddings, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, bos_token_id=None, cls_token_id=None, sep_token_id=None,
            # the tiny tokenizer adds no [CLS]: pool over all tokens instead of the first one
            classifier_pooling="mean")
        with torch.random.fork_rng():
            torch.manual_seed(spec.seed)
            model = ModernBertModel(cfg)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / MARKER_FILE).write_text(json.dumps(marker))
        if read_json(path / MARKER_FILE) == marker:  # a parallel build finished first: keep it
            return path
        if path.exists():  # a stale build (other spec): move it aside with a rename, then delete it
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, path)
        except OSError:  # a parallel build won the race: use it if it is the same build
            if read_json(path / MARKER_FILE) != marker:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def resolve_encoder(name_or_path: str) -> str:
    """``tiny-encoder`` → the cached tiny encoder's folder; ``tiny`` as in ``training.common``; anything
    else unchanged (a local folder, or a hub id such as ``answerdotai/ModernBERT-base``)."""
    if name_or_path == TINY_ENCODER:
        return str(build_tiny_encoder())
    if name_or_path == "tiny":

        return str(build_tiny_model())
    return name_or_path


# --- hooks ------------------------------------------------------------------------------------------


def factors_from_tokens(tokens: Mapping[str, float], reference: float | None = None,
                        clip: tuple[float, float] = CLIP) -> dict[str, float]:
    """text → clipped ``tokens / reference`` (default reference: the median of ``tokens``)."""
    ref = statistics.median(tokens.values()) if reference is None else reference
    return {k: clip_factor(v / ref, clip) for k, v in tokens.items()}


def table_hook(factors: Mapping[str, float]) -> Hook:
    """A hook from a fixed text → factor table (oracle targets, cross-fitted predictions); an unknown
    problem is an error — in simulation a silent default would hide a wiring bug."""
    table = dict(factors)

    def hook(problem: Any) -> float:
        return table[problem_text(problem)]

    return hook


# --- simulation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HookResult:
    """One hook's simulated competitions; ``delta`` is paired against the first (baseline) hook."""

    name: str
    expected_score: float
    ci_low: float
    ci_high: float
    delta: float
    delta_low: float
    delta_high: float
    mean_seconds: float
    overruns: int


def _mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, mean - half, mean + half


def simulate_hooks(pool: Sequence[Any], hooks: Mapping[str, Hook | None], *, runs: int, seed: int = 0,
                   profile: Any = None, speed: Any = None, n_problems: int = 50,
                   startup_seconds: float = 600.0, policy: Callable[..., Any] | None = None) -> list[HookResult]:
    """``Ours(difficulty=hook)`` for every hook (``None``: no hook, the baseline — put it first) on the
    same ``runs`` simulated competitions (:func:`kit.sim.simulate.run_competition`, seeded as
    :func:`kit.sim.simulate.monte_carlo` seeds them). Deltas are per-competition differences to the first
    hook, so their CI is paired (much tighter than comparing two independent CIs)."""

    if runs < 2:
        raise ValueError(f"runs must be >= 2 for a confidence interval, got {runs}")
    if not hooks:
        raise ValueError("no hooks to simulate")
    make = policy or Ours
    prof = get_profile(profile)
    sp = speed or SpeedModel.l4x4_7b_awq()
    scores: dict[str, list[float]] = {name: [] for name in hooks}
    seconds: dict[str, list[float]] = {name: [] for name in hooks}
    overruns = dict.fromkeys(hooks, 0)
    for k in range(runs):
        for name, hook in hooks.items():
            res = run_competition(pool, make(difficulty=hook), profile=prof, speed=sp,
                                  rng=random.Random(seed * 100_003 + k), n_problems=n_problems,
                                  startup_seconds=startup_seconds)
            scores[name].append(res.score)
            seconds[name].append(res.seconds)
            overruns[name] += res.call_overrun or res.total_overrun
    base = next(iter(hooks))
    out = []
    for name in hooks:
        mean, lo, hi = _mean_ci(scores[name])
        d, dlo, dhi = _mean_ci([a - b for a, b in zip(scores[name], scores[base], strict=True)])
        out.append(HookResult(name, mean, lo, hi, d, dlo, dhi, statistics.fmean(seconds[name]), overruns[name]))
    return out


__all__ = [
    "CLIP", "META_FILE", "PRODUCTION_ENCODER", "TINY_ENCODER", "DifficultyPredictor", "HookResult",
    "PredictorMeta", "ProblemSamples", "TargetRule", "TinyEncoderSpec", "build_tiny_encoder", "clip_factor",
    "factors_from_tokens", "kfold", "policy_with_difficulty", "problem_text", "problems_from_records", "problems_from_traces",
    "regression_metrics", "resolve_encoder", "simulate_hooks", "split_by_problem", "table_hook",
    "targets_frame",
]
