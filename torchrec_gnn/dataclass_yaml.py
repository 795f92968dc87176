"""Strict YAML -> dataclass loading, shared by experiment configs and ``dataset.yaml``.

A config is a tree of dataclasses whose fields carry their defaults and types; the YAML only
overrides. :func:`build_dataclass` checks a parsed mapping against that tree and reports every
problem at once, each naming its key path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Dict, List, Sequence, Tuple, Union


def build_dataclass(cls: type, raw: Any, prefix: str, problems: List[str]) -> Any:
    """Instantiate dataclass ``cls`` from the parsed YAML ``raw``, appending every problem to
    ``problems`` (as ``"<prefix><key>: ..."``) instead of raising.

    Unknown keys (listed with the valid ones), missing required keys and wrong types are all
    reported; the dataclass's own checks (``__post_init__``) run only when the fields are
    well-formed, and a ``ValueError`` / ``TypeError`` they raise becomes one problem. Nested
    dataclasses and lists of them are built recursively.

    Returns:
        The instance, or None when ``problems`` grew.
    """
    section = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        problems.append(f"{section}: expected a mapping, got {raw!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    before = len(problems)
    for key in raw:
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown key; valid keys of {prefix.rstrip('.') or 'the config'}: {sorted(fields)}")
    for name, f in fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in raw:
            problems.append(f"{prefix}{name}: missing required key")
    values = {key: _convert(hints[key], value, f"{prefix}{key}", problems) for key, value in raw.items() if key in fields}
    if len(problems) > before:  # a field is already wrong: the class's own checks would only add noise
        return None
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        problems.append(f"{section}: {err}")
        return None


def _convert(hint: Any, value: Any, where: str, problems: List[str]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where + ".", problems)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where, problems) if len(inner) == 1 else value
    if origin in (list, List, Sequence, tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {value!r}")
            return value
        return [_convert(args[0], v, f"{where}[{i}]", problems) for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        problems.append(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
