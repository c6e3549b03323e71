"""`bench/seed_sweep.py`: reading pytest's `-rA` summary and tabulating the tests that fail at some seeds; and the
conftest switch it relies on (`HF_UNLEARN_TEST_SEED` reaches every trainer built through `training_args`)."""

import os
import subprocess
import sys
from pathlib import Path

import seed_sweep

REPORT = """....F.E
=========================== short test summary info ============================
PASSED tests/test_a.py::test_one
PASSED tests/test_a.py::test_two[x-1]
FAILED tests/test_a.py::test_three - AssertionError: assert 0.85 <= 0.8
PASSED tests/test_b.py::test_four
ERROR tests/test_b.py::test_four - RuntimeError: teardown
3 passed, 1 failed, 1 error in 2.00s
"""


def test_parse_outcomes_keeps_the_worse_outcome():
    assert seed_sweep.parse_outcomes(REPORT) == {
        "tests/test_a.py::test_one": "PASSED", "tests/test_a.py::test_two[x-1]": "PASSED",
        "tests/test_a.py::test_three": "FAILED", "tests/test_b.py::test_four": "ERROR",
    }  # fmt: skip


def test_sweep_table_lists_only_tests_that_fail_somewhere():
    results = {
        0: {"t::a": "PASSED", "t::b": "PASSED"},
        1: {"t::a": "PASSED", "t::b": "FAILED"},
        2: {"t::a": "PASSED"},
    }  # fmt: skip  (t::b missing at seed 2: not a pass)
    assert seed_sweep.sweep_table(results) == ["2 tests at seeds 0, 1, 2: 1 pass at every seed, 1 do not.", "",
                                               "| test | seeds passed | failed at seeds |", "|---|---|---|",
                                               "| `t::b` | 1/3 | 1, 2 |"]  # fmt: skip
    assert seed_sweep.sweep_table({0: {"t::a": "PASSED"}}) == ["1 tests at seeds 0: 1 pass at every seed, 0 do not."]


def test_seed_variable_reaches_training_args(tmp_path):
    code = "import conftest; print(conftest.training_args('x')['seed'])"
    tests = Path(__file__).resolve().parent
    path = os.pathsep.join(filter(None, [str(tests), str(tests.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_UNLEARN_TEST_SEED": "7", "PYTHONPATH": path}
    seen = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert seen.stdout.strip() == "7", seen.stderr[-2000:]
