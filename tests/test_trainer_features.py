"""Everything a `Trainer` supports keeps working: resume, accumulation, PEFT, callbacks, bf16, checkpointing."""

import copy

import pytest
import torch
from conftest import training_args
from transformers import TrainerCallback

from hf_unlearn import GradDiffConfig, GradDiffTrainer, NPOConfig, NPOTrainer, UnlearningCollator
from hf_unlearn.losses import sequence_logps


class RecordingCollator(UnlearningCollator):
    """Remembers which forget and retain examples each batch held."""

    def __init__(self, pad_token_id):
        super().__init__(pad_token_id)
        self.batches = []

    def __call__(self, features):
        batch = super().__call__(features)
        self.batches.append((batch["forget_index"].tolist(), batch["retain_index"].tolist()))
        return batch


def weights(model):
    return {name: param.detach().cpu().clone() for name, param in model.named_parameters()}


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), f"{name}: {(a[name] - b[name]).abs().max()}"


def test_resume_from_checkpoint_ends_with_the_same_weights(tmp_path, make_model, tokenizer, qa_data):
    """6 steps = 3 epochs of 2 steps; resuming from step 3 (mid-epoch 1) must redraw the same retain examples."""
    forget, retain = qa_data
    args = training_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=3, learning_rate=1e-3)
    full = RecordingCollator(tokenizer.pad_token_id)
    trainer = NPOTrainer(model=make_model(), args=NPOConfig(**args), forget_dataset=forget, retain_dataset=retain,
                         processing_class=tokenizer, data_collator=full)  # fmt: skip
    trainer.train()
    uninterrupted = weights(trainer.model)

    resumed_collator = RecordingCollator(tokenizer.pad_token_id)
    resumed = NPOTrainer(model=make_model(), args=NPOConfig(**args), forget_dataset=forget, retain_dataset=retain,
                         processing_class=tokenizer, data_collator=resumed_collator)  # fmt: skip
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    assert resumed.state.global_step == 6
    assert resumed_collator.batches[-3:] == full.batches[-3:]
    assert_same_weights(weights(resumed.model), uninterrupted, atol=1e-6)
    epochs = [full.batches[i][1] for i in (0, 2, 4)]  # the first batch of each epoch draws anew
    assert epochs[0] != epochs[1] != epochs[2]


def test_gradient_accumulation_matches_the_large_batch(tmp_path, make_model, tokenizer, qa_data):
    """accumulation 4 × batch 2 gives the same SGD update as batch 8 (a loss scaled twice or not at all would not)."""
    forget, retain = qa_data
    results = []
    for batch_size, accumulation in ((8, 1), (2, 4)):
        model = make_model()
        before = weights(model)
        args = training_args(tmp_path / f"ga{accumulation}", max_steps=1, per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5,
                             max_grad_norm=0, lr_scheduler_type="constant")  # fmt: skip
        trainer = GradDiffTrainer(model=model, args=GradDiffConfig(**args), forget_dataset=forget,
                                  retain_dataset=retain, processing_class=tokenizer)  # fmt: skip
        trainer.train()
        results.append((before, weights(model)))
    (before, large), (_, accumulated) = results
    assert max((large[n] - before[n]).abs().max() for n in before) > 1e-3  # the step did move the weights
    assert_same_weights(accumulated, large, atol=1e-6)


