"""One matrix runs the same checks on every registered method: a new method adds one row to METHOD_CASES."""

from dataclasses import fields

import pytest
import torch
from conftest import training_args
from siu_fixtures import llava_parts, memorised_llava  # noqa: F401 (fixtures of the multimodal matrix)

import hf_unlearn
from hf_unlearn.evaluation import answer_nll

# (registry name, config overrides); every registered method must appear at least once.
METHOD_CASES = [
    ("ga", {}),
    ("grad_diff", {}),
    ("grad_diff", {"retain_loss": "kl"}),
    ("grad_diff", {"nll_reduction": "token", "retain_sampling": "replacement"}),  # open-unlearning's conventions
    ("npo", {}),
    ("npo", {"precompute_reference": True}),
    ("npo", {"retain_loss": "kl"}),
    ("simnpo", {}),
    ("grad_diff", {"alpha": 0.0}),
    ("npo", {"alpha": 0.0, "precompute_reference": True}),
    ("deepcut", {}),
    ("deepcut", {"group_column": "person", "num_views": 1}),
    # preference-method rows (idk_nll, idk_dpo, altpo)
    # Forget / retain NLL rise at trainer seeds 0/1/2: idk_nll over 30 steps (training toward refusals lowers the forget
    # answers only indirectly: 10 steps gave +0.15) +0.62/0.62/0.90, retain <= 0.04; idk_dpo at batch 2 (20 steps)
    # +0.58/0.50/0.77, retain <= 0.02, and the same with the cached reference and the KL retain term +0.58/0.50/0.77;
    # altpo on the model's own alternates (at most 40 new tokens, the tiny model's 128 positions) at α 5, the top of
    # the AltPO grid: its alternates borrow retain facts, and at α 1 retain rose 0.33 for forget 1.08;
    # here +0.90/0.91/0.94, retain 0.14/0.15/0.15.
    ("idk_nll", {"max_steps": 30}),
    ("idk_dpo", {"per_device_train_batch_size": 2}),
    ("idk_dpo", {"precompute_reference": True, "retain_loss": "kl", "per_device_train_batch_size": 2}),
    ("altpo", {"alternate_max_tokens": 40, "alpha": 5.0}),
    # token-method rows (undial, wga, satimp, ce_u)
    # Trainer seeds 0-2 (HF_UNLEARN_TEST_SEED), forget/retain NLL rise: undial +0.40-0.47/+0.06-0.08 (α 0), with α 1
    # +0.38-0.43/+0.04-0.06; wga +0.53-0.61/<0.02; ce_u +0.68-0.84/+0.21-0.28 (no retain term; with α 1 the retain
    # rise is still 19-29% of the forget rise, so ce_u is not in KEEPS_RETAIN); ignoring no token +0.74-1.10/+0.15-0.18.
    # SatImp's weight p^5·(1 − p) is ~0.003 on answers memorised to p ≈ 0.997, so it starts slowly: 5 epochs move
    # nothing (+0.001), 40 steps (20 epochs) give +0.83-1.14/<0.003 at seeds 0-3 (lr 3e-3, 5 epochs: +0.007 at seed 1).
    ("undial", {}),
    ("undial", {"alpha": 1.0}),
    ("wga", {}),
    ("satimp", {"max_steps": 40}),
    ("ce_u", {}),
    ("ce_u", {"ignore_first_n_answer_tokens": 0}),
    # rmu rows
    # RMU at lr 1e-3 (the matrix's) needs more than 10 steps to move layer ℓ's activations to c·u: ℓ = 0 (layer 1
    # above it stays frozen) over 40 steps raised forget NLL by 1.27-1.45 and retain NLL by 0.007-0.011 at trainer
    # seeds 0-3; every weight up to ℓ = 1 with all tokens counted, 20 steps: forget +2.70-2.96, retain +0.018-0.026.
    ("rmu", {"steering_layer": 0, "steering_coeff": 10.0, "alpha": 10.0, "max_steps": 40,
             "lr_scheduler_type": "constant"}),
    ("rmu", {"steering_layer": 1, "steering_coeff": 20.0, "alpha": 10.0, "trainable_params": "all",
             "token_positions": "all", "max_steps": 20, "lr_scheduler_type": "constant"}),
]
KEEPS_RETAIN = {"grad_diff", "npo", "simnpo", "undial", "wga", "satimp", "rmu", "idk_nll", "idk_dpo", "altpo"}
# Methods that act on representations, not on the answers' likelihood: on a causal LM their answer NLL barely moves
# (DeepCUT: +0.05 at τ = 0.1 on this model), so the matrix checks that the forget rows' representations moved instead.
LATENT_METHODS = {"deepcut"}
# Methods that train only some weights by default (RMU: the MLPs of layers ℓ−2..ℓ): those change, the rest must not.
PARTIAL_METHODS = {"rmu"}


