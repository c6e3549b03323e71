"""Seed robustness of the test suite: rerun tests at several trainer seeds (`HF_UNLEARN_TEST_SEED`, which
`tests/conftest.py` reads) and list those that fail at some. Options it does not know go to pytest.

    python bench/seed_sweep.py --seeds 0 1 2 3 --parallel 2 tests/test_methods.py -k image_classifier
    python bench/seed_sweep.py --seeds 0 1 2 3 4 5 6 7 --parallel 4 --workers 4 --output    # the whole suite
"""

import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import common
import torch


def parse_outcomes(report: str) -> dict[str, str]:
    """{test id: PASSED/FAILED/ERROR} from pytest's `-rA` summary (passed, then errored at teardown: ERROR)."""
    found = re.findall(r"^(PASSED|FAILED|ERROR) (tests/.+?)(?: - .*)?$", report, flags=re.M)
    return {test: word for word, test in sorted(found, key=lambda outcome: outcome[0] != "PASSED")}  # passes first


def run_seed(seed: int, options: list[str]) -> dict[str, str]:
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *options]
    result = subprocess.run(command, cwd=common.ROOT, env=os.environ | {"HF_UNLEARN_TEST_SEED": str(seed)},
                            capture_output=True, text=True)  # fmt: skip
    if not (outcomes := parse_outcomes(result.stdout)):
        sys.exit(f"seed {seed}: pytest reported no test outcome (exit {result.returncode}):\n{result.stdout[-2000:]}")
    return outcomes


def sweep_table(results: dict[int, dict[str, str]]) -> list[str]:
    """A summary line, then a table of the tests that did not pass at every seed (a missing outcome is no pass)."""
    seeds, tests = sorted(results), sorted({test for outcomes in results.values() for test in outcomes})
    failed = {t: f for t in tests if (f := [s for s in seeds if results[s].get(t) != "PASSED"])}
    rows = [f"| `{t}` | {len(seeds) - len(f)}/{len(seeds)} | {', '.join(map(str, f))} |" for t, f in failed.items()]
    return [f"{len(tests)} tests at seeds {', '.join(map(str, seeds))}: {len(tests) - len(rows)} pass at every seed, "
            f"{len(rows)} do not.", *(["", "| test | seeds passed | failed at seeds |", "|---|---|---|", *rows]
                                      if rows else [])]  # fmt: skip


def main():
    parser = common.parser(__doc__, "seed-sweep", seed=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--parallel", type=int, default=1, help="Seeds run at once.")
    parser.add_argument("--workers", type=int, default=1, help="pytest-xdist workers per seed (-n).")
    parser.add_argument("targets", nargs="*", default=["tests"], help="What pytest runs (default: tests).")
    args, pytest_options = parser.parse_known_args()  # e.g. `-k image_classifier` goes to pytest as it is
    if args.output and not args.output.endswith(".md"):  # `--output tests/x.py`: a test taken for FILE
        parser.error(f"--output {args.output}: FILE must be a .md file (a bare --output goes after the tests)")
    options = args.targets + pytest_options + (["-n", str(args.workers)] if args.workers > 1 else [])
    start = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        table = sweep_table(dict(zip(args.seeds, pool.map(lambda s: run_seed(s, options), args.seeds), strict=True)))
    device = "GPU" if os.environ.get("HF_UNLEARN_TEST_DEVICE", "cpu") != "cpu" else "CPU"
    common.publish(args, "Seed robustness of the test suite (`bench/seed_sweep.py`)", "\n".join([
        f"Command: `python bench/seed_sweep.py {' '.join(sys.argv[1:])}` ({device}, torch {torch.__version__}, "
        f"{platform.machine()}, {time.perf_counter() - start:.0f} s).", "", *table]))  # fmt: skip


if __name__ == "__main__":
    main()
