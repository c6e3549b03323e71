"""WGA: weighted gradient ascent, each answer token weighted by its probability to a power (Wang, Zhou, Zhou, Shin, Han,
Weinberger; arXiv 2502.19301)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MAX_BETA, UnlearningConfig
from ..losses import token_logps, wga_loss
from ..registry import register_method
from ..trainer import UnlearningTrainer, model_inputs


@dataclass
class WGAConfig(UnlearningConfig):
    """Config of WGA: loss `gamma·E_f mean_t [sg(p_θ(y_t)^β)·log p_θ(y_t | y_<t, x)] + alpha·R(D_r)` (sg: no gradient
    through the weight). A token's pull fades as its probability falls, so the ascent slows down by itself instead of
    running away (β = 0 is plain gradient ascent).

    Defaults β = 1, γ = α = 1 with the retain NLL (open-unlearning's `configs/trainer/WGA.yaml`; the authors' own code
    trains the forget term alone, `alpha=0`). The tokens are averaged per answer, then over answers; the authors' code
    and open-unlearning average over all answer tokens of the batch (equal when the answers have the same length; the
    per-answer mean makes gradient accumulation equal the large batch).
    """

    beta: float = field(default=1.0, metadata={"help": "Power β of the token weight p^β (paper, open-unlearning: 1)."})

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.beta <= MAX_BETA:
            raise ValueError(f"beta={self.beta} is out of range: use 0 <= beta <= {MAX_BETA:g} (default 1.0; 0 is "
                             "plain gradient ascent). A negative power weighs the least likely tokens most and "
                             "diverges; a larger one weighs every token not already near certain to nearly 0.")


class WGATrainer(UnlearningTrainer):
    """Weighted Gradient Ascent (Wang et al., ICLR 2025, arXiv 2502.19301), no reference model."""

    config_class = WGAConfig
    _name = "WGA"
    _tag_names = UnlearningTrainer._tag_names + ["wga"]
    _paper = {"title": "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond", "id": "2502.19301"}

    def compute_unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        logps, mask = token_logps(model(**model_inputs(forget)).logits, forget["labels"])
        forget_term = self.args.gamma * wga_loss(logps, mask, self.args.beta).mean()
        return self.add_retain_term(model, inputs, {"forget": forget_term})


register_method("wga", WGAConfig, WGATrainer)
