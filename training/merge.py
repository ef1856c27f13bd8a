"""Linear weight merge of checkpoints of one architecture, streamed tensor by tensor:
``python -m training.merge --config training/configs/merge.yaml [--key value ...]``.

    θ_merged[k] = Σ_m w_m · θ_m[k]      for every tensor name k,   Σ_m w_m = 1

The AIMO2 winners (NemoSkills, 1st place) averaged a chain-of-thought checkpoint and a tool-integrated one
with weights 0.3/0.7 and got a model that does both; averaging fine-tunes of one base is the "model soup"
of Wortsman et al. (ICML 2022, arXiv:2203.05482).

Why streamed: two 14B checkpoints are ~56 GB in bf16; a box that trains them need not hold both in RAM.
Tensors are read one at a time from each model's safetensors shards (``safetensors.safe_open``), summed
into one float32 accumulator (bf16 sums lose precision), cast back to the source dtype, and collected
into the current output shard; each output shard is written as soon as it is complete and then dropped.
Peak memory ≈ one output shard (``max_shard_size``) + one tensor from one model + its float32 sum.
The shard plan and the index (``model.safetensors.index.json``, the layout ``from_pretrained`` and vLLM
read) come from ``huggingface_hub.split_torch_state_dict_into_shards`` run on shape-only ``meta`` tensors.

Everything that can be checked is checked before the first tensor is read: folders and shard files exist,
every model has the same tensor names, shapes and dtypes, the weights sum to 1 (or ``normalize: true``).
Config, tokenizer and generation config are copied from the first model. The output is built in a
temporary sibling folder and renamed into place, so a failed merge never leaves a half model at ``out``.
"""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open

from kit.runtime.config import ConfigError
from training.common import cli, resolve_model

if TYPE_CHECKING:
    import torch

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
COPIED_FILES = ("config.json", "generation_config.json", "tokenizer*", "vocab*", "merges.txt",
                "special_tokens_map.json", "added_tokens.json", "chat_template*", "preprocessor_config.json",
                "LICENSE*")
"""What a model folder needs besides its weights (from the first model). Not its README (it describes
another model) nor pickles such as ``training_args.bin``."""
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
"""safetensors dtype codes that are averaged; integer/bool tensors must agree across models and are
copied; FP8 (quantised) checkpoints are refused: their scales make a plain average meaningless."""


@dataclass
class MergeModel:
    path: str
    """A local model folder (safetensors), or ``tiny``."""
    weight: float


@dataclass
class MergeConfig:
    models: list[MergeModel] = field(default_factory=list)
    out: str = "runs/merge"
    normalize: bool = False
    """Divide the weights by their sum; otherwise weights that do not sum to 1 are an error."""
    max_shard_size: str | int = "5GB"
    """Output shard size (``"5GB"``, ``"500MB"``, or bytes); also bounds the merge's memory."""
    overwrite: bool = False
    """Replace an existing ``out`` folder (only once the new merge is complete)."""

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"models: a merge needs at least two models, got {len(self.models)}")
        ws = [m.weight for m in self.models]
        if not all(math.isfinite(w) and w >= 0 for w in ws) or sum(ws) <= 0:
            raise ValueError(f"models[].weight must be finite and >= 0 with a positive sum, got {ws}")
        if not self.normalize and abs(sum(ws) - 1.0) > 1e-6:
            raise ValueError(f"models[].weight sum to {sum(ws):g}, not 1: fix them or set normalize: true")

    def weights(self) -> list[float]:
        total = sum(m.weight for m in self.models)
        return [m.weight / total for m in self.models] if self.normalize else [m.weight for m in self.models]


# --- reading checkpoints ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    """safetensors dtype code, e.g. ``BF16``."""


