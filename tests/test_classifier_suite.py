"""The classifier suite: the membership score and accuracy/macro-F1 on hand-worked logits, the logistic-regression
attack on planted scores, the batched pass over text and image rows, and end to end a tiny BERT that memorised random
labels (train accuracy 1, test at chance, forget rows exposed to the attack)."""

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

from hf_unlearn.data import UnlearningCollator
from hf_unlearn.evaluation.classifier import (
    accuracy_and_macro_f1,
    classifier_mia_auc,
    classifier_outputs,
    evaluate_classifier,
    membership_score,
)

VOCAB, CLASSES = 64, 4


def random_rows(n: int, generator: torch.Generator) -> list[dict]:
    """Rows of 6–12 random tokens with a random label: nothing to generalise, only to memorise."""
    rows = []
    for _ in range(n):
        length = int(torch.randint(6, 13, (1,), generator=generator))
        ids = torch.randint(1, VOCAB, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": int(torch.randint(0, CLASSES, (1,), generator=generator))})
    return rows


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=CLASSES, max_position_embeddings=32,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def memorised():
    """A tiny BERT trained full-batch on 64 random rows until it has memorised their random labels."""
    generator = torch.Generator().manual_seed(0)
    train, unseen = random_rows(64, generator), random_rows(64, generator)
    model = tiny_bert()
    batch = UnlearningCollator(0).pad([dict(row, attention_mask=[1] * len(row["input_ids"])) for row in train])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        loss = model(**batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model, train, unseen


# --- membership score -------------------------------------------------------------------------------------------


def test_membership_score_matches_the_hand_worked_example():
    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [100.0, 0.0, 0.0], [0.0, 0.0, 100.0]])
    labels = torch.tensor([0, 2, 0, 0])
    scores = membership_score(logits, labels)
    assert scores[0].item() == pytest.approx(0.68674, abs=1e-5)  # 2 − log(e + 1)
    assert scores[1].item() == pytest.approx(-2.31326, abs=1e-5)  # 0 − log(e² + e)
    assert scores[2].item() == pytest.approx(100 - math.log(2), abs=1e-4)  # p_y ≈ 1: finite, not inf
    assert scores[3].item() == pytest.approx(-100.0, abs=1e-4)  # 0 − log(e¹⁰⁰ + 1)
    assert torch.isfinite(scores).all()
    p = torch.softmax(logits[:2].double(), -1)
    naive = torch.log(p[[0, 1], [0, 2]]) - torch.log(1 - p[[0, 1], [0, 2]])
    assert torch.allclose(scores[:2].double(), naive, atol=1e-5)


def test_membership_score_rejects_bad_labels():
    with pytest.raises(ValueError, match="class indices"):
        membership_score(torch.zeros(2, 3), torch.tensor([0, -100]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        membership_score(torch.zeros(2, 1), torch.tensor([0, 0]))


# --- accuracy and macro-F1 ---------------------------------------------------------------------------------------


def one_hot_logits(predictions, classes):
    return torch.nn.functional.one_hot(torch.tensor(predictions), classes).float() * 5


def test_accuracy_and_macro_f1_on_planted_predictions():
    # labels 0 0 1 1 2 2, predictions 0 0 1 2 2 0:
    # class 0: tp 2 fp 1 fn 0 → F1 0.8; class 1: tp 1 fn 1 → 2/3; class 2: tp 1 fp 1 fn 1 → 0.5.
    result = accuracy_and_macro_f1(one_hot_logits([0, 0, 1, 2, 2, 0], 3), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)
    # A class that is predicted but never true scores 0 (zero_division=0); class 2, in neither, is left out.
    result = accuracy_and_macro_f1(one_hot_logits([0, 0, 0, 3], 4), torch.tensor([0, 0, 1, 1]))
    assert result == pytest.approx({"accuracy": 0.5, "macro_f1": 0.8 / 3})


# --- logistic-regression attack ----------------------------------------------------------------------------------


def test_attack_auc_is_one_when_forget_scores_stand_apart():
    rng = np.random.default_rng(0)
    assert classifier_mia_auc(rng.normal(10, 1, 50), rng.normal(0, 1, 80)) == pytest.approx(1.0)


def test_attack_auc_is_chance_when_both_sides_come_from_one_distribution():
    rng = np.random.default_rng(0)
    draws = rng.normal(0, 1, 400)
    auc = classifier_mia_auc(draws[:200], draws[200:], seed=0)
    assert abs(auc - 0.5) < 0.1
    assert classifier_mia_auc(draws[:200], draws[200:], seed=0) == auc  # seeded folds: reproducible


@pytest.mark.parametrize("seed", range(5))
def test_attack_works_with_few_examples_and_torch_tensors(seed):
    """3 forget against 2 held-out scores: 2 folds. Each fold's attacker is fitted on forget scores above held-out ones,
    and its decision point (p = 0.5) falls in the gap between 1 and 5, so out of fold every forget score (5, 6, 7) gets
    p > 0.5 and every held-out one (0, 1) p < 0.5 (0.56-0.81 against 0.23-0.39 over these seeds): separable scores
    give an AUC of exactly 1, whatever the folds' shuffle. Scores that are all alike carry nothing: every probability
    is the class-balanced 0.5, and the AUC (ties count half) is exactly 0.5."""
    auc = classifier_mia_auc(torch.tensor([5.0, 6.0, 7.0]), torch.tensor([0.0, 1.0]), seed=seed)
    assert auc == 1.0
    assert classifier_mia_auc(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 1.0]), seed=seed) == 0.5


