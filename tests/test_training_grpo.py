"""training.grpo: config rules, RL data validation, the rollout guards, and real GRPO runs on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit.learn.data import DataError
from kit.learn.rewards import REWARDS
from kit.runtime.config import ConfigError
from training.common import load_config
from training.grpo import (
    RESULT_FILE,
    GrpoConfig,
    GuardConfig,
    RewardSpec,
    RolloutGuard,
    RolloutGuardWarning,
    build_rewards,
    drop_long_prompts,
    load_rl_rows,
    main,
    run,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = ROOT / "training" / "configs" / "grpo_tiny.yaml"
PROD_YAML = ROOT / "training" / "configs" / "grpo.yaml"


def _rl(tmp_path: Path, rows: list[dict] | None = None, name: str = "rl.jsonl") -> Path:
    """An RL jsonl in training.curate's layout (default: 8 AIME-style problems)."""
    if rows is None:
        rows = [{"problem_id": f"p{i}", "source": "test", "prompt": f"Find the remainder of {i + 10}^2 by 7.",
                 "answer": (i + 10) ** 2 % 7} for i in range(8)]
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _options(**changes: object) -> list[str]:
    """``--key value`` tokens, the command-line form (lists as several values, mappings as JSON)."""
    tokens: list[str] = []
    for key, value in changes.items():
        values = [str(v) for v in value] if isinstance(value, list) else [
            json.dumps(value) if isinstance(value, dict) else str(value)]
        tokens += [f"--{key}", *values]
    return tokens


def _tiny(tmp_path: Path, **changes: object) -> GrpoConfig:
    changes.setdefault("data", str(_rl(tmp_path)))
    changes.setdefault("output_dir", str(tmp_path / "out"))
    return load_config(GrpoConfig, TINY_YAML, _options(**changes))


# --- configs -------------------------------------------------------------------------------------------


def test_shipped_configs_load_with_the_design_values() -> None:
    prod = load_config(GrpoConfig, PROD_YAML, ["--use_cpu", "true"])  # transformers refuses bf16 without a GPU
    # docs/design.md "Training formulas": 8 generations, completions up to 16k, lr 2e-6..5e-6, beta 0 (TriMER)
    assert prod.num_generations == 8 and prod.max_completion_length == 16384
    assert 2e-6 <= prod.learning_rate <= 5e-6 and prod.beta == 0.0
    assert prod.scale_rewards == "none" and prod.loss_type in ("dapo", "dr_grpo")
    assert prod.use_vllm is True and prod.bf16 is True and prod.guard().action == "stop"
    assert prod.reward_specs()[0] == RewardSpec("efficiency", 1.0, {"alpha": 0.2})
    tiny = load_config(GrpoConfig, TINY_YAML)
    assert sorted(tiny.rewards) == sorted(REWARDS)  # the smoke run exercises every reward
    assert tiny.use_cpu and tiny.use_vllm is False


