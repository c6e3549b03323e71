"""Callbacks: `UnlearningEvalCallback` (forget/retain metrics during unlearning, and early stopping on a forget target),
and the ones every unlearning trainer adds to itself: the retain draws' epoch, the NaN/inf guard before each optimizer
step, and the check that training moved a weight at all."""

from __future__ import annotations

import json
import math
import operator
import os
from collections.abc import Callable, Mapping

import torch
from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from .evaluation.probability import answer_stats

logger = logging.get_logger(__name__)
COMPARISONS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


class UnlearningEvalCallback(TrainerCallback):
    """Every `eval_steps` optimizer steps, compute metrics on the model being unlearned; stop once a target is met.

    By default the metrics are `forget_probability`, `forget_loss`, `retain_probability` and `retain_loss` of the
    trainer's own forget set and the first `retain_sample` retain examples. Pass `metric_fn(model) -> dict` for
    others, e.g. TOFU forget quality against the gold model::

        metric_fn = lambda model: evaluate_tofu(model, tok, "forget10", gold_forget_truth_ratios=gold_tr)
        UnlearningEvalCallback(metric_fn, stop_when={"forget_quality": (">=", 0.05)})

    `stop_when` maps metric names to `(comparison, value)` (comparison one of `<=`, `<`, `>=`, `>`; all must hold),
    e.g. `{"forget_probability": ("<=", gold_forget_probability)}`. When the target is met, training stops, that
    step's checkpoint is saved (unless `save_strategy="no"`: then the final model is the chosen one and no checkpoint
    is written), and the chosen step is recorded in `trainer.state.log_history` and in
    `<output_dir>/unlearning_eval.json`. In multi-process runs the main process computes the metrics and sends them
    to the others, so every rank stops at the same step and the work is done once; under DeepSpeed ZeRO-3 (each process
    holds a shard of the weights) every process first helps gather a whole copy onto the main one
    (`mixins.whole_copy`), which must fit on its device.
    """

    def __init__(
        self,
        metric_fn: Callable | None = None,
        eval_steps: int | None = None,
        stop_when: Mapping[str, tuple[str, float]] | None = None,
        retain_sample: int = 256,
    ):
        for name, (comparison, _) in (stop_when or {}).items():
            if comparison not in COMPARISONS:
                raise ValueError(f"stop_when[{name!r}] uses {comparison!r}: use one of {list(COMPARISONS)}.")
        self.metric_fn, self.eval_steps, self.stop_when = metric_fn, eval_steps, dict(stop_when or {})
        self.retain_sample = retain_sample
        self.history: list[dict] = []
        self.chosen_step: int | None = None
        self._checkpoint: str | None = None
        self._rows = None

    def on_train_begin(self, args, state, control, train_dataloader=None, processing_class=None, **kwargs):
        steps = self.eval_steps or args.eval_steps or args.logging_steps
        self._every = max(1, int(steps if steps >= 1 else steps * state.max_steps))
        dataset = getattr(train_dataloader, "dataset", None)
        if self.metric_fn is None:
            if not hasattr(dataset, "forget"):
                raise ValueError("UnlearningEvalCallback without metric_fn needs an UnlearningTrainer's forget set.")
            retain = dataset.retain
            sample = [retain[i] for i in range(min(self.retain_sample, len(retain)))] if retain is not None else None
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            self._rows = (dataset.forget, sample, getattr(tokenizer, "pad_token_id", None) or 0)

    def compute(self, model) -> dict[str, float]:
        if self.metric_fn is not None:
            return dict(self.metric_fn(model))
        forget, retain, pad_token_id = self._rows
        metrics = {f"forget_{k}": v for k, v in answer_stats(model, forget, pad_token_id=pad_token_id).items()}
        if retain:
            metrics |= {f"retain_{k}": v for k, v in answer_stats(model, retain, pad_token_id=pad_token_id).items()}
        return metrics

    def target_met(self, metrics: Mapping[str, float]) -> bool:
        missing = sorted(set(self.stop_when) - set(metrics))
        if missing:
            raise ValueError(f"stop_when names {missing}, which the metrics do not have: {sorted(metrics)}.")
        return bool(self.stop_when) and all(
            COMPARISONS[comparison](metrics[name], value) for name, (comparison, value) in self.stop_when.items()
        )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self._every:
            return
        if args.world_size > 1:
            from accelerate.utils import broadcast_object_list

            from .mixins import whole_copy

            sent = [None]
            # under ZeRO-3 each process holds a shard: all gather a plain copy onto the main one, which computes alone
            if is_deepspeed_zero3_enabled():
                model = whole_copy(model, state.is_world_process_zero, args.device)
            if state.is_world_process_zero:
                try:
                    sent = [self.compute(model)]
                except Exception as error:  # sent on, so that every rank stops instead of waiting for the metrics
                    sent = [error]
            metrics = broadcast_object_list(sent, from_process=0)[0]
            if isinstance(metrics, Exception):
                raise metrics
        else:
            metrics = self.compute(model)
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.history.append({"step": state.global_step, **numbers})
        state.log_history.append({"step": state.global_step, **{f"unlearning_eval/{k}": v for k, v in numbers.items()}})
        if self.chosen_step is None and self.target_met(metrics):
            self.chosen_step = state.global_step
            self._checkpoint = f"checkpoint-{state.global_step}" if args.save_strategy != "no" else None
            control.should_training_stop = True
            control.should_save = self._checkpoint is not None
            state.log_history.append({"step": state.global_step, "unlearning_target_met": True,
                                      "chosen_checkpoint": self._checkpoint})  # fmt: skip

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        record = {
            "history": self.history,
            "stop_when": {name: list(target) for name, target in self.stop_when.items()},
            "chosen_step": self.chosen_step,
            # None with save_strategy="no": training stopped at the chosen step, so the final model is the chosen one
            "chosen_checkpoint": self._checkpoint if self.chosen_step is not None else None,
        }
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "unlearning_eval.json"), "w") as handle:
            json.dump(record, handle, indent=2)


