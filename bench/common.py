"""What every benchmark shares: the common flags, logging, a cache of trained models between tries, the choice of a
setting on validation, training through `Trainer`, and writing a table into docs/results.md between its own markers.

A bench is run as `python bench/NAME.py ...` (Python puts `bench/` on the path, so `from common import ...` works).
Output: the table is always printed; `--output` also writes it into docs/results.md, `--output FILE` into FILE, each
between `<!-- SECTION:begin -->` and `<!-- SECTION:end -->`, so re-running one bench replaces only its section.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# OpenMP threads that sleep instead of spinning while they wait: on a CPU shared with another process, spinning threads
# of two processes starve each other (a training step ran ~3x slower here). Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load() -> str:
    """The machine's 1-, 5- and 15-minute load averages, for the record beside a timing."""
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def parser(doc: str | None, section: str, *, seed: int | None = 0, cache: bool = False, device: bool = False,
           threads: bool = False) -> argparse.ArgumentParser:  # fmt: skip
    """An `ArgumentParser` described by the first paragraph of `doc`, with the flags every bench shares: `--output
    [FILE]` and `--section` always; `--seed`, `--cache DIR`, `--device` and `--threads N` when asked for."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--output", nargs="?", const=str(RESULTS), default=None, metavar="FILE",
                   help=f"Also write the table into FILE (bare --output: {RESULTS.relative_to(ROOT)}) between the "
                        "section's markers; without it the table is only printed.")  # fmt: skip
    p.add_argument("--section", default=section, help="The section name (its markers) that --output fills.")
    if seed is not None:
        p.add_argument("--seed", type=int, default=seed, help="Data draw and training seed.")
    if cache:
        p.add_argument("--cache", metavar="DIR", help="Keep trained models (and runs) here so a later try reruns "
                                                      "only what is new.")  # fmt: skip
    if device:
        p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    if threads:
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    return p


def setup(args) -> None:
    """Applies the shared flags that need it: `--threads`, and seeds Python's and torch's generators with `--seed`."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if getattr(args, "seed", None) is not None:
        random.seed(args.seed)
        torch.manual_seed(args.seed)


def write_section(output: str | Path, name: str, heading: str, body: str) -> None:
    """Replaces the text between `name`'s markers in `output`; the first time, appends `## heading` and the markers."""
    output = Path(output)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = output.read_text() if output.exists() else ""
    section = f"{begin}\n{body}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
    else:
        text += f"\n## {heading}\n\n{section}\n"
    output.write_text(text)


def publish(args, heading: str, body: str) -> None:
    """Prints the table; with `--output`, writes it into its section too."""
    print(body, flush=True)
    if args.output:
        write_section(args.output, args.section, heading, body)
        log(f"wrote section {args.section!r} of {args.output}")


class Cache:
    """Trained weights and run records between tries, under `directory` (in memory only when None). `parts` name every
    option that changes a result; they end every file name, so a changed option never reads a stale entry."""

    def __init__(self, directory: str | None, *parts: object):
        self.directory = Path(directory) if directory else None
        self.suffix = re.sub(r"[^A-Za-z0-9.=,_-]+", "_", "-".join(str(p) for p in parts))
        self.memory: dict[str, object] = {}
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path | None:
        key = re.sub(r"[^A-Za-z0-9.=,_-]+", "_", key)
        return self.directory / f"{key}-{self.suffix}.pt" if self.directory else None

    def load(self, key: str):
        path = self.path(key)
        if path is not None and path.exists():
            return torch.load(path, weights_only=False)
        return self.memory.get(key)

    def save(self, key: str, entry) -> None:
        path = self.path(key)
        if path is not None:
            torch.save(entry, path)
        else:
            self.memory[key] = entry

    def get(self, key: str, make: Callable[[], object]):
        """The stored entry for `key`, or `make()`'s, stored."""
        entry = self.load(key)
        if entry is None:
            entry = make()
            self.save(key, entry)
        return entry


def choose(candidates: Iterable, key: Callable, admissible: Callable | None = None) -> tuple:
    """The selection rule's shape: among the `admissible` candidates, the one with the smallest `key`. Returns (the
    chosen candidate, or None when none is admissible; the admissible candidates)."""
    pool = [c for c in candidates if admissible is None or admissible(c)]
    return (min(pool, key=key) if pool else None), pool


def state_of(model: torch.nn.Module) -> dict:
    """A CPU copy of the model's weights, to cache or to restart from."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def trained_once(cache: Cache, name: str, model: torch.nn.Module, train: Callable[[], float]):
    """`model` with the weights `train()` gives it (run and timed once; later runs load them from `cache`), and that
    training's wall time in seconds."""
    stored = cache.get(name, lambda: {"seconds": train(), "state": state_of(model)})
    model.load_state_dict(stored["state"])
    return model, stored["seconds"]


def train(model: torch.nn.Module, rows: list[dict], *, epochs: float, learning_rate: float, batch_size: int, seed: int,
          collator=None, device: str = "cpu", **arguments) -> float:  # fmt: skip
    """Trains `model` on `rows` with a plain `transformers.Trainer` (AdamW; a constant learning rate unless
    `lr_scheduler_type` is given; no checkpoints, logs or bars) and returns the wall time in seconds. Extra keyword
    arguments go to `TrainingArguments`."""
    from transformers import Trainer, TrainingArguments

    options = dict(num_train_epochs=epochs, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
                   seed=seed, data_seed=seed, lr_scheduler_type="constant", weight_decay=0.01, save_strategy="no",
                   logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=device == "cpu",
                   remove_unused_columns=False)  # fmt: skip
    options.update(arguments)
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        Trainer(model=model, args=TrainingArguments(output_dir=output_dir, **options), train_dataset=rows,
                data_collator=collator).train()  # fmt: skip
        return time.perf_counter() - start
