"""Work done before unlearning: Blend, which condenses the retain set so any unlearning method runs on fewer rows."""

from .blend import BlendCluster, blend_condense, dm_condense, load_image_rows, random_convnet, save_image_rows

__all__ = ["BlendCluster", "blend_condense", "dm_condense", "load_image_rows", "random_convnet", "save_image_rows"]
