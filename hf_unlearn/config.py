"""`UnlearningConfig`: the `TrainingArguments` fields every unlearning method shares."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments

RETAIN_LOSSES = ("nll", "kl")


@dataclass
class UnlearningConfig(TrainingArguments):
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
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha} is negative: the retain term's weight must be >= 0 (0 disables it).")
        if self.retain_loss not in RETAIN_LOSSES:
            raise ValueError(f"retain_loss={self.retain_loss!r} is unknown: use one of {list(RETAIN_LOSSES)}.")
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} is too small: a row needs a prompt and an answer token.")
        if "{question}" not in self.prompt_template:
            raise ValueError(f"prompt_template={self.prompt_template!r} has no '{{question}}' placeholder: add one.")
        if self.dataloader_persistent_workers:
            raise ValueError(
                "dataloader_persistent_workers=True is not supported: retain examples are re-drawn every epoch, "
                "which persistent workers would not see. Set it to False."
            )

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
