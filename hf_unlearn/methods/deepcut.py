"""DeepCUT: contrastive unlearning in the latent space (He, Sarwar, Khalil, Yi, Wang 2025; arXiv 2503.14900).

    L = alpha · L_CE(D_r) + gamma · L_f
    L_f = mean over forget anchors a of −log Σ_{p∈P(a)} exp(s(z_a, z_p)/τ) / Σ_{k∈P(a)∪N(a)} exp(s(z_a, z_k)/τ)

P(a): retain examples in the batch of another class than a (pulled toward); N(a): retain examples of a's class (pushed
away). z is the L2-normalised pooled hidden state of `layer`; s the dot product. With `num_views=2` every example runs
through the model twice with dropout on (SimCSE-style views) and each view's anchors are compared with the other
view's retain representations; the retain CE comes from the first view, so nothing runs a third time.

The class is the label for a classifier and `group_column` for a causal LM (e.g. TOFU's author). Where the anchor's
class has no retain example (always so for TOFU, whose forget authors are not in retain), or with no class at all (a
causal LM without `group_column`), every retain example is a positive and the anchor's own frozen representation
z_a(θ_0) is the negative: the project's label-free variant (the paper assumes labelled classes).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import UnlearningConfig
from ..data import _PAD_VALUES, ForgetRetainDataset, UnlearningCollator, check_row_containers, pairing_seed
from ..losses import contrastive_unlearning_loss, mean_nll, pool_hidden_states, sequence_logps
from ..registry import register_method
from ..trainer import UnlearningTrainer, model_inputs

logger = logging.getLogger(__name__)
POOLINGS = ("mean", "cls", "last")
CONTRAST_EXTRAS = ("always", "needed")


@dataclass
class DeepCUTConfig(UnlearningConfig):
    """Config of DeepCUT: `gamma` weighs the contrastive forget term L_f, `alpha` the retain cross-entropy."""

    temperature: float = field(default=0.7, metadata={"help": "Temperature τ of L_f (project default 0.7)."})
    layer: int = field(
        default=-1, metadata={"help": "Which `output_hidden_states` entry gives z (-1: the last layer)."}
    )
    pooling: str = field(
        default="mean",
        metadata={"help": "How tokens become z: 'mean' over non-padding tokens, 'cls' (first), 'last' (last real).",
                  "choices": list(POOLINGS)},  # fmt: skip
    )
    num_views: int = field(default=2, metadata={"help": "Dropout views per example (forward passes): 1 or 2."})
    group_column: str | None = field(
        default=None,
        metadata={"help": "Column of each row's class for a causal LM (e.g. 'author'); classifiers use the label."},
    )
    detach_retain: bool = field(
        default=False,
        metadata={"help": "Stop L_f's gradient at the retain representations, so that only the forget anchors move "
                  "(the paper's form, the default, also moves the retain examples toward and away from them)."},
    )

    contrast_extras: str = field(
        default="always",
        metadata={"help": "When a forget anchor brings a retain example of its class and one of another class to its "
                  "batch, besides its usual retain draw: 'always' (3 retain rows per forget row), or 'needed' (only "
                  "when the batch's usual draws lack its class or every other class: about half the rows per step "
                  "once the batch covers the classes).", "choices": list(CONTRAST_EXTRAS)},  # fmt: skip
    )

    def __post_init__(self):
        super().__post_init__()
        if self.contrast_extras not in CONTRAST_EXTRAS:
            raise ValueError(f"contrast_extras={self.contrast_extras!r} is unknown: use one of "
                             f"{list(CONTRAST_EXTRAS)}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (project default 0.7).")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is unknown: use one of {list(POOLINGS)}.")
        if self.num_views not in (1, 2):
            raise ValueError(f"num_views={self.num_views}: use 2 (two dropout views, the paper's) or 1.")
        if self.retain_loss != "nll":
            raise ValueError(f"retain_loss={self.retain_loss!r}: DeepCUT's retain term is the cross-entropy L_CE(D_r) "
                             "of the first view's logits; set retain_loss='nll'.")  # fmt: skip

    @property
    def uses_retain(self) -> bool:
        return True  # positives and negatives come from retain examples, whatever alpha is


def row_groups(dataset, column: str | None) -> list | None:
    """Each row's class: `column` when given, else a classification row's label; None for LM rows without one."""
    first = dataset[0]
    if column is not None:
        if column not in first:
            raise ValueError(f"group_column={column!r} is not a column of the data ({sorted(first)}): add it, "
                             "or leave group_column unset for the label-free variant.")  # fmt: skip
        return [dataset[i][column] for i in range(len(dataset))]
    for key in ("label", "labels"):
        if key in first and torch.as_tensor(first[key]).dim() == 0:
            return [int(torch.as_tensor(dataset[i][key])) for i in range(len(dataset))]
    return None


class ContrastivePairing(ForgetRetainDataset):
    """Pairs each forget anchor with its usual retain draw plus one retain example of its class and one of another
    class, drawn by a generator seeded by (seed, epoch, rank, index): every anchor has a positive and, when its class
    has retain examples, a negative in its batch, whatever the batch size."""

    def __init__(self, forget, retain, forget_groups, retain_groups, seed: int = 0, rank: int = 0):
        super().__init__(forget, retain, seed, rank)
        self.forget_groups, self.retain_groups = forget_groups, retain_groups
        self.by_group: dict = {}
        for index, group in enumerate(retain_groups):
            self.by_group.setdefault(group, []).append(index)

    def extra_indices(self, index: int) -> list[int]:
        rng = random.Random(pairing_seed(self.seed, self.epoch, self.rank) + index)
        group = self.forget_groups[index]
        extra = [rng.choice(self.by_group[group])] if group in self.by_group else []
        others = [g for g in self.by_group if g != group]
        if others:
            extra.append(rng.choice(self.by_group[rng.choice(others)]))
        return extra

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        extra = self.extra_indices(index)
        item["retain_extra"] = [self.retain[i] for i in extra]
        item["retain_extra_index"] = extra
        item["contrast_groups"] = (self.forget_groups[index], self.retain_groups[item["retain_index"]])
        return item


class ContrastiveCollator(UnlearningCollator):
    """Pads each anchor's retain rows (its pairing draw and the class-matched extras) into one retain batch. With
    `extras="needed"` an anchor's extras come only when the batch's usual retain draws lack its class or every other
    class, so each anchor still has a positive and (where its class has retain examples) a negative."""

    def __init__(self, pad_token_id: int = 0, extras: str = "always"):
        super().__init__(pad_token_id)
        self.extras = extras

    def needs_extras(self, features: list[dict]) -> list[bool]:
        if self.extras == "always":
            return [True] * len(features)
        drawn = {f["contrast_groups"][1] for f in features}
        return [group not in drawn or not drawn - {group} for group, _ in (f["contrast_groups"] for f in features)]

    def __call__(self, features: list[dict]) -> dict:
        batch = super().__call__([{k: v for k, v in f.items() if not k.startswith("retain_extra")} for f in features])
        if "retain_extra" in features[0]:
            kept = list(zip(features, self.needs_extras(features), strict=True))
            rows = [row for f, need in kept for row in [f["retain"], *(f["retain_extra"] if need else [])]]
            indices = [i for f, need in kept for i in [f["retain_index"], *(f["retain_extra_index"] if need else [])]]
            batch["retain"] = self.pad(rows)
            batch["retain_index"] = torch.tensor(indices)
        return batch


def concat_padded(first: dict, second: dict, pad_token_id: int) -> dict:
    """One right-padded batch of two padded batches (same keys), `first`'s rows first."""
    joined = {}
    for key, a in first.items():
        b = second[key]
        if a.dim() >= 2 and a.size(1) != b.size(1):
            length = max(a.size(1), b.size(1))
            value = _PAD_VALUES.get(key, pad_token_id)
            a, b = (F.pad(t, (0, length - t.size(1)), value=value) for t in (a, b))
        joined[key] = torch.cat([a, b])
    return joined


