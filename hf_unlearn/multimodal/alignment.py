"""Multimodal rows through a LLaVA processor, with each token's place in the excluded span kept aligned.

The prompt goes through the processor, which expands `<image>` into one token per visual feature; the answer is
tokenised on its own with character offsets, so the mask of excluded answer tokens (`excluded`) is on the label
positions of the expanded sequence. SIU's released code computed it before the expansion, so for image rows its mask
missed the answer; here a test plants a span and checks exactly its tokens are masked.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import UnlearningCollator
from ..losses import IGNORE_INDEX
from .siu_data import IMAGE_TARGETS

SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "excluded")


def as_rgb(image):
    """A PIL RGB image of a PIL image of any mode or an array ([H, W], [H, W, C]; floats taken as 0..1)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype.kind == "f":
        array = (np.clip(array, 0, 1) * 255).round()
    if array.dtype.kind == "b":
        array = array * 255
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).convert("RGB")


def excluded_flags(offsets, span, shift: int) -> list[int]:
    """1 for each token whose characters (`offsets`, minus `shift`) overlap `span` = [start, end), else 0."""
    if span is None:
        return [0] * len(offsets)
    start, end = span
    return [int(s - shift < end and e - shift > start and e > s) for s, e in offsets]


def encode_row(row, processor, prompt_template: str, max_length: int, where: str) -> dict:
    """One `{"question", "answer", "image"?, "excluded_span"?}` row as model inputs: `input_ids`, `attention_mask`,
    `labels` (-100 on the prompt, including its image tokens), `excluded` (1 on answer tokens in `excluded_span`) and,
    for an image row, `pixel_values` `[C, H, W]`."""
    tokenizer = getattr(processor, "tokenizer", processor)
    image, target = row.get("image"), row.get("target")
    if target in IMAGE_TARGETS and image is None:
        raise ValueError(f"{where} is an image-target row ({target!r}) without an image: put the concept's image in "
                         "its 'image' column (build_siu_dataset does).")  # fmt: skip
    prompt = prompt_template.format(question=row["question"])
    encoded: dict = {}
    if image is not None:
        if getattr(processor, "image_processor", None) is None:
            raise ValueError(f"{where} has an image but processing_class has no image processor: pass the model's "
                             "processor (e.g. LlavaProcessor / AutoProcessor.from_pretrained(...)), not its tokenizer.")
        image_token = processor.image_token
        out = processor(images=[as_rgb(image)], text=[f"{image_token}\n{prompt}"], return_tensors="pt")
        prompt_ids = out["input_ids"][0].tolist()
        encoded["pixel_values"] = out["pixel_values"][0].float()
    else:
        prompt_ids = tokenizer(prompt)["input_ids"]
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("The tokenizer is not a fast tokenizer: excluded answer tokens are found by character "
                         "offsets, which need one (AutoTokenizer.from_pretrained(..., use_fast=True)).")  # fmt: skip
    answer = tokenizer(" " + str(row["answer"]), add_special_tokens=False, return_offsets_mapping=True)
    answer_ids = list(answer["input_ids"])
    flags = excluded_flags(answer["offset_mapping"], row.get("excluded_span"), shift=1)
    if tokenizer.eos_token_id is not None:
        answer_ids, flags = answer_ids + [tokenizer.eos_token_id], flags + [0]
    if len(prompt_ids) >= max_length:
        raise ValueError(f"{where}'s prompt is {len(prompt_ids)} tokens (image tokens included), max_length is "
                         f"{max_length}: raise max_length so the answer fits.")  # fmt: skip
    input_ids = (prompt_ids + answer_ids)[:max_length]
    encoded.update({
        "input_ids": input_ids, "attention_mask": [1] * len(input_ids),
        "labels": ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length],
        "excluded": ([0] * len(prompt_ids) + flags)[:max_length],
    })  # fmt: skip
    return encoded


class MultimodalCollator(UnlearningCollator):
    """Pads sequences (right), and stacks the `pixel_values` of the rows that have an image, in row order: LLaVA
    scatters image features into the `<image>` tokens in order, so text-only rows can share a batch with image rows."""

    def pad(self, rows: list[dict]) -> dict:
        batch = super().pad([{key: row[key] for key in SEQUENCE_KEYS[:3] if key in rows[0]} for row in rows])
        if "excluded" in rows[0]:
            excluded = [torch.as_tensor(row["excluded"]) for row in rows]
            batch["excluded"] = torch.nn.utils.rnn.pad_sequence(excluded, batch_first=True, padding_value=0)
        images = [torch.as_tensor(row["pixel_values"]) for row in rows if row.get("pixel_values") is not None]
        if images:
            batch["pixel_values"] = torch.stack(images)
        return batch


def concept_token_ids(tokenizer, concept_name: str) -> list[int]:
    """The token ids of `concept_name` as it is tokenised alone and after a space (both occur in answers)."""
    if not concept_name:
        return []
    ids = set()
    for text in (concept_name, " " + concept_name):
        ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return sorted(ids)
