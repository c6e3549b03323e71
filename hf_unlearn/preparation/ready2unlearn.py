"""Ready2Unlearn (Duan, Yang, Tam, Abbasi; arXiv 2505.10845, 2025): prepare a model while it is first trained, so that
unlearning a flagged "revocable" group later is fast, keeps the data that must survive, and resists relearning.

MAML-style meta-objective (Duan et al. 2025, arXiv 2505.10845, §3; the paper's exact equation is not readable from
public sources, so this is the project's own, every coefficient a config field):

    inner:  θ'  = θ  + α_in · ∇_θ ℓ(D_rev; θ)                  simulated unlearning (gradient ascent), `inner_steps`
            θ'' = θ' − α_re · ∇_θ' ℓ(D_recovery; θ')           simulated relearning on similar data, `relearn_steps`
                                                            (optionally clipped: `relearn_max_grad_norm`)
    outer:  L = ℓ(D_task; θ) − λ1 · ℓ(D_rev; θ') + λ2 · ℓ(D_stable; θ') − λ3 · ℓ(D_rev; θ'')

`ℓ` is the mean per-example loss: cross-entropy for classifier rows, mean answer-token NLL for question/answer rows.
The two ascent terms are unbounded below, so their ℓ is capped (`revocable_loss_cap`, by default log C: the loss of a
uniform prediction); above the cap they add no gradient.
With `query_batch` (MAML's support/query split) the inner ascent uses one revocable batch and the two ℓ(D_rev) of the
outer loss another, disjoint one. With `unlearn_rise` the λ1 term is the rise −λ1 · (ℓ(D_rev; θ') − ℓ(D_rev; θ))
instead of the level (ℓ(D_rev; θ') capped as above).
The inner updates run on the model's trainable parameters through `torch.func.functional_call` (no copy of the model).
First order (the default) treats each inner gradient as a constant (θ' = θ + α_in·stopgrad(g)); second order
differentiates through it (`create_graph=True`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..config import SafeArgumentsMixin, check_prompt_template
from ..data import UnlearningCollator, _row_key, check_rows_fit_model, check_vocabulary, prepare_dataset, row_format
from ..fingerprint import dataset_hashes, fingerprint_from_hashes, new_salt
from ..losses import mean_nll, sequence_logps
from ..mixins import CardFilesMixin, LossTermsMixin, check_engine, check_output_dir, model_source, starting_point
from ..model_cards import PREPARED, template_path
from ..trainer import model_inputs

META_ORDERS = ("first", "second")
PAPER = {"title": "Ready2Unlearn: A Learning-Time Approach for Preparing Models with Future Unlearning Readiness",
         "id": "2505.10845"}  # fmt: skip
CARD_TEMPLATE = template_path(PREPARED)


@dataclass
class Ready2UnlearnConfig(SafeArgumentsMixin, TrainingArguments):
    """Training arguments of Ready2Unlearn: ordinary training plus the meta-objective's step sizes, weights, schedule.

    The paper's hyper-parameter values are not readable from public sources; the defaults here are the project's
    starting points, not tuned values: `bench/ready2unlearn.py` sets its own per setting (digits: chosen on a
    validation split; see docs/results.md), and a user should choose them on held-out data the same way.
    """

    alpha_in: float = field(default=0.05, metadata={
        "help": "α_in: step size of the simulated unlearning, θ' = θ + α_in·∇ℓ(D_rev; θ) (gradient ascent)."})
    alpha_re: float = field(default=0.05, metadata={
        "help": "α_re: step size of the simulated relearning, θ'' = θ' − α_re·∇ℓ(D_recovery; θ')."})
    inner_steps: int = field(default=1, metadata={"help": "Gradient-ascent steps of the simulated unlearning."})
    relearn_steps: int = field(default=1, metadata={"help": "Gradient-descent steps of the simulated relearning."})
    relearn_max_grad_norm: float | None = field(default=None, metadata={
        "help": "Clip each simulated relearning gradient to this global norm, as `Trainer`'s `max_grad_norm` clips an "
                "attacker's fine-tuning (g·min(1, c/(‖g‖+1e-6)), as torch.nn.utils.clip_grad_norm_). None: plain "
                "gradient steps, θ'' = θ' − α_re·∇ℓ(D_recovery; θ')."})
    lambda1: float = field(default=1.0, metadata={
        "help": "λ1: weight of −ℓ(D_rev; θ'): unlearning must raise the revocable loss quickly."})
    lambda2: float = field(default=1.0, metadata={
        "help": "λ2: weight of ℓ(D_stable; θ'): unlearning must not hurt the stable data (0 disables the term)."})
    lambda3: float = field(default=1.0, metadata={
        "help": "λ3: weight of −ℓ(D_rev; θ''): relearning on recovery data must not bring the revocable data back "
                "(0 disables the term)."})
    revocable_loss_cap: float | None = field(default=None, metadata={
        "help": "ℓ(D_rev) above this value earns nothing in the −λ1 and −λ3 terms (they are unbounded otherwise, and "
                "the meta step would drive them up without end). None: log(C), the loss of a uniform prediction over "
                "the C classes (or the vocabulary); inf: no cap."})
    meta_order: str = field(default="first", metadata={
        "help": "'first': inner gradients are constants (θ' = θ + α_in·stopgrad(g)); 'second': differentiate through "
                "them (create_graph=True; more memory and time).", "choices": list(META_ORDERS)})
    query_batch: bool = field(default=False, metadata={
        "help": "MAML's support/query split: the simulated unlearning ascends on one revocable batch (support) and "
                "the −λ1 and −λ3 terms measure ℓ(D_rev) on another, disjoint one (query), so the meta step rewards "
                "unlearning that carries over to revocable rows the ascent did not see, as a later gradient ascent "
                "over the whole group needs. False: both on the same batch. Needs at least 2 revocable rows."})
    unlearn_rise: bool = field(default=False, metadata={
        "help": "The −λ1 term rewards the rise ℓ(D_rev; θ') − ℓ(D_rev; θ) that the simulated unlearning achieves, "
                "not the level ℓ(D_rev; θ'). The level also rewards fitting the revocable rows less to begin with; "
                "the rise (≈ α_in·∇ℓ_query·∇ℓ_support to first order in α_in, with query_batch) rewards a model on "
                "which gradient ascent raises the revocable loss quickly. The cap applies to ℓ(D_rev; θ')."})
    meta_every: int = field(default=1, metadata={
        "help": "Run the meta-objective on every k-th optimizer step (1 = every step); other steps are ordinary."})
    meta_batch_size: int | None = field(default=None, metadata={
        "help": "Rows drawn from each of the revocable, stable and recovery sets per meta step (default: "
                "per_device_train_batch_size)."})
    stable_sample_size: int = field(default=512, metadata={
        "help": "When no stable_dataset is given: how many training rows (not revocable) are sampled, with `seed`, "
                "as the stable set."})
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "Kept False: rows are prepared by the trainer (tokenised or image rows), not filtered by signature."})
    max_length: int = field(default=512, metadata={"help": "Question+answer rows are truncated to this many tokens."})
    prompt_template: str = field(default="Question: {question}\nAnswer:", metadata={
        "help": "How a `question` becomes the prompt; the answer follows after one space and ends in EOS."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Save over a model already in output_dir (refused before training otherwise)."})
    revocable_description: str | None = field(default=None, metadata={
        "help": "What the revocable group is, in words, for the model card (public: never put its content here)."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("alpha_in", "alpha_re", "lambda1", "lambda2", "lambda3"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} is negative: step sizes and weights must be >= 0.")
        if self.alpha_in == 0:
            raise ValueError("alpha_in=0 makes the simulated unlearning a no-op: use a positive step size, e.g. 0.05.")
        if self.revocable_loss_cap is not None and self.revocable_loss_cap <= 0:
            raise ValueError(f"revocable_loss_cap={self.revocable_loss_cap}: use a positive loss value, None (log C) "
                             "or inf (no cap).")  # fmt: skip
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps={self.inner_steps}: the simulated unlearning needs at least 1 step.")
        if self.relearn_steps < 0:
            raise ValueError(f"relearn_steps={self.relearn_steps} is negative: use 0 or more.")
        if self.relearn_max_grad_norm is not None and not self.relearn_max_grad_norm > 0:
            raise ValueError(f"relearn_max_grad_norm={self.relearn_max_grad_norm}: use a positive norm, or None for "
                             "unclipped simulated relearning.")  # fmt: skip
        if self.meta_order not in META_ORDERS:
            raise ValueError(f"meta_order={self.meta_order!r} is unknown: use one of {list(META_ORDERS)}.")
        if self.meta_every < 1:
            raise ValueError(f"meta_every={self.meta_every}: use 1 (every optimizer step) or more.")
        if self.meta_batch_size is not None and self.meta_batch_size < 1:
            raise ValueError(f"meta_batch_size={self.meta_batch_size}: use a positive batch size, or None.")
        if self.stable_sample_size < 1:
            raise ValueError(f"stable_sample_size={self.stable_sample_size}: use a positive number of rows.")
        check_prompt_template(self.prompt_template)


def example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ℓ per example `[B]`: −log p(y|x) for classifier rows (`labels` `[B]`), mean answer-token NLL for token rows."""
    return mean_nll(*sequence_logps(logits, labels))


