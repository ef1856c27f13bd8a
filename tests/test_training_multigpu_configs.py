"""The accelerate/DeepSpeed launch configs (training/configs/accelerate/) as accelerate, DeepSpeed and the HF
Trainer read them, on a machine with no GPU.

What runs for real here: accelerate's own config loader and launch parser; ``accelerate launch`` itself,
starting two processes (torchrun) in which accelerate's ``DeepSpeedPlugin`` reads the environment the
launcher prepared and our JSON (including its check that rejects accelerate-side settings a DeepSpeed file
overrides); transformers' own ``HfTrainerDeepSpeedConfig`` replacing the ``"auto"`` values from the trainer's
arguments; DeepSpeed 0.19.8's own config parser on the result (its ZeRO model forbids unknown keys; the
top-level keys it silently ignores are caught by recording which ones it reads). What cannot run here:
DeepSpeed's engine (it needs CUDA).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT / "training" / "configs" / "accelerate"
STAGES = {2: ACC / "zero2.yaml", 3: ACC / "zero3.yaml"}


def _auto_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _auto_paths(v, f"{prefix}{k}.")]
    return [prefix[:-1]] if node == "auto" else []


def _ds_file(stage: int) -> Path:
    cfg = yaml.safe_load(STAGES[stage].read_text())
    return ROOT / cfg["deepspeed_config"]["deepspeed_config_file"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_accelerate_loads_the_config(stage: int) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(STAGES[stage]))  # rejects unknown top-level keys
    assert isinstance(cfg, ClusterConfig)
    assert cfg.distributed_type == DistributedType.DEEPSPEED
    assert (cfg.num_processes, cfg.num_machines, cfg.use_cpu) == (8, 1, False)
    assert cfg.mixed_precision is None  # precision is the DeepSpeed file's (see the plugin test)
    # `accelerate launch` copies each deepspeed_config key onto its parsed arguments by name; a key that is
    # not one of its options would be copied and then ignored: each must parse as a launch option
    argv = [a for k, v in cfg.deepspeed_config.items() for a in (f"--{k}", str(v))]
    parsed = launch_command_parser().parse_args([*argv, "-m", "training.sft"])  # an unknown option exits
    assert all(str(getattr(parsed, k)) == str(v) for k, v in cfg.deepspeed_config.items())
    assert _ds_file(stage).is_file()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deepspeed_file_leaves_auto_where_the_trainer_fills(stage: int) -> None:
    ds = json.loads(_ds_file(stage).read_text())
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["bf16"] == {"enabled": True} and "fp16" not in ds
    auto = set(_auto_paths(ds))
    expected = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping", "zero_optimization.reduce_bucket_size"}
    if stage == 3:
        expected |= {"zero_optimization.stage3_prefetch_bucket_size",
                     "zero_optimization.stage3_param_persistence_threshold"}
        # the saved model must be one consolidated 16-bit checkpoint (vLLM and training.quantize load it)
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert auto == expected
    assert "optimizer" not in ds and "scheduler" not in ds  # the trainer's AdamW and LR schedule are used


PROBE = """
import json, os
from accelerate.utils import DeepSpeedPlugin
out = {"rank": os.environ.get("LOCAL_RANK"), "world": os.environ.get("WORLD_SIZE"),
       "env": {k: v for k, v in os.environ.items() if k.startswith("ACCELERATE_")}}
try:
    plugin = DeepSpeedPlugin()
    out.update(stage=plugin.zero_stage, zero3=plugin.hf_ds_config.is_zero3(), init=plugin.zero3_init_flag,
               accumulation=plugin.gradient_accumulation_steps)
except ValueError as exc:
    out["error"] = str(exc)
print("PROBE" + json.dumps(out))
"""


def _launch(config_file: Path, tmp_path: Path) -> list[dict]:
    """``accelerate launch --config_file F --num_processes 2 -m probe`` for real (torchrun, two CPU processes);
    what accelerate's DeepSpeedPlugin made of it in each process."""
    (tmp_path / "probe.py").write_text(textwrap.dedent(PROBE))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(config_file),
                           "--num_processes", "2", "-m", "probe"], cwd=ROOT,  # the config names its file from here
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probes = [json.loads(line[5:]) for line in proc.stdout.splitlines() if line.startswith("PROBE")]
    assert sorted(p["rank"] for p in probes) == ["0", "1"] and {p["world"] for p in probes} == {"2"}
    return probes


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_accelerate_launch_builds_the_deepspeed_plugin_in_every_process(stage: int, tmp_path: Path) -> None:
    for probe in _launch(STAGES[stage], tmp_path):
        env = probe["env"]
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
        assert (ROOT / env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).resolve() == _ds_file(stage).resolve()
        assert "error" not in probe, probe["error"]
        assert probe["stage"] == stage and probe["zero3"] == (stage == 3)
        assert probe["init"] == (stage == 3)  # ZeRO-3: each rank loads only its shard of the weights
        assert probe["accumulation"] == "auto"  # left for the trainer (next test)


