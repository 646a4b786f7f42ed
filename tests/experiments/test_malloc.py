"""The runner's allocator: TCMalloc preloaded by re-executing the same command, or glibc's."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import malloc

ROOT = Path(__file__).resolve().parents[2]
# Prints the PID and whether TCMalloc is mapped into the process, after reexec() returned.
PROBE = (
    "from experiments import malloc; malloc.reexec(); import os; "
    "maps = open('/proc/self/maps').read(); "
    "print(os.getpid(), 'tcmalloc' in maps, malloc.active())"
)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", malloc._DONE)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_choice_reads_the_environment():
    assert malloc.choice({}) == "tcmalloc"
    assert malloc.choice({malloc.ENV: "System "}) == "system"
    assert malloc.choice({malloc.ENV: ""}) == "tcmalloc"
    with pytest.raises(ValueError, match="RSSM_JAX_MALLOC='jemalloc'; expected one of"):
        malloc.choice({malloc.ENV: "jemalloc"})


def test_preload_env_puts_the_library_first_once():
    env = malloc.preload_env({"LD_PRELOAD": "/a.so:/lib/tc.so", "X": "1"}, "/lib/tc.so")
    assert env["LD_PRELOAD"] == "/lib/tc.so:/a.so"
    assert env[malloc._DONE] == "/lib/tc.so" and env["X"] == "1"
    assert malloc.preload_env({}, "/lib/tc.so")["LD_PRELOAD"] == "/lib/tc.so"


def test_reexec_preloads_tcmalloc_in_the_same_process():
    if malloc.find_tcmalloc() is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs libtcmalloc-minimal4 (.ci/run), but it was not found")
        pytest.skip("TCMalloc is not installed (apt-get install libtcmalloc-minimal4)")
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE], env=_env(), stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=120)
    pid, loaded, active = out.split()
    # exec keeps the PID: signals sent to the launched runner still reach it.
    assert int(pid) == proc.pid and loaded == "True" and "tcmalloc" in active

    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=_env(RSSM_JAX_MALLOC="system"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split()[1:] == ["False", "None"]


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "experiments.train"],  # and the console script rssm-train:
        ["-c", "import sys; from experiments import cli; sys.exit(cli.train())"],
    ],
)
def test_runner_refuses_an_unknown_allocator(command):
    proc = subprocess.run(
        [sys.executable, *command, "--logdir", "unused"],
        env=_env(RSSM_JAX_MALLOC="jemalloc"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "RSSM_JAX_MALLOC='jemalloc'" in proc.stderr and "system" in proc.stderr
    assert not (ROOT / "unused").exists()


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_lazy_zeros_take_memory_only_where_written():
    before = _rss_bytes()
    ring = malloc.lazy_zeros((1 << 20, 128), "float32")  # 512 MiB, as a replay ring
    assert ring.shape == (1 << 20, 128) and ring.dtype == "float32" and ring.flags.writeable
    assert not ring[::4096].any() and not ring[-1].any()
    ring[123] = 7.0
    assert ring[123].sum() == 7.0 * 128 and ring[124].sum() == 0.0
    # Reading zeros and writing one row touched a few pages, not the 512 MiB.
    assert _rss_bytes() - before < 64 << 20
    small = malloc.lazy_zeros((3, 2), bool)
    assert small.shape == (3, 2) and not small.any()
