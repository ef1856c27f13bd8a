"""The one run configuration: what ``predict`` on Kaggle and ``python -m kit dryrun`` both run.

:class:`SubmissionConfig` is the ``submission:`` section of a build config (``submission/configs/*.yaml``);
the dry-run reads the same section (``--config``) and applies its command-line options as overrides, so
the dry-run is the submission's configuration, not an approximation of it. Everything that depends on
whether a real model is given (tiny model, CPU preset, small solver) is decided here, once.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kit.runtime.config import from_dict, read_yaml
from kit.runtime.kaggle_paths import KAGGLE_INPUT, find_input
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.solver_config import AIMO3_SOLVER, TINY_AIMO3_SOLVER, TINY_SOLVER, SolverConfig
from kit.runtime.throughput import SPEED_PRESETS

ENGINES = ("vllm", "replay")


@dataclass(frozen=True)
class Stack:
    """A model family's defaults: what a run uses for whatever its config leaves out."""

    name: str
    tiny_model: str
    """The built-in tiny model of this family (``kit.runtime.tiny_engines`` builds and starts it)."""
    tiny_preset: str
    preset: str
    """Engine preset for a real model."""
    tiny_solver: SolverConfig
    solver: SolverConfig
    policy: str
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    """The policy's calibration for this model family, measured on its attempts (``kit simulate --tune --pool
    LOG`` measures a team's own model; a config's ``policy_params`` replaces this)."""


R1_FINISH_SIGNAL = 0.10
"""First-finish minus random accuracy of R1-distill attempts: SkyThought-32B on AIME24, the bundled pool
(``kit evaluate --pool skythought_aime24``: 0.43 vs 0.33, 95 % CI of the difference +0.01…+0.20)."""
GPT_OSS_FINISH_SIGNAL = -0.24
"""The same of real gpt-oss-120b AIMO3 attempts: 0.42 vs 0.66 on the 38 problems with 8 attempts or more
(docs/design.md "What real gpt-oss-120b output looks like")."""

STACKS: dict[str, Stack] = {
    # AIMO2: R1-style reasoning models (chat template, fenced code), AWQ on 4×L4.
    "r1": Stack("r1", "tiny-qwen2", "cpu", "l4x4", TINY_SOLVER, SolverConfig(), "ours",
                {"finish_signal": R1_FINISH_SIGNAL}),
    # AIMO3: gpt-oss through Harmony conversations with a python tool, on one H100.
    "gpt-oss": Stack("gpt-oss", "tiny-gpt-oss", "cpu-gpt-oss", "h100-gpt-oss", TINY_AIMO3_SOLVER, AIMO3_SOLVER,
                     "ours", {"finish_signal": GPT_OSS_FINISH_SIGNAL}),
}
"""The two stacks the kit serves from one runtime path (docs/design.md "AIMO3")."""


def stack_of(profile: str) -> str:
    """The stack a competition profile is played with when nothing says otherwise (AIMO3: gpt-oss)."""
    return "gpt-oss" if profile == "aimo3" else "r1"
RUN_START_ENV = "AIMO_KIT_RUN_START"
"""Environment variable holding the run's start (``time.time()``): the submission notebook's first cell
sets it, so the minutes of the offline install and imports are charged to the time bank."""


