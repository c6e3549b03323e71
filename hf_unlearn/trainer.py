"""`UnlearningTrainer`: a `transformers.Trainer` whose loss is a method's named forget/retain terms."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections import defaultdict
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

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
from .fingerprint import content_columns, example_hashes, fingerprint_from_hashes, new_salt
from .losses import kl_divergence, mean_nll, sequence_logps
from .manifest import holds_model, read_manifest, recover_folder
from .sources import check_model_source

logger = logging.get_logger(__name__)


class NonFiniteLossError(RuntimeError):
    """The unlearning loss or its gradients became NaN/inf; training stopped before that step changed the weights."""


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def model_inputs(batch: dict) -> dict:
    """The batch without `labels`, so the model does not compute a loss we do not use."""
    return {key: value for key, value in batch.items() if key != "labels"}


def starting_point(model) -> tuple[dict | None, dict | None, Any]:
    """What a model (unwrapped) starts from: the manifest of the folder or Hub repo it was loaded from (earlier deletion
    requests or a preparation), its base model's `{"id", "revision"}` (None for a local folder), and the base model
    object (a PEFT model's base)."""
    name = None
    if is_peft_model(model):
        name = next(iter(model.peft_config.values())).base_model_name_or_path
        model = model.get_base_model()
    name = name or getattr(getattr(model, "config", None), "_name_or_path", None)
    parent = read_manifest(name) if name else None
    revision = getattr(getattr(model, "config", None), "_commit_hash", None)
    base = {"id": name, "revision": revision} if name and not os.path.isdir(name) else None
    return parent, base, model


class LossTermsMixin:
    """What every trainer of this package shares with its `Trainer` base: `args` coerced to the trainer's
    `config_class` (a plain `TrainingArguments` is converted; `None` gives `<model name>-<_name>`), and named loss
    terms logged next to `loss` (`loss/<name>`, averaged over the logging interval and over processes)."""

    config_class: type[TrainingArguments]
    _name: str

    def _as_config(self, args, model):
        if args is None:
            name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
            name = os.path.basename(str(name).rstrip("/")) or "model"
            return self.config_class(output_dir=f"{name}-{self._name}")
        if isinstance(args, self.config_class):
            return args
        if isinstance(args, TrainingArguments):
            values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
            # TrainingArguments' default would drop the nested forget/retain parts of every batch
            values["remove_unused_columns"] = False
            return self.config_class(**{k: v for k, v in values.items() if k in self.config_class.__dataclass_fields__})
        raise TypeError(f"args is a {type(args).__name__}: pass a {self.config_class.__name__}(output_dir=..., ...).")

    def _recorded_terms(self, mode: str) -> dict[str, list]:
        """The loss terms of `mode` ("train" or "eval") awaiting the next `log` (set up on first use)."""
        return self.__dict__.setdefault("_loss_terms", {"train": defaultdict(list), "eval": defaultdict(list)})[mode]

    def record_loss_terms(self, mode: str, terms: dict[str, torch.Tensor]) -> None:
        """Keep `terms` (name → scalar) for the next `log` of `mode`."""
        recorded = self._recorded_terms(mode)
        for name, value in terms.items():
            recorded[f"loss/{name}"].append(value.detach().float())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        recorded = self._recorded_terms(mode)
        # every process records the same names (the same terms, the same schedule), so the gathers match
        for name, values in recorded.items():
            mean = torch.stack(values).mean().to(self.args.device)
            logs[prefix + name] = self.accelerator.gather(mean.unsqueeze(0)).mean().item()
        recorded.clear()
        super().log(logs, start_time)


def check_output_dir(folder, overwrite: bool, source=None, setting: str = "overwrite_output_dir=True") -> None:
    """Refuse, before any training, an output folder that already holds a saved model, unless `overwrite` or the model
    being trained was loaded from that folder (`source`: a new request on top of its own lineage). An interrupted
    save found there is settled first (`manifest.recover_folder`); `setting` is how the caller's user says overwrite."""
    if not os.path.isdir(folder):
        return
    recover_folder(folder)
    if overwrite or not holds_model(folder):
        return
    if source and os.path.isdir(source) and os.path.samefile(source, folder):
        return
    raise ValueError(
        f"output_dir={str(folder)!r} already holds a saved model, which this run's save_model would replace. Pass "
        f"another output_dir, or set {setting} to replace it (to unlearn that model further, load it from that "
        "folder: its lineage is kept)."
    )


def model_source(model) -> str | None:
    """The folder or id a model (or a PEFT model's base) was loaded from."""
    unwrapped = model.get_base_model() if is_peft_model(model) else model
    return getattr(getattr(unwrapped, "config", None), "_name_or_path", None)


class CardFilesMixin:
    """`save_model` / `push_to_hub` for trainers that write a card, a manifest and the fingerprint's salt next to the
    weights (never into checkpoints, and never uploaded). A subclass provides `_write_card_files(folder)` and
    `create_model_card(**kwargs)`, which remembers its arguments in `self._card_kwargs` and writes the files.

    A save is staged and committed (`manifest.begin_staging` / `commit_staging`): the weights, card, manifest, plots
    and salt appear in the folder together, so a crash never leaves new weights under an old card."""

    def _write_card_files(self, folder: str) -> None:
        raise NotImplementedError

    def _save_together(self, folder: str, weights: bool = True) -> None:
        """Write this run's weights (when `weights`), card, manifest, plots and salt into `folder` as one commit. The
        salt of the request the folder held before, if another, is kept beside it (`_unlearning_salt.<fp>.txt`)."""
        from .hub import PLOTS
        from .manifest import LEGACY_SALT_NAME, MODEL_FILES, STAGING_NAME, begin_staging, commit_staging, read_salt

        staging = os.path.join(folder, STAGING_NAME)
        # read before staging starts: reading a folder settles (here: would discard) an uncommitted staging folder
        earlier, salt = (read_manifest(folder), read_salt(folder)) if self.args.should_save else (None, None)
        if weights:  # every process takes part in saving the weights (sharded engines gather them)
            if self.args.should_save:
                begin_staging(folder)
            self.accelerator.wait_for_everyone()
            super().save_model(staging, _internal_call=True)
        if self.args.should_save:
            if not weights:
                begin_staging(folder)
            if earlier and salt and salt != self._salt:  # the requester of the earlier request still needs it
                print_id = earlier["requests"][0]["fingerprint"]["hmac_sha256"][:16]
                with open(os.path.join(staging, f"_unlearning_salt.{print_id}.txt"), "w") as handle:
                    handle.write(salt + "\n")
            self._write_card_files(staging)
            replaced = [*PLOTS.values(), ".eval_results/hf-unlearn.yaml", LEGACY_SALT_NAME]
            replaced += list(MODEL_FILES) if weights else []
            commit_staging(folder, remove=replaced)
        if weights:
            self.accelerator.wait_for_everyone()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, plus the card, manifest, plots and salt next to the weights (not in checkpoints),
        all appearing together."""
        if _internal_call:  # checkpoints: the weights only
            super().save_model(output_dir, _internal_call=True)
            return
        self._save_together(output_dir or self.args.output_dir)
        if self.args.push_to_hub:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Name the Hub repo without creating it: the push creates it together with its first commit (and deletes it
        again if that commit fails), so a failed run leaves no empty, public-by-default repo behind."""
        if not self.is_world_process_zero():
            return
        name = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        if "/" not in name:
            from huggingface_hub import HfApi

            token = token if token is not None else self.args.hub_token
            name = f"{HfApi().whoami(token=token)['name']}/{name}"
        self.hub_model_id = name
        self.push_in_progress = None

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, token=None,
                    revision=None, private=None, overwrite: bool = False, **kwargs):  # fmt: skip
        """`Trainer.push_to_hub`, with our card, in one commit that never carries the salt or checkpoints; refuses to
        write over a repo whose card names another base model unless `overwrite=True`. `kwargs` go to
        `create_model_card` (e.g. `language`, `license`, `tags`). Upload errors, blocking or not, are `PushError`s
        that name the command to re-run."""
        from .hub import push_folder

        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        if "model_name" not in kwargs and "model_name" not in self._card_kwargs:
            kwargs["model_name"] = (self.args.hub_model_id or os.path.basename(self.args.output_dir)).split("/")[-1]
        self._card_kwargs.update({key: value for key, value in kwargs.items() if value is not None})
        self._save_together(self.args.output_dir)
        if not self.is_world_process_zero():
            return None
        self._finish_current_push()
        private = private if private is not None else self.args.hub_private_repo
        return push_folder(self.args.output_dir, self.hub_model_id, token=token, private=private,
                           revision=revision or self.args.hub_revision, overwrite=overwrite,
                           commit_message=commit_message, run_as_future=not blocking)  # fmt: skip

    def train(self, *args, **kwargs):
        """`Trainer.train`; a run that fails leaves no empty output folder of its own making behind."""
        created = getattr(self, "_made_output_dir", False)
        try:
            return super().train(*args, **kwargs)
        except BaseException:
            if created and self.args.should_save and os.path.isdir(self.args.output_dir):
                for root, _, _ in sorted(os.walk(self.args.output_dir), reverse=True):  # empty folders, deepest first
                    if not os.listdir(root):
                        os.rmdir(root)
            raise

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # The parent uploads output_dir without `_*` files (the salt) and checkpoints. The repo is created here, at the
        # first checkpoint push, since init_hf_repo no longer creates it.
        if self.is_world_process_zero() and self.args.hub_strategy != "end":
            from huggingface_hub import HfApi

            HfApi().create_repo(self.hub_model_id, token=self.args.hub_token, private=self.args.hub_private_repo,
                                exist_ok=True)  # fmt: skip
        super()._push_from_checkpoint(checkpoint_folder)


