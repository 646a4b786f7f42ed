"""The one-line comment of every config field, read from the dataclasses' source, for ``--help``.

Each field of the config dataclasses carries its comment in the source, either trailing the
field (``deter: int = 512  # GRU state size``) or on the lines right above it. ``comments(cls)``
returns them by field name, so ``python -m experiments.train --help`` lists every field with its
default and what it means, without a second copy of the text that could drift.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

_FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^=#]+?(?:=\s*(.+?))?\s*(?:#\s*(.*))?$")


def comments(cls: type) -> dict[str, str]:
    """Field name -> its comment (trailing, else the comment lines just above), for one
    dataclass; fields without a comment map to ''."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in names and match.group(1) not in out:
            trailing = (match.group(3) or "").strip()
            out[match.group(1)] = trailing or " ".join(above)
        above = []
    return out


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, comment) for every leaf field of a nested config dataclass."""
    rows = []
    notes = comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            rows.extend(describe(typ, f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if isinstance(default, tuple):
            default = ",".join(str(x) for x in default)
        rows.append((f"{prefix}{f.name}", str(default), notes.get(f.name, "")))
    return rows
