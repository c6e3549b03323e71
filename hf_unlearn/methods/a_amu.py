"""A-AMU: accelerated approximate machine unlearning by matching loss distributions (Khan 2025, "Leveraging
Distribution Matching to Make Approximate Machine Unlearning Faster", arXiv 2507.09786; code:
algebraicdianuj/DC_Unlearning).

    L = alpha · ( mean_i CE(x_r,i) )²  +  λ · MMD²( T(ℓ_t), T(ℓ_f) )
    T(ℓ)_i = Φ⁻¹( (1/n) Σ_j σ( k · ReLU(u_i − u_j) ) ),  u = log(1 + ℓ)          (`losses.gaussianise`)
    MMD² with a Gaussian kernel (σ = 1) on the scalar scores                    (`losses.mmd2`)

Per step: a retain batch of B rows, 4B forget rows and 4B held-out rows (`heldout_dataset`: never trained on), each
held-out row of its forget row's class; the held-out losses ℓ_t are computed without gradient. Squaring the retain CE
sharpens it near 0; the MMD term makes the forget examples' losses distributed like never-seen examples' losses —
what a loss-based membership-inference attack compares. One epoch is one pass over the retain set, so a smaller
(Blend-condensed) retain set means fewer steps. Defaults: λ = 34, k = 2, Adam lr 2.4e-4, 1 epoch (METHODS.md §2).
The paper's text squares the mean CE (used here); its released code averages the squared per-example CE.

With `base_method` (e.g. "grad_diff") the same acceleration wraps another registered method: the loss is that
method's own terms on the same batch (its forget term over the 4B forget rows) plus `λ · MMD²`, logged as `mmd`.

Works on any classifier (image rows, classification text rows; ℓ is the per-example CE) and on question/answer rows
(ℓ is the mean answer-token NLL; held-out rows are then drawn without class).
"""

from __future__ import annotations

import logging
import random
from dataclasses import MISSING, dataclass, field, fields

import torch

from ..config import UnlearningConfig
from ..data import ForgetRetainDataset, UnlearningCollator, _row_key, check_row_containers, pairing_seed, row_format
from ..losses import gaussianise, mean_nll, mmd2, sequence_logps
from ..registry import METHODS, register_method
from ..trainer import UnlearningTrainer, model_inputs

logger = logging.getLogger(__name__)


