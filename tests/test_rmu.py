"""RMU (Li et al. 2024, arXiv 2403.03218): the activation distance by hand and against open-unlearning's formula, the
steering vector, bad settings refused, which weights train, the forward that stops at layer ℓ, θ_0 without a second
model (swapped weights; the adapter-disabled base under PEFT), gradient accumulation and checkpointing, the card."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import training_args

from hf_unlearn.losses import activation_distance
from hf_unlearn.methods.rmu import RMUConfig, RMUTrainer, steering_vector


def make_trainer(model, tokenizer, qa_data, tmp_path, peft_config=None, **overrides):
    forget, retain = qa_data
    settings = {"steering_layer": 1, "steering_coeff": 20.0, "alpha": 10.0, "max_steps": 2, "learning_rate": 1e-2,
                **overrides}
    config = RMUConfig(**training_args(tmp_path, **settings))
    return RMUTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain if config.uses_retain
                      else None, processing_class=tokenizer, peft_config=peft_config)  # fmt: skip


def batch_of(trainer, rows: str = "forget", count: int = 4) -> dict:
    dataset = trainer.forget_dataset if rows == "forget" else trainer.retain_dataset
    batch = trainer._pad([dataset[i] for i in range(count)])
    return {k: v.to(trainer.model.device) for k, v in batch.items() if torch.is_tensor(v)}


@torch.no_grad()
def layer_output(model, batch: dict, index: int) -> torch.Tensor:
    """Decoder layer `index`'s output, by a hook (`output_hidden_states`' last entry is after the final norm)."""
    captured = []
    handle = model.model.layers[index].register_forward_hook(lambda module, args, output: captured.append(output))
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    return captured[0]


def test_activation_distance_worked_by_hand():
    """Row 1: h = (1, 2), (3, 4), (9, 9) with the third token not counted, target (1, 0): per token ||h − t||²/d =
    (0 + 4)/2 = 2 and (4 + 16)/2 = 10, so the row's mean is 6. Row 2: target = its own activations but for one token
    off by (2, 0) of two counted: (4/2 + 0)/2 = 1. A row with no counted token gives 0."""
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    assert activation_distance(hidden, torch.tensor([1.0, 0.0]), mask).tolist() == pytest.approx([6.0])
    target = hidden.clone()
    target[0, 0, 0] += 2.0
    assert activation_distance(hidden, target, mask).tolist() == pytest.approx([1.0])
    assert activation_distance(hidden, target, torch.zeros(1, 3, dtype=torch.bool)).tolist() == [0.0]
    assert activation_distance(hidden.double(), target.double(), mask).dtype == torch.float64


def test_activation_distance_matches_open_unlearning_formula():
    """open-unlearning's RMU (src/trainer/unlearn/rmu.py, `compute_activation_loss`), mask = labels != -100:

        squared = (a1 − a2)² elementwise [B, T, d]
        per_row = Σ_t mask_t · mean_d squared / Σ_t mask_t;   loss = mean over rows

    written here as plain loops on a planted input; ours (`activation_distance(...).mean()`) must give the same."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=generator)
    target = torch.randn(3, 5, 4, generator=generator)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.bool)
    rows = []
    for b in range(3):
        total = sum(((hidden[b, t] - target[b, t]) ** 2).mean() for t in range(5) if mask[b, t])
        rows.append(total / mask[b].sum())
    expected = torch.stack(rows).mean()
    assert activation_distance(hidden, target, mask).mean().item() == pytest.approx(expected.item(), rel=1e-6)


def test_steering_vector_has_norm_c_and_comes_from_the_seed():
    vector = steering_vector(64, 6.5, seed=3)
    assert vector.norm().item() == pytest.approx(6.5, rel=1e-6)
    assert (vector >= 0).all()  # entries drawn from [0, 1) before normalising, as in the paper
    assert torch.equal(vector, steering_vector(64, 6.5, seed=3))
    assert not torch.equal(vector, steering_vector(64, 6.5, seed=4))


