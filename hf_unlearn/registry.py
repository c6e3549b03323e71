"""The open registry of unlearning methods: name -> (config class, trainer class)."""

from __future__ import annotations


class MethodRegistry(dict):
    """A dict of `name -> (ConfigClass, TrainerClass)` whose missing-key error lists the known names."""

    def __missing__(self, name):
        raise KeyError(f"Unknown unlearning method {name!r}: use one of {sorted(self)}, or add yours with "
                       "hf_unlearn.register_method(name, config_cls, trainer_cls).")


METHODS: MethodRegistry = MethodRegistry()


def register_method(name: str, config_cls: type, trainer_cls: type, overwrite: bool = False) -> None:
    """Make a method selectable by name (`METHODS[name]`, `hf-unlearn run` configs) without editing the package; the
    name is recorded on the trainer class (`_method_name`), which its manifest and card report."""
    from .config import UnlearningConfig  # here, not at the top: the trainer module does not import the registry
    from .trainer import UnlearningTrainer

    if not isinstance(name, str) or not name:
        raise ValueError(f"Method name {name!r} is not a non-empty string.")
    if not (isinstance(config_cls, type) and issubclass(config_cls, UnlearningConfig)):
        raise TypeError(f"config_cls {config_cls!r} for {name!r} must subclass hf_unlearn.UnlearningConfig.")
    if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, UnlearningTrainer)):
        raise TypeError(f"trainer_cls {trainer_cls!r} for {name!r} must subclass hf_unlearn.UnlearningTrainer.")
    if name in METHODS and not overwrite and METHODS[name] != (config_cls, trainer_cls):
        raise ValueError(f"Method {name!r} is already registered: pick another name or pass overwrite=True.")
    METHODS[name] = (config_cls, trainer_cls)
    trainer_cls._method_name = name


def get_method(name: str) -> tuple[type, type]:
    """`(ConfigClass, TrainerClass)` of a registered method; a `KeyError` naming the known methods otherwise."""
    return METHODS[name]
