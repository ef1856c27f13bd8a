"""The difficulty predictor at run time: load a saved regressor and give the time bank its ``problem → factor`` hook.

Training lives in the learning layer (:mod:`kit.learn.difficulty`, ``python -m training.difficulty``); this
is the part ``predict`` needs, so the submission notebook embeds it without the training stack. The model
is any ``AutoModelForSequenceClassification`` with one regression output on standardised log-tokens; the
hook's factor is predicted tokens / the median prediction over the training problems, clipped to the range
:class:`kit.runtime.schedule.Ours` accepts, so an average problem keeps factor ≈ 1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.runtime.config import ConfigError, from_dict, read_json
from kit.runtime.schedule import Policy, make_policy

log = logging.getLogger(__name__)

META_FILE = "difficulty.json"
"""Written beside the saved model: target definition, label normalisation, hook reference, metrics."""
CLIP: tuple[float, float] = (0.25, 4.0)
"""The factor range :meth:`kit.runtime.schedule.Ours.budget` clamps a difficulty factor to."""
"""Sample finish reasons that count as a finished attempt (aborted/cancelled samples say nothing of need)."""

Hook = Callable[[Any], float]
"""problem (text, or an object with a ``text``/``problem`` attribute) → deadline factor."""


def problem_text(problem: Any) -> str:
    """The statement of what the time bank passes: a string (dry-run, Kaggle ``predict``) or an object
    with a non-empty ``text`` (:class:`kit.sim.simulate.SimProblem`) or ``problem`` attribute."""
    if isinstance(problem, str):
        return problem
    for attr in ("text", "problem"):
        value = getattr(problem, attr, None)
        if isinstance(value, str) and value:
            return value
    raise ValueError(f"{type(problem).__name__} {getattr(problem, 'pid', '')!r} has no problem text "
                     "(a SimProblem needs its pool loader to fill .text)")


def clip_factor(factor: float, clip: tuple[float, float] = CLIP) -> float:
    return min(max(float(factor), clip[0]), clip[1])


@dataclass(frozen=True)
class PredictorMeta:
    """Contents of ``difficulty.json``."""

    base_model: str
    log_mean: float
    """Labels are (log tokens − log_mean) / log_std."""
    log_std: float
    reference_tokens: float
    """Median predicted tokens over the training problems: the hook's factor 1."""
    target: dict[str, Any] = field(default_factory=dict)
    """How the training targets were read off the samples (``kit.learn.difficulty.TargetRule`` as data)."""
    clip: tuple[float, float] = CLIP
    max_length: int = 512
    train_problems: int = 0
    eval_problems: int = 0
    sources: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    version: int = 1


class DifficultyPredictor:
    """A saved regressor plus its metadata: ``predict`` tokens, ``hook`` for ``Ours(difficulty=...)``."""

    def __init__(self, model: Any, tokenizer: Any, meta: PredictorMeta) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta

    @classmethod
    def load(cls, path: str | Path) -> DifficultyPredictor:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: no {META_FILE}; not a difficulty predictor "
                                    "(train one with python -m training.difficulty)")
        data = read_json(meta_path)
        if not isinstance(data, dict):
            raise ConfigError(f"{meta_path}: not a JSON object")
        meta = from_dict(PredictorMeta, data, where=str(meta_path))
        model = AutoModelForSequenceClassification.from_pretrained(path)
        return cls(model, AutoTokenizer.from_pretrained(path), meta)

    def save_meta(self, path: str | Path) -> None:
        (Path(path) / META_FILE).write_text(json.dumps(dataclasses.asdict(self.meta), indent=2))

    def predict(self, texts: Sequence[str], *, batch_size: int = 32) -> list[float]:
        """Predicted tokens needed for each text."""
        import torch

        out: list[float] = []
        device = next(self.model.parameters()).device
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), truncation=True, max_length=self.meta.max_length,
                                 padding=True, return_tensors="pt").to(device)
            with torch.inference_mode():
                z = self.model(**enc).logits[:, 0].float().cpu().tolist()
            out.extend(math.exp(v * self.meta.log_std + self.meta.log_mean) for v in z)
        return out

    def factor(self, tokens: float) -> float:
        return clip_factor(tokens / self.meta.reference_tokens, self.meta.clip)

    def hook(self) -> Hook:
        """``problem → factor`` for :class:`kit.runtime.schedule.Ours`; cached per text (the simulator asks for
        the same problem thousands of times). In a live run a failing prediction must not cost the
        problem (the time bank's caller would fall back to a default answer): it logs and returns 1."""
        cache: dict[str, float] = {}

        def hook(problem: Any) -> float:
            try:
                text = problem_text(problem)
                if text not in cache:
                    cache[text] = self.factor(self.predict([text])[0])
                return cache[text]
            except Exception as exc:  # never let the predictor fail a problem
                log.warning("difficulty predictor failed (%s); factor 1", exc)
                return 1.0

        return hook


def policy_with_difficulty(policy: str, predictor: str | Path | None = None,
                           params: Mapping[str, Any] | None = None) -> Policy:
    """The named time-bank policy (:data:`kit.runtime.schedule.POLICIES`, with ``params``) fed by a saved
    predictor's hook when ``predictor`` names one. Only ``ours`` scales its deadlines by difficulty; asking
    for a hook with another policy is an error rather than a silently ignored option."""
    if predictor is None:
        return make_policy(policy, params)
    if policy != "ours":
        raise ValueError(f"a difficulty predictor ({predictor}) only feeds the 'ours' time policy, not {policy!r}")
    return make_policy(policy, params, difficulty=DifficultyPredictor.load(predictor).hook())
