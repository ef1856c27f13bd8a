"""Our reward functions inside a real trl GRPOTrainer (tiny model, CPU, 2 steps)."""

from __future__ import annotations

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
    trainer = GRPOTrainer(model=model, reward_funcs=list(REWARDS.values()), args=cfg, train_dataset=ds,
                          processing_class=tok)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2
    for name in REWARDS:
        assert f"rewards/{name}_reward/mean" in logged[0], name
    # the random tiny model answers nothing right: cosine gives its wrong-answer band, accuracy 0
    assert logged[0]["rewards/accuracy_reward/mean"] == 0.0
    assert -1.0 <= logged[0]["rewards/cosine_reward/mean"] <= -0.1
