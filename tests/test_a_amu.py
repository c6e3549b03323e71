"""A-AMU: the Gaussianising transform and MMD² by hand, the retain/forget/held-out pairing, the loss terms of A-AMU
alone and of each A-AMU composite (GradDiff, NPO by hand; every composite against its base method), held-out rows
without gradient, errors, and a text classifier."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import training_args

import hf_unlearn
from hf_unlearn import (
    AAMUConfig,
    AAMUConfigMixin,
    AAMUGAConfig,
    AAMUGradDiffConfig,
    AAMUGradDiffTrainer,
    AAMUMixin,
    AAMUNPOConfig,
    AAMUNPOTrainer,
    AAMUTrainer,
    GradDiffTrainer,
    NPOTrainer,
)
from hf_unlearn.losses import gaussianise, mean_nll, mmd2, sequence_logps
from hf_unlearn.methods.a_amu import AAMUCollator, AAMUPairing


def test_gaussianise_worked_by_hand():
    """ℓ = [0, e−1, e²−1] → u = log(1+ℓ) = [0, 1, 2]; k = 2; σ(0) = 0.5, σ(2) = 0.8807971, σ(4) = 0.9820138.
    F_0 = (σ(0) + σ(0) + σ(0))/3 = 0.5 (ReLU(0 − u_j) = 0)          → Φ⁻¹ = 0
    F_1 = (σ(2) + σ(0) + σ(0))/3 = 0.6269324                          → Φ⁻¹ = 0.3237395
    F_2 = (σ(4) + σ(2) + σ(0))/3 = 0.7876036                          → Φ⁻¹ = 0.7981340"""
    losses = torch.tensor([0.0, math.e - 1, math.e**2 - 1], requires_grad=True)
    transformed = gaussianise(losses, k=2.0)
    assert transformed.tolist() == pytest.approx([0.0, 0.3237395, 0.7981340], abs=1e-5)
    transformed.sum().backward()
    assert torch.isfinite(losses.grad).all()
    # a memorised set (all losses alike) maps to 0 everywhere: nothing to tell the examples apart
    assert gaussianise(torch.full((5,), 0.01)).abs().max() < 1e-6


def test_mmd2_is_zero_for_identical_samples_and_grows_with_shift():
    """x = [0], y = [1], σ = 1: K(x,x) = K(y,y) = 1, K(x,y) = e^{−1/2} → 2 − 2e^{−1/2} = 0.7869387.
    x = [0, 1], y = [0, 2]: mean K(x,x) = (1 + e^{−1/2})/2 = 0.8032653, mean K(y,y) = (1 + e^{−2})/2 = 0.5676676,
    mean K(x,y) = (1 + e^{−2} + 2e^{−1/2})/4 = 0.5870992 → 0.8032653 + 0.5676676 − 2·0.5870992 = 0.1967347."""
    assert mmd2(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(0.7869387, abs=1e-6)
    assert mmd2(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 2.0])).item() == pytest.approx(0.1967347, abs=1e-6)
    assert mmd2(torch.tensor([0.0]), torch.tensor([2.0]), sigma=2.0).item() == pytest.approx(0.7869387, abs=1e-6)
    sample = torch.randn(64, generator=torch.Generator().manual_seed(0))
    assert mmd2(sample, sample.clone()).item() == pytest.approx(0.0, abs=1e-6)
    values = [mmd2(sample, sample + shift).item() for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    x = sample.clone().requires_grad_(True)
    mmd2(x, sample).backward()  # identical points: finite gradient (cdist's would be NaN)
    assert torch.isfinite(x.grad).all()


def test_pairing_gives_each_retain_row_forget_rows_and_heldout_rows_of_their_class():
    forget = [{"pixel_values": torch.full((1, 2, 2), float(i)), "labels": i % 3} for i in range(6)]
    retain = [{"pixel_values": torch.full((1, 2, 2), 10.0 + i), "labels": i % 3} for i in range(9)]
    heldout = [{"pixel_values": torch.full((1, 2, 2), 100.0 + i), "labels": i % 3} for i in range(12)]
    pairing = AAMUPairing(forget, retain, heldout, ratio=4, seed=3)
    assert len(pairing) == len(retain)  # one epoch is one pass over the retain set
    items = [pairing[i] for i in range(len(pairing))]
    batch = AAMUCollator(0)(items[:3])
    assert batch["retain"]["pixel_values"].shape == (3, 1, 2, 2)
    assert batch["forget"]["pixel_values"].shape == batch["heldout"]["pixel_values"].shape == (12, 1, 2, 2)
    assert torch.equal(batch["forget"]["labels"], batch["heldout"]["labels"])  # same class, row by row
    # every forget row is drawn equally often in an epoch: 9 retain rows × 4 = 36 draws = 6 × 6
    drawn = torch.tensor([i for item in items for i in item["forget_index"]])
    assert torch.equal(torch.bincount(drawn), torch.full((6,), 6))
    assert [pairing[i]["heldout_index"] for i in range(9)] == [item["heldout_index"] for item in items]
    pairing.set_epoch(1)
    assert [pairing[i]["forget_index"] for i in range(9)] != [item["forget_index"] for item in items]


@pytest.fixture
def image_splits(digits_data):
    heldout = digits_data["test"][100:]
    return digits_data["forget"], digits_data["retain"], heldout


def batch_of(trainer, size: int = 2) -> dict:
    return trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(size)]))


def losses_of(model, part: dict) -> torch.Tensor:
    return mean_nll(*sequence_logps(model(pixel_values=part["pixel_values"]).logits, part["labels"]))


def test_loss_terms_by_hand_alone_and_wrapped_around_grad_diff(memorised_image_classifier, image_splits, tmp_path):
    forget, retain, heldout = image_splits
    model = memorised_image_classifier.eval()  # no dropout in this ViT; eval for identical passes
    args = AAMUConfig(**training_args(tmp_path, alpha=0.5, mmd_weight=3.0))
    trainer = AAMUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                          heldout_dataset=heldout)  # fmt: skip
    batch = batch_of(trainer)
    terms = trainer.compute_unlearning_loss(model, batch)
    retain_ce, forget_ce = losses_of(model, batch["retain"]), losses_of(model, batch["forget"])
    heldout_ce = losses_of(model, batch["heldout"])
    expected_mmd = 3.0 * mmd2(gaussianise(heldout_ce), gaussianise(forget_ce))
    assert set(terms) == {"forget", "retain"}
    assert terms["retain"].item() == pytest.approx(0.5 * retain_ce.mean().item() ** 2, rel=1e-5)
    assert terms["forget"].item() == pytest.approx(expected_mmd.item(), rel=1e-5, abs=1e-7)

    # held-out losses carry no gradient: the MMD's gradient is the one with ℓ_t detached
    model.zero_grad()
    terms["forget"].backward()
    got = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    (3.0 * mmd2(gaussianise(heldout_ce.detach()), gaussianise(losses_of(model, batch["forget"])))).backward()
    want = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert len(got) == len(want) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want, strict=True))

    wrapped_args = AAMUGradDiffConfig(**training_args(tmp_path, gamma=0.2, mmd_weight=3.0))
    wrapped = AAMUGradDiffTrainer(model=model, args=wrapped_args, forget_dataset=forget, retain_dataset=retain,
                                  heldout_dataset=heldout)  # fmt: skip
    assert isinstance(wrapped, GradDiffTrainer) and isinstance(wrapped, AAMUMixin)
    assert type(wrapped).__name__ == "AAMUGradDiffTrainer" and wrapped._name == "A-AMU + GradDiff"
    batch = batch_of(wrapped)
    terms = wrapped.compute_unlearning_loss(model, batch)
    forget_ce = losses_of(model, batch["forget"])
    assert set(terms) == {"forget", "retain", "mmd"}  # GradDiff's own terms, over the 4B forget rows, plus MMD²
    assert terms["forget"].item() == pytest.approx(-0.2 * forget_ce.mean().item(), rel=1e-5)
    assert terms["retain"].item() == pytest.approx(losses_of(model, batch["retain"]).mean().item(), rel=1e-5)
    expected_mmd = 3.0 * mmd2(gaussianise(losses_of(model, batch["heldout"])), gaussianise(forget_ce))
    assert terms["mmd"].item() == pytest.approx(expected_mmd.item(), rel=1e-5, abs=1e-7)


def test_npo_composite_takes_npo_fields_and_adds_the_mmd_term_by_hand(tmp_path, memorised_image_classifier,
                                                                       image_splits):  # fmt: skip
    forget, retain, heldout = image_splits
    model = memorised_image_classifier.eval()
    args = AAMUNPOConfig(**training_args(tmp_path, beta=0.3, gamma=0.5, mmd_weight=3.0))
    assert args.beta == 0.3 and args.precompute_reference is False  # given, and NPOConfig's default
    assert (args.learning_rate, args.num_train_epochs) == (2.4e-4, 1.0)  # A-AMU's defaults, as before
    assert AAMUNPOConfig.from_yaml(args.to_yaml()).to_dict() == args.to_dict()
    trainer = AAMUNPOTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                             heldout_dataset=heldout)  # fmt: skip
    assert isinstance(trainer, NPOTrainer) and trainer.reference_model is not None  # NPO's θ_0 is there
    batch = batch_of(trainer)
    terms = trainer.compute_unlearning_loss(model, batch)
    forget_ce, heldout_ce = losses_of(model, batch["forget"]), losses_of(model, batch["heldout"])
    assert set(terms) == {"forget", "retain", "mmd"}
    # θ = θ_0 at the first step: −(2/β)·log σ(0) = (2/β)·log 2 per forget row, times γ
    assert terms["forget"].item() == pytest.approx(0.5 * (2 / 0.3) * math.log(2), rel=1e-5)
    assert terms["retain"].item() == pytest.approx(losses_of(model, batch["retain"]).mean().item(), rel=1e-5)
    expected_mmd = 3.0 * mmd2(gaussianise(heldout_ce), gaussianise(forget_ce))
    assert terms["mmd"].item() == pytest.approx(expected_mmd.item(), rel=1e-5, abs=1e-7)


# registry name of each composite, its base method and overrides of the base method's own fields
COMPOSITES = [
    ("a_amu_ga", "ga", {}),
    ("a_amu_grad_diff", "grad_diff", {"gamma": 0.2, "retain_loss": "kl"}),
    ("a_amu_npo", "npo", {"beta": 0.3, "precompute_reference": True}),
    ("a_amu_simnpo", "simnpo", {"beta": 2.0, "delta": 0.5}),
    ("a_amu_deepcut", "deepcut", {"temperature": 0.5}),
]


@pytest.mark.parametrize(("name", "base", "overrides"), COMPOSITES, ids=[name for name, _, _ in COMPOSITES])
def test_every_composite_is_its_base_method_plus_the_mmd_term(name, base, overrides, tmp_path, image_splits,
                                                              memorised_image_classifier, make_model, tokenizer,
                                                              qa_data):  # fmt: skip
    """One step's terms: the base method's own, on the same retain and forget rows, plus λ·MMD² by hand; the classes
    are the base method's with A-AMU's mixins in front, and the card names both."""
    config_cls, trainer_cls = hf_unlearn.METHODS[name]
    base_config, base_trainer = hf_unlearn.METHODS[base]
    assert issubclass(config_cls, AAMUConfigMixin) and issubclass(config_cls, base_config)
    assert trainer_cls.__mro__[1:3] == (AAMUMixin, base_trainer) and trainer_cls.config_class is config_cls
    assert trainer_cls._name == f"A-AMU + {base_trainer._name}" and trainer_cls._paper == AAMUTrainer._paper
    assert trainer_cls._tag_names == ["hf-unlearn", "unlearning", "a_amu", base]
    if base == "deepcut":  # DeepCUT contrasts hidden states of token rows: question/answer rows on a causal LM
        model, (forget, retain), extra = make_model().eval(), qa_data, {"processing_class": tokenizer}
        retain, heldout = retain[8:], retain[:8]
    else:
        (forget, retain, heldout), model, extra = image_splits, memorised_image_classifier.eval(), {}
    config = config_cls(**training_args(tmp_path / "a_amu", mmd_weight=3.0, **overrides))
    assert (config.learning_rate, config.num_train_epochs, config.uses_retain) == (2.4e-4, 1.0, True)
    trainer = trainer_cls(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                          heldout_dataset=heldout, **extra)  # fmt: skip
    plain = base_trainer(model=model, args=base_config(**training_args(tmp_path / base, **overrides)),
                         forget_dataset=forget, retain_dataset=retain if config.alpha > 0 else None,
                         **extra)  # fmt: skip
    batch = batch_of(trainer)
    terms = trainer.compute_unlearning_loss(model, batch)
    expected = plain.compute_unlearning_loss(model, {k: v for k, v in batch.items() if not k.startswith("heldout")})
    assert set(terms) == set(expected) | {"mmd"}
    for term, value in expected.items():
        assert terms[term].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7), term
    heldout_losses, forget_losses = (trainer.example_losses(model, batch[part]) for part in ("heldout", "forget"))
    expected_mmd = 3.0 * mmd2(gaussianise(heldout_losses), gaussianise(forget_losses))
    assert terms["mmd"].item() == pytest.approx(expected_mmd.item(), rel=1e-5, abs=1e-7)


def test_errors_say_what_to_do(tmp_path, memorised_image_classifier, image_splits, caplog):
    forget, retain, heldout = image_splits
    model, args = memorised_image_classifier, AAMUConfig(**training_args(tmp_path))
    with pytest.raises(ValueError, match="AAMUTrainer needs heldout_dataset: rows like the forget set's"):
        AAMUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
    with pytest.raises(ValueError, match=r"2 heldout_dataset row\(s\) also appear in forget_dataset"):
        AAMUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                    heldout_dataset=heldout + forget[:2])  # fmt: skip
    with pytest.raises(ValueError, match=r"1 heldout_dataset row\(s\) also appear in retain_dataset"):
        AAMUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                    heldout_dataset=heldout + retain[:1])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.methods.a_amu"):
        AAMUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain, heldout_dataset=heldout,
                    eval_dataset=heldout[:10])  # fmt: skip
    assert "eval_dataset shares rows with heldout_dataset" in caplog.text
    with pytest.raises(ValueError, match=r"AAMUConfig\(base_method='npo'\) is gone: .* use AAMUNPOConfig with "
                                         r"AAMUNPOTrainer \(method 'a_amu_npo'\)"):  # fmt: skip
        AAMUConfig(**training_args(tmp_path, base_method="npo", base_method_args={"beta": 0.3}))
    # a composite runs A-AMU's checks and its base method's
    with pytest.raises(ValueError, match="mmd_weight=-1.0 is negative"):
        AAMUNPOConfig(**training_args(tmp_path, mmd_weight=-1.0))
    with pytest.raises(ValueError, match=r"GAConfig\(alpha=1.0\): gradient ascent has no retain term"):
        AAMUGAConfig(**training_args(tmp_path, alpha=1.0))
    with pytest.raises(ValueError, match="retain_loss='kl': A-AMU's own retain term is the squared CE"):
        AAMUConfig(**training_args(tmp_path, retain_loss="kl"))


def test_text_classifier(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from hf_unlearn.synthetic import train_tokenizer

    words = ["good", "great", "fine", "bad", "awful", "poor"]
    rows = [{"text": f"the {a} film was {b}", "label": int(a in words[3:])} for a in words for b in words]
    forget, retain, heldout = rows[0:36:6], [r for i, r in enumerate(rows) if i % 6 in (1, 2, 3)], rows[4:36:6]
    tokenizer = train_tokenizer([r["text"] for r in rows], vocab_size=60)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    start = {k: v.clone() for k, v in model.named_parameters()}
    args = AAMUConfig(**training_args(tmp_path, learning_rate=1e-3, per_device_train_batch_size=2))
    trainer = AAMUTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                          heldout_dataset=heldout, processing_class=tokenizer)  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["forget"]["input_ids"].shape[0] == batch["heldout"]["input_ids"].shape[0] == 8
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss/forget" in e]
    assert len(logged) == len(retain) // 2 and all(math.isfinite(e["loss"]) for e in logged)
    assert any(not torch.equal(p.cpu(), start[n].cpu()) for n, p in model.named_parameters())
    assert hf_unlearn.METHODS["a_amu"] == (AAMUConfig, AAMUTrainer)
