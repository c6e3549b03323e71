"""Multimodal unlearning helpers: SIU's multifaceted data from one image, and a tiny offline LLaVA."""

from .siu_data import IMAGE_TARGETS, TARGETS, build_siu_dataset, concept_recognition_rows
from .tiny import IMAGE_TOKEN, add_image_token, build_llava_processor, build_tiny_llava, num_image_tokens

__all__ = [
    "IMAGE_TARGETS", "IMAGE_TOKEN", "TARGETS", "add_image_token", "build_llava_processor", "build_siu_dataset",
    "build_tiny_llava", "concept_recognition_rows", "num_image_tokens",
]  # fmt: skip
