"""`UnlearningTrainer`: a `transformers.Trainer` whose loss is a method's named forget/retain terms."""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback

from . import mixins
from .callbacks import FiniteUpdateCallback, PairingEpochCallback, WeightChangeCallback, check_finite_update
from .config import UnlearningConfig
from .data import (
    ForgetRetainDataset,
    UnlearningCollator,
    check_forget_retain,
    check_row_containers,
    check_rows_fit_model,
    check_vocabulary,
    prepare_dataset,
)
from .fingerprint import dataset_hashes, fingerprint_from_hashes, new_salt
from .losses import kept_labels, kl_divergence, logits_to_keep, mean_nll, sequence_logps
from .mixins import CardFilesMixin, LossTermsMixin, check_output_dir, is_peft_model, model_source, starting_point
from .sources import check_model_source


def model_inputs(batch: dict) -> dict:
    """The batch without `labels`, so the model does not compute a loss we do not use."""
    return {key: value for key, value in batch.items() if key != "labels"}


class UnlearningTrainer(LossTermsMixin, CardFilesMixin, Trainer):
    """A `Trainer` for unlearning: one epoch is one pass over `forget_dataset`, each forget example paired with a
    retain example; a method subclass returns named loss terms from `compute_unlearning_loss`, which this class sums,
    logs one by one (`loss/forget`, `loss/retain`, ...) and returns as the loss.

    Everything else is `Trainer`'s: callbacks, `report_to`, checkpoints and `resume_from_checkpoint`, gradient
    accumulation, mixed precision, gradient checkpointing, PEFT models and multi-process launches.

    Args:
        model: a model or a model id / local path (loaded with `AutoModelForCausalLM`).
        args: the method's config (a `UnlearningConfig` subclass); a plain `TrainingArguments` is converted.
        forget_dataset: rows to forget: `question`/`answer` text, classification `text`/`label`, images as
            `pixel_values`/`labels`, or tokenised `input_ids`/`labels`.
        retain_dataset: rows to keep, same format; needed when the method's retain term is on (`alpha > 0`).
        processing_class: the tokenizer (needed for text rows).
        reference_model: the frozen model `θ_0` for methods that need one; by default a frozen copy of `model`, or,
            for a PEFT model, the same weights with the adapter disabled (no second copy in memory).
        peft_config: a `peft.PeftConfig` to wrap `model` with before training.
        fingerprint_salt: the secret that keys the forget set's fingerprint in the card; by default a new random one
            for every request. `save_model` writes it to `output_dir/_unlearning_salt.txt` for the requester (the salt
            of an earlier request saved there is kept as `_unlearning_salt.<fingerprint>.txt`); no upload sends it.

    `save_model()` also writes the model card (README.md), `unlearning_manifest.json` (what was removed, by
    fingerprint, with the lineage of earlier requests), plots and the salt; `push_to_hub()` uploads all but the salt.
    Record metrics for the card with `record_evaluation(original=..., gold=..., unlearned=...)`.
    """

    config_class: type[UnlearningConfig] = UnlearningConfig
    _name = "Unlearning"
    _tag_names: list[str] = ["hf-unlearn", "unlearning"]
    # Why the method cannot run under DeepSpeed ZeRO-3 (None: it can); the trainer then refuses it at construction.
    zero3_problem: str | None = None
    _paper: dict[str, str] | None = None
    # Our loss is a mean over examples, not normalised by `num_items_in_batch`: let `training_step` divide it by the
    # number of accumulation steps, exactly as a plain `Trainer` loss.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: UnlearningConfig | None = None,
        forget_dataset=None,
        retain_dataset=None,
        data_collator=None,
        eval_dataset=None,
        processing_class=None,
        reference_model=None,
        peft_config=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        fingerprint_salt: str | None = None,
        **kwargs,
    ):
        args = self._as_config(args, model)
        check_row_containers(forget_dataset=forget_dataset, retain_dataset=retain_dataset)
        if isinstance(model, (str, os.PathLike)):
            check_model_source(model)
            model = str(model)
            processing_class = processing_class or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if model is None:
            raise ValueError(f"{type(self).__name__} needs a model: pass a model object, a model id or a local path.")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token  # the usual choice for causal LMs; padding is masked anyway

        check_forget_retain(forget_dataset, None)  # an empty forget set is the first thing to report
        if not args.uses_retain:
            retain_dataset = None
        elif retain_dataset is None:
            raise ValueError(
                f"{type(self).__name__}'s retain term is on (alpha={args.alpha}) but no retain_dataset was given: "
                "pass retain_dataset, or set alpha=0 to unlearn without one."
            )
        check_forget_retain(forget_dataset, retain_dataset)
        self._fingerprint_columns, self._forget_hashes = dataset_hashes(forget_dataset)  # the card's fingerprint
        check_output_dir(args.output_dir, args.overwrite_output_dir, model_source(model))
        self._made_output_dir = not os.path.exists(args.output_dir)  # Trainer.__init__ makes it
        self._salt = fingerprint_salt or new_salt()  # every request its own
        prepare = {"tokenizer": tokenizer, "prompt_template": args.prompt_template, "max_length": args.max_length}
        forget_rows = self.prepare_rows(forget_dataset, "forget_dataset", **prepare)
        retain_rows = self.prepare_rows(retain_dataset, "retain_dataset", **prepare)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self.prepare_rows(v, f"eval_dataset[{k!r}]", **prepare) for k, v in eval_dataset.items()}
        else:
            eval_dataset = self.prepare_rows(eval_dataset, "eval_dataset", **prepare)
        for name, rows in (("forget_dataset", forget_rows), ("retain_dataset", retain_rows)):
            if rows is not None:
                check_vocabulary(rows, name, tokenizer, model)
                check_rows_fit_model(rows, name, model)

        self.forget_dataset, self.retain_dataset = forget_rows, retain_rows
        self.pairing = self.make_pairing(forget_rows, retain_rows, args)
        pad_token_id = getattr(tokenizer, "pad_token_id", None) or 0
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator if data_collator is not None else self.make_collator(pad_token_id),
            train_dataset=self.pairing,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        mixins.check_engine(self, self.zero3_problem)  # after Trainer.__init__, which sets up the engine
        self.model_accepts_loss_kwargs = False
        for callback in (PairingEpochCallback(self.pairing), FiniteUpdateCallback(self), WeightChangeCallback(self)):
            self.add_callback(callback)
        self._weights_changed: bool | None = None
        self._weights_unchanged_reason: str | None = None
        self._pad = UnlearningCollator(pad_token_id).pad
        self._step_losses: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        self.reference_model = None
        self.reference_logps: torch.Tensor | None = None
        if self.needs_reference_model:
            self._prepare_reference_model(reference_model)
        self._card_kwargs: dict[str, Any] = {}
        self._evaluation: dict[str, dict] = {}
        self._flat_metrics: dict[str, dict[str, float]] = {}
        self._parent_manifest, self._base_model, _ = starting_point(self.accelerator.unwrap_model(self.model))

    # ---- construction helpers ----

    def prepare_rows(self, dataset, name: str, tokenizer, prompt_template: str, max_length: int):
        """Rows as the collator takes them (`data.prepare_dataset`); a method with other rows (image pairs) overrides
        this. Called before `Trainer.__init__`, so it must not rely on `self.args` or `self.model`."""
        return prepare_dataset(dataset, name, tokenizer, prompt_template, max_length)

    def make_pairing(self, forget_rows, retain_rows, args) -> ForgetRetainDataset:
        """The training dataset: each forget row with a retain row (a method may pair more, e.g. by class)."""
        return ForgetRetainDataset(forget_rows, retain_rows, seed=args.seed, rank=args.process_index,
                                   replacement=args.retain_sampling == "replacement")  # fmt: skip

    def make_collator(self, pad_token_id: int) -> UnlearningCollator:
        return UnlearningCollator(pad_token_id)

    @property
    def needs_reference_model(self) -> bool:
        """Whether a reference model `θ_0` must run during training (the KL retain term; NPO adds its own)."""
        return self.args.uses_retain and self.args.retain_loss == "kl"

    def _prepare_reference_model(self, reference_model) -> None:
        if reference_model is None and is_peft_model(self.accelerator.unwrap_model(self.model)):
            return  # the adapter-disabled base is θ_0: no second copy
        if reference_model is None:
            # A frozen copy in eval mode; trl.experimental.create_reference_model does the same but is unstable API.
            reference_model = copy.deepcopy(self.accelerator.unwrap_model(self.model)).requires_grad_(False).eval()
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            self.reference_model = prepare_deepspeed(reference_model, self.accelerator)
        else:
            self.reference_model = self.accelerator.prepare_model(reference_model, evaluation_mode=True)

    # ---- the maths a method composes ----

    def answer_logps(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example sum of answer-token log-probs under `model`, and the answer-token counts."""
        logits = model(**model_inputs(batch), **logits_to_keep(model, batch["labels"])).logits
        return sequence_logps(logits, kept_labels(batch["labels"], logits))

    @torch.no_grad()
    def reference_logits(self, model, batch: dict) -> torch.Tensor:
        """Logits of the reference model `θ_0` (for a PEFT model: the adapter disabled, in eval mode)."""
        return self.reference_forward(model, batch).logits

    @torch.no_grad()
    def reference_forward(self, model, batch: dict, **kwargs):
        """Outputs of the reference model `θ_0` on `batch` (`kwargs`, e.g. `output_hidden_states`, go to the model)."""
        if self.reference_model is not None:
            return self.reference_model(**model_inputs(batch), **kwargs)
        from trl.trainer.utils import use_adapter

        was_training = model.training
        model.eval()
        try:
            with use_adapter(self.accelerator.unwrap_model(self.model), None):
                return model(**model_inputs(batch), **kwargs)
        finally:
            model.train(was_training)

    def reference_answer_logps(self, model, batch: dict, forget_index: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example answer log-probs under `θ_0`: from the precomputed cache when there is one."""
        if self.reference_logps is not None and forget_index is not None:
            return self.reference_logps[forget_index.cpu()].to(batch["labels"].device)
        keep = logits_to_keep(self.reference_model or model, batch["labels"])
        logits = self.reference_forward(model, batch, **keep).logits
        return sequence_logps(logits, kept_labels(batch["labels"], logits))[0]

    def add_retain_term(self, model, inputs: dict, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`terms` plus `"retain"` when the retain term is on (`alpha > 0`)."""
        if self.args.uses_retain:
            terms["retain"] = self.retain_term(model, inputs["retain"])
        return terms

    def retain_term(self, model, retain: dict) -> torch.Tensor:
        """`alpha` × the retain loss: mean answer-token NLL, or KL(p_θ0 ‖ p_θ) per `retain_loss`."""
        if self.args.retain_loss == "kl":
            logits = model(**model_inputs(retain)).logits
            loss = kl_divergence(self.reference_logits(model, retain), logits, retain["labels"]).mean()
        else:
            loss = self.answer_nll(model, retain)
        return self.args.alpha * loss

    def answer_nll(self, model, batch: dict) -> torch.Tensor:
        """The batch's answer NLL, averaged per `nll_reduction`: over answers of their mean token NLL ("example"), or
        over all answer tokens of the batch ("token")."""
        sum_logps, num_tokens = self.answer_logps(model, batch)
        if self.args.nll_reduction == "token":
            return -sum_logps.sum() / num_tokens.sum().clamp(min=1)
        return mean_nll(sum_logps, num_tokens).mean()

    @torch.no_grad()
    def precompute_reference_logps(self) -> torch.Tensor:
        """One pass of `θ_0` (the model as it is now) over the forget set; cached so no reference model is held."""
        model = self.model
        was_training = model.training
        model.eval()
        size = self.args.per_device_eval_batch_size
        chunks = []
        for start in range(0, len(self.forget_dataset), size):
            rows = [self.forget_dataset[i] for i in range(start, min(start + size, len(self.forget_dataset)))]
            batch = self._prepare_inputs(self._pad(rows))
            chunks.append(self.answer_logps(model, batch)[0].float().cpu())
        model.train(was_training)
        self.reference_logps = torch.cat(chunks)
        return self.reference_logps

    def compute_unlearning_loss(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        """Return the method's named loss terms, each a scalar already weighted (`gamma`, `alpha`).

        `inputs["forget"]` and `inputs["retain"]` are padded batches (`input_ids`, `attention_mask`, `labels`);
        `inputs["forget_index"]` indexes the forget set. Subclasses implement this.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute_unlearning_loss.")

    # ---- Trainer hooks ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "forget" not in inputs:  # plain rows, e.g. an eval_dataset of question/answer pairs
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        terms = self.compute_unlearning_loss(model, inputs)
        loss = torch.stack([value.float() for value in terms.values()]).sum()
        if model.training:
            self._step_losses.append((loss.detach(), {name: value.detach() for name, value in terms.items()}))
        else:
            self._step_losses = [(loss.detach(), terms)]
            check_finite_update(self, check_gradients=False)
        self.record_loss_terms("train" if model.training else "eval", terms)
        return (loss, {}) if return_outputs else loss

    # ---- the card, the manifest and the Hub ----

    def record_evaluation(self, original=None, gold=None, unlearned=None) -> None:
        """Metrics for the card: each a results dict (e.g. `evaluate_tofu`'s) of the model before unlearning, the
        retain-only model and this model. Numbers are kept, and the unlearned model's MIA ROC for the plot."""
        from .evaluation.report import flat_numbers

        for name, results in (("original", original), ("gold", gold), ("unlearned", unlearned)):
            if results is not None:
                self._evaluation[name] = dict(results)
        self._flat_metrics = {name: flat_numbers(results) for name, results in self._evaluation.items()}

    def unlearning_manifest(self) -> dict[str, Any]:
        """This run's manifest: the request just served on top of the starting model's lineage."""
        from .evaluation.report import stored_numbers
        from .manifest import build_request, card_fields, dataset_entry, non_default_settings, with_request

        kwargs = self._card_kwargs
        metrics = {name: numbers for name, numbers in self._flat_metrics.items() if numbers}
        if "unlearned" not in metrics and (stored := stored_numbers(self.args.output_dir)):
            metrics["unlearned"] = stored  # written by `hf-unlearn eval --output`
        no_step = self.state.global_step == 0
        request = build_request(
            method=vars(type(self)).get("_method_name", type(self).__name__),  # set by register_method
            method_name=self._name, paper=self._paper, description=self.args.forget_description,
            fingerprint=fingerprint_from_hashes(self._forget_hashes, self._salt, self._fingerprint_columns),
            settings=non_default_settings(self.args), log_history=self.state.log_history,
            steps=self.state.global_step,
            dataset=dataset_entry(kwargs), metrics=metrics,
            # why a metric is absent (e.g. an audit's Forgetting Score without the original encoder), per model
            metrics_missing={name: dict(results["missing"]) for name, results in self._evaluation.items()
                             if isinstance(results.get("missing"), dict) and results["missing"]},
            # False when no weight changed (the card then says nothing was unlearned); None when not known
            weights_changed=False if no_step else self._weights_changed,
            weights_unchanged_reason="no training step ran (train() was not called, or had nothing to do)"
            if no_step else self._weights_unchanged_reason,
            mia_roc={name: results["mia_roc"] for name, results in self._evaluation.items() if results.get("mia_roc")},
        )  # fmt: skip
        base = dict(self._base_model or {})
        if kwargs.get("finetuned_from"):
            base = {"id": kwargs["finetuned_from"], "revision": None}
        unwrapped = self.accelerator.unwrap_model(self.model)
        return with_request(self._parent_manifest, request, base or None,
                            **card_fields(kwargs, self.args.output_dir, unwrapped, self._tag_names))  # fmt: skip

    def _write_card_files(self, folder: str) -> None:
        from .hub import write_card_files
        from .manifest import write_salt

        write_card_files(folder, self.unlearning_manifest())
        write_salt(folder, self._salt)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if "forget" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

