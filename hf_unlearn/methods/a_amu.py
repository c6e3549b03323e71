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
(Blend-condensed) retain set means fewer steps. Defaults: λ = 34, k = 2, Adam lr 2.4e-4, 1 epoch (the paper's).
The paper's text squares the mean CE (used here); its released code averages the squared per-example CE.

The same acceleration wraps another method: its own loss terms on the same batch (its forget term over the 4B forget
rows) plus `λ · MMD²`, logged as `mmd`. `AAMUMixin` (trainer) and `AAMUConfigMixin` (config) put A-AMU's pairing, MMD
term and fields in front of the method's classes, one pair per method, each registered by name:

    a_amu_ga        AAMUGAConfig, AAMUGATrainer               a_amu_grad_diff  AAMUGradDiffConfig, AAMUGradDiffTrainer
    a_amu_npo       AAMUNPOConfig, AAMUNPOTrainer             a_amu_simnpo     AAMUSimNPOConfig, AAMUSimNPOTrainer
    a_amu_deepcut   AAMUDeepCUTConfig, AAMUDeepCUTTrainer     (A-AMU's pairing replaces DeepCUT's contrast extras)

Your own method wraps the same way: `@dataclass class AAMUMyConfig(AAMUConfigMixin, MyConfig)` and
`class AAMUMyTrainer(AAMUMixin, MyTrainer)` with `config_class = AAMUMyConfig`.

Works on any classifier (image rows, classification text rows; ℓ is the per-example CE) and on question/answer rows
(ℓ is the mean answer-token NLL; held-out rows are then drawn without class).
"""

from __future__ import annotations

import logging
import random
from dataclasses import InitVar, dataclass, field

import torch

from ..config import UnlearningConfig
from ..data import ForgetRetainDataset, UnlearningCollator, _row_key, check_row_containers, pairing_seed, row_format
from ..losses import gaussianise, mean_nll, mmd2, sequence_logps
from ..registry import METHODS, register_method
from ..trainer import UnlearningTrainer, model_inputs
from .deepcut import DeepCUTConfig, DeepCUTTrainer
from .ga import GAConfig, GATrainer
from .grad_diff import GradDiffConfig, GradDiffTrainer
from .npo import NPOConfig, NPOTrainer
from .simnpo import SimNPOConfig, SimNPOTrainer

logger = logging.getLogger(__name__)
PAPER = {"title": "Leveraging Distribution Matching to Make Approximate Machine Unlearning Faster", "id": "2507.09786"}


@dataclass
class AAMUConfigMixin:
    """A-AMU's fields and their checks (Khan 2025, arXiv 2507.09786), put before an `UnlearningConfig` subclass:
    `@dataclass class AAMUNPOConfig(AAMUConfigMixin, NPOConfig)`. A plain dataclass, so it brings only its own fields
    (the paper's defaults) and leaves the base's (e.g. GA's `alpha=0`) as they are."""

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

    def __post_init__(self):
        super().__post_init__()
        if self.mmd_weight < 0:
            raise ValueError(f"mmd_weight={self.mmd_weight} is negative: λ must be >= 0 (paper: 34).")
        if self.sharpness <= 0 or self.kernel_sigma <= 0:
            raise ValueError(f"sharpness={self.sharpness}, kernel_sigma={self.kernel_sigma}: both must be > 0 "
                             "(paper: 2 and 1).")  # fmt: skip
        if self.forget_ratio < 1:
            raise ValueError(f"forget_ratio={self.forget_ratio}: use at least 1 forget row per retain row (paper: 4).")

    @property
    def uses_retain(self) -> bool:
        return True  # every step starts from a retain batch


@dataclass
class AAMUConfig(AAMUConfigMixin, UnlearningConfig):
    """Config of A-AMU alone: `alpha` weighs the squared retain CE, `mmd_weight` (λ) the MMD² between the Gaussianised
    forget and held-out loss distributions. `base_method`/`base_method_args` are gone: A-AMU on top of NPO is
    `AAMUNPOConfig(beta=...)` with `AAMUNPOTrainer` (method `a_amu_npo`), and so on; passing them says which."""

    base_method: InitVar[str | None] = None
    base_method_args: InitVar[dict | None] = None

    def __post_init__(self, base_method=None, base_method_args=None):
        if base_method is not None or base_method_args:
            name = f"a_amu_{base_method}"
            use = "AAMUConfigMixin and AAMUMixin composed with the method's classes"
            if name in METHODS:
                use = f"{METHODS[name][0].__name__} with {METHODS[name][1].__name__} (method {name!r})"
            wrapped = sorted(n for n in METHODS if n.startswith("a_amu_"))
            raise ValueError(f"AAMUConfig(base_method={base_method!r}) is gone: A-AMU on top of a method has its own "
                             f"classes, which take the method's fields (e.g. NPO's beta) directly: use {use}. "
                             f"Methods A-AMU wraps: {wrapped}.")  # fmt: skip
        super().__post_init__()
        if self.retain_loss != "nll":
            raise ValueError(f"retain_loss={self.retain_loss!r}: A-AMU's own retain term is the squared CE; "
                             "set retain_loss='nll', or wrap a method (e.g. AAMUGradDiffConfig).")  # fmt: skip

    @property
    def uses_gamma(self) -> bool:
        return False  # A-AMU alone has no gamma-weighted forget term


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


class AAMUMixin:
    """A-AMU's trainer side (Khan 2025, arXiv 2507.09786), put before an `UnlearningTrainer` subclass: takes
    `heldout_dataset` (required) besides the usual arguments — rows in the forget set's format, of its classes, that the
    model never trained on, disjoint from forget and retain; keep them apart from the data you evaluate on, or the
    membership attack there is judged on what the loss matched. Batches come from `AAMUPairing`; the loss is the
    base method's terms on the retain and forget rows plus `mmd`, λ·MMD² between the Gaussianised loss distributions
    of forget and held-out rows."""

    _paper = PAPER

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
        base_inputs = {key: value for key, value in inputs.items() if not key.startswith("heldout")}
        terms = dict(super().compute_unlearning_loss(model, base_inputs))
        terms["mmd"] = self.mmd_term(model, inputs)
        return terms


class AAMUTrainer(AAMUMixin, UnlearningTrainer):
    """A-AMU (Khan 2025, arXiv 2507.09786): squared retain CE plus λ·MMD² between the Gaussianised loss distributions
    of forget rows and held-out rows (logged as `retain` and `forget`). Needs `heldout_dataset` (see `AAMUMixin`)."""

    config_class = AAMUConfig
    _name = "A-AMU"
    _tag_names = UnlearningTrainer._tag_names + ["a_amu"]

    def compute_unlearning_loss(self, model, inputs):
        retain = self.example_losses(model, inputs["retain"]).mean()
        return {"forget": self.mmd_term(model, inputs), "retain": self.args.alpha * retain.pow(2)}


# A-AMU's MMD term on top of each method it wraps: the method's own fields and checks, A-AMU's fields, pairing and
# defaults (lr 2.4e-4, 1 epoch over the retain set).


@dataclass
class AAMUGAConfig(AAMUConfigMixin, GAConfig):
    """Config of A-AMU + gradient ascent: `gamma` weighs GA's forget term; λ·MMD² is added (arXiv 2507.09786)."""


class AAMUGATrainer(AAMUMixin, GATrainer):
    """A-AMU's MMD term (Khan 2025, arXiv 2507.09786) on top of gradient ascent's loss."""

    config_class = AAMUGAConfig
    _name = "A-AMU + GA"
    _tag_names = AAMUTrainer._tag_names + ["ga"]


@dataclass
class AAMUGradDiffConfig(AAMUConfigMixin, GradDiffConfig):
    """Config of A-AMU + GradDiff: GradDiff's `gamma`, `alpha`, `retain_loss`; λ·MMD² is added (arXiv 2507.09786)."""


class AAMUGradDiffTrainer(AAMUMixin, GradDiffTrainer):
    """A-AMU's MMD term (Khan 2025, arXiv 2507.09786) on top of GradDiff's loss."""

    config_class = AAMUGradDiffConfig
    _name = "A-AMU + GradDiff"
    _tag_names = AAMUTrainer._tag_names + ["grad_diff"]


@dataclass
class AAMUNPOConfig(AAMUConfigMixin, NPOConfig):
    """Config of A-AMU + NPO: NPO's `beta`, `precompute_reference`, `gamma`, `alpha`; λ·MMD² is added
    (arXiv 2507.09786)."""


class AAMUNPOTrainer(AAMUMixin, NPOTrainer):
    """A-AMU's MMD term (Khan 2025, arXiv 2507.09786) on top of NPO's loss."""

    config_class = AAMUNPOConfig
    _name = "A-AMU + NPO"
    _tag_names = AAMUTrainer._tag_names + ["npo"]


@dataclass
class AAMUSimNPOConfig(AAMUConfigMixin, SimNPOConfig):
    """Config of A-AMU + SimNPO: SimNPO's `beta`, `delta`, `gamma`, `alpha`; λ·MMD² is added (arXiv 2507.09786)."""


class AAMUSimNPOTrainer(AAMUMixin, SimNPOTrainer):
    """A-AMU's MMD term (Khan 2025, arXiv 2507.09786) on top of SimNPO's loss."""

    config_class = AAMUSimNPOConfig
    _name = "A-AMU + SimNPO"
    _tag_names = AAMUTrainer._tag_names + ["simnpo"]


@dataclass
class AAMUDeepCUTConfig(AAMUConfigMixin, DeepCUTConfig):
    """Config of A-AMU + DeepCUT: DeepCUT's fields (`contrast_extras` has no effect: the batches are A-AMU's);
    λ·MMD² is added (arXiv 2507.09786)."""


class AAMUDeepCUTTrainer(AAMUMixin, DeepCUTTrainer):
    """A-AMU's MMD term (Khan 2025, arXiv 2507.09786) on top of DeepCUT's loss, on text rows (DeepCUT's)."""

    config_class = AAMUDeepCUTConfig
    _name = "A-AMU + DeepCUT"
    _tag_names = AAMUTrainer._tag_names + ["deepcut"]


register_method("a_amu", AAMUConfig, AAMUTrainer)
register_method("a_amu_ga", AAMUGAConfig, AAMUGATrainer)
register_method("a_amu_grad_diff", AAMUGradDiffConfig, AAMUGradDiffTrainer)
register_method("a_amu_npo", AAMUNPOConfig, AAMUNPOTrainer)
register_method("a_amu_simnpo", AAMUSimNPOConfig, AAMUSimNPOTrainer)
register_method("a_amu_deepcut", AAMUDeepCUTConfig, AAMUDeepCUTTrainer)
