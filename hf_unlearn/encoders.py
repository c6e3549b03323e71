"""`ContrastiveEncoder`: a SimCLR-style encoder (any `transformers` vision backbone + a projection head) as a
`PreTrainedModel`, so it saves and loads with `save_pretrained` / `AutoModel.from_pretrained`; and the embedding
functions that Alignment Calibration and the encoder audit use for it and for `CLIPModel`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .evaluation.checks import check_int, check_number, check_positive_int, check_strings, kind, show


class ContrastiveEncoderConfig(PreTrainedConfig):
    """Config of a `ContrastiveEncoder`: the backbone's config and the projection head's sizes (SimCLR's 2-layer MLP:
    Linear(h, h) → ReLU → Linear(h, projection_dim); `projection_hidden_dim` defaults to h)."""

    model_type = "contrastive_encoder"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(self, backbone_config=None, projection_dim: int = 128, projection_hidden_dim: int | None = None,
                 **kwargs):  # fmt: skip
        if isinstance(backbone_config, dict):
            backbone_config = AutoConfig.for_model(**backbone_config)
        self.backbone_config = backbone_config
        self.projection_dim = projection_dim
        self.projection_hidden_dim = projection_hidden_dim
        super().__init__(**kwargs)


@dataclass
class ContrastiveEncoderOutput(ModelOutput):
    """`embeddings`: the projection head's output z (what the contrastive loss compares); `features`: the backbone's
    pooled representation h (what a linear probe reads)."""

    embeddings: torch.Tensor | None = None
    features: torch.Tensor | None = None


def backbone_width(config) -> int:
    """The pooled feature size of a vision backbone: `hidden_size` (ViT, DeiT, ...) or `hidden_sizes[-1]` (ResNet,
    ConvNeXt, ...)."""
    if getattr(config, "hidden_sizes", None):
        return config.hidden_sizes[-1]
    if getattr(config, "hidden_size", None):
        return config.hidden_size
    raise ValueError(f"Cannot tell the feature size of a {type(config).__name__}: it has neither hidden_size nor "
                     "hidden_sizes. Pass a transformers vision backbone (ViTModel, ResNetModel, ...).")  # fmt: skip


class ContrastiveEncoder(PreTrainedModel):
    """A SimCLR-style encoder: `backbone` (e.g. `ViTModel`, `ResNetModel`, built from a config or pretrained) pooled to
    h — its `pooler_output`, else the CLS token or the spatial mean — and a projection head h → z.

    `forward(pixel_values)` returns `ContrastiveEncoderOutput(embeddings=z, features=h)`. Wrap a pretrained backbone
    with `ContrastiveEncoder.from_backbone(backbone, projection_dim=128)`.
    """

    config_class = ContrastiveEncoderConfig
    base_model_prefix = "contrastive_encoder"
    main_input_name = "pixel_values"

    def __init__(self, config: ContrastiveEncoderConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("ContrastiveEncoderConfig needs a backbone_config (e.g. ViTConfig(...)), or use "
                             "ContrastiveEncoder.from_backbone(model).")  # fmt: skip
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        width = backbone_width(config.backbone_config)
        hidden = config.projection_hidden_dim or width
        self.projection_head = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, config.projection_dim)
        )
        self.post_init()

    @classmethod
    def from_backbone(cls, backbone: PreTrainedModel, projection_dim: int = 128, **kwargs) -> ContrastiveEncoder:
        """Wrap an existing (e.g. pretrained) backbone, keeping its weights; the projection head is new. A model with a
        task head (`ViTForImageClassification`) is unwrapped to its base model."""
        base = getattr(backbone, "base_model", backbone)
        config = ContrastiveEncoderConfig(backbone_config=base.config, projection_dim=projection_dim, **kwargs)
        return cls(config, backbone=base)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and any(module is layer for layer in self.projection_head):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self):
        try:
            return self.backbone.get_input_embeddings()
        except NotImplementedError:  # CNN backbones have no input embedding
            return None

    def pool(self, outputs) -> torch.Tensor:
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is not None:  # ViT's pooler (dense + tanh over CLS), ResNet's average pool
            return pooled.flatten(1)
        hidden = outputs.last_hidden_state
        return hidden[:, 0] if hidden.dim() == 3 else hidden.mean(dim=(2, 3))  # the CLS token, or a mean over H×W

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> ContrastiveEncoderOutput:
        features = self.pool(self.backbone(pixel_values=pixel_values))
        return ContrastiveEncoderOutput(embeddings=self.projection_head(features), features=features)


AutoConfig.register("contrastive_encoder", ContrastiveEncoderConfig, exist_ok=True)
AutoModel.register(ContrastiveEncoderConfig, ContrastiveEncoder, exist_ok=True)


def is_clip(model) -> bool:
    """Whether `model` is a two-tower image–text model with CLIP's API (`get_image_features`, `get_text_features`)."""
    return hasattr(model, "get_image_features") and hasattr(model, "get_text_features")


