"""UNDIAL: unlearning by self-distillation on adjusted logits (Dong, Lin, Belkin, Huerta, Vulić; arXiv 2402.10052)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearningConfig
from ..losses import undial_loss
from ..registry import register_method
from ..trainer import UnlearningTrainer, model_inputs


@dataclass
class UNDIALConfig(UnlearningConfig):
    """Config of UNDIAL: loss `gamma·E_f mean_t CE(softmax(z_θ0 − β·onehot(y_t)), p_θ(· | y_<t, x)) + alpha·R(D_r)`.

    The frozen model's logits `z_θ0` with the answer token's logit lowered by β are the target the model is distilled
    toward, at every answer token of the forget set: the answer token loses probability to the others in proportion
    to theirs, and the loss is minimised (no ascent), so it cannot run away. The paper uses no retain set (`alpha = 0`,
    also open-unlearning's `configs/trainer/UNDIAL.yaml`); `alpha > 0` adds the usual retain term. Differences from
    open-unlearning's implementation: the loss is averaged over answer tokens only (it averages over every position of
    the batch, prompt and padding included) and per answer, then over answers (equal when all answers have the same
    length; needed for gradient accumulation to equal the large batch).
    """

    beta: float = field(
        default=10.0,
        metadata={"help": "How far the answer token's logit is lowered in the target (open-unlearning's UNDIAL.yaml: "
                          "10; its UNDIAL README: typically 3, 10 or 30)."},
    )  # fmt: skip
    alpha: float = field(default=0.0, metadata={"help": "Weight of the retain term (paper: 0, no retain set)."})
    learning_rate: float = field(
        default=1e-4,
        metadata={"help": "Initial learning rate (paper, with LoRA; open-unlearning's UNDIAL.yaml: 1e-4)."},
    )
    num_train_epochs: float = field(
        default=10.0, metadata={"help": "Passes over the forget set (open-unlearning's UNDIAL.yaml: 10)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta={self.beta} is out of range: use beta > 0 (default 10.0; the UNDIAL README "
                             "suggests 3, 10 or 30). At 0 the target is the frozen model itself: nothing is unlearned.")


class UNDIALTrainer(UnlearningTrainer):
    """UNDIAL (Dong et al., NAACL 2025, arXiv 2402.10052): the reference model `θ_0` is the frozen copy, or for a PEFT
    model the base with the adapter disabled."""

    config_class = UNDIALConfig
    _name = "UNDIAL"
    _tag_names = UnlearningTrainer._tag_names + ["undial"]
    _paper = {"title": "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
              "id": "2402.10052"}  # fmt: skip

    @property
    def needs_reference_model(self) -> bool:
        return True

    def compute_unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        logits = model(**model_inputs(forget)).logits
        reference = self.reference_logits(model, forget)
        forget_term = self.args.gamma * undial_loss(reference, logits, forget["labels"], self.args.beta).mean()
        return self.add_retain_term(model, inputs, {"forget": forget_term})


register_method("undial", UNDIALConfig, UNDIALTrainer)