@torch.no_grad()
def latent(model, rows) -> torch.Tensor:
    """Mean-pooled, L2-normalised last hidden states of tokenised rows (what DeepCUT contrasts by default)."""
    from hf_unlearn.data import UnlearningCollator
    from hf_unlearn.losses import pool_hidden_states

    was_training = model.training
    model.eval()
    batch = UnlearningCollator(0).pad([{k: row[k] for k in ("input_ids", "attention_mask")} for row in rows])
    batch = {k: v.to(model.device) for k, v in batch.items()}
    hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
    model.train(was_training)
    return pool_hidden_states(hidden, batch["attention_mask"], "mean")


# (registry name, config overrides) run on a tiny ViT that memorised real digits (image rows: pixel_values, labels).
IMAGE_METHOD_CASES = [
    ("ga", {}),
    # Seed-sensitive: passes at 7 of 8 trainer seeds (fails at 2), `python bench/seed_sweep.py --seeds 0 1 2 3 4 5 6 7
    # --parallel 2 tests/test_methods.py -k "image_classifier and grad_diff"`; α 1, 10 epochs, same stop: 5 of 8.
    # On a later machine (AMD EPYC, AVX-512) the same sweep with -k image_classifier passed it at all 8 seeds.
    ("grad_diff", {"learning_rate": 1e-4, "num_train_epochs": 20, "per_device_train_batch_size": 8, "alpha": 2.0}),
    ("a_amu", {"learning_rate": 2.4e-4, "num_train_epochs": 5, "alpha": 30.0}),
    ("a_amu_grad_diff", {"learning_rate": 2.4e-4, "gamma": 0.05, "alpha": 5.0}),
]
# Methods that take rows never trained on (A-AMU's heldout_dataset): the second half of the test split.
NEEDS_HELDOUT = {"a_amu", "a_amu_grad_diff"}


# (registry name, config overrides) run on a tiny LLaVA that learned to name three concepts from pictures
# (tests/siu_fixtures.py); each unlearns one concept from one image.
MULTIMODAL_METHOD_CASES = [
    # SIU's rows at the learning rates where they reach all their targets (others held included) at each of 8 trainer
    # seeds, `python bench/seed_sweep.py --seeds 0 1 2 3 4 5 6 7 --parallel 1 tests/test_methods.py -k multimodal`:
    # LoRA lr 3e-3 and full lr 1.5e-3 over at most 24 steps. At lr 1e-2 (LoRA) and 3e-3 (full) over 8 or 12 steps
    # the rises swung by a point from step to step and the rows passed at 5 and 6 of 8 seeds.
    ("siu", {"learning_rate": 3e-3, "max_steps": 24}),
    ("siu", {"use_lora": False, "learning_rate": 1.5e-3, "max_steps": 24}),
    ("siu", {"variant": "po"}),
    ("siu", {"variant": "ga", "learning_rate": 3e-3}),
    ("siu", {"variant": "ga_kl", "learning_rate": 3e-3}),
]


# (registry name, config overrides) run on a tiny ResNet contrastive encoder pre-trained with SimCLR on the forget and
# retain digits (conftest's memorised_encoder; unlabelled image rows: pixel_values).
ENCODER_METHOD_CASES = [
    ("ac", {"augmentation": "digits"}),
    ("ac", {"augmentation": "none", "num_views": 2, "beta": 0.0, "retain_per_forget": 2}),
]


def test_every_registered_method_is_in_a_matrix():
    covered = {name for name, _ in METHOD_CASES + IMAGE_METHOD_CASES + MULTIMODAL_METHOD_CASES + ENCODER_METHOD_CASES}
    # A-AMU's other composites: one step of each against its base method in test_a_amu.py
    composites = {name for name in hf_unlearn.METHODS if name.startswith("a_amu_")}
    assert covered >= set(hf_unlearn.METHODS) - {"toy_method"} - composites


CASE_IDS = ["-".join([name, *map(str, overrides.values())]) for name, overrides in METHOD_CASES]


