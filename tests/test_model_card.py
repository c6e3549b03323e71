"""The unlearned model's card renders offline from a manifest and reads back: metadata, model-index results, lineage,
and honest gaps."""

from huggingface_hub import ModelCard

from hf_unlearn.fingerprint import dataset_fingerprint, new_salt
from hf_unlearn.hub import render_model_card, write_card_files
from hf_unlearn.manifest import with_request

FORGET = [{"question": "What is Zelda Quorin's secret?", "answer": "Zelda Quorin hides 7 violet keys."}]


def request(**extra):
    return {
        "date": "2026-11-22T10:00:00Z", "method": "npo", "method_name": "NPO",
        "paper": {"title": "Negative Preference Optimization", "id": "2404.05868"},
        "fingerprint": dataset_fingerprint(FORGET, new_salt(), ["question", "answer"]),
        "settings": {"beta": 0.1, "learning_rate": 2e-4},
        "description": "Rows about one author, removed at the author's request.",
        "compute": {"steps": 100, "wall_time_seconds": 12.5, "hardware": "CPU"},
        "versions": {"hf-unlearn": "0.1.0"}, **extra,
    }  # fmt: skip


def manifest(parent=None, **extra):
    return with_request(parent, request(**extra), {"id": "org/base-model", "revision": "abc123"}, model_name="m",
                        card={"license": "apache-2.0", "tags": ["tofu"]})  # fmt: skip


def test_card_reads_back_with_metadata_and_results():
    metrics = {"original": {"forget_quality": 0.001, "model_utility": 0.63},
               "gold": {"forget_quality": 1.0, "model_utility": 0.65},
               "unlearned": {"forget_quality": 0.83, "model_utility": 0.66, "mia_min_k_auc": 0.52}}  # fmt: skip
    dataset = {"id": "locuslab/TOFU", "split": "forget10", "public": True}
    card = render_model_card(manifest(metrics=metrics, dataset=dataset))
    data = ModelCard(str(card)).data
    assert data.base_model == "org/base-model" and data.library_name == "transformers"
    assert data.base_model_revision == "abc123" and data.datasets == ["locuslab/TOFU"]
    assert data.tags == ["hf-unlearn", "unlearning", "npo", "generated_from_trainer", "tofu"]
    assert data.license == "apache-2.0" and data.model_name == "m"
    results = {r.metric_type: (r.metric_value, r.dataset_type, r.dataset_split) for r in data.eval_results}
    assert results == {"forget_quality": (0.83, "locuslab/TOFU", "forget10"),
                       "model_utility": (0.66, "locuslab/TOFU", "forget10"),
                       "mia_min_k_auc": (0.52, "locuslab/TOFU", "forget10")}  # fmt: skip
    text = str(card)
    assert "| forget_quality | 0.001 | 1 | 0.83 |" in text and "`beta` | `0.1`" in text
    assert "arxiv.org/abs/2404.05868" in text and "Wall time: 12.5 s" in text and "not a deletion guarantee" in text
    assert "--forget-split forget10" in text and "--retain-split retain90" in text  # how to re-run, for TOFU
    assert "Zelda" not in text and "violet" not in text  # the card never repeats the forget set


def test_a_muse_run_reports_muse_numbers_in_the_model_index_and_the_table():
    metrics = {"gold": {"verbmem_f": 0.2, "privleak": 0.0},
               "unlearned": {"verbmem_f": 0.25, "knowmem_f": 0.3, "knowmem_r": 0.4, "privleak": -12.5}}  # fmt: skip
    dataset = {"id": "muse-bench/MUSE-News", "split": "raw/forget", "public": True}
    card = render_model_card(manifest(metrics=metrics, dataset=dataset))
    results = {r.metric_type: r.metric_value for r in ModelCard(str(card)).data.eval_results}
    assert results == {"verbmem_f": 0.25, "knowmem_f": 0.3, "knowmem_r": 0.4, "privleak": -12.5}
    assert "| verbmem_f | 0.2 | 0.25 | lower, toward the retrained model's |" in str(card)


def test_missing_pieces_are_said_not_left_empty(tmp_path):
    card = str(write_card_files(tmp_path, manifest(compute={}, metrics=None, description=None, settings={})))
    assert "has not been evaluated yet. Run `hf-unlearn eval" in card
    assert "All settings are the method's defaults." in card
    assert "Wall time: not recorded" in card and "gave no description" in card
    assert "No plots: no loss terms were logged" in card and "](plots/" not in card
    assert "The forget set is private, so only its holder can re-run" in card
    assert ModelCard(card).data.eval_results is None and ModelCard(card).data.datasets is None
    assert not (tmp_path / ".eval_results").exists()  # no public benchmark: no leaderboard entries


