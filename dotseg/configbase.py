"""The machinery behind every config object: build frozen dataclasses from plain dicts, strictly.

Each component owns its config class (``SynthesisConfig`` lives with synthesis, ``ModelConfig``
with the models, ...); this module only knows how to turn nested dicts (from YAML or ``--set``)
into those classes and back. Strict by design, because the seed's worst failure was a config that
drifted silently:

* an unknown key, a wrong type or an out-of-range value raises :class:`ConfigError` naming the
  key's full path (``synthesis.dots.min_count``) and what is allowed;
* the classes are frozen, so a resolved config cannot change after it is hashed;
* :func:`config_hash` is a stable digest of the resolved values, written into every run and
  checkpoint.

Field docs are the string literal under each field (the way torchtitan documents its configs);
:func:`field_docs` reads them back for ``dotseg config --explain``.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import math
import re
import textwrap
import types
from functools import cache
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is wrong; the message names the key path and what is allowed."""


# --------------------------------------------------------------------------------------------
# Helpers for component ``__post_init__`` checks. They raise with the *field* name; the loader
# prefixes the path of the section, so users see ``train.lr: must be > 0, got -1.0``.


def check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


def check_range(value: float, key: str, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise unless ``lo <= value <= hi`` (or strict where ``*_open``); NaN is always rejected."""
    ok = not (isinstance(value, float) and math.isnan(value))
    if lo is not None:
        ok = ok and (value > lo if lo_open else value >= lo)
    if hi is not None:
        ok = ok and (value < hi if hi_open else value <= hi)
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{key}: must be in {left}{lo_s}, {hi_s}{right}, got {value!r}")


def check_pair(pair: tuple[float, float], key: str, lo: float | None = None,
               hi: float | None = None) -> None:
    """A ``[min, max]`` pair: both in range and ``min <= max``."""
    check_range(pair[0], f"{key}[0]", lo, hi)
    check_range(pair[1], f"{key}[1]", lo, hi)
    check(pair[0] <= pair[1], key, f"min must be <= max, got [{pair[0]!r}, {pair[1]!r}]")


# --------------------------------------------------------------------------------------------
# dict -> dataclass


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples, dicts to dataclasses."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping ({tp.__name__}), got {value!r}")
        return from_dict(tp, value, path)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values {_type_name(tp)}, got {value!r}")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")


@cache
def type_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build ``cls`` from ``data``; missing keys take the class defaults, unknown keys are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = type_hints(cls)
    prefix = f"{path}." if path else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        raise ConfigError(f"{prefix}{key}: unknown key; allowed keys under "
                          f"{path or 'the root'}: {', '.join(fields)}")
    kwargs = {name: _convert(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(f"{prefix}{msg}" if path and not msg.startswith(prefix) else msg) from None


def to_dict(cfg: Any) -> Any:
    """Plain nested dict/list form of a config, suitable for YAML/JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    return cfg


def config_hash(cfg: Any) -> str:
    """Stable 12-hex-digit digest of a config's resolved values (key order and YAML layout do not matter)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def diff_keys(a: Any, b: Any, path: str = "") -> list[str]:
    """Full key paths whose values differ between two configs of the same class."""
    da, db = (to_dict(a), to_dict(b))

    def walk(x: Any, y: Any, p: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            out: list[str] = []
            for k in sorted(set(x) | set(y)):
                out += walk(x.get(k), y.get(k), f"{p}.{k}" if p else k)
            return out
        return [] if x == y else [p]

    return walk(da, db, path)


# --------------------------------------------------------------------------------------------
# YAML and overrides

class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str, source: str = "<string>") -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Parse one ``--set`` value with the same YAML rules as config files (``3e-4``, ``[1, 2]``, ``true``)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], assignment: str, cls: type) -> None:
    """Apply ``a.b.c=value`` to the nested dict ``data`` in place (checked later by :func:`from_dict`).

    The value is parsed as YAML; see :func:`set_path` for the key syntax.
    """
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    key, raw = assignment.split("=", 1)
    set_path(data, key.strip(), parse_value(raw), cls, origin="--set ")


def set_path(data: dict[str, Any], key: str, value: Any, cls: type, origin: str = "") -> None:
    """Set ``key`` (``a.b.c``) to ``value`` in the nested dict form ``data`` of a ``cls`` config.

    List items are addressed by index: ``curriculum.phases[1].start_epoch``. The key path is
    checked against ``cls`` so a typo fails with the valid alternatives; ``origin`` prefixes
    messages (``--set `` for command-line overrides).
    """
    parts = key.split(".")
    node: Any = data
    tp: Any = cls
    defaults: Any = to_dict(cls())
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        m = re.fullmatch(r"(\w+)\[(\d+)\]", part)
        name, index = (m.group(1), int(m.group(2))) if m else (part, None)
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{origin}{key}: {'.'.join(parts[:i])} is a value, not a section")
        names = [f.name for f in dataclasses.fields(tp)]
        if name not in names:
            raise ConfigError(f"{origin}{here}: unknown key; allowed: {', '.join(names)}")
        tp = type_hints(tp)[name]
        defaults = defaults.get(name) if isinstance(defaults, dict) else None
        last = i == len(parts) - 1
        if index is not None:
            if get_origin(tp) is not tuple:
                raise ConfigError(f"{origin}{here}: {name} is not a list")
            items = node.get(name)
            if not isinstance(items, list):
                items = node[name] = [dict(d) if isinstance(d, dict) else d for d in (defaults or [])]
            if index >= len(items):
                raise ConfigError(f"{origin}{here}: index {index} out of range ({name} has {len(items)} items)")
            tp = get_args(tp)[0]
            defaults = items[index]
            if last:
                items[index] = value
            else:
                node = items[index]
            continue
        if last:
            node[name] = value
        else:
            child = node.get(name)
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child


def get_path(cfg: Any, key: str) -> Any:
    """The value at ``a.b.c`` in a config object."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


# --------------------------------------------------------------------------------------------
# Field documentation


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each field of a dataclass, by field name."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def explain(cls: type, path: str = "") -> list[tuple[str, str, Any, str]]:
    """(key path, type, default, doc) for every leaf field under ``cls``."""
    rows = []
    defaults = cls()
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        tp = type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows += explain(tp, key)
        else:
            rows.append((key, _type_name(tp), to_dict(getattr(defaults, f.name)), docs.get(f.name, "")))
    return rows
