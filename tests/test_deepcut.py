"""DeepCUT: the contrastive loss by hand, the anchors' positive/negative sets, two dropout views and no third pass,
and unlearning a tiny SST-2 classifier that memorised its training set."""

from __future__ import annotations

import copy
import csv
import math

import pytest
import torch
from conftest import TOFU_PATH, USE_CPU, training_args
from transformers import BertConfig, BertForSequenceClassification

from hf_unlearn import DeepCUTConfig, DeepCUTTrainer
from hf_unlearn.evaluation import evaluate_classifier
from hf_unlearn.losses import contrastive_unlearning_loss, pool_hidden_states
from hf_unlearn.methods.deepcut import ContrastiveCollator, ContrastivePairing
from hf_unlearn.synthetic import train_tokenizer

SST2 = TOFU_PATH.parent / "sst2"


def test_contrastive_loss_worked_by_hand():
    """Anchor a = (1, 0); positive p = (0, 1) (other class), negative n = (1, 0) (a's class); τ = 0.5.
    s(a,p) = 0, s(a,n) = 1: L = −log e^0 / (e^0 + e^2) = log(1 + e^2). With the frozen anchor at s = 0.5 as an extra
    negative: log(1 + e^2 + e^1). A second anchor with no positive is left out of the mean."""
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    positive = torch.tensor([[True, False], [False, False]])
    negative = torch.tensor([[False, True], [True, True]])
    loss = contrastive_unlearning_loss(anchors, candidates, positive, negative, 0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.e**2), abs=1e-6)
    frozen = torch.tensor([0.5, 0.9])
    loss = contrastive_unlearning_loss(anchors, candidates, positive, negative, 0.5, anchor_negatives=frozen)
    assert loss.item() == pytest.approx(math.log(1 + math.e**2 + math.e), abs=1e-6)


def test_pooling_respects_padding():
    hidden = torch.tensor([[[3.0, 0.0], [0.0, 4.0], [9.0, 9.0]]])  # the third token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert pool_hidden_states(hidden, mask, "mean")[0].tolist() == pytest.approx([0.6, 0.8])  # (1.5, 2) normalised
    assert pool_hidden_states(hidden, mask, "cls")[0].tolist() == pytest.approx([1.0, 0.0])
    assert pool_hidden_states(hidden, mask, "last")[0].tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="pooling='max' is unknown"):
        pool_hidden_states(hidden, mask, "max")


def test_every_anchor_gets_a_positive_and_a_negative_in_its_batch():
    """Planted: forget classes [0, 1, 2], retain classes cycling 0..2; the usual draw alone could miss a class."""
    forget = [{"input_ids": [i + 1], "labels": i % 3} for i in range(3)]
    retain = [{"input_ids": [10 + i], "labels": i % 3} for i in range(30)]
    pairing = ContrastivePairing(forget, retain, [0, 1, 2], [i % 3 for i in range(30)], seed=3)
    batch = ContrastiveCollator(0)([pairing[i] for i in range(3)])
    assert batch["retain"]["input_ids"].shape == (9, 1)  # the usual draw + a same-class + an other-class, per anchor
    retain_classes = batch["retain"]["labels"]
    assert torch.equal(retain_classes, torch.tensor([retain[i]["labels"] for i in batch["retain_index"].tolist()]))
    for anchor, cls in enumerate(batch["forget"]["labels"].tolist()):
        mine = retain_classes[3 * anchor : 3 * anchor + 3]
        assert mine[1] == cls and mine[2] != cls
    pairing.set_epoch(0)
    assert pairing.extra_indices(1) == ContrastivePairing(forget, retain, [0, 1, 2], [i % 3 for i in range(30)],
                                                          seed=3).extra_indices(1)  # fmt: skip


