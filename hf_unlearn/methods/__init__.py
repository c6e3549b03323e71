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
from .altpo import AltPOConfig, AltPOTrainer
from .ce_u import CEUConfig, CEUTrainer
from .deepcut import DeepCUTConfig, DeepCUTTrainer
from .ga import GAConfig, GATrainer
from .grad_diff import GradDiffConfig, GradDiffTrainer
from .idk_dpo import IdkDPOConfig, IdkDPOTrainer
from .idk_nll import IdkNLLConfig, IdkNLLTrainer
from .npo import NPOConfig, NPOTrainer
from .rmu import RMUConfig, RMUTrainer
from .satimp import SatImpConfig, SatImpTrainer
from .simnpo import SimNPOConfig, SimNPOTrainer
from .siu import SIUConfig, SIUTrainer
from .undial import UNDIALConfig, UNDIALTrainer
from .wga import WGAConfig, WGATrainer

__all__ = [
    "METHODS", "AAMUConfig", "AAMUConfigMixin", "AAMUDeepCUTConfig", "AAMUDeepCUTTrainer", "AAMUGAConfig",
    "AAMUGATrainer", "AAMUGradDiffConfig", "AAMUGradDiffTrainer", "AAMUMixin", "AAMUNPOConfig", "AAMUNPOTrainer",
    "AAMUSimNPOConfig", "AAMUSimNPOTrainer", "AAMUTrainer", "AlignmentCalibrationConfig", "AlignmentCalibrationTrainer",
    "AltPOConfig", "AltPOTrainer", "CEUConfig", "CEUTrainer", "DeepCUTConfig", "DeepCUTTrainer", "GAConfig",
    "GATrainer", "GradDiffConfig", "GradDiffTrainer", "IdkDPOConfig", "IdkDPOTrainer", "IdkNLLConfig", "IdkNLLTrainer",
    "NPOConfig", "NPOTrainer", "RMUConfig", "RMUTrainer", "SatImpConfig", "SatImpTrainer", "SimNPOConfig",
    "SimNPOTrainer", "SIUConfig", "SIUTrainer", "UNDIALConfig", "UNDIALTrainer", "WGAConfig", "WGATrainer",
]  # fmt: skip
