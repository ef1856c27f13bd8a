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
import difflib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

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


def _is_trl_config(cls: type) -> bool:
    """A subclass of trl's (or transformers') training arguments: parsed by trl's own ``TrlParser``."""
    return any(base.__module__.split(".")[0] in ("trl", "transformers") for base in cls.__mro__[1:])


def _option_pairs(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """``--key value`` / ``--key=value`` tokens as (key, raw value) pairs (the command-line form trl uses)."""
    pairs, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"{token!r}: expected an option --key value")
        key, sep, raw = token[2:].partition("=")
        if not sep:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"--{key}: expected a value after it")
            raw, i = tokens[i + 1], i + 1
        pairs.append((key.replace("-", "_"), raw))
        i += 1
    return pairs


def _near(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _load_kit_config(cls: type[C], path: str | Path, overrides: Sequence[str]) -> C:
    import yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key, raw in _option_pairs(overrides):
        head, *rest = key.split(".")
        if head not in known:
            raise ConfigError(f"--{key}: unknown key {head!r}{_near(head, sorted(known))}; known keys: "
                              f"{', '.join(sorted(known))}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--{key} {raw!r}: the value is not valid YAML ({exc})") from None
        node, path_keys = data, [head, *rest]
        for part in path_keys[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--{key}: {part!r} is not a section (its value is {child!r})")
            node = child
        node[path_keys[-1]] = value
    return from_dict(cls, data, where=f"{path} (with command-line overrides)" if overrides else str(path))


def _load_trl_config(cls: type[C], path: str | Path, overrides: Sequence[str]) -> C:
    r"""trl's ``TrlParser``: the YAML sets the defaults, ``--key value`` overrides them, every value is
    converted by the field's own type (trl's fields and the kit's alike). Its complaints become one-line
    :class:`ConfigError`\ s naming the file and the key."""
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message: str) -> NoReturn:  # argparse would print usage and exit
            raise ConfigError(f"{path}: {message}")

    read_yaml(path)  # a missing file or broken YAML: the kit's one-line error before trl opens it
    parser = Parser(cls)
    try:
        cfg, from_file, from_args = parser.parse_args_and_config(
            ["--config", str(path), *overrides], return_remaining_strings=True, separate_remaining_strings=True)
    except ConfigError:
        raise
    except ValueError as exc:  # trl's and the config's own checks (``__post_init__``)
        raise ConfigError(f"{path}: {exc}") from None
    known = sorted(f.name for f in dataclasses.fields(cls) if f.init)  # type: ignore[arg-type]
    for where, rest in ((str(path), from_file), ("command line", from_args)):
        keys = [t[2:].split("=")[0] for t in rest if t.startswith("--")] or list(rest)
        if keys:
            raise ConfigError(f"{where}: unknown key {keys[0]!r}{_near(keys[0], known)}: not a field of "
                              f"{cls.__name__} (--help lists them)")
    return cfg


def load_config(cls: type[C], path: str | Path, overrides: Sequence[str] = ()) -> C:
    """Load ``cls`` from YAML with command-line overrides ``--key value`` (or ``--key=value``) applied.

    A config built on trl's (``SFTConfig``, ``GRPOConfig``, ``RewardConfig``, transformers'
    ``TrainingArguments``) goes through trl's ``TrlParser``: trl's fields are trl's, typed and checked by it.
    The kit's own configs take the same form; their values are YAML (``--rewards '[{name: accuracy}]'``),
    a dotted key sets one field of a nested section (``--target.statistic mean``), and an override is
    applied before validation, so it can also repair a value the file gets wrong. Unknown keys fail naming
    the key, the nearest known one, and the file."""
    if _is_trl_config(cls):
        return _load_trl_config(cls, path, overrides)
    return _load_kit_config(cls, path, overrides)


def cli(prog: str, doc: str | None, cls: type[C], run: Callable[[C], Any], default_config: str,
        argv: Sequence[str] | None = None) -> int:
    """``python -m training.<x> --config FILE [--key value ...]``: load, run, exit 0; user-fixable
    errors (config, data, missing files) → one line on stderr and exit code 2."""
    ap = argparse.ArgumentParser(prog=prog, description=doc, add_help=False,
                                 epilog="Any config key can be overridden: --key value (e.g. --max_steps 2).")
    ap.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    ap.add_argument("-h", "--help", action="store_true", help="show this help and every config key")
    args, overrides = ap.parse_known_args(argv)
    if args.help:
        ap.print_help()
        if _is_trl_config(cls):
            from trl import TrlParser

            TrlParser(cls).print_help()
        else:
            print("\nconfig keys: " + ", ".join(f.name for f in dataclasses.fields(cls) if f.init))  # type: ignore[arg-type]
        return 0
    name = prog.rsplit(".", 1)[-1]
    try:
        cfg = load_config(cls, args.config, overrides)
        result = run(cfg)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(result)
    return 0


__all__ = ["TINY_MODEL", "cli", "load_config", "on_gpu", "read_jsonl", "read_jsonl_numbered", "resolve_model"]
