"""SIU: Single Image Unlearning for multimodal LLMs (Li, Wei, Zhang, Qi, Du, Chen, Bi, Liu; NeurIPS 2024, arXiv
2405.12523), and the single-image baselines of its paper (PO, GA, GA+KL), for LLaVA-family models.

    L = alpha · CE(multifaceted answers) + beta · L_DMK,        paper alpha = 0.9, beta = 0.75
    L_DMK = (1/Z) Σ_t (1 − m_t) Σ_v k_v · p_0(v|·) · [log p_0(v|·) − log p_θ(v|·)]

The multifaceted set comes from one image (`hf_unlearn.multimodal.build_siu_dataset`). m_t is 1 on each row's
excluded span's answer tokens, on label positions after the processor expanded `<image>` (the released code's mask is
computed before the expansion and misses the answer on image rows); k_v is 0 on the concept name's token ids; p_0 is
the frozen original (with LoRA, the default: the adapter-disabled base, no second copy).

`variant` picks a baseline on the same single image instead (forget rows: `concept_recognition_rows`, retain rows:
the text facts): `po` fine-tunes the forget answers to `refusal` ("I don't know") plus `alpha`·retain NLL; `ga` is
gradient ascent, `−gamma`·NLL; `ga_kl` adds `alpha`·KL(p_0 ‖ p_θ) on the retain rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import UnlearningConfig
from ..data import check_row_containers
from ..losses import dual_masked_kl, kl_divergence, mean_nll, sequence_logps
from ..multimodal.alignment import MultimodalCollator, concept_token_ids, encode_row
from ..registry import register_method
from ..sources import check_model_source
from ..trainer import UnlearningTrainer, is_peft_model, model_inputs

VARIANTS = ("siu", "po", "ga", "ga_kl")
LANGUAGE_ATTENTION = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


@dataclass
class SIUConfig(UnlearningConfig):
    """Config of SIU and its single-image baselines. Defaults are the paper's: LoRA r 128 on the language model's
    attention, learning rate 3e-4, batch 4, 6 steps, alpha 0.9 (CE) and beta 0.75 (DMK)."""

    variant: str = field(
        default="siu",
        metadata={"help": "'siu' (CE + Dual Masked KL on the multifaceted set), or a baseline on the same image: "
                          "'po' (answer `refusal`), 'ga' (gradient ascent), 'ga_kl' (GA + KL on retain rows).",
                  "choices": list(VARIANTS)},  # fmt: skip
    )
    alpha: float = field(
        default=0.9, metadata={"help": "siu: weight of the CE term (paper 0.9); po/ga_kl: weight of the retain term."}
    )
    beta: float = field(default=0.75, metadata={"help": "siu: weight of the Dual Masked KL term (paper 0.75)."})
    refusal: str = field(default="I don't know.", metadata={"help": "po: the answer the forget rows are trained to."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Initial learning rate (paper: 3e-4 with LoRA)."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Batch size per device (paper: 4)."})
    max_steps: int = field(default=6, metadata={"help": "Optimizer steps (paper: about 6); -1 uses num_train_epochs."})
    use_lora: bool = field(
        default=True, metadata={"help": "Wrap the model in LoRA (paper); False fine-tunes every weight."}
    )
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (paper: 128)."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA scaling alpha (LLaVA's LoRA recipe: 2 × r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (LLaVA's LoRA recipe: 0.05)."})
    lora_target_modules: str = field(
        default=LANGUAGE_ATTENTION,
        metadata={"help": "Regex of the modules LoRA adapts (default: the language model's attention projections)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r} is unknown: use one of {list(VARIANTS)}.")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} is negative: the DMK weight must be >= 0 (paper 0.75).")
        if self.lora_r < 1:
            raise ValueError(f"lora_r={self.lora_r}: the LoRA rank must be >= 1 (paper 128).")

    @property
    def uses_gamma(self) -> bool:
        """The `po` variant's forget term is the NLL of the refusal answers, with no `gamma`."""
        return self.variant != "po"

    @property
    def uses_retain(self) -> bool:
        """Only PO and GA+KL have a retain set; SIU's own keep-terms are rows of its multifaceted set."""
        return self.variant in ("po", "ga_kl") and self.alpha > 0


