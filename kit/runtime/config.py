"""Configuration as dataclasses, loaded from YAML/dicts with clear errors.

One loader for every config in the kit (solver, engine presets, schedules, training): unknown keys and
wrong types are rejected naming the file and the field, because a typo in a config that silently falls
back to a default is how a 5-hour run or a 10-hour training job is wasted.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or mapping that does not match its dataclass."""


def _convert_union(value: Any, args: tuple, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(value, arg, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")


def _convert_dataclass(value: Any, tp: type, where: str) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
    return from_dict(tp, value, where)


def _convert_sequence(value: Any, origin: type, args: tuple, where: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
    item = args[0] if args else Any
    items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _convert_mapping(value: Any, args: tuple, where: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    kt, vt = args or (Any, Any)
    return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}


def _convert_scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads ``1e-5`` (no dot) as a string: learning rates are written that way.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got str {value!r}") from None
    if isinstance(tp, type):
        if tp is not bool and isinstance(value, bool):
            raise ConfigError(f"{where}: expected {tp.__name__}, got a boolean")
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked (and where unambiguous converted) against the type hint ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, args, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(value, tp, where)
    if origin in (tuple, list):
        return _convert_sequence(value, origin, args, where)
    if origin is dict:
        return _convert_mapping(value, args, where)
    return _convert_scalar(value, tp, where)


def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(sorted(fields))}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_yaml(path: str | Path, section: str | None = None) -> Any:
    """The raw data of a YAML file (optionally one top-level ``section``), with one-line errors naming it."""

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if section is not None:
        if not isinstance(data, dict) or section not in data:
            raise ConfigError(f"{path}: missing section {section!r}")
        data = data[section]
    return data


def load_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load ``cls`` from a YAML file (optionally from one top-level ``section`` of it)."""
    return from_dict(cls, read_yaml(path, section), where=f"{path}" + (f" [{section}]" if section else ""))


def read_json(path: str | Path) -> Any:
    """The JSON in a file, or None when it is missing or not JSON (build markers, saved metadata)."""

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
