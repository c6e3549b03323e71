"""`UnlearningConfig`: the `TrainingArguments` fields every unlearning method shares."""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments

RETAIN_LOSSES = ("nll", "kl")
NLL_REDUCTIONS = ("example", "token")
RETAIN_SAMPLINGS = ("permutation", "replacement")
# Float fields where +inf has a meaning (no clipping, no cap); NaN is refused everywhere.
# NPO-style β above this saturates the forget term after the first step: σ(β·Δ) underflows once the log-ratio Δ has
# dropped by a few hundredths, so the run stops moving the model while its card would call it unlearned.
MAX_BETA = 100.0
BETA_SATURATES = "a larger beta saturates the forget term after one step, so nothing more is unlearned."
INFINITY_ALLOWED = ("max_grad_norm", "revocable_loss_cap", "relearn_max_grad_norm")


def _number_kind(annotation) -> type | None:
    """`float` or `int` when a field's annotation (a type or, under `from __future__ import annotations`, its text)
    is a plain number, optionally `| None`; None for anything else (bools, strings, unions with other types)."""
    parts = {part.strip() for part in str(getattr(annotation, "__name__", annotation)).split("|")} - {"None"}
    if parts in ({"float"}, {"float", "int"}, {"int", "float"}):
        return float
    return int if parts == {"int"} else None


class SafeArgumentsMixin:
    """What every config of this package adds to `TrainingArguments`: numbers checked before anything runs (type,
    NaN/inf, the ranges where a value would crash deep in a library or silently train nothing), an `output_dir` that
    is not a file, and no token in a pickle: `training_args.bin` (output folder and every checkpoint) is the config
    pickled by `Trainer`, so `hub_token` and any other `*_token` field are left out of the pickled state."""

    def __post_init__(self):
        self._check_numbers()  # before TrainingArguments' own __post_init__, which would fail on them less clearly
        self._check_training_ranges()
        super().__post_init__()

    def _check_numbers(self) -> None:
        for item in fields(self):
            value, kind = getattr(self, item.name, None), _number_kind(item.type)
            if kind is None or value is None or isinstance(value, bool):
                continue
            if isinstance(value, str):  # YAML reads 1e-5 (no dot) as a string; HfArgumentParser would convert it
                try:
                    value = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
                except ValueError:
                    raise TypeError(f"{item.name}={value!r} is not a number: give a {kind.__name__}, e.g. "
                                    f"{item.name}={item.default!r}.") from None
                setattr(self, item.name, value)
            elif not isinstance(value, (int, float)):
                raise TypeError(f"{item.name}={value!r} is a {type(value).__name__}: give a {kind.__name__}, e.g. "
                                f"{item.name}={item.default!r}.")
            if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and
                                                                    item.name not in INFINITY_ALLOWED)):
                raise ValueError(f"{item.name}={value} is not a finite number: give a finite {kind.__name__}, e.g. "
                                 f"{item.name}={item.default!r}.")

    def _check_training_ranges(self) -> None:
        if not self.learning_rate > 0:
            why = "0 would change no weight" if self.learning_rate == 0 else "a negative one is not a step size"
            raise ValueError(f"learning_rate={self.learning_rate}: use a positive step size (allowed: > 0); {why}.")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: use 1 or more (allowed: integers >= 1).")
        if self.max_steps == 0 or (self.max_steps < 0 and not self.num_train_epochs > 0):
            raise ValueError(f"num_train_epochs={self.num_train_epochs}, max_steps={self.max_steps}: no training step "
                             "would run, so nothing would be learned or unlearned; set num_train_epochs > 0 or "
                             "max_steps >= 1.")
        if self.output_dir is not None and Path(self.output_dir).is_file():
            raise ValueError(f"output_dir={self.output_dir!r} is a file: pass a folder path (created if missing).")

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in state:
            if name.endswith("_token"):
                state[name] = None
        return state


def check_beta(beta: float, default: str) -> None:
    """An NPO-style inverse temperature β must lie in (0, MAX_BETA]; `default` names the method's default and its
    source in the error, e.g. "the NPO paper uses 0.1"."""
    if not 0 < beta <= MAX_BETA:
        raise ValueError(f"beta={beta} is out of range: use 0 < beta <= {MAX_BETA:g} ({default}); {BETA_SATURATES}")


def check_prompt_template(template: str) -> None:
    """A prompt template must be a string with a `{question}` placeholder and no other."""
    if not isinstance(template, str):
        raise TypeError(f"prompt_template={template!r} is not a string: e.g. 'Question: {{question}}\nAnswer:'.")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f"prompt_template={template!r} is not a valid format string ({error}): write literal "
                         "braces as '{{' and '}}'.") from None
    if "question" not in names:
        raise ValueError(f"prompt_template={template!r} has no '{{question}}' placeholder: add one.")
    unknown = sorted(names - {"question"})
    if unknown:
        raise ValueError(f"prompt_template={template!r} has placeholder(s) {unknown} besides '{{question}}': only "
                         "the question is filled in; remove them, or write literal braces as '{{' and '}}'.")