class Checkpoint:
    """One model's safetensors weights: the tensor → file map, shapes and dtypes from the shard headers
    (no tensor data read), and :meth:`get` to read one tensor."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.folder = Path(resolve_model(name)).expanduser()
        if not self.folder.is_dir():
            raise ConfigError(f"model {name!r}: folder not found")
        if not (self.folder / "config.json").is_file():
            raise ConfigError(f"model {name!r}: no config.json in {self.folder}")
        index = self.folder / INDEX_FILE
        if index.is_file():
            try:
                self.weight_map: dict[str, str] = dict(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"model {name!r}: {index} is not a safetensors index ({exc})") from None
        elif (self.folder / SINGLE_FILE).is_file():
            with safe_open(self.folder / SINGLE_FILE, framework="pt") as f:
                self.weight_map = dict.fromkeys(f.keys(), SINGLE_FILE)
        else:
            raise ConfigError(f"model {name!r}: no {SINGLE_FILE} or {INDEX_FILE} in {self.folder} (only "
                              "safetensors checkpoints can be merged)")
        self.info: dict[str, TensorInfo] = {}
        for filename in dict.fromkeys(self.weight_map.values()):
            path = self.folder / filename
            if not path.is_file():
                raise ConfigError(f"model {name!r}: shard {filename} listed in {INDEX_FILE} is missing")
            with safe_open(path, framework="pt") as f:
                present = set(f.keys())
                for key in (k for k, v in self.weight_map.items() if v == filename):
                    if key not in present:
                        raise ConfigError(f"model {name!r}: {INDEX_FILE} puts {key!r} in {filename}, which lacks it")
                    sl = f.get_slice(key)
                    self.info[key] = TensorInfo(tuple(sl.get_shape()), sl.get_dtype())

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor. The shard is opened for this read only: safetensors returns a tensor backed by
        the file's memory map, and the pages it touched stay resident while the file is open (seen with
        safetensors 0.8: +8 MB of RSS per merged 4 MB tensor with the files kept open, none once the
        tensor is dropped when opened per read). A header parse per read costs ~0.2 ms."""
        with safe_open(self.folder / self.weight_map[key], framework="pt") as f:
            return f.get_tensor(key)


def check_compatible(ckpts: Sequence[Checkpoint]) -> None:
    """Same tensor names, shapes and dtypes in every model as in the first; errors name the tensor and
    both models."""
    ref = ckpts[0]
    for c in ckpts[1:]:
        missing, extra = sorted(ref.info.keys() - c.info.keys()), sorted(c.info.keys() - ref.info.keys())
        if missing or extra:
            raise ConfigError(f"models {ref.name!r} and {c.name!r} have different tensors: "
                              f"{len(missing)} only in the first (e.g. {missing[:3]}), "
                              f"{len(extra)} only in the second (e.g. {extra[:3]})")
        for key, a in ref.info.items():
            b = c.info[key]
            if a.shape != b.shape:
                raise ConfigError(f"tensor {key!r}: shape {list(a.shape)} in {ref.name!r} but {list(b.shape)} "
                                  f"in {c.name!r}")
            if a.dtype != b.dtype:
                raise ConfigError(f"tensor {key!r}: dtype {a.dtype} in {ref.name!r} but {b.dtype} in {c.name!r} "
                                  "(convert one so both match)")
    bad = sorted({i.dtype for i in ref.info.values() if i.dtype.startswith("F") and i.dtype not in FLOAT_DTYPES})
    if bad:
        raise ConfigError(f"model {ref.name!r} has {bad} tensors (quantised): merge full-precision checkpoints, "
                          "then quantise")


def _torch_dtype(code: str) -> torch.dtype:
    """torch dtype of a safetensors dtype code (the format's table), for sizing the output shards."""
    import torch

    table = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
    if code not in table:
        raise ConfigError(f"safetensors dtype {code} is not supported by the merge")
    return table[code]


# --- merging ----------------------------------------------------------------------------------------


def merge_tensor(key: str, ckpts: Sequence[Checkpoint], weights: Sequence[float]) -> torch.Tensor:
    """``Σ w·θ[key]`` in float32, cast to the source dtype; only one source tensor is alive at a time.
    Integer/bool tensors (e.g. buffers) are copied, and must be equal in every model."""
    import torch

    first = ckpts[0].get(key)
    if not first.is_floating_point():
        for c in ckpts[1:]:
            if not torch.equal(first, c.get(key)):
                raise ConfigError(f"tensor {key!r} ({first.dtype}) differs between {ckpts[0].name!r} and "
                                  f"{c.name!r}; non-float tensors cannot be averaged")
        return first
    dtype = first.dtype
    acc = torch.zeros(first.shape, dtype=torch.float32)
    acc.add_(first, alpha=weights[0])  # promotes to float32 inside the op: no bf16 rounding of the sum
    del first
    for c, w in zip(ckpts[1:], weights[1:], strict=True):
        t = c.get(key)
        acc.add_(t, alpha=w)
        del t
    return acc.to(dtype)


