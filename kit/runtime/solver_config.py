"""What the solver does with one problem: samples, prompt mix, sampling schedule, stopping and TIR settings.

A plain dataclass (loaded from YAML by :mod:`kit.runtime.config`), shared by the dry-run, ``predict`` and
the simulator; the time bank may lower ``n_samples`` and ``max_tokens`` per problem, never raise them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from kit.runtime.confidence import TAIL_TOKENS
from kit.runtime.prompts import DEFAULT_PROMPTS, HARMONY_TIR, PromptTemplate
from kit.runtime.protocols import PROTOCOLS
from kit.runtime.protocols.harmony import HarmonySettings
from kit.runtime.protocols.tir import get_format
from kit.runtime.sandbox.pool import SandboxConfig
from kit.runtime.voting import Agreement, StopRules, Weighting


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float = 1.0
    top_p: float = 0.9
    min_p: float = 0.05
    top_k: int = 0


SAMPLING_PRESETS: dict[str, tuple[SamplingSpec, ...]] = {
    "default": (SamplingSpec(),),
    "trimer": tuple(SamplingSpec(temperature=t, top_p=p, min_p=0.0)
                    for t, p in ((0.2, 0.85), (0.4, 0.90), (0.6, 0.92), (0.8, 0.95))),
}
"""Named per-sample sampling schedules (``SolverConfig.sampling_preset``); sample i uses agent i mod n.
``trimer``: the AIMO2 TriMER team's four agents (temperatures 0.2/0.4/0.6/0.8, top-p 0.85/0.90/0.92/0.95;
their write-up gives no min-p, so none), whose varied samples they then reranked with a reward model."""


@dataclass(frozen=True)
class SolverConfig:
    n_samples: int = 32
    """Samples per problem; with a time bank (dry-run, submission) an upper bound the bank sizes within."""
    max_tokens: int = 12_000
    """Generated tokens per sample, all TIR turns together (also an upper bound under a time bank)."""
    prompts: tuple[PromptTemplate, ...] = DEFAULT_PROMPTS
    """Cycled over the samples (sample i uses prompts[i % len])."""
    sampling: tuple[SamplingSpec, ...] = (SamplingSpec(),)
    """Cycled over the samples: a multi-agent temperature/top-p schedule is a list here."""
    sampling_preset: str | None = None
    """A named schedule from ``SAMPLING_PRESETS`` (e.g. ``trimer``) used as ``sampling``."""
    stop_after_reasoning: bool = True
    """Stop a sample at ``</think>``: the answer is the last ``\\boxed{}`` of the reasoning."""
    stop_at_first_boxed: bool = False
    """End a sample at its first complete ``\\boxed{}`` (Harmony: in any channel, the analysis included); the
    sample is finished (``stop``) with that answer. What the AIMO3 notebooks did: about two thirds of real
    gpt-oss-120b attempts end there, and the rest of such an attempt is time spent on nothing."""
    max_code_calls: int | None = None
    """Tool calls per sample at most: fenced code blocks run (text protocol) or python calls (Harmony).
    None: the protocol's own default (4 blocks, the AIMO2 setting; 128 calls, the AIMO3 notebooks')."""
    tir_format: str = "qwen"
    code_timeout: float = 10.0
    """Wall-clock seconds per code cell (the 1st-place AIMO2 setting); the sandbox's ``timeout``."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Limits, preloaded modules and output size of the TIR sandbox; ``workers`` and ``timeout`` are set from
    ``n_samples`` and ``code_timeout``."""
    early_stop: bool = True
    rules: StopRules = field(default_factory=StopRules)
    partial_weight: float = 0.5
    """Vote weight of an answer read from a sample cut off by the deadline."""
    repetition_period: tuple[int, int] = (16, 2000)
    """Shortest and longest repeated unit (characters) that counts as a loop."""
    repetition_repeats: int = 8
    """Consecutive repeats of one unit that stop a sample (0 disables the check). Greedy long-CoT traces
    loop on whole paragraphs (14 of the 330 SkyThought AIME24 samples repeat one 6+ times)."""
    seed: int = 0
    abort_grace: float = 2.0
    """Seconds to wait for aborted samples to wind down before their tasks are cancelled."""
    protocol: str = "text"
    """How a sample talks to the model (``kit.runtime.protocols.PROTOCOLS``): ``text`` (chat template,
    fenced code, output blocks: R1-style models) or ``harmony`` (gpt-oss: token-id conversations with a
    python tool). With ``harmony`` every prompt's user message is used and ``kind: tir`` turns the tool on."""
    harmony: HarmonySettings = field(default_factory=HarmonySettings)
    """System/developer messages and reasoning effort of Harmony conversations."""
    logprobs: int = 5
    """Top-k log-probabilities streamed per token for the confidence (``entropy_*``) of each sample; 0 off.
    The AIMO3 winners used 5; on vLLM it costs a little sampler time per token (bench/harmony.py)."""
    entropy_tail: int = TAIL_TOKENS
    """Tokens of the tail window of ``entropy_tail``."""

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.prompts:
            raise ValueError("prompts must not be empty")
        if not self.sampling:
            raise ValueError("sampling must not be empty")
        if self.sampling_preset is not None:
            preset = SAMPLING_PRESETS.get(self.sampling_preset)
            if preset is None:
                raise ValueError(f"unknown sampling_preset {self.sampling_preset!r}; "
                                 f"known: {', '.join(sorted(SAMPLING_PRESETS))}")
            if self.sampling not in (preset, (SamplingSpec(),)):
                raise ValueError("set either sampling or sampling_preset, not both")
            object.__setattr__(self, "sampling", preset)
        get_format(self.tir_format)  # an unknown format fails here, not at the first code call
        if self.max_code_calls is not None and self.max_code_calls < 0:
            raise ValueError(f"max_code_calls must be >= 0, got {self.max_code_calls}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        if self.logprobs < 0 or self.entropy_tail < 1:
            raise ValueError(f"logprobs must be >= 0 and entropy_tail >= 1, got {self.logprobs}, {self.entropy_tail}")


TINY_SOLVER = SolverConfig(n_samples=4, max_tokens=192, max_code_calls=2, code_timeout=5.0)
"""Settings for the built-in tiny model on CPU (dry-run, rehearsal): enough to exercise every path."""


AIMO3_SOLVER = SolverConfig(
    n_samples=8,
    max_tokens=65_536,
    prompts=(HARMONY_TIR,),
    sampling=(SamplingSpec(temperature=1.0, top_p=1.0, min_p=0.02),),
    protocol="harmony",
    stop_at_first_boxed=True,
    code_timeout=6.0,
    sandbox=SandboxConfig(output_limit=2000),
    rules=StopRules(agreements=(Agreement(4, 4, "any"),), certain=True, weighting=Weighting(confidence="mean")),
)
"""What every top AIMO3 team ran with gpt-oss-120b (docs/design.md "AIMO3"): 8 attempts of one Harmony
prompt with the python tool, T=1.0 and min-p 0.02, 6 s per cell, each attempt ended at its first complete
box, a stop when one answer has 4 votes or
the leader cannot be caught, and the vote weighted by 1/entropy (top-5 log-probabilities)."""

TINY_AIMO3_SOLVER = SolverConfig(
    n_samples=4, max_tokens=192, prompts=AIMO3_SOLVER.prompts, sampling=AIMO3_SOLVER.sampling, protocol="harmony",
    stop_at_first_boxed=True, code_timeout=5.0, sandbox=AIMO3_SOLVER.sandbox, rules=AIMO3_SOLVER.rules,
)
"""The AIMO3 settings sized for the built-in tiny gpt-oss model on CPU."""


def sample_seed(base: int, problem_id: str, index: int, turn: int = 0) -> int:
    """Deterministic per-sample seed: same run config → same samples (AIMO3 reruns the notebook twice),
    different problems → different random streams."""
    return (base * 1_000_003 + zlib.crc32(problem_id.encode()) * 7919 + index * 1009 + turn) % (2**31 - 1)
