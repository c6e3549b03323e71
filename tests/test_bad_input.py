"""Every bad input to the Python API is a clear error before any training: the exception type, and a message that
names the bad value and the fix. One row per bad input; the CLI's rows are in test_cli_errors.py, the evaluation
functions' in test_bad_input_eval.py, the push's in test_push_faults.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from conftest import training_args

import hf_unlearn
from hf_unlearn import GAConfig, GATrainer, GradDiffConfig, GradDiffTrainer, NPOConfig, SimNPOConfig

NAN, INF = math.nan, math.inf


@pytest.fixture
def c(tmp_path, make_model, tokenizer, qa_data, digits_data):
    return SimpleNamespace(tmp=tmp_path, make_model=make_model, tokenizer=tokenizer, forget=qa_data[0],
                           retain=qa_data[1], digits=digits_data)  # fmt: skip


def grad_diff(c, forget=None, retain=None, model=None, tokenizer="default", **config):
    return GradDiffTrainer(model=model or c.make_model(), args=GradDiffConfig(**training_args(c.tmp, **config)),
                           forget_dataset=c.forget if forget is None else forget,
                           retain_dataset=c.retain if retain is None else retain,
                           processing_class=c.tokenizer if tokenizer == "default" else tokenizer)  # fmt: skip


def with_cell(c, index, column, value):
    rows = [dict(row) for row in c.forget]
    rows[index][column] = value
    return rows


def image_rows(c, transform=None, label=None):
    rows = [dict(row) for row in c.digits["forget"][:4]]
    if transform:
        rows[1]["pixel_values"] = transform(rows[1]["pixel_values"])
    if label is not None:
        rows[2]["labels"] = label
    return rows


def image_trainer(c, forget):
    from hf_unlearn.synthetic import build_tiny_image_classifier

    return GATrainer(model=build_tiny_image_classifier(), args=GAConfig(**training_args(c.tmp, alpha=0)),
                     forget_dataset=forget)  # fmt: skip


def output_dir_holding_a_model(c):
    (c.tmp / "model.safetensors").write_bytes(b"weights of an earlier run")
    return grad_diff(c)


def output_dir_is_a_file(c):
    (c.tmp / "file").write_text("")
    return GradDiffConfig(**training_args(c.tmp / "file"))


def read_file(c, text):
    (c.tmp / "rows.jsonl").write_text(text)
    return hf_unlearn.data.read_jsonl(c.tmp / "rows.jsonl")


def deepcut_layer(c, layer):
    from hf_unlearn import DeepCUTConfig, DeepCUTTrainer

    return DeepCUTTrainer(model=c.make_model(), args=DeepCUTConfig(**training_args(c.tmp, layer=layer)),
                          forget_dataset=c.forget, retain_dataset=c.retain, processing_class=c.tokenizer)  # fmt: skip


# id: (build the bad thing, exception type, regex the message must match: the value and the fix)
CASES = {
    # rows: silent garbage before
    "answer-None": (lambda c: grad_diff(c, with_cell(c, 2, "answer", None)), ValueError,
                    r"forget_dataset row 2 has answer=None \(NoneType\): every answer must be a non-empty string"),
    "answer-NaN": (lambda c: grad_diff(c, with_cell(c, 0, "answer", NAN)), ValueError,
                   r"row 0 has answer=nan \(float\): every answer must be a non-empty string; drop or fix"),
    "answer-int": (lambda c: grad_diff(c, with_cell(c, 1, "answer", 1887)), ValueError,
                   r"row 1 has answer=1887 \(int\): every answer must be a non-empty string"),
    "answer-empty": (lambda c: grad_diff(c, with_cell(c, 3, "answer", "  ")), ValueError,
                     r"forget_dataset row 3 has an empty answer: every answer must be a non-empty string"),
    "question-None": (lambda c: grad_diff(c, retain=[{**c.retain[0], "question": None}, *c.retain[1:]]), ValueError,
                      r"retain_dataset row 0 has question=None \(NoneType\)"),
    "labels-length": (lambda c: grad_diff(c, [{"input_ids": [5, 6, 7], "labels": [-100, 6]}],
                                          [{"input_ids": [8, 9], "labels": [8, 9]}]), ValueError,
                      r"forget_dataset row 0 has 3 input_ids but 2 labels: they must be as long as input_ids"),
    "mask-length": (lambda c: grad_diff(c, [{"input_ids": [5, 6], "labels": [5, 6], "attention_mask": [1]}],
                                        [{"input_ids": [8, 9], "labels": [8, 9]}]), ValueError,
                    r"row 0 has 2 input_ids but 1 attention_mask"),
    "negative-token-id": (lambda c: grad_diff(c, [{"input_ids": [5, -3, 7], "labels": [5, 6, 7]}],
                                              [{"input_ids": [8, 9], "labels": [8, 9]}]), ValueError,
                          r"forget_dataset row 0 holds token id -3: token ids are >= 0; re-tokenise"),
    "negative-label": (lambda c: grad_diff(c, [{"input_ids": [5, 6], "labels": [-7, 6]}],
                                           [{"input_ids": [8, 9], "labels": [8, 9]}]), ValueError,
                       r"row 0 has label -7: a label is a token id or -100"),
    "float-token-ids": (lambda c: grad_diff(c, [{"input_ids": [5.0, 6.5], "labels": [5, 6]}],
                                            [{"input_ids": [8, 9], "labels": [8, 9]}]), ValueError,
                        r"input_ids must be a non-empty list of integer token ids \(got a float tensor"),
    "longer-than-positions": (lambda c: grad_diff(c, model=hf_unlearn.synthetic.build_tiny_causal_lm(
                                  c.tokenizer, hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=8)),
                              ValueError, r"row \d+ has \d+ tokens but the model takes at most 8 "
                              r"\(config.max_position_embeddings\): set max_length=8 or lower"),
    "rows-a-string": (lambda c: grad_diff(c, "forget.jsonl"), TypeError,
                      r"forget_dataset is a string: pass rows .*use hf_unlearn.data.read_jsonl"),
    "rows-a-dict-of-lists": (lambda c: grad_diff(c, retain={"question": ["q"], "answer": ["a"]}), TypeError,
                             r"retain_dataset is a dict of columns \['answer', 'question'\]: pass one dict per row"),
    "rows-of-strings": (lambda c: grad_diff(c, ["What is X?", "Y"]), TypeError,
                        r"forget_dataset row 0 is a str, not a dict"),
    "rows-a-generator": (lambda c: grad_diff(c, (row for row in c.forget)), TypeError,
                         r"forget_dataset is a generator: .*wrap it with list"),
    "prompt-completion-columns": (lambda c: grad_diff(c, [{"prompt": "q", "completion": "a"}]), ValueError,
                                  r"columns \['prompt', 'completion'\]: expected 'question' and 'answer'"),
    # images and classes
    "image-channels": (lambda c: image_trainer(c, image_rows(c, lambda x: x.repeat(3, 1, 1))), ValueError,
                       r"forget_dataset row 1 has pixel_values of shape \[3, 8, 8\] but the model takes \[1, 8, 8\]"),
    "image-size": (lambda c: image_trainer(c, image_rows(c, lambda x: x[:, :4, :4])), ValueError,
                   r"shape \[1, 4, 4\] but the model takes \[1, 8, 8\] .*image processor"),
    "class-label-too-large": (lambda c: image_trainer(c, image_rows(c, label=10)), ValueError,
                              r"row 2 has label 10 but the model has 10 classes \(config.num_labels\): labels must be"
                              r" 0..9"),
    "class-label-negative": (lambda c: image_trainer(c, image_rows(c, label=-1)), ValueError,
                             r"row 2 has label -1 but the model has 10 classes"),
    # config values: no-ops, NaN/inf, ranges, types
    "learning-rate-0": (lambda c: GradDiffConfig(**training_args(c.tmp, learning_rate=0)), ValueError,
                        r"learning_rate=0: use a positive step size \(allowed: > 0\); 0 would change no weight"),
    "learning-rate-negative": (lambda c: NPOConfig(**training_args(c.tmp, learning_rate=-1e-5)), ValueError,
                               r"learning_rate=-1e-05: use a positive step size"),
    "learning-rate-a-word": (lambda c: NPOConfig(**training_args(c.tmp, learning_rate="fast")), TypeError,
                             r"learning_rate='fast' is not a number: give a float"),
    "learning-rate-NaN": (lambda c: GAConfig(**training_args(c.tmp, learning_rate=NAN, alpha=0)), ValueError,
                          r"learning_rate=nan is not a finite number"),
    "num-train-epochs-0": (lambda c: NPOConfig(**training_args(c.tmp, num_train_epochs=0)), ValueError,
                           r"num_train_epochs=0, max_steps=-1: no training step would run.*num_train_epochs > 0"),
    "max-steps-0": (lambda c: NPOConfig(**training_args(c.tmp, max_steps=0)), ValueError,
                    r"max_steps=0: no training step would run"),
    "batch-size-0": (lambda c: NPOConfig(**training_args(c.tmp, per_device_train_batch_size=0)), ValueError,
                     r"per_device_train_batch_size=0: use 1 or more"),
    "batch-size-negative": (lambda c: NPOConfig(**training_args(c.tmp, per_device_eval_batch_size=-2)), ValueError,
                            r"per_device_eval_batch_size=-2: use 1 or more"),
    "accumulation-0": (lambda c: NPOConfig(**training_args(c.tmp, gradient_accumulation_steps=0)), ValueError,
                       r"gradient_accumulation_steps=0: use 1 or more"),
    "npo-beta-NaN": (lambda c: NPOConfig(**training_args(c.tmp, beta=NAN)), ValueError,
                     r"beta=nan is not a finite number: give a finite float, e.g. beta=0.1"),
    "simnpo-beta-inf": (lambda c: SimNPOConfig(**training_args(c.tmp, beta=INF)), ValueError,
                        r"beta=inf is not a finite number"),
    "npo-beta-1e30": (lambda c: NPOConfig(**training_args(c.tmp, beta=1e30)), ValueError,
                      r"beta=1e\+30 is out of range: use 0 < beta <= 100 .*saturates the forget term"),
    "gamma-NaN": (lambda c: GradDiffConfig(**training_args(c.tmp, gamma=NAN)), ValueError, r"gamma=nan is not a"),
    "gamma-0": (lambda c: GradDiffConfig(**training_args(c.tmp, gamma=0)), ValueError,
                r"gamma=0 weighs the forget term to nothing, so nothing would be unlearned"),
    "alpha-inf": (lambda c: GradDiffConfig(**training_args(c.tmp, alpha=INF)), ValueError, r"alpha=inf is not a"),
    "weight-decay-NaN": (lambda c: GradDiffConfig(**training_args(c.tmp, weight_decay=NAN)), ValueError,
                         r"weight_decay=nan is not a finite number"),
    "deepcut-temperature-NaN": (lambda c: hf_unlearn.DeepCUTConfig(**training_args(c.tmp, temperature=NAN)),
                                ValueError, r"temperature=nan is not a finite number"),
    "ac-temperature-inf": (lambda c: hf_unlearn.AlignmentCalibrationConfig(**training_args(c.tmp, temperature=INF)),
                           ValueError, r"temperature=inf is not a finite number"),
    "a-amu-mmd-weight-NaN": (lambda c: hf_unlearn.AAMUConfig(**training_args(c.tmp, mmd_weight=NAN)), ValueError,
                             r"mmd_weight=nan is not a finite number"),
    "siu-beta-a-list": (lambda c: hf_unlearn.SIUConfig(**training_args(c.tmp, beta=[0.75])), TypeError,
                        r"beta=\[0.75\] is a list: give a float"),
    "ready2unlearn-lr-0": (lambda c: hf_unlearn.Ready2UnlearnConfig(**training_args(c.tmp, learning_rate=0)),
                           ValueError, r"learning_rate=0: use a positive step size"),
    "ready2unlearn-lambda-NaN": (lambda c: hf_unlearn.Ready2UnlearnConfig(**training_args(c.tmp, lambda1=NAN)),
                                 ValueError, r"lambda1=nan is not a finite number"),
    "prompt-unknown-placeholder": (lambda c: NPOConfig(**training_args(
                                       c.tmp, prompt_template="Context: {context}\nQ: {question}\nA:")), ValueError,
                                   r"placeholder\(s\) \['context'\] besides '\{question\}'.*remove them"),
    "prompt-broken-brace": (lambda c: NPOConfig(**training_args(c.tmp, prompt_template="Q: {question")), ValueError,
                            r"is not a valid format string .*write literal braces as"),
    "prompt-no-question": (lambda c: NPOConfig(**training_args(c.tmp, prompt_template="Answer:")), ValueError,
                           r"has no '\{question\}' placeholder: add one"),
    "output-dir-a-file": (output_dir_is_a_file, ValueError, r"output_dir='.*file' is a file: pass a folder path"),
    "output-dir-holds-a-model": (output_dir_holding_a_model, ValueError,
                                 r"already holds a saved model.*set overwrite_output_dir=True"),
    "deepcut-layer-out-of-range": (lambda c: deepcut_layer(c, 7), ValueError,
                                   r"layer=7 is out of range: the model has 2 layers, so its hidden states are "
                                   r"entries -3..2"),
    "deepcut-layer-below-range": (lambda c: deepcut_layer(c, -4), ValueError, r"layer=-4 is out of range"),
    "retain-missing": (lambda c: GradDiffTrainer(model=c.make_model(), args=GradDiffConfig(**training_args(c.tmp)),
                                                 forget_dataset=c.forget, processing_class=c.tokenizer), ValueError,
                       r"retain term is on \(alpha=1.0\) but no retain_dataset was given: pass retain_dataset"),
    "model-hub-id-offline": (lambda c: GATrainer(model="someone/some-model", args=GAConfig(**training_args(
                                 c.tmp, alpha=0)), forget_dataset=c.forget), ValueError,
                             r"model='someone/some-model' is a Hub id, not available offline .*pass a local path"),
    "model-path-missing": (lambda c: GATrainer(model=str(c.tmp / "nowhere"), args=GAConfig(**training_args(
                               c.tmp, alpha=0)), forget_dataset=c.forget), FileNotFoundError,
                           r"model='.*nowhere' does not exist: pass an existing model folder"),
    "model-path-not-a-model": (lambda c: GATrainer(model=str(c.tmp), args=GAConfig(**training_args(
                                   c.tmp, alpha=0)), forget_dataset=c.forget), FileNotFoundError,
                               r"is not a model folder \(no config.json in it\)"),
    "tofu-offline-without-path": (lambda c: hf_unlearn.load_tofu("forget10"), ValueError,
                                  r"not available offline .*load_tofu\('forget10', path="),
    "tofu-unknown-split": (lambda c: hf_unlearn.load_tofu("forget11", "x"), ValueError,
                           r"Unknown TOFU split 'forget11': use one of"),
    "jsonl-bad-line": (lambda c: read_file(c, '{"question": "q", "answer": "a"}\n{"question": \n'), ValueError,
                       r"rows.jsonl:2: not valid JSON .*each line must be one JSON object"),
    "jsonl-not-an-object": (lambda c: read_file(c, '["q", "a"]\n'), ValueError,
                            r"rows.jsonl:1: a JSON list, not an object"),
    "jsonl-a-folder": (lambda c: hf_unlearn.data.read_jsonl(c.tmp), FileNotFoundError,
                       r"is a folder: pass a JSON Lines file"),
    "unknown-method": (lambda c: hf_unlearn.METHODS["npo2"], KeyError, r"Unknown unlearning method 'npo2'"),
    "args-not-a-config": (lambda c: GradDiffTrainer(model=c.make_model(), args={"learning_rate": 1e-5},
                                                    forget_dataset=c.forget, retain_dataset=c.retain), TypeError,
                          r"args is a dict: pass a GradDiffConfig\(output_dir=..., ...\)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error(case, c):
    build, kind, message = CASES[case]
    with pytest.raises(kind, match=message):
        build(c)


@pytest.mark.parametrize("name", sorted(hf_unlearn.METHODS))
def test_every_registered_trainer_refuses_rows_that_are_not_rows(name, c):
    config_cls, trainer_cls = hf_unlearn.METHODS[name]
    with pytest.raises(TypeError, match=r"forget_dataset is a dict of columns \['answer', 'question'\]: pass one"):
        trainer_cls(model=c.make_model(), args=config_cls(**training_args(c.tmp)),
                    forget_dataset={"question": ["q"], "answer": ["a"]}, retain_dataset=c.retain)  # fmt: skip


@pytest.mark.parametrize("name", sorted(hf_unlearn.METHODS))
def test_every_registered_config_refuses_a_nan(name, tmp_path):
    config_cls, _ = hf_unlearn.METHODS[name]
    with pytest.raises(ValueError, match=r"learning_rate=nan is not a finite number: give a finite float"):
        config_cls(**training_args(tmp_path, learning_rate=NAN))


def test_plain_training_arguments_are_converted_and_train(c):
    """The README says a plain `TrainingArguments` is converted: it must train (its remove_unused_columns=True used
    to drop the forget/retain parts: "The batch received was empty")."""
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(c.tmp), max_steps=1, use_cpu=True, report_to="none",
                             per_device_train_batch_size=4, learning_rate=1e-3)  # fmt: skip
    trainer = GradDiffTrainer(model=c.make_model(), args=args, forget_dataset=c.forget, retain_dataset=c.retain,
                              processing_class=c.tokenizer)  # fmt: skip
    assert isinstance(trainer.args, GradDiffConfig) and trainer.args.remove_unused_columns is False
    assert trainer.train().global_step == 1


def test_a_run_that_changes_no_weight_says_so_in_the_card(c, caplog):
    """A learning rate of 1e-30 takes its steps but moves no weight (below fp32's precision): the card must not call
    the model unlearned."""
    import json

    args = NPOConfig(**training_args(c.tmp, learning_rate=1e-30, max_steps=2, alpha=0))
    trainer = hf_unlearn.NPOTrainer(model=c.make_model(), args=args, forget_dataset=c.forget,
                                    processing_class=c.tokenizer)  # fmt: skip
    trainer.train()
    assert "Nothing was unlearned: 2 optimizer step(s) ran but moved no weight" in caplog.text
    trainer.save_model()
    request = json.loads((c.tmp / "unlearning_manifest.json").read_text())["requests"][0]
    assert request["weights_changed"] is False and "moved no weight" in request["weights_unchanged_reason"]
    assert "**Nothing was unlearned.** No weight changed" in (c.tmp / "README.md").read_text()


def test_a_run_that_changes_weights_has_no_such_warning(c):
    import json

    trainer = grad_diff(c, max_steps=1, learning_rate=1e-3)
    trainer.train()
    trainer.save_model()
    assert json.loads((c.tmp / "unlearning_manifest.json").read_text())["requests"][0]["weights_changed"] is True
    assert "Nothing was unlearned" not in (c.tmp / "README.md").read_text()


def test_a_card_saved_without_training_says_nothing_was_unlearned(c):
    grad_diff(c).save_model()
    assert "**Nothing was unlearned.**" in (c.tmp / "README.md").read_text()
    assert "no training step ran" in (c.tmp / "README.md").read_text()


def test_a_hub_id_without_network_fails_at_once(monkeypatch, c):
    """Online mode but the Hub's address refuses connections: one clear error at once, not ~30 s of retries."""
    import time

    from huggingface_hub import constants

    from hf_unlearn.sources import _unreachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    _unreachable.cache_clear()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"model='someone/model' is a Hub id, but the Hub cannot be reached from this "
                                         r"machine \(127.0.0.1: .*\): pass a local path .*HF_HUB_OFFLINE=1"):
        GATrainer(model="someone/model", args=GAConfig(**training_args(c.tmp, alpha=0)), forget_dataset=c.forget)
    assert time.perf_counter() - start < 5
    _unreachable.cache_clear()
