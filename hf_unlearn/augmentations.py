"""Views for contrastive encoders: image augmentation recipes (kornia, batched on tensors) and text views.

Alignment Calibration (Wang et al., arXiv 2406.03603) trains on augmented views and the encoder audit measures
alignment across them.
Images are `[B, C, H, W]` float tensors with values in [0, 1] (e.g. `hf_unlearn.data.load_digits_rows()`); a recipe is
a callable `views(pixel_values) -> pixel_values` that draws fresh random parameters per image on every call.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

# name -> what it does; `image_augmentation(name, ...)` builds it.
IMAGE_RECIPES = {
    "simclr": "SimCLR (Chen et al. 2020): random resized crop (scale 0.2-1), horizontal flip, colour jitter "
    "(0.4, 0.4, 0.4, 0.1; p 0.8), grayscale (p 0.2; colour images only)",
    "digits": "for small glyphs such as 8×8 digits, where flips change the class: random resized crop (scale 0.6-1), "
    "rotation ±10°, brightness/contrast jitter 0.3 (p 0.8)",
    "none": "the identity (every view is the image itself)",
}


def image_augmentation(recipe: str | Callable = "simclr", image_size: int | tuple[int, int] = 32) -> Callable:
    """A batched view generator for `[B, C, H, W]` images in [0, 1]: a name of `IMAGE_RECIPES`, or a callable
    returned as is (e.g. your own `kornia.augmentation.AugmentationSequential`)."""
    if callable(recipe):
        return recipe
    if recipe not in IMAGE_RECIPES:
        raise ValueError(f"augmentation={recipe!r} is unknown: use one of {sorted(IMAGE_RECIPES)} or pass a callable "
                         "that maps a [B, C, H, W] batch to augmented views.")  # fmt: skip
    if recipe == "none":
        return _identity
    import kornia.augmentation as K

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if recipe == "digits":
        ops = [K.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25)), K.RandomRotation(10.0),
               K.ColorJitter(brightness=0.3, contrast=0.3, p=0.8)]  # fmt: skip
        return _Views(K.AugmentationSequential(*ops), gray=False)
    ops = [K.RandomResizedCrop(size, scale=(0.2, 1.0)), K.RandomHorizontalFlip(),
           K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)]  # fmt: skip
    return _Views(K.AugmentationSequential(*ops), gray=True)


def _identity(pixel_values: torch.Tensor) -> torch.Tensor:
    return pixel_values


class _Views:
    """A kornia pipeline applied without gradients; grayscale (p 0.2) only on 3-channel images."""

    def __init__(self, pipeline, gray: bool):
        self.pipeline, self.gray = pipeline, gray

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        import kornia.augmentation as K

        views = self.pipeline(pixel_values.float())
        if self.gray and views.shape[1] == 3:
            views = K.RandomGrayscale(p=0.2)(views)
        return views.to(pixel_values.dtype)


class TextViews:
    """A text view generator for the audit: `word_dropout` with probability `p`, seeded from torch's generator so that
    `audit_encoder`'s seed fixes the views."""

    def __init__(self, p: float = 0.1):
        self.p = p

    def __call__(self, texts: list[str]) -> list[str]:
        return word_dropout(texts, self.p, seed=int(torch.randint(0, 2**31 - 1, ())))


def word_dropout(texts: list[str], p: float = 0.1, seed: int | None = None) -> list[str]:
    """A text view: each word dropped with probability `p` (at least one word kept), as in text-contrastive views
    (e.g. EDA's random deletion, Wei & Zou 2019)."""
    rng = random.Random(seed)
    views = []
    for text in texts:
        words = text.split()
        kept = [word for word in words if rng.random() >= p]
        views.append(" ".join(kept or words[:1]))
    return views