class _PairingEpochCallback(TrainerCallback):
    """Tells the pairing dataset which epoch starts, so retain draws depend on (seed, epoch, rank) only."""

    def __init__(self, dataset: ForgetRetainDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor(state.epoch + 1e-6))


class _FiniteUpdateCallback(TrainerCallback):
    """Before each optimizer step, stops training if a micro-batch loss or the gradients are NaN/inf."""

    def __init__(self, trainer: UnlearningTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._check_finite_update()


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


class _WeightChangeCallback(TrainerCallback):
    """Tells, when training ends, whether any trainable weight changed: a run whose learning rate, step count or loss
    weights moved nothing must not be published as an unlearned model."""

    def __init__(self, trainer: UnlearningTrainer):
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
        # Hashes of the rows as the user holds them (in memory only), for the card's keyed fingerprint.
        raw_rows = [forget_dataset[i] for i in range(len(forget_dataset))]
        self._fingerprint_columns = content_columns(raw_rows[0])
        self._forget_hashes = example_hashes(raw_rows, self._fingerprint_columns)
        del raw_rows
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
        self.model_accepts_loss_kwargs = False
        self.add_callback(_PairingEpochCallback(self.pairing))
        self.add_callback(_FiniteUpdateCallback(self))
        self.add_callback(_WeightChangeCallback(self))
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
        return ForgetRetainDataset(forget_rows, retain_rows, seed=args.seed, rank=args.process_index)

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
        logits = model(**model_inputs(batch)).logits
        return sequence_logps(logits, batch["labels"])

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
        return sequence_logps(self.reference_logits(model, batch), batch["labels"])[0]

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
            loss = mean_nll(*self.answer_logps(model, retain)).mean()
        return self.args.alpha * loss

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
            self._check_finite_update(check_gradients=False)
        self.record_loss_terms("train" if model.training else "eval", terms)
        return (loss, {}) if return_outputs else loss

    def _check_finite_update(self, check_gradients: bool = True) -> None:
        """One device sync per optimizer step (not per micro-batch): are this step's losses and gradients finite?"""
        losses, self._step_losses = self._step_losses, []
        checks = [torch.isfinite(torch.stack([loss for loss, _ in losses])).all()] if losses else []
        grads = [p.grad for p in self.model.parameters() if p.grad is not None] if check_gradients else []
        norm = torch.nn.utils.get_total_norm(grads) if grads else None
        if norm is not None:
            checks.append(torch.isfinite(norm).to(checks[0].device if checks else norm.device))
        finite = torch.stack(checks).tolist() if checks else []
        if losses and not finite[0]:
            loss, terms = next((loss, terms) for loss, terms in losses if not torch.isfinite(loss))
            values = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
            self._stop_on_non_finite(f"loss became {loss.item()} ({values})")
        if norm is not None and not finite[-1]:
            self._stop_on_non_finite(f"gradient norm became {norm.item()}")

    def _stop_on_non_finite(self, what: str) -> None:
        step = self.state.global_step + 1
        last = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
        kept = "no checkpoint had been saved yet"
        if last:  # what is known of it: saved before this step, so its weights were finite; its loss is in the log
            saved_at = int(last.rsplit("-", 1)[-1])
            losses = [(e["step"], e["loss"]) for e in self.state.log_history if "loss" in e and e["step"] <= saved_at]
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
        import json

        from .manifest import build_request, card_fields, non_default_settings, with_request

        kwargs = self._card_kwargs
        metrics = {name: numbers for name, numbers in self._flat_metrics.items() if numbers}
        eval_file = os.path.join(self.args.output_dir, "eval_results.json")
        if "unlearned" not in metrics and os.path.isfile(eval_file):  # written by `hf-unlearn eval --output`
            with open(eval_file) as handle:
                metrics["unlearned"] = json.load(handle)
        datasets = kwargs.get("dataset_tags") or kwargs.get("dataset")
        datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
        split = kwargs.get("dataset_args")
        split = split[0] if isinstance(split, (list, tuple)) else split
        no_step = self.state.global_step == 0
        request = build_request(
            method=vars(type(self)).get("_method_name", type(self).__name__),  # set by register_method
            method_name=self._name, paper=self._paper, description=self.args.forget_description,
            fingerprint=fingerprint_from_hashes(self._forget_hashes, self._salt, self._fingerprint_columns),
            settings=non_default_settings(self.args), log_history=self.state.log_history,
            steps=self.state.global_step,
            dataset={"id": datasets[0], "split": split, "public": True} if datasets else None, metrics=metrics,
            # why a metric is absent (e.g. an audit's Forgetting Score without the original encoder), per model
            metrics_missing={name: dict(results["missing"]) for name, results in self._evaluation.items()
                             if isinstance(results.get("missing"), dict) and results["missing"]},
            # False when no weight changed (the card then says nothing was unlearned); None when not known
            weights_changed=False if no_step else self._weights_changed,
            weights_unchanged_reason="no training step ran (train() was not called, or had nothing to do)"
            if no_step else self._weights_unchanged_reason,
            mia_roc=(self._evaluation.get("unlearned") or {}).get("mia_roc"),
        )  # fmt: skip
        base = dict(self._base_model or {})
        if kwargs.get("finetuned_from"):
            base = {"id": kwargs["finetuned_from"], "revision": None}
        unwrapped = self.accelerator.unwrap_model(self.model)
        return with_request(self._parent_manifest, request, base or None,
                            **card_fields(kwargs, self.args.output_dir, unwrapped, self._tag_names))  # fmt: skip

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None, **kwargs):  # fmt: skip
        """Write our card (README.md), `unlearning_manifest.json`, plots and the salt into `output_dir`.

        Takes `Trainer.create_model_card`'s arguments: `language`, `license`, `tags` (added to hf-unlearn's),
        `model_name`, `finetuned_from` (the base model's Hub id, when the model was loaded from a local folder),
        `tasks` (the pipeline tag), `dataset_tags`/`dataset` (public forget-set dataset ids, e.g. "locuslab/TOFU")
        and `dataset_args` (its split). They are remembered for later `save_model` calls.
        """
        given = {"language": language, "license": license, "tags": tags, "model_name": model_name,
                 "finetuned_from": finetuned_from, "tasks": tasks, "dataset_tags": dataset_tags, "dataset": dataset,
                 "dataset_args": dataset_args, **kwargs}  # fmt: skip
        self._card_kwargs.update({key: value for key, value in given.items() if value is not None})
        if self.is_world_process_zero():
            self._save_together(self.args.output_dir, weights=False)

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