class NonFiniteLossError(RuntimeError):
    """The unlearning loss or its gradients became NaN/inf; training stopped before that step changed the weights."""


class PairingEpochCallback(TrainerCallback):
    """Tells the pairing dataset which epoch starts, so retain draws depend on (seed, epoch, rank) only."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor(state.epoch + 1e-6))


class FiniteUpdateCallback(TrainerCallback):
    """Before each optimizer step, stops training if a micro-batch loss or the gradients are NaN/inf."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        check_finite_update(self.trainer)


def weight_samples(model) -> list[torch.Tensor]:
    """Up to 64 evenly spaced values of every trainable weight (copies): enough to tell whether training moved any
    weight, since an optimizer step moves nearly every element of a tensor it updates."""
    samples = []
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.numel() > 0:  # ZeRO-3 placeholders hold no values here
            flat = parameter.detach().reshape(-1)
            index = torch.linspace(0, flat.numel() - 1, min(flat.numel(), 64), device=flat.device).long()
            samples.append(flat[index].clone())
    return samples


class WeightChangeCallback(TrainerCallback):
    """Tells, when training ends, whether any trainable weight changed: a run whose learning rate, step count or loss
    weights moved nothing must not be published as an unlearned model."""

    def __init__(self, trainer):
        self.trainer, self.before, self.start_step = trainer, [], 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step, self.before = state.global_step, weight_samples(self.trainer.model)

    def on_train_end(self, args, state, control, **kwargs):
        after = weight_samples(self.trainer.model)
        if not self.before:
            return  # nothing to compare (sharded placeholders): unknown
        changed = any(not torch.equal(a, b) for a, b in zip(after, self.before, strict=True))
        if changed or self.start_step > 0:  # resumed: earlier steps may have changed the weights
            self.trainer._weights_changed = changed or None
            return
        steps = state.global_step - self.start_step
        reason = ("no optimizer step ran" if steps == 0 else
                  f"{steps} optimizer step(s) ran but moved no weight: the updates were below the weights' precision; "
                  "check learning_rate, the loss weights (gamma, alpha) and the method's settings (e.g. NPO's beta)")
        self.trainer._weights_changed, self.trainer._weights_unchanged_reason = False, reason
        logger.warning(f"Nothing was unlearned: {reason}. save_model() will say so in the model card.")


def check_finite_update(trainer, check_gradients: bool = True) -> None:
    """One device sync per optimizer step (not per micro-batch): are this step's losses and gradients finite?"""
    losses, trainer._step_losses = trainer._step_losses, []
    checks = [torch.isfinite(torch.stack([loss for loss, _ in losses])).all()] if losses else []
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None] if check_gradients else []
    norm = torch.nn.utils.get_total_norm(grads) if grads else None
    if norm is not None:
        checks.append(torch.isfinite(norm).to(checks[0].device if checks else norm.device))
    finite = torch.stack(checks).tolist() if checks else []
    if losses and not finite[0]:
        loss, terms = next((loss, terms) for loss, terms in losses if not torch.isfinite(loss))
        values = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
        _stop_on_non_finite(trainer, f"loss became {loss.item()} ({values})")
    if norm is not None and not finite[-1]:
        _stop_on_non_finite(trainer, f"gradient norm became {norm.item()}")

def _stop_on_non_finite(trainer, what: str) -> None:
    step = trainer.state.global_step + 1
    last = get_last_checkpoint(trainer.args.output_dir) if os.path.isdir(trainer.args.output_dir) else None
    kept = "no checkpoint had been saved yet"
    if last:  # what is known of it: saved before this step, so its weights were finite; its loss is in the log
        saved_at = int(last.rsplit("-", 1)[-1])
        losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e and e["step"] <= saved_at]
        kept = f"the last checkpoint, {last}, holds finite weights from step {saved_at}"
        if losses:
            first = f", at step {losses[0][0]}: {losses[0][1]:.4g}" if losses[0][0] != losses[-1][0] else ""
            kept += (f" (loss logged at step {losses[-1][0]}: {losses[-1][1]:.4g}{first}; check that it had not "
                     "begun to diverge)")
    raise NonFiniteLossError(
        f"The unlearning {what} at step {step}. Training stopped before this step updated the weights, so the "
        f"model holds step {step - 1}'s weights (trainer.save_model() keeps them); {kept}. Lower learning_rate, "
        "set max_grad_norm, or lower gamma."
    )
