"""How a config field's value is read, by the same rules from a file and the command line.

``coerce(name, typ, value)`` takes a JSON value (a file's) or a string (the command line's, or
a file's string) and returns it as the field's type; ``parse_value`` reads a string. A fixed
length tuple of one element type (``env.size: tuple[int, int]``) given a single value repeats
it: ``64``, ``'64'`` and ``[64, 64]`` all read as ``(64, 64)``, so configs written when the
field was one int still load.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any


def tuple_elements(typ: Any) -> tuple[Any, int | None]:
    """(element type, length) of a tuple type: ``tuple[int, ...]`` -> (int, None),
    ``tuple[int, int]`` -> (int, 2)."""
    args = typing.get_args(typ)
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0], None
    if len(set(args)) != 1:
        raise TypeError(f"config tuples hold one element type, got {typ}")
    return args[0], len(args)


class CountError(ValueError):
    """A tuple field given the wrong number of values."""


def _fixed_length(name: str, typ: Any, items: tuple) -> tuple:
    """``items`` of a tuple field checked against its length: one value of a fixed-length
    tuple is repeated (``64`` -> ``(64, 64)``); another count is refused."""
    _, length = tuple_elements(typ)
    if length is None or len(items) == length:
        return items
    if len(items) == 1:
        return items * length
    raise CountError(
        f"{name}: {len(items)} values {list(items)}; expected {length} (or one, used for each)"
    )


def coerce(name: str, typ: Any, value: Any) -> Any:
    """``value`` as a value of the field ``name`` of type ``typ``, by the same rules from the
    command line and from a config file: a string is parsed as the command line parses it
    ('false', '1e4', '2,3,4'); any other JSON value must already be of the type (an int for an
    int field, or an integral float such as 1e4; a list for a tuple field, or one value for a
    fixed-length tuple, repeated). ValueError names the field, the value and the type."""
    if isinstance(value, str) and typ is not str:
        return parse_value(name, typ, value)
    origin = typing.get_origin(typ)
    if typ is bool and isinstance(value, bool):
        return value
    if typ is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if typ is str and isinstance(value, str):
        return value
    if origin is tuple:
        element, length = tuple_elements(typ)
        if isinstance(value, list | tuple):
            items = tuple(coerce(f"{name}[{i}]", element, v) for i, v in enumerate(value))
            return _fixed_length(name, typ, items)
        if length is not None and not isinstance(value, dict | type(None)):
            return _fixed_length(name, typ, (coerce(name, element, value),))
    kind = {int: "an int", float: "a number", bool: "true or false", str: "a string"}.get(
        typ, "a list" if origin is tuple else str(typ)
    )
    raise ValueError(f"{name}: {json.dumps(value)} is not {kind}")


def parse_value(name: str, typ: Any, text: str) -> Any:
    """``text`` as a value of type ``typ`` (the command line's rules): bools as
    true/false/yes/no/on/off/1/0, ints also as '1e4', tuples as 'a,b,c'. ValueError names the
    field (``--name``) otherwise."""
    try:
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if typ is int:
            try:
                return int(text)
            except ValueError:
                number = float(text)  # '1e4' and '2.0' are ints; '2.5' is not
                if not number.is_integer():
                    raise
                return int(number)
        if typ is float:
            return float(text)
        if typing.get_origin(typ) is tuple:
            element, _ = tuple_elements(typ)
            items = tuple(parse_value(name, element, t) for t in text.split(",") if t)
            return _fixed_length(f"--{name}", typ, items)
        if typ is str or isinstance(typ, types.UnionType):
            return text
    except CountError:
        raise
    except ValueError:
        raise ValueError(
            f"--{name}: cannot parse {text!r} as {getattr(typ, '__name__', typ)}"
        ) from None
    return text
