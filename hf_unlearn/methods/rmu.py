"""RMU: Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark", arXiv 2403.03218).

    L = gamma · L_forget + alpha · L_retain
    L_forget = mean over forget rows of the mean over their tokens t of ||h_θ^ℓ(x)_t − c·u||² / d
    L_retain = mean over retain rows of the mean over their tokens t of ||h_θ^ℓ(x)_t − h_θ0^ℓ(x)_t||² / d

h^ℓ is the output of decoder layer ℓ (the residual stream: `output_hidden_states[ℓ + 1]` below the last layer, whose
entry is after the final norm), d its width, u a fixed random unit vector (entries drawn uniformly from [0, 1), then
normalised, once, from the run's `seed`), c the steering coefficient. Driving the forget tokens' activations to one
large random vector scrambles everything the layers above read from them, so the forget answers break; the retain term
holds θ_0's activations on retain rows.

Only the MLPs of layers ℓ−2, ℓ−1, ℓ train by default (the paper's layers); every other weight is frozen. With a PEFT
model the adapter's weights train instead and θ_0 is the adapter-disabled base; otherwise θ_0's activations come from
a frozen copy of the trainable weights alone, swapped in for the reference pass (no second model). A forward pass stops
at layer ℓ where that is safe (one process, no DeepSpeed or FSDP): the layers above and the LM head never run.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ..config import UnlearningConfig
from ..losses import IGNORE_INDEX, activation_distance
from ..mixins import is_peft_model
from ..registry import register_method
from ..trainer import UnlearningTrainer, model_inputs

TOKEN_POSITIONS = ("answer", "all")
TRAINABLE_KEYWORDS = ("mlp", "layers", "all")


@dataclass
class RMUConfig(UnlearningConfig):
    """Config of RMU: loss `gamma·L_forget + alpha·L_retain` (module docstring), both means of ||·||²/d per token.

    The paper writes ||·||² per token; its released code (and open-unlearning) also average over the d hidden units, as
    here. The 1/d scales both terms alike, so c and α keep the paper's meaning. Defaults are the paper's for Zephyr-7B
    (c = 6.5, α = 1200, ℓ = 7, lr 5e-5); open-unlearning's RMU.yaml uses c = 2, α = 1 and trains every weight
    (`trainable_params="all"`). c is the norm of the target, so it must be large against layer ℓ's activations: tune it
    (and ℓ) per model. The paper's forget data is raw text, every token counted; on question/answer rows this counts the
    answer tokens (open-unlearning's choice: the prompt template is shared with the retain rows, whose activations the
    retain term holds still); `token_positions="all"` counts every non-padding token, as the paper does on raw text.
    """

    alpha: float = field(
        default=1200.0, metadata={"help": "Weight α of the retain term (paper, Zephyr-7B: 1200; open-unlearning: 1)."}
    )
    steering_coeff: float = field(
        default=6.5, metadata={"help": "Steering coefficient c, the norm of the target c·u (paper, Zephyr-7B: 6.5; "
                               "open-unlearning's RMU.yaml: 2)."}  # fmt: skip
    )
    steering_layer: int = field(
        default=7, metadata={"help": "ℓ: the decoder layer (0-based) whose output is steered (paper and "
                             "open-unlearning: 7)."}  # fmt: skip
    )
    update_layers: list[int] | None = field(
        default=None, metadata={"help": "Decoder layers whose weights train (default: ℓ−2, ℓ−1, ℓ, the paper's); none "
                                "may be above ℓ, whose weights cannot change layer ℓ's output."}  # fmt: skip
    )
    trainable_params: str = field(
        default="mlp",
        metadata={"help": "Which weights train: 'mlp' (the MLPs of update_layers, the paper's), 'layers' (every weight "
                  "of update_layers), 'all' (the input embeddings and layers 0..ℓ: every weight that feeds layer ℓ, as "
                  "open-unlearning's RMU.yaml trains), or a regex matched against full parameter names "
                  "(e.g. r'model\\.layers\\.(5|6|7)\\.mlp\\.down_proj\\.weight', the paper's released code). Ignored "
                  "for a PEFT model: its adapter trains."},  # fmt: skip
    )
    token_positions: str = field(
        default="answer",
        metadata={"help": "Which tokens' activations count, in both terms: 'answer' (labels not -100, open-unlearning) "
                  "or 'all' (every non-padding token, the paper's on raw text).", "choices": list(TOKEN_POSITIONS)},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.steering_coeff > 0:
            raise ValueError(f"steering_coeff={self.steering_coeff} is out of range: use c > 0, the norm of the target "
                             "c·u (default 6.5, the paper's for Zephyr-7B).")  # fmt: skip
        if self.steering_layer < 0:
            raise ValueError(f"steering_layer={self.steering_layer} is negative: use a decoder layer index >= 0 "
                             "(default 7, the paper's).")  # fmt: skip
        layers = self.update_layers
        if layers is not None and (not layers or any(not 0 <= i <= self.steering_layer for i in layers)):
            raise ValueError(f"update_layers={layers} is out of range: give layer indices in 0..steering_layer="
                             f"{self.steering_layer} (layers above it cannot change its output), or leave it unset "
                             "for ℓ−2, ℓ−1, ℓ (the paper's).")  # fmt: skip
        if self.trainable_params not in TRAINABLE_KEYWORDS:
            try:
                re.compile(self.trainable_params)
            except re.error as error:
                raise ValueError(f"trainable_params={self.trainable_params!r} is neither one of "
                                 f"{list(TRAINABLE_KEYWORDS)} nor a valid regex ({error}); default 'mlp'.") from None
        if self.token_positions not in TOKEN_POSITIONS:
            raise ValueError(f"token_positions={self.token_positions!r} is unknown: use one of {list(TOKEN_POSITIONS)} "
                             "(default 'answer').")  # fmt: skip
        if self.retain_loss != "nll":
            raise ValueError(f"retain_loss={self.retain_loss!r}: RMU's retain term matches θ_0's layer-ℓ activations "
                             "on the retain rows, not their outputs; leave retain_loss='nll' (unused).")  # fmt: skip

    @property
    def layers_to_update(self) -> list[int]:
        return self.update_layers or [i for i in range(self.steering_layer - 2, self.steering_layer + 1) if i >= 0]


def steering_vector(size: int, coefficient: float, seed: int) -> torch.Tensor:
    """c·u: u has entries drawn uniformly from [0, 1) by a generator seeded with `seed`, normalised to unit length."""
    u = torch.rand(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (coefficient * u / u.norm()).float()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM (its `ModuleList` as long as `config.num_hidden_layers`)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if isinstance(getattr(decoder, "layers", None), nn.ModuleList):
        return decoder.layers
    config = getattr(model, "config", None)
    count = getattr(getattr(config, "text_config", config), "num_hidden_layers", None)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if len(found) != 1:
        raise ValueError(f"RMU could not tell which ModuleList of {type(model).__name__} holds its {count} decoder "
                         f"layers (candidates: {[name for name, _ in found]}); RMU needs a decoder-only causal LM.")
    return found[0][1]


class _ReachedLayer(Exception):
    """Raised by the capture hook to end a forward pass once layer ℓ has run."""


class RMUTrainer(UnlearningTrainer):
    """Representation Misdirection for Unlearning (Li et al., "The WMDP Benchmark", arXiv 2403.03218, ICML 2024).

    Works under DDP and DeepSpeed ZeRO-2/3: with several processes or a sharded engine the forward runs to the end
    (stopping early would skip the engines' gradient and gather hooks), and under DeepSpeed or FSDP θ_0 is the trainer's
    prepared frozen reference model instead of swapped-in weights.
    """

    config_class = RMUConfig
    _name = "RMU"
    _tag_names = UnlearningTrainer._tag_names + ["rmu"]
    _paper = {"title": "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning", "id": "2403.03218"}

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(UnlearningTrainer.__init__).bind(self, *args, **kwargs)
        self._reference_given = bound.arguments.get("reference_model") is not None
        super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        self._peft = is_peft_model(model)
        self._layers = self._checked_layers(model.get_base_model() if self._peft else model)
        if not self._peft:
            self._select_trainable(model)
        self._steering: torch.Tensor | None = None
        # θ_0 without a second model: the trainable weights as they are now, swapped in for the reference pass
        self._frozen = None
        if self.args.uses_retain and not (self._peft or self.needs_reference_model):
            self._frozen = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @property
    def needs_reference_model(self) -> bool:
        # a frozen model copy only where swapping weights cannot work (sharded engines) or the user gave one
        sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
        return self.args.uses_retain and (self._reference_given or sharded)

    def _checked_layers(self, model) -> nn.ModuleList:
        layers, args = decoder_layers(model), self.args
        wanted = [args.steering_layer, *args.layers_to_update]
        if max(wanted) >= len(layers):
            raise ValueError(
                f"steering_layer={args.steering_layer} (update_layers={args.layers_to_update}) is out of range for "
                f"{type(model).__name__}'s {len(layers)} decoder layers: use layer indices 0..{len(layers) - 1} (the "
                "paper steers layer 7 of Zephyr-7B's 32, about a quarter of the way up)."
            )  # fmt: skip
        return layers

    def _select_trainable(self, model) -> None:
        """Freeze every weight but those `trainable_params` chooses."""
        pattern, args = self.args.trainable_params, self.args
        if pattern in ("mlp", "layers"):
            owned = {id(p) for i in args.layers_to_update for name, p in self._layers[i].named_parameters()
                     if pattern == "layers" or "mlp" in name.split(".")}  # fmt: skip
        elif pattern == "all":
            below = [model.get_input_embeddings(), *self._layers[: args.steering_layer + 1]]
            owned = {id(p) for module in below for p in module.parameters()}
        chosen = {n for n, p in model.named_parameters()
                  if (id(p) in owned if pattern in TRAINABLE_KEYWORDS else re.fullmatch(pattern, n))}  # fmt: skip
        if not chosen:
            names = [n for n, _ in self._layers[self.args.steering_layer].named_parameters()]
            raise ValueError(f"trainable_params={pattern!r} selects no weight of {type(model).__name__} (layer "
                             f"{self.args.steering_layer}'s are {names}): give a regex over full parameter names, or "
                             "'layers' or 'all'.")  # fmt: skip
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in chosen)

    # ---- activations of layer ℓ ----

    def _can_stop_early(self, model) -> bool:
        """Whether a forward through `model` may end at layer ℓ: not through DDP/DeepSpeed wrappers or FSDP, whose
        hooks around the whole forward (gradient reduction, parameter gathering) must run."""
        return self.accelerator.unwrap_model(model) is model and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _capture(self, run, layers: nn.ModuleList, stop: bool) -> torch.Tensor:
        """Layer ℓ's output in the forward pass `run()` makes; with `stop`, the pass ends there."""
        captured = []

        def capture(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            if stop:
                raise _ReachedLayer

        handle = layers[self.args.steering_layer].register_forward_hook(capture)
        try:
            run()
        except _ReachedLayer:
            pass
        finally:
            handle.remove()
        return captured[0]

    def layer_activations(self, model, batch: dict) -> torch.Tensor:
        """`[B, T, d]` output of decoder layer ℓ of `model` (the policy) on `batch`."""
        return self._capture(lambda: model(**model_inputs(batch)), self._layers, self._can_stop_early(model))

    @torch.no_grad()
    def reference_activations(self, model, batch: dict) -> torch.Tensor:
        """Layer ℓ's output under θ_0, in eval mode: the reference model, the adapter disabled (PEFT), or the frozen
        weights swapped in for this pass."""
        inputs = model_inputs(batch)
        if self.reference_model is not None:
            layers = decoder_layers(self.accelerator.unwrap_model(self.reference_model))
            reference = self.reference_model
            return self._capture(lambda: reference(**inputs), layers, self._can_stop_early(reference))
        module = self.accelerator.unwrap_model(model)  # no gradient to reduce: the wrapper's hooks are not needed
        stop = not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        was_training = module.training
        module.eval()
        try:
            if self._peft:
                from trl.trainer.utils import use_adapter

                with use_adapter(module, None):
                    return self._capture(lambda: module(**inputs), self._layers, stop)
            device = next(module.parameters()).device
            if next(iter(self._frozen.values())).device != device:  # the model moved since construction
                self._frozen = {name: tensor.to(device) for name, tensor in self._frozen.items()}
            run = partial(torch.func.functional_call, module, self._frozen, (), inputs, strict=False)
            return self._capture(run, self._layers, stop)
        finally:
            module.train(was_training)

    def counted_tokens(self, batch: dict) -> torch.Tensor:
        """`[B, T]` mask of the tokens whose activations count (`token_positions`)."""
        if self.args.token_positions == "answer":
            return batch["labels"] != IGNORE_INDEX
        return batch["attention_mask"].bool()

    def compute_unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        terms = {}
        if self.args.uses_retain:  # θ_0's pass first: no swapped weight is live while the policy's graph is built
            retain = inputs["retain"]
            reference = self.reference_activations(model, retain)
        hidden = self.layer_activations(model, forget)
        if self._steering is None:
            self._steering = steering_vector(hidden.size(-1), self.args.steering_coeff, self.args.seed)
        target = self._steering.to(hidden.device)
        terms["forget"] = self.args.gamma * activation_distance(hidden, target, self.counted_tokens(forget)).mean()
        if self.args.uses_retain:
            hidden = self.layer_activations(model, retain)
            distance = activation_distance(hidden, reference.to(hidden.device), self.counted_tokens(retain))
            terms["retain"] = self.args.alpha * distance.mean()
        return terms


register_method("rmu", RMUConfig, RMUTrainer)
