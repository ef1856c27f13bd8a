"""What every training entry point shares: model resolution, jsonl datasets, the CLI wrapper.

Why one module: each entry point (``training.sft``, ``training.grpo``, ``training.distill``,
``training.merge``, ``training.quantize``) is "a YAML config → ``run(cfg)``" with the same rules — the
model ``tiny`` means the offline tiny Qwen2 (tests, notebooks, CPU rehearsals), a dataset file with a
missing field fails before any weights load naming the file and the field, and a user-fixable error is
one line on stderr with exit code 2, never a traceback after an hour of loading.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kit.learn.data import DataError
from kit.runtime.config import ConfigError, from_dict, read_yaml
from kit.runtime.jsonl import json_lines

C = TypeVar("C")

TINY_MODEL = "tiny"
"""Model name that resolves to the offline tiny Qwen2 built by :func:`kit.runtime.tiny_model.build_tiny_model`."""
TINY_GPT_OSS = "tiny-gpt-oss"
"""Model name that resolves to the offline tiny gpt-oss (:mod:`kit.runtime.tiny_gpt_oss`)."""


def resolve_model(name_or_path: str) -> str:
    """``"tiny"`` → the cached tiny Qwen2 model's folder, ``"tiny-gpt-oss"`` → the tiny gpt-oss one; anything else is returned unchanged (a local path or
    a hub id the user's machine can reach)."""
    if name_or_path == TINY_MODEL:
        from kit.runtime.tiny_model import build_tiny_model

        return str(build_tiny_model())
    if name_or_path == TINY_GPT_OSS:
        from kit.runtime.tiny_gpt_oss import build_tiny_gpt_oss

        return str(build_tiny_gpt_oss())
    return name_or_path


def on_gpu() -> bool:
    """True when CUDA is usable (rollouts on vLLM colocate, bf16); False on CPU (tests, this machine)."""
    import torch

    return bool(torch.cuda.is_available())


def read_jsonl_numbered(path: str | Path, required: Sequence[str], *,
                        what: str = "dataset") -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of every non-blank line of a jsonl file; every row must have the ``required``
    fields (errors name file, line, field). The line numbers let later checks name ``file:line`` too."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, row in json_lines(path, DataError):
        missing = [f for f in required if f not in row]
        if missing:
            raise DataError(f"{path}:{lineno}: missing field(s) {missing} in the {what}; found {sorted(row)}")
        rows.append((lineno, row))
    if not rows:
        raise DataError(f"{path}: the {what} is empty")
    return rows


def read_jsonl(path: str | Path, required: Sequence[str], *, what: str = "dataset") -> list[dict[str, Any]]:
    """Rows of a jsonl file, as :func:`read_jsonl_numbered` without the line numbers."""
    return [row for _, row in read_jsonl_numbered(path, required, what=what)]


def load_config(cls: type[C], path: str | Path, overrides: Sequence[str] = ()) -> C:
    """Load ``cls`` from YAML with ``key=value`` overrides applied to the file's data *before* validation,
    so ``--set`` can also repair a value the file gets wrong. Values are YAML (``--set max_steps=2``,
    ``--set 'rewards=[{name: accuracy}]'``); a dotted key sets one field of a nested section
    (``--set guard.action=stop``). Unknown keys fail like unknown YAML keys, naming the known ones."""
    import yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        head, *rest = key.split(".")
        if head not in known:
            raise ConfigError(f"--set {item!r}: unknown key {head!r}; known keys: {', '.join(sorted(known))}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        node, path_keys = data, [head, *rest]
        for part in path_keys[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section (its value is {child!r})")
            node = child
        node[path_keys[-1]] = value
    return from_dict(cls, data, where=f"{path} (with --set)" if overrides else str(path))


def cli(prog: str, doc: str | None, cls: type[C], run: Callable[[C], Any], default_config: str,
        argv: Sequence[str] | None = None) -> int:
    """``python -m training.<x> --config FILE [--set key=value ...]``: load, run, exit 0; user-fixable
    errors (config, data, missing files) → one line on stderr and exit code 2."""
    ap = argparse.ArgumentParser(prog=prog, description=doc)
    ap.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable), e.g. --set max_steps=2")
    args = ap.parse_args(argv)
    name = prog.rsplit(".", 1)[-1]
    try:
        cfg = load_config(cls, args.config, args.set)
        result = run(cfg)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(result)
    return 0


__all__ = ["TINY_MODEL", "cli", "load_config", "on_gpu", "read_jsonl", "read_jsonl_numbered", "resolve_model"]
