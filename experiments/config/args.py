"""The command line: ``--preset NAME --logdir DIR [--section.field VALUE ...]`` -> a validated
``Config``, with ``--help`` listing every field, its comment and the value the run starts from.

tyro builds the command from the dataclasses (``Command`` below and the ``Config`` it holds):
the fields' comments are the help, ``--section.field VALUE`` and ``--section.field=VALUE`` set
a field (``run.batch_length`` or ``run.batch-length``), and ``--tyro-write-completion bash
FILE`` (zsh, tcsh, fish) writes shell completion. Values are read by the config's own rules
(``values.parse_value``), the same as a config file's strings: '1e4' is an int, 'false',
'off' and '0' are False, '2,3,4' is a tuple. A tuple of fixed length also takes its values as
separate arguments, or one value for all: ``--env.size 96,96``, ``--env.size 96 96`` and
``--env.size 96`` are the same.

The run starts from a preset (``--preset``, default ``debug``) or a saved config
(``--config``); ``parse_args`` returns it as ``args.base``, so ``differences(cfg, args.base)``
says what the command line changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro
from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec, PrimitiveTypeInfo

from experiments.config.presets import PRESETS, SIZES, compose
from experiments.config.schema import Config, load, spell, unknown_field
from experiments.config.validate import validate
from experiments.config.values import parse_value, tuple_elements
from experiments.errors import ConfigError

DEFAULT_PRESET = "debug"
# The short flags (schema.py gives each in its field's annotation).
SHORTCUTS = {
    "task": "env.task",
    "steps": "run.steps",
    "seed": "run.seed",
    "envs": "env.envs",
    "obs": "env.obs",
    "wandb": "logging.wandb",
}
_PRESET_HELP = (
    f"the config the run starts from: one of {', '.join(PRESETS)}, or several joined by "
    "commas, later ones overriding (the sizes "
    f"{', '.join(SIZES)} set the model widths only: --preset dreamerv3,size12m)"
)


def _default_cache() -> str:
    return os.environ.get("RSSM_JAX_CACHE", str(Path.home() / ".cache" / "rssm-jax" / "xla"))


def _from_env(metavar: str, variable: str) -> Any:
    """A process option whose default is an environment variable's."""
    return tyro.conf.arg(metavar=metavar, help_behavior_hint=f"(default: ${variable})")


@dataclasses.dataclass(frozen=True)
class Command:
    """The command: its own options, then every config field (``cfg``, named without a
    prefix: ``--model.deter``, ``--agent``)."""

    cfg: Annotated[Config, tyro.conf.arg(name=""), tyro.conf.FlagConversionOff]
    logdir: Annotated[str, tyro.conf.arg(metavar="DIR")]  # run directory; reused to resume
    preset: Annotated[str | None, tyro.conf.arg(help=_PRESET_HELP, metavar="NAME")] = None
    # start from this JSON config instead of a preset (a run's logdir/config.json repeats that
    # run); the fields set here still apply
    config: Annotated[str | None, tyro.conf.arg(metavar="FILE")] = None
    # directory of JAX's persistent compilation cache (a second launch of the same command loads
    # its compiled programs instead of compiling); env RSSM_JAX_CACHE
    compile_cache: Annotated[str, tyro.conf.arg(metavar="DIR")] = dataclasses.field(
        default_factory=_default_cache
    )
    # compile everything afresh, without the persistent cache
    no_compile_cache: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
    # One run over several processes (hosts), each given the same command and its own process
    # id: host:port of process 0
    coordinator: Annotated[str | None, _from_env("HOST:PORT", "JAX_COORDINATOR_ADDRESS")] = None
    # processes in the run
    num_processes: Annotated[int | None, _from_env("N", "JAX_NUM_PROCESSES")] = None
    # this process, from 0
    process_id: Annotated[int | None, _from_env("ID", "JAX_PROCESS_ID")] = None
    # 'auto': let JAX find the cluster (TPU pods, SLURM, Open MPI)
    distributed: Literal["auto"] | None = None


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """``--preset NAME --logdir DIR [--section.field VALUE ...]`` -> (validated Config,
    namespace of the command's options: logdir, preset, config, compile_cache,
    no_compile_cache, coordinator, num_processes, process_id, distributed; and ``base``, the
    config the run started from, with ``origin``, the option that chose it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    preset, config = _starting_point(argv)
    if config is not None:
        base, origin = load(config), f"--config {config}"
    else:
        preset = preset or DEFAULT_PRESET
        base, origin = compose(preset), f"--preset {preset}"
    default = Command(cfg=base, logdir=tyro.MISSING, preset=preset, config=config)
    command, unknown = tyro.cli(
        Command,
        prog=_prog(argv),
        description=_description(origin),
        args=argv,
        default=default,
        return_unknown_args=True,
        use_underscores=True,
        registry=_REGISTRY,
    )
    if unknown:
        raise ValueError(_unknown_argument(unknown[0]))
    for name, value in _leaves(command):
        if isinstance(value, _Unread):
            parse_value(name, value.typ, value.text)  # raises, naming the field
    if not command.logdir.strip():
        raise ConfigError("--logdir is empty: name the run's directory, e.g. runs/walker")
    options = {f.name: getattr(command, f.name) for f in dataclasses.fields(Command)}
    del options["cfg"]
    return validate(command.cfg), argparse.Namespace(**options, base=base, origin=origin)


def _starting_point(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """(--preset, --config) of ``argv``, read before the rest: they give the defaults that the
    other options change and that ``--help`` shows. An option without its value is left for
    tyro to report with the others."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--config", default=None)
    try:
        known, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError:
        return None, None
    if known.config is not None and known.preset is not None:
        raise ValueError(
            "--config and --preset both give the starting config: use one (overrides apply to "
            "either)"
        )
    return known.preset, known.config


