"""Our reward functions inside a real trl GRPOTrainer (tiny model, CPU, 2 steps)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from kit.learn.rewards import REWARDS


@pytest.mark.slow
def test_grpo_trainer_calls_every_reward(tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from kit.runtime.tiny_model import build_tiny_model

    path = build_tiny_model()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i}+{i}?"}], "answer": str(2 * i)}
                            for i in range(8)])
    cfg = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                     num_generations=4, max_completion_length=32, beta=0.0, use_vllm=False, report_to="none",
                     save_strategy="no", max_steps=2, logging_steps=1)
    calls: dict[str, list[tuple[list, list, list[float]]]] = {name: [] for name in REWARDS}

    def spy(name, fn):
        @functools.wraps(fn)  # trl logs a reward under its function's __name__
        def reward(completions, **kwargs):
            values = fn(completions, **kwargs)
            calls[name].append((completions, kwargs["answer"], values))
            return values
        return reward

    trainer = GRPOTrainer(model=model, reward_funcs=[spy(n, f) for n, f in REWARDS.items()], args=cfg,
                          train_dataset=ds, processing_class=tok)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2
    gold = {f"What is {i}+{i}?": str(2 * i) for i in range(8)}
    for name in REWARDS:
        assert len(calls[name]) == 2, name  # once per step
        for step, (completions, answers, values) in enumerate(calls[name]):
            assert len(completions) == len(answers) == len(values) == 4  # one prompt's group of 4
            assert all(isinstance(v, float) for v in values)
            # what trl logs is what the reward returned
            assert logged[step][f"rewards/{name}_reward/mean"] == pytest.approx(sum(values) / 4, abs=1e-6), name
        # trl hands each completion its own row's answer: every group is one prompt with its gold
        assert all(len(set(answers)) == 1 and answers[0] in gold.values() for _, answers, _ in calls[name])
    # the random tiny model answers nothing right; the same trl-shaped completions (conversational: lists of
    # messages) with the right answer boxed at the end score 1 — a reward that always says 0 fails here
    for completions, answers, values in calls["accuracy"]:
        assert values == [0.0] * 4
        fixed = [[{**c[-1], "content": c[-1]["content"] + f" \\boxed{{{a}}}"}]
                 for c, a in zip(completions, answers, strict=True)]
        assert REWARDS["accuracy"](fixed, answer=answers) == [1.0] * 4
    assert -1.0 <= logged[0]["rewards/cosine_reward/mean"] <= -0.1