def test_trl_keys_are_trls_own_and_override_from_the_command_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from trl import GRPOConfig as TrlGRPOConfig

    assert issubclass(GrpoConfig, TrlGRPOConfig)
    own = set(GrpoConfig.__dataclass_fields__) - set(TrlGRPOConfig.__dataclass_fields__)
    assert own == {"model", "data", "profile", "limit", "rewards", "reward_params", "max_prompt_length",
                   "allow_biased_efficiency", "guard_action", "guard_preflight_max_truncated",
                   "guard_max_truncated", "guard_max_zero_std", "guard_patience"}
    cfg = load_config(GrpoConfig, TINY_YAML, ["--learning_rate", "1e-6", "--epsilon_high=0.28",
                                              "--guard_action", "stop"])
    assert (cfg.learning_rate, cfg.epsilon_high, cfg.guard().action) == (1e-6, 0.28, "stop")
    assert load_config(GrpoConfig, TINY_YAML).learning_rate == 1e-4  # the file's value otherwise
    assert main(["--config", str(TINY_YAML), "--learnig_rate", "1e-6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'learnig_rate' (did you mean 'learning_rate'?)" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_YAML.read_text() + "num_generation: 8\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml: unknown key 'num_generation'" in err
    assert main(["--config", str(TINY_YAML), "--learning_rate", "fast"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--learning_rate" in err and "invalid float value: 'fast'" in err


def test_efficiency_with_std_scaling_or_biased_loss_is_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    eff = {"rewards": ["efficiency"], "use_cpu": True}
    with pytest.raises(ValueError, match=r"scale_rewards: 'group' with the efficiency reward.*alpha"):
        GrpoConfig(**eff, scale_rewards="group")
    with pytest.raises(ValueError, match=r"loss_type: 'grpo' with the efficiency reward"):
        GrpoConfig(**eff, scale_rewards="none", loss_type="grpo")
    # the explicit override, and rewards without the length penalty, are allowed
    assert GrpoConfig(**eff, scale_rewards="batch", allow_biased_efficiency=True).scale_rewards == "batch"
    assert GrpoConfig(rewards=["accuracy"], use_cpu=True, scale_rewards="group").scale_rewards == "group"
    # through the CLI: one line naming the file, exit code 2
    cfg = tmp_path / "g.yaml"
    cfg.write_text("rewards: [efficiency]\nreward_params: {efficiency: {alpha: 0.1}}\nscale_rewards: group\n"
                   "use_cpu: true\n")
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "g.yaml" in err and "scale_rewards: 'group' with the efficiency reward" in err


def test_config_errors_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    for text, expected in [("rewards: [acuracy]\n", "unknown reward 'acuracy'"),
                           ("rewards: [accuracy, format]\nreward_weights: [1.0]\n", "reward_weights: 1 weights for 2"),
                           ("rewards: [accuracy]\nreward_params: {format: {}}\n", "reward_params: ['format']"),
                           ("guard_action: shout\n", "guard_action must be 'warn' or 'stop'"),
                           ("guard_max_zero_std: 2.0\n", "guard_max_zero_std must be a share in [0, 1]")]:
        bad.write_text("use_cpu: true\nscale_rewards: none\n" + text)
        assert main(["--config", str(bad)]) == 2, text
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "bad.yaml" in err and expected in err, (text, err)
    with pytest.raises(ConfigError, match=r"rewards\[0\] \(efficiency\)\.params: .*alpha"):
        build_rewards([RewardSpec("efficiency", 1.0, {"alpha": 3.0})])
    with pytest.raises(ConfigError, match=r"rewards\[1\] \(format\)\.params"):
        build_rewards([RewardSpec("accuracy"), RewardSpec("format", 1.0, {"max_len": 3})])
    with pytest.raises(ValueError, match="once"):
        GrpoConfig(rewards=["accuracy", "accuracy"], use_cpu=True)


@pytest.mark.slow  # imports trl (~10 s)
def test_run_refuses_bad_settings_before_loading_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use_vllm: true needs a CUDA GPU"):
        run(_tiny(tmp_path, use_vllm=True))
    with pytest.raises(ConfigError, match="max_position_embeddings=4096"):
        run(_tiny(tmp_path, max_completion_length=4000, max_prompt_length=512))


# --- data ----------------------------------------------------------------------------------------------


def test_rl_rows_become_cot_prompts_with_the_answer_rule(tmp_path: Path) -> None:
    path = _rl(tmp_path, [{"problem_id": "a", "prompt": "What is $2^{10}$?", "answer": 1024}])
    (row,) = load_rl_rows(path, "aimo2")
    assert row["answer"] == 24  # aimo2 asks for the answer modulo 1000
    (user,) = row["prompt"]
    assert user["role"] == "user" and user["content"].startswith("What is $2^{10}$?")
    assert "\\boxed{}" in user["content"] and "modulo 1000" in user["content"]
    assert load_rl_rows(path, "aimo3")[0]["answer"] == 1024  # no modulus


@pytest.mark.parametrize(("answer", "shown"), [("42", "str '42'"), (4.5, "float 4.5"), (True, "bool True"),
                                               (None, "NoneType None")])
def test_non_integer_answer_names_file_line_and_field(tmp_path: Path, answer, shown: str) -> None:
    path = tmp_path / "rl.jsonl"
    good = json.dumps({"prompt": "p", "answer": 1})
    path.write_text(f"{good}\n\n{good}\n" + json.dumps({"prompt": "q", "answer": answer}) + "\n")
    with pytest.raises(DataError, match=rf"rl\.jsonl:4: field 'answer' must be an integer, got {shown}"):
        load_rl_rows(path)


def test_bad_data_fails_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _rl(tmp_path, [{"prompt": "p", "answer": 1}, {"prompt": "q"}])
    assert main(["--config", str(TINY_YAML), "--data", str(data), "--output_dir", str(tmp_path / "o")]) == 2
    assert "rl.jsonl:2: missing field(s) ['answer']" in capsys.readouterr().err
    data = _rl(tmp_path, [{"prompt": "", "answer": 1}])
    assert main(["--config", str(TINY_YAML), "--data", str(data)]) == 2
    assert "rl.jsonl:1: field 'prompt' must be a non-empty string" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


def test_prompts_over_max_prompt_length_are_dropped_not_cut(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from kit.runtime.tiny_model import build_tiny_model

    tok = AutoTokenizer.from_pretrained(build_tiny_model())
    rows = load_rl_rows(_rl(tmp_path, [{"prompt": "short", "answer": 1}, {"prompt": "long " * 400, "answer": 2}]))
    kept = drop_long_prompts(rows, tok, 100, "rl.jsonl")
    assert [r["answer"] for r in kept] == [1]
    with pytest.raises(DataError, match="every prompt is longer than max_prompt_length=5"):
        drop_long_prompts(rows, tok, 5, "rl.jsonl")


# --- guards: the streak logic on trl's metric names, then real runs ------------------------------------


def _step(truncated: float, zero_std: float) -> dict[str, float]:
    return {"completions/clipped_ratio": truncated, "frac_reward_zero_std": zero_std,
            "completions/mean_length": 10.0, "completions/max_length": 12.0}


def test_guard_needs_consecutive_steps_and_ignores_non_step_logs() -> None:
    guard = RolloutGuard(GuardConfig(preflight_max_truncated=0.5, max_truncated=0.5, max_zero_std=0.9,
                                     patience=2), max_completion_length=12)
    assert guard.check(_step(0.2, 0.0)) is None  # pre-flight passes
    assert guard.check({"train_runtime": 3.0, "train_loss": 0.1}) is None  # the end-of-training summary
    assert guard.check(_step(0.8, 0.0)) is None  # one bad step
    assert guard.check(_step(0.1, 0.95)) is None  # truncation streak broken; zero-std streak 1
    msg = guard.check(_step(0.1, 1.0))
    assert msg is not None and msg.startswith("zero variance: 100% of prompt groups")
    assert guard.check(_step(0.1, 1.0)) is None  # the streak restarts after an alert
    first = RolloutGuard(GuardConfig(preflight_max_truncated=0.5), max_completion_length=12)
    assert "pre-flight" in (first.check(_step(0.75, 0.0)) or "")


@pytest.mark.slow
def test_two_steps_through_main_with_all_five_rewards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.runtime.tiny_model import build_tiny_model

    data, out = _rl(tmp_path), tmp_path / "model"
    assert main(["--config", str(TINY_YAML), "--data", str(data), "--output_dir", str(out),
                 "--learning_rate", "5e-5"]) == 0
    assert "grpo: finished; 2 steps" in capsys.readouterr().out
    result = json.loads((out / RESULT_FILE).read_text())
    assert result["steps"] == 2 and result["stopped_by"] is None and len(result["history"]) == 2
    assert [h["learning_rate"] for h in result["history"]] == [5e-5, 5e-5]  # the override reached trl
    for name in REWARDS:
        assert f"rewards/{name}_reward/mean" in result["history"][0], name
    # the policy was updated and saved with its tokenizer (chat template included)
    before = load_file(str(build_tiny_model() / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert any(not before[k].equal(after[k]) for k in before)
    AutoModelForCausalLM.from_pretrained(out)
    assert "<think>" in AutoTokenizer.from_pretrained(out).chat_template


@pytest.mark.slow
def test_preflight_guard_stops_when_every_completion_is_truncated(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # 3 tokens cannot hold the tiny model's shortest answer ("</think>\n\n\\boxed{7}<|im_end|>"): all truncated
    data, out = _rl(tmp_path), tmp_path / "model"
    code = main(["--config", str(TINY_YAML), "--data", str(data), "--output_dir", str(out),
                 "--max_completion_length", "3", "--max_steps", "4", "--guard_action", "stop",
                 "--guard_preflight_max_truncated", "0.5"])
    assert code == 1
    captured = capsys.readouterr()
    assert "grpo guard STOPPED training at step 1: pre-flight: 100% of the untrained model's first rollouts " \
           "hit max_completion_length=3" in captured.err
    result = json.loads((out / RESULT_FILE).read_text())
    assert result["steps"] == 1 and result["stopped_by"].startswith("pre-flight")
    assert result["history"][0]["completions/clipped_ratio"] == 1.0


@pytest.mark.slow
def test_truncation_guard_warns_after_patience_and_training_goes_on(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, max_completion_length=3, max_steps=3, guard_action="warn",
                guard_preflight_max_truncated=1.0, guard_max_truncated=0.5, guard_patience=2)
    with pytest.warns(RolloutGuardWarning, match=r"truncation: 100% of completions hit max_completion_length=3"):
        result = run(cfg)
    assert result.steps == 3 and result.stopped_by is None
    assert len(result.alerts) == 1 and result.alerts[0].startswith("truncation")


@pytest.mark.slow
def test_zero_variance_guard_stops_on_a_constant_reward(tmp_path: Path) -> None:
    # Answers the tiny model never writes: accuracy is 0 for every sample, every group is flat.
    rows = [{"prompt": f"Problem {i}.", "answer": 98765 + i} for i in range(8)]
    cfg = _tiny(tmp_path, data=str(_rl(tmp_path, rows, "unreachable.jsonl")), profile="aimo3", rewards=["accuracy"],
                reward_weights=[1.0], reward_params={}, max_steps=6, guard_action="stop",
                guard_preflight_max_truncated=1.0, guard_max_truncated=1.0, guard_max_zero_std=0.9,
                guard_patience=2)
    result = run(cfg)
    assert result.steps == 2
    assert result.stopped_by is not None and result.stopped_by.startswith("zero variance: 100% of prompt groups")
    assert all(h["frac_reward_zero_std"] == 1.0 for h in result.history)
