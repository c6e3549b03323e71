"""`UnlearningEvalCallback` measures during unlearning and stops at the forget target, recording the checkpoint."""

import json

import pytest
from conftest import training_args

from hf_unlearn import GAConfig, GATrainer, UnlearningEvalCallback


def test_stops_at_the_forget_target_and_records_the_checkpoint(tmp_path, memorised_model, tokenizer, qa_data):
    callback = UnlearningEvalCallback(eval_steps=1, stop_when={"forget_probability": ("<=", 0.5)})
    args = GAConfig(**training_args(tmp_path, max_steps=60, learning_rate=1e-3, save_strategy="steps",
                                    save_steps=1000))  # fmt: skip
    trainer = GATrainer(model=memorised_model, args=args, forget_dataset=qa_data[0], processing_class=tokenizer,
                        callbacks=[callback])  # fmt: skip
    trainer.train()
    step = callback.chosen_step
    assert step is not None and trainer.state.global_step == step < 60
    probabilities = [entry["forget_probability"] for entry in callback.history]
    assert probabilities[-1] <= 0.5 < probabilities[-2]  # stopped at the first evaluation that met the target
    assert probabilities[0] > 0.9 and "retain_probability" not in callback.history[0]  # GA holds no retain set
    assert (tmp_path / f"checkpoint-{step}").is_dir()
    record = json.loads((tmp_path / "unlearning_eval.json").read_text())
    assert record["chosen_checkpoint"] == f"checkpoint-{step}" and len(record["history"]) == step
    assert any(entry.get("chosen_checkpoint") == f"checkpoint-{step}" for entry in trainer.state.log_history)


def test_target_met_without_checkpoints_writes_none(tmp_path, memorised_model, tokenizer, qa_data):
    callback = UnlearningEvalCallback(eval_steps=1, stop_when={"forget_probability": ("<=", 0.5)})
    args = GAConfig(**training_args(tmp_path, max_steps=60, learning_rate=1e-3))  # save_strategy="no"
    trainer = GATrainer(model=memorised_model, args=args, forget_dataset=qa_data[0], processing_class=tokenizer,
                        callbacks=[callback])  # fmt: skip
    trainer.train()
    assert callback.chosen_step == trainer.state.global_step < 60
    assert not list(tmp_path.glob("checkpoint-*"))
    record = json.loads((tmp_path / "unlearning_eval.json").read_text())
    assert record["chosen_step"] == callback.chosen_step and record["chosen_checkpoint"] is None


def test_custom_metrics_and_bad_targets(tmp_path, make_model, tokenizer, qa_data):
    with pytest.raises(ValueError, match=r"stop_when\['forget_quality'\] uses '=>': use one of"):
        UnlearningEvalCallback(stop_when={"forget_quality": ("=>", 0.05)})
    calls = []
    callback = UnlearningEvalCallback(lambda model: calls.append(1) or {"score": 1.0}, eval_steps=2,
                                      stop_when={"forget_quality": (">=", 0.05)})  # fmt: skip
    trainer = GATrainer(model=make_model(), args=GAConfig(**training_args(tmp_path, max_steps=4)),
                        forget_dataset=qa_data[0], processing_class=tokenizer, callbacks=[callback])  # fmt: skip
    with pytest.raises(ValueError, match=r"stop_when names \['forget_quality'\], which the metrics do not have"):
        trainer.train()
    assert calls == [1]
