"""SimNPO: NPO without a reference model, on length-normalised log-probs with a margin (Fan et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearningConfig, check_beta
from ..losses import simnpo_loss
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class SimNPOConfig(UnlearningConfig):
    """Config of SimNPO: loss `gamma·(−(2/β)·E_f log σ(−β·(log p_θ(y|x)/|y|) − δ)) + alpha·R(D_r)`."""

    beta: float = field(default=4.5, metadata={"help": "Inverse temperature β (paper's TOFU setting: 4.5)."})
    delta: float = field(default=0.0, metadata={"help": "Reward margin δ (paper's TOFU setting: 0)."})

    def __post_init__(self):
        super().__post_init__()
        check_beta(self.beta, "the SimNPO paper uses 4.5 on TOFU")


class SimNPOTrainer(UnlearningTrainer):
    """Simple NPO (Fan, Liu, Lin, Jia, Zhang, Mei, Liu; arXiv 2410.07163): no reference model is needed."""

    config_class = SimNPOConfig
    _name = "SimNPO"
    _tag_names = UnlearningTrainer._tag_names + ["simnpo"]
    _paper = {"title": "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
              "id": "2410.07163"}

    def compute_unlearning_loss(self, model, inputs):
        sum_logps, num_tokens = self.answer_logps(model, inputs["forget"])
        mean_logps = sum_logps / num_tokens.clamp(min=1)
        forget_term = self.args.gamma * simnpo_loss(mean_logps, self.args.beta, self.args.delta)
        return self.add_retain_term(model, inputs, {"forget": forget_term})


register_method("simnpo", SimNPOConfig, SimNPOTrainer)
