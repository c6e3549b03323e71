"""Alignment Calibration: the loss by hand, the three-view partner rule, CLIP rows, refusals, and the card's audit."""

import math

import pytest
import torch
from conftest import training_args

from hf_unlearn import AlignmentCalibrationConfig, AlignmentCalibrationTrainer
from hf_unlearn.encoders import build_tiny_contrastive_encoder
from hf_unlearn.losses import alignment_calibration_loss, clip_info_nce, info_nce
from hf_unlearn.methods.ac import ThreeViewCollator, ThreeViewPairing


def image_rows(digits_data, split, labels=False):
    return [{"pixel_values": r["pixel_values"], **({"labels": r["labels"]} if labels else {})}
            for r in digits_data[split]]  # fmt: skip


def test_alignment_calibration_loss_by_hand():
    """Two retain and two forget examples, α = 0.5, β = 2, |D_f| = 10 of |D| = 100, so β' = 2·10/100 = 0.2.

    denominator = |B_r| + α|B_f| = 2 + 0.5·2 = 3
    retain      = (1 + 2) / 3 = 1
    forget      = 0.5·(3 + 5) / 3 = 4/3
    calibration = 0.2 · mean(0.5, −0.1) = 0.2 · 0.2 = 0.04
    L           = 1 + 4/3 + 0.04 = 2.37333...
    """
    terms = alignment_calibration_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 5.0]), torch.tensor([0.5, -0.1]),
                                       alpha=0.5, beta_prime=2 * 10 / 100)  # fmt: skip
    assert terms["retain"].item() == pytest.approx(1.0)
    assert terms["forget"].item() == pytest.approx(4 / 3)
    assert terms["calibration"].item() == pytest.approx(0.04)
    assert sum(terms.values()).item() == pytest.approx(2.373333, abs=1e-5)
    # α = 0: the forget rows leave the mean entirely (denominator 2)
    terms = alignment_calibration_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 5.0]), torch.tensor([0.5, -0.1]),
                                       alpha=0.0, beta_prime=0.2)  # fmt: skip
    assert terms["retain"].item() == pytest.approx(1.5) and terms["forget"].item() == 0.0


def test_info_nce_by_hand():
    """a_1 = b_1 = (1, 0), a_2 = b_2 = (0, 1), τ = 1. The 4 views' cosines from a_1: a_2 → 0, b_1 → 1, b_2 → 0, so
    ℓ(a_1 → b_1) = −log(e / (e + 2)) = log(1 + 2/e) = 0.551444; by symmetry every direction is the same.
    CLIP with images = texts = those vectors: logits = I, ℓ = −log(e / (e + 1)) = log(1 + 1/e) = 0.313262."""
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert info_nce(a, a.clone(), 1.0).tolist() == pytest.approx([math.log(1 + 2 / math.e)] * 2)
    assert clip_info_nce(a, a.clone(), 1.0).tolist() == pytest.approx([math.log(1 + 1 / math.e)] * 2)
    # scaled embeddings give the same loss (cosines), and τ = 0.5 doubles the logits: log(1 + 2/e²) = 0.239229
    assert info_nce(3 * a, a, 0.5).tolist() == pytest.approx([math.log(1 + 2 / math.e**2)] * 2)