@dataclass
class SubmissionConfig:
    profile: str = "aimo2"
    stack: str = "r1"
    """``r1`` (R1-style models, the AIMO2 stack) or ``gpt-oss`` (Harmony, the AIMO3 stack): the defaults of
    ``model`` (which tiny model), ``preset``, ``solver`` and ``policy`` (:data:`STACKS`)."""
    model: str | None = None
    """Model folder for vLLM; None = the stack's built-in tiny random model (pipeline check only)."""
    preset: str | None = None
    """Engine preset (None: the stack's — ``cpu``/``cpu-gpt-oss`` for the tiny model, ``l4x4``/
    ``h100-gpt-oss`` for a real one)."""
    engine: str = "vllm"
    """``vllm``, or ``replay`` (recorded samples of ``traces`` on a virtual clock; the simulation layer's
    engine, so the caller passes its factory: ``kit.sim.replay.engine_factory``)."""
    traces: str = "skythought_aime24"
    solver: SolverConfig | None = None
    """None: the stack's default for the tiny or a real model (e.g. :data:`~kit.runtime.solver_config.TINY_SOLVER`,
    ``SolverConfig()``, :data:`~kit.runtime.solver_config.AIMO3_SOLVER`)."""
    policy: str | None = None
    """Time-bank policy (``kit.runtime.schedule.POLICIES``); None: the stack's (``ours``)."""
    policy_params: dict[str, Any] | None = None
    """The policy's parameters, e.g. ``{finish_signal: -0.21}`` as ``kit simulate --tune --pool LOG`` writes
    them for a team's own model; None: the stack's calibration when the policy is the stack's, else none."""
    difficulty: str | None = None
    """A difficulty predictor folder (``python -m training.difficulty``; ship it in the model dataset)
    scaling ``ours``' deadlines. If it fails to load in ``predict``, the run goes on without it (logged)."""
    speed: str | None = None
    """Throughput prior (a ``kit.runtime.throughput.SPEED_PRESETS`` name); None: the engine preset's."""
    total_seconds: float | None = None
    """Seconds for the whole notebook (None: the profile's limit)."""
    records_dir: str = "aimo-records"
    competition_dir: str | None = None
    """None: ``$AIMO_COMPETITION_DIR`` or ``/kaggle/input/<competition_slug>``."""
    call_margin_seconds: float = 30.0
    """``predict`` waits this long past a problem's deadline before abandoning the solve; the time bank
    keeps twice this much of the per-call limit free."""

    def __post_init__(self) -> None:
        if self.stack not in STACKS:
            raise ValueError(f"stack must be one of {sorted(STACKS)}, got {self.stack!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        get_profile(self.profile)  # unknown profile → ValueError (ConfigError via from_dict)
        if self.call_margin_seconds < 0:
            raise ValueError(f"call_margin_seconds must be >= 0, got {self.call_margin_seconds}")
        if self.total_seconds is not None and self.total_seconds <= 0:
            raise ValueError(f"total_seconds must be > 0, got {self.total_seconds}")
        if self.speed is not None and self.speed not in SPEED_PRESETS:
            raise ValueError(f"speed must be one of {sorted(SPEED_PRESETS)}, got {self.speed!r}")

    # --- loading --------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | None = None) -> SubmissionConfig:
        return from_dict(cls, data, where)

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = None) -> SubmissionConfig:
        """A YAML file: a build config's ``submission:`` section when the file has one (or when ``section``
        names it), else the whole mapping (e.g. just ``solver: {...}``)."""
        if section is None:
            data = read_yaml(path)
            if not (isinstance(data, dict) and "submission" in data):
                return from_dict(cls, data or {}, where=str(path))
            section = "submission"
        return from_dict(cls, read_yaml(path, section) or {}, where=f"{path} [{section}]")

    def with_overrides(self, **changes: Any) -> SubmissionConfig:
        """A copy with the given fields changed (``None`` values are left out: an option not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    # --- what a run uses --------------------------------------------------------------------------

    def resolve(self, profile: Profile | None = None) -> ResolvedConfig:
        """What this configuration runs, decided once: the stack's defaults for whatever it leaves out
        (tiny or real model), the profile (``profile`` replaces ``self.profile``'s, e.g. with a short per-call
        limit), the time limit. Everything downstream reads the result; nothing resolves again."""
        stack = STACKS[self.stack]
        tiny = self.engine == "vllm" and self.model is None
        policy = self.policy or stack.policy
        if self.policy_params is not None:
            params = dict(self.policy_params)
        else:
            params = dict(stack.policy_params) if policy == stack.policy else {}
        prof = profile or get_profile(self.profile)
        return ResolvedConfig(
            config=self, profile=prof, stack=stack, tiny=tiny,
            solver=self.solver or (stack.tiny_solver if tiny else stack.solver),
            preset=self.preset or (stack.tiny_preset if tiny else stack.preset), speed=self.speed,
            policy=policy, policy_params=MappingProxyType(params),
            total_seconds=self.total_seconds if self.total_seconds is not None else prof.total_seconds)

    def resolved_competition_dir(self) -> Path:
        """``competition_dir``, else ``$AIMO_COMPETITION_DIR``, else the profile's competition under
        ``/kaggle/input`` — in whichever of Kaggle's two mount layouts exists."""
        if self.competition_dir:
            return find_input(self.competition_dir)
        env = os.environ.get("AIMO_COMPETITION_DIR")
        if env:
            return Path(env)
        return find_input(KAGGLE_INPUT / get_profile(self.profile).competition_slug)

    def model_path(self) -> Path | None:
        """The model folder (found under either Kaggle mount layout), None for the tiny model."""
        return None if self.model is None else find_input(self.model)