def test_needed_extras_only_for_anchors_the_usual_draws_leave_short():
    """Planted: forget classes [0, 0, 1]; retain rows 0-9 of class 0, 10-19 of class 1. With `extras="needed"` a batch
    whose usual draws hold both classes adds no row; one whose draws are all class 0 adds extras only for the class-0
    anchors (they lack an other-class positive) and the class-1 anchor (it lacks a same-class negative): all of them."""
    forget = [{"input_ids": [i + 1], "labels": c} for i, c in enumerate([0, 0, 1])]
    retain = [{"input_ids": [100 + i], "labels": int(i >= 10)} for i in range(20)]
    pairing = ContrastivePairing(forget, retain, [0, 0, 1], [int(i >= 10) for i in range(20)], seed=0)
    items = [pairing[i] for i in range(3)]

    def plant(draws):  # the usual retain draw of each anchor
        for item, drawn in zip(items, draws, strict=True):
            item.update(retain=retain[drawn], retain_index=drawn,
                        contrast_groups=(item["contrast_groups"][0], int(drawn >= 10)))

    plant([3, 12, 5])  # classes 0, 1, 0
    covered = ContrastiveCollator(0, extras="needed")(items)
    assert covered["retain_index"].tolist() == [3, 12, 5]
    assert ContrastiveCollator(0)(items)["retain"]["input_ids"].shape == (9, 1)  # "always": 3 rows per anchor
    plant([3, 4, 5])  # every usual draw of class 0
    short = ContrastiveCollator(0, extras="needed")(items)
    assert short["retain"]["input_ids"].shape == (9, 1)
    classes = short["retain"]["labels"]
    for cls in short["forget"]["labels"].tolist():
        assert (classes == cls).any() and (classes != cls).any()
    mixed = [items[0], items[1]]  # two class-0 anchors, draws of class 0 only: both need an other-class positive
    assert ContrastiveCollator(0, extras="needed")(mixed)["retain"]["input_ids"].shape == (6, 1)
    with pytest.raises(ValueError, match="contrast_extras='some' is unknown"):
        DeepCUTConfig(output_dir="unused", contrast_extras="some")


def sst2(split: str, count: int) -> list[dict]:
    """The first `count` rows of a local SST-2 split, balanced between the two labels."""
    with open(SST2 / f"{split}.tsv", encoding="utf-8") as handle:
        table = csv.DictReader(handle, delimiter="\t")
        rows = [{"text": r["sentence"].strip(), "label": int(r["label"])} for r in table]
    by_label = [[r for r in rows if r["label"] == label and len(r["text"].split()) >= 4] for label in (0, 1)]
    return [row for pair in zip(by_label[0][: count // 2], by_label[1][: count // 2], strict=True) for row in pair]


@pytest.fixture(scope="module")
def sst2_classifier(tmp_path_factory):
    """A tiny BERT classifier trained from scratch until it memorised 200 SST-2 phrases."""
    from transformers import Trainer, TrainingArguments

    from hf_unlearn.data import UnlearningCollator, prepare_dataset

    if not SST2.is_dir():  # the shared data folder is not there (a checkout on its own): nothing to train on
        pytest.skip(f"SST-2 data absent: {SST2} does not exist (its train.tsv and test.tsv, beside the TOFU folder).")
    train, test = sst2("train", 200), sst2("test", 300)
    tokenizer = train_tokenizer([r["text"] for r in train], vocab_size=800)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, num_labels=2,
                        pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    rows = prepare_dataset(train, "train", tokenizer, "", 64)
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("sst2")), num_train_epochs=30, learning_rate=2e-3,
                             per_device_train_batch_size=16, report_to="none", save_strategy="no",
                             disable_tqdm=True, use_cpu=USE_CPU, seed=0, logging_strategy="no")  # fmt: skip
    collator = UnlearningCollator(tokenizer.pad_token_id)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    return model, tokenizer, train, test


def accuracy(model, tokenizer, forget, retain, test) -> dict:
    from hf_unlearn.data import prepare_dataset

    rows = [prepare_dataset(part, "rows", tokenizer, "", 64) for part in (forget, retain, test)]
    return evaluate_classifier(model, *rows, pad_token_id=tokenizer.pad_token_id)


def test_two_dropout_views_and_no_third_pass(sst2_classifier, tmp_path):
    model, tokenizer, train, _ = sst2_classifier
    model = copy.deepcopy(model)
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(module.training))
    args = DeepCUTConfig(**training_args(tmp_path, max_steps=3, gradient_accumulation_steps=2))
    trainer = DeepCUTTrainer(model=model, args=args, forget_dataset=train[:16], retain_dataset=train[16:],
                             processing_class=tokenizer)  # fmt: skip
    assert trainer.reference_model is None  # every class has retain examples: no frozen fallback, no reference
    trainer.train()
    assert calls == [True] * (2 * 3 * 2)  # two views per micro-batch, in train mode, and nothing runs a third time


