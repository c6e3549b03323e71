"""A tiny LLaVA built from configs (no download): a small CLIP vision tower, a small Llama, and a `LlavaProcessor`
whose `<image>` expansion matches the vision tower's patch count, for tests, examples and benchmarks offline."""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

IMAGE_TOKEN = "<image>"


def add_image_token(tokenizer, image_token: str = IMAGE_TOKEN):
    """Add `image_token` to `tokenizer` as a special token (no-op if it is already one); returns the tokenizer."""
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
    return tokenizer


def build_tiny_llava(
    tokenizer, image_size: int = 32, patch_size: int = 8, vision_hidden_size: int = 32, vision_layers: int = 2,
    hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, max_position_embeddings: int = 256,
    vision_feature_select_strategy: str = "default", seed: int = 0,
) -> LlavaForConditionalGeneration:
    """A randomly initialised float32 `LlavaForConditionalGeneration` (CLIP vision tower + Llama) for `tokenizer`,
    which must hold the `<image>` token (`add_image_token`). With the `default` strategy the CLS feature is dropped,
    so an image becomes `(image_size // patch_size) ** 2` tokens; `full` keeps it (one more)."""
    if image_size % patch_size:
        raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}: change either one.")
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        raise ValueError(f"The tokenizer has no {IMAGE_TOKEN!r} token: call add_image_token(tokenizer) first.")
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size, intermediate_size=vision_hidden_size * 2, num_hidden_layers=vision_layers,
        num_attention_heads=num_heads, image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden_size,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    num_patches = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy=vision_feature_select_strategy, vision_feature_layer=-2,
        image_seq_length=num_patches + (vision_feature_select_strategy == "full"),
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    return model.float()


def build_llava_processor(model, tokenizer) -> LlavaProcessor:
    """A `LlavaProcessor` consistent with `model.config`: a CLIP image processor that resizes and crops to the vision
    tower's `image_size`, and `patch_size`, `vision_feature_select_strategy` and `num_additional_image_tokens` (CLIP's
    CLS token: 1) set so `<image>` expands to exactly the number of image features the model scatters."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import CLIPImageProcessor
    else:  # the same processor on PIL (transformers falls back to it with a warning)
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as CLIPImageProcessor

    vision = model.config.vision_config
    size = vision.image_size
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=vision.patch_size,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy, num_additional_image_tokens=1,
    )  # fmt: skip


def num_image_tokens(model) -> int:
    """How many `<image>` tokens one image becomes for `model` (what its processor must expand the placeholder to)."""
    vision = model.config.vision_config
    count = (vision.image_size // vision.patch_size) ** 2 + 1  # CLIP prepends a CLS feature
    return count - (model.config.vision_feature_select_strategy == "default")


def train_llava(model, processor, rows, epochs: int = 30, learning_rate: float = 3e-3, batch_size: int = 8,
                prompt_template: str = "Question: {question}\nAnswer:", max_length: int = 256, seed: int = 0,
                lr_scheduler_type: str = "constant", warmup_ratio: float = 0.0):  # fmt: skip
    """Fine-tune `model` on `{"question", "answer", "image"}` rows (answer-token cross-entropy, AdamW, shuffled by
    `seed`): how tests and benchmarks teach a tiny LLaVA the concepts it later unlearns. `lr_scheduler_type` and
    `warmup_ratio` are `transformers.get_scheduler`'s ("constant": the learning rate never changes; "cosine" decays it
    to 0 over the run, which keeps long runs from diverging). Returns the last epoch's mean loss."""
    from transformers import get_scheduler

    from ..losses import mean_nll, sequence_logps
    from .alignment import MultimodalCollator, encode_row

    encoded = [encode_row(row, processor, prompt_template, max_length, f"row {i}") for i, row in enumerate(rows)]
    collate = MultimodalCollator(processor.tokenizer.pad_token_id or 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    total = epochs * -(-len(encoded) // batch_size)
    scheduler = get_scheduler(lr_scheduler_type, optimizer, num_warmup_steps=int(warmup_ratio * total),
                              num_training_steps=total)  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(encoded), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), batch_size):
            batch = collate.pad([encoded[i] for i in order[start : start + batch_size]])
            labels = batch.pop("labels")
            batch.pop("excluded")
            loss = mean_nll(*sequence_logps(model(**batch).logits, labels)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    model.eval()
    return sum(losses) / len(losses)