class SIUTrainer(UnlearningTrainer):
    """Single Image Unlearning (Li et al. 2024, arXiv 2405.12523) for `LlavaForConditionalGeneration` + its processor.

    Args (besides `UnlearningTrainer`'s):
        processing_class: the model's processor (`LlavaProcessor`); image rows go through it, so images of any size
            and mode work.
        concept_name: the concept to unlearn as the model names it; its token ids form the DMK vocabulary mask.
            Held in memory only: it is never written to the card or manifest.

    Rows: `{"question", "answer", "image" (None for text rows), "excluded_span" ([start, end) of `answer`, or None)}`
    as `build_siu_dataset` / `concept_recognition_rows` make them.
    """

    config_class = SIUConfig
    _name = "SIU"
    _tag_names = UnlearningTrainer._tag_names + ["siu", "multimodal"]
    zero3_problem = ("LLaVA runs its vision tower only for rows with an image, so the processes run different modules "
                     "in a step, and ZeRO-3 gathers each module's parameters in the same order on every process.")
    _paper = {"title": "Single Image Unlearning: Efficient Machine Unlearning in Multimodal Large Language Models",
              "id": "2405.12523"}  # fmt: skip

    def __init__(self, model=None, args=None, forget_dataset=None, retain_dataset=None, processing_class=None,
                 peft_config=None, concept_name: str | None = None, **kwargs):  # fmt: skip
        args = self._as_config(args, model)
        check_row_containers(forget_dataset=forget_dataset, retain_dataset=retain_dataset)
        if isinstance(model, str):
            check_model_source(model)
            from transformers import AutoProcessor, LlavaForConditionalGeneration

            processing_class = processing_class or AutoProcessor.from_pretrained(model)
            model = LlavaForConditionalGeneration.from_pretrained(model)
        if processing_class is None:
            raise ValueError("SIUTrainer needs the model's processor: pass processing_class=LlavaProcessor(...) "
                             "(AutoProcessor.from_pretrained(<model>)); images go through its image processor.")
        if args.variant == "siu" and not concept_name:
            raise ValueError("SIU's vocabulary mask needs the concept's name: pass concept_name='...' (kept in memory, "
                             "never written to the card).")  # fmt: skip
        self._processor = processing_class
        self._refusal = args.refusal if args.variant == "po" else None  # prepare_rows runs before Trainer.__init__
        self._concept_name = concept_name
        if args.use_lora and peft_config is None and model is not None and not is_peft_model(model):
            from peft import LoraConfig

            peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                     target_modules=args.lora_target_modules, bias="none")  # fmt: skip
        super().__init__(model=model, args=args, forget_dataset=forget_dataset, retain_dataset=retain_dataset,
                         processing_class=processing_class, peft_config=peft_config, **kwargs)  # fmt: skip
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        vocab = self.accelerator.unwrap_model(self.model).get_output_embeddings().out_features
        self.vocab_keep = torch.ones(vocab)
        self.vocab_keep[concept_token_ids(tokenizer, concept_name or "")] = 0.0

    def prepare_rows(self, dataset, name, tokenizer, prompt_template, max_length):
        if dataset is None:
            return None
        refusal = self._refusal if name == "forget_dataset" else None
        rows = []
        for index in range(len(dataset)):
            row = dict(dataset[index])
            missing = {"question", "answer"} - set(row)
            if missing:
                raise ValueError(f"{name} row {index} has no {sorted(missing)} column(s): SIU rows are question/answer "
                                 "(+ image) rows, as build_siu_dataset makes them.")  # fmt: skip
            if refusal is not None:
                row.update(answer=refusal, excluded_span=None)
            rows.append(encode_row(row, self._processor, prompt_template, max_length, f"{name} row {index}"))
        return rows

    def make_collator(self, pad_token_id: int):
        return MultimodalCollator(pad_token_id)

    @property
    def needs_reference_model(self) -> bool:
        return self.args.variant == "siu" or (self.args.variant == "ga_kl" and self.args.uses_retain)

    def compute_unlearning_loss(self, model, inputs):
        args = self.args
        forget = {k: v for k, v in inputs["forget"].items() if k != "excluded"}
        logits = model(**model_inputs(forget)).logits
        nll = mean_nll(*sequence_logps(logits, forget["labels"])).mean()
        if args.variant == "siu":
            reference = self.reference_forward(model, forget).logits
            excluded = inputs["forget"]["excluded"]
            dmk = dual_masked_kl(reference, logits, forget["labels"], excluded, self.vocab_keep)
            return {"ce": args.alpha * nll, "dmk": args.beta * dmk}
        terms = {"forget": nll if args.variant == "po" else -args.gamma * nll}
        if args.uses_retain:
            retain = {k: v for k, v in inputs["retain"].items() if k != "excluded"}
            retain_logits = model(**model_inputs(retain)).logits
            if args.variant == "ga_kl":
                reference = self.reference_forward(model, retain).logits
                loss = kl_divergence(reference, retain_logits, retain["labels"]).mean()
            else:
                loss = mean_nll(*sequence_logps(retain_logits, retain["labels"])).mean()
            terms["retain"] = args.alpha * loss
        return terms


register_method("siu", SIUConfig, SIUTrainer)
