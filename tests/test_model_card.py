"""The unlearned model's card renders offline and reads back: metadata, model-index results, and honest gaps."""

from huggingface_hub import ModelCard

from hf_unlearn.fingerprint import dataset_fingerprint, new_salt
from hf_unlearn.hub import render_model_card

FORGET = [{"question": "What is Zelda Quorin's secret?", "answer": "Zelda Quorin hides 7 violet keys."}]


def manifest(**extra):
    return {
        "method": "npo", "method_name": "NPO", "base_model": "org/base-model",
        "paper": {"title": "Negative Preference Optimization", "id": "2404.05868", "bibtex": "@article{npo}"},
        "fingerprint": dataset_fingerprint(FORGET, new_salt()), "settings": {"beta": 0.1, "learning_rate": 2e-4},
        "description": "Rows about one author, removed at the author's request.",
        "compute": {"steps": 100, "wall_time_seconds": 12.5, "hardware": "CPU"},
        "versions": {"hf-unlearn": "0.1.0"}, **extra,
    }  # fmt: skip


def test_card_reads_back_with_metadata_and_results():
    metrics = {"original": {"forget_quality": 0.001, "model_utility": 0.63},
               "gold": {"forget_quality": 1.0, "model_utility": 0.65},
               "unlearned": {"forget_quality": 0.83, "model_utility": 0.66, "mia_min_k_auc": 0.52}}  # fmt: skip
    card = render_model_card(manifest(metrics=metrics), license="apache-2.0", tags=["tofu"])
    data = ModelCard(str(card)).data
    assert data.base_model == "org/base-model" and data.library_name == "transformers"
    assert data.tags == ["hf-unlearn", "unlearning", "npo", "generated_from_trainer", "tofu"]
    assert data.license == "apache-2.0"
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {"forget_quality": 0.83, "model_utility": 0.66, "mia_min_k_auc": 0.52}
    text = str(card)
    assert "| forget_quality | 0.001 | 1 | 0.83 |" in text and "`beta` | `0.1`" in text
    assert "arxiv.org/abs/2404.05868" in text and "Wall time: 12.5 s" in text and "not a deletion guarantee" in text
    assert "Zelda" not in text and "violet" not in text  # the card never repeats the forget set


def test_missing_pieces_are_said_not_left_empty():
    card = str(render_model_card(manifest(compute={}, metrics=None, description=None, settings={})))
    assert "has not been evaluated yet. Run `hf-unlearn eval" in card
    assert "All settings are the method's defaults." in card
    assert "Wall time: not recorded" in card and "gave no description" in card
    assert ModelCard(card).data.eval_results is None
