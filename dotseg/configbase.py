"""The machinery behind every config object: strict, frozen pydantic models built from plain dicts.

Each component owns its config class (``SynthesisConfig`` lives with synthesis, ``ModelConfig``
with the models, ...), written as a :class:`Section`: a frozen pydantic model that forbids
unknown keys, accepts no type coercion (``"3"`` is not an int, ``2.5`` is not an int, ``"yes"`` is
not a bool) and states its ranges as ``Field`` constraints. This module turns nested dicts (from
YAML or ``--set``) into those classes and back, and turns pydantic's errors into the one-line
:class:`ConfigError` users see. Strict by design, because the seed's worst failure was a config
that drifted silently:

* an unknown key, a wrong type or an out-of-range value raises :class:`ConfigError` naming the
  key's full path (``synthesis.dots.count[1]``) and what is allowed;
* sections are frozen, so a resolved config cannot change after it is hashed;
* :func:`config_hash` is a stable digest of the resolved values.

Field docs are the string literal under each field (``use_attribute_docstrings``): they become
the JSON Schema's descriptions and ``dotseg config --explain``'s text.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    """A config value is wrong; the message names the key path and what is allowed."""


class Section(BaseModel):
    """Base of every config section: frozen, strict, no unknown keys, documented fields."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        validate_default=False,
    )

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        """Build from a nested dict (YAML lists allowed where tuples are declared), checked; a
        :class:`ConfigError` naming the full key path otherwise. ``path`` prefixes key paths."""
        if isinstance(data, dict) and all(not f.is_required() for f in cls.model_fields.values()):
            # A partial mapping overrides the *field's* default, not the nested class's own: with
            # ``loss.boundary: {end: 1.0}`` the boundary ramp keeps its epochs 20-60.
            data = _merge(cls().model_dump(), data)
        try:
            return cls.model_validate(_tuples(data))
        except ValidationError as e:
            raise ConfigError(describe_error(cls, e, path)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict/list form, suitable for YAML/JSON."""
        return self.model_dump(mode="json")

    def replace(self, **updates: Any) -> Self:
        """A checked copy with keys replaced; keys may be dotted paths (``**{"train.lr": 1e-3}``)."""
        data = self.model_dump()
        for key, value in updates.items():
            set_path(data, key, value.model_dump() if isinstance(value, BaseModel) else value, type(self))
        return type(self).from_dict(data)


def check(cond: bool, key: str, message: str) -> None:
    """For cross-field checks in ``model_validator``s: raise naming the field (relative to the
    section; :func:`describe_error` prefixes the section's path, read from the error's context)."""
    if not cond:
        raise PydanticCustomError("dotseg_check", "{key}: {message}", {"key": key, "message": message})


def _ordered(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    if pair[0] > pair[1]:
        raise ValueError(f"min must be <= max, got [{pair[0]!r}, {pair[1]!r}]")
    return pair


#: Marks a ``[min, max]`` pair: ``Annotated[tuple[X, X], ORDERED]``.
ORDERED = AfterValidator(_ordered)


def _nonempty(values: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values:
        raise ValueError("needs at least one value")
    return values


#: Marks a tuple that must hold at least one item.
NONEMPTY = AfterValidator(_nonempty)

# Shorthands for the common constrained numbers (ranges that are specific to one field are
# written out as Field(ge=..., le=...) there).
PositiveInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, recursively for mappings; lists and values replace."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _tuples(value: Any) -> Any:
    """YAML gives lists; sections declare tuples (immutable, hashable): convert, recursively."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


# --------------------------------------------------------------------------------------------
# Walking a section's schema by key path


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, m1, m2]`` -> (X, [m1, m2]); other types -> (tp, [])."""
    meta: list[Any] = []
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        tp, meta = args[0], meta + list(args[1:])
    return tp, meta


def _optional_inner(tp: Any) -> Any:
    """``X | None`` -> X; other types unchanged."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


def _child(tp: Any, part: str | int) -> tuple[Any, list[Any]]:
    """Type and constraint metadata one step down from ``tp``: a field name or a tuple index."""
    tp = _optional_inner(_unwrap(tp)[0])
    if isinstance(part, str):
        if not is_section(tp) or part not in tp.model_fields:
            raise KeyError(part)
        info: FieldInfo = tp.model_fields[part]
        inner, meta = _unwrap(info.annotation)
        return inner, list(info.metadata) + meta
    if get_origin(tp) is not tuple:
        raise KeyError(part)
    args = get_args(tp)
    item = args[0] if len(args) == 2 and args[1] is Ellipsis else args[min(part, len(args) - 1)]
    return _unwrap(item)


