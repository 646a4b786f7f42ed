"""The training command: parse the config, join the other processes, run the loop.

    python -m experiments.train --preset debug --task cartpole-balance --steps 4000 --logdir runs/x

Re-running with the same ``--logdir`` resumes from the last checkpoint: the training state,
counters and replay come back exactly, and the wandb run continues under the same id. The logdir
may hold placeholders (``runs/{task}-{timestamp}``; experiments/run/identity.py): a sweep's runs
then share one command line. The loop itself is ``experiments/run/loop.py``.
"""

from __future__ import annotations

if __name__ == "__main__":  # the allocator is chosen before JAX is imported (malloc.py)
    from experiments import malloc

    if (status := malloc.reexec_command()) is not None:
        raise SystemExit(status)

import json
import os
import sys
from pathlib import Path

import jax

from experiments.config import differences, parse_args
from experiments.config.validate import check_memory
from experiments.errors import ConfigError
from experiments.replay import ReplayDamaged
from experiments.run import identity
from experiments.run.checkpoint import StorageError
from experiments.run.compat import ConfigMismatch
from experiments.run.loop import train
from experiments.run.scale import BatchSplit, initialize

__all__ = ["main", "use_compile_cache"]


def use_compile_cache(directory: str | os.PathLike) -> bool:
    """Store every compiled XLA program under ``directory`` and load it from there next time;
    False (with a warning, and no cache) where the directory cannot be created or written.

    Compilation dominates a launch on a CPU (about a minute for a size1m Dreamer update); with
    the cache a second launch of the same command reaches its first update in seconds.
    """
    path = Path(directory).expanduser()
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        print(
            f"warning: the compilation cache {path} is not usable ({err.strerror or err}); "
            "compiling without it. Set RSSM_JAX_CACHE or --compile-cache to a writable "
            "directory, or pass --no-compile-cache",
            file=sys.stderr,
        )
        return False
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)  # validated
        check_memory(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        initialize(
            args.coordinator, args.num_processes, args.process_id, auto=args.distributed == "auto"
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.no_compile_cache:
        use_compile_cache(args.compile_cache)
    if jax.process_index() == 0:  # what this command changes; config.json holds it all
        lines = differences(cfg, args.base)
        print(f"config: {args.origin}" + ("" if lines else ", unchanged"), file=sys.stderr)
        print("".join(f"  {line}\n" for line in lines), end="", file=sys.stderr)
    preset = args.preset or ("config" if args.config else "debug")
    cfg = identity.with_wandb_defaults(cfg, preset)
    run_id = identity.sweep_run_id() or identity.new_run_id()
    try:
        if jax.process_count() > 1 and identity.uses_placeholders(args.logdir):
            raise ConfigError(
                f"--logdir {args.logdir!r}: {{timestamp}} and {{run_id}} differ between "
                "processes; give every process the same literal logdir"
            )
        logdir = identity.expand_logdir(args.logdir, cfg, preset, run_id)
        if logdir != args.logdir:  # the path to resume with
            print(f"logdir: {logdir}", file=sys.stderr)
        summary = train(cfg, logdir, run_id if "{run_id}" in args.logdir else None)
    except (ConfigError, ConfigMismatch, BatchSplit, ReplayDamaged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StorageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    if summary["interrupted"]:
        print("interrupted: checkpoint saved; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