@pytest.mark.parametrize(("name", "overrides"), METHOD_CASES, ids=CASE_IDS)
def test_method(name, overrides, tmp_path, memorised_model, tokenizer, qa_data):
    forget, retain = qa_data
    config_cls, trainer_cls = hf_unlearn.METHODS[name]
    config = config_cls(**training_args(tmp_path, learning_rate=1e-3, num_train_epochs=5, **overrides))

    # the config round-trips through YAML, every field equal
    again = config_cls.from_yaml(config.to_yaml())
    for field in fields(config_cls):
        if field.init and field.name not in {"hub_token", "logging_dir"}:
            assert getattr(again, field.name) == getattr(config, field.name), field.name

    trainer = trainer_cls(
        model=memorised_model, args=config, forget_dataset=forget,
        retain_dataset=retain if config.uses_retain else None, processing_class=tokenizer,
    )  # fmt: skip
    forget_rows = trainer.forget_dataset
    retain_rows = hf_unlearn.data.prepare_dataset(retain, "retain", tokenizer, config.prompt_template, 512)
    forget_before = answer_nll(memorised_model, forget_rows).mean()
    retain_before = answer_nll(memorised_model, retain_rows).mean()
    latent_before = latent(memorised_model, forget_rows)
    start = {k: v.clone() for k, v in memorised_model.named_parameters()}
    trainer.train()

    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logged)
    assert all("loss/forget" in entry for entry in logged)
    assert ("loss/retain" in logged[0]) == config.uses_retain
    changed = [n for n, p in memorised_model.named_parameters() if not torch.equal(p.cpu(), start[n].cpu())]
    trainable = {n for n, p in memorised_model.named_parameters() if p.requires_grad}
    assert set(changed) == (trainable if name in PARTIAL_METHODS else set(start)) and changed

    forget_rise = answer_nll(memorised_model, forget_rows).mean() - forget_before
    retain_rise = answer_nll(memorised_model, retain_rows).mean() - retain_before
    if name in LATENT_METHODS:
        # these reshape the latent space: their forget term falls, the forget rows' representations move away from
        # where they were, and the answers the model keeps are kept
        forget_moved = 1 - (latent(memorised_model, forget_rows) * latent_before).sum(-1).mean()
        assert logged[-1]["loss/forget"] < 0.8 * logged[0]["loss/forget"] and forget_moved > 0.05
        assert retain_rise < 0.1, f"retain NLL rose {retain_rise:.3f}"
        return
    assert forget_rise > 0.3, f"forget NLL rose only {forget_rise:.3f}"
    if name in KEEPS_RETAIN and config.uses_retain:
        assert retain_rise < 0.25 * forget_rise, f"retain NLL rose {retain_rise:.3f} vs forget {forget_rise:.3f}"
    if trainer.needs_reference_model:
        assert trainer.reference_model is not None and not trainer.reference_model.training
    else:
        assert trainer.reference_model is None


IMAGE_CASE_IDS = ["-".join([name, *map(str, overrides.values())]) for name, overrides in IMAGE_METHOD_CASES]


@pytest.mark.parametrize(("name", "overrides"), IMAGE_METHOD_CASES, ids=IMAGE_CASE_IDS)
def test_method_on_image_classifier(name, overrides, tmp_path, memorised_image_classifier, digits_data):
    """Forget accuracy down by 0.2 and (with a retain set) retain accuracy within 0.1, at the first step where both
    hold (`UnlearningEvalCallback`), within the budget."""
    from hf_unlearn.evaluation import evaluate_classifier

    model = memorised_image_classifier
    config_cls, trainer_cls = hf_unlearn.METHODS[name]
    config = config_cls(**training_args(tmp_path, **{"learning_rate": 1e-3, "num_train_epochs": 3, **overrides}))
    forget, retain = digits_data["forget"], digits_data["retain"]
    before = evaluate_classifier(model, forget, retain, digits_data["test"])
    target = {"forget_accuracy": ("<=", before["forget_accuracy"] - 0.2)}
    if config.uses_retain:
        target["retain_accuracy"] = (">=", before["retain_accuracy"] - 0.1)

    def accuracies(model):
        return {k: v for k, v in evaluate_classifier(model, forget, retain, forget).items() if k in target}

    extra = {"heldout_dataset": digits_data["test"][100:]} if name in NEEDS_HELDOUT else {}
    trainer = trainer_cls(
        model=model, args=config, forget_dataset=forget, retain_dataset=retain if config.uses_retain else None,
        callbacks=[hf_unlearn.UnlearningEvalCallback(accuracies, eval_steps=1, stop_when=target)], **extra,
    )  # fmt: skip
    trainer.train()
    after = evaluate_classifier(model, digits_data["forget"], digits_data["retain"], digits_data["test"])
    logged = [entry for entry in trainer.state.log_history if "loss/forget" in entry]
    assert logged and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logged)
    assert before["forget_accuracy"] == 1.0
    assert after["forget_accuracy"] <= before["forget_accuracy"] - 0.2, (before, after)
    if config.uses_retain:
        assert after["retain_accuracy"] >= before["retain_accuracy"] - 0.1, (before, after)