@dataclass
class AAMUConfig(UnlearningConfig):
    """Config of A-AMU: `alpha` weighs the squared retain CE, `mmd_weight` (λ) the MMD² between the Gaussianised
    forget and held-out loss distributions. `gamma` is used only by a `base_method` that has a forget term."""

    learning_rate: float = field(default=2.4e-4, metadata={"help": "Adam learning rate (paper: 2.4e-4)."})
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the retain set (A-AMU's epoch; paper: 1)."}
    )
    mmd_weight: float = field(default=34.0, metadata={"help": "λ, the weight of the MMD² term (paper: 34)."})
    sharpness: float = field(
        default=2.0, metadata={"help": "k, the slope of the smooth CDF in the Gaussianising transform (paper: 2)."}
    )
    kernel_sigma: float = field(default=1.0, metadata={"help": "σ of the MMD's Gaussian kernel (paper: 1)."})
    forget_ratio: int = field(
        default=4, metadata={"help": "Forget rows, and as many held-out rows, per retain row in a batch (paper: 4)."}
    )
    base_method: str | None = field(
        default=None,
        metadata={"help": "A registered method (e.g. 'grad_diff') whose loss A-AMU's MMD term is added to; None: "
                  "A-AMU's own squared retain CE."},  # fmt: skip
    )
    base_method_args: dict | None = field(
        default=None,
        metadata={"help": "The base method's own config fields that A-AMU's config lacks, e.g. {'beta': 0.1} for "
                  "NPO; others take the base config's defaults."},  # fmt: skip
    )

    def __post_init__(self):
        super().__post_init__()
        if self.mmd_weight < 0:
            raise ValueError(f"mmd_weight={self.mmd_weight} is negative: λ must be >= 0 (paper: 34).")
        if self.sharpness <= 0 or self.kernel_sigma <= 0:
            raise ValueError(f"sharpness={self.sharpness}, kernel_sigma={self.kernel_sigma}: both must be > 0 "
                             "(paper: 2 and 1).")  # fmt: skip
        if self.forget_ratio < 1:
            raise ValueError(f"forget_ratio={self.forget_ratio}: use at least 1 forget row per retain row (paper: 4).")
        if self.base_method is None:
            if self.base_method_args:
                raise ValueError("base_method_args is set but base_method is None: name the method they are for.")
            if self.retain_loss != "nll":
                raise ValueError(f"retain_loss={self.retain_loss!r}: A-AMU's own retain term is the squared CE; "
                                 "set retain_loss='nll', or wrap a method with base_method.")  # fmt: skip
            return
        if self.base_method == "a_amu" or self.base_method not in METHODS:
            known = sorted(set(METHODS) - {"a_amu"})
            raise ValueError(f"base_method={self.base_method!r} is not a method A-AMU can wrap: use one of {known}.")
        base_config = METHODS[self.base_method][0]
        names = {f.name for f in fields(base_config) if f.init}
        unknown = sorted(set(self.base_method_args or {}) - names)
        if unknown:
            raise ValueError(f"base_method_args {unknown} are not fields of {base_config.__name__}: check the names.")

    def __getattr__(self, name: str):
        # Only reached for a name this config lacks: a base method's own field (e.g. NPO's beta), so that method's
        # loss code reads it from `self.args` unchanged.
        values = self.__dict__
        if name.startswith("__") or values.get("base_method") not in METHODS:
            raise AttributeError(name)
        extra = values.get("base_method_args") or {}
        if name in extra:
            return extra[name]
        base_field = next((f for f in fields(METHODS[values["base_method"]][0]) if f.name == name), None)
        if base_field is not None and base_field.default is not MISSING:
            return base_field.default
        if base_field is not None and base_field.default_factory is not MISSING:
            return base_field.default_factory()
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def uses_gamma(self) -> bool:
        """`gamma` weighs only a base method's forget term."""
        return self.base_method is not None

    @property
    def uses_retain(self) -> bool:
        return True  # every step starts from a retain batch


def row_classes(rows) -> list[int] | None:
    """Each prepared row's class (its int label), or None for rows without one (question/answer rows)."""
    if len(rows) == 0 or torch.as_tensor(rows[0]["labels"]).dim() != 0:
        return None
    return [int(torch.as_tensor(rows[i]["labels"])) for i in range(len(rows))]


