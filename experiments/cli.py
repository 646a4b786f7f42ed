"""Console scripts: ``rssm-train`` (``python -m experiments.train``), ``rssm-eval``
(``python -m experiments.evaluate``) and ``rssm-plot`` (``python -m experiments.plot``),
installed with ``pip install "rssm-jax[experiments]"``.

``rssm-train`` picks the allocator before anything imports JAX, as ``python -m
experiments.train`` does (``experiments/malloc.py``).
"""

from __future__ import annotations


def train() -> int:
    from experiments import malloc

    if (status := malloc.reexec_command()) is not None:
        return status
    from experiments.train import main

    return main()


def evaluate() -> int:
    from experiments.evaluate import main

    return main()


def plot() -> int:
    from experiments.plot import main

    return main()