@dataclass
class UnlearningConfig(SafeArgumentsMixin, TrainingArguments):
    """Training arguments for unlearning, shared by every method.

    Unlearning moves a fine-tuned model away from what it learned from the forget set, so the defaults differ from
    `TrainingArguments` where the field's practice does: a small learning rate (1e-5, as in TOFU and open-unlearning)
    and a few epochs, where one epoch is one pass over the forget set.

    The loss of every method is `gamma * forget_term + alpha * retain_term` (the methods' papers' names); each term is
    logged on its own (`loss/forget`, `loss/retain`).
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "Initial learning rate (unlearning default: 1e-5)."})
    num_train_epochs: float = field(
        default=5.0, metadata={"help": "Passes over the forget set (unlearning default: 5)."}
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: batches hold nested forget/retain parts the model's signature does not name."},
    )
    gamma: float = field(default=1.0, metadata={"help": "Weight of the forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (0 disables it)."})
    retain_loss: str = field(
        default="nll",
        metadata={
            "help": "Retain term: 'nll' (answer-token NLL on the retain set) or 'kl' (KL(p_ref || p_theta) on the "
            "retain set, against the frozen reference model).",
            "choices": list(RETAIN_LOSSES),
        },
    )
    nll_reduction: str = field(
        default="example",
        metadata={
            "help": "How an NLL term (GA's and GradDiff's forget term, the 'nll' retain term) averages a batch: "
            "'example' (each answer's mean token NLL, then the mean over answers: every answer weighs the same) or "
            "'token' (the mean over all answer tokens of the batch, as open-unlearning and TOFU's code: a long "
            "answer weighs more; under gradient accumulation each micro-batch's token mean weighs the same).",
            "choices": list(NLL_REDUCTIONS),
        },
    )
    retain_sampling: str = field(
        default="permutation",
        metadata={
            "help": "How each forget row gets its retain row: 'permutation' (a seeded permutation of the retain set "
            "per epoch: no retain row twice before all were drawn) or 'replacement' (seeded draws with replacement, "
            "as open-unlearning). Both depend on (seed, epoch, process rank) only, so a resumed run draws the same.",
            "choices": list(RETAIN_SAMPLINGS),
        },
    )
    max_length: int = field(default=512, metadata={"help": "Question+answer rows are truncated to this many tokens."})
    prompt_template: str = field(
        default="Question: {question}\nAnswer:",
        metadata={"help": "How a `question` becomes the prompt; the answer follows after one space and ends in EOS."},
    )

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Save over a model already in output_dir. Off by default: a folder that holds a saved model (its "
            "weights or an unlearning manifest) is refused before training, unless the model being unlearned was "
            "loaded from that same folder (a new request on top of its lineage)."
        },
    )
    forget_description: str | None = field(
        default=None,
        metadata={
            "help": "What was removed, in words, for the model card (e.g. 'All rows about one author, removed at the "
            "author's request'). Public: never put forget-set content here."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.gamma < 0:
            raise ValueError(f"gamma={self.gamma} is negative: the forget term's weight must be >= 0.")
        if self.gamma == 0 and self.uses_gamma:
            raise ValueError("gamma=0 weighs the forget term to nothing, so nothing would be unlearned: use a "
                             "positive weight (allowed: > 0; default 1.0).")
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha} is negative: the retain term's weight must be >= 0 (0 disables it).")
        if self.retain_loss not in RETAIN_LOSSES:
            raise ValueError(f"retain_loss={self.retain_loss!r} is unknown: use one of {list(RETAIN_LOSSES)}.")
        if self.nll_reduction not in NLL_REDUCTIONS:
            raise ValueError(f"nll_reduction={self.nll_reduction!r} is unknown: use one of {list(NLL_REDUCTIONS)}.")
        if self.retain_sampling not in RETAIN_SAMPLINGS:
            raise ValueError(f"retain_sampling={self.retain_sampling!r} is unknown: use one of "
                             f"{list(RETAIN_SAMPLINGS)}.")  # fmt: skip
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} is too small: a row needs a prompt and an answer token.")
        check_prompt_template(self.prompt_template)
        if self.dataloader_persistent_workers:
            raise ValueError(
                "dataloader_persistent_workers=True is not supported: retain examples are re-drawn every epoch, "
                "which persistent workers would not see. Set it to False."
            )

    @property
    def uses_gamma(self) -> bool:
        """Whether `gamma` weighs a forget term of this method (a method whose forget term has another weight says
        no, so `gamma=0` is refused only where it would switch unlearning off)."""
        return True

    @property
    def uses_retain(self) -> bool:
        """Whether the loss has a retain term, so a retain dataset is needed."""
        return self.alpha > 0

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Every init field as YAML (the form `hf-unlearn run` reads), tokens left out; written to `path` if given."""
        values = {k: (None if k.endswith("_token") else v) for k, v in self.to_dict().items()}
        text = yaml.safe_dump(values, sort_keys=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> UnlearningConfig:
        """Build a config from `to_yaml`'s output: a YAML file path, or the YAML text itself."""
        is_file = isinstance(source, Path) or ("\n" not in source and Path(source).is_file())
        values: dict[str, Any] = yaml.safe_load(Path(source).read_text() if is_file else source) or {}
        names = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}: check the spelling, or pick the right method.")
        return cls(**values)