class DeepCUTTrainer(UnlearningTrainer):
    """DeepCUT — Deep Contrastive Unlearning for fine-Tuning (He et al. 2025, arXiv 2503.14900), for sequence
    classifiers (class = label) and causal LMs (class = `group_column`, or the label-free variant)."""

    config_class = DeepCUTConfig
    _name = "DeepCUT"
    _tag_names = UnlearningTrainer._tag_names + ["deepcut"]
    _paper = {"title": "Deep Contrastive Unlearning for Language Models", "id": "2503.14900"}

    def __init__(self, model=None, args=None, forget_dataset=None, retain_dataset=None, **kwargs):
        args = self._as_config(args, model)
        check_row_containers(forget_dataset=forget_dataset, retain_dataset=retain_dataset)
        if forget_dataset is None or len(forget_dataset) == 0 or retain_dataset is None or len(retain_dataset) == 0:
            raise ValueError("DeepCUT needs a non-empty forget_dataset and retain_dataset: its positives and "
                             "negatives are retain examples.")  # fmt: skip
        if "pixel_values" in forget_dataset[0]:
            raise ValueError("DeepCUT contrasts the hidden states of token rows (text, or input_ids), and these rows "
                             "are images (pixel_values): for an image classifier use ga, grad_diff, npo or a_amu.")
        layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if isinstance(layers, int) and not -(layers + 1) <= args.layer <= layers:
            raise ValueError(f"layer={args.layer} is out of range: the model has {layers} layers, so its hidden states "
                             f"are entries {-(layers + 1)}..{layers} (0 the embeddings, -1 the last layer, the "
                             "default).")  # fmt: skip
        forget_groups = row_groups(forget_dataset, args.group_column)
        retain_groups = row_groups(retain_dataset, args.group_column) if forget_groups is not None else None
        if forget_groups is not None and len(set(retain_groups)) < 2 and set(retain_groups) <= set(forget_groups):
            raise ValueError(
                f"Every retain example is of class {retain_groups[0]!r}: DeepCUT pulls each forget example toward "
                "retain examples of other classes, so the retain set needs at least one other class."
            )
        self._contrast_extras = args.contrast_extras
        ids = {group: i for i, group in enumerate(dict.fromkeys([*(forget_groups or []), *(retain_groups or [])]))}
        self._forget_groups = [ids[g] for g in forget_groups] if forget_groups is not None else None
        self._retain_groups = [ids[g] for g in retain_groups] if retain_groups is not None else None
        self._label_free = self._forget_groups is None or not set(self._forget_groups) <= set(self._retain_groups)
        if self._forget_groups is None:
            logger.warning("DeepCUT: no classes (a causal LM without group_column): label-free variant, every retain "
                           "example is a positive and each anchor's frozen representation z_a(θ_0) its negative.")
        elif self._label_free:
            missing = len(set(self._forget_groups) - set(self._retain_groups))
            logger.warning(f"DeepCUT: {missing} forget class(es) have no retain example, so their anchors have no "
                           "negative in any batch; they fall back to the anchor's frozen representation z_a(θ_0) "
                           "as the negative (the label-free variant).")  # fmt: skip
        super().__init__(model=model, args=args, forget_dataset=forget_dataset, retain_dataset=retain_dataset, **kwargs)

    def make_pairing(self, forget_rows, retain_rows, args):
        if self._forget_groups is None:
            return super().make_pairing(forget_rows, retain_rows, args)
        return ContrastivePairing(forget_rows, retain_rows, self._forget_groups, self._retain_groups,
                                  seed=args.seed, rank=args.process_index)  # fmt: skip

    def make_collator(self, pad_token_id: int):
        return ContrastiveCollator(pad_token_id, self._contrast_extras)

    @property
    def needs_reference_model(self) -> bool:
        return self._label_free or super().needs_reference_model

    def contrast_sets(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """`(P, N)` masks [forget rows, retain rows]: other-class retain examples, and same-class ones."""
        n, m = len(inputs["forget_index"]), len(inputs["retain_index"])
        device = inputs["forget"]["input_ids"].device
        if self._forget_groups is None:
            return torch.ones(n, m, dtype=torch.bool, device=device), torch.zeros(n, m, dtype=torch.bool, device=device)
        forget = torch.tensor(self._forget_groups, device=device)[inputs["forget_index"]]
        retain = torch.tensor(self._retain_groups, device=device)[inputs["retain_index"]]
        same = forget.unsqueeze(1) == retain.unsqueeze(0)
        return ~same, same

    def compute_unlearning_loss(self, model, inputs):
        args = self.args
        forget, retain = inputs["forget"], inputs["retain"]
        n = forget["input_ids"].size(0)
        pad_token_id = getattr(self.data_collator, "pad_token_id", 0)
        both = concat_padded(forget, retain, pad_token_id)
        mask = both["attention_mask"]
        outputs = [model(**model_inputs(both), output_hidden_states=True) for _ in range(args.num_views)]
        z = [pool_hidden_states(out.hidden_states[args.layer], mask, args.pooling) for out in outputs]

        positive, negative = self.contrast_sets(inputs)
        anchor_negatives = None
        needs_frozen = ~negative.any(-1)
        if needs_frozen.any():
            frozen = self.reference_forward(model, forget, output_hidden_states=True).hidden_states[args.layer]
            z_frozen = pool_hidden_states(frozen, forget["attention_mask"], args.pooling)
            anchor_negatives = [(view[:n] * z_frozen).sum(-1).masked_fill(~needs_frozen, float("-inf")) for view in z]
        candidates = [view[n:].detach() if args.detach_retain else view[n:] for view in z]
        forget_term = torch.stack([
            contrastive_unlearning_loss(z[v][:n], candidates[(v + 1) % len(z)], positive, negative, args.temperature,
                                        None if anchor_negatives is None else anchor_negatives[v])
            for v in range(len(z))
        ]).mean()  # fmt: skip
        terms = {"forget": args.gamma * forget_term}
        if args.alpha > 0:
            logits, labels = outputs[0].logits[n:], both["labels"][n:]  # padded to the joint length
            terms["retain"] = args.alpha * mean_nll(*sequence_logps(logits, labels)).mean()
        return terms


register_method("deepcut", DeepCUTConfig, DeepCUTTrainer)
