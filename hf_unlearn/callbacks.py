"""`UnlearningEvalCallback`: forget/retain metrics during unlearning, and early stopping on a forget target."""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Callable, Mapping

from transformers import TrainerCallback

from .evaluation.probability import answer_stats

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
    `<output_dir>/unlearning_eval.json`. In multi-process runs every rank computes the same numbers on the same
    (replicated) weights, so every rank stops at the same step.
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
