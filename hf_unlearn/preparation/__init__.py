"""Work done before unlearning: preparing a model at training time so that later unlearning is fast and sticky."""

from .ready2unlearn import Ready2UnlearnConfig, Ready2UnlearnTrainer

__all__ = ["Ready2UnlearnConfig", "Ready2UnlearnTrainer"]