@pytest.mark.parametrize(("settings", "message"), [
    ({"steering_coeff": 0.0}, r"steering_coeff=0.0 is out of range: use c > 0, .*default 6.5"),
    ({"steering_coeff": float("nan")}, r"steering_coeff"),
    ({"steering_layer": -1}, r"steering_layer=-1 is negative: .*default 7"),
    ({"steering_layer": 2, "update_layers": [1, 3]}, r"update_layers=\[1, 3\] is out of range: .*0..steering_layer=2"),
    ({"update_layers": []}, r"update_layers=\[\] is out of range"),
    ({"trainable_params": "mlp("}, r"trainable_params='mlp\(' is neither one of \['mlp', 'layers', 'all'\]"),
    ({"token_positions": "prompt"}, r"token_positions='prompt' is unknown: use one of \['answer', 'all'\]"),
    ({"retain_loss": "kl"}, r"retain_loss='kl': RMU's retain term matches θ_0's layer-ℓ activations"),
])  # fmt: skip
def test_bad_settings_are_refused(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        RMUConfig(**training_args(tmp_path, **settings))


def test_defaults_are_the_papers():
    config = RMUConfig(output_dir="unused")
    assert (config.steering_coeff, config.alpha, config.steering_layer) == (6.5, 1200.0, 7)
    assert config.layers_to_update == [5, 6, 7] and config.trainable_params == "mlp"
    assert RMUTrainer.zero3_problem is None


def test_layer_beyond_the_model_is_refused(tmp_path, memorised_model, tokenizer, qa_data):
    with pytest.raises(ValueError, match=r"steering_layer=7 .*out of range for LlamaForCausalLM's 2 decoder layers: "
                                         r"use layer indices 0..1"):  # fmt: skip
        make_trainer(memorised_model, tokenizer, qa_data, tmp_path, steering_layer=7)


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, r"model\.layers\.[01]\.mlp\..*"),  # ℓ = 1: layers ℓ−1, ℓ (ℓ−2 does not exist)
    ({"steering_layer": 0}, r"model\.layers\.0\.mlp\..*"),
    ({"update_layers": [1], "trainable_params": "layers"}, r"model\.layers\.1\..*"),
    ({"trainable_params": "all"}, r"model\.(embed_tokens|layers\.[01]\.).*"),  # not the final norm: above ℓ
    ({"trainable_params": r".*\.down_proj\.weight"}, r".*\.down_proj\.weight"),
])  # fmt: skip
def test_only_the_chosen_weights_train(tmp_path, make_model, tokenizer, qa_data, settings, expected):
    import re

    trainer = make_trainer(make_model(), tokenizer, qa_data, tmp_path, **settings)
    names = [n for n, _ in trainer.model.named_parameters()]
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in names if re.fullmatch(expected, n)} and trainable


def test_stopping_at_layer_l_gives_the_full_forwards_activations_and_gradients(tmp_path, make_model, tokenizer,
                                                                              qa_data):  # fmt: skip
    """The pass that ends at layer ℓ (its own process, no engine) returns `output_hidden_states[ℓ + 1]` of the full
    forward, and the same gradient; layers above ℓ never run."""
    trainer = make_trainer(make_model(), tokenizer, qa_data, tmp_path, steering_layer=0)
    model, batch = trainer.model, batch_of(trainer)
    assert trainer._can_stop_early(model)
    ran = []
    handle = trainer._layers[1].register_forward_hook(lambda *_: ran.append(1))
    stopped = trainer.layer_activations(model, batch)
    handle.remove()
    assert not ran
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    assert torch.equal(stopped, full.hidden_states[1])

    def gradients(stop: bool):
        model.zero_grad()
        trainer._can_stop_early = lambda _: stop
        loss = sum(trainer.compute_unlearning_loss(model, {"forget": batch, "retain": batch_of(trainer, "retain")})
                   .values())  # fmt: skip
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    early, whole = gradients(True), gradients(False)
    assert all(torch.allclose(early[n], whole[n], atol=1e-6) for n in early)


def test_reference_is_theta_0_without_a_second_model(tmp_path, make_model, tokenizer, qa_data):
    """Without PEFT, θ_0's activations come from the frozen trainable weights swapped in for the pass: equal to a copy
    of the model before training, while the trained model's differ, and the live weights are left as they were."""
    model = make_model()
    original = copy.deepcopy(model).eval()
    trainer = make_trainer(model, tokenizer, qa_data, tmp_path, max_steps=5)
    assert trainer.reference_model is None and not trainer.needs_reference_model
    trainer.train()
    batch = batch_of(trainer, "retain")
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    reference = trainer.reference_activations(model, batch)
    assert model.training and all(torch.equal(p, live[n]) for n, p in model.named_parameters())
    expected = layer_output(original.to(model.device), batch, 1)
    trained = layer_output(model, batch, 1)
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not torch.allclose(trained, expected, atol=1e-3)


