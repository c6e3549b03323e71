"""Work done before unlearning: Ready2Unlearn prepares a model at training time so that later unlearning is fast and
sticky; Blend condenses the retain set so any unlearning method runs on fewer rows."""

from .blend import BlendCluster, blend_condense, dm_condense, load_image_rows, random_convnet, save_image_rows
from .ready2unlearn import Ready2UnlearnConfig, Ready2UnlearnTrainer

__all__ = [
    "BlendCluster", "Ready2UnlearnConfig", "Ready2UnlearnTrainer", "blend_condense", "dm_condense", "load_image_rows",
    "random_convnet", "save_image_rows",
]  # fmt: skip
