"""What names a run outside its logdir: its wandb run id, the code it ran, and a logdir path
written with placeholders.

- ``<logdir>/wandb.json`` holds the wandb run id (a list, one per seed, with ``run.seeds`` K),
  written when the run starts: a run killed before its first checkpoint resumes into the same
  wandb run (after a checkpoint, the id also travels in the checkpoint).
- Under a wandb sweep agent (``WANDB_SWEEP_ID`` and ``WANDB_RUN_ID`` set) a new run takes the
  agent's run id, so the sweep sees its run.
- ``git_state`` records the commit, branch and whether the tree had changes; a start writes one
  line to ``<logdir>/git.jsonl`` and, with changes, the diff beside it.
- ``expand_logdir`` fills ``{timestamp}``, ``{run_id}``, ``{seed}``, ``{task}``, ``{agent}`` and
  ``{preset}``: one command line serves every run of a sweep.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.config.schema import replace
from experiments.errors import ConfigError

WANDB_FILE = "wandb.json"
GIT_FILE = "git.jsonl"
PLACEHOLDERS = ("timestamp", "run_id", "seed", "task", "agent", "preset")
_RUN_ID_CHARS = string.ascii_lowercase + string.digits
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout this code runs from


def new_run_id() -> str:
    """A wandb run id in wandb's own format (8 lowercase letters and digits). Ids must differ
    between runs, so they come from the OS, not from the experiment seed."""
    return "".join(secrets.choice(_RUN_ID_CHARS) for _ in range(8))


def sweep_run_id() -> str | None:
    """The run id a wandb sweep agent gave this process (``WANDB_RUN_ID`` under
    ``WANDB_SWEEP_ID``), else None."""
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        return os.environ["WANDB_RUN_ID"]
    return None


def read_run_id(logdir: str | os.PathLike) -> str | list[str] | None:
    """The wandb run id(s) ``<logdir>/wandb.json`` holds, or None without the file."""
    path = Path(logdir) / WANDB_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["run_id"]
    except (ValueError, KeyError, TypeError):
        print(f"warning: {path} is not readable; this run takes a new wandb id", file=sys.stderr)
        return None


def write_run_id(logdir: str | os.PathLike, run_id: str | list[str]) -> None:
    """Writes ``<logdir>/wandb.json`` atomically (a kill leaves the old file or the new)."""
    path = Path(logdir) / WANDB_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"run_id": run_id}) + "\n")
    tmp.replace(path)


def _git(*args: str, root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state(root: str | os.PathLike = SOURCE_ROOT) -> dict[str, Any] | None:
    """``{"commit": sha, "branch": name, "dirty": bool}`` of the git checkout at ``root`` (and
    ``"diff"``: ``git diff HEAD`` when dirty), or None where the code is not a git checkout (an
    installed package)."""
    root = Path(root)
    commit = _git("rev-parse", "HEAD", root=root)
    if commit is None:
        return None
    branch = (_git("rev-parse", "--abbrev-ref", "HEAD", root=root) or "").strip()
    status = _git("status", "--porcelain", "--untracked-files=no", root=root) or ""
    state: dict[str, Any] = {"commit": commit.strip(), "branch": branch, "dirty": bool(status)}
    if state["dirty"]:
        state["diff"] = _git("diff", "HEAD", root=root) or ""
    return state


def record_git_state(logdir: str | os.PathLike, env_step: int, state: dict | None) -> None:
    """Appends this start's code to ``<logdir>/git.jsonl`` (the diff of a dirty tree goes to
    ``git-<UTC time>.diff``, named in the line); nothing without a git checkout."""
    if state is None:
        return
    logdir = Path(logdir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    line = {k: v for k, v in state.items() if k != "diff"}
    line.update(time=stamp, env_step=env_step)
    if state.get("diff"):
        diff = logdir / f"git-{stamp}.diff"
        diff.write_text(state["diff"])
        line["diff_file"] = diff.name
    with open(logdir / GIT_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        raise ConfigError(
            f"--logdir has the placeholder {{{key}}}; known are "
            + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        )


def expand_logdir(template: str, cfg: Any, preset: str, run_id: str) -> str:
    """``template`` with its placeholders filled: ``{timestamp}`` (UTC, 20261206-093000),
    ``{run_id}``, ``{seed}`` (run.seed), ``{task}`` (``:`` and ``/`` as ``-``), ``{agent}`` and
    ``{preset}``. A template without placeholders comes back unchanged."""
    if "{" not in template:
        return template
    fields = _Fields(
        timestamp=time.strftime("%Y%m%d-%H%M%S", time.gmtime()),
        run_id=run_id,
        seed=str(cfg.run.seed),
        task=cfg.env.task.replace(":", "-").replace("/", "-"),
        agent=cfg.agent,
        preset=preset.replace(",", "-"),
    )
    try:
        return template.format_map(fields)
    except (ValueError, IndexError) as err:
        raise ConfigError(
            f"--logdir {template!r} is not a valid template ({err}); placeholders are written "
            "{name}, e.g. runs/{task}-{timestamp}"
        ) from None


def uses_placeholders(template: str, names: tuple[str, ...] = ("timestamp", "run_id")) -> bool:
    """Whether ``template`` holds any of ``names`` (values that differ between processes)."""
    return any(f"{{{name}}}" in template for name in names)


def with_wandb_defaults(cfg: Any, preset: str) -> Any:
    """``cfg`` with wandb's group defaulting to ``<preset>-<task>`` and the tags gaining the
    agent, preset and task (tags a user gave stay first), so runs of one setting sit together
    and filter by any of the three in the W&B table."""
    lg = cfg.logging
    tags = list(lg.tags)
    tags += [t for t in (cfg.agent, preset, cfg.env.task) if t and t not in tags]
    changes: dict[str, Any] = {"logging.tags": tuple(tags)}
    if not lg.group:
        changes["logging.group"] = f"{preset}-{cfg.env.task}"
    return replace(cfg, changes)
