"""Console scripts: ``rssm-train`` (``python -m experiments.train``) and ``rssm-eval``
(``python -m experiments.evaluate``), installed with ``pip install "rssm-jax[experiments]"``.

``rssm-train`` picks the allocator before anything imports JAX, as ``python -m
experiments.train`` does (``experiments/malloc.py``).
"""

from __future__ import annotations

import sys


def train() -> int:
    from experiments import malloc

    try:
        malloc.reexec()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from experiments.train import main

    return main()


def evaluate() -> int:
    from experiments.evaluate import main

    return main()