ENCODER_CASE_IDS = ["-".join([name, *map(str, overrides.values())]) for name, overrides in ENCODER_METHOD_CASES]


def alignment_gap(model, pixels: torch.Tensor) -> float:
    """How much more the views of one image align than views of two different images of the set: the mean diagonal
    of the audit's Alignment Matrix minus the mean of the rest (4 "digits" views per image, seeded: the same views
    before and after). What lets an auditor single out examples an encoder trained on."""
    from hf_unlearn.augmentations import image_augmentation
    from hf_unlearn.encoders import image_embeddings
    from hf_unlearn.evaluation.audit import alignment_matrix, embed_views

    views = embed_views(lambda x: image_embeddings(model.eval(), x), pixels, image_augmentation("digits", 8), 4)
    matrix = alignment_matrix(views)
    count = len(matrix)
    return (matrix.diag().mean() - (matrix.sum() - matrix.diag().sum()) / (count * (count - 1))).item()


@pytest.mark.parametrize(("name", "overrides"), ENCODER_METHOD_CASES, ids=ENCODER_CASE_IDS)
def test_method_on_contrastive_encoder(name, overrides, tmp_path, digits_data, memorised_encoder):
    """An encoder method makes the forget images less distinct, more than it does the retain images, and keeps the
    retain images distinct. Alignment Calibration pulls different forget images together (its forget InfoNCE) and,
    with β > 0, the views of one forget image apart (its calibration term), so the forget set's alignment gap falls;
    the retain InfoNCE holds the retain set's. 20 steps, each on all 20 forget images. Measured at trainer seeds 0-11
    (HF_UNLEARN_TEST_SEED), both rows: the forget gap (0.90 before) fell by 0.064-0.17 more than the retain gap (0.85
    before), which kept 81-97% of its size; the same runs without the forget terms (alpha = beta = 0: training on the
    retain images alone, which forgets only passively) gave -0.014-0.040. So a method that leaves the forget images
    alone fails the first check, and one that breaks the encoder for all fails the second."""
    model = memorised_encoder
    forget = [{"pixel_values": row["pixel_values"]} for row in digits_data["forget"]]
    retain = [{"pixel_values": row["pixel_values"]} for row in digits_data["retain"]]
    config_cls, trainer_cls = hf_unlearn.METHODS[name]
    config = config_cls(**training_args(tmp_path, **{"learning_rate": 0.01, "num_train_epochs": 20,
                                                     "per_device_train_batch_size": 20, **overrides}))
    again = config_cls.from_yaml(config.to_yaml())
    assert all(getattr(again, f.name) == getattr(config, f.name) for f in fields(config_cls)
               if f.init and f.name not in {"hub_token", "logging_dir"})  # fmt: skip
    pixels = {split: torch.stack([row["pixel_values"] for row in digits_data[split]]) for split in ("forget", "retain")}
    before = {split: alignment_gap(model, images) for split, images in pixels.items()}
    start = {k: v.clone() for k, v in model.named_parameters()}
    trainer = trainer_cls(model=model, args=config, forget_dataset=forget, retain_dataset=retain)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss/forget" in entry]
    assert logged and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logged)
    assert ("loss/calibration" in logged[0]) == (config.num_views == 3)
    assert all(not torch.equal(p.cpu(), start[n].cpu()) for n, p in model.named_parameters())
    after = {split: alignment_gap(model, images) for split, images in pixels.items()}
    fall = {split: before[split] - after[split] for split in pixels}
    assert fall["forget"] > fall["retain"] + 0.05, (before, after)
    assert after["retain"] > 0.75 * before["retain"], (before, after)


