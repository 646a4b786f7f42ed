"""The process's host memory allocator: TCMalloc in place of glibc's malloc.

Why: XLA:CPU allocates each execution's temporary buffer in one piece (about 450 MB for a
size1m Dreamer update at batch 16 x 64) from a worker thread. glibc serves a block that large
from a fresh ``mmap`` outside its arenas (a thread's arena holds at most 64 MB, and no
tunable changes that) and unmaps it when it is freed, so every update faults in and zeroes the
whole buffer again: about 112,000 page faults per size1m update. TCMalloc keeps freed pages
mapped and hands them back on the next execution: 13,000 page faults, and 0.44 s per update
against 0.53 s with glibc on a 2-core CPU (1.19x,
``benchmarks/results/update_cpu_allocator_glibc_vs_tcmalloc.json``, the same figure the
README gives). ``benchmarks/update.py --baseline`` measures the difference (the update runs
with TCMalloc, the baseline revision with glibc's malloc).

The allocator is fixed when a process starts (``LD_PRELOAD``), so ``reexec()`` replaces the
process, once, by the same command line with TCMalloc preloaded (same PID, same arguments;
children such as environment workers inherit it). It is a no-op where TCMalloc is not
installed (Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``) and where
``RSSM_JAX_MALLOC=system`` asks for glibc's malloc. Results do not depend on the allocator.

Large buffers that must start zeroed and stay unbacked until written (replay rings) come from
``lazy_zeros``, an anonymous mapping, because TCMalloc's ``calloc`` (``np.zeros``) writes every
byte of a fresh block, which would touch a 5M-step replay's gigabytes at startup.

This module imports nothing heavy: the runner calls ``reexec()`` before it imports JAX.
"""

from __future__ import annotations

import ctypes.util
import mmap
import os
import sys
from collections.abc import Mapping
from typing import Any

ENV = "RSSM_JAX_MALLOC"  # 'tcmalloc' (default) or 'system'
CHOICES = ("tcmalloc", "system")
_DONE = "RSSM_JAX_MALLOC_ACTIVE"  # set in the re-executed process: never re-execute twice
_NAMES = ("tcmalloc_minimal", "tcmalloc")
_COMMON_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)


def choice(environ: Mapping[str, str] | None = None) -> str:
    """The allocator asked for by ``RSSM_JAX_MALLOC`` (default 'tcmalloc'); raises on others."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, "tcmalloc").strip().lower() or "tcmalloc"
    if value not in CHOICES:
        raise ValueError(
            f"{ENV}={environ.get(ENV)!r}; expected one of {CHOICES} ('system' keeps glibc's "
            "malloc, 'tcmalloc' preloads TCMalloc where it is installed)"
        )
    return value


def find_tcmalloc() -> str | None:
    """Path or soname of an installed TCMalloc shared library, or None."""
    for path in _COMMON_PATHS:
        if os.path.exists(path):
            return path
    for name in _NAMES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def preload_env(environ: Mapping[str, str], library: str) -> dict[str, str]:
    """``environ`` with ``library`` first in ``LD_PRELOAD`` and the re-exec marker set."""
    env = dict(environ)
    rest = [p for p in env.get("LD_PRELOAD", "").split(":") if p and p != library]
    env["LD_PRELOAD"] = ":".join([library, *rest])
    env[_DONE] = library
    return env


def active() -> str | None:
    """The TCMalloc library this process was re-executed with, or None."""
    library = os.environ.get(_DONE, "none")
    return None if library == "none" else library


def reexec() -> None:
    """Replace this process by the same command with TCMalloc preloaded (see the module doc).

    Returns without doing anything when already done, when ``RSSM_JAX_MALLOC=system``, when
    TCMalloc is not installed (one line on stderr says how to install it), or when the command
    line cannot be repeated (an interactive interpreter).
    """
    if _DONE in os.environ or choice() == "system":
        return
    argv = list(getattr(sys, "orig_argv", []))
    if len(argv) < 2 or not sys.executable:
        return
    library = find_tcmalloc()
    if library is None:
        print(
            "note: TCMalloc not found; XLA:CPU re-faults its buffers every update (about 10% "
            "slower). Install it with `apt-get install libtcmalloc-minimal4`, or set "
            f"{ENV}=system to silence this.",
            file=sys.stderr,
        )
        os.environ[_DONE] = "none"  # children need not look again
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], preload_env(os.environ, library))


def reexec_command() -> int | None:
    """``reexec`` for a command's entry point: None to go on, or exit status 2 after one line
    on stderr when ``RSSM_JAX_MALLOC`` holds a value it does not know."""
    try:
        reexec()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return None


def lazy_zeros(shape: tuple[int, ...], dtype: Any) -> Any:
    """A zeroed, writable numpy array whose pages take memory only once written.

    Backed by an anonymous ``mmap`` (the kernel zero-fills a page on first touch) whatever the
    allocator: ``np.zeros`` gives the same laziness under glibc, not under TCMalloc.
    """
    import numpy as np

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < mmap.PAGESIZE:
        return np.zeros(shape, dtype)
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)
