"""SIU: the Dual Masked KL by hand, the excluded-token mask after `<image>` expansion, the multifaceted data builder,
the tiny LLaVA's processor, and clear errors."""

import math

import numpy as np
import pytest
import torch
from conftest import training_args
from PIL import Image
from siu_fixtures import TARGET, concept_image, fact_rows, llava_parts, memorised_llava  # noqa: F401 (fixtures)

import hf_unlearn
from hf_unlearn.losses import dual_masked_kl
from hf_unlearn.multimodal import TARGETS, build_siu_dataset, concept_recognition_rows, num_image_tokens

LN2 = math.log(2)


def test_dual_masked_kl_by_hand():
    """One row, 3 positions, 4-word vocabulary; labels [-100, 1, 2]: two answer tokens, predicted from positions 0, 1.

    p_θ is uniform (logits 0): log p_θ = log 1/4 at both positions.
    Position 0: p_0 = [1/2, 1/4, 1/8, 1/8]; terms p_0·(log p_0 − log 1/4) = [½·ln2, 0, −⅛·ln2, −⅛·ln2]
        all words: ¼·ln2;  without word 3 (k_3 = 0): ⅜·ln2.
    Position 1: p_0 = [1/8, 1/8, 1/4, 1/2]; terms [−⅛·ln2, −⅛·ln2, 0, ½·ln2]
        all words: ¼·ln2;  without word 3: −¼·ln2.
    No masks: (¼ + ¼)/2 = ¼·ln2. Vocabulary mask only: (⅜ − ¼)/2 = 1/16·ln2.
    Token mask on label position 2 (the second answer token, predicted from position 1): Z = 1 → ¼·ln2, and with both
    masks ⅜·ln2. Masking label position 1 instead leaves position 1's term: ¼·ln2, and with both −¼·ln2.
    """
    reference = torch.log(torch.tensor([[[4, 2, 1, 1], [1, 1, 2, 4], [1, 1, 1, 1]]], dtype=torch.float) / 8)
    logits = torch.zeros(1, 3, 4)
    labels = torch.tensor([[-100, 1, 2]])
    none = torch.zeros(1, 3, dtype=torch.bool)
    keep = torch.tensor([1.0, 1.0, 1.0, 0.0])
    second, first = torch.tensor([[0, 0, 1]]), torch.tensor([[0, 1, 0]])
    cases = [(none, None, 0.25), (none, keep, 1 / 16), (second, None, 0.25), (second, keep, 0.375),
             (first, None, 0.25), (first, keep, -0.25)]  # fmt: skip
    for token_mask, vocab_keep, expected in cases:
        value = dual_masked_kl(reference, logits, labels, token_mask, vocab_keep)
        assert value.item() == pytest.approx(expected * LN2, abs=1e-6), (token_mask, vocab_keep)
    # every answer token excluded: nothing left, Z clamps to 1 and the loss is 0
    assert dual_masked_kl(reference, logits, labels, torch.ones(1, 3), keep).item() == 0.0