def test_partner_rule_and_views(digits_data):
    forget = [{"pixel_values": r["pixel_values"]} for r in digits_data["forget"][:5]]
    retain = [{"pixel_values": r["pixel_values"]} for r in digits_data["retain"][:12]]
    pairing = ThreeViewPairing(forget, retain, retain_per_forget=2, seed=3)
    for epoch in range(20):
        pairing.set_epoch(epoch)
        partners, draws = pairing.draws(epoch)
        assert (partners != torch.arange(5)).all(), f"a forget anchor is its own partner in epoch {epoch}"
        assert draws.shape == (5, 2)
    again = ThreeViewPairing(forget, retain, retain_per_forget=2, seed=3)
    assert torch.equal(again.draws(7)[0], pairing.draws(7)[0])  # (seed, epoch, rank) alone decide the draw
    # with the identity as augmentation: a retain anchor's partner is the same image, a forget anchor's partner the
    # partner's image, and the third view c is the anchor's own image
    batch = ThreeViewCollator(lambda x: x.clone(), "image")([pairing[i] for i in range(5)])
    assert torch.equal(batch["retain"]["anchor"], batch["retain"]["partner"])
    drawn = torch.stack([retain[i]["pixel_values"] for i in batch["retain_index"]])
    assert torch.equal(batch["retain"]["anchor"], drawn)
    assert torch.equal(batch["forget"]["view"], batch["forget"]["anchor"])
    partner = torch.stack([forget[i]["pixel_values"] for i in batch["forget_partner_index"]])
    assert torch.equal(batch["forget"]["partner"], partner)
    assert not any(torch.equal(batch["forget"]["partner"][i], batch["forget"]["anchor"][i]) for i in range(5))
    # a real recipe draws different views of the same image
    from hf_unlearn.augmentations import image_augmentation

    torch.manual_seed(0)
    batch = ThreeViewCollator(image_augmentation("digits", 8), "image")([pairing[i] for i in range(5)])
    assert not torch.equal(batch["retain"]["anchor"], batch["retain"]["partner"])


def test_beta_prime_and_training_moves_forget_alignment(tmp_path, digits_data):
    forget, retain = image_rows(digits_data, "forget"), image_rows(digits_data, "retain", labels=True)
    model = build_tiny_contrastive_encoder()
    config = AlignmentCalibrationConfig(**training_args(tmp_path, learning_rate=0.05, num_train_epochs=2,
                                                        augmentation="digits", beta=3.0))  # fmt: skip
    trainer = AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain)
    assert trainer.beta_prime == pytest.approx(3.0 * 20 / 120)  # |D| defaults to |D_f| + |D_r|
    start = {k: v.clone() for k, v in model.named_parameters()}
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss/forget" in e]
    assert logged and all({"loss/retain", "loss/calibration"} <= set(e) for e in logged)
    assert all(math.isfinite(e["loss"]) for e in logged)
    assert all(not torch.equal(p.cpu(), start[n].cpu()) for n, p in model.named_parameters())
    config = AlignmentCalibrationConfig(**training_args(tmp_path, dataset_size=1000, beta=3.0))
    trainer = AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain)
    assert trainer.beta_prime == pytest.approx(3.0 * 20 / 1000)


def test_bad_input_is_refused(tmp_path, digits_data):
    forget, retain = image_rows(digits_data, "forget"), image_rows(digits_data, "retain")
    model = build_tiny_contrastive_encoder()
    config = AlignmentCalibrationConfig(**training_args(tmp_path))
    with pytest.raises(ValueError, match="forget_dataset has 1 image.*at least 2 forget images, or set alpha=0"):
        AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=forget[:1], retain_dataset=retain)
    lone = AlignmentCalibrationConfig(**training_args(tmp_path, alpha=0.0))
    AlignmentCalibrationTrainer(model=model, args=lone, forget_dataset=forget[:1], retain_dataset=retain)
    with pytest.raises(ValueError, match=r"1 forget example\(s\) also appear in retain_dataset"):
        AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain + forget[:1])
    with pytest.raises(ValueError, match="Alignment Calibration takes image rows"):
        AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=[{"text": "a"}] * 2, retain_dataset=retain)
    with pytest.raises(ValueError, match="num_views=2 has no second view"):
        AlignmentCalibrationConfig(**training_args(tmp_path, num_views=2))
    with pytest.raises(ValueError, match="augmentation='sepia' is unknown"):
        AlignmentCalibrationConfig(**training_args(tmp_path, augmentation="sepia"))


