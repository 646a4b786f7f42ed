"""Errors that name their own fix: the commands print the message and exit with status 2,
without a traceback (``experiments/train.py``, ``experiments/evaluate.py``)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config, a logdir or an environment the run cannot start with; the message names the
    fix."""
