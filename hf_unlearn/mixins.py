"""What every trainer of this package adds to `Trainer`: `LossTermsMixin` (the config class, named loss terms in the
logs) and `CardFilesMixin` (staged saves of weights, card, manifest, plots and salt that appear together, and the push
of that folder to the Hub), with where a run may save (`check_output_dir`) and what a model starts from
(`starting_point`)."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections import defaultdict
from typing import Any

import torch
from transformers import TrainingArguments

from .manifest import holds_model, read_manifest, recover_folder


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


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


ENGINES_DOC = "docs/scale.md"


def check_engine(trainer, zero3_problem: str | None = None) -> None:
    """Refuse, at construction, an engine the trainer cannot run under, naming it and what to use instead: FSDP that
    Accelerate did not enable (on a CPU it silently runs plain DDP, every process holding the whole model), and
    DeepSpeed ZeRO-3 for a method that states `zero3_problem`."""
    args = trainer.args
    asked = bool(args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if asked and not trainer.is_fsdp_enabled:
        raise ValueError(
            f"FSDP was asked for (fsdp={args.fsdp!r}, ACCELERATE_USE_FSDP={os.environ.get('ACCELERATE_USE_FSDP')}) "
            "but Accelerate did not enable it: without GPUs it silently runs plain DDP, each process holding the whole "
            "model. Shard on a CPU with DeepSpeed ZeRO-3 instead (deepspeed=examples/accelerate/ds_zero3.json with "
            f"use_cpu=True), or run FSDP on GPUs; see {ENGINES_DOC}."
        )  # fmt: skip
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None) if trainer.is_deepspeed_enabled else None
    if zero3_problem and plugin is not None and plugin.zero_stage == 3:
        raise ValueError(
            f"{type(trainer).__name__} cannot run under DeepSpeed ZeRO-3: {zero3_problem} Use ZeRO-2 "
            f"(examples/accelerate/ds_zero2.json) or DDP; see {ENGINES_DOC}."
        )  # fmt: skip


def whole_copy(model, main: bool, device: str | torch.device = "cpu"):
    """A plain copy of `model` with its whole weights on the main process (None on the others), for work that needs
    them in one process, such as evaluation. Under DeepSpeed ZeRO-3, where each process holds a shard of every
    parameter, every process must call it: the parameters are gathered one at a time into a copy the main process
    builds on `device` (no weight initialisation, the same dtypes); the other processes never hold more than one whole
    parameter beyond their shards. Without ZeRO-3 it is a deep copy on the main process."""
    if not any(hasattr(parameter, "ds_id") for parameter in model.parameters()):
        return copy.deepcopy(model) if main else None
    import deepspeed

    plain = None
    if main:
        base = model.get_base_model() if is_peft_model(model) else model
        with torch.device("meta"):
            plain = type(base)(base.config)
        plain = plain.to_empty(device=device)  # new tensors: the tied ones (lm_head and embeddings) untied
        if hasattr(plain, "tie_weights"):
            plain.tie_weights()
        plain.generation_config = copy.deepcopy(getattr(base, "generation_config", None))
        if is_peft_model(model):
            from peft import get_peft_model

            plain = get_peft_model(plain, model.peft_config[model.active_adapter])
        for name, buffer in model.named_buffers():  # not partitioned: whole on every process
            plain.get_buffer(name).data = buffer.detach().to(device, copy=True)
    targets = dict(plain.named_parameters()) if main else {}
    for name, parameter in model.named_parameters():
        with deepspeed.zero.GatheredParameters([parameter], modifier_rank=None):
            if main:
                targets.pop(name).data = parameter.data.detach().to(device, copy=True)
    if targets:  # never evaluate uninitialised memory
        raise RuntimeError(f"whole_copy: {sorted(targets)} of the copy have no counterpart in the model.")
    return plain.eval() if main else None


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

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None, **kwargs):  # fmt: skip
        """Write the card (README.md), `unlearning_manifest.json`, plots and the salt into `output_dir`, together.

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
        """`Trainer.push_to_hub`, with our card, in an upload that never carries the salt or checkpoints; refuses to
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


