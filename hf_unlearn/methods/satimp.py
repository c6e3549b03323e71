"""SatImp: gradient ascent with token weights for saturation and importance (Yang, Wang, Huang, Liu, Zhang, Han;
arXiv 2505.11953)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MAX_BETA, UnlearningConfig
from ..losses import satimp_loss, token_logps
from ..registry import register_method
from ..trainer import UnlearningTrainer, model_inputs


@dataclass
class SatImpConfig(UnlearningConfig):
    """Config of SatImp: loss `gamma·E_f mean_t [sg(p^β1·(1 − p)^β2)·log p] + alpha·R(D_r)`, p = p_θ(y_t | y_<t, x)
    and sg: no gradient through the weight. Saturation (p^β1) stops pushing tokens already unlearned; importance
    ((1 − p)^β2) weighs the less likely tokens more, as the paper found importance-based weights do.

    Defaults β1 = 5, β2 = 1, γ = 1, α = 0.1 with the retain NLL: the authors' `satimp_gd` (forget term + 0.1 × retain
    NLL) and open-unlearning's `satimp.py` and SatImp README (forget:retain = 10:1). open-unlearning's
    `configs/trainer/SatImp.yaml` sets the opposite pair (γ = 0.1, α = 1); pass `gamma=0.1, alpha=1.0` for it. The
    tokens are averaged per answer, then over answers (the authors: over all answer tokens of the batch; equal when the
    answers have the same length; the per-answer mean makes gradient accumulation equal the large batch).
    """

    beta1: float = field(default=5.0, metadata={"help": "Saturation power β1 of p^β1 (paper/authors' code: 5)."})
    beta2: float = field(default=1.0, metadata={"help": "Importance power β2 of (1 − p)^β2 (paper/authors' code: 1)."})
    alpha: float = field(
        default=0.1, metadata={"help": "Weight of the retain term (authors' satimp_gd, open-unlearning README: 0.1)."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name, default in (("beta1", 5.0), ("beta2", 1.0)):
            value = getattr(self, name)
            if not 0 <= value <= MAX_BETA:
                raise ValueError(f"{name}={value} is out of range: use 0 <= {name} <= {MAX_BETA:g} (default {default}; "
                                 "beta1 = beta2 = 0 is plain gradient ascent). A negative power weighs some tokens "
                                 "without bound; a larger one weighs every token to nearly 0.")


class SatImpTrainer(UnlearningTrainer):
    """SatImp (Yang et al., ICML 2025, arXiv 2505.11953), no reference model."""

    config_class = SatImpConfig
    _name = "SatImp"
    _tag_names = UnlearningTrainer._tag_names + ["satimp"]
    _paper = {"title": "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", "id": "2505.11953"}

    def compute_unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        logps, mask = token_logps(model(**model_inputs(forget)).logits, forget["labels"])
        forget_term = self.args.gamma * satimp_loss(logps, mask, self.args.beta1, self.args.beta2).mean()
        return self.add_retain_term(model, inputs, {"forget": forget_term})


register_method("satimp", SatImpConfig, SatImpTrainer)
