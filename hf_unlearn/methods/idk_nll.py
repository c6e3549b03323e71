"""IdkNLL: fine-tune the forget questions toward refusal answers ("I don't know."), plus the retain term."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import UnlearningConfig
from ..losses import mean_nll
from ..refusals import RefusalAnswersMixin, RefusalConfigMixin
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class IdkNLLConfig(RefusalConfigMixin, UnlearningConfig):
    """Config of IdkNLL: loss `gamma·ℓ(x, y_idk) + alpha·R(D_r)`, ℓ the mean answer-token NLL of a refusal answer
    `y_idk` to each forget question (one per row, picked by the row index and `seed` from `refusals`), `R` the retain
    NLL or KL per `retain_loss`. Defaults γ = α = 1: TOFU's "preference optimization" baseline sums the two losses
    (Maini et al. 2024, arXiv 2401.06121); the NPO paper names it IdkNLL."""


class IdkNLLTrainer(RefusalAnswersMixin, UnlearningTrainer):
    """IdkNLL, TOFU's refusal baseline (Maini et al. 2024, arXiv 2401.06121): the forget answers are never scored; each
    forget question is trained toward a refusal, tokenised with the same prompt template and `max_length`."""

    config_class = IdkNLLConfig
    _name = "IdkNLL"
    _tag_names = UnlearningTrainer._tag_names + ["idk_nll"]
    _paper = {"title": "TOFU: A Task of Fictitious Unlearning for LLMs", "id": "2401.06121"}

    def compute_unlearning_loss(self, model, inputs):
        refusal_nll = mean_nll(*self.alternate_logps(model, inputs)).mean()
        return self.add_retain_term(model, inputs, {"forget": self.args.gamma * refusal_nll})


register_method("idk_nll", IdkNLLConfig, IdkNLLTrainer)