@pytest.mark.slow
def test_accelerate_refuses_mixed_precision_beside_a_deepspeed_file(tmp_path: Path) -> None:
    """Why zero*.yaml have no mixed_precision: accelerate rejects it with a DeepSpeed file."""
    cfg = yaml.safe_load(STAGES[3].read_text())
    cfg["mixed_precision"] = "bf16"
    cfg["deepspeed_config"]["deepspeed_config_file"] = str(_ds_file(3))
    variant = tmp_path / "zero3_bf16.yaml"
    variant.write_text(yaml.safe_dump(cfg))
    for probe in _launch(variant, tmp_path):
        assert "will be ignored" in probe.get("error", ""), probe


class _Reads(dict):
    """A config dict that notes every top-level key read from it: DeepSpeed ignores unknown top-level keys
    silently, so a typo there shows only as a key it never read."""

    def __init__(self, data: dict) -> None:
        super().__init__(data)
        self.read: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(key)  # type: ignore[arg-type]
        return super().__contains__(key)


_Model = SimpleNamespace(config=SimpleNamespace(hidden_size=3584))
"""Shaped like a model for ``trainer_config_finalize`` (which reads ``model.config.hidden_size``): Qwen2.5-7B's."""


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_trainer_fills_every_auto_value(stage: int, tmp_path: Path) -> None:
    import torch
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=8,
                             max_grad_norm=0.5, bf16=True, use_cpu=True, report_to="none")
    ds = HfTrainerDeepSpeedConfig(json.loads(_ds_file(stage).read_text()))
    ds.trainer_config_process(args)
    ds.trainer_config_finalize(args, _Model, num_training_steps=100)
    assert _auto_paths(ds.config) == []
    assert ds.config["gradient_accumulation_steps"] == 8  # from the trainer, not the launcher
    assert ds.config["train_micro_batch_size_per_gpu"] == 2
    assert ds.config["train_batch_size"] == 2 * 8 * args.world_size
    assert ds.config["gradient_clipping"] == 0.5
    assert ds.config["zero_optimization"]["reduce_bucket_size"] == 3584 * 3584
    assert ds.dtype() == torch.bfloat16
    if stage == 3:
        assert ds.config["zero_optimization"]["stage3_param_persistence_threshold"] == 10 * 3584
    # DeepSpeed's own parser takes the filled config (its ZeRO model forbids unknown keys) and reads every
    # top-level key we set
    filled = _Reads(ds.config)
    parsed = DeepSpeedConfig(filled)
    assert parsed.zero_optimization_stage == stage and parsed.train_batch_size == 2 * 8 * args.world_size
    assert set(ds.config) <= filled.read, set(ds.config) - filled.read
    typo = {**ds.config, "zero_optimization": {**ds.config["zero_optimization"], "overlap_com": True}}
    with pytest.raises(ValueError, match="overlap_com"):
        DeepSpeedConfig(typo)
    top_typo = _Reads({**ds.config, "gradient_cliping": 1.0})
    DeepSpeedConfig(top_typo)
    assert "gradient_cliping" not in top_typo.read  # what the check above would catch
    # bf16 is pinned (not "auto"): a trainer that is not in bf16 is a loud mismatch, not a silent fp32 run.
    fp32 = TrainingArguments(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none")
    ds = HfTrainerDeepSpeedConfig(json.loads(_ds_file(stage).read_text()))
    ds.trainer_config_process(fp32)
    with pytest.raises(ValueError, match=r"bf16\.enabled=True vs hf bf16"):
        ds.trainer_config_finalize(fp32, _Model, num_training_steps=100)


def test_docs_launch_commands_name_existing_configs() -> None:
    text = (ROOT / "docs" / "multigpu.md").read_text(encoding="utf-8")
    launches = re.findall(r"accelerate launch[^\n]*--config_file (\S+)", text)
    assert launches, "docs/multigpu.md shows no accelerate launch command"
    for path in launches:
        assert (ROOT / path).is_file(), f"docs/multigpu.md launches with missing {path}"
    for stage, path in STAGES.items():
        assert str(path.relative_to(ROOT)) in launches, f"zero{stage}.yaml has no launch example"