def _device(model) -> torch.device:
    """Where `model`'s weights are (its first parameter's device; the CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


def _tensor(output) -> torch.Tensor:
    """transformers 5 `get_*_features` return a model output; older ones a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output if getattr(output, "pooler_output", None) is not None else output[0]


def image_embeddings(model, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """z of images: a `ContrastiveEncoder`'s projection, a CLIP model's image features, or a model returning
    `embeddings`/`image_embeds`/a tensor. The images go to the model's device; z stays there."""
    check_pixel_values(model, pixel_values)
    pixel_values = pixel_values.to(_device(model))
    if is_clip(model):
        z = _tensor(model.get_image_features(pixel_values=pixel_values))
    else:
        output = model(pixel_values=pixel_values)
        z = output if isinstance(output, torch.Tensor) else output["embeddings"]
    return F.normalize(z.float(), dim=-1) if normalize else z


def _expected_channels(model) -> int | None:
    """The channel count the model's config fixes for its images (a `ContrastiveEncoder`'s backbone, CLIP's vision
    tower, or a plain vision config); None where it fixes none."""
    config = getattr(model, "config", None)
    for part in (getattr(config, "backbone_config", None), getattr(config, "vision_config", None), config):
        channels = getattr(part, "num_channels", None)
        if isinstance(channels, int):
            return channels
    return None


def check_pixel_values(model, pixel_values, name: str = "pixel_values") -> None:
    """A float `[N, C, H, W]` tensor whose C is the model's `num_channels` (when its config has one)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"{name} is {kind(pixel_values)}: pass a float tensor [N, C, H, W] (stack the "
                        "processed images with torch.stack).")  # fmt: skip
    if pixel_values.dim() != 4 or not pixel_values.is_floating_point():
        raise ValueError(f"{name} has shape {list(pixel_values.shape)} and dtype {pixel_values.dtype}: pass a float "
                         "tensor [N, C, H, W] (add a batch axis with .unsqueeze(0), a channel axis to grey images, "
                         "and .float() to integer pixels).")  # fmt: skip
    channels = _expected_channels(model)
    if channels is not None and pixel_values.shape[1] != channels:
        raise ValueError(f"{name} has {pixel_values.shape[1]} channels (shape {list(pixel_values.shape)}) but the "
                         f"model's config has num_channels={channels}: convert the images (e.g. grey <-> RGB) or use "
                         "a model made for them.")  # fmt: skip


def text_embeddings(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    normalize: bool = True) -> torch.Tensor:  # fmt: skip
    """z of captions under a CLIP model (its text features); the tokens go to the model's device, z stays there."""
    input_ids = input_ids.to(_device(model))
    attention_mask = attention_mask.to(input_ids.device) if attention_mask is not None else None
    z = _tensor(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
    return F.normalize(z.float(), dim=-1) if normalize else z


def build_tiny_contrastive_encoder(image_size: int = 8, num_channels: int = 1, patch_size: int = 2,
                                   hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
                                   projection_dim: int = 32, seed: int = 0,
                                   backbone: str = "vit") -> ContrastiveEncoder:  # fmt: skip
    """A randomly initialised float32 `ContrastiveEncoder` from a config (no download), sized for 8×8 digits: a ViT
    (`backbone="vit"`), or a 2-stage ResNet with widths (hidden_size, 2·hidden_size) (`backbone="resnet"`, ~80k
    parameters at hidden_size 32; it memorises its training images more than the ViT does)."""
    from transformers import ResNetConfig, ViTConfig

    if backbone == "resnet":
        backbone = ResNetConfig(num_channels=num_channels, embedding_size=hidden_size // 2, layer_type="basic",
                                hidden_sizes=[hidden_size, 2 * hidden_size], depths=[1, 1],
                                downsample_in_first_stage=False)  # fmt: skip
    elif backbone == "vit":
        backbone = ViTConfig(
            image_size=image_size, patch_size=patch_size, num_channels=num_channels, hidden_size=hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, intermediate_size=hidden_size * 2,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )  # fmt: skip
    else:
        raise ValueError(f"backbone={backbone!r}: use 'vit' or 'resnet'.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ContrastiveEncoder(ContrastiveEncoderConfig(backbone_config=backbone, projection_dim=projection_dim))
    return model.float()


def sentence_embeddings(model, tokenizer, texts: list[str], max_length: int = 128) -> torch.Tensor:
    """Mean-pooled last hidden states of a text encoder over non-padding tokens (Sentence-BERT's pooling, which
    all-MiniLM-L6-v2 was trained with), L2-normalised: `[len(texts), d]`."""
    check_strings("texts", texts, min_count=1, unit="texts")
    check_positive_int("max_length", max_length, unit="tokens")
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    encoded = {key: value.to(model.device) for key, value in encoded.items()}
    hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float(), dim=-1)


def train_contrastive(model, pixel_values: torch.Tensor, augment, epochs: int, batch_size: int = 128,
                      learning_rate: float = 3e-3, temperature: float = 0.5, seed: int = 0,
                      forget_pixel_values: torch.Tensor | None = None,
                      forget_weight: float = 0.0) -> float:  # fmt: skip
    """SimCLR pre-training (AdamW, the InfoNCE of two views per image, in-batch negatives) of an image encoder on
    `pixel_values` [N, C, H, W]; the plain loop the examples and the benchmark use to build the original and the
    retrained encoders. With `forget_pixel_values` and `forget_weight` w > 0 each step also subtracts w × the forget
    images' InfoNCE (gradient ascent on them: the NegGrad baseline; with empty `pixel_values`, plain gradient ascent).
    Returns the wall time in seconds."""
    import time

    from .losses import info_nce

    if len(pixel_values):
        check_pixel_values(model, pixel_values)
    check_int("epochs", epochs, 0)
    check_positive_int("batch_size", batch_size, unit="images per step")
    check_number("learning_rate", learning_rate, 0, low_open=True)
    check_number("temperature", temperature, 0, low_open=True, note="SimCLR uses 0.5")
    check_number("forget_weight", forget_weight, 0)
    check_int("seed", seed, 0)
    if forget_weight > 0:
        if forget_pixel_values is None or not len(forget_pixel_values):
            raise ValueError(f"forget_weight={forget_weight:g} but no forget_pixel_values: pass the forget images to "
                             "ascend on, or forget_weight=0.")  # fmt: skip
        check_pixel_values(model, forget_pixel_values, "forget_pixel_values")
    elif not len(pixel_values):
        raise ValueError(f"pixel_values is empty and forget_weight={show(forget_weight)}: there is nothing to train "
                         "on; pass images (or forget images with forget_weight > 0).")  # fmt: skip

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    count = len(pixel_values) if len(pixel_values) else len(forget_pixel_values)
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator)
        for begin in range(0, count, batch_size):
            index = order[begin : begin + batch_size]
            loss = torch.zeros(())
            if len(pixel_values):
                batch = pixel_values[index]
                z = image_embeddings(model, torch.cat([augment(batch), augment(batch)]), normalize=False)
                loss = loss + info_nce(z[: len(batch)], z[len(batch) :], temperature).mean()
            if forget_weight > 0:
                pick = torch.randint(0, len(forget_pixel_values), (min(len(index), len(forget_pixel_values)),),
                                     generator=generator)  # fmt: skip
                batch = forget_pixel_values[pick]
                z = image_embeddings(model, torch.cat([augment(batch), augment(batch)]), normalize=False)
                loss = loss - forget_weight * info_nce(z[: len(batch)], z[len(batch) :], temperature).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - start
