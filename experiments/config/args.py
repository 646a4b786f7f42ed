"""The command line: ``--preset NAME --logdir DIR [--section.field VALUE ...]`` -> a validated
``Config``, and ``--help`` listing every field with its default and comment.

Each field of the config dataclasses carries its comment in the source, either trailing the
field (``deter: int = 512  # GRU state size``) or on the lines right above it; ``comments(cls)``
reads them, so ``--help`` lists every field without a second copy of the text that could drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.config.presets import PRESETS, SIZES, compose
from experiments.config.schema import Config, _parse_value, fields, load, replace
from experiments.config.validate import AGENTS, validate
from experiments.errors import ConfigError

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


def fields_help() -> str:
    """Every config field with its default and comment, for ``--help``."""
    rows = describe(Config)
    width = max(len(name) + len(default) for name, default, _ in rows) + 6
    lines = ["config fields (--section.field VALUE; default, then meaning):"]
    for name, default, note in rows:
        head = f"  --{name} {default}"
        lines.append(f"{head:<{width}} {note}")
    return "\n".join(lines)


SHORTCUTS = {
    "task": "env.task",
    "steps": "run.steps",
    "seed": "run.seed",
    "envs": "env.envs",
    "obs": "env.obs",
    "wandb": "logging.wandb",
}


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """``--preset NAME --logdir DIR [--field value ...]`` -> (validated Config, namespace)."""
    args, rest = _parser().parse_known_args(argv)
    if args.config is not None and args.preset is not None:
        raise ValueError(
            "--config and --preset both give the starting config: use one (overrides apply to "
            "either)"
        )
    if not args.logdir.strip():
        raise ConfigError("--logdir is empty: name the run's directory, e.g. runs/walker")
    base = load(args.config) if args.config is not None else compose(args.preset or "debug")
    valid = fields(Config)
    overrides: dict[str, Any] = {}
    if args.agent is not None:
        overrides["agent"] = args.agent
    for short, full in SHORTCUTS.items():
        value = getattr(args, f"short_{short}")
        if value is not None:
            overrides[full] = _parse_value(full, valid[full][0], value)
    for name, value in _field_values(rest):
        if name not in valid:
            replace(Config(), {name: None})  # raises with the list of fields
        overrides[name] = _parse_value(name, valid[name][0], value)
    return validate(replace(base, overrides)), args


def _field_values(rest: Sequence[str]) -> list[tuple[str, str]]:
    """``--section.field VALUE`` or ``--section.field=VALUE`` tokens -> (name, text) pairs."""
    pairs, i = [], 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--"):
            raise ValueError(
                f"unexpected argument {token!r}; overrides look like --model.deter 512"
            )
        name, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(rest):
                raise ValueError(f"--{name} needs a value")
            value = rest[i + 1]
            i += 1
        pairs.append((name, value))
        i += 1
    return pairs


def _parser() -> argparse.ArgumentParser:
    """The command's own options; ``--section.field VALUE`` overrides are left over for
    ``_field_values``."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.train",
        description="Train a world-model agent on a dm-control or Gymnasium task. Any config "
        "field can be overridden as --section.field VALUE (e.g. --model.deter 512).",
        epilog=fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset",
        default=None,
        help=f"one of {sorted(PRESETS)}, or several joined by commas, later ones overriding "
        f"(sizes {', '.join(SIZES)} set the model widths only: --preset dreamerv3,size12m); "
        "default: debug",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="start from this JSON config instead of a preset (a run's logdir/config.json "
        "repeats that run); overrides still apply",
    )
    parser.add_argument("--logdir", required=True, help="run directory; reused to resume")
    parser.add_argument("--agent", default=None, choices=AGENTS)
    parser.add_argument(
        "--compile-cache",
        default=os.environ.get("RSSM_JAX_CACHE", str(Path.home() / ".cache" / "rssm-jax" / "xla")),
        help="directory of JAX's persistent compilation cache (a second launch of the same "
        "command loads its compiled programs instead of compiling); env RSSM_JAX_CACHE",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile everything afresh, without the persistent cache",
    )
    _add_process_options(parser)
    for short, full in SHORTCUTS.items():
        parser.add_argument(
            f"--{short}", dest=f"short_{short}", default=None, help=f"same as --{full}"
        )
    return parser


def _add_process_options(parser: argparse.ArgumentParser) -> None:
    dist = parser.add_argument_group(
        "several processes (hosts)",
        "one run over several processes: every process gets the same command with its own "
        "--process-id (defaults: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)",
    )
    dist.add_argument("--coordinator", default=None, help="host:port of process 0")
    dist.add_argument("--num-processes", type=int, default=None, help="processes in the run")
    dist.add_argument("--process-id", type=int, default=None, help="this process, from 0")
    dist.add_argument(
        "--distributed",
        choices=("auto",),
        default=None,
        help="'auto': let JAX find the cluster (TPU pods, SLURM, Open MPI)",
    )
