"""One file per method; importing this package registers them all in `hf_unlearn.METHODS`."""

from ..registry import METHODS
from .a_amu import (
    AAMUConfig,
    AAMUConfigMixin,
    AAMUDeepCUTConfig,
    AAMUDeepCUTTrainer,
    AAMUGAConfig,
    AAMUGATrainer,
    AAMUGradDiffConfig,
    AAMUGradDiffTrainer,
    AAMUMixin,
    AAMUNPOConfig,
    AAMUNPOTrainer,
    AAMUSimNPOConfig,
    AAMUSimNPOTrainer,
    AAMUTrainer,
)
from .ac import AlignmentCalibrationConfig, AlignmentCalibrationTrainer
from .deepcut import DeepCUTConfig, DeepCUTTrainer
from .ga import GAConfig, GATrainer
from .grad_diff import GradDiffConfig, GradDiffTrainer
from .npo import NPOConfig, NPOTrainer
from .simnpo import SimNPOConfig, SimNPOTrainer
from .siu import SIUConfig, SIUTrainer

__all__ = [
    "METHODS", "AAMUConfig", "AAMUConfigMixin", "AAMUDeepCUTConfig", "AAMUDeepCUTTrainer", "AAMUGAConfig",
    "AAMUGATrainer",
    "AAMUGradDiffConfig", "AAMUGradDiffTrainer", "AAMUMixin", "AAMUNPOConfig", "AAMUNPOTrainer", "AAMUSimNPOConfig",
    "AAMUSimNPOTrainer", "AAMUTrainer", "AlignmentCalibrationConfig", "AlignmentCalibrationTrainer",
    "DeepCUTConfig", "DeepCUTTrainer", "GAConfig", "GATrainer", "GradDiffConfig", "GradDiffTrainer",
    "NPOConfig", "NPOTrainer", "SimNPOConfig", "SimNPOTrainer", "SIUConfig", "SIUTrainer",
]  # fmt: skip