def test_build_siu_dataset_four_targets_and_spans():
    image = concept_image(TARGET, 0)
    facts, others = fact_rows(TARGET), fact_rows("Quimby")
    rows = build_siu_dataset(image, TARGET, facts, others, num_paraphrases=3, seed=1)
    by_target = {t: [r for r in rows if r["target"] == t] for t in TARGETS}
    assert [len(by_target[t]) for t in TARGETS] == [3, 3, 2, 2]
    for row in by_target["unseen_concept"]:  # a made-up identity, its name excluded
        start, end = row["excluded_span"]
        name = row["answer"][start:end]
        assert row["image"] is image and row["answer"] == f"This is {name}." and TARGET not in row["answer"]
        assert len(name.split()) == 2 and name != TARGET
    assert len({r["question"] for r in by_target["unseen_concept"]}) == 3  # paraphrases, not one question
    for row in by_target["visual_description"]:  # "No" + a fictitious description, the whole answer excluded
        assert row["image"] is image and TARGET in row["question"] and row["answer"].startswith("No.")
        assert row["excluded_span"] == [0, len(row["answer"])]
    assert [(r["question"], r["answer"]) for r in by_target["concept_facts"]] == [tuple(f.values()) for f in facts]
    assert [(r["question"], r["answer"]) for r in by_target["other_concepts"]] == [tuple(f.values()) for f in others]
    assert all(r["image"] is None and r["excluded_span"] is None for r in by_target["concept_facts"] + by_target[
        "other_concepts"])  # fmt: skip
    chosen = build_siu_dataset(image, TARGET, [("Q?", "A.")], [], identity="Ann Lee", description="a red door")
    assert chosen[0]["answer"] == "This is Ann Lee." and "a red door" in chosen[-2]["answer"]
    with pytest.raises(ValueError, match="image is None"):
        build_siu_dataset(None, TARGET, facts, others)
    with pytest.raises(ValueError, match=r"concept_facts\[0\] is 'oops'"):
        build_siu_dataset(image, TARGET, ["oops"], others)


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_processor_expands_image_to_patch_count(strategy, llava_parts):  # noqa: F811
    from hf_unlearn.multimodal import build_llava_processor, build_tiny_llava

    tokenizer, _ = llava_parts
    model = build_tiny_llava(tokenizer, image_size=32, patch_size=8, vision_feature_select_strategy=strategy)
    processor = build_llava_processor(model, tokenizer)
    expected = 16 if strategy == "default" else 17  # (32/8)² patches, + CLIP's CLS feature with "full"
    assert num_image_tokens(model) == expected
    images = [Image.fromarray(np.zeros((13, 57), np.uint8)), Image.new("RGBA", (90, 30)), Image.new("P", (8, 8))]
    for image in images:  # any size and mode
        out = processor(images=[image], text=["<image>\nQuestion: Who is this?"], return_tensors="pt")
        assert (out["input_ids"] == model.config.image_token_index).sum().item() == expected
        assert model(**out).logits.shape[1] == out["input_ids"].shape[1]


def test_train_llava_applies_the_learning_rate_schedule(llava_parts):  # noqa: F811
    from hf_unlearn.multimodal import build_llava_processor, build_tiny_llava
    from hf_unlearn.multimodal.tiny import train_llava

    tokenizer, _ = llava_parts
    rows = [{"question": "Who is this?", "answer": "This is Zorblat.", "image": concept_image(TARGET, 0)}]
    moved = {}
    for schedule in ("constant", "linear"):
        model = build_tiny_llava(tokenizer, hidden_size=64)
        before = model.get_output_embeddings().weight.detach().clone()
        # one epoch of one batch = 1 step; warmup_ratio 1 makes that step warmup step 0 of 1, whose learning rate is
        # 0 × lr: the linear schedule must leave the weights as they were, the constant one must move them
        train_llava(model, build_llava_processor(model, tokenizer), rows, epochs=1, lr_scheduler_type=schedule,
                    warmup_ratio=1.0)  # fmt: skip
        moved[schedule] = (model.get_output_embeddings().weight - before).abs().max().item()
    assert moved["constant"] > 1e-4 and moved["linear"] == 0.0