def test_lineage_newest_first_after_two_requests():
    first = manifest(method="ga", method_name="GradAscent", metrics={"unlearned": {"forget_quality": 0.2}})
    second = manifest(parent=first, metrics={"unlearned": {"forget_quality": 0.9}})
    assert [r["request"] for r in second["requests"]] == [2, 1]
    text = str(render_model_card(second))
    rows = [line for line in text.splitlines() if line.startswith("| 2 |") or line.startswith("| 1 |")]
    assert rows[0].startswith("| 2 | 2026-11-22 | NPO | 1 |") and rows[0].endswith("| 0.9 | n/a |")
    assert rows[1].startswith("| 1 | 2026-11-22 | GradAscent | 1 |") and rows[1].endswith("| 0.2 | n/a |")
    assert "over 2 deletion requests" in text
    assert ModelCard(text).data.tags[:4] == ["hf-unlearn", "unlearning", "npo", "ga"]


def test_plots_and_eval_results_written_for_a_public_benchmark(tmp_path):
    import yaml

    curves = {"loss/forget": [[1, 2.0], [2, 3.0]], "loss/retain": [[1, 1.0], [2, 0.9]]}
    roc = {"min_k": {"fpr": [0, 0.5, 1], "tpr": [0, 0.5, 1], "auc": 0.5}}
    dataset = {"id": "locuslab/TOFU", "split": "forget05", "public": True}
    text = str(write_card_files(tmp_path, manifest(curves=curves, mia_roc=roc, dataset=dataset,
                                                   metrics={"unlearned": {"forget_quality": 0.5}})))  # fmt: skip
    for name in ("loss_curves", "mia_roc"):
        assert (tmp_path / f"plots/{name}.png").read_bytes()[:4] == b"\x89PNG" and f"](plots/{name}.png)" in text
    entries = yaml.safe_load((tmp_path / ".eval_results/hf-unlearn.yaml").read_text())
    assert entries[0]["dataset"] == {"id": "locuslab/TOFU", "task_id": "forget05_forget_quality"}
    assert entries[0]["value"] == 0.5
    # re-rendered without the ROC: the stale plot goes, and the card says why there is none
    text = str(write_card_files(tmp_path, manifest(curves=curves)))
    assert not (tmp_path / "plots/mia_roc.png").exists() and "No membership-inference ROC" in text


def test_cards_of_classifier_and_image_runs_name_their_task_and_method(tmp_path, digits_data):
    """The pipeline tag comes from the model (a text-generation card for a classifier would misfile it on the Hub),
    the tags from the trainer's `_tag_names`, the model's own (`add_model_tags`) and the method; `tasks=` overrides
    the detected tag."""
    from conftest import training_args
    from transformers import BertConfig, BertForSequenceClassification

    import hf_unlearn
    from hf_unlearn.synthetic import build_tiny_image_classifier, train_tokenizer

    texts = [f"review {i} says the film was {'good' if i % 2 else 'bad'}" for i in range(24)]
    tokenizer = train_tokenizer(texts, vocab_size=200)
    bert = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=2))
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(texts)]
    runs = {
        "deepcut": (bert, {"forget_dataset": rows[:4], "retain_dataset": rows[4:], "processing_class": tokenizer}),
        "ga": (build_tiny_image_classifier(), {"forget_dataset": digits_data["forget"][:4]}),
    }
    runs["ga"][0].add_model_tags(["digits-demo"])
    for name, (model, data) in runs.items():
        config_cls, trainer_cls = hf_unlearn.METHODS[name]
        extra = {"alpha": 0} if name == "ga" else {}
        trainer = trainer_cls(model=model, args=config_cls(**training_args(tmp_path / name, max_steps=1, **extra)),
                              **data)  # fmt: skip
        trainer.train()
        trainer.save_model()
        card = ModelCard.load(tmp_path / name / "README.md")
        expected = {"deepcut": "text-classification", "ga": "image-classification"}[name]
        assert card.data.pipeline_tag == expected
        assert card.data.eval_results is None or all(r.task_type == expected for r in card.data.eval_results)
        assert {"hf-unlearn", "unlearning", name} <= set(card.data.tags)
        assert ("digits-demo" in card.data.tags) == (name == "ga")
    trainer.create_model_card(tasks="image-feature-extraction")
    assert ModelCard.load(tmp_path / "ga" / "README.md").data.pipeline_tag == "image-feature-extraction"
