"""The built wheel: the library's dependencies (jax, flax, optax, distrax and the two they
need), the runner's behind an extra, the console scripts, DreamerV3's curves as package data."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_requirements_and_console_scripts(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("rssm", "agents", "experiments"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]  # setuptools per pyproject
    subprocess.run([*cmd, "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("rssm_jax-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
    requires = [
        line.split(":", 1)[1].strip()
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:")
    ]

    def name(req: str) -> str:
        return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()

    base = {name(r) for r in requires if "extra ==" not in r}
    assert base == {"jax", "flax", "optax", "distrax", "tfp-nightly", "numpy"}
    runner = {name(r) for r in requires if 'extra == "experiments"' in r}
    assert runner >= {"dm-control", "mujoco", "orbax-checkpoint", "wandb", "gymnasium"}
    assert {"tensorboardx", "pillow", "matplotlib"} <= runner
    assert "rssm-train = experiments.cli:train" in entry.decode()
    assert "rssm-eval = experiments.cli:evaluate" in entry.decode()
    assert "rssm-plot = experiments.cli:plot" in entry.decode()
    # rssm-plot's reference curves, and their license, travel in the wheel.
    scores = {n.rsplit("/", 1)[1] for n in names if n.startswith("experiments/reference_scores/")}
    assert scores >= {
        "dmc_proprio-dreamerv3.json.gz",
        "dmc_vision-dreamerv3.json.gz",
        "atari100k-dreamerv3.json.gz",
        "NOTICE.md",
    }
    # The library's packages are in the wheel.
    assert {n.split("/")[0] for n in names} >= {"rssm", "agents", "experiments"}