def test_peft_trains_the_adapter_against_the_adapter_disabled_base(tmp_path, make_model, tokenizer, qa_data):
    peft = pytest.importorskip("peft")
    model = make_model()
    original = copy.deepcopy(model).eval()
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"])
    trainer = make_trainer(model, tokenizer, qa_data, tmp_path, max_steps=10, learning_rate=1e-2, peft_config=lora)
    assert trainer.reference_model is None and trainer._frozen is None  # no second copy of the weights
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, start[n])}
    assert changed == trainable
    logged = [entry for entry in trainer.state.log_history if "loss/forget" in entry]
    assert logged[-1]["loss/forget"] < logged[0]["loss/forget"]
    batch = batch_of(trainer, "retain")
    reference = trainer.reference_activations(trainer.model, batch)
    expected = layer_output(original.to(trainer.model.device), batch, 1)
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not torch.allclose(trainer.layer_activations(trainer.model, batch), expected, atol=1e-3)


def test_gradient_accumulation_matches_the_large_batch(tmp_path, make_model, tokenizer, qa_data):
    """2 micro-batches of 2 with accumulation 2 give the same SGD step as one batch of 4 (per-row means, then a mean
    over rows: the accumulated mean of two halves is the whole batch's mean)."""
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = make_model()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        make_trainer(model, tokenizer, qa_data, tmp_path / f"ga{accumulation}", max_steps=1, optim="sgd",
                     per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                     learning_rate=0.05, max_grad_norm=0, lr_scheduler_type="constant").train()  # fmt: skip
        results.append((before, {n: p.detach().clone() for n, p in model.named_parameters()}))
    (before, large), (_, accumulated) = results
    assert max((large[n] - before[n]).abs().max() for n in before) > 1e-4  # the step did move the weights
    assert all(torch.allclose(accumulated[n], large[n], atol=1e-6, rtol=0) for n in before)


def test_gradient_checkpointing_gives_the_same_step(tmp_path, make_model, tokenizer, qa_data):
    """The layer-ℓ hook sees the checkpointed layer's output with its gradient (transformers checkpoints `forward`,
    inside the module's hooks), so checkpointing changes nothing but memory."""
    weights = []
    for checkpointing in (False, True):
        model = make_model()
        make_trainer(model, tokenizer, qa_data, tmp_path / str(checkpointing), max_steps=2,
                     gradient_checkpointing=checkpointing).train()  # fmt: skip
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert all(torch.allclose(weights[0][n], weights[1][n], atol=1e-6) for n in weights[0])


def test_card_names_the_paper(tmp_path, make_model, tokenizer, qa_data):
    trainer = make_trainer(make_model(), tokenizer, qa_data, tmp_path, max_steps=1)
    trainer.train()
    trainer.save_model()
    card = (tmp_path / "README.md").read_text()
    assert "2403.03218" in card and "The WMDP Benchmark" in card


def test_without_retain_term_needs_no_retain_rows_and_no_frozen_weights(tmp_path, make_model, tokenizer, qa_data):
    trainer = make_trainer(make_model(), tokenizer, qa_data, tmp_path, alpha=0.0, max_steps=1)
    assert trainer.retain_dataset is None and trainer._frozen is None and trainer.reference_model is None
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss/forget" in entry]
    assert logged and "loss/retain" not in logged[0]


def test_a_regex_that_selects_nothing_is_refused(tmp_path, make_model, tokenizer, qa_data):
    with pytest.raises(ValueError, match=r"trainable_params='.*c_fc.*' selects no weight of LlamaForCausalLM"):
        make_trainer(make_model(), tokenizer, qa_data, tmp_path, trainable_params=r".*\.c_fc\.weight")


def test_a_given_reference_model_is_used(tmp_path, make_model, tokenizer, qa_data):
    """A `reference_model` passed in is θ_0 (no weights are swapped): the same activations as the swapped-in ones."""
    forget, retain = qa_data
    model = make_model()
    config = RMUConfig(**training_args(tmp_path, steering_layer=1, alpha=10.0, max_steps=1))
    trainer = RMUTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                         processing_class=tokenizer, reference_model=copy.deepcopy(model))  # fmt: skip
    assert trainer.needs_reference_model and trainer.reference_model is not None and trainer._frozen is None
    swapped = make_trainer(copy.deepcopy(model), tokenizer, qa_data, tmp_path / "swapped")
    batch = batch_of(trainer, "retain")
    assert torch.allclose(trainer.reference_activations(model, batch),
                          swapped.reference_activations(swapped.model, batch), atol=1e-6)  # fmt: skip
