"""`hf-unlearn leaderboard`: runs ranked by forget quality, then utility; runs without forget quality last."""

import csv
import json

import pytest

from hf_unlearn.cli import main


def write_run(root, name, results, summary=None):
    run = root / name
    run.mkdir()
    (run / "eval_results.json").write_text(json.dumps(results))
    if summary:
        (run / "summary.json").write_text(json.dumps(summary))
    return str(run)


def test_ranked_markdown_and_csv(tmp_path, capsys):
    runs = [
        write_run(tmp_path, "npo", {"forget_quality": 0.4, "model_utility": 0.5},
                  {"method": "npo", "unlearn_config": {"beta": 0.1, "report_to": "none"},
                   "wall_time_seconds": {"unlearn": 12.5}, "global_steps": 100}),
        write_run(tmp_path, "ga", {"forget_quality": 0.01, "model_utility": 0.6}),
        write_run(tmp_path, "no_gold", {"model_utility": 0.9}),
        write_run(tmp_path, "grad_diff", {"forget_quality": 0.4, "model_utility": 0.55}),
    ]  # fmt: skip
    assert main(["leaderboard", *runs, "--output", str(tmp_path / "b.md"), "--csv", str(tmp_path / "b.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert [row["run"] for row in rows] == ["grad_diff", "npo", "ga", "no_gold"]
    assert rows[1]["method"] == "npo" and rows[1]["settings"] == "beta=0.1" and rows[1]["wall_time_s"] == "12.5"
    assert rows[3]["forget_quality"] == "n/a"
    markdown = (tmp_path / "b.md").read_text().splitlines()
    assert markdown[0].startswith("| rank | run       | method | settings |")
    assert len({len(line) for line in markdown}) == 1  # every line padded to the same columns
    assert "| 1    | grad_diff |" in capsys.readouterr().out
    assert "verbmem_f" not in rows[0]  # no run has MUSE numbers


def test_muse_runs_get_their_columns(tmp_path):
    runs = [write_run(tmp_path, "muse_npo", {"privleak": -20.0, "verbmem_f": 0.3, "knowmem_f": 0.2, "knowmem_r": 0.4}),
            write_run(tmp_path, "tofu_npo", {"forget_quality": 0.5})]  # fmt: skip
    assert main(["leaderboard", *runs, "--output", str(tmp_path / "b.md"), "--csv", str(tmp_path / "b.csv")]) == 0
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "b.csv").open())}
    assert rows["muse_npo"]["verbmem_f"] == "0.3" and rows["muse_npo"]["knowmem_r"] == "0.4"
    assert rows["tofu_npo"]["verbmem_f"] == "n/a" and rows["muse_npo"]["privleak"] == "-20"


def test_missing_results_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", str(tmp_path / "empty")]) == 2
    assert "eval_results.json does not exist: run `hf-unlearn eval" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["leaderboard"]])
def test_needs_a_run(argv):
    with pytest.raises(SystemExit):
        main(argv)
