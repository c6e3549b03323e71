"""Progress bars: tqdm's and `Trainer`'s, named by the phase they belong to.

By default a bar shows on a terminal only (tqdm's rule); `hf-unlearn run` turns bars on for logs too, and `--quiet`
turns them off (`show_progress`). `phase("evaluate original")` prefixes the bars opened inside it with the phase.
"""

from __future__ import annotations

import contextlib

from tqdm.auto import tqdm
from transformers.trainer_callback import PrinterCallback, ProgressCallback

_SHOW: bool | None = None  # None: on a terminal only; True: also in a log (not a terminal); False: never
_PHASE: list[str] = []


def show_progress(show: bool | None) -> None:
    """Bars on a terminal only (None, the default), everywhere (True: a log file gets one line per update), or never
    (False: also the libraries' own bars, e.g. transformers' shard writing)."""
    global _SHOW
    _SHOW = show
    from transformers.utils import logging

    (logging.disable_progress_bar if show is False else logging.enable_progress_bar)()


def showing() -> bool | None:
    return _SHOW


@contextlib.contextmanager
def phase(name: str):
    """Bars opened inside are named `<name>: <what they count>`."""
    _PHASE.append(name)
    try:
        yield
    finally:
        _PHASE.pop()


def bar(iterable, desc: str, **kwargs):
    """`tqdm(iterable)` named after the current phase, shown as `show_progress` says."""
    name = f"{_PHASE[-1]}: {desc}" if _PHASE else desc
    return tqdm(iterable, desc=name, leave=False, disable=None if _SHOW is None else not _SHOW, **kwargs)


class NamedProgress(ProgressCallback):
    """`Trainer`'s progress bar (steps, rate, time left; logs written above it in Trainer's format), named."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, desc=self.name, unit="step", dynamic_ncols=True)
        self.current_step = 0


def name_progress(trainer, name: str) -> None:
    """Replace a trainer's progress bar by one named `name`; with `show_progress(False)`, no bar and no printed logs
    (Trainer prints them when its bar is off)."""
    if _SHOW is False:
        trainer.pop_callback(PrinterCallback)
    elif trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(NamedProgress(name))
