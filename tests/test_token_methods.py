"""The token-level methods UNDIAL, WGA, SatImp and CE-U: each loss against numbers worked out by hand and against the
formula as open-unlearning computes it, bad settings refused, PEFT, gradient accumulation and the card."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import training_args

from hf_unlearn import METHODS
from hf_unlearn.losses import (
    ce_u_loss,
    satimp_loss,
    skip_first_answer_tokens,
    token_logps,
    undial_loss,
    wga_loss,
)

LN2, LN3, LN4 = math.log(2.0), math.log(3.0), math.log(4.0)

# One row, vocabulary of 3 words, labels [-100, 0, 1]: the prompt's label is -100, position 0's logits predict label 0
# and position 1's predict label 1; the last position predicts nothing (its logits are never read).
#   position 0: logits [ln 2, 0, 0] → p = (1/2, 1/4, 1/4), p(label 0) = 1/2
#   position 1: logits [0, ln 3, 0] → p = (1/5, 3/5, 1/5), p(label 1) = 3/5
LOGITS = torch.tensor([[[LN2, 0.0, 0.0], [0.0, LN3, 0.0], [7.0, -7.0, 0.0]]])
LABELS = torch.tensor([[-100, 0, 1]])
TOKEN_METHODS = ["undial", "wga", "satimp", "ce_u"]


def logps_of(logits):
    return token_logps(logits, LABELS)


def test_wga_loss_by_hand():
    """WGA, β = 1: weights p = 1/2 and 3/5; loss = mean_t p·ln p = (½ ln ½ + ⅗ ln ⅗)/2 = (−0.3465736 − 0.3064954)/2
    = −0.3265345. β = 2: (¼ ln ½ + 9/25 ln ⅗)/2 = (−0.1732868 − 0.1838972)/2 = −0.1785920. β = 0 is gradient ascent:
    (ln ½ + ln ⅗)/2 = −0.6019864.

    The weight carries no gradient: d loss/d z at position 0 = w·(onehot(0) − p)/2 = ½·(½, −¼, −¼)/2 = (⅛, −1/16, −1/16)
    (with a gradient through w = p it would be twice that: d(p ln p)/dz = (1 + ln p)·p·(onehot − p))."""
    logits = LOGITS.clone().requires_grad_(True)
    loss = wga_loss(*logps_of(logits), beta=1.0)
    assert loss.shape == (1,) and loss.item() == pytest.approx(-0.3265345, abs=1e-6)
    loss.sum().backward()
    assert logits.grad[0, 0].tolist() == pytest.approx([1 / 8, -1 / 16, -1 / 16], abs=1e-6)
    assert logits.grad[0, 2].abs().sum().item() == 0  # the last position predicts nothing
    assert wga_loss(*logps_of(LOGITS), beta=2.0).item() == pytest.approx(-0.1785920, abs=1e-6)
    assert wga_loss(*logps_of(LOGITS), beta=0.0).item() == pytest.approx(-0.6019864, abs=1e-6)


def test_satimp_loss_by_hand():
    """SatImp, w = p^β1·(1 − p)^β2. β1 = 2, β2 = 1: w = ¼·½ = 1/8 and 9/25·2/5 = 18/125 = 0.144;
    loss = (⅛ ln ½ + 0.144 ln ⅗)/2 = (−0.0866434 − 0.0735589)/2 = −0.0801011. Defaults β1 = 5, β2 = 1:
    w = (1/32)·½ = 1/64 and (243/3125)·(2/5) = 0.031104; loss = (ln ½/64 + 0.031104 ln ⅗)/2 = −0.0133596.
    β1 = β2 = 0 is gradient ascent: −0.6019864. Gradient at position 0 (β1 = 2, β2 = 1): ⅛·(½, −¼, −¼)/2."""
    logits = LOGITS.clone().requires_grad_(True)
    loss = satimp_loss(*logps_of(logits), beta1=2.0, beta2=1.0)
    assert loss.item() == pytest.approx(-0.0801011, abs=1e-6)
    loss.sum().backward()
    assert logits.grad[0, 0].tolist() == pytest.approx([1 / 32, -1 / 64, -1 / 64], abs=1e-6)
    assert satimp_loss(*logps_of(LOGITS), beta1=5.0, beta2=1.0).item() == pytest.approx(-0.0133596, abs=1e-6)
    assert satimp_loss(*logps_of(LOGITS), beta1=0.0, beta2=0.0).item() == pytest.approx(-0.6019864, abs=1e-6)


def test_undial_loss_by_hand():
    """UNDIAL, β = ln 2. Position 0: reference logits [ln 2, 0, 0], label 0 → adjusted [0, 0, 0], q = (⅓, ⅓, ⅓); the
    model's logits [0, ln 3, 0] give p = (⅕, ⅗, ⅕): CE = −⅓(ln ⅕ + ln ⅗ + ln ⅕) = ln 5 − ⅓ ln 3 = 1.2432338.
    Position 1: reference [0, ln 4, 0], label 1 → adjusted [0, ln 2, 0], q = (¼, ½, ¼); the model's logits [0, 0, 0]:
    CE = ln 3 = 1.0986123. Mean = 1.1709231.

    Gradient in the model's logits at position 0: (p − q)/2 = (⅕ − ⅓, ⅗ − ⅓, ⅕ − ⅓)/2 = (−1/15, 2/15, −1/15); the
    reference gets none."""
    reference = torch.tensor([[[LN2, 0.0, 0.0], [0.0, LN4, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    policy = torch.tensor([[[0.0, LN3, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]], requires_grad=True)
    loss = undial_loss(reference.detach(), policy, LABELS, beta=LN2)
    assert loss.item() == pytest.approx(1.1709231, abs=1e-6)
    loss.sum().backward()
    assert policy.grad[0, 0].tolist() == pytest.approx([-1 / 15, 2 / 15, -1 / 15], abs=1e-6)
    # a very large β leaves q(label) ≈ 0. Position 0 alone, β = 80: q = (0, ½, ½) and p = (⅕, ⅗, ⅕):
    # CE = −½(ln ⅗ + ln ⅕) = ½(2 ln 5 − ln 3) = 1.0601317
    big = undial_loss(reference.detach(), policy.detach(), torch.tensor([[-100, 0, -100]]), beta=80.0)
    assert big.item() == pytest.approx(1.0601317, abs=1e-6)


def test_ce_u_loss_by_hand():
    """CE-U, the model's own logits as target with the label's set to −∞. Position 0: p = (½, ¼, ¼), label 0 →
    q = (0, ½, ½): CE = −(½ ln ¼ + ½ ln ¼) = ln 4 = 1.3862944. Position 1: p = (⅕, ⅗, ⅕), label 1 → q = (½, 0, ½):
    CE = ln 5 = 1.6094379. Every answer token: (ln 4 + ln 5)/2 = ln 20 / 2 = 1.4978661; leaving out the first answer
    token (the default): ln 5.

    The target is detached: gradient at position 0 = (p − q)/2 = (½, −¼, −¼)/2 = (¼, −⅛, −⅛)."""
    logits = LOGITS.clone().requires_grad_(True)
    loss = ce_u_loss(logits, LABELS, ignore_first=0)
    assert loss.item() == pytest.approx(1.4978661, abs=1e-6)
    loss.sum().backward()
    assert logits.grad[0, 0].tolist() == pytest.approx([1 / 4, -1 / 8, -1 / 8], abs=1e-6)
    assert ce_u_loss(LOGITS, LABELS, ignore_first=1).item() == pytest.approx(math.log(5), abs=1e-6)
    assert ce_u_loss(LOGITS, LABELS, ignore_first=2).item() == 0  # nothing left to score


def test_skip_first_answer_tokens():
    labels = torch.tensor([[-100, -100, 5, 6, 7, -100], [-100, 8, 9, -100, -100, -100]])
    assert skip_first_answer_tokens(labels, 1).tolist() == [[-100, -100, -100, 6, 7, -100],
                                                            [-100, -100, 9, -100, -100, -100]]  # fmt: skip
    assert skip_first_answer_tokens(labels, 0) is labels
    assert skip_first_answer_tokens(torch.tensor([2, 0]), 1).tolist() == [2, 0]  # a classifier keeps its label


def planted(seed=0, rows=2, length=6, vocab=11):
    """Random logits and answers with every shifted label scored (labels[:, 0] is the prompt's -100), so that
    open-unlearning's averages over the batch's positions equal ours over each answer."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, vocab, generator=generator) * 3
    reference = torch.randn(rows, length, vocab, generator=generator) * 3
    labels = torch.randint(0, vocab, (rows, length), generator=generator)
    labels[:, 0] = -100
    return logits, reference, labels


def test_wga_and_satimp_match_open_unlearnings_formula():
    """open-unlearning (src/trainer/utils.py, compute_wga_loss / compute_satimp_loss) computes, over the shifted
    positions flattened: ce = CrossEntropy(logits[:, :-1], labels[:, 1:], reduction none); w = exp(−ce).detach()^β
    (SatImp: exp(−ce)^β1 · (1 − exp(−ce))^β2); loss = −mean over labels ≠ -100 of w·ce, the mean over all tokens of
    the batch. With equal-length answers that is the mean of our per-answer means."""
    logits, _, labels = planted()
    flat = logits[:, :-1].reshape(-1, logits.size(-1))
    ce = F.cross_entropy(flat, labels[:, 1:].reshape(-1), reduction="none")
    p = torch.exp(-ce)
    reference_wga = -(p**1.0 * ce).mean()
    reference_satimp = -(p**5.0 * (1 - p) ** 1.0 * ce).mean()
    assert wga_loss(*token_logps(logits, labels), beta=1.0).mean().item() == pytest.approx(reference_wga.item(),
                                                                                           rel=1e-5)  # fmt: skip
    ours = satimp_loss(*token_logps(logits, labels), beta1=5.0, beta2=1.0).mean()
    assert ours.item() == pytest.approx(reference_satimp.item(), rel=1e-5)


def test_unequal_answers_are_averaged_per_answer():
    """Row 1 scores 1 token (log p = −1), row 2 scores 3 (log p = −2 each), β = 0: ours is the mean of the two answers'
    means, (−1 − 2)/2 = −1.5; a mean over the batch's 4 tokens would be (−1 − 6)/4 = −1.75."""
    logps = torch.tensor([[-1.0, 0.0, 0.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[True, False, False], [True, True, True]])
    assert wga_loss(logps, mask, beta=0.0).mean().item() == pytest.approx(-1.5)


def test_undial_matches_open_unlearnings_formula():
    """open-unlearning (compute_undial_loss): over the shifted positions, mask = onehot(labels[:, 1:]); target =
    softmax(teacher_logits[:, :-1] − β·mask); loss = mean over every position of CrossEntropy(logits[:, :-1], target)
    (soft targets). With every shifted label scored and equal lengths, that is our per-answer mean."""
    logits, reference, labels = planted(seed=1)
    shifted = labels[:, 1:]
    target = (reference[:, :-1] - 10.0 * F.one_hot(shifted, logits.size(-1))).softmax(-1)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), target.reshape(-1, logits.size(-1)))
    assert undial_loss(reference, logits, labels, beta=10.0).mean().item() == pytest.approx(expected.item(), rel=1e-5)