def test_excluded_mask_on_expanded_label_positions(tmp_path, memorised_llava):  # noqa: F811
    """An image row and a text row in one batch: exactly the planted span's answer tokens are marked, after the
    image placeholder became visual tokens; the DMK sees only the other answer tokens (shifted by one)."""
    model, processor = memorised_llava
    tokenizer = processor.tokenizer
    image_row = {"question": "Who is this?", "answer": "This is Ann Lee.", "image": concept_image(TARGET, 3),
                 "excluded_span": [8, 15]}  # fmt: skip
    text_row = {"question": "Where does Quimby live?", "answer": "Quimby lives in Corvale.", "image": None,
                "excluded_span": [16, 23]}  # fmt: skip
    config = hf_unlearn.SIUConfig(**training_args(tmp_path, use_lora=False))
    trainer = hf_unlearn.SIUTrainer(model=model, args=config, forget_dataset=[image_row, text_row],
                                    processing_class=processor, concept_name=TARGET)  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])["forget"]
    assert batch["pixel_values"].shape[0] == 1  # only the image row has pixels
    for row, (start, end) in ((0, (8, 15)), (1, (16, 23))):
        excluded = batch["excluded"][row].bool()
        planted = [image_row, text_row][row]["answer"][start:end]
        assert tokenizer.decode(batch["input_ids"][row][excluded]).strip() == planted
        assert (batch["labels"][row][excluded] == batch["input_ids"][row][excluded]).all()  # answer tokens only
        first = int(excluded.nonzero()[0])
        assert tokenizer.decode(batch["input_ids"][row][:first][batch["labels"][row][:first] != -100]).strip() == (
            ["This is", "Quimby lives in"][row])  # fmt: skip
    image_tokens = (batch["input_ids"][0] == model.config.image_token_index).sum().item()
    assert image_tokens == num_image_tokens(model)
    assert int(batch["excluded"][0].nonzero()[0]) > image_tokens  # positions counted after the expansion

    # The DMK ignores a change in the prediction of an excluded token (made at the position before it) ...
    labels, excluded = batch["labels"], batch["excluded"]
    logits = torch.zeros(2, labels.size(1), 8)
    moved = logits.clone()
    target = excluded[0].nonzero()[-1]  # the last excluded label of the image row
    target = (0, int(target))
    moved[target[0], target[1] - 1, 0] = 5.0
    labels8 = labels.masked_fill(labels != -100, 1)
    assert dual_masked_kl(moved, logits, labels8, excluded).item() == 0.0
    # ... but not a change at the last excluded token's own position, which predicts the next (kept) token
    moved = logits.clone()
    moved[target[0], target[1], 0] = 5.0
    assert dual_masked_kl(moved, logits, labels8, excluded).item() > 0.0


def test_clear_errors(tmp_path, memorised_llava):  # noqa: F811
    model, processor = memorised_llava
    rows = build_siu_dataset(concept_image(TARGET, 0), TARGET, fact_rows(TARGET), fact_rows("Quimby"), 2)
    config = hf_unlearn.SIUConfig(**training_args(tmp_path, use_lora=False))
    with pytest.raises(ValueError, match="needs the model's processor"):
        hf_unlearn.SIUTrainer(model=model, args=config, forget_dataset=rows, concept_name=TARGET)
    with pytest.raises(ValueError, match="has an image but processing_class has no image processor"):
        hf_unlearn.SIUTrainer(model=model, args=config, forget_dataset=rows, processing_class=processor.tokenizer,
                              concept_name=TARGET)  # fmt: skip
    imageless = [{**rows[0], "image": None}, *rows[1:]]
    with pytest.raises(ValueError, match=r"forget_dataset row 0 is an image-target row \('unseen_concept'\) without"):
        hf_unlearn.SIUTrainer(model=model, args=config, forget_dataset=imageless, processing_class=processor,
                              concept_name=TARGET)  # fmt: skip
    with pytest.raises(ValueError, match="needs the concept's name"):
        hf_unlearn.SIUTrainer(model=model, args=config, forget_dataset=rows, processing_class=processor)
    with pytest.raises(ValueError, match="variant='npo' is unknown"):
        hf_unlearn.SIUConfig(**training_args(tmp_path, variant="npo"))
    baseline = hf_unlearn.SIUConfig(**training_args(tmp_path, variant="ga_kl", use_lora=False))
    with pytest.raises(ValueError, match="no retain_dataset was given"):
        hf_unlearn.SIUTrainer(model=model, args=baseline, processing_class=processor,
                              forget_dataset=concept_recognition_rows(concept_image(TARGET, 0), TARGET, 2))


def test_card_and_manifest_do_not_name_the_concept(tmp_path, memorised_llava):  # noqa: F811
    model, processor = memorised_llava
    rows = build_siu_dataset(concept_image(TARGET, 0), TARGET, fact_rows(TARGET), fact_rows("Quimby"), 2)
    config = hf_unlearn.SIUConfig(**training_args(tmp_path, lora_r=4, lora_alpha=8, max_steps=2))
    trainer = hf_unlearn.SIUTrainer(model=model, args=config, forget_dataset=rows, processing_class=processor,
                                    concept_name=TARGET)  # fmt: skip
    trainer.train()
    trainer.save_model()
    for name in ("README.md", "unlearning_manifest.json"):
        text = (tmp_path / name).read_text()
        assert TARGET not in text and "Ashmere" not in text, name
    assert (tmp_path / "adapter_config.json").is_file()  # LoRA by default