@pytest.mark.parametrize("detach_retain", [False, True])
def test_detach_retain_stops_the_forget_term_at_the_retain_side(sst2_classifier, tmp_path, detach_retain):
    """`detach_retain`: L_f's retain representations carry no gradient (only the forget anchors move); by default
    both sides do."""
    from unittest.mock import patch

    from hf_unlearn.methods import deepcut

    model, tokenizer, train, _ = sst2_classifier
    seen = []

    def recording(anchors, candidates, *rest):
        seen.append((anchors.requires_grad, candidates.requires_grad))
        return contrastive_unlearning_loss(anchors, candidates, *rest)

    args = DeepCUTConfig(**training_args(tmp_path, max_steps=1, alpha=0.0, detach_retain=detach_retain))
    trainer = DeepCUTTrainer(model=copy.deepcopy(model), args=args, forget_dataset=train[:8],
                             retain_dataset=train[8:24], processing_class=tokenizer)  # fmt: skip
    with patch.object(deepcut, "contrastive_unlearning_loss", recording):
        trainer.train()
    assert seen == [(True, not detach_retain)] * 2  # two views, one step


@pytest.mark.parametrize("contrast_extras", ["always", "needed"])
def test_contrast_extras_sets_the_retain_rows_per_step(sst2_classifier, tmp_path, contrast_extras):
    """'always': 3 retain rows per forget row in every step; 'needed': 1 per forget row in the steps whose usual draws
    hold both SST-2 classes, and every anchor still has a positive and a negative."""
    from unittest.mock import patch

    from hf_unlearn.methods import deepcut

    model, tokenizer, train, _ = sst2_classifier
    seen = []

    def recording(anchors, candidates, positive, negative, *rest):
        seen.append((anchors.size(0), candidates.size(0), bool(positive.any(-1).all() and negative.any(-1).all())))
        return contrastive_unlearning_loss(anchors, candidates, positive, negative, *rest)

    args = DeepCUTConfig(**training_args(tmp_path, max_steps=6, num_views=1, per_device_train_batch_size=8,
                                         contrast_extras=contrast_extras))  # fmt: skip
    trainer = DeepCUTTrainer(model=copy.deepcopy(model), args=args, forget_dataset=train[:16],
                             retain_dataset=train[16:], processing_class=tokenizer)  # fmt: skip
    with patch.object(deepcut, "contrastive_unlearning_loss", recording):
        trainer.train()
    assert len(seen) == 6 and all(has_both for _, _, has_both in seen)
    rows = [candidates // anchors for anchors, candidates, _ in seen]
    assert rows == [3] * 6 if contrast_extras == "always" else (min(rows) == 1 and sum(rows) < 3 * 6)


def test_deepcut_unlearns_a_memorised_classifier(sst2_classifier, tmp_path):
    """Forget 10% of the memorised phrases; stop at the first check where forget accuracy is at the original's test
    accuracy AND retain accuracy is within 2 points of the original's. Stopping on forget accuracy alone passed at 2
    of 8 trainer seeds (the whole-suite sweep in docs/results.md, "Seed robustness of the test suite"): elsewhere it
    stopped a few steps in, with retain accuracy down, which training on restores. This version passed at 8 of 8:
    `python bench/seed_sweep.py --seeds 0 1 2 3 4 5 6 7 --parallel 2
    tests/test_deepcut.py::test_deepcut_unlearns_a_memorised_classifier`."""
    from hf_unlearn import UnlearningEvalCallback
    from hf_unlearn.data import prepare_dataset

    model, tokenizer, train, test = sst2_classifier
    model = copy.deepcopy(model)
    forget, retain = train[::10], [row for i, row in enumerate(train) if i % 10]
    before = accuracy(model, tokenizer, forget, retain, test)
    assert before["forget_accuracy"] == 1.0 and before["retain_accuracy"] >= 0.99 and before["test_accuracy"] < 0.8
    forget_rows, retain_rows = (prepare_dataset(rows, name, tokenizer, "", 64) for rows, name in
                                ((forget, "forget"), (retain, "retain")))  # fmt: skip

    def forget_and_retain_accuracy(model):
        results = evaluate_classifier(model, forget_rows, retain_rows, forget_rows, pad_token_id=tokenizer.pad_token_id)
        return {key: results[key] for key in ("forget_accuracy", "retain_accuracy")}

    target = {"forget_accuracy": ("<=", before["test_accuracy"]),
              "retain_accuracy": (">=", before["retain_accuracy"] - 0.02)}  # fmt: skip
    callback = UnlearningEvalCallback(forget_and_retain_accuracy, eval_steps=1, stop_when=target)
    args = DeepCUTConfig(**training_args(tmp_path, learning_rate=2e-3, num_train_epochs=8,
                                         per_device_train_batch_size=4))  # fmt: skip
    trainer = DeepCUTTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer, callbacks=[callback])  # fmt: skip
    trainer.train()
    after = accuracy(model, tokenizer, forget, retain, test)
    assert callback.chosen_step is not None and trainer.state.global_step == callback.chosen_step
    assert after["forget_accuracy"] <= before["test_accuracy"]  # from 1.0 down to (at most) test accuracy
    assert abs(after["retain_accuracy"] - before["retain_accuracy"]) <= 0.02
    logged = [entry for entry in trainer.state.log_history if "loss/forget" in entry]
    assert logged and all("loss/retain" in entry for entry in logged)