def test_moco_queue_is_refused(tmp_path, digits_data):
    model = build_tiny_contrastive_encoder()
    model.register_buffer("queue", torch.randn(32, 16))  # MoCo's memory of past keys
    config = AlignmentCalibrationConfig(**training_args(tmp_path))
    with pytest.raises(ValueError, match="memory queue of negatives \\('queue'\\): MoCo-style encoders are not"):
        AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=image_rows(digits_data, "forget"),
                                    retain_dataset=image_rows(digits_data, "retain"))  # fmt: skip


def tiny_clip(seed=0):
    from transformers import CLIPConfig, CLIPModel

    text = {"vocab_size": 40, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "eos_token_id": 2, "pad_token_id": 0}
    vision = {"image_size": 8, "patch_size": 2, "num_channels": 1, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2}  # fmt: skip
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))


def caption_rows(rows):
    # "<bos> digit <n> <eos>": token 3 = "digit", 10 + n = the digit's word, 2 = eos
    return [{"pixel_values": r["pixel_values"], "input_ids": [1, 3, 10 + r["labels"], 2], "attention_mask": [1] * 4}
            for r in rows]  # fmt: skip


def test_clip_rows(tmp_path, digits_data):
    forget, retain = caption_rows(digits_data["forget"][:8]), caption_rows(digits_data["retain"][:24])
    model = tiny_clip()
    config = AlignmentCalibrationConfig(**training_args(tmp_path, learning_rate=0.05, num_train_epochs=2,
                                                        augmentation="none"))  # fmt: skip
    trainer = AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    # forget rows carry their own caption and their partner's (a different forget row's)
    for i, p in enumerate(batch["forget_partner_index"].tolist()):
        assert batch["forget"]["partner_input_ids"][i].tolist() == forget[p]["input_ids"]
        assert batch["forget"]["input_ids"][i].tolist() == forget[int(batch["forget_index"][i])]["input_ids"]
    start = {k: v.clone() for k, v in model.named_parameters()}
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss/forget" in e]
    assert logged and all(math.isfinite(e["loss"]) for e in logged)
    assert sum(not torch.equal(p.cpu(), start[n].cpu()) for n, p in model.named_parameters()) > len(start) // 2
    with pytest.raises(ValueError, match="has no text tower"):
        AlignmentCalibrationTrainer(model=build_tiny_contrastive_encoder(), args=config, forget_dataset=forget,
                                    retain_dataset=retain)  # fmt: skip


def test_card_embeds_the_audit(tmp_path, digits_data):
    from test_audit import planted

    from hf_unlearn.encoders import image_embeddings
    from hf_unlearn.evaluation.audit import audit_encoder
    from hf_unlearn.manifest import read_manifest

    forget, retain = image_rows(digits_data, "forget"), image_rows(digits_data, "retain")
    model = build_tiny_contrastive_encoder()
    config = AlignmentCalibrationConfig(**training_args(tmp_path / "run", num_train_epochs=1, augmentation="digits"))
    trainer = AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain)
    trainer.train()
    pixels = {s: torch.stack([r["pixel_values"] for r in digits_data[s]]) for s in ("forget", "test")}
    # the original: an encoder that memorised the forget images (tests/test_audit.py's planted encoder, on pixels)
    memorised = planted(pixels["forget"].flatten(1), radius=1.0)
    audit = audit_encoder(lambda x: image_embeddings(model.eval(), x), pixels["forget"], pixels["test"][:40],
                          reference_embed_fn=lambda x: memorised(x.flatten(1)),
                          augment=lambda x: x + 0.05 * torch.randn_like(x), num_views=4, num_bootstrap=50)  # fmt: skip
    assert math.isfinite(audit["forgetting_score"])
    trainer.record_audit(audit)
    trainer.save_model()
    card = (tmp_path / "run" / "README.md").read_text()
    assert "![Alignment matrix](plots/alignment_matrix.png)" in card
    assert "![Alignment gap matrix](plots/alignment_gap_matrix.png)" in card
    assert "| forgetting_score |" in card and "| forgetting_score_ci_low |" in card
    assert (tmp_path / "run" / "plots" / "alignment_gap_matrix.png").stat().st_size > 1000
    manifest = read_manifest(tmp_path / "run")
    assert manifest["pipeline_tag"] == "image-feature-extraction"
    assert manifest["requests"][0]["metrics"]["unlearned"]["forgetting_score"] == pytest.approx(
        audit["forgetting_score"])