def sample_seed(seed: int, name: str, step: int, rank: int) -> int:
    """A generator seed for one auxiliary batch that depends on (seed, set name, optimizer step, process rank) only."""
    digest = hashlib.sha256(f"hf-unlearn-ready2unlearn:{seed}:{name}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _MetaScheduleCallback(TrainerCallback):
    """Marks the start of each optimizer step, so the meta-objective runs once per step, on its first micro-batch."""

    def __init__(self, trainer: Ready2UnlearnTrainer):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer._meta_pending = state.global_step % args.meta_every == 0


class Ready2UnlearnTrainer(LossTermsMixin, CardFilesMixin, Trainer):
    """A `Trainer` for a model's first training that prepares it for later unlearning of `revocable_dataset`
    (Ready2Unlearn, arXiv 2505.10845): each optimizer step's loss is the ordinary task loss, and on every
    `meta_every`-th step also `−λ1·ℓ(D_rev; θ') + λ2·ℓ(D_stable; θ') − λ3·ℓ(D_rev; θ'')` (see the module docstring).

    The meta terms are computed once per optimizer step on auxiliary batches drawn by a generator seeded with
    (seed, step, process rank), so processes draw different rows and a resumed run draws what the uninterrupted one
    did; they are scaled so that gradient accumulation gives the same update as one large batch. With a PEFT model only
    the trainable (adapter) parameters take the simulated updates. Everything else is `Trainer`'s.

    Args:
        model: the model to train (a classifier or a causal LM).
        args: a `Ready2UnlearnConfig` (a plain `TrainingArguments` is converted).
        train_dataset: the ordinary training rows `D_task` (image `pixel_values`/`labels`, classification
            `text`/`label`, `question`/`answer`, or tokenised `input_ids`/`labels`); usually holds the revocable rows.
        revocable_dataset: the rows that may be unlearned later (`D_rev`), same format. Required.
        stable_dataset: rows that must survive unlearning (`D_stable`); default: `stable_sample_size` training rows
            that are not revocable, sampled with `seed`.
        recovery_dataset: rows similar to the revocable ones from which an attacker might relearn them
            (`D_recovery`); default: the revocable rows themselves (the strongest relearning attack).
        fingerprint_salt: keys the revocable group's fingerprint in the card; by default a new random one. Written
            to `output_dir/_unlearning_salt.txt` by `save_model`, never uploaded.

    `save_model()` also writes `unlearning_manifest.json` and a card (README.md) saying the model was prepared with
    Ready2Unlearn and for which revocable group (by salted fingerprint, never content); an `UnlearningTrainer` started
    from the saved folder lists this preparation in its own lineage.
    """

    config_class = Ready2UnlearnConfig
    _name = "Ready2Unlearn"
    _tag_names = ["hf-unlearn", "ready2unlearn", "unlearning-readiness"]
    _paper = PAPER
    # Our loss is a mean over examples, not normalised by `num_items_in_batch`: `training_step` divides it by the
    # number of accumulation steps, exactly as a plain `Trainer` loss.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: Ready2UnlearnConfig | None = None,
        train_dataset=None,
        revocable_dataset=None,
        stable_dataset=None,
        recovery_dataset=None,
        data_collator=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        fingerprint_salt: str | None = None,
        **kwargs,
    ):
        args = self._as_config(args, model)
        if model is None:
            raise ValueError("Ready2UnlearnTrainer needs a model: pass the model to train.")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token
        if train_dataset is None or len(train_dataset) == 0:
            raise ValueError("train_dataset is empty: Ready2Unlearn prepares a model during its ordinary training, "
                             "so pass the training rows.")  # fmt: skip
        if revocable_dataset is None or len(revocable_dataset) == 0:
            raise ValueError(
                "Ready2UnlearnTrainer needs a revocable_dataset: pass the rows that may be unlearned later (e.g. one "
                "class, or one author's rows); without them use a plain transformers.Trainer."
            )
        fmt = row_format(train_dataset, "train_dataset")
        named = {"revocable_dataset": revocable_dataset, "stable_dataset": stable_dataset,
                 "recovery_dataset": recovery_dataset}  # fmt: skip
        for name, rows in named.items():
            if rows is not None and len(rows) == 0:
                raise ValueError(f"{name} is empty: pass at least one row, or leave it out to use the default.")
            if rows is not None and row_format(rows, name) != fmt:
                raise ValueError(f"{name} holds {row_format(rows, name)!r} rows but train_dataset holds {fmt!r} rows: "
                                 "give every set the same row format.")  # fmt: skip
        if args.query_batch and len(revocable_dataset) < 2:
            raise ValueError(f"query_batch=True splits the revocable rows into a support and a query batch, but "
                             f"revocable_dataset has {len(revocable_dataset)} row: pass at least 2, or set "
                             "query_batch=False.")  # fmt: skip
        if stable_dataset is None and args.lambda2 > 0:
            stable_dataset = self._sample_stable(train_dataset, revocable_dataset, fmt, args)
        self._fingerprint_columns, self._revocable_hashes = dataset_hashes(revocable_dataset)  # the card's fingerprint
        check_output_dir(args.output_dir, args.overwrite_output_dir, model_source(model))
        self._made_output_dir = not os.path.exists(args.output_dir)  # Trainer.__init__ makes it
        self._salt = fingerprint_salt or new_salt()  # every preparation its own

        prepare = {"tokenizer": tokenizer, "prompt_template": args.prompt_template, "max_length": args.max_length}
        train_rows = prepare_dataset(train_dataset, "train_dataset", **prepare)
        self.revocable_dataset = prepare_dataset(revocable_dataset, "revocable_dataset", **prepare)
        self.stable_dataset = prepare_dataset(stable_dataset, "stable_dataset", **prepare)
        self.recovery_dataset = prepare_dataset(recovery_dataset, "recovery_dataset", **prepare)
        if self.recovery_dataset is None:
            self.recovery_dataset = self.revocable_dataset
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: prepare_dataset(v, f"eval_dataset[{k!r}]", **prepare) for k, v in eval_dataset.items()}
        else:
            eval_dataset = prepare_dataset(eval_dataset, "eval_dataset", **prepare)
        for name, rows in (("train_dataset", train_rows), ("revocable_dataset", self.revocable_dataset)):
            check_vocabulary(rows, name, tokenizer, model)
            check_rows_fit_model(rows, name, model)

        pad_token_id = getattr(tokenizer, "pad_token_id", None) or 0
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator if data_collator is not None else UnlearningCollator(pad_token_id),
            train_dataset=train_rows,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        check_engine(self, "its meta-step evaluates the model on stand-in weights with torch.func.functional_call, "
                           "which needs every parameter whole, and ZeRO-3 partitions them across the processes.")
        self.model_accepts_loss_kwargs = False
        self.add_callback(_MetaScheduleCallback(self))
        self._pad = UnlearningCollator(pad_token_id).pad
        self._meta_pending = False
        self._card_kwargs: dict[str, Any] = {}

    # ---- construction helpers ----

    @staticmethod
    def _sample_stable(train_dataset, revocable_dataset, fmt: str, args: Ready2UnlearnConfig) -> list:
        """`stable_sample_size` training rows that are not revocable, drawn with a generator seeded by `args.seed`."""
        revocable = {_row_key(revocable_dataset[i], fmt) for i in range(len(revocable_dataset))}
        candidates = [i for i in range(len(train_dataset)) if _row_key(train_dataset[i], fmt) not in revocable]
        if not candidates:
            raise ValueError("Every training row is revocable, so no stable set can be sampled from it: pass "
                             "stable_dataset, or set lambda2=0 to drop the stable term.")  # fmt: skip
        generator = torch.Generator().manual_seed(sample_seed(args.seed, "stable", 0, 0))
        order = torch.randperm(len(candidates), generator=generator)[: args.stable_sample_size].tolist()
        return [train_dataset[candidates[i]] for i in sorted(order)]

    # ---- the meta-objective ----

    def auxiliary_batch(self, rows, name: str, parts: int = 1):
        """A batch of `meta_batch_size` rows (without replacement) from `rows`, drawn by a generator seeded with
        (seed, `name`, optimizer step, process rank), padded and on the training device. With `parts` > 1: a list of
        that many disjoint batches from one draw (each at most len(rows) // parts rows)."""
        size = min(self.args.meta_batch_size or self.args.per_device_train_batch_size, len(rows) // parts)
        seed = sample_seed(self.args.seed, name, self.state.global_step, self.args.process_index)
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
        batches = [self._prepare_inputs(self._pad([rows[i] for i in order[k * size:(k + 1) * size]]))
                   for k in range(parts)]  # fmt: skip
        return batches[0] if parts == 1 else batches

    @staticmethod
    def _loss_at(module, params: dict, batch: dict) -> torch.Tensor:
        """ℓ(batch; params): the mean per-example loss of `module` run with `params` in place of its own."""
        logits = functional_call(module, params, args=(), kwargs=model_inputs(batch)).logits
        return example_losses(logits, batch["labels"]).mean()

    def _capped(self, module, params: dict, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """`(ℓ, min(ℓ, cap))` on the revocable batch: the ascent terms use the capped value (no gradient above it)."""
        logits = functional_call(module, params, args=(), kwargs=model_inputs(batch)).logits
        loss = example_losses(logits, batch["labels"]).mean()
        cap = self.args.revocable_loss_cap
        cap = math.log(logits.shape[-1]) if cap is None else cap
        return loss, loss.clamp(max=cap)

    def _step(self, module, params: dict, batch: dict, step_size: float, second_order: bool,
              max_grad_norm: float | None = None) -> dict:
        """`params + step_size · ∇ℓ(batch; params)` (a negative `step_size` descends); the gradient is a constant
        unless `second_order`. With `max_grad_norm` the gradient is first clipped to that global norm, as
        `torch.nn.utils.clip_grad_norm_` clips it (coefficient min(1, c/(‖g‖ + 1e-6)))."""
        loss = self._loss_at(module, params, batch)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order, allow_unused=True)
        grads = [grad if grad is None or second_order else grad.detach() for grad in grads]
        if max_grad_norm is not None:
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None]))
            coefficient = (max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
            grads = [grad if grad is None else grad * coefficient for grad in grads]
        return {
            name: value if grad is None else value + step_size * grad
            for (name, value), grad in zip(params.items(), grads, strict=True)
        }

    def meta_objective(self, model, revocable: dict, stable: dict | None = None, recovery: dict | None = None,
                       query: dict | None = None):  # fmt: skip
        """`(loss, terms)`: the meta loss `−λ1·ℓ(D_rev; θ') + λ2·ℓ(D_stable; θ') − λ3·ℓ(D_rev; θ'')` on the given
        padded batches (the two revocable losses capped at `revocable_loss_cap`), and the unweighted, uncapped ℓ values
        by name (`revocable_after_unlearn`, `stable_after_unlearn`, `revocable_after_relearn`). The simulated
        unlearning ascends on `revocable`; the two ℓ(D_rev) are measured on `query` where given (support/query
        split), else on `revocable` too. With `unlearn_rise` the first term is −λ1·(ℓ(D_rev; θ') − ℓ(D_rev; θ)), and
        `revocable_before_unlearn` (ℓ(D_rev; θ)) is among the terms. Differentiable with respect to the model's
        trainable parameters."""
        args = self.args
        module = self.accelerator.unwrap_model(model)
        second = args.meta_order == "second"
        # Second order differentiates through the inner gradients, i.e. through attention's backward: the fused
        # scaled_dot_product_attention kernels have no derivative of their backward (on CPU: "derivative for
        # aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"), the math kernel does.
        with sdpa_kernel(SDPBackend.MATH) if second else contextlib.nullcontext():
            return self._meta_objective(module, revocable, stable, recovery, query, second)

    def _meta_objective(self, module, revocable: dict, stable: dict | None, recovery: dict | None,
                        query: dict | None, second: bool):  # fmt: skip
        args = self.args
        theta = {name: param for name, param in module.named_parameters() if param.requires_grad}
        unlearned = theta
        for _ in range(args.inner_steps):
            unlearned = self._step(module, unlearned, revocable, args.alpha_in, second)
        terms = {}
        query = revocable if query is None else query
        terms["revocable_after_unlearn"], capped = self._capped(module, unlearned, query)
        if args.unlearn_rise:  # −λ1·(min(ℓ(θ'), cap) − ℓ(θ)): the rise, not the level
            terms["revocable_before_unlearn"] = self._loss_at(module, theta, query)
            capped = capped - terms["revocable_before_unlearn"]
        loss = -args.lambda1 * capped
        if args.lambda2 > 0 and stable is not None:
            terms["stable_after_unlearn"] = self._loss_at(module, unlearned, stable)
            loss = loss + args.lambda2 * terms["stable_after_unlearn"]
        if args.lambda3 > 0 and recovery is not None:
            relearned = unlearned
            for _ in range(args.relearn_steps):
                relearned = self._step(module, relearned, recovery, -args.alpha_re, second, args.relearn_max_grad_norm)
            terms["revocable_after_relearn"], capped = self._capped(module, relearned, query)
            loss = loss - args.lambda3 * capped
        return loss, terms

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """ℓ(D_task; θ) on the batch, plus, on the first micro-batch of a meta step, the meta loss scaled by the number
        of accumulation steps (so that `training_step`'s division leaves it with weight 1 per optimizer step)."""
        outputs = model(**model_inputs(inputs))
        loss = example_losses(outputs.logits, inputs["labels"]).mean()
        self.record_loss_terms("train" if model.training else "eval", {"task": loss})
        if model.training and self._meta_pending:
            self._meta_pending = False
            stable = self.auxiliary_batch(self.stable_dataset, "stable") if self.stable_dataset is not None else None
            if self.args.query_batch:
                revocable, query = self.auxiliary_batch(self.revocable_dataset, "revocable", parts=2)
            else:
                revocable, query = self.auxiliary_batch(self.revocable_dataset, "revocable"), None
            meta, terms = self.meta_objective(
                model, revocable, stable,
                self.auxiliary_batch(self.recovery_dataset, "recovery") if self.args.lambda3 > 0 else None, query,
            )  # fmt: skip
            loss = loss + meta * getattr(self, "current_gradient_accumulation_steps", 1)
            self.record_loss_terms("train", terms)
        return (loss, outputs) if return_outputs else loss

    # ---- the card, the manifest and the Hub ----

    def preparation_manifest(self) -> dict[str, Any]:
        """The manifest of the prepared model: one entry (`kind: "preparation"`) on top of the starting model's lineage,
        naming the revocable group by salted fingerprint. A valid parent for any `UnlearningTrainer` run."""
        from ..manifest import build_request, card_fields, non_default_settings, with_request

        unwrapped = self.accelerator.unwrap_model(self.model)
        parent, base, _ = starting_point(unwrapped)
        request = build_request(
            kind="preparation", method="ready2unlearn",
            method_name="Ready2Unlearn (learning-time preparation; nothing removed)", paper=self._paper,
            description=self.args.revocable_description,
            fingerprint=fingerprint_from_hashes(self._revocable_hashes, self._salt, self._fingerprint_columns),
            settings=non_default_settings(self.args), log_history=self.state.log_history,
            steps=self.state.global_step,
        )  # fmt: skip
        return with_request(parent, request, base,
                            **card_fields(self._card_kwargs, self.args.output_dir, unwrapped, self._tag_names))

    def _write_card_files(self, folder: str) -> None:
        from ..manifest import write_manifest, write_salt

        manifest = self.preparation_manifest()
        write_manifest(folder, manifest)
        render_prepared_card(manifest).save(os.path.join(folder, "README.md"))
        write_salt(folder, self._salt)


def render_prepared_card(manifest: dict[str, Any]):
    """The card of a prepared model (`ModelCard`): the Hub metadata of `hub.card_data`, the revocable group's
    fingerprint, the settings, how to unlearn it later, and the lineage. Rendered from the manifest alone."""
    from huggingface_hub import ModelCard

    from ..hub import _bibtex, card_data, model_name

    current = manifest["requests"][0]
    return ModelCard.from_template(
        card_data(manifest),
        template_path=str(CARD_TEMPLATE),
        model_name=model_name(manifest),
        request=current,
        paper=current.get("paper"),
        bibtex=_bibtex(current.get("paper")),
        fingerprint=current["fingerprint"],
        settings=current.get("settings") or {},
        earlier=manifest["requests"][1:],
        compute={"steps": None, "wall_time_seconds": None, "hardware": None, **(current.get("compute") or {})},
        versions=current.get("versions") or {},
    )
