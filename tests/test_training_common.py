"""training.common: jsonl validation, config overrides and the CLI wrapper's error contract."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kit.learn.data import DataError
from kit.runtime.config import ConfigError
from training.common import cli, load_config, read_jsonl, resolve_model


@dataclass
class _Guard:
    action: str = "warn"
    patience: int = 2


@dataclass
class _Cfg:
    model: str = "tiny"
    max_steps: int = 10
    lr: float = 1e-5
    guard: _Guard = field(default_factory=_Guard)


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_read_jsonl_names_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "rl.jsonl"
    p.write_text(json.dumps({"prompt": "x", "answer": 1}) + "\n" + json.dumps({"prompt": "y"}) + "\n")
    with pytest.raises(DataError, match=r"rl\.jsonl:2: missing field\(s\) \['answer'\]"):
        read_jsonl(p, ["prompt", "answer"])
    p.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_jsonl(p, ["prompt"])
    p.write_text("{not json\n")
    with pytest.raises(DataError, match=r"rl\.jsonl:1: not JSON"):
        read_jsonl(p, ["prompt"])
    with pytest.raises(DataError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl", ["prompt"])


def test_overrides_are_typed_and_checked(tmp_path: Path) -> None:
    p = _yaml(tmp_path, "model: tiny\nmax_steps: 5\n")
    cfg = load_config(_Cfg, p, ["--max_steps", "2", "--lr=3e-6"])
    assert (cfg.max_steps, cfg.lr) == (2, 3e-6)
    with pytest.raises(ConfigError, match="unknown key 'steps' \\(did you mean 'max_steps'\\?\\)"):
        load_config(_Cfg, p, ["--steps", "2"])
    with pytest.raises(ConfigError, match="max_steps: expected int"):
        load_config(_Cfg, p, ["--max_steps", "two"])
    with pytest.raises(ConfigError, match="--max_steps: expected a value"):
        load_config(_Cfg, p, ["--max_steps", "--lr", "1"])
    with pytest.raises(ConfigError, match="'max_steps=2': expected an option --key value"):
        load_config(_Cfg, p, ["max_steps=2"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(_Cfg, _yaml(tmp_path, "model: tiny\nmax_stpes: 5\n"))


def test_overrides_apply_before_validation_and_reach_nested_sections(tmp_path: Path) -> None:
    bad = _yaml(tmp_path, "max_steps: two\nguard: {patience: 5}\n")
    with pytest.raises(ConfigError, match="max_steps: expected int"):
        load_config(_Cfg, bad)
    cfg = load_config(_Cfg, bad, ["--max_steps", "3", "--guard.action", "stop"])  # repairs the file's bad value
    assert (cfg.max_steps, cfg.guard) == (3, _Guard(action="stop", patience=5))
    cfg = load_config(_Cfg, _yaml(tmp_path, "model: tiny\n"), ["--guard.patience", "1"])  # section absent from file
    assert cfg.guard == _Guard(patience=1)
    with pytest.raises(ConfigError, match=r"unknown key.*'patince'"):
        load_config(_Cfg, bad, ["--max_steps", "3", "--guard.patince", "1"])
    with pytest.raises(ConfigError, match="'model' is not a section"):
        load_config(_Cfg, bad, ["--model.name", "x"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_Cfg, bad, ["--max_steps", "[1"])


def test_cli_reports_user_errors_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[_Cfg] = []
    p = _yaml(tmp_path, "max_stpes: 5\n")
    assert cli("python -m training.x", None, _Cfg, ran.append, str(p), ["--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("x: error: ") and "max_stpes" in err and str(p) in err and not ran
    p = _yaml(tmp_path, "max_steps: 3\n")
    assert cli("python -m training.x", None, _Cfg, ran.append, str(p), ["--config", str(p), "--lr", "0.1"]) == 0
    assert ran == [_Cfg(max_steps=3, lr=0.1)]


def test_resolve_model_passes_paths_through() -> None:
    assert resolve_model("/models/qwen-7b") == "/models/qwen-7b"


@pytest.mark.parametrize(("module", "name", "base"), [
    ("training.sft", "SftConfig", "trl.SFTConfig"), ("training.grpo", "GrpoConfig", "trl.GRPOConfig"),
    ("training.scorer", "ScorerConfig", "trl.RewardConfig"),
    ("training.distill", "DistillConfig", "transformers.TrainingArguments")])
def test_training_configs_are_trls_own_and_redeclare_none_of_its_fields(module: str, name: str, base: str) -> None:
    """Each training config subclasses its library's config and declares only the kit's keys: a trl release
    that changes a field's default or meaning reaches the kit unchanged, never shadowed by a stale copy."""
    import dataclasses
    import importlib
    import inspect

    config = getattr(importlib.import_module(module), name)
    lib_module, lib_name = base.rsplit(".", 1)
    library = getattr(importlib.import_module(lib_module), lib_name)
    assert issubclass(config, library)
    own = set(inspect.get_annotations(config))  # this class's own declarations, not its bases''
    assert own, f"{name} adds no key of its own"
    assert not own & {f.name for f in dataclasses.fields(library)}