def test_card_says_why_an_audit_number_is_missing(tmp_path, digits_data):
    from hf_unlearn.encoders import image_embeddings
    from hf_unlearn.evaluation.audit import audit_encoder
    from hf_unlearn.manifest import read_manifest

    forget, retain = image_rows(digits_data, "forget"), image_rows(digits_data, "retain")
    model = build_tiny_contrastive_encoder()
    config = AlignmentCalibrationConfig(**training_args(tmp_path, max_steps=1, augmentation="digits"))
    trainer = AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain)
    trainer.train()
    pixels = {s: torch.stack([r["pixel_values"] for r in digits_data[s]]) for s in ("forget", "test")}
    # no original encoder: the Forgetting Score cannot be computed, and the card must say so, not drop it silently
    audit = audit_encoder(lambda x: image_embeddings(model.eval(), x), pixels["forget"], pixels["test"][:40],
                          augment=lambda x: x + 0.05 * torch.randn_like(x), num_views=2, num_bootstrap=10)  # fmt: skip
    assert audit["forgetting_score"] is None and "forgetting_score" in audit["missing"]
    trainer.record_audit(audit)
    trainer.save_model()
    card = (tmp_path / "README.md").read_text()
    assert "Not computed:" in card
    assert f"- `forgetting_score` of the unlearned model: {audit['missing']['forgetting_score']}." in card
    missing = read_manifest(tmp_path)["requests"][0]["metrics_missing"]
    assert missing["unlearned"]["forgetting_score"] == audit["missing"]["forgetting_score"]


def test_peft_adapter_trains_and_the_base_stays(tmp_path, digits_data):
    """With a LoRA config the trainer wraps the encoder (as every method does); AC then moves only adapter weights."""
    from peft import LoraConfig

    forget, retain = image_rows(digits_data, "forget"), image_rows(digits_data, "retain")
    config = AlignmentCalibrationConfig(**training_args(tmp_path, max_steps=2, augmentation="digits"))
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    trainer = AlignmentCalibrationTrainer(model=build_tiny_contrastive_encoder(), args=config, forget_dataset=forget,
                                          retain_dataset=retain, peft_config=lora)  # fmt: skip
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p.cpu(), before[name].cpu())}
    assert changed and all("lora_" in name for name in changed), sorted(changed)[:5]
    assert any("lora_B" in name for name in changed)


def test_a_callable_augmentation_is_recorded_in_the_manifest(tmp_path, digits_data):
    import kornia.augmentation as K

    from hf_unlearn.manifest import read_manifest

    forget, retain = image_rows(digits_data, "forget"), image_rows(digits_data, "retain")
    views = K.AugmentationSequential(K.RandomHorizontalFlip(p=0.5))
    config = AlignmentCalibrationConfig(**training_args(tmp_path, max_steps=1))
    trainer = AlignmentCalibrationTrainer(model=build_tiny_contrastive_encoder(), args=config, forget_dataset=forget,
                                          retain_dataset=retain, augmentation=views)  # fmt: skip
    trainer.train()
    trainer.save_model()
    settings = read_manifest(tmp_path)["requests"][0]["settings"]
    assert "RandomHorizontalFlip" in settings["augmentation"]
    assert "\n" not in settings["augmentation"]  # one line: it sits in the card's settings table
    assert "RandomHorizontalFlip" in (tmp_path / "README.md").read_text()
