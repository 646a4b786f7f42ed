"""Reading an offline wandb run back (its id, config and history) for the tests: wandb 0.31 has
no command that prints an offline run, so the run file's records are parsed here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from experiments.run.wandb_file import read_records


def _item_name(item: Any) -> str:
    return item.key if item.key else ".".join(item.nested_key)


def _history_value(item: Any) -> Any:
    which = item.WhichOneof("value")
    if which is None:
        return json.loads(item.value_json)
    if which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    return getattr(item, which)


def read_offline_run(run_dir: str | os.PathLike) -> dict:
    """Reads an offline wandb run back: its id, config and logged history.

    Args:
      run_dir: an ``offline-run-*`` directory (holding ``run-<id>.wandb``) or that file.

    Returns:
      ``{"run_id": str, "config": dict, "history": [{"step": int, name: value, ...}, ...],
      "metrics": {name: [summary ops]}, "artifacts": [{"name", "type", "aliases"}], "tags":
      [str], "group": str}``; one history row per committed step, wandb's internal
      ``_``-prefixed fields left out.
      Values are as wandb stored them in JSON (a float 2.0 may come back as the int 2); media
      values are wandb's descriptions (``{"_type": "video-file", "path": ..., ...}``, the path
      relative to the run's ``files/`` directory).
    """
    from wandb.proto import wandb_internal_pb2

    path = Path(run_dir)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if len(files) != 1:
            raise ValueError(f"expected one run-*.wandb file in {path}, found {len(files)}")
        path = files[0]
    run_id: str | None = None
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    metrics: dict[str, list[str]] = {}
    artifacts: list[dict[str, Any]] = []
    tags: list[str] = []
    group = ""
    for payload in read_records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "metric" and record.metric.name:
            summary = record.metric.summary
            metrics[record.metric.name] = [
                f.name for f in summary.DESCRIPTOR.fields if getattr(summary, f.name) is True
            ]
        elif kind == "artifact":
            art = record.artifact
            artifacts.append({"name": art.name, "type": art.type, "aliases": list(art.aliases)})
        elif kind == "run":
            run_id, tags, group = record.run.run_id, list(record.run.tags), record.run.run_group
            for item in record.run.config.update:
                config[_item_name(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_item_name(item)] = json.loads(item.value_json)
            for item in record.config.remove:
                config.pop(_item_name(item), None)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                keys = [item.key] if item.key else list(item.nested_key)
                if keys == ["_step"]:
                    row.setdefault("step", int(_history_value(item)))
                elif not keys[0].startswith("_"):
                    # Media objects arrive as one item per field (nested_key ['video', 'path']).
                    node = row
                    for key in keys[:-1]:
                        node = node.setdefault(key, {})
                    node[keys[-1]] = _history_value(item)
            if record.history.HasField("step"):
                row["step"] = int(record.history.step.num)
            history.append(row)
    if run_id is None:
        raise ValueError(f"{path} holds no run record; is it a complete wandb run file?")
    config.pop("_wandb", None)
    return {
        "run_id": run_id,
        "config": config,
        "history": history,
        "metrics": metrics,
        "artifacts": artifacts,
        "tags": tags,
        "group": group,
    }