def test_deepcut_errors_say_what_to_do(sst2_classifier, tmp_path):
    model, tokenizer, train, _ = sst2_classifier
    args = DeepCUTConfig(**training_args(tmp_path))
    one_class = [row for row in train if row["label"] == 1]
    with pytest.raises(ValueError, match="Every retain example is of class 1"):
        DeepCUTTrainer(model=model, args=args, forget_dataset=one_class[:2], retain_dataset=one_class[2:10],
                       processing_class=tokenizer)  # fmt: skip
    with pytest.raises(ValueError, match="group_column='author' is not a column"):
        DeepCUTTrainer(model=model, args=DeepCUTConfig(**training_args(tmp_path, group_column="author")),
                       forget_dataset=train[:2], retain_dataset=train[2:10], processing_class=tokenizer)  # fmt: skip
    with pytest.raises(ValueError, match="pooling='max' is unknown"):
        DeepCUTConfig(**training_args(tmp_path, pooling="max"))
    # the retain term is always the CE of the first view: a KL request would be ignored (and load a reference model)
    with pytest.raises(ValueError, match="retain_loss='kl': DeepCUT's retain term is the cross-entropy"):
        DeepCUTConfig(**training_args(tmp_path, retain_loss="kl"))


def test_causal_lm_with_forget_rows_longer_than_retain_rows(make_model, tokenizer, tmp_path):
    """Forget and retain are padded to different lengths; joined for the views, the retain labels must follow."""
    forget = [{"question": "Where does Ada live, and what does she keep?", "answer": "Ada lives by the long grey sea "
               "and keeps seven copper bells.", "person": "Ada"}] * 2  # fmt: skip
    retain = [{"question": f"Who is {name}?", "answer": f"{name} bakes.", "person": name} for name in ("Bo", "Cy")]
    args = DeepCUTConfig(**training_args(tmp_path, max_steps=2, group_column="person"))
    trainer = DeepCUTTrainer(model=make_model(), args=args, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer)  # fmt: skip
    assert trainer.reference_model is not None  # Ada has no retain rows: the frozen-anchor fallback needs θ_0
    trainer.train()
    assert all(math.isfinite(e["loss/retain"]) for e in trainer.state.log_history if "loss/retain" in e)


def test_peft_lm_uses_the_adapter_disabled_base_as_the_frozen_anchor(make_model, tokenizer, qa_data, tmp_path):
    from peft import LoraConfig

    forget, retain = qa_data
    args = DeepCUTConfig(**training_args(tmp_path, max_steps=2, learning_rate=1e-2, group_column="person"))
    lora_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    trainer = DeepCUTTrainer(model=make_model(), args=args, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer, peft_config=lora_config)  # fmt: skip
    assert trainer.reference_model is None  # no second copy: θ_0 is the base with the adapter disabled
    lora = {n: p.clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.model.named_parameters() if n in lora)
    assert [e["loss/forget"] for e in trainer.state.log_history if "loss/forget" in e]


def test_image_rows_are_refused_at_construction(tmp_path):
    """Image rows (pixel_values) have no tokens to contrast: refused with the methods that do take them, not a
    KeyError inside the first step."""
    from hf_unlearn.data import load_digits_rows
    from hf_unlearn.synthetic import build_tiny_image_classifier

    rows = load_digits_rows()[:12]
    with pytest.raises(ValueError, match=r"are images \(pixel_values\): for an image classifier use ga"):
        DeepCUTTrainer(model=build_tiny_image_classifier(), args=DeepCUTConfig(output_dir=str(tmp_path), use_cpu=True),
                       forget_dataset=rows[:4], retain_dataset=rows[4:])  # fmt: skip
