"""AltPO: Alternate Preference Optimization (Mekala, Dorna, Dubey, Lalwani, Koleczek, Rungta, Hasan, Lobo; COLING 2025,
arXiv 2409.13474).

    L = gamma · (−(2/β) · mean_(x,y) mean_ã log σ(β·[(log p_θ(ã|x) − log p_θ0(ã|x)) − (log p_θ(y|x) − log p_θ0(y|x))]))
        + alpha · R(D_r)

Negative feedback on each forget answer `y` combined with positive feedback on alternate answers `ã` to the same
question: plausible answers with other facts, which the model itself writes before unlearning when prompted with the
question, its answer and an instruction to change the facts (`alternate_prompt`). The mean runs over forget rows of the
mean over each row's alternates (all in the same step): the mean over all pairs when every row has as many alternates,
as the paper's code has, and each row weighs the same otherwise. `R` is the retain NLL (or KL per `retain_loss`).

The loss is the one the authors' code trains (its `subdpo` loss: DPO of an alternate over the forget answer, plus the
retain NLL at weight 1) and open-unlearning runs for AltPO (its DPO trainer on alternate answers). That code makes each
(question, alternate) pair a training row, so its epoch has `num_alternates` times as many steps as ours, where an
epoch is one pass over the forget rows: multiply `num_train_epochs` by `num_alternates` to take as many steps.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field

import torch

from ..config import UnlearningConfig, check_beta
from ..data import check_forget_retain, check_row_containers, column_names, row_format
from ..mixins import ENGINES_DOC
from ..refusals import AlternateAnswersMixin, check_answers
from ..registry import register_method
from ..trainer import UnlearningTrainer

ALTERNATE_PROMPT = (
    "Question: {question}\nAnswer: {answer}\nWrite a different answer to the question that sounds just as plausible "
    "but changes every fact the answer above gives.\nAlternate answer:"
)


def check_alternate_prompt(template) -> None:
    """An alternate prompt is a string with a `{question}` placeholder, and `{answer}` as the only other one."""
    if not isinstance(template, str):
        raise TypeError(f"alternate_prompt={template!r} is not a string: e.g. {ALTERNATE_PROMPT!r}.")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f"alternate_prompt={template!r} is not a valid format string ({error}): write literal "
                         "braces as '{{' and '}}'.") from None  # fmt: skip
    if "question" not in names or names - {"question", "answer"}:
        raise ValueError(f"alternate_prompt={template!r} has placeholders {sorted(names)}: it needs '{{question}}' "
                         "and may have '{answer}' (the forget answer), nothing else; write literal braces as '{{' "
                         "and '}}'.")  # fmt: skip


@dataclass
class AltPOConfig(UnlearningConfig):
    """Config of AltPO: loss `gamma·(−(2/β)·mean log σ(β·[(log p_θ(ã|x) − log p_θ0(ã|x)) − (log p_θ(y|x) −
    log p_θ0(y|x))])) + alpha·R(D_r)`, the mean over forget rows `(x, y)` of the mean over their alternate answers `ã`.

    The alternates come from the forget rows' `alternate_column` (a string or a list of strings per row) when it is
    there, else the model writes `num_alternates` of them per row before training (sampled, seeded by the row index
    and `seed`). Defaults: β = 0.1, γ = α = 1 and retain NLL (the paper's code and open-unlearning's DPO trainer, which
    runs AltPO), 5 sampled alternates per question at temperature 1 with at most 200 new tokens (open-unlearning's
    AltPO recipe; the paper finds several alternates better than one)."""

    beta: float = field(
        default=0.1, metadata={"help": "Inverse temperature β (the paper's code and open-unlearning: 0.1)."}
    )
    num_alternates: int = field(
        default=5, metadata={"help": "Alternate answers the model writes per forget question (open-unlearning: 5)."}
    )
    alternate_column: str = field(
        default="alternate",
        metadata={"help": "Forget-row column of precomputed alternate answers (a string or a list of strings per row; "
                          "open-unlearning's 'alternate'); when the rows have it, nothing is generated."},
    )  # fmt: skip
    alternate_prompt: str = field(
        default=ALTERNATE_PROMPT,
        metadata={"help": "What the model is given to write an alternate answer: '{question}' and optionally "
                          "'{answer}' (the forget answer) are filled in; the answer is what it writes next."},
    )  # fmt: skip
    alternate_max_tokens: int = field(
        default=200, metadata={"help": "Longest alternate answer, in new tokens (open-unlearning's AltPO: 200)."}
    )
    alternate_do_sample: bool = field(
        default=True, metadata={"help": "Sample the alternates (default, needed for several); False: greedy, one."}
    )
    alternate_temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of the alternates (open-unlearning's AltPO: 1.0)."}
    )
    alternate_stop: str = field(
        default="\n", metadata={"help": "An alternate ends before this text (default: the end of its first line)."}
    )
    precompute_reference: bool = field(
        default=False,
        metadata={"help": "Compute the reference log-probs of the forget answers and the alternates once before "
                          "training and hold no reference model during training (the retain KL term, if chosen, "
                          "still needs one)."},
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        check_beta(self.beta, "default 0.1, the AltPO paper's code")
        if self.num_alternates < 1:
            raise ValueError(f"num_alternates={self.num_alternates}: use 1 or more alternate answers per question "
                             "(allowed: integers >= 1; default 5).")  # fmt: skip
        if self.alternate_max_tokens < 1:
            raise ValueError(f"alternate_max_tokens={self.alternate_max_tokens}: an alternate needs at least "
                             "one token (allowed: integers >= 1; default 200).")  # fmt: skip
        if not self.alternate_temperature > 0:
            raise ValueError(f"alternate_temperature={self.alternate_temperature}: use a temperature > 0 (default "
                             "1.0), or alternate_do_sample=False for greedy decoding.")  # fmt: skip
        if not self.alternate_do_sample and self.num_alternates > 1:
            raise ValueError(f"num_alternates={self.num_alternates} with alternate_do_sample=False: greedy decoding "
                             "writes the same alternate every time; sample (alternate_do_sample=True, the default) or "
                             "set num_alternates=1.")  # fmt: skip
        if not self.alternate_column:
            raise ValueError("alternate_column is empty: name the forget-row column of precomputed alternates "
                             "(default 'alternate').")  # fmt: skip
        check_alternate_prompt(self.alternate_prompt)


def row_seed(seed: int, index: int) -> int:
    """The sampling seed of forget row `index`: depends on (seed, index) only."""
    digest = hashlib.sha256(f"hf-unlearn-alternate:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def generate_alternates(model, tokenizer, rows, prompt: str = ALTERNATE_PROMPT, num_alternates: int = 5,
                        max_new_tokens: int = 200, do_sample: bool = True, temperature: float = 1.0, seed: int = 0,
                        stop: str | None = "\n") -> list[list[str]]:  # fmt: skip
    """`num_alternates` answers per question/answer row, written by `model` from `prompt` (AltPO's first stage). Row `i`
    is sampled under `torch.manual_seed(row_seed(seed, i))` (the global random state is left as it was), so the same row
    gets the same alternates whatever rows come with it. Each answer is the text after the prompt up to `stop`, trimmed;
    run it where the model is (on a GPU for a large model) and pass the result as the forget rows' alternate column."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
    alternates = []
    try:
        for index, row in enumerate(rows):
            encoded = tokenizer(prompt.format(question=row["question"], answer=row["answer"]), return_tensors="pt")
            encoded = {key: value.to(device) for key, value in encoded.items()}
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(row_seed(seed, index))
                output = model.generate(**encoded, **sampling, max_new_tokens=max_new_tokens, pad_token_id=pad_token_id,
                                        num_return_sequences=num_alternates, stop_strings=[stop] if stop else None,
                                        tokenizer=tokenizer if stop else None)  # fmt: skip
            texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
            answers = [(text.lstrip().split(stop)[0] if stop else text).strip() for text in texts]
            if not all(answers):
                raise ValueError(f"The model wrote an empty alternate answer for forget row {index}: raise "
                                 "alternate_max_tokens, change alternate_prompt or alternate_stop, or pass "
                                 "precomputed alternates in the forget rows' alternate column.")  # fmt: skip
            alternates.append(answers)
    finally:
        model.train(was_training)
    return alternates


def alternates_from_column(dataset, column: str) -> list[list[str]]:
    """Each forget row's precomputed alternates (a string or a list of strings) as a list."""
    alternates = []
    for index in range(len(dataset)):
        value = dataset[index][column]
        value = [value] if isinstance(value, str) else value
        alternates.append(list(check_answers(value, f"forget_dataset row {index} column {column!r}")))
    return alternates


class AltPOTrainer(AlternateAnswersMixin, UnlearningTrainer):
    """Alternate Preference Optimization (Mekala et al., arXiv 2409.13474): DPO with the model's own alternate answers
    preferred over the forget answer. Alternates are tokenised with the forget row's prompt template and `max_length`.

    Without an alternate column in the forget rows, the model (before any PEFT wrapping: `θ_0`) writes them at
    construction, on `args.device` (see `generate_alternates` to write them once, elsewhere, and reuse them)."""

    config_class = AltPOConfig
    _name = "AltPO"
    _tag_names = UnlearningTrainer._tag_names + ["altpo"]
    _paper = {"title": "Alternate Preference Optimization for Unlearning Factual Knowledge in Large Language Models",
              "id": "2409.13474"}  # fmt: skip

    # Why it cannot write its alternates under ZeRO-3: `UnlearningTrainer.zero3_problem`, but only when the forget
    # rows have no alternates, and refused before the writing (which comes before `Trainer.__init__`).
    generate_zero3_problem = (
        "without an alternate column in the forget rows it writes the alternate answers with model.generate at "
        "construction, which needs whole parameters, and ZeRO-3 partitions them (a model loaded under its config holds "
        "empty placeholders). Write the alternates first, in one process, with "
        "hf_unlearn.methods.altpo.generate_alternates, and pass them as the forget rows' alternate column: AltPO then "
        "runs under ZeRO-3."
    )  # fmt: skip

    def __init__(self, model=None, args=None, forget_dataset=None, processing_class=None, **kwargs):
        args = self._as_config(args, model)
        check_row_containers(forget_dataset=forget_dataset)
        check_forget_retain(forget_dataset, None)
        if args.alternate_column in column_names(forget_dataset):
            self.alternate_answers = alternates_from_column(forget_dataset, args.alternate_column)
        else:
            plugin = args.deepspeed_plugin  # as `mixins.check_engine` refuses `zero3_problem`, before the writing
            if plugin is not None and plugin.zero_stage == 3:
                raise ValueError(f"{type(self).__name__} cannot run under DeepSpeed ZeRO-3: "
                                 f"{self.generate_zero3_problem} Or use ZeRO-2 (examples/accelerate/ds_zero2.json) or "
                                 f"DDP; see {ENGINES_DOC}.")  # fmt: skip
            model, processing_class = self._write_alternates(model, args, forget_dataset, processing_class)
        super().__init__(model=model, args=args, forget_dataset=forget_dataset, processing_class=processing_class,
                         **kwargs)  # fmt: skip
        self.check_alternates_fit()
        if self.args.precompute_reference:
            self.precompute_reference_alternates()

    def _write_alternates(self, model, args, forget_dataset, processing_class):
        """Generate the alternates with `model` (loaded here when given as a name or path)."""
        if row_format(forget_dataset, "forget_dataset") != "qa":
            raise ValueError(f"AltPO writes alternates from question/answer rows: give forget rows 'question' and "
                             f"'answer' columns, or precomputed alternates in column {args.alternate_column!r}.")
        if isinstance(model, str):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from ..sources import check_model_source

            check_model_source(model)
            processing_class = processing_class or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if model is None or tokenizer is None:
            raise ValueError("AltPO writes the alternate answers with the model before training: pass model= and "
                             "processing_class= (its tokenizer), or precomputed alternates in column "
                             f"{args.alternate_column!r}.")  # fmt: skip
        if getattr(model, "hf_device_map", None) is None and not (args.deepspeed or args.fsdp):
            model = model.to(args.device)  # where Trainer would put it anyway
        self.alternate_answers = generate_alternates(
            model, tokenizer, forget_dataset, args.alternate_prompt, args.num_alternates, args.alternate_max_tokens,
            args.alternate_do_sample, args.alternate_temperature, args.seed, args.alternate_stop,
        )  # fmt: skip
        return model, processing_class

    @property
    def needs_reference_model(self) -> bool:
        return super().needs_reference_model or not self.args.precompute_reference

    def compute_unlearning_loss(self, model, inputs):
        loss = self.alternate_dpo_loss(model, inputs)
        return self.add_retain_term(model, inputs, {"forget": self.args.gamma * loss})


register_method("altpo", AltPOConfig, AltPOTrainer)
