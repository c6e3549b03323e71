"""One file per method; importing this package registers them all in `hf_unlearn.METHODS`."""

from .ac import AlignmentCalibrationConfig, AlignmentCalibrationTrainer
from .deepcut import DeepCUTConfig, DeepCUTTrainer
from .ga import GAConfig, GATrainer
from .grad_diff import GradDiffConfig, GradDiffTrainer
from .npo import NPOConfig, NPOTrainer
from .simnpo import SimNPOConfig, SimNPOTrainer

__all__ = [
    "AlignmentCalibrationConfig", "AlignmentCalibrationTrainer",
    "DeepCUTConfig", "DeepCUTTrainer", "GAConfig", "GATrainer", "GradDiffConfig", "GradDiffTrainer",
    "NPOConfig", "NPOTrainer", "SimNPOConfig", "SimNPOTrainer",
]  # fmt: skip
