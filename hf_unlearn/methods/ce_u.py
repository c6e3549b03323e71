"""CE-U: cross-entropy unlearning, the answer token's logit masked out of the model's own target (Bo Yang;
arXiv 2503.01224)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearningConfig
from ..losses import ce_u_loss
from ..registry import register_method
from ..trainer import UnlearningTrainer, model_inputs


@dataclass
class CEUConfig(UnlearningConfig):
    """Config of CE-U: loss `gamma·E_f mean_t CE(sg(softmax(z_θ with z_θ[y_t] = −∞)), p_θ(· | y_<t, x)) + alpha·R(D_r)`
    (sg: the target is the model's own distribution, detached). The answer token's probability moves to the other
    tokens in proportion to theirs, with a gradient `p_θ − q` that stays bounded where gradient ascent's vanishes (a
    confident model) or explodes (an unlearned one). No reference model.

    The first `ignore_first_n_answer_tokens` answer tokens of each row are left out (the paper's footnote; default 1,
    as open-unlearning's `configs/trainer/CEU.yaml`). The paper uses no retain set (`alpha = 0`, as open-unlearning);
    `alpha > 0` adds the usual retain term (the paper's unified view: cross-entropy on what to keep, CE-U on what to
    forget). The tokens are averaged per answer, then over answers (open-unlearning: over all tokens of the batch; equal
    when the answers have the same length; the per-answer mean makes gradient accumulation equal the large batch).
    """

    alpha: float = field(default=0.0, metadata={"help": "Weight of the retain term (paper: 0, no retain set)."})
    ignore_first_n_answer_tokens: int = field(
        default=1,
        metadata={"help": "Answer tokens at the start of each row left out of the loss (paper, open-unlearning: 1)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.ignore_first_n_answer_tokens < 0:
            raise ValueError(f"ignore_first_n_answer_tokens={self.ignore_first_n_answer_tokens} is negative: use 0 or "
                             "more (default 1, the paper's; 0 keeps every answer token).")


class CEUTrainer(UnlearningTrainer):
    """Cross Entropy Unlearning (Yang 2025, arXiv 2503.01224), no reference model."""

    config_class = CEUConfig
    _name = "CE-U"
    _tag_names = UnlearningTrainer._tag_names + ["ce_u"]
    _paper = {"title": "CE-U: Cross Entropy Unlearning", "id": "2503.01224"}

    def compute_unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        logits = model(**model_inputs(forget)).logits
        loss = ce_u_loss(logits, forget["labels"], self.args.ignore_first_n_answer_tokens)
        return self.add_retain_term(model, inputs, {"forget": self.args.gamma * loss.mean()})


register_method("ce_u", CEUConfig, CEUTrainer)