@dataclass(frozen=True)
class ResolvedConfig:
    """A run's configuration resolved once (:meth:`SubmissionConfig.resolve`), handed down whole: the
    session, ``predict``, the engine factories and the records read it; none of them resolves again."""

    config: SubmissionConfig
    """What was asked (recorded as given)."""
    profile: Profile
    stack: Stack
    tiny: bool
    """The built-in tiny model runs (vLLM with no model folder)."""
    solver: SolverConfig
    preset: str
    """Engine preset name (``kit.runtime.engines.presets``)."""
    speed: str | None
    """Throughput prior (a ``SPEED_PRESETS`` name); None: the engine preset's."""
    policy: str
    policy_params: Mapping[str, Any]
    total_seconds: float
    """Seconds for the whole run."""

    def with_solver(self, **changes: Any) -> ResolvedConfig:
        """This run with some solver fields changed (the command line's ``--samples``, ``--max-tokens``)."""
        return replace(self, solver=replace(self.solver, **changes)) if changes else self

    def record(self) -> dict[str, Any]:
        """What the ``run_start`` record holds: the configuration as given and everything resolved from it."""
        return {"config": asdict(self.config), "stack": self.stack.name, "profile": self.profile.name,
                "tiny": self.tiny, "solver": asdict(self.solver), "preset": self.preset, "speed_preset": self.speed,
                "policy": self.policy, "policy_params": dict(self.policy_params),
                "total_seconds": self.total_seconds}


RUN_START_PAST_S = 2 * 3600.0
"""``$AIMO_KIT_RUN_START`` further in the past than this is not this run's start (a stale variable)."""
RUN_START_FUTURE_S = 60.0
"""... nor one more than this in the future (a clock or unit error)."""


def run_start(default: float, now: float | None = None) -> tuple[float, str, str | None]:
    """(start of the run as ``time.time()``, where it came from, a warning or None): ``$AIMO_KIT_RUN_START``
    when the notebook's first cell set it to a plausible time, else ``default``.

    A value that is not a finite number, or lies outside [now − 2 h, now + 1 min], is ignored with a warning
    on stderr, named in the second element: taken as it is, 10 h in the past would skip every problem and a
    future one would count the start-up as 0 s (docs/reliability.md). The warning also goes to stderr."""
    raw = os.environ.get(RUN_START_ENV)
    if not raw:
        return default, "kit import", None
    now = time.time() if now is None else now
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and now - RUN_START_PAST_S <= value <= now + RUN_START_FUTURE_S:
        return value, f"${RUN_START_ENV} (notebook first cell)", None
    why = (f"${RUN_START_ENV}={raw!r} ignored: not a finite time" if not math.isfinite(value) else
           f"${RUN_START_ENV}={raw!r} ignored: {abs(now - value) / 3600:.1f} h in the "
           f"{'past' if value < now else 'future'}, outside [now - 2 h, now + 1 min]")
    print(f"WARNING {why}; the run's clock starts at the kit's import", file=sys.stderr, flush=True)
    return default, "kit import", why