@pytest.mark.parametrize(
    ("forget", "heldout", "match"),
    [([], [0.0, 1.0], "forget_scores has 0"), ([1.0, 2.0], [0.5], "heldout_scores has 1"),
     ([1.0, float("nan")], [0.0, 1.0], "NaN")],
)  # fmt: skip
def test_attack_rejects_empty_or_too_small_sides(forget, heldout, match):
    with pytest.raises(ValueError, match=match):
        classifier_mia_auc(forget, heldout)


# --- the batched pass --------------------------------------------------------------------------------------------


def test_classifier_outputs_pads_batches_drops_extra_columns_and_restores_the_mode():
    generator = torch.Generator().manual_seed(1)
    rows = random_rows(10, generator)
    model = tiny_bert()
    model.train()
    batched = classifier_outputs(model, rows, batch_size=4)
    assert model.training
    assert batched["logits"].shape == (10, CLASSES) and batched["logits"].dtype == torch.float32
    assert batched["labels"].tolist() == [row["labels"] for row in rows]
    # One row at a time (no padding) gives the same logits: padding is masked out, dropout is off.
    alone = classifier_outputs(model, rows, batch_size=1)
    assert torch.allclose(batched["logits"], alone["logits"], atol=1e-5)
    # Explicit masks and token type ids, a Hub-style `label` column and a raw text column give the same result.
    hub_rows = [{"text": "raw", "input_ids": r["input_ids"], "attention_mask": [1] * len(r["input_ids"]),
                 "token_type_ids": [0] * len(r["input_ids"]), "label": r["labels"]} for r in rows]  # fmt: skip
    hub = classifier_outputs(model.eval(), hub_rows, batch_size=3)
    assert not model.training
    assert torch.allclose(hub["logits"], batched["logits"], atol=1e-5) and torch.equal(hub["labels"], batched["labels"])


def test_classifier_outputs_on_image_rows():
    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=3)  # fmt: skip
    model = ViTForImageClassification(config)
    rows = [{"pixel_values": torch.randn(3, 8, 8), "labels": i % 3} for i in range(5)]
    outputs = classifier_outputs(model, rows, batch_size=2)
    assert outputs["logits"].shape == (5, 3) and outputs["labels"].tolist() == [0, 1, 2, 0, 1]
    with torch.no_grad():
        expected = model.eval()(pixel_values=torch.stack([row["pixel_values"] for row in rows])).logits
    assert torch.allclose(outputs["logits"], expected, atol=1e-5)


def test_classifier_outputs_errors():
    model = tiny_bert()
    with pytest.raises(ValueError, match="no rows"):
        classifier_outputs(model, [])
    with pytest.raises(ValueError, match="no class label"):
        classifier_outputs(model, [{"input_ids": [1, 2]}])
    with pytest.raises(ValueError, match="one int class label"):
        classifier_outputs(model, [{"input_ids": [1, 2], "labels": [-100, 2]}])
    with pytest.raises(ValueError, match="No column of the rows is an input"):
        classifier_outputs(model, [{"text": "not tokenised", "labels": 0}])


# --- end to end --------------------------------------------------------------------------------------------------


def test_evaluate_classifier_on_a_model_that_memorised_random_labels(memorised):
    model, train, unseen = memorised
    forget, retain = train[:24], train[24:]
    results = evaluate_classifier(model, forget, retain, unseen)
    assert set(results) == {"forget_accuracy", "forget_macro_f1", "retain_accuracy", "retain_macro_f1",
                            "test_accuracy", "test_macro_f1", "mia_auc"}  # fmt: skip
    assert results["forget_accuracy"] >= 0.95 and results["retain_accuracy"] >= 0.95
    assert results["forget_macro_f1"] >= 0.9 and results["retain_macro_f1"] >= 0.9
    assert results["test_accuracy"] <= 0.45  # random labels: chance is 0.25
    assert results["mia_auc"] >= 0.85
    # An explicit heldout split is used for the attack instead of test; test numbers stay the same.
    explicit = evaluate_classifier(model, forget, retain, unseen, heldout=unseen[:32])
    assert explicit["test_accuracy"] == results["test_accuracy"] and explicit["mia_auc"] >= 0.85
    # Retain rows are also members: against them the attack is near chance.
    assert evaluate_classifier(model, forget, retain, retain)["mia_auc"] < 0.75


@pytest.mark.parametrize("empty", ["forget", "retain", "test", "heldout"])
def test_evaluate_classifier_rejects_an_empty_split(memorised, empty):
    model, train, unseen = memorised
    splits = {"forget": train[:8], "retain": train[8:], "test": unseen, "heldout": unseen}
    splits[empty] = []
    with pytest.raises(ValueError, match=f"The {empty} split is empty"):
        evaluate_classifier(model, **splits)


def test_cli_classifier_suite(tmp_path, capsys):
    """`hf-unlearn eval --suite classifier` on a tiny saved BERT classifier and JSONL splits: the 7 keys, a table."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from hf_unlearn.cli import main

    words = [f"w{i}" for i in range(30)]
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    for split, offset in (("forget", 0), ("retain", 4), ("test", 8)):
        lines = [json.dumps({"text": f"w{(i + offset) % 30} w{i % 7}", "label": i % 3}) for i in range(6)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["eval", "--suite", "classifier", "--model", str(tmp_path / "model"), "--output", str(tmp_path / "r.json")]
    argv += [arg for split in ("forget", "retain", "test") for arg in (f"--{split}", str(tmp_path / f"{split}.jsonl"))]
    assert main(argv) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results) == {"forget_accuracy", "forget_macro_f1", "retain_accuracy", "retain_macro_f1",
                            "test_accuracy", "test_macro_f1", "mia_auc"}  # fmt: skip
    assert "forget_accuracy" in capsys.readouterr().out
    assert main(["eval", "--suite", "classifier", "--model", str(tmp_path / "model")]) == 2
