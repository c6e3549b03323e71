"""NPO: negative preference optimisation against the frozen reference model (Zhang et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearningConfig, check_beta
from ..losses import npo_loss
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class NPOConfig(UnlearningConfig):
    """Config of NPO: loss `gamma·(−(2/β)·E_f log σ(−β·[log p_θ(y|x) − log p_θ0(y|x)])) + alpha·R(D_r)`."""

    beta: float = field(default=0.1, metadata={"help": "Inverse temperature β of the NPO term (paper: 0.1)."})
    precompute_reference: bool = field(
        default=False,
        metadata={
            "help": "Compute the reference log-probs of the forget set once before training and hold no reference "
            "model during training (the retain KL term, if chosen, still needs one)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_beta(self.beta, "the NPO paper uses 0.1")


class NPOTrainer(UnlearningTrainer):
    """Negative Preference Optimization (Zhang, Lin, Bai, Mei; arXiv 2404.05868, COLM 2024)."""

    config_class = NPOConfig
    _name = "NPO"
    _tag_names = UnlearningTrainer._tag_names + ["npo"]
    _paper = {
        "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "id": "2404.05868",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.precompute_reference:
            self.precompute_reference_logps()

    @property
    def needs_reference_model(self) -> bool:
        return super().needs_reference_model or not self.args.precompute_reference

    def compute_unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        policy_logps = self.answer_logps(model, forget)[0]
        reference_logps = self.reference_answer_logps(model, forget, inputs["forget_index"])
        forget_term = self.args.gamma * npo_loss(policy_logps, reference_logps, self.args.beta)
        return self.add_retain_term(model, inputs, {"forget": forget_term})


register_method("npo", NPOConfig, NPOTrainer)
