"""Moved to `hf_unlearn.evaluation.audit` (its heatmaps to `hf_unlearn.plots`); old imports keep working."""

from .evaluation.audit import *  # noqa: F403
