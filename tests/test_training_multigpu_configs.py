"""The accelerate/DeepSpeed launch configs (training/configs/accelerate/) as accelerate and the HF Trainer
read them — on a machine with no GPU and no DeepSpeed.

What runs for real here: accelerate's own config loader; ``accelerate launch``'s own argument parsing,
config validation and DeepSpeed environment preparation (everything before it starts processes); accelerate's
``DeepSpeedPlugin`` reading that environment and our JSON (including its check that rejects accelerate-side
settings a DeepSpeed file overrides); transformers' own code that replaces the ``"auto"`` values from the
trainer's arguments (``HfTrainerDeepSpeedConfig.trainer_config_process``/``_finalize``). Without deepspeed
installed, transformers gives that class a placeholder base, so the test re-seats transformers' methods on
the base they have when deepspeed *is* installed (accelerate's ``HfDeepSpeedConfig``) — the same code, the
same MRO. What cannot run here: DeepSpeed itself (it needs CUDA); its key names are checked against the
field names of DeepSpeed 0.19.8's own ZeRO config model (list below), which forbids unknown keys.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT / "training" / "configs" / "accelerate"
STAGES = {2: ACC / "zero2.yaml", 3: ACC / "zero3.yaml"}

_ZERO_FIELDS = """
allgather_bucket_size allgather_partitions allgather_sequential compute_grad_norm contiguous_gradients cpu_offload
cpu_offload_param cpu_offload_use_pin_memory elastic_checkpoint enable_sanity_checks gather_16bit_weights_on_model_save
ignore_unused_parameters leaf_module legacy_stage1 load_from_fp32_weights log_trace_cache_warnings max_live_parameters
max_reuse_distance memory_efficient_linear model_persistence_threshold module_granularity_threshold offload_optimizer
offload_param overlap_comm override_module_apply param_persistence_threshold parameter_alignment
pipeline_loading_checkpoint prefetch_bucket_size reduce_bucket_size reduce_scatter round_robin_gradients
save_muon_momentum_buffer_in_memory stage stage3_allgather_sequential stage3_gather_16bit_weights_on_model_save
stage3_gather_fp16_weights_on_model_save stage3_max_live_parameters stage3_max_reuse_distance
stage3_model_persistence_threshold stage3_module_granularity_threshold stage3_param_persistence_threshold
stage3_prefetch_bucket_size stage3_use_all_reduce_for_fetch_params sub_group_size use_all_reduce_for_fetch_params
use_multi_rank_bucket_allreduce zenflow zero_hpz_partition_size zero_quantized_gradients
zero_quantized_nontrainable_weights zero_quantized_weights
"""
DEEPSPEED_ZERO_KEYS = frozenset(_ZERO_FIELDS.split())
"""Field names and aliases of ``deepspeed.runtime.zero.config.DeepSpeedZeroConfig`` in DeepSpeed 0.19.8 (a
pydantic model with ``extra="forbid"``: any other key under ``zero_optimization`` fails DeepSpeed's start)."""
DEEPSPEED_TOP_KEYS = frozenset({"bf16", "fp16", "zero_optimization", "gradient_accumulation_steps",
                                "gradient_clipping", "train_batch_size", "train_micro_batch_size_per_gpu",
                                "wall_clock_breakdown", "optimizer", "scheduler", "steps_per_print"})
"""Top-level keys DeepSpeed 0.19.8 reads (deepspeed/runtime/constants.py); unknown top-level keys are
ignored by DeepSpeed, silently, which is why a typo there must be caught here."""


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
    # not one of its options would be copied and then ignored.
    options = {a.dest for a in launch_command_parser()._actions}
    assert set(cfg.deepspeed_config) <= options
    assert _ds_file(stage).is_file()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deepspeed_file_uses_known_keys_and_auto_where_the_trainer_fills(stage: int) -> None:
    ds = json.loads(_ds_file(stage).read_text())
    assert set(ds) <= DEEPSPEED_TOP_KEYS
    assert set(ds["zero_optimization"]) <= DEEPSPEED_ZERO_KEYS
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


def _launch_env(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What ``accelerate launch --config_file F -m training.sft ...`` puts into each process's environment,
    computed by accelerate's own launch code up to the point where it would start the processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    monkeypatch.chdir(ROOT)  # the config names its DeepSpeed file relative to the repository root
    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "training.sft",
                                               "--config", "training/configs/sft.yaml"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    assert args.use_deepspeed and args.num_processes == 8 and args.module
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)  # as launch_command does
    _, env = prepare_deepspeed_cmd_env(args)
    return {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_launch_environment_builds_accelerates_deepspeed_plugin(stage: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.utils import DeepSpeedPlugin

    env = _launch_env(STAGES[stage], monkeypatch)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert Path(env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).resolve() == _ds_file(stage).resolve()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage and plugin.hf_ds_config.is_zero3() == (stage == 3)
    assert plugin.zero3_init_flag == (stage == 3)  # ZeRO-3: each rank loads only its shard of the weights
    assert plugin.gradient_accumulation_steps == "auto"  # left for the trainer (next test)


def test_accelerate_refuses_mixed_precision_beside_a_deepspeed_file(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Why zero*.yaml have no mixed_precision: accelerate rejects it with a DeepSpeed file."""
    from accelerate.utils import DeepSpeedPlugin

    cfg = yaml.safe_load(STAGES[3].read_text())
    cfg["mixed_precision"] = "bf16"
    cfg["deepspeed_config"]["deepspeed_config_file"] = str(_ds_file(3))
    variant = tmp_path / "zero3_bf16.yaml"
    variant.write_text(yaml.safe_dump(cfg))
    for k, v in _launch_env(variant, monkeypatch).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="will be ignored"):
        DeepSpeedPlugin()


def _trainer_ds_config_class() -> type:
    """transformers' ``HfTrainerDeepSpeedConfig`` methods on accelerate's ``HfDeepSpeedConfig``, the base they
    run on when deepspeed is installed (transformers.integrations.deepspeed)."""
    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig as Hf

    def __init__(self: Any, config: dict) -> None:
        HfDeepSpeedConfig.__init__(self, config)
        self._dtype, self.mismatches = None, []

    methods = {n: Hf.__dict__[n] for n in ("dtype", "is_auto", "fill_match", "fill_only", "trainer_config_process",
                                           "trainer_config_finalize")}
    return type("TrainerDeepSpeedConfig", (HfDeepSpeedConfig,), {"__init__": __init__, **methods})


_Model = SimpleNamespace(config=SimpleNamespace(hidden_size=3584))
"""Shaped like a model for ``trainer_config_finalize`` (which reads ``model.config.hidden_size``): Qwen2.5-7B's."""


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_trainer_fills_every_auto_value(stage: int, tmp_path: Path) -> None:
    import torch
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=8,
                             max_grad_norm=0.5, bf16=True, use_cpu=True, report_to="none")
    ds = _trainer_ds_config_class()(json.loads(_ds_file(stage).read_text()))
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
    # bf16 is pinned (not "auto"): a trainer that is not in bf16 is a loud mismatch, not a silent fp32 run.
    fp32 = TrainingArguments(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none")
    ds = _trainer_ds_config_class()(json.loads(_ds_file(stage).read_text()))
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
