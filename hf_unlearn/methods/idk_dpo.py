"""IdkDPO: DPO with a refusal answer preferred over the forget answer, against the frozen reference, plus retain."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearningConfig, check_beta
from ..refusals import RefusalAnswersMixin, RefusalConfigMixin
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class IdkDPOConfig(RefusalConfigMixin, UnlearningConfig):
    """Config of IdkDPO: loss `gamma·(−(2/β)·E_f log σ(β·[(log p_θ(y_idk|x) − log p_θ0(y_idk|x)) − (log p_θ(y|x) −
    log p_θ0(y|x))])) + alpha·R(D_r)`: a refusal `y_idk` (one per forget row, picked by the row index and `seed` from
    `refusals`) preferred over the forget answer `y`; `R` the retain NLL or KL per `retain_loss`. Defaults β = 0.1,
    γ = α = 1, retain NLL, as in the NPO paper's IdkDPO (arXiv 2404.05868) and open-unlearning's DPO trainer."""

    beta: float = field(
        default=0.1, metadata={"help": "Inverse temperature β (NPO paper's IdkDPO and open-unlearning: 0.1)."}
    )
    precompute_reference: bool = field(
        default=False,
        metadata={"help": "Compute the reference log-probs of the forget answers and the refusals once before "
                          "training and hold no reference model during training (the retain KL term, if chosen, "
                          "still needs one)."},
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        check_beta(self.beta, "default 0.1, the NPO paper's IdkDPO")


class IdkDPOTrainer(RefusalAnswersMixin, UnlearningTrainer):
    """IdkDPO, the refusal-preference baseline of "Negative Preference Optimization" (Zhang, Lin, Bai, Mei; arXiv
    2404.05868): DPO (Rafailov et al. 2023) with a refusal, tokenised with the forget row's prompt template and
    `max_length`, as the preferred answer and the forget answer as the rejected one."""

    config_class = IdkDPOConfig
    _name = "IdkDPO"
    _tag_names = UnlearningTrainer._tag_names + ["idk_dpo"]
    _paper = {
        "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "id": "2404.05868",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.precompute_reference:
            self.precompute_reference_alternates()

    @property
    def needs_reference_model(self) -> bool:
        return super().needs_reference_model or not self.args.precompute_reference

    def compute_unlearning_loss(self, model, inputs):
        loss = self.alternate_dpo_loss(model, inputs)
        return self.add_retain_term(model, inputs, {"forget": self.args.gamma * loss})


register_method("idk_dpo", IdkDPOConfig, IdkDPOTrainer)