def _walk(root: type, loc: tuple[str | int, ...]) -> tuple[Any, list[Any]] | None:
    tp: Any = root
    meta: list[Any] = []
    try:
        for part in loc:
            tp, meta = _child(tp, part)
    except KeyError:
        return None
    return tp, meta


def key_path(loc: tuple[str | int, ...] | list[str | int], prefix: str = "") -> str:
    """``("curriculum", "phases", 1, "start_epoch")`` -> ``curriculum.phases[1].start_epoch``."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _interval(meta: list[Any]) -> str | None:
    """``[0, 1]``, ``(0, inf)``, ... from Ge/Gt/Le/Lt constraints, or None if there are none."""
    lo: Any = None
    hi: Any = None
    lo_open = hi_open = False
    meta = [c for m in meta for c in (m.metadata if isinstance(m, FieldInfo) else [m])]
    for m in meta:
        if isinstance(m, at.Ge):
            lo = m.ge
        elif isinstance(m, at.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, at.Le):
            hi = m.le
        elif isinstance(m, at.Lt):
            hi, hi_open = m.lt, True
    if lo is None and hi is None:
        return None
    lo_s = "-inf" if lo is None else (str(lo) if isinstance(lo, int) else f"{lo:g}")
    hi_s = "inf" if hi is None else (str(hi) if isinstance(hi, int) else f"{hi:g}")
    return f"{'(' if lo_open or lo is None else '['}{lo_s}, {hi_s}{')' if hi_open or hi is None else ']'}"


def field_adapter(root: type, key: str) -> tuple[TypeAdapter[Any], str]:
    """A validator of one value of the field at ``key`` (``serve.port``, ``curriculum.phases[0].noise_scale``)
    with the field's own constraints, and its allowed values in words (``in [1, 65535]``)."""
    loc = tuple(int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", key) if p)
    found = _walk(root, loc)
    if found is None:
        raise KeyError(key)
    tp, meta = found
    interval = _interval(meta)
    allowed = f"in {interval}" if interval else f"a value of type {type_name(tp)}"
    return TypeAdapter(Annotated[tp, *meta] if meta else tp), allowed


def type_name(tp: Any) -> str:
    """A reader's name for an annotation: ``integer``, ``one of 'a', 'b'``, ``list of number``, ..."""
    tp, _ = _unwrap(tp)
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if is_section(tp):
        return f"mapping ({tp.__name__})"
    return {int: "integer", float: "number", bool: "true or false", str: "string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


_TYPE_ERRORS = {
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "int_parsing": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "finite_number": "expected a finite number",
}
_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def describe_error(root: type, error: ValidationError, prefix: str = "") -> str:
    """The first error of ``error`` as one line: ``<full key path>: <problem and what is allowed>``."""
    e = error.errors()[0]
    loc = tuple(p for p in e["loc"] if isinstance(p, (str, int)))
    # A union reports one error per member (``int`` and ``none``): the key path ends before them.
    loc = tuple(
        p
        for p in loc
        if not (
            isinstance(p, str)
            and p in ("int", "float", "str", "bool", "none")
            and _walk(root, loc[: loc.index(p)]) is not None
            and _walk(root, loc[: loc.index(p) + 1]) is None
        )
    )
    kind, value = e["type"], _listed(e.get("input"))
    path = key_path(loc, prefix)
    where = _walk(root, loc)
    if kind == "extra_forbidden":
        parent = _walk(root, loc[:-1])
        allowed = ", ".join(parent[0].model_fields) if parent and is_section(parent[0]) else "?"
        return f"{path}: unknown key; allowed keys under {key_path(loc[:-1], prefix) or 'the root'}: {allowed}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind in ("model_type", "model_attributes_type", "dict_type") and where and is_section(_optional_inner(where[0])):
        return f"{path}: expected a mapping ({_optional_inner(where[0]).__name__}), got {value!r}"
    if kind in _TYPE_ERRORS:
        return f"{path}: {_TYPE_ERRORS[kind]}, got {value!r}"
    if kind in ("tuple_type", "list_type"):
        return f"{path}: expected a list, got {value!r}"
    if kind == "too_short" or kind == "too_long":
        expected = type_name(where[0]) if where else "another length"
        return f"{path}: expected {expected}, got {value!r}"
    if kind == "string_too_short":
        return f"{path}: must not be empty"
    if kind == "string_pattern_mismatch":
        return f"{path}: must match the pattern {e['ctx']['pattern']}, got {value!r}"
    if kind == "literal_error":
        return f"{path}: must be one of {e['ctx']['expected'].replace(' or ', ', ')}; got {value!r}"
    if kind in _BOUND_ERRORS:
        interval = _interval(where[1]) if where else None
        return f"{path}: must be in {interval}, got {value!r}"
    if kind == "dotseg_check":  # check(cond, "field", msg): a field of the section the validator runs on
        return f"{path + '.' if path else ''}{e['ctx']['key']}: {e['ctx']['message']}"
    if kind == "value_error":
        message = str(e["ctx"]["error"]) if "ctx" in e else e["msg"]
        return f"{path}: {message}" if path else message
    return f"{path}: {e['msg']}, got {value!r}" if path else e["msg"]


def _listed(value: Any) -> Any:
    """Inputs as the user wrote them: YAML lists became tuples for validation, show them as lists."""
    if isinstance(value, tuple):
        return [_listed(v) for v in value]
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Hashes, differences, paths


def to_dict(cfg: Any) -> Any:
    """Plain nested dict/list form of a config (or of such a dict), suitable for YAML/JSON."""
    if isinstance(cfg, BaseModel):
        return cfg.model_dump(mode="json")
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def config_hash(cfg: Any) -> str:
    """Stable 12-hex-digit digest of a config's resolved values (key order and YAML layout do not matter)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def diff_keys(a: Any, b: Any, path: str = "") -> list[str]:
    """Full key paths whose values differ between two configs (or their dict forms)."""

    def walk(x: Any, y: Any, p: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            out: list[str] = []
            for k in sorted(set(x) | set(y)):
                out += walk(x.get(k), y.get(k), f"{p}.{k}" if p else k)
            return out
        return [] if x == y else [p]

    return walk(to_dict(a), to_dict(b), path)


def get_path(cfg: Any, key: str) -> Any:
    """The value at ``a.b.c`` in a config object."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def dict_value(data: Any, key: str, missing: Any = None) -> Any:
    """The value at ``a.b.c`` in a config's nested dict form; ``missing`` where a part is absent."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return missing
        data = data[part]
    return data


def drop_paths(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of the nested dict ``data`` without the given dotted keys (absent ones are ignored)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key in keys:
        *parents, leaf = key.split(".")
        node: Any = out
        for p in parents:
            child = node.get(p) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                node = None
                break
            node[p] = child = dict(child)
            node = child
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def has_key(cls: type, key: str) -> bool:
    """Whether ``key`` (``a.b.c``) names a leaf value (not a section) of ``cls``."""
    where = _walk(cls, tuple(key.split(".")))
    return where is not None and not is_section(_optional_inner(where[0]))


# --------------------------------------------------------------------------------------------
# YAML and overrides


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
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
    """Apply ``a.b.c=value`` to the nested dict ``data`` in place (checked later by ``from_dict``).

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
    defaults: Any = cls().model_dump()
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        m = re.fullmatch(r"(\w+)\[(\d+)\]", part)
        name, index = (m.group(1), int(m.group(2))) if m else (part, None)
        section = _optional_inner(_unwrap(tp)[0])
        if not is_section(section):
            raise ConfigError(f"{origin}{key}: {'.'.join(parts[:i])} is a value, not a section")
        if name not in section.model_fields:
            raise ConfigError(f"{origin}{here}: unknown key; allowed: {', '.join(section.model_fields)}")
        tp = _child(section, name)[0]
        defaults = defaults.get(name) if isinstance(defaults, dict) else None
        last = i == len(parts) - 1
        if index is not None:
            if get_origin(_optional_inner(tp)) is not tuple:
                raise ConfigError(f"{origin}{here}: {name} is not a list")
            items = node.get(name)
            if not isinstance(items, list):
                items = node[name] = [dict(d) if isinstance(d, dict) else d for d in (items or defaults or [])]
            if index >= len(items):
                raise ConfigError(f"{origin}{here}: index {index} out of range ({name} has {len(items)} items)")
            tp = _child(_optional_inner(tp), index)[0]
            defaults = items[index]
            if last:
                items[index] = value
            else:
                if not isinstance(items[index], dict):
                    items[index] = {}
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


# --------------------------------------------------------------------------------------------
# Documentation


def explain(cls: type[Section], path: str = "") -> list[tuple[str, str, Any, str]]:
    """(key path, type, default, doc) for every leaf field under ``cls``."""
    rows: list[tuple[str, str, Any, str]] = []
    defaults = cls()
    for name, info in cls.model_fields.items():
        key = f"{path}.{name}" if path else name
        tp = _optional_inner(_unwrap(info.annotation)[0])
        if is_section(tp) and get_origin(info.annotation) is not Union:
            rows += explain(tp, key)
        else:
            interval = _interval(list(info.metadata))
            shown = type_name(info.annotation) + (f" in {interval}" if interval else "")
            rows.append((key, shown, to_dict(getattr(defaults, name)), " ".join((info.description or "").split())))
    return rows
