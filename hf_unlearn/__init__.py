"""hf_unlearn: machine unlearning as a Hugging Face `Trainer` plugin."""

__version__ = "0.1.0"

from .callbacks import UnlearningEvalCallback
from .config import UnlearningConfig
from .data import ForgetRetainDataset, UnlearningCollator, load_tofu
from .encoders import ContrastiveEncoder, ContrastiveEncoderConfig
from .methods import (
    AlignmentCalibrationConfig,
    AlignmentCalibrationTrainer,
    DeepCUTConfig,
    DeepCUTTrainer,
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    NPOConfig,
    NPOTrainer,
    SimNPOConfig,
    SimNPOTrainer,
)
from .registry import METHODS, get_method, register_method
from .trainer import NonFiniteLossError, UnlearningTrainer

__all__ = [
    "METHODS", "AlignmentCalibrationConfig", "AlignmentCalibrationTrainer", "ContrastiveEncoder",
    "ContrastiveEncoderConfig", "DeepCUTConfig", "DeepCUTTrainer", "ForgetRetainDataset", "GAConfig", "GATrainer",
    "GradDiffConfig", "GradDiffTrainer",
    "NPOConfig", "NPOTrainer", "NonFiniteLossError", "SimNPOConfig", "SimNPOTrainer", "UnlearningCollator",
    "UnlearningConfig", "UnlearningEvalCallback", "UnlearningTrainer", "get_method", "load_tofu", "register_method",
]  # fmt: skip
