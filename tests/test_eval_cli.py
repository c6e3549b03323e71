"""`hf-unlearn eval --suite tofu`: a table and flat JSON; forget quality and PrivLeak only with a gold model."""

import json

import pytest

from hf_unlearn.cli import main
from hf_unlearn.data import load_tofu
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tofu_path):
    root = tmp_path_factory.mktemp("models")
    retain = load_tofu("retain90", tofu_path).select(range(300))
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain], vocab_size=800)
    for name, seed in (("unlearned", 0), ("gold", 1)):
        build_tiny_causal_lm(tokenizer, hidden_size=32, num_layers=1, num_heads=2, seed=seed).save_pretrained(
            root / name
        )
        tokenizer.save_pretrained(root / name)
    return root


def run_eval(model_dirs, tmp_path, *extra, tofu_path):
    output = tmp_path / "eval_results.json"
    argv = ["eval", "--model", str(model_dirs / "unlearned"), "--suite", "tofu", "--forget-split", "forget01",
            "--tofu-path", str(tofu_path), "--limit", "5", "--max-new-tokens", "6", "--output", str(output), *extra]
    assert main(argv) == 0
    return json.loads(output.read_text())


def test_without_gold_the_table_says_why(model_dirs, tofu_path, tmp_path, capsys):
    results = run_eval(model_dirs, tmp_path, tofu_path=tofu_path)
    printed = capsys.readouterr().out
    assert "forget_quality" not in results and "privleak" not in results
    assert "n/a: forget_quality (model): no gold (retain-only) model's forget truth ratios were given" in printed
    for key in ("model_utility", "forget_truth_ratio", "mia_min_k_plus_plus_auc", "extraction_strength"):
        assert 0 <= results[key] <= 1
    settings = results.pop("evaluation")
    assert settings == {"suite": "tofu", "forget_split": "forget01", "limit": 5, "conventions": "leaderboard"}
    assert len(results.pop("forget_truth_ratios")) == 5  # what a later evaluation's --gold-results needs
    assert all(isinstance(value, float) for value in results.values())


def test_with_gold_and_reference(model_dirs, tofu_path, tmp_path, capsys):
    results = run_eval(model_dirs, tmp_path, "--gold-model", str(model_dirs / "gold"),
                       "--reference-model", str(model_dirs / "gold"), tofu_path=tofu_path)  # fmt: skip
    printed = capsys.readouterr().out
    assert 0 <= results["forget_quality"] <= 1 and "privleak" in results and "mia_reference_auc" in results
    header = printed.splitlines()[0]
    assert "model" in header and "gold" in header and "n/a" not in printed


def test_gold_trains_on_the_retain_split_with_the_recipe(model_dirs, tofu_path, tmp_path):
    import yaml
    from transformers import AutoModelForCausalLM

    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"finetune": {"max_steps": 3, "learning_rate": 1e-3,
                                                                    "per_device_train_batch_size": 4}}))  # fmt: skip
    argv = ["gold", "--model", str(model_dirs / "unlearned"), "--retain-split", "retain99", "--tofu-path",
            str(tofu_path), "--config", str(tmp_path / "run.yaml"), "--output-dir", str(tmp_path / "gold")]
    assert main(argv) == 0
    base = AutoModelForCausalLM.from_pretrained(model_dirs / "unlearned")
    gold = AutoModelForCausalLM.from_pretrained(tmp_path / "gold")
    changed = [n for n, p in gold.named_parameters() if not p.equal(base.get_parameter(n))]
    assert changed and (tmp_path / "gold" / "tokenizer.json").is_file()


def test_gold_results_give_the_numbers_of_evaluating_the_gold_again(model_dirs, tofu_path, tmp_path, capsys):
    """A stored gold evaluation (`--gold-results`) gives the same forget quality and PrivLeak as `--gold-model`; one of
    other settings, or both options at once, is refused with the settings that differ."""
    gold_file = tmp_path / "gold.json"
    argv = ["eval", "--model", str(model_dirs / "gold"), "--suite", "tofu", "--forget-split", "forget01",
            "--tofu-path", str(tofu_path), "--limit", "5", "--max-new-tokens", "6", "--output", str(gold_file)]
    assert main(argv) == 0
    again = run_eval(model_dirs, tmp_path, "--gold-model", str(model_dirs / "gold"), tofu_path=tofu_path)
    stored = run_eval(model_dirs, tmp_path, "--gold-results", str(gold_file), tofu_path=tofu_path)
    for key in ("forget_quality", "privleak"):
        assert stored[key] == pytest.approx(again[key], rel=1e-6), key
    base = ["eval", "--model", str(model_dirs / "unlearned"), "--suite", "tofu", "--forget-split", "forget01",
            "--tofu-path", str(tofu_path), "--limit", "5", "--output", str(tmp_path / "refused.json")]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"forget_quality": 1.0}))
    for extra, message in (
        (["--gold-results", str(gold_file), "--conventions", "hf-unlearn"],
         "was evaluated with conventions='leaderboard', this evaluation uses conventions='hf-unlearn'"),
        (["--gold-results", str(gold_file), "--limit", "4"],
         "was evaluated with limit=5, this evaluation uses limit=4"),
        (["--gold-results", str(gold_file), "--gold-model", str(model_dirs / "gold")],
         "--gold-model and --gold-results both give the gold model"),
        (["--gold-results", str(old)], "holds no 'evaluation' settings"),
    ):  # fmt: skip
        capsys.readouterr()
        assert main(base + extra) != 0
        assert message in capsys.readouterr().err
    assert not (tmp_path / "refused.json").exists()


def test_conventions_choices_are_the_metrics_presets():
    from hf_unlearn import cli, pipeline
    from hf_unlearn.evaluation import CONVENTIONS

    assert list(cli.CONVENTIONS) == list(pipeline.CONVENTIONS) == list(CONVENTIONS)


def test_gradnorm_flag_adds_the_attack_on_real_tofu(model_dirs, tofu_path, tmp_path):
    """`--gradnorm` adds GradNorm's AUC (forget01 vs holdout01, first 5 rows each) to the flat JSON, the value
    `evaluate_tofu(gradnorm=True)` gives the same model; without the flag there is none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn.evaluation import evaluate_tofu

    results = run_eval(model_dirs, tmp_path, "--gradnorm", tofu_path=tofu_path)
    path = model_dirs / "unlearned"
    direct = evaluate_tofu(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), "forget01",
                           tofu_path, limit=5, max_new_tokens=6, gradnorm=True)  # fmt: skip
    assert 0 <= results["mia_gradnorm_auc"] <= 1
    assert results["mia_gradnorm_auc"] == pytest.approx(direct["mia_gradnorm_auc"], abs=1e-9)
    assert "mia_gradnorm_auc" not in run_eval(model_dirs, tmp_path, tofu_path=tofu_path)
