"""The build config: a YAML file with a ``submission:`` section (kit.runtime.kaggle.SubmissionConfig) and a
``kaggle:`` section (kernel id/title, competition, dataset sources, model path, python version)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.runtime.config import ConfigError, from_dict
from submission import CONFIG_DIR, SubmissionError


@dataclass
class KaggleSpec:
    kernel_id: str = "aimo-team/aimo-kit-submission"
    """``<user>/<slug>``; the slug must be the title lowercased with dashes (Kaggle links the two)."""
    kernel_title: str = "aimo-kit submission"
    competition: str | None = None
    """Competition slug; None: the profile's ``competition_slug``."""
    wheels_dataset: str | None = None
    """``owner/slug`` of the wheels dataset (built by ``python -m submission wheels``); None: no install."""
    model_dataset: str | None = None
    """``owner/slug`` of the model dataset (``python -m submission model``)."""
    encodings_dataset: str | None = None
    """``owner/slug`` of the o200k encoding dataset (``python -m submission encodings``; gpt-oss stack)."""
    model_path: str | None = None
    """Model folder inside /kaggle/input; used as ``submission.model`` when that is not set."""
    extra_datasets: list[str] = field(default_factory=list)
    model_sources: list[str] = field(default_factory=list)
    """Kaggle Models (``owner/model/framework/variation/version``), passed through as is."""
    python_version: str = "3.11"
    requirements: str = "requirements/gpu.txt"
    """Requirements installed offline from the wheels dataset (flattened into the notebook)."""
    is_private: bool = True
    enable_gpu: bool = True
    enable_internet: bool = False
    embed_traces: bool | None = None
    """Embed kit/runtime/resources/traces (2.8 MB); None: only when ``submission.engine`` is ``replay``."""

    @property
    def dataset_sources(self) -> list[str]:
        return [d for d in (self.wheels_dataset, self.model_dataset, self.encodings_dataset, *self.extra_datasets)
                if d]


@dataclass
class BuildConfig:
    path: Path
    text: str
    submission: dict[str, Any]
    kaggle: KaggleSpec

    @property
    def profile(self) -> str:
        return str(self.submission.get("profile", "aimo2"))

    @property
    def competition(self) -> str:
        if self.kaggle.competition:
            return self.kaggle.competition
        from kit.runtime.profiles import get_profile

        return get_profile(self.profile).competition_slug


def resolve_config(name: str | Path) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.is_file():
            return cand
    raise SubmissionError(f"config file not found: {name} (looked in . and {CONFIG_DIR})")


def load_build_config(name: str | Path) -> BuildConfig:
    import yaml

    path = resolve_config(name)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SubmissionError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: expected a mapping with 'submission:' and 'kaggle:' sections")
    unknown = sorted(set(data) - {"submission", "kaggle"})
    if unknown:
        raise SubmissionError(f"{path}: unknown top-level key(s) {unknown}; expected 'submission' and 'kaggle'")
    sub = data.get("submission") or {}
    if not isinstance(sub, dict):
        raise SubmissionError(f"{path} [submission]: expected a mapping")
    try:
        kaggle = from_dict(KaggleSpec, data.get("kaggle") or {}, where=f"{path} [kaggle]")
    except ConfigError as exc:
        raise SubmissionError(str(exc)) from None
    sub = dict(sub)
    if sub.get("model") is None and kaggle.model_path:
        sub["model"] = kaggle.model_path
    check_submission_section(sub, path)
    return BuildConfig(path=path, text=text, submission=sub, kaggle=kaggle)


def check_submission_section(sub: dict[str, Any], path: Path) -> None:
    """Validate the ``submission:`` section against kit.runtime.kaggle.SubmissionConfig when it is importable."""
    try:
        from kit.runtime.kaggle import SubmissionConfig
    except ImportError:  # kit.runtime.kaggle not there yet: the notebook validates at run time
        return
    try:
        from_dict(SubmissionConfig, sub, where=f"{path} [submission]")
    except ConfigError as exc:
        raise SubmissionError(str(exc)) from None
