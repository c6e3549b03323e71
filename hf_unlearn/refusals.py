"""Alternate answers to the forget questions, shared by the preference-style methods (`idk_nll`, `idk_dpo`, `altpo`).

Each forget row gets one or more alternate answers (a refusal such as "I don't know.", or a made-up but plausible
answer), tokenised exactly as the forget row is (`data.tokenize_qa_row`: the same prompt template and `max_length`).
They travel beside the forget rows, not inside them: `AlternatePairing` adds a row's alternates to each item,
`AlternateCollator` pads them as one batch (`inputs["alternate"]`, with `inputs["alternate_owner"]` giving the forget
row of each and `inputs["alternate_index"]` its place among all alternates), so `trainer.forget_dataset` stays plain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import (
    ForgetRetainDataset,
    UnlearningCollator,
    check_forget_retain,
    check_row_containers,
    check_rows_fit_model,
    check_vocabulary,
    row_format,
    tokenize_qa_row,
)
from .losses import dpo_loss, sequence_logps
from .trainer import model_inputs

# Written for this package in the style of TOFU's refusal answers (Maini et al. 2024, arXiv 2401.06121): short, varied,
# and giving no fact away.
REFUSALS: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure.",
    "I have no idea.",
    "I can't answer that.",
    "I don't have that information.",
    "That is something I don't know.",
    "I'm afraid I can't help with that one.",
    "I honestly couldn't say.",
    "I don't have an answer to that.",
    "Sorry, I don't know the answer.",
    "I'm not able to answer that question.",
    "I have no information about that.",
    "That's beyond what I know.",
    "I can't say for certain.",
    "I don't have any details on that.",
    "I'm unsure about that.",
    "I couldn't tell you.",
    "That isn't something I know about.",
    "I lack the knowledge to answer that.",
    "I'm not familiar with that.",
    "I don't recall anything about that.",
    "I have nothing reliable to say about that.",
    "No idea, I'm afraid.",
    "I can't provide an answer to that.",
    "I'm drawing a blank on that one.",
    "I don't know enough to answer.",
    "That's not something I can answer.",
    "I'm not aware of the answer.",
    "I'd only be guessing, so I won't say.",
    "I really don't know.",
    "Unfortunately, I don't know.",
    "I have no knowledge of that.",
    "I'm not in a position to answer that.",
    "I can't recall that information.",
    "That question is outside what I know.",
    "I don't have the facts to answer that.",
    "I can't give you an answer on that.",
    "I'm not the right source for that.",
    "Nothing comes to mind, sorry.",
    "I'm unable to say.",
)


def load_refusals(path: str | Path) -> tuple[str, ...]:
    """Refusal answers from a file: one a line, as plain text or as JSON (a string, or an object with a `text` or
    `answer` field, one per line as in JSON Lines). Blank lines are skipped; an empty result is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refusals_file={str(path)!r} is {'a folder' if path.is_dir() else 'missing'}: pass a "
                                "file with one refusal answer a line.")  # fmt: skip
    answers = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = line
        if isinstance(value, dict):
            value = value.get("text", value.get("answer"))
        answers.append(value if isinstance(value, str) else line)
    return check_answers(answers, f"refusals_file={str(path)!r}")


def check_answers(answers, where: str) -> tuple[str, ...]:
    """A non-empty sequence of non-empty strings, as a tuple; a clear error naming `where` otherwise."""
    if isinstance(answers, str) or not hasattr(answers, "__len__"):
        raise TypeError(f"{where} is a {type(answers).__name__}: give a list of answer strings.")
    if len(answers) == 0:
        raise ValueError(f"{where} is empty: give at least one answer.")
    for index, answer in enumerate(answers):
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"{where} entry {index} is {answer!r}: every answer must be a non-empty string.")
    return tuple(answers)


