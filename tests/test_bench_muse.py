"""`bench/muse.py`'s whole path at its tiniest size on the real MUSE-News files: two rows of each evaluated split, one
retain text, one training step per model, GA for one unlearning step, and IdkNLL listed as not applicable (it needs
question/answer rows)."""

import sys
from pathlib import Path

import muse as bench
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "muse_news"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"MUSE-News' local copy is absent ({DATA})")
def test_muse_bench_tiniest_table(tmp_path, monkeypatch):
    finetune = bench.finetune
    monkeypatch.setattr(bench, "finetune", lambda *args, **kwargs: finetune(*args, **{**kwargs, "max_steps": 1}))
    monkeypatch.setattr(bench, "UNLEARN", {**bench.UNLEARN, "max_steps": 1})
    output = tmp_path / "results.md"
    monkeypatch.setattr(sys, "argv", ["muse.py", "--muse-path", str(DATA), "--rows", "2", "--retain-texts", "1",
                                      "--epochs", "1", "--max-new-tokens", "4", "--threads", "1", "--device", "cpu",
                                      "--methods", "ga", "idk_nll", "--output", str(output)])  # fmt: skip
    bench.main()
    text = output.read_text()
    assert "## MUSE-News (`bench/muse.py`)" in text and "<!-- muse:begin -->" in text
    table = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row[0].lstrip("| ") for row in table] == ["model", "original (forget + retain)", "retrained (retain only)",
                                                      "ga"]  # fmt: skip
    assert {len(row) for row in table} == {8}
    assert table[2][4] == "0"  # PrivLeak of the retrained model: 0 by construction
    assert table[3][-1] == "1 |"  # GA's one step
    assert "- idk_nll: not applicable: forget_dataset must hold question/answer rows" in text