def _prog(argv: Sequence[str]) -> str:
    """The command's name in help; shell completion is always for the console script (one
    for ``python -m ...`` would take over the completion of ``python`` itself)."""
    completion = argv[:1] in (["--tyro-write-completion"], ["--tyro-print-completion"])
    if completion or Path(sys.argv[0]).name == "rssm-train":
        return "rssm-train"
    return "python -m experiments.train"


def _description(origin: str) -> str:
    return (
        "Train a world-model agent on a dm-control or Gymnasium task. Every config field is "
        "an option (--model.deter 512 or --model.deter=512; booleans true/false, lists a,b,c). "
        f"The defaults below are those of {origin}, the config this command starts from. "
        "Shell completion: rssm-train --tyro-write-completion bash FILE (or zsh, tcsh, fish)."
    )


def _unknown_argument(token: str) -> str:
    """The message for the first argument no option took."""
    if not token.startswith("--"):
        return (
            f"unexpected argument {token!r}; a field is set as --section.field VALUE, e.g. "
            "--model.deter 512"
        )
    name = token[2:].partition("=")[0].replace("-", "_")
    own = [f.name for f in dataclasses.fields(Command) if f.name != "cfg"]
    return unknown_field(name, [*own, *SHORTCUTS])


class _Unread:
    """A value that did not read as its field's type: ``parse_args`` raises the error once it
    knows the field's name."""

    def __init__(self, typ: Any, text: str) -> None:
        self.typ, self.text = typ, text


def _leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, value) for every leaf field of ``obj``, a ``Command`` or a section; the
    command's ``cfg`` adds no prefix, as on the command line."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, "" if f.name == "cfg" else f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


_METAVARS = {int: "INT", float: "FLOAT", bool: "{true,false}"}


def _read_as(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
    """How tyro reads an int, float, bool or tuple field: one argument (a tuple of fixed length
    n: 1 or n), by the config's rules (``parse_value``), shown in help as the command line
    writes it (``spell``)."""
    typ = info.type
    origin = typing.get_origin(typ)
    if typ not in _METAVARS and origin is not tuple:
        return None
    nargs: int | tuple[int, ...] = 1
    if origin is tuple:
        element, length = tuple_elements(typ)
        metavar = f"{element.__name__.upper()},..."  # the field's comment gives a length
        nargs = 1 if length in (None, 1) else (1, length)
    else:
        metavar = _METAVARS[typ]

    def read(texts: list[str]) -> Any:
        text = ",".join(texts)
        try:
            return parse_value("", typ, text)
        except ValueError:
            return _Unread(typ, text)

    def is_instance(value: Any) -> bool:
        if typ is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, origin or typ)

    return PrimitiveConstructorSpec(
        nargs=nargs,
        metavar=metavar,
        instance_from_str=read,
        is_instance=is_instance,
        # An empty tuple as '' (tyro quotes an empty default itself).
        str_from_instance=lambda value: [spell(value) if value != () else ""],
    )


_REGISTRY = ConstructorRegistry()
_REGISTRY.primitive_rule(_read_as)
