"""Alignment Calibration (AC): unlearning for contrastive encoders (Wang, Lu, Zhang, Boenisch, Dziedzic, Yu, Gao;
arXiv 2406.03603, TMLR 2025 as "MUC"; code: EhanW/Alignment-Calibration).

Three views per example: anchor a, partner b and a second view c of the anchor's own image. For a retain row b is
another augmentation of the same image; for a forget row b is an augmentation of a *different* forget image.

    L = [Σ_{i∈B_r} ℓ_i + α Σ_{i∈B_f} ℓ_i] / (|B_r| + α|B_f|)  +  β' · mean_{i∈B_f} cos(z(a_i), z(c_i))
    β' = β · |D_f| / |D|

ℓ_i is the InfoNCE of (a_i, b_i) with the batch as negatives. On retain rows it keeps the encoder; on forget rows it
pulls different forget images together (negative alignment calibration); the cosine term separates two views of the
same forget image (positive alignment calibration).

`CLIPModel` (the project's adaptation of the paper): the two "views" are an image and a caption. Retain rows keep the
symmetric image↔text InfoNCE of (image_i, caption_i); forget rows pull (image_i, caption_j≠i) together through the same
InfoNCE and push (image_i, caption_i) apart through the cosine term.

MoCo-style encoders (negatives from a memory queue of a momentum encoder) are refused: the in-batch InfoNCE here would
leave the queue holding the forget set's old keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..augmentations import IMAGE_RECIPES, image_augmentation
from ..config import UnlearningConfig
from ..data import ForgetRetainDataset, check_row_containers, column_names, pairing_seed
from ..encoders import image_embeddings, is_clip, text_embeddings
from ..losses import alignment_calibration_loss, clip_info_nce, info_nce
from ..registry import register_method
from ..sources import check_model_source
from ..trainer import UnlearningTrainer

AUDIT_PLOTS_DIR = "plots"


@dataclass
class AlignmentCalibrationConfig(UnlearningConfig):
    """Config of Alignment Calibration. Defaults follow the paper's scripts: SGD (momentum 0.9, weight decay 5e-4) at
    lr 0.006, constant schedule, 10 epochs (one epoch = one pass over the forget set, `retain_per_forget` retain rows
    with each forget row), τ 0.5 (SimCLR's; use 0.1 for an encoder pre-trained with MoCo's temperature)."""

    learning_rate: float = field(default=0.006, metadata={"help": "Initial learning rate (paper scripts: 0.006)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Passes over the forget set (paper scripts: 10)."})
    optim: str = field(default="sgd", metadata={"help": "Optimizer (paper: SGD with momentum)."})
    optim_args: str | None = field(default="momentum=0.9", metadata={"help": "Optimizer arguments (paper: 0.9)."})
    weight_decay: float = field(default=5e-4, metadata={"help": "Weight decay (paper: 5e-4)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Schedule (paper: constant by default)."})
    alpha: float = field(
        default=1.0,
        metadata={"help": "α, weight of the forget rows' InfoNCE (negative alignment calibration) against the retain "
                          "rows' in the weighted mean; paper scripts sweep 0.4-2.0. 0 drops it."},
    )  # fmt: skip
    beta: float = field(
        default=1.0,
        metadata={"help": "β of the positive-alignment-calibration term β'·mean cos(z(a), z(c)) on forget rows, where "
                          "β' = β·|D_f|/|D|."},
    )  # fmt: skip
    dataset_size: int | None = field(
        default=None,
        metadata={"help": "|D|, the size of the encoder's whole training set, for β' = β·|D_f|/|D|; default "
                          "|D_f| + |D_r| (the forget and retain sets given to the trainer)."},
    )  # fmt: skip
    temperature: float = field(default=0.5, metadata={"help": "InfoNCE temperature τ (SimCLR 0.5, MoCo 0.1)."})
    num_views: int = field(
        default=3,
        metadata={"help": "Views per example: 3 (a, b and c, the paper's) or 2 (no c: needs beta=0)."},
    )
    augmentation: str = field(
        default="simclr",
        metadata={"help": "Image view recipe: " + "; ".join(f"'{k}': {v}" for k, v in IMAGE_RECIPES.items()) +
                  ". A callable can be passed to the trainer as `augmentation=`.", "choices": list(IMAGE_RECIPES)},
    )  # fmt: skip
    retain_per_forget: int = field(
        default=1, metadata={"help": "Retain rows drawn with each forget row (the batch's retain share grows with it)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} is negative: the calibration term's weight must be >= 0.")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (SimCLR 0.5, MoCo 0.1).")
        if self.num_views not in (2, 3):
            raise ValueError(f"num_views={self.num_views}: use 3 (anchor, partner, second view; the paper's) or 2.")
        if self.num_views == 2 and self.beta > 0:
            raise ValueError(f"num_views=2 has no second view c of the anchor, so the calibration term "
                             f"(beta={self.beta}) cannot be computed: set beta=0 or num_views=3.")  # fmt: skip
        if self.augmentation not in IMAGE_RECIPES:
            raise ValueError(f"augmentation={self.augmentation!r} is unknown: use one of {sorted(IMAGE_RECIPES)}, "
                             "or pass a callable to the trainer as augmentation=.")  # fmt: skip
        if self.retain_per_forget < 1:
            raise ValueError(f"retain_per_forget={self.retain_per_forget}: draw at least 1 retain row per forget row.")
        if self.dataset_size is not None and self.dataset_size < 1:
            raise ValueError(f"dataset_size={self.dataset_size}: |D| must be a positive count of training examples.")
        if self.gamma != 1.0:
            raise ValueError(f"gamma={self.gamma}: Alignment Calibration has no gamma; the forget rows' weight is "
                             "alpha and the calibration term's is beta.")  # fmt: skip

    @property
    def uses_retain(self) -> bool:
        return True  # the retain rows' InfoNCE keeps the encoder, whatever alpha is


def row_kind(dataset, name: str) -> str:
    """'image' for encoder rows (`pixel_values`, optional `labels`), 'image_text' for CLIP rows (`pixel_values`,
    `input_ids`, optional `attention_mask`); a clear error otherwise."""
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"{name} is empty: Alignment Calibration needs forget and retain images.")
    columns = set(column_names(dataset))
    if "pixel_values" not in columns:
        raise ValueError(f"{name} has columns {sorted(columns)}: Alignment Calibration takes image rows "
                         "('pixel_values' [C, H, W] in [0, 1], optional 'labels') or image–caption rows for CLIP "
                         "('pixel_values', 'input_ids', 'attention_mask'). Process the images first.")  # fmt: skip
    return "image_text" if "input_ids" in columns else "image"


def refuse_memory_queue(model) -> None:
    """Refuse MoCo-style encoders: a buffer or attribute holding a queue / memory bank of negatives."""
    names = [name for name, _ in model.named_buffers() if "queue" in name.lower() or "memory_bank" in name.lower()]
    names += [name for name in ("queue", "memory_bank") if isinstance(getattr(model, name, None), torch.Tensor)]
    if names:
        raise ValueError(
            f"The model holds a memory queue of negatives ({names[0]!r}): MoCo-style encoders are not supported, "
            "because Alignment Calibration contrasts against the batch and would leave the queue holding keys of the "
            "forget set. Unlearn the query encoder alone (ContrastiveEncoder.from_backbone(backbone), temperature=0.1) "
            "and rebuild the queue afterwards."
        )



def ac_row(row: dict, kind: str) -> dict:
    """An AC row as the collator takes it: `pixel_values` as a float tensor, and the caption ids for CLIP rows."""
    out = {"pixel_values": torch.as_tensor(row["pixel_values"], dtype=torch.float32)}
    if kind == "image_text":
        ids = list(map(int, torch.as_tensor(row["input_ids"]).tolist()))
        mask = row.get("attention_mask")
        out["input_ids"] = ids
        out["attention_mask"] = list(map(int, torch.as_tensor(mask).tolist())) if mask is not None else [1] * len(ids)
    return out


class ThreeViewPairing(ForgetRetainDataset):
    """Each forget row with a *different* forget row (its partner: never itself) and `retain_per_forget` retain rows,
    drawn by a generator seeded by (seed, epoch, rank) only, so ranks differ and a resumed run draws what the
    uninterrupted one did."""

    def __init__(self, forget, retain, retain_per_forget: int = 1, seed: int = 0, rank: int = 0):
        super().__init__(forget, retain, seed, rank)
        self.retain_per_forget = retain_per_forget
        self._draws: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(partners [n], retain [n, k])` of an epoch: partner i = (i + u) mod n with u uniform in 1..n−1."""
        if self._draws is not None and self._draws[0] == epoch:
            return self._draws[1], self._draws[2]
        generator = torch.Generator().manual_seed(pairing_seed(self.seed, epoch, self.rank))
        n, m, k = len(self.forget), len(self.retain), self.retain_per_forget
        offsets = torch.randint(1, n, (n,), generator=generator) if n > 1 else torch.zeros(n, dtype=torch.long)
        partners = (torch.arange(n) + offsets) % n
        retain = torch.cat([torch.randperm(m, generator=generator) for _ in range(math.ceil(n * k / m))])[: n * k]
        self._draws = (epoch, partners, retain.view(n, k))
        return partners, self._draws[2]

    def __getitem__(self, index: int) -> dict:
        partners, retain = self.draws(self.epoch)
        partner = int(partners[index])
        retain_indices = retain[index].tolist()
        return {"forget": self.forget[index], "forget_index": index, "forget_partner": self.forget[partner],
                "forget_partner_index": partner, "retain": [self.retain[i] for i in retain_indices],
                "retain_index": retain_indices}  # fmt: skip