class AAMUPairing(ForgetRetainDataset):
    """One epoch is one pass over the retain set. Retain row `i` comes with `ratio` forget rows (the next slice of a
    per-epoch stream of forget permutations, so every forget row is seen equally often) and, for each, a held-out row
    of the same class (any held-out row where the class has none), drawn by a generator seeded by (seed, epoch, rank,
    i): ranks differ and a resumed run draws what the uninterrupted run did."""

    def __init__(self, forget, retain, heldout, ratio: int, seed: int = 0, rank: int = 0):
        super().__init__(forget, retain, seed, rank)
        self.heldout, self.ratio = heldout, ratio
        self.forget_classes = row_classes(forget)
        heldout_classes = row_classes(heldout)
        self.heldout_by_class: dict[int, list[int]] = {}
        for index, label in enumerate(heldout_classes or []):
            self.heldout_by_class.setdefault(label, []).append(index)

    def forget_indices(self, epoch: int) -> torch.Tensor:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        generator = torch.Generator().manual_seed(pairing_seed(self.seed, epoch, self.rank))
        needed = self.ratio * len(self.retain)
        draws = [torch.randperm(len(self.forget), generator=generator) for _ in range(-(-needed // len(self.forget)))]
        self._cache = (epoch, torch.cat(draws)[:needed])
        return self._cache[1]

    def __len__(self) -> int:
        return len(self.retain)

    def __getitem__(self, index: int) -> dict:
        forget = self.forget_indices(self.epoch)[index * self.ratio : (index + 1) * self.ratio].tolist()
        rng = random.Random(pairing_seed(self.seed, self.epoch, self.rank) + index)
        everyone = range(len(self.heldout))
        heldout = [
            rng.choice(self.heldout_by_class.get(self.forget_classes[f], everyone) if self.forget_classes else everyone)
            for f in forget
        ]  # fmt: skip
        return {
            "retain": self.retain[index], "retain_index": index,
            "forget": [self.forget[f] for f in forget], "forget_index": forget,
            "heldout": [self.heldout[h] for h in heldout], "heldout_index": heldout,
        }  # fmt: skip


class AAMUCollator(UnlearningCollator):
    """Pads the B retain rows, the B·ratio forget rows and the B·ratio held-out rows of a batch as three batches."""

    def __call__(self, features: list[dict]) -> dict:
        if "forget" not in features[0]:
            return self.pad([dict(f) for f in features])
        batch = {"retain": self.pad([f["retain"] for f in features]),
                 "retain_index": torch.tensor([f["retain_index"] for f in features])}  # fmt: skip
        for part in ("forget", "heldout"):
            batch[part] = self.pad([row for f in features for row in f[part]])
            batch[f"{part}_index"] = torch.tensor([i for f in features for i in f[f"{part}_index"]])
        return batch


_WRAPPED: dict[type, type] = {}


def accelerated(trainer_cls: type) -> type:
    """`trainer_cls` with A-AMU's pairing and MMD term on top of its loss: a subclass of `AAMUTrainer` and
    `trainer_cls`, made once per class. `AAMUTrainer(args=AAMUConfig(base_method=...))` builds one of these."""
    if trainer_cls not in _WRAPPED:
        name = f"AAMU{trainer_cls.__name__}"
        _WRAPPED[trainer_cls] = type(name, (AAMUTrainer, trainer_cls), {
            "__module__": __name__, "__doc__": f"A-AMU's MMD term on top of {trainer_cls.__name__}'s loss.",
            "_name": f"A-AMU + {trainer_cls._name}", "_tag_names": AAMUTrainer._tag_names + trainer_cls._tag_names[2:],
        })  # fmt: skip
    return _WRAPPED[trainer_cls]


class AAMUTrainer(UnlearningTrainer):
    """A-AMU (Khan 2025, arXiv 2507.09786): squared retain CE plus λ·MMD² between the Gaussianised loss distributions
    of forget rows and held-out rows. Takes `heldout_dataset` (required) besides the usual arguments: rows in the
    forget set's format, of its classes, that the model never trained on, disjoint from forget and retain; keep them
    apart from the data you evaluate on, or the membership attack there is judged on what the loss matched."""

    config_class = AAMUConfig
    _name = "A-AMU"
    _tag_names = UnlearningTrainer._tag_names + ["a_amu"]
    _paper = {"title": "Leveraging Distribution Matching to Make Approximate Machine Unlearning Faster",
              "id": "2507.09786"}  # fmt: skip

    def __new__(cls, *args, **kwargs):
        config = kwargs.get("args", args[1] if len(args) > 1 else None)
        base = getattr(config, "base_method", None)
        if cls is AAMUTrainer and base is not None:
            cls = accelerated(METHODS[base][1])
        return super().__new__(cls)

    def __init__(self, model=None, args=None, forget_dataset=None, retain_dataset=None, heldout_dataset=None,
                 eval_dataset=None, **kwargs):  # fmt: skip
        args = self._as_config(args, model)
        check_row_containers(forget_dataset=forget_dataset, retain_dataset=retain_dataset,
                             heldout_dataset=heldout_dataset)  # fmt: skip
        if heldout_dataset is None or len(heldout_dataset) == 0:
            raise ValueError(
                f"{type(self).__name__} needs heldout_dataset: rows like the forget set's, of its classes, that the "
                "model never trained on (e.g. a held-out split kept apart from your evaluation data). A-AMU matches "
                "the forget rows' loss distribution to theirs."
            )
        self._check_heldout(heldout_dataset, forget_dataset, retain_dataset, eval_dataset)
        processing_class = kwargs.get("processing_class")
        self._heldout_rows = self.prepare_rows(
            heldout_dataset, "heldout_dataset", tokenizer=getattr(processing_class, "tokenizer", processing_class),
            prompt_template=args.prompt_template, max_length=args.max_length,
        )  # fmt: skip
        super().__init__(model=model, args=args, forget_dataset=forget_dataset, retain_dataset=retain_dataset,
                         eval_dataset=eval_dataset, **kwargs)  # fmt: skip

    @staticmethod
    def _check_heldout(heldout, forget, retain, eval_dataset) -> None:
        fmt = row_format(heldout, "heldout_dataset")
        if forget is not None and len(forget) and row_format(forget, "forget_dataset") != fmt:
            raise ValueError(f"heldout_dataset holds {fmt} rows but forget_dataset does not: pass held-out rows in "
                             "the forget set's format.")  # fmt: skip
        keys = {_row_key(row, fmt): i for i, row in enumerate(heldout)}
        for name, rows in (("forget_dataset", forget), ("retain_dataset", retain)):
            if rows is None or len(rows) == 0 or row_format(rows, name) != fmt:
                continue
            shared = sorted(keys[k] for k in (_row_key(row, fmt) for row in rows) if k in keys)
            if shared:
                raise ValueError(
                    f"{len(shared)} heldout_dataset row(s) also appear in {name} (heldout rows {shared[:10]}"
                    f"{' ...' if len(shared) > 10 else ''}): held-out rows must be ones the model never trained "
                    "on; remove them."
                )
        for name, rows in (eval_dataset.items() if isinstance(eval_dataset, dict) else [("", eval_dataset)]):
            if rows is not None and len(rows) and row_format(rows, "eval_dataset") == fmt:
                if any(_row_key(row, fmt) in keys for row in rows):
                    logger.warning(f"eval_dataset{f'[{name!r}]' if name else ''} shares rows with heldout_dataset: "
                                   "A-AMU's loss matches the forget losses to those rows, so a membership attack "
                                   "evaluated on them flatters the model. Evaluate on other rows.")  # fmt: skip

    def make_pairing(self, forget_rows, retain_rows, args):
        pairing = AAMUPairing(forget_rows, retain_rows, self._heldout_rows, args.forget_ratio, seed=args.seed,
                              rank=args.process_index)  # fmt: skip
        if pairing.forget_classes is not None:
            missing = set(pairing.forget_classes) - set(pairing.heldout_by_class)
            if missing:
                logger.warning(f"A-AMU: {len(missing)} forget class(es) have no held-out row; their forget rows are "
                               "paired with held-out rows of other classes.")  # fmt: skip
        return pairing

    def make_collator(self, pad_token_id: int):
        return AAMUCollator(pad_token_id)

    def example_losses(self, model, batch: dict) -> torch.Tensor:
        """Per-example loss ℓ: the CE of a classifier row, the mean answer-token NLL of a question/answer row."""
        return mean_nll(*sequence_logps(model(**model_inputs(batch)).logits, batch["labels"]))

    def mmd_term(self, model, inputs: dict) -> torch.Tensor:
        """`λ · MMD²(T(ℓ_t), T(ℓ_f))` over the batch's held-out and forget rows (held-out losses without gradient)."""
        args = self.args
        with torch.no_grad():
            heldout = self.example_losses(model, inputs["heldout"])
        forget = self.example_losses(model, inputs["forget"])
        distance = mmd2(gaussianise(heldout, args.sharpness), gaussianise(forget, args.sharpness), args.kernel_sigma)
        return args.mmd_weight * distance

    def compute_unlearning_loss(self, model, inputs):
        if self.args.base_method is not None:
            base_inputs = {key: value for key, value in inputs.items() if not key.startswith("heldout")}
            terms = dict(super().compute_unlearning_loss(model, base_inputs))
            terms["mmd"] = self.mmd_term(model, inputs)
            return terms
        retain = self.example_losses(model, inputs["retain"]).mean()
        return {"forget": self.mmd_term(model, inputs), "retain": self.args.alpha * retain.pow(2)}


register_method("a_amu", AAMUConfig, AAMUTrainer)
