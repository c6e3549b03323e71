"""hf_unlearn: machine unlearning as a Hugging Face `Trainer` plugin."""

__version__ = "0.1.0"

from .callbacks import NonFiniteLossError, UnlearningEvalCallback
from .config import UnlearningConfig
from .data import ForgetRetainDataset, UnlearningCollator, load_tofu
from .encoders import ContrastiveEncoder, ContrastiveEncoderConfig
from .methods import (
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
    SIUConfig,
    SIUTrainer,
)
from .preparation import Ready2UnlearnConfig, Ready2UnlearnTrainer
from .registry import METHODS, get_method, register_method
from .trainer import UnlearningTrainer

__all__ = [
    "METHODS", "AAMUConfig", "AAMUConfigMixin", "AAMUDeepCUTConfig", "AAMUDeepCUTTrainer", "AAMUGAConfig",
    "AAMUGATrainer", "AAMUGradDiffConfig", "AAMUGradDiffTrainer", "AAMUMixin", "AAMUNPOConfig", "AAMUNPOTrainer",
    "AAMUSimNPOConfig", "AAMUSimNPOTrainer", "AAMUTrainer", "AlignmentCalibrationConfig", "AlignmentCalibrationTrainer",
    "ContrastiveEncoder", "ContrastiveEncoderConfig", "DeepCUTConfig", "DeepCUTTrainer", "ForgetRetainDataset",
    "GAConfig", "GATrainer", "GradDiffConfig", "GradDiffTrainer", "NPOConfig", "NPOTrainer", "NonFiniteLossError",
    "SIUConfig", "SIUTrainer", "SimNPOConfig", "SimNPOTrainer", "UnlearningCollator",
    "UnlearningConfig", "UnlearningEvalCallback", "UnlearningTrainer", "get_method", "load_tofu", "register_method",
    "Ready2UnlearnConfig", "Ready2UnlearnTrainer",
]  # fmt: skip