class ThreeViewCollator:
    """Augments each batch into views. Image rows: forget `anchor` a = t(x_i), `partner` b = t(x_partner),
    `view` c = t'(x_i); retain `anchor` a = t(x), `partner` b = t'(x). Image–caption rows (CLIP): augmented images,
    and captions padded to one length: forget rows carry their own caption (`input_ids`) and their partner's
    (`partner_input_ids`)."""

    def __init__(self, augment, kind: str, pad_token_id: int = 0):
        self.augment, self.kind, self.pad_token_id = augment, kind, pad_token_id

    def _pad(self, captions: list[list[int]], masks: list[list[int]], length: int) -> tuple[torch.Tensor, ...]:
        ids = torch.full((len(captions), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(captions), length), dtype=torch.long)
        for row, (caption, caption_mask) in enumerate(zip(captions, masks, strict=True)):
            ids[row, : len(caption)] = torch.tensor(caption)
            mask[row, : len(caption)] = torch.tensor(caption_mask)
        return ids, mask

    def __call__(self, features: list[dict]) -> dict:
        if "forget" not in features[0]:  # plain rows: one un-augmented batch
            return {"pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])}
        forget = torch.stack([f["forget"]["pixel_values"] for f in features])
        partner = torch.stack([f["forget_partner"]["pixel_values"] for f in features])
        retain_rows = [row for f in features for row in f["retain"]]
        retain = torch.stack([row["pixel_values"] for row in retain_rows])
        batch = {"forget_index": torch.tensor([f["forget_index"] for f in features]),
                 "forget_partner_index": torch.tensor([f["forget_partner_index"] for f in features]),
                 "retain_index": torch.tensor([i for f in features for i in f["retain_index"]])}  # fmt: skip
        if self.kind == "image":
            batch["forget"] = {"anchor": self.augment(forget), "partner": self.augment(partner),
                               "view": self.augment(forget)}  # fmt: skip
            batch["retain"] = {"anchor": self.augment(retain), "partner": self.augment(retain)}
            return batch
        groups = [[f["forget"] for f in features], [f["forget_partner"] for f in features], retain_rows]
        length = max(len(row["input_ids"]) for group in groups for row in group)
        own, partner_text, retain_text = (
            self._pad([r["input_ids"] for r in g], [r["attention_mask"] for r in g], length) for g in groups
        )
        batch["forget"] = {"pixel_values": self.augment(forget), "input_ids": own[0], "attention_mask": own[1],
                           "partner_input_ids": partner_text[0], "partner_attention_mask": partner_text[1]}  # fmt: skip
        batch["retain"] = {"pixel_values": self.augment(retain), "input_ids": retain_text[0],
                           "attention_mask": retain_text[1]}  # fmt: skip
        return batch


class AlignmentCalibrationTrainer(UnlearningTrainer):
    """Alignment Calibration (Wang et al., arXiv 2406.03603) for SimCLR-style image encoders (`ContrastiveEncoder`, or
    any model whose output has `embeddings`) and `CLIPModel`.

    Rows: `pixel_values` images in [0, 1] (optional `labels`, unused) for an image encoder; `pixel_values`, `input_ids`
    and `attention_mask` for CLIP. `augmentation` overrides the config's recipe with a callable on `[B, C, H, W]`
    batches. The forget set needs at least 2 images (each forget anchor's partner is a different forget image) unless
    `alpha=0`. Record an `audit_encoder` result with `record_audit` to put the Forgetting Score, EMIA and the alignment
    heatmaps in the card.
    """

    config_class = AlignmentCalibrationConfig
    _name = "AlignmentCalibration"
    _tag_names = UnlearningTrainer._tag_names + ["ac", "contrastive-learning"]
    _paper = {"title": "Alignment Calibration: Machine Unlearning for Contrastive Learning under Auditing",
              "id": "2406.03603"}  # fmt: skip

    def __init__(self, model=None, args=None, forget_dataset=None, retain_dataset=None, augmentation=None, **kwargs):
        args = self._as_config(args, model)
        check_row_containers(forget_dataset=forget_dataset, retain_dataset=retain_dataset)
        if isinstance(model, str):
            check_model_source(model)
            from transformers import AutoModel

            model = AutoModel.from_pretrained(model)
        if model is not None:
            refuse_memory_queue(model)
        self._kind = row_kind(forget_dataset, "forget_dataset")
        if row_kind(retain_dataset, "retain_dataset") != self._kind:
            raise ValueError("forget_dataset and retain_dataset hold different rows (one has captions, the other "
                             "not): give both as images or both as image–caption pairs.")  # fmt: skip
        if self._kind == "image_text" and model is not None and not is_clip(model):
            raise ValueError(f"The rows carry captions (input_ids) but {type(model).__name__} has no text tower: pass "
                             "a CLIPModel, or drop the captions for an image encoder.")  # fmt: skip
        if self._kind == "image_text" and model is not None:
            vocabulary = model.config.text_config.vocab_size
            for name, rows in (("forget_dataset", forget_dataset), ("retain_dataset", retain_dataset)):
                largest = max(max(map(int, torch.as_tensor(row["input_ids"]).tolist())) for row in rows)
                if largest >= vocabulary:
                    raise ValueError(f"{name} holds caption token id {largest} but the text tower has {vocabulary} "
                                     "tokens: tokenise the captions with the model's own tokenizer.")  # fmt: skip
        if len(forget_dataset) < 2 and args.alpha > 0:
            raise ValueError(
                "forget_dataset has 1 image, but each forget anchor's partner must be a different forget image "
                "(negative alignment calibration): pass at least 2 forget images, or set alpha=0 to keep only the "
                "positive-alignment term."
            )
        shape = torch.as_tensor(forget_dataset[0]["pixel_values"]).shape
        self.augment = image_augmentation(augmentation or args.augmentation, tuple(shape[-2:]))
        # for the card: a callable's repr (a kornia AugmentationSequential lists its ops and parameters)
        self._custom_augmentation = " ".join(repr(augmentation).split()) if augmentation is not None else None
        size = args.dataset_size or len(forget_dataset) + len(retain_dataset)
        self.beta_prime = args.beta * len(forget_dataset) / size
        super().__init__(model=model, args=args, forget_dataset=forget_dataset, retain_dataset=retain_dataset,
                         **kwargs)  # fmt: skip
        self._audit: dict | None = None

    def prepare_rows(self, dataset, name, tokenizer, prompt_template, max_length):
        if dataset is None:
            return None
        return [ac_row(dataset[i], self._kind) for i in range(len(dataset))]

    def make_pairing(self, forget_rows, retain_rows, args):
        return ThreeViewPairing(forget_rows, retain_rows, args.retain_per_forget, seed=args.seed,
                                rank=args.process_index)  # fmt: skip

    def make_collator(self, pad_token_id: int):
        return ThreeViewCollator(self.augment, self._kind, pad_token_id)

    @property
    def needs_reference_model(self) -> bool:
        return False

    def compute_unlearning_loss(self, model, inputs):
        args = self.args
        forget, retain = inputs["forget"], inputs["retain"]
        if self._kind == "image":
            n_r, n_f = retain["anchor"].size(0), forget["anchor"].size(0)
            views = [retain["anchor"], forget["anchor"], retain["partner"], forget["partner"]]
            if args.num_views == 3:
                views.append(forget["view"])
            z = image_embeddings(model, torch.cat(views), normalize=False)  # one pass over every view
            anchors, partners = z[: n_r + n_f], z[n_r + n_f : 2 * (n_r + n_f)]
            losses = info_nce(anchors, partners, args.temperature)
            own_view = z[2 * (n_r + n_f) :] if args.num_views == 3 else None
        else:
            n_r, n_f = retain["pixel_values"].size(0), forget["pixel_values"].size(0)
            images = image_embeddings(model, torch.cat([retain["pixel_values"], forget["pixel_values"]]))
            texts = text_embeddings(
                model, torch.cat([retain["input_ids"], forget["partner_input_ids"], forget["input_ids"]]),
                torch.cat([retain["attention_mask"], forget["partner_attention_mask"], forget["attention_mask"]]),
            )  # fmt: skip
            losses = clip_info_nce(images, texts[: n_r + n_f], args.temperature)
            anchors, own_view = images, texts[n_r + n_f :]
        if own_view is None:  # num_views=2: no second view of the anchor, no calibration term
            terms = alignment_calibration_loss(losses[:n_r], losses[n_r:], anchors.new_zeros(1), args.alpha, 0.0)
            del terms["calibration"]
            return terms
        cosine = F.cosine_similarity(anchors[n_r:].float(), own_view.float(), dim=-1)
        return alignment_calibration_loss(losses[:n_r], losses[n_r:], cosine, args.alpha, self.beta_prime)

    # ---- the audit in the card ----

    def record_audit(self, audit: dict) -> None:
        """Put an `audit_encoder` result in the card: its numbers (Forgetting Score with its 95%
        interval, EMIA, linear-probe accuracies, CMIA) as the unlearned model's metrics, and its heatmaps as plots."""
        from ..evaluation.audit import audit_numbers

        self._audit = audit
        unlearned = {**self._evaluation.get("unlearned", {}), **audit_numbers(audit)}
        if audit.get("missing"):  # said in the card, not left out silently
            unlearned["missing"] = {**unlearned.get("missing", {}), **audit["missing"]}
        self.record_evaluation(unlearned=unlearned)

    def unlearning_manifest(self):
        manifest = super().unlearning_manifest()
        if self._custom_augmentation is not None:  # the config names a recipe, but this callable made the views
            manifest["requests"][0]["settings"]["augmentation"] = self._custom_augmentation
        if self._audit is not None:
            from ..plots import HEATMAPS

            manifest["requests"][0]["audit_plots"] = {
                name: f"{AUDIT_PLOTS_DIR}/{name}.png" for name in HEATMAPS if self._audit.get(name) is not None
            }
        return manifest

    def _write_card_files(self, folder: str) -> None:
        if self._audit is not None and self.is_world_process_zero():
            from ..plots import save_heatmaps

            save_heatmaps(self._audit, f"{folder}/{AUDIT_PLOTS_DIR}")
        super()._write_card_files(folder)


register_method("ac", AlignmentCalibrationConfig, AlignmentCalibrationTrainer)