def pick(index: int, seed: int, count: int, salt: str = "refusal") -> int:
    """A choice among `count` for forget row `index` that depends on (salt, seed, index) only: the same row gets the
    same answer in every run with that seed, on every process, whatever the order rows are read in."""
    digest = hashlib.sha256(f"hf-unlearn-{salt}:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % count


@dataclass
class RefusalConfigMixin:
    """The refusal answers of `idk_nll` and `idk_dpo`, put before an `UnlearningConfig` subclass: the package's own
    list (`REFUSALS`) by default, or `refusals` (a list), or `refusals_file` (one a line). Each forget row gets one,
    picked by its index and `seed` (`pick`)."""

    refusals: list[str] | None = field(
        default=None,
        metadata={"help": "Refusal answers to train the forget questions toward (default: the package's 40 "
                          "refusals, hf_unlearn.refusals.REFUSALS, written in the style of TOFU's)."},
    )  # fmt: skip
    refusals_file: str | None = field(
        default=None,
        metadata={"help": "A file of refusal answers, one a line (plain text, or JSON strings / objects with 'text' "
                          "or 'answer'), instead of `refusals`."},
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        if self.refusals is not None and self.refusals_file is not None:
            raise ValueError("refusals and refusals_file are both set: give the refusal answers one way (default: "
                             "neither, the package's list).")  # fmt: skip
        if self.refusals is not None:
            self.refusals = list(check_answers(self.refusals, "refusals"))
        if self.refusals_file is not None:
            load_refusals(self.refusals_file)  # a missing or empty file is reported now, not at the first step

    def refusal_list(self) -> tuple[str, ...]:
        """The refusal answers this config names."""
        if self.refusals_file is not None:
            return load_refusals(self.refusals_file)
        return tuple(self.refusals) if self.refusals is not None else REFUSALS


def refusal_answers(num_rows: int, refusals, seed: int) -> list[list[str]]:
    """One refusal per forget row, picked by `pick(row, seed)`."""
    return [[refusals[pick(index, seed, len(refusals))]] for index in range(num_rows)]


def tokenize_alternates(dataset, alternates: list[list[str]], name: str, tokenizer, prompt_template: str,
                        max_length: int) -> list[list[dict]]:  # fmt: skip
    """Each row's alternate answers tokenised as the row itself is (`tokenize_qa_row`: its question under the same
    template, the answer after one space and ending in EOS, cut at the same `max_length`)."""
    if row_format(dataset, name) != "qa":
        raise ValueError(f"{name} must hold question/answer rows: alternate answers are tokenised with each row's "
                         "question under the prompt template (give 'question' and 'answer' columns).")  # fmt: skip
    if tokenizer is None:
        raise ValueError(f"{name} holds text but no tokenizer was given: pass processing_class=tokenizer.")
    if len(alternates) != len(dataset):
        raise ValueError(f"{len(alternates)} lists of alternate answers for {len(dataset)} {name} rows: give one "
                         "list per row.")  # fmt: skip
    return [[tokenize_qa_row({"question": dataset[i]["question"], "answer": answer}, tokenizer, prompt_template,
                             max_length) for answer in answers] for i, answers in enumerate(alternates)]  # fmt: skip


class AlternatePairing(ForgetRetainDataset):
    """`ForgetRetainDataset` whose items also carry the forget row's tokenised alternates (`alternate`, a list) and
    their places among all alternates (`alternate_index`)."""

    def __init__(self, forget, retain, alternates: list[list[dict]], seed: int = 0, rank: int = 0):
        super().__init__(forget, retain, seed=seed, rank=rank)
        self.alternates = alternates
        starts = torch.tensor([0] + [len(a) for a in alternates]).cumsum(0).tolist()
        self.alternate_indices = [list(range(starts[i], starts[i + 1])) for i in range(len(alternates))]

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        item["alternate"], item["alternate_index"] = self.alternates[index], self.alternate_indices[index]
        return item


class AlternateCollator(UnlearningCollator):
    """`UnlearningCollator`, plus every alternate of the batch's forget rows padded as one batch (`alternate`), the
    position of each one's forget row in the batch (`alternate_owner`) and its place among all alternates
    (`alternate_index`)."""

    def __call__(self, features: list[dict]) -> dict:
        if "alternate" not in features[0]:
            return super().__call__(features)
        batch = super().__call__([{k: v for k, v in f.items() if not k.startswith("alternate")} for f in features])
        batch["alternate"] = self.pad([row for f in features for row in f["alternate"]])
        batch["alternate_owner"] = torch.tensor([i for i, f in enumerate(features) for _ in f["alternate"]])
        batch["alternate_index"] = torch.tensor([i for f in features for i in f["alternate_index"]])
        return batch


class AlternateAnswersMixin:
    """The trainer side of the preference-style methods, put before `UnlearningTrainer`: the forget rows' alternate
    answers (`self.alternate_answers`, text: one list per forget row, set before `super().__init__`) are tokenised like
    the forget rows, paired with them, and padded into each batch; `alternate_logps` scores them, and the reference
    log-probs can be cached once (`precompute_reference`) so no reference model is held during training."""

    alternate_answers: list[list[str]]

    def prepare_rows(self, dataset, name, tokenizer, prompt_template, max_length):
        rows = super().prepare_rows(dataset, name, tokenizer, prompt_template, max_length)
        if name == "forget_dataset":
            self.alternate_rows = tokenize_alternates(dataset, self.alternate_answers, name, tokenizer,
                                                      prompt_template, max_length)  # fmt: skip
        return rows

    def make_pairing(self, forget_rows, retain_rows, args):
        return AlternatePairing(forget_rows, retain_rows, self.alternate_rows, seed=args.seed, rank=args.process_index)

    def make_collator(self, pad_token_id: int):
        return AlternateCollator(pad_token_id)

    def check_alternates_fit(self) -> None:
        """The alternates fit the model: token ids within its vocabulary, lengths within its positions (called after
        `Trainer.__init__`, before any step)."""
        model = self.accelerator.unwrap_model(self.model)
        rows = [row for alternates in self.alternate_rows for row in alternates]
        check_vocabulary(rows, "alternate answers", getattr(self.processing_class, "tokenizer", self.processing_class),
                         model)  # fmt: skip
        check_rows_fit_model(rows, "alternate answers", model)

    @staticmethod
    def alternate_batch(inputs: dict) -> dict:
        if "alternate" not in inputs:
            raise ValueError("The batch has no alternate answers: this method's data_collator must be its own "
                             "(AlternateCollator), or one that adds 'alternate' and 'alternate_owner' the same way.")
        return inputs["alternate"]

    def alternate_logps(self, model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per alternate: the sum of its answer-token log-probs under `model`, and its answer-token count."""
        batch = self.alternate_batch(inputs)
        return sequence_logps(model(**model_inputs(batch)).logits, batch["labels"])

    @staticmethod
    def mean_per_forget_row(values: torch.Tensor, owner: torch.Tensor, num_rows: int) -> torch.Tensor:
        """`[num_rows]`: the mean of the per-alternate `values` of each forget row of the batch (`owner` says whose)."""
        sums = torch.zeros(num_rows, dtype=values.dtype, device=values.device).index_add(0, owner, values)
        counts = torch.bincount(owner, minlength=num_rows).clamp(min=1).to(values.dtype)
        return sums / counts

    def alternate_dpo_loss(self, model, inputs: dict) -> torch.Tensor:
        """DPO with each alternate preferred over its forget row's answer (`losses.dpo_loss`, β = `args.beta`),
        averaged over each forget row's alternates, then over the batch's forget rows (IdkDPO, AltPO)."""
        chosen = self.alternate_logps(model, inputs)[0]
        chosen_reference = self.reference_alternate_logps(model, inputs)
        forget, owner = inputs["forget"], inputs["alternate_owner"]
        rejected = self.answer_logps(model, forget)[0]
        rejected_reference = self.reference_answer_logps(model, forget, inputs["forget_index"])
        pairs = dpo_loss(chosen, chosen_reference, rejected[owner], rejected_reference[owner], self.args.beta)
        return self.mean_per_forget_row(pairs, owner, len(rejected)).mean()

    def reference_alternate_logps(self, model, inputs: dict) -> torch.Tensor:
        """Per alternate: the sum of its answer-token log-probs under `θ_0` (from the cache when there is one)."""
        batch = self.alternate_batch(inputs)
        cache = getattr(self, "reference_alternate_cache", None)
        if cache is not None and "alternate_index" in inputs:
            return cache[inputs["alternate_index"].cpu()].to(batch["labels"].device)
        return sequence_logps(self.reference_logits(model, batch), batch["labels"])[0]

    @torch.no_grad()
    def precompute_reference_alternates(self) -> None:
        """One pass of `θ_0` (the model as it is now) over the forget rows and over their alternates, cached."""
        self.precompute_reference_logps()
        rows = [row for alternates in self.alternate_rows for row in alternates]
        model, size, chunks = self.model, self.args.per_device_eval_batch_size, []
        was_training = model.training
        model.eval()
        for start in range(0, len(rows), size):
            batch = self._prepare_inputs(self._pad(rows[start:start + size]))
            chunks.append(sequence_logps(model(**model_inputs(batch)).logits, batch["labels"])[0].float().cpu())
        model.train(was_training)
        self.reference_alternate_cache = torch.cat(chunks)


class RefusalAnswersMixin(AlternateAnswersMixin):
    """The alternate answers are refusals: one per forget row, from the config's list, chosen by the row's index and
    the run's seed (IdkNLL, IdkDPO)."""

    def __init__(self, model=None, args=None, forget_dataset=None, **kwargs):
        args = self._as_config(args, model)
        check_row_containers(forget_dataset=forget_dataset)
        check_forget_retain(forget_dataset, None)
        # prepare_rows (run inside super().__init__) tokenises these beside the forget rows
        self.alternate_answers = refusal_answers(len(forget_dataset), args.refusal_list(), args.seed)
        super().__init__(model=model, args=args, forget_dataset=forget_dataset, **kwargs)
        self.check_alternates_fit()