def test_ce_u_matches_open_unlearnings_formula():
    """open-unlearning (ceu.py, compute_batch_ceu): labels with the first n answer tokens set to -100, shifted; over the
    scored positions, target = softmax(logits.detach() with the label's logit = −inf); loss = CrossEntropy(logits,
    target) averaged over the scored positions of the batch."""
    logits, _, labels = planted(seed=2)
    kept = labels.clone()
    kept[:, 1] = -100  # the first answer token of each row (every row's answer starts at position 1)
    scored = kept[:, 1:] != -100
    rows, targets = logits[:, :-1][scored], kept[:, 1:][scored]
    target = rows.detach().scatter(-1, targets.unsqueeze(-1), float("-inf")).softmax(-1)
    expected = F.cross_entropy(rows, target)
    assert ce_u_loss(logits, labels, ignore_first=1).mean().item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("name", "setting", "message"),
    [
        ("undial", {"beta": 0.0}, r"beta=0.0 is out of range: use beta > 0 \(default 10.0"),
        ("undial", {"beta": -3.0}, r"beta=-3.0 is out of range"),
        ("wga", {"beta": -1.0}, r"beta=-1.0 is out of range: use 0 <= beta <= 100 \(default 1.0"),
        ("wga", {"beta": 500.0}, r"beta=500.0 is out of range"),
        ("satimp", {"beta1": -0.5}, r"beta1=-0.5 is out of range: use 0 <= beta1 <= 100 \(default 5.0"),
        ("satimp", {"beta2": 101.0}, r"beta2=101.0 is out of range: use 0 <= beta2 <= 100 \(default 1.0"),
        ("ce_u", {"ignore_first_n_answer_tokens": -1}, r"ignore_first_n_answer_tokens=-1 is negative: use 0 or more "
                                                        r"\(default 1"),
        ("wga", {"beta": float("nan")}, r"beta=nan is not a finite number"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused(name, setting, message, tmp_path):
    config_cls, _ = METHODS[name]
    with pytest.raises(ValueError, match=message):
        config_cls(**training_args(tmp_path, **setting))


def test_defaults_are_the_papers(tmp_path):
    config = {name: METHODS[name][0](output_dir=str(tmp_path)) for name in TOKEN_METHODS}
    undial, wga, satimp, ce_u = (config[name] for name in TOKEN_METHODS)
    assert (undial.beta, undial.alpha, undial.learning_rate, undial.num_train_epochs) == (10.0, 0.0, 1e-4, 10.0)
    assert (wga.beta, wga.gamma, wga.alpha, wga.learning_rate) == (1.0, 1.0, 1.0, 1e-5)
    assert (satimp.beta1, satimp.beta2, satimp.gamma, satimp.alpha) == (5.0, 1.0, 1.0, 0.1)
    assert (ce_u.ignore_first_n_answer_tokens, ce_u.alpha) == (1, 0.0)
    assert not undial.uses_retain and not ce_u.uses_retain and wga.uses_retain and satimp.uses_retain


def make_trainer(name, model, tokenizer, qa_data, tmp_path, peft_config=None, **settings):
    forget, retain = qa_data
    config_cls, trainer_cls = METHODS[name]
    config = config_cls(**training_args(tmp_path, **settings))
    return trainer_cls(model=model, args=config, forget_dataset=forget, processing_class=tokenizer,
                       retain_dataset=retain if config.uses_retain else None, peft_config=peft_config)  # fmt: skip


def test_trainer_loss_is_the_loss_function(make_model, tokenizer, qa_data, tmp_path):
    """The logged forget term of one evaluation batch is γ × the pure function on the same batch."""
    model = make_model()
    trainer = make_trainer("ce_u", model, tokenizer, qa_data, tmp_path, gamma=2.0, ignore_first_n_answer_tokens=2)
    batch = trainer._pad([trainer.forget_dataset[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        terms = trainer.compute_unlearning_loss(model, {"forget": batch, "forget_index": torch.arange(4)})
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert list(terms) == ["forget"]
    assert terms["forget"].item() == pytest.approx(2 * ce_u_loss(logits, batch["labels"], 2).mean().item(), rel=1e-6)


@pytest.mark.parametrize("name", TOKEN_METHODS)
def test_gradient_accumulation_matches_the_large_batch(name, memorised_model, tokenizer, qa_data, tmp_path):
    """2 steps of batch 2 with accumulation give the same SGD update as 1 step of batch 4 (the forget rows' answers
    differ in length, so a mean over the batch's tokens would not)."""
    state = copy.deepcopy(memorised_model.state_dict())
    updates = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        memorised_model.load_state_dict(state)
        before = {n: p.detach().clone() for n, p in memorised_model.named_parameters()}
        settings = {"per_device_train_batch_size": batch_size, "gradient_accumulation_steps": accumulation,
                    "optim": "sgd", "learning_rate": 1.0, "max_grad_norm": 0, "lr_scheduler_type": "constant"}
        trainer = make_trainer(name, memorised_model, tokenizer, qa_data, tmp_path / f"{batch_size}", max_steps=1,
                               **settings)  # fmt: skip
        trainer.train()
        updates.append({n: p.detach() - before[n] for n, p in memorised_model.named_parameters()})
    large, accumulated = updates
    assert max(u.abs().max().item() for u in large.values()) > 1e-4  # the step moved the weights
    for n in large:
        assert torch.allclose(accumulated[n], large[n], atol=1e-6, rtol=1e-4), n


@pytest.mark.parametrize("name", TOKEN_METHODS)
def test_peft_trains_the_adapter(name, make_model, tokenizer, qa_data, tmp_path):
    """With `peft_config=`, only the LoRA weights train, they move, and no second copy of the model is held (UNDIAL's
    reference is the adapter-disabled base)."""
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = make_trainer(name, make_model(), tokenizer, qa_data, tmp_path, peft_config=lora, max_steps=2,
                           learning_rate=1e-2)  # fmt: skip
    assert trainer.reference_model is None
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if n in trainable and not torch.equal(p, trainable[n])]
    assert any("lora_B" in n for n in moved)
    logged = [entry for entry in trainer.state.log_history if "loss/forget" in entry]
    assert logged and all(math.isfinite(entry["loss"]) for entry in logged)


def test_undial_reference_under_peft_is_the_adapter_disabled_base(make_model, tokenizer, qa_data, tmp_path):
    peft = pytest.importorskip("peft")
    base = make_model()
    frozen = copy.deepcopy(base).eval()
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer = make_trainer("undial", base, tokenizer, qa_data, tmp_path, peft_config=lora, max_steps=2,
                           learning_rate=1e-2)  # fmt: skip
    trainer.train()
    batch = trainer._pad([trainer.forget_dataset[i] for i in range(4)])
    batch = {k: v.to(trainer.model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    trainer.model.train()
    reference = trainer.reference_logits(trainer.model, batch)
    assert trainer.model.training
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = frozen.to(trainer.model.device)(**inputs).logits
        adapted = trainer.model(**inputs).logits
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not torch.allclose(adapted, expected, atol=1e-3)


def test_undial_without_peft_holds_a_frozen_reference(make_model, tokenizer, qa_data, tmp_path):
    """At θ = θ_0 the UNDIAL loss is the cross-entropy against the adjusted reference; the reference stays frozen."""
    trainer = make_trainer("undial", make_model(), tokenizer, qa_data, tmp_path, max_steps=2, learning_rate=1e-2)
    reference = trainer.reference_model
    assert reference is not None and not reference.training
    start = {n: p.detach().clone() for n, p in reference.named_parameters()}
    trainer.train()
    assert all(torch.equal(p, start[n]) for n, p in reference.named_parameters())
    assert all(not p.requires_grad for p in reference.parameters())


@pytest.mark.parametrize("name", TOKEN_METHODS)
def test_card_names_the_paper(name, make_model, tokenizer, qa_data, tmp_path):
    trainer = make_trainer(name, make_model(), tokenizer, qa_data, tmp_path, max_steps=1)
    trainer.train()
    trainer.save_model()
    card = (tmp_path / "README.md").read_text()
    paper = type(trainer)._paper
    assert paper["title"] in card and f"arxiv.org/abs/{paper['id']}" in card
    assert trainer._name in card
