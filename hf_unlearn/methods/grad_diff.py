"""GradDiff: gradient ascent on the forget set plus descent on the retain set (NLL or KL to the reference)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import UnlearningConfig
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class GradDiffConfig(UnlearningConfig):
    """Config of GradDiff: loss `−gamma·ℓ(D_f) + alpha·R(D_r)`, `R` the retain NLL or `KL(p_θ0 ‖ p_θ)` per
    `retain_loss`. Defaults γ = α = 1, as in TOFU and open-unlearning."""


class GradDiffTrainer(UnlearningTrainer):
    """Gradient difference (Liu et al. 2022, "Continual learning and private unlearning"; TOFU's GradDiff/KL)."""

    config_class = GradDiffConfig
    _name = "GradDiff"
    _tag_names = UnlearningTrainer._tag_names + ["grad_diff"]
    # the baseline as TOFU defines it
    _paper = {"title": "TOFU: A Task of Fictitious Unlearning for LLMs", "id": "2401.06121"}

    def compute_unlearning_loss(self, model, inputs):
        forget_nll = self.answer_nll(model, inputs["forget"])
        return self.add_retain_term(model, inputs, {"forget": -self.args.gamma * forget_nll})


register_method("grad_diff", GradDiffConfig, GradDiffTrainer)
