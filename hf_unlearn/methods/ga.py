"""Gradient ascent (GA): raise the forget set's NLL. The simplest baseline; it collapses a model when run long."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearningConfig
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class GAConfig(UnlearningConfig):
    """Config of gradient ascent: loss `−gamma·ℓ(D_f)`; there is no retain term (use `grad_diff` for one)."""

    alpha: float = field(default=0.0, metadata={"help": "Must stay 0: gradient ascent has no retain term."})

    def __post_init__(self):
        super().__post_init__()
        if self.alpha != 0:
            raise ValueError(f"GAConfig(alpha={self.alpha}): gradient ascent has no retain term; use grad_diff.")


class GATrainer(UnlearningTrainer):
    """Gradient ascent on the forget set (the TOFU and MUSE baseline, Maini et al. 2024, arXiv 2401.06121)."""

    config_class = GAConfig
    _name = "GA"
    _tag_names = UnlearningTrainer._tag_names + ["ga"]
    # the baseline as TOFU defines it
    _paper = {"title": "TOFU: A Task of Fictitious Unlearning for LLMs", "id": "2401.06121"}

    def compute_unlearning_loss(self, model, inputs):
        forget_nll = self.answer_nll(model, inputs["forget"])
        return {"forget": -self.args.gamma * forget_nll}


register_method("ga", GAConfig, GATrainer)