@dataclass
class MergeResult:
    out: str
    tensors: int
    shards: int
    total_bytes: int
    weights: list[float]

    def __str__(self) -> str:
        return (f"merge: {self.tensors} tensors, {self.shards} shard(s), {self.total_bytes / 2**20:.1f} MiB, "
                f"weights {[round(w, 6) for w in self.weights]}; saved to {self.out}")


def _copy_side_files(src: Path, dst: Path) -> None:
    for f in sorted(src.iterdir()):
        if f.is_file() and any(fnmatch.fnmatch(f.name, p) for p in COPIED_FILES):
            shutil.copy2(f, dst / f.name)


def _vocabulary(folder: Path) -> tuple[Any, ...] | None:
    """What decides token ids in a ``tokenizer.json``: the model's vocab and merges and the added tokens
    (the file's other fields change when transformers re-saves an unchanged tokenizer)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    return (model.get("vocab"), model.get("merges"),
            sorted((t.get("id"), t.get("content")) for t in data.get("added_tokens") or []))


def _warn_tokenizer_differences(ckpts: Sequence[Checkpoint]) -> None:
    ref = _vocabulary(ckpts[0].folder)
    for c in ckpts[1:]:
        other = _vocabulary(c.folder)
        if ref is not None and other is not None and ref != other:
            print(f"merge: warning: the tokenizers of {ckpts[0].name!r} and {c.name!r} map tokens to different "
                  f"ids; the output uses the first one's", file=sys.stderr)


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished merge into place; an existing ``out`` is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)) / "old"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


def run(cfg: MergeConfig) -> MergeResult:
    """Check every model, then merge shard by shard into ``cfg.out``."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    out = Path(cfg.out).expanduser()
    ckpts = [Checkpoint(m.path) for m in cfg.models]
    for c in ckpts:
        if out.resolve() == c.folder.resolve():
            raise ConfigError(f"out {cfg.out!r} is the folder of model {c.name!r}: merge elsewhere")
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"out {cfg.out!r} exists: choose another folder or set overwrite: true")
    check_compatible(ckpts)
    _warn_tokenizer_differences(ckpts)
    weights = cfg.weights()

    ref = ckpts[0]
    meta = {k: torch.empty(i.shape, dtype=_torch_dtype(i.dtype), device="meta") for k, i in ref.info.items()}
    try:
        plan = split_torch_state_dict_into_shards(meta, max_shard_size=cfg.max_shard_size)
    except ValueError as exc:
        raise ConfigError(f"max_shard_size {cfg.max_shard_size!r}: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.merge-", dir=out.parent))
    try:
        for filename, keys in plan.filename_to_tensors.items():
            shard = {k: merge_tensor(k, ckpts, weights) for k in keys}
            save_file(shard, str(tmp / filename), metadata={"format": "pt"})
            del shard
        if plan.is_sharded:
            index = {"metadata": plan.metadata, "weight_map": plan.tensor_to_filename}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
        _copy_side_files(ref.folder, tmp)
        record = {"method": "linear", "accumulation_dtype": "float32", "normalize": cfg.normalize,
                  "models": [{"path": m.path, "resolved": str(c.folder), "weight": w}
                             for m, c, w in zip(cfg.models, ckpts, weights, strict=True)]}
        (tmp / "merge_config.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        tmp.chmod(0o755)
        _install(tmp, out, cfg.overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return MergeResult(str(out), len(meta), len(plan.filename_to_tensors), int(plan.metadata["total_size"]),
                       weights)


def main(argv: Sequence[str] | None = None) -> int:
    return cli("python -m training.merge", __doc__, MergeConfig, run, "training/configs/merge.yaml", argv)


__all__ = ["Checkpoint", "MergeConfig", "MergeModel", "MergeResult", "TensorInfo", "check_compatible", "main",
           "merge_tensor", "run"]

if __name__ == "__main__":
    sys.exit(main())
