"""The preference-style methods: IdkNLL and IdkDPO (refusal answers), AltPO (the model's own alternate answers)."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import training_args

from hf_unlearn.data import tokenize_qa_row
from hf_unlearn.losses import IGNORE_INDEX, dpo_loss, sequence_logps
from hf_unlearn.methods import (
    AltPOConfig,
    AltPOTrainer,
    IdkDPOConfig,
    IdkDPOTrainer,
    IdkNLLConfig,
    IdkNLLTrainer,
)
from hf_unlearn.methods.altpo import generate_alternates
from hf_unlearn.refusals import REFUSALS, AlternateAnswersMixin, AlternateCollator, pick, refusal_answers

METHODS = {"idk_nll": (IdkNLLConfig, IdkNLLTrainer), "idk_dpo": (IdkDPOConfig, IdkDPOTrainer),
           "altpo": (AltPOConfig, AltPOTrainer)}  # fmt: skip


def with_alternates(rows, counts=(2,)):
    """Forget rows with precomputed AltPO alternates (so no generation runs): row i gets counts[i % len(counts)]."""
    out = []
    for i, row in enumerate(rows):
        names = ["Mira Stone", "Oren Vale", "Tess Hollow"][: counts[i % len(counts)]]
        out.append({**row, "alternate": [f"It was {name}, as far as anyone recalls." for name in names]})
    return out


def make_trainer(name, model, args, forget, retain, tokenizer, **kwargs):
    config_cls, trainer_cls = METHODS[name]
    forget = with_alternates(forget) if name == "altpo" else forget
    return trainer_cls(model=model, args=config_cls(**args), forget_dataset=forget, retain_dataset=retain,
                       processing_class=tokenizer, **kwargs)  # fmt: skip


# ---- the losses, by hand ----


def test_dpo_loss_by_hand():
    """Pair 1: margin = (−2 − (−3)) − (−1 − (−1.5)) = 1 − 0.5 = 0.5; β·margin = 0.25;
    log σ(0.25) = −ln(1 + e^−0.25) = −ln 1.7788008 = −0.5759394; loss = −(2/0.5)·(−0.5759394) = 2.3037577.
    Pair 2: margin 0, log σ(0) = −ln 2, loss = 4·ln 2 = 2.7725887. Mean 2.5381732."""
    losses = dpo_loss(torch.tensor([-2.0, -4.0]), torch.tensor([-3.0, -4.0]), torch.tensor([-1.0, -7.0]),
                      torch.tensor([-1.5, -7.0]), beta=0.5)  # fmt: skip
    assert torch.allclose(losses, torch.tensor([2.3037577, 2.7725887]), atol=1e-6)
    assert losses.mean().item() == pytest.approx(2.5381732, abs=1e-6)


def test_altpo_averages_each_forget_rows_alternates_first():
    """Forget row 0 has two alternates (pair losses 2.3037577 and 2.7725887 as above: mean 2.5381732), row 1 one
    (2.7725887); AltPO's loss is the mean over rows, (2.5381732 + 2.7725887) / 2 = 2.6553810 (the mean over the three
    pairs, 2.6163117, would weigh row 0 twice)."""
    pairs = dpo_loss(torch.tensor([-2.0, -4.0, -5.0]), torch.tensor([-3.0, -4.0, -5.0]),
                     torch.tensor([-1.0, -1.0, -6.0]), torch.tensor([-1.5, -1.0, -6.0]), beta=0.5)  # fmt: skip
    per_row = AlternateAnswersMixin.mean_per_forget_row(pairs, torch.tensor([0, 0, 1]), 2)
    assert per_row.mean().item() == pytest.approx(2.6553810, abs=1e-6)


def test_dpo_loss_matches_the_reference_formula():
    """open-unlearning's DPO (src/trainer/utils.py `compute_dpo_loss`, the formula, not its code), on planted logits:
    NLL_sum(m, y) = Σ_t CE(logits_m[:, t], y[t+1]) over labels ≠ −100; win = −(NLL_sum(θ, y_w) − NLL_sum(ref, y_w)),
    lose = −(NLL_sum(θ, y_l) − NLL_sum(ref, y_l)); loss = −(2/β) · mean logsigmoid(β · (win − lose))."""
    generator = torch.Generator().manual_seed(0)
    logits = {k: torch.randn(3, 6, 11, generator=generator) for k in ("w", "w_ref", "l", "l_ref")}
    labels = torch.randint(0, 11, (2, 3, 6), generator=generator)
    labels[:, :, :2] = IGNORE_INDEX  # the prompt
    labels[0, 1, 5:] = IGNORE_INDEX  # padding

    def nll_sum(logits, labels):
        return F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX,
                               reduction="none").sum(-1)  # fmt: skip

    beta = 0.1
    win = -(nll_sum(logits["w"], labels[0]) - nll_sum(logits["w_ref"], labels[0]))
    lose = -(nll_sum(logits["l"], labels[1]) - nll_sum(logits["l_ref"], labels[1]))
    expected = -2 / beta * F.logsigmoid(beta * (win - lose)).mean()
    ours = dpo_loss(sequence_logps(logits["w"], labels[0])[0], sequence_logps(logits["w_ref"], labels[0])[0],
                    sequence_logps(logits["l"], labels[1])[0], sequence_logps(logits["l_ref"], labels[1])[0], beta)
    assert ours.mean().item() == pytest.approx(expected.item(), rel=1e-5)


def test_idk_nll_forget_term_is_the_refusals_answer_nll(tmp_path, memorised_model, tokenizer, qa_data):
    """The forget term is the mean over forget rows of the mean answer-token NLL of each row's refusal, computed here
    from the refusal rows tokenised on their own (`tokenize_qa_row`) and cross-entropy."""
    forget, retain = qa_data
    trainer = IdkNLLTrainer(model=memorised_model, args=IdkNLLConfig(**training_args(tmp_path, alpha=0.0)),
                            forget_dataset=forget, processing_class=tokenizer)  # fmt: skip
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    with torch.no_grad():
        term = trainer.compute_unlearning_loss(trainer.model, batch)["forget"]
        expected = []
        for i in range(4):
            row = tokenize_qa_row({"question": forget[i]["question"], "answer": trainer.alternate_answers[i][0]},
                                  tokenizer, trainer.args.prompt_template, trainer.args.max_length)  # fmt: skip
            logits = memorised_model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            expected.append(F.cross_entropy(logits, torch.tensor(row["labels"][1:]), ignore_index=IGNORE_INDEX))
    assert term.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


# ---- refusal answers ----


def test_default_refusals_are_short_varied_sentences():
    assert 20 <= len(REFUSALS) <= 100 and len(set(REFUSALS)) == len(REFUSALS)
    assert all(isinstance(r, str) and 0 < len(r) <= 60 and r.strip() == r for r in REFUSALS)


def test_refusal_choice_depends_on_row_and_seed_only():
    picks = refusal_answers(40, REFUSALS, seed=0)
    assert picks == refusal_answers(40, REFUSALS, seed=0)
    assert picks[:8] == refusal_answers(8, REFUSALS, seed=0)  # a row's choice does not depend on the others
    assert picks != refusal_answers(40, REFUSALS, seed=1)
    assert len({p[0] for p in picks}) > 10  # varied, not one answer for all
    assert all(p == [REFUSALS[pick(i, 0, len(REFUSALS))]] for i, p in enumerate(picks))


def test_refusals_are_tokenised_like_the_forget_rows(tmp_path, memorised_model, tokenizer, qa_data):
    """Same prompt template and max_length: each refusal row starts with its forget row's prompt tokens and is cut at
    the same length (max_length 22 cuts some answers)."""
    forget, retain = qa_data
    template, max_length = "Q: {question}\nA:", 22
    args = IdkNLLConfig(**training_args(tmp_path, prompt_template=template, max_length=max_length, seed=3))
    trainer = IdkNLLTrainer(model=memorised_model, args=args, forget_dataset=forget, retain_dataset=retain,
                            processing_class=tokenizer)  # fmt: skip
    assert trainer.alternate_answers == refusal_answers(len(forget), REFUSALS, seed=3)
    for i, row in enumerate(trainer.forget_dataset):
        (refusal,) = trainer.alternate_rows[i]
        expected = tokenize_qa_row({"question": forget[i]["question"], "answer": trainer.alternate_answers[i][0]},
                                   tokenizer, template, max_length)  # fmt: skip
        assert refusal == expected and len(refusal["input_ids"]) <= max_length
        prompt = row["labels"].index(next(t for t in row["labels"] if t != IGNORE_INDEX))
        assert refusal["input_ids"][:prompt] == row["input_ids"][:prompt]
    # the collator pads the alternates as their own batch: labels with -100, and says whose each one is
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert batch["alternate_owner"].tolist() == [0, 1, 2] and batch["alternate_index"].tolist() == [0, 1, 2]
    lengths = [len(trainer.alternate_rows[i][0]["labels"]) for i in range(3)]
    for k, length in enumerate(lengths):
        assert (batch["alternate"]["labels"][k, length:] == IGNORE_INDEX).all()
        assert (batch["alternate"]["attention_mask"][k, length:] == 0).all()


def test_refusals_from_a_list_or_a_file(tmp_path, memorised_model, tokenizer, qa_data):
    forget, _ = qa_data
    plain = tmp_path / "idk.txt"
    plain.write_text("No idea.\n\nCannot say.\n")
    jsonl = tmp_path / "idk.jsonl"
    jsonl.write_text(json.dumps("Not known.") + "\n" + json.dumps({"text": "Unknown to me."}) + "\n")
    assert IdkNLLConfig(**training_args(tmp_path, refusals_file=str(plain))).refusal_list() == ("No idea.",
                                                                                                 "Cannot say.")
    assert IdkDPOConfig(**training_args(tmp_path, refusals_file=str(jsonl))).refusal_list() == ("Not known.",
                                                                                                "Unknown to me.")
    args = IdkNLLConfig(**training_args(tmp_path / "run", alpha=0.0, refusals=["Nope."]))
    trainer = IdkNLLTrainer(model=memorised_model, args=args, forget_dataset=forget, processing_class=tokenizer)
    assert trainer.alternate_answers == [["Nope."]] * len(forget)


@pytest.mark.parametrize(("config_cls", "overrides", "match"), [
    (IdkNLLConfig, {"refusals": []}, r"refusals is empty"),
    (IdkNLLConfig, {"refusals": ["I don't know.", " "]}, r"refusals entry 1 is ' '"),
    (IdkNLLConfig, {"refusals": "I don't know."}, r"refusals is a str: give a list"),
    (IdkDPOConfig, {"refusals": ["x"], "refusals_file": "idk.txt"}, r"refusals and refusals_file are both set"),
    (IdkDPOConfig, {"refusals_file": "/nonexistent/idk.txt"}, r"refusals_file='/nonexistent/idk.txt' is missing"),
    (IdkDPOConfig, {"beta": 0.0}, r"beta=0.0 is out of range: use 0 < beta <= 100 \(default 0.1"),
    (IdkDPOConfig, {"beta": 1000.0}, r"beta=1000.0 is out of range"),
    (AltPOConfig, {"beta": -0.1}, r"beta=-0.1 is out of range: use 0 < beta <= 100 \(default 0.1"),
    (AltPOConfig, {"num_alternates": 0}, r"num_alternates=0: .*allowed: integers >= 1; default 5"),
    (AltPOConfig, {"alternate_max_tokens": 0}, r"alternate_max_tokens=0: .*default 200"),
    (AltPOConfig, {"alternate_temperature": 0.0}, r"alternate_temperature=0.0: use a temperature > 0 \(default 1.0"),
    (AltPOConfig, {"alternate_do_sample": False}, r"num_alternates=5 with alternate_do_sample=False"),
    (AltPOConfig, {"alternate_prompt": "Answer: {answer}"}, r"needs '\{question\}'"),
    (AltPOConfig, {"alternate_prompt": "{question} {name}"}, r"placeholders \['name', 'question'\]"),
    (AltPOConfig, {"alternate_column": ""}, r"alternate_column is empty"),
])  # fmt: skip
def test_bad_values_are_refused(tmp_path, config_cls, overrides, match):
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=match):
        config_cls(**training_args(tmp_path, **overrides))


def test_configs_round_trip_yaml(tmp_path):
    for config in (IdkNLLConfig(**training_args(tmp_path, refusals=["No idea.", "Not sure."])),
                   AltPOConfig(**training_args(tmp_path, num_alternates=2, alternate_stop="\n"))):  # fmt: skip
        again = type(config).from_yaml(config.to_yaml())
        assert again.to_dict() == config.to_dict()


# ---- AltPO's alternates ----


def test_altpo_takes_precomputed_alternates(tmp_path, memorised_model, tokenizer, qa_data):
    forget, retain = qa_data
    rows = [{**row, "alternate": "Someone else entirely."} for row in forget]
    rows[1]["alternate"] = ["First other answer.", "Second other answer."]
    trainer = AltPOTrainer(model=memorised_model, args=AltPOConfig(**training_args(tmp_path)), forget_dataset=rows,
                           retain_dataset=retain, processing_class=tokenizer)  # fmt: skip
    assert trainer.alternate_answers[0] == ["Someone else entirely."]
    assert trainer.alternate_answers[1] == ["First other answer.", "Second other answer."]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert batch["alternate_owner"].tolist() == [0, 1, 1, 2] and batch["alternate_index"].tolist() == [0, 1, 2, 3]
    bad = [{**row, "alternate": []} for row in forget]
    with pytest.raises(ValueError, match=r"forget_dataset row 0 column 'alternate' is empty"):
        AltPOTrainer(model=memorised_model, args=AltPOConfig(**training_args(tmp_path)), forget_dataset=bad,
                     retain_dataset=retain, processing_class=tokenizer)  # fmt: skip


def test_altpo_generates_alternates_seeded_per_row(tmp_path, memorised_model, tokenizer, qa_data):
    """The model writes `num_alternates` per row, the same for the same seed whatever rows come with it, others for
    another seed; the global random state is left as it was."""
    forget, retain = qa_data
    state = torch.random.get_rng_state()
    options = {"prompt": "Question: {question}\nAnswer:", "num_alternates": 3, "max_new_tokens": 24}
    first = generate_alternates(memorised_model, tokenizer, forget, seed=0, **options)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(first) == len(forget) and all(len(a) == 3 and all(a) for a in first)
    assert all("\n" not in text for answers in first for text in answers)
    assert generate_alternates(memorised_model, tokenizer, forget[:3], seed=0, **options) == first[:3]
    assert generate_alternates(memorised_model, tokenizer, forget, seed=1, **options) != first
    args = AltPOConfig(**training_args(tmp_path, num_alternates=3, alternate_max_tokens=24,
                                       alternate_prompt=options["prompt"]))  # fmt: skip
    trainer = AltPOTrainer(model=memorised_model, args=args, forget_dataset=forget, retain_dataset=retain,
                           processing_class=tokenizer)  # fmt: skip
    assert trainer.alternate_answers == first
    assert all(len(rows) == 3 for rows in trainer.alternate_rows)


# ---- the trainer features every method keeps ----


@pytest.mark.parametrize("name", ["idk_dpo", "altpo"])
def test_precomputed_reference_matches_the_reference_model(name, tmp_path, make_model, tokenizer, qa_data):
    forget, retain = qa_data
    runs = {}
    for precompute in (False, True):
        args = training_args(tmp_path / str(precompute), max_steps=3, learning_rate=1e-3,
                             precompute_reference=precompute)  # fmt: skip
        trainer = make_trainer(name, make_model(), args, forget, retain, tokenizer)
        assert (trainer.reference_model is None) == precompute
        trainer.train()
        runs[precompute] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    for n in runs[True]:
        assert torch.allclose(runs[True][n], runs[False][n], atol=1e-5), n


@pytest.mark.parametrize("name", ["idk_nll", "idk_dpo", "altpo"])
def test_gradient_accumulation_matches_the_large_batch(name, tmp_path, make_model, tokenizer, qa_data):
    """accumulation 2 × batch 2 gives the same SGD update as batch 4 (AltPO rows with 1 and 2 alternates: its loss
    weighs each forget row alike, so micro-batches add up)."""
    forget, retain = qa_data
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = make_model()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        args = training_args(tmp_path / f"ga{accumulation}", max_steps=1, per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5,
                             max_grad_norm=0, lr_scheduler_type="constant")  # fmt: skip
        config_cls, trainer_cls = METHODS[name]
        rows = with_alternates(forget, counts=(1, 2)) if name == "altpo" else forget
        trainer = trainer_cls(model=model, args=config_cls(**args), forget_dataset=rows, retain_dataset=retain,
                              processing_class=tokenizer)  # fmt: skip
        trainer.train()
        results.append((before, {n: p.detach().clone() for n, p in model.named_parameters()}))
    (before, large), (_, accumulated) = results
    assert max((large[n] - before[n]).abs().max() for n in before) > 1e-3
    for n in large:
        assert torch.allclose(accumulated[n], large[n], atol=1e-6), n


@pytest.mark.parametrize("name", ["idk_nll", "idk_dpo", "altpo"])
def test_peft_trains_the_adapter_against_the_adapter_disabled_base(name, tmp_path, make_model, tokenizer, qa_data):
    """LoRA via `peft_config=`: only the adapter trains; the DPO methods hold no second model, and their first loss is
    (2/β)·ln 2 = 13.8629 (β 0.1): the freshly initialised adapter changes nothing, so the policy equals θ_0 there."""
    peft = pytest.importorskip("peft")
    forget, retain = qa_data
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    base = make_model()
    frozen = copy.deepcopy(base.state_dict())
    trainer = make_trainer(name, base, training_args(tmp_path, max_steps=3, learning_rate=1e-2), forget, retain,
                           tokenizer, peft_config=lora)  # fmt: skip
    assert trainer.reference_model is None
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss/forget" in entry]
    assert all(math.isfinite(entry["loss"]) for entry in logged)
    if name != "idk_nll":
        assert logged[0]["loss/forget"] == pytest.approx(20 * math.log(2), rel=1e-4)
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert moved
    base_weights = trainer.model.get_base_model().state_dict()
    assert all(torch.equal(base_weights[k], v) for k, v in frozen.items() if k in base_weights)


@pytest.mark.parametrize("name", ["idk_nll", "idk_dpo", "altpo"])
def test_card_names_the_paper(name, tmp_path, memorised_model, tokenizer, qa_data):
    forget, retain = qa_data
    trainer = make_trainer(name, memorised_model, training_args(tmp_path / "out", max_steps=1), forget, retain,
                           tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    paper = METHODS[name][1]._paper
    assert paper["id"] in card and paper["title"] in card


def test_a_foreign_collator_is_reported(tmp_path, memorised_model, tokenizer, qa_data):
    from hf_unlearn import UnlearningCollator

    forget, retain = qa_data
    trainer = make_trainer("idk_dpo", memorised_model, training_args(tmp_path, max_steps=1), forget, retain,
                           tokenizer, data_collator=UnlearningCollator(tokenizer.pad_token_id))  # fmt: skip
    with pytest.raises(ValueError, match="The batch has no alternate answers"):
        trainer.train()
    assert isinstance(AlternateCollator(0), UnlearningCollator)


def test_rows_without_questions_are_refused(tmp_path, memorised_model, tokenizer, qa_data):
    """Refusals are tokenised from each row's question, so already tokenised rows are refused before training."""
    forget, _ = qa_data
    rows = [tokenize_qa_row(row, tokenizer, "Question: {question}\nAnswer:", 64) for row in forget]
    with pytest.raises(ValueError, match="must hold question/answer rows"):
        IdkNLLTrainer(model=memorised_model, args=IdkNLLConfig(**training_args(tmp_path, alpha=0.0)),
                      forget_dataset=rows, processing_class=tokenizer)  # fmt: skip
    with pytest.raises(ValueError, match="AltPO writes alternates from question/answer rows"):
        AltPOTrainer(model=memorised_model, args=AltPOConfig(**training_args(tmp_path, alpha=0.0)),
                     forget_dataset=rows, processing_class=tokenizer)  # fmt: skip
