"""Evaluation as plain functions."""

from .probability import answer_nll, answer_stats

__all__ = ["answer_nll", "answer_stats"]