def test_peft_reference_is_the_adapter_disabled_base(tmp_path, make_model, tokenizer, qa_data):
    peft = pytest.importorskip("peft")
    forget, retain = qa_data
    base = make_model()
    frozen_copy = copy.deepcopy(base).eval()
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer = NPOTrainer(model=base, args=NPOConfig(**training_args(tmp_path, max_steps=3, learning_rate=1e-2)),
                         forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer,
                         peft_config=lora)  # fmt: skip
    assert trainer.reference_model is None  # no second copy of the weights
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    batch = trainer._pad([trainer.forget_dataset[i] for i in range(4)])
    batch = {k: v.to(trainer.model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    frozen_copy.to(trainer.model.device)
    trainer.model.train()
    reference = trainer.reference_logits(trainer.model, batch)
    assert trainer.model.training  # the reference pass restores train mode
    with torch.no_grad():
        expected = frozen_copy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        adapted = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not torch.allclose(adapted, expected, atol=1e-3)  # the adapter did learn, yet the reference is θ_0


def test_precomputed_reference_matches_the_reference_model(tmp_path, make_model, tokenizer, qa_data):
    forget, retain = qa_data
    runs = {}
    for precompute in (False, True):
        args = NPOConfig(**training_args(tmp_path / str(precompute), max_steps=3, learning_rate=1e-3,
                                         precompute_reference=precompute))  # fmt: skip
        trainer = NPOTrainer(model=make_model(), args=args, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer)  # fmt: skip
        if precompute:
            assert trainer.reference_model is None and trainer.reference_logps.shape == (len(forget),)
            batch = trainer._pad(list(trainer.forget_dataset))
            with torch.no_grad():
                live = sequence_logps(make_model()(input_ids=batch["input_ids"],
                                                   attention_mask=batch["attention_mask"]).logits, batch["labels"])[0]
            assert torch.allclose(trainer.reference_logps, live, atol=1e-5)
        trainer.train()
        runs[precompute] = weights(trainer.model)
    assert_same_weights(runs[True], runs[False], atol=1e-5)


def test_callbacks_see_each_loss_term(tmp_path, make_model, tokenizer, qa_data):
    class Seen(TrainerCallback):
        logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    forget, retain = qa_data
    trainer = GradDiffTrainer(model=make_model(), args=GradDiffConfig(**training_args(tmp_path, max_steps=2)),
                              forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer,
                              callbacks=[Seen()])  # fmt: skip
    trainer.train()
    step_logs = [log for log in Seen.logs if "loss" in log]
    assert len(step_logs) == 2
    for log in step_logs:
        assert log["loss"] == pytest.approx(log["loss/forget"] + log["loss/retain"], rel=1e-5)
        assert log["loss/forget"] < 0 < log["loss/retain"]


def test_gradient_checkpointing_recomputes_the_same_maths(tmp_path, make_model, tokenizer, qa_data):
    forget, retain = qa_data
    results = {}
    for on in (False, True):
        args = training_args(tmp_path / str(on), max_steps=2, learning_rate=1e-3, gradient_checkpointing=on)
        trainer = NPOTrainer(model=make_model(), args=NPOConfig(**args), forget_dataset=forget,
                             retain_dataset=retain, processing_class=tokenizer)  # fmt: skip
        trainer.train()
        logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        assert len(logged) == 2 and all(torch.isfinite(torch.tensor(logged)))
        results[on] = weights(trainer.model)
    assert_same_weights(results[True], results[False], atol=1e-6)


def test_bf16_training_takes_the_fp32_steps_to_bf16_precision(tmp_path, make_model, tokenizer, qa_data):
    """Two plain SGD steps (constant lr 0.05, no clipping), so the update is lr × the summed gradients and bf16's
    rounding of the forward pass shows in it linearly. bf16 keeps 8 significant bits (a relative rounding of
    2^-8 ≈ 0.4%); measured here, the bf16 update differs from the fp32 one by 0.5% of its norm (‖Δ‖ ≈ 1.9). So:
    - the fp32 run moves the weights (‖Δ‖ > 0.5): there is an update to compare;
    - the bf16 update is within 3% of the fp32 one: the same two steps, to bf16 precision (a skipped step, a lost
      loss term or a run that did not train is 50-100% off);
    - yet it differs by more than 0.1% (a quarter of one bf16 rounding; two fp32 runs agree to 1e-6, see the
      gradient-checkpointing test): bf16 really ran, it was not silently ignored."""
    forget, retain = qa_data
    updates = {}
    for bf16 in (False, True):
        model = make_model()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        args = training_args(tmp_path / str(bf16), max_steps=2, optim="sgd", learning_rate=0.05,
                             lr_scheduler_type="constant", max_grad_norm=0, bf16=bf16)  # fmt: skip
        trainer = NPOTrainer(model=model, args=NPOConfig(**args), forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer)  # fmt: skip
        trainer.train()
        logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        assert len(logged) == 2 and all(torch.isfinite(torch.tensor(logged)))
        assert all(p.dtype == torch.float32 for p in model.parameters())  # bf16 is autocast; the weights stay fp32
        updates[bf16] = torch.cat([p.detach().cpu().flatten() for p in model.parameters()]) - before.cpu()
    step = updates[False].norm().item()
    deviation = (updates[True] - updates[False]).norm().item() / step
    assert step > 0.5, f"the fp32 run barely moved the weights (‖Δ‖ = {step:.3g})"
    assert deviation < 0.03, f"the bf16 update is {deviation:.2%} away from the fp32 one"
    assert deviation > 1e-3, f"the bf16 update matches the fp32 one to {deviation:.2e}: bf16 did not run"


def test_peft_with_gradient_checkpointing(tmp_path, make_model, tokenizer, qa_data):
    peft = pytest.importorskip("peft")
    forget, retain = qa_data
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    args = NPOConfig(**training_args(tmp_path, max_steps=2, gradient_checkpointing=True, learning_rate=1e-2))
    trainer = NPOTrainer(model=make_model(), args=args, forget_dataset=forget, retain_dataset=retain,
                         processing_class=tokenizer, peft_config=lora)  # fmt: skip
    before = {n: p.clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if n in before)


def test_eval_dataset_of_question_answer_rows(tmp_path, memorised_model, tokenizer, qa_data):
    """`eval_loss` on question/answer rows is the causal-LM loss of the answers: the mean, over every answer token of
    the batch (the answer and its EOS; never a prompt token), of −log p(token | everything before it). Worked here
    from the tokenizer and one forward pass per row, apart from the trainer's tokenising, padding and masking."""
    forget, retain = qa_data
    config = NPOConfig(**training_args(tmp_path, max_steps=1, per_device_eval_batch_size=4))
    trainer = NPOTrainer(model=memorised_model, args=config, forget_dataset=forget, retain_dataset=retain[4:],
                         eval_dataset=retain[:4], processing_class=tokenizer)  # fmt: skip
    metrics = trainer.evaluate()
    total, count = 0.0, 0
    model = memorised_model.eval()
    for row in retain[:4]:
        prompt = tokenizer(config.prompt_template.format(question=row["question"]))["input_ids"]
        answer = tokenizer(" " + row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + answer], device=model.device)
        with torch.no_grad():
            logps = model(input_ids=ids).logits[0].float().log_softmax(-1)
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)  # logits at t predict token t + 1
        total -= logps[positions, torch.tensor(answer)].sum().item()
        count += len(answer)
    assert metrics["eval_loss"] == pytest.approx(total / count, rel=1e-4)
    assert metrics["eval_loss"] < 0.5  # the memorised model knows these answers (an untrained one: ln 500 ≈ 6.2)