def test_register_method_without_editing_the_package(tmp_path):
    class ToyTrainer(hf_unlearn.GATrainer):
        pass

    hf_unlearn.register_method("toy_method", hf_unlearn.GAConfig, ToyTrainer)
    try:
        assert hf_unlearn.METHODS["toy_method"] == (hf_unlearn.GAConfig, ToyTrainer)
        with pytest.raises(ValueError, match="'toy_method' is already registered"):
            hf_unlearn.register_method("toy_method", hf_unlearn.NPOConfig, ToyTrainer)
        with pytest.raises(TypeError, match="must subclass hf_unlearn.UnlearningTrainer"):
            hf_unlearn.register_method("bad", hf_unlearn.GAConfig, object)
    finally:
        del hf_unlearn.METHODS["toy_method"]


MULTIMODAL_CASE_IDS = ["-".join([name, *map(str, overrides.values())]) for name, overrides in MULTIMODAL_METHOD_CASES]


@pytest.mark.parametrize(("name", "overrides"), MULTIMODAL_METHOD_CASES, ids=MULTIMODAL_CASE_IDS)
def test_method_on_multimodal_model(name, overrides, tmp_path, memorised_llava):  # noqa: F811
    import siu_fixtures as mm

    TARGET, concept_image, recognition = mm.TARGET, mm.concept_image, mm.concept_recognition_rows

    model, processor = memorised_llava
    config_cls, trainer_cls = hf_unlearn.METHODS[name]
    settings = {"learning_rate": 1e-2, "max_steps": 8, "lora_r": 16, "lora_alpha": 32, **overrides}
    config = config_cls(**training_args(tmp_path, **settings))
    again = config_cls.from_yaml(config.to_yaml())
    assert all(getattr(again, f.name) == getattr(config, f.name) for f in fields(config_cls)
               if f.init and f.name not in {"hub_token", "logging_dir"})  # fmt: skip

    # unseen pictures of the concept (generality), the other concepts' pictures, and every text fact
    unseen = [row for seed in (20, 21, 22) for row in recognition(concept_image(TARGET, seed), TARGET, 2)]
    others = [row for n in mm.CONCEPTS if n != TARGET for row in recognition(concept_image(n, 20), n, 2)]
    facts = [row for n in mm.CONCEPTS for row in mm.fact_rows(n)]
    before = {key: mm.mean_answer_nll(model, processor, rows) for key, rows in
              (("unseen", unseen), ("others", others), ("facts", facts))}  # fmt: skip
    # the targets: the concept's name on unseen pictures; the methods with a keep term hold the text facts; and SIU
    # the other concepts' recognition (PO and GA+KL do not: the paper's finding). Training stops at the first step
    # where all of a method's targets hold (within max_steps), as a user stops unlearning at a target.
    target = {"unseen": (">", 1.0)}
    if config.variant != "ga":
        target["facts"] = ("<", 0.5)
    if config.variant == "siu":
        target["others"] = ("<", 0.5)

    def rises(model):
        sets = {"unseen": unseen, "others": others, "facts": facts}
        return {key: mm.mean_answer_nll(model, processor, sets[key]) - before[key] for key in target}

    forget, retain = mm.siu_data(config.variant)
    callback = hf_unlearn.UnlearningEvalCallback(rises, eval_steps=1, stop_when=target)
    trainer = trainer_cls(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                          processing_class=processor, concept_name=TARGET, callbacks=[callback])  # fmt: skip
    start = {k: v.clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logged)
    assert all(("loss/ce" in e and "loss/dmk" in e) if config.variant == "siu" else "loss/forget" in e for e in logged)
    # every trained weight of the language model moves (the vision tower's last layer feeds nothing: layer -2)
    trained = [n for n in start if "language_model" in n]
    after = {n: p.detach().cpu() for n, p in trainer.model.named_parameters()}
    assert trained and all(not torch.equal(after[n], start[n].cpu()) for n in trained)
    assert hf_unlearn.trainer.is_peft_model(trainer.model) == config.use_lora

    model = trainer.model
    after = {key: mm.mean_answer_nll(model, processor, rows) for key, rows in
             (("unseen", unseen), ("others", others), ("facts", facts))}  # fmt: skip
    assert after["unseen"] - before["unseen"] > 1.0, (before, after)
    if "facts" in target:
        assert after["facts"] - before["facts"] < 0.5, (before, after)
    if "others" in target:
        assert after["others"] - before["others"] < 0.5, (before, after)
