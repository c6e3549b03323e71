"""hf_unlearn: machine unlearning as a Hugging Face `Trainer` plugin.

The names below are imported on first use (PEP 562), so `import hf_unlearn` and `hf-unlearn --help` do not load
torch and transformers; `from hf_unlearn import NPOTrainer` works as before."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

# name -> the submodule that defines it. The registry's names come through `methods`, whose import registers every
# built-in method.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["NonFiniteLossError", "UnlearningEvalCallback"], "callbacks"),
    **dict.fromkeys(["UnlearningConfig"], "config"),
    **dict.fromkeys(["ForgetRetainDataset", "UnlearningCollator", "load_tofu"], "data"),
    **dict.fromkeys(["ContrastiveEncoder", "ContrastiveEncoderConfig"], "encoders"),
    **dict.fromkeys([
        "AAMUConfig", "AAMUConfigMixin", "AAMUDeepCUTConfig", "AAMUDeepCUTTrainer", "AAMUGAConfig",
        "AAMUGATrainer", "AAMUGradDiffConfig", "AAMUGradDiffTrainer", "AAMUMixin", "AAMUNPOConfig",
        "AAMUNPOTrainer", "AAMUSimNPOConfig", "AAMUSimNPOTrainer", "AAMUTrainer",
        "AlignmentCalibrationConfig", "AlignmentCalibrationTrainer", "DeepCUTConfig", "DeepCUTTrainer",
        "GAConfig", "GATrainer", "GradDiffConfig", "GradDiffTrainer", "METHODS", "NPOConfig", "NPOTrainer",
        "SIUConfig", "SIUTrainer", "SimNPOConfig", "SimNPOTrainer", "get_method", "register_method",
        "AltPOConfig", "AltPOTrainer", "CEUConfig", "CEUTrainer", "IdkDPOConfig", "IdkDPOTrainer", "IdkNLLConfig",
        "IdkNLLTrainer", "RMUConfig", "RMUTrainer", "SatImpConfig", "SatImpTrainer", "UNDIALConfig", "UNDIALTrainer",
        "WGAConfig", "WGATrainer",
    ], "methods"),
    **dict.fromkeys(["Ready2UnlearnConfig", "Ready2UnlearnTrainer"], "preparation"),
    **dict.fromkeys(["UnlearningTrainer"], "trainer"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule, e.g. hf_unlearn.evaluation
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'hf_unlearn' has no attribute {name!r}")
    if name in ("METHODS", "get_method", "register_method"):
        importlib.import_module(".methods", __name__)  # registers the built-in methods
        module = "registry"
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "METHODS", "AAMUConfig", "AAMUConfigMixin", "AAMUDeepCUTConfig", "AAMUDeepCUTTrainer", "AAMUGAConfig",
    "AAMUGATrainer", "AAMUGradDiffConfig", "AAMUGradDiffTrainer", "AAMUMixin", "AAMUNPOConfig", "AAMUNPOTrainer",
    "AAMUSimNPOConfig", "AAMUSimNPOTrainer", "AAMUTrainer", "AlignmentCalibrationConfig", "AlignmentCalibrationTrainer",
    "ContrastiveEncoder", "ContrastiveEncoderConfig", "DeepCUTConfig", "DeepCUTTrainer", "ForgetRetainDataset",
    "GAConfig", "GATrainer", "GradDiffConfig", "GradDiffTrainer", "NPOConfig", "NPOTrainer", "NonFiniteLossError",
    "SIUConfig", "SIUTrainer", "SimNPOConfig", "SimNPOTrainer", "UnlearningCollator",
    "UnlearningConfig", "UnlearningEvalCallback", "UnlearningTrainer", "get_method", "load_tofu", "register_method",
    "Ready2UnlearnConfig", "Ready2UnlearnTrainer",
    "AltPOConfig", "AltPOTrainer", "CEUConfig", "CEUTrainer", "IdkDPOConfig", "IdkDPOTrainer", "IdkNLLConfig",
    "IdkNLLTrainer", "RMUConfig", "RMUTrainer", "SatImpConfig", "SatImpTrainer", "UNDIALConfig", "UNDIALTrainer",
    "WGAConfig", "WGATrainer",
]  # fmt: skip
