"""Seed robustness of the test suite: rerun tests at several trainer seeds and print which pass at which seeds.

CI runs every test at seed 0. `tests/conftest.py` reads `HF_UNLEARN_TEST_SEED` (the seed of every trainer the tests
build through `training_args`: data order, dropout, pairing draws), so one command reruns the suite at another seed.
A test that passes at some seeds and fails at others makes a claim that rests on the draw: this script finds them.

    python bench/seed_sweep.py --seeds 0 1 2 3 --parallel 2 tests/test_methods.py -k image_classifier
    python bench/seed_sweep.py --seeds 0 1 2 3 4 5 6 7 --parallel 4 --workers 4 --write    # the whole suite

`--workers N` hands `-n N` to pytest (pytest-xdist, when installed); `--parallel P` runs P seeds at once. With
`--write` the table goes to docs/results.md between `<!-- seed-sweep:begin -->` and `<!-- seed-sweep:end -->`.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from results_doc import write_section  # bench/results_doc.py

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("PASSED", "FAILED", "ERROR")


def parse_outcomes(report: str) -> dict[str, str]:
    """{test id: PASSED/FAILED/ERROR} from the short summary pytest prints with `-rA`."""
    outcomes = {}
    for line in report.splitlines():
        word, _, rest = line.partition(" ")
        if word in OUTCOMES and rest.startswith("tests/"):
            test = rest.split(" - ", 1)[0].strip()
            previous = outcomes.get(test)  # a test can pass and then error at teardown: the worse outcome stays
            outcomes[test] = word if previous in (None, "PASSED") else previous
    return outcomes


def run_seed(seed: int, targets: list[str], workers: int) -> dict[str, str]:
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *targets]
    if workers > 1:
        command[3:3] = ["-n", str(workers)]
    env = {**os.environ, "HF_UNLEARN_TEST_SEED": str(seed)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    outcomes = parse_outcomes(result.stdout)
    if not outcomes:
        sys.exit(f"seed {seed}: pytest reported no test outcome (exit {result.returncode}):\n{result.stdout[-2000:]}")
    return outcomes


def sweep_table(results: dict[int, dict[str, str]]) -> tuple[list[str], list[str]]:
    """(summary lines, markdown rows): each test that did not pass at every seed, with the seeds it failed at."""
    seeds = sorted(results)
    tests = sorted({test for outcomes in results.values() for test in outcomes})
    fragile = []
    for test in tests:
        failed = [s for s in seeds if results[s].get(test, "missing") != "PASSED"]
        if failed:
            fragile.append(f"| `{test}` | {len(seeds) - len(failed)}/{len(seeds)} | {', '.join(map(str, failed))} |")
    summary = [f"{len(tests)} tests at seeds {', '.join(map(str, seeds))}: {len(tests) - len(fragile)} pass at every "
               f"seed, {len(fragile)} do not."]  # fmt: skip
    return summary, fragile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--parallel", type=int, default=1, help="Seeds run at once.")
    parser.add_argument("--workers", type=int, default=1, help="pytest-xdist workers per seed (-n).")
    parser.add_argument("--write", action="store_true", help="Write the table to docs/results.md.")
    parser.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("targets", nargs="*", default=["tests"], help="What pytest runs (default: tests).")
    args, pytest_options = parser.parse_known_args()  # e.g. `-k image_classifier` goes to pytest as it is
    args.targets += pytest_options

    start = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = {seed: pool.submit(run_seed, seed, args.targets, args.workers) for seed in args.seeds}
        results = {seed: run.result() for seed, run in runs.items()}
    summary, fragile = sweep_table(results)
    device = "GPU" if os.environ.get("HF_UNLEARN_TEST_DEVICE", "cpu") != "cpu" else "CPU"
    lines = [f"Command: `python bench/seed_sweep.py {' '.join(sys.argv[1:])}` ({device}, torch {torch.__version__}, "
             f"{platform.machine()}, {time.perf_counter() - start:.0f} s).", "", *summary]  # fmt: skip
    if fragile:
        lines += ["", "| test | seeds passed | failed at seeds |", "|---|---|---|", *fragile]
    block = "\n".join(lines)
    print(block)
    if args.write:
        write_section(args.output, "seed-sweep", "Seed robustness of the test suite (`bench/seed_sweep.py`)", block)


if __name__ == "__main__":
    main()
