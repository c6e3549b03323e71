"""Bad input fails before the first step, with a message that names the value and the fix."""

import pytest
import torch
from conftest import training_args

import hf_unlearn
from hf_unlearn import GradDiffConfig, GradDiffTrainer, NPOConfig, NPOTrainer


def make(tmp_path, model, forget, retain, tokenizer=None, **config):
    return GradDiffTrainer(model=model, args=GradDiffConfig(**training_args(tmp_path, **config)),
                           forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer)  # fmt: skip


def test_empty_forget_set(tmp_path, make_model, tokenizer, qa_data):
    with pytest.raises(ValueError, match="forget_dataset is empty: pass at least one example"):
        make(tmp_path, make_model(), [], qa_data[1], tokenizer)


def test_forget_rows_in_retain(tmp_path, make_model, tokenizer, qa_data):
    forget, retain = qa_data
    with pytest.raises(ValueError, match=r"2 forget example\(s\) also appear in retain_dataset \(forget rows \[1, 4\]"):
        make(tmp_path, make_model(), forget, retain + [forget[1], forget[4]], tokenizer)


def test_missing_columns(tmp_path, make_model, tokenizer, qa_data):
    bad = [{"prompt": "q", "completion": "a"}]
    with pytest.raises(ValueError, match=r"forget_dataset has columns \['prompt', 'completion'\]: expected 'question'"):
        make(tmp_path, make_model(), bad, qa_data[1], tokenizer)


def test_every_label_masked(tmp_path, make_model, tokenizer, qa_data):
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [5, 6], "labels": [-100, -100]}]
    with pytest.raises(ValueError, match=r"forget_dataset row 1 has every label masked"):
        make(tmp_path, make_model(), rows, [{"input_ids": [8, 9], "labels": [8, 9]}], tokenizer)
    with pytest.raises(ValueError, match=r"raise max_length \(now 4\)"):
        make(tmp_path, make_model(), qa_data[0], qa_data[1], tokenizer, max_length=4)


def test_tokenizer_that_does_not_fit_the_model(tmp_path, make_model, tokenizer, qa_data):
    model = make_model()
    model.resize_token_embeddings(len(tokenizer) - 10)
    with pytest.raises(ValueError, match=rf"tokenizer has {len(tokenizer)} tokens but the model's embedding has "):
        make(tmp_path, model, qa_data[0], qa_data[1], tokenizer)
    rows = [{"input_ids": [3, 10_000], "labels": [-100, 10_000]}]
    with pytest.raises(ValueError, match=r"forget_dataset holds token id 10000 but the model's embedding has"):
        make(tmp_path, make_model(), rows, [{"input_ids": [3, 4], "labels": [-100, 4]}], None)


def test_unknown_method_name():
    with pytest.raises(KeyError, match=r"Unknown unlearning method 'npo2': use one of \[.*'npo'"):
        hf_unlearn.METHODS["npo2"]


def test_missing_retain_when_the_retain_term_is_on(tmp_path, make_model, tokenizer, qa_data):
    with pytest.raises(ValueError, match=r"retain term is on \(alpha=1.0\) but no retain_dataset was given"):
        make(tmp_path, make_model(), qa_data[0], None, tokenizer)


def test_bad_config_values(tmp_path):
    with pytest.raises(ValueError, match=r"retain_loss='mse' is unknown: use one of \['nll', 'kl'\]"):
        NPOConfig(output_dir=str(tmp_path), retain_loss="mse")
    with pytest.raises(ValueError, match=r"nll_reduction='mean' is unknown: use one of \['example', 'token'\]"):
        NPOConfig(output_dir=str(tmp_path), nll_reduction="mean")
    with pytest.raises(ValueError, match=r"retain_sampling='random' is unknown: use one of \['permutation', "):
        NPOConfig(output_dir=str(tmp_path), retain_sampling="random")
    with pytest.raises(ValueError, match=r"beta=0 is out of range: use 0 < beta <= 100"):
        NPOConfig(output_dir=str(tmp_path), beta=0)
    with pytest.raises(ValueError, match=r"gradient ascent has no retain term; use grad_diff"):
        hf_unlearn.GAConfig(output_dir=str(tmp_path), alpha=1.0)


def test_text_rows_without_tokenizer(tmp_path, make_model, qa_data):
    with pytest.raises(ValueError, match="no tokenizer was given: pass processing_class=tokenizer"):
        make(tmp_path, make_model(), qa_data[0], qa_data[1], None)


def test_loss_that_becomes_nan_stops_and_names_the_step(tmp_path, make_model, tokenizer, qa_data):
    """A learning rate of 1e30 blows the weights up after the first update, so step 2's gradients are NaN though its
    loss is finite: training must stop at step 2, before the update, with the
    last good checkpoint (step 1) named and the weights left finite."""
    trainer = NPOTrainer(
        model=make_model(),
        args=NPOConfig(**training_args(tmp_path, learning_rate=1e30, max_grad_norm=0, max_steps=4,
                                       save_strategy="steps", save_steps=1, optim="sgd")),
        forget_dataset=qa_data[0], retain_dataset=qa_data[1], processing_class=tokenizer,
    )  # fmt: skip
    expected = (r"gradient norm became nan at step 2\. .*the last checkpoint, .*checkpoint-1, holds finite weights "
                r"from step 1 \(loss logged at step 1: [\d.]+; check that it had not begun to diverge\)")
    with pytest.raises(hf_unlearn.NonFiniteLossError, match=expected):
        trainer.train()
    assert (tmp_path / "checkpoint-1").is_dir() and not (tmp_path / "checkpoint-2").exists()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nan_loss_is_reported_with_its_terms(tmp_path, make_model, tokenizer, qa_data):
    model = make_model()
    with torch.no_grad():
        model.get_input_embeddings().weight.fill_(float("nan"))
    trainer = NPOTrainer(model=model, args=NPOConfig(**training_args(tmp_path, max_steps=2)),
                         forget_dataset=qa_data[0], retain_dataset=qa_data[1], processing_class=tokenizer)  # fmt: skip
    with pytest.raises(hf_unlearn.NonFiniteLossError, match=r"loss became nan \(forget=nan, retain=nan\) at step 1"):
        trainer.train()


def test_empty_forget_set_is_reported_before_a_missing_retain_set(tmp_path, make_model, tokenizer):
    with pytest.raises(ValueError, match="forget_dataset is empty"):
        make(tmp_path, make_model(), [], None, tokenizer)


def test_image_rows_forget_in_retain_and_bad_labels(tmp_path, digits_data):
    from hf_unlearn.synthetic import build_tiny_image_classifier

    forget, retain = digits_data["forget"][:4], digits_data["retain"][:8]
    # the same image given as a list with `label` (as a Hub dataset holds it) is still found in the retain set
    again = {"pixel_values": forget[2]["pixel_values"].tolist(), "label": forget[2]["labels"]}
    with pytest.raises(ValueError, match=r"1 forget example\(s\) also appear in retain_dataset \(forget rows \[2\]"):
        make(tmp_path, build_tiny_image_classifier(), forget, retain + [again])
    bad = [{"pixel_values": forget[0]["pixel_values"], "labels": 1.5}]
    with pytest.raises(ValueError, match="An image row has label 1.5: labels must be one class index"):
        make(tmp_path, build_tiny_image_classifier(), bad, retain)
    unlabelled = [{"pixel_values": row["pixel_values"]} for row in forget]
    with pytest.raises(ValueError, match="An image row has no class label .* unlabelled images are for contrastive"):
        make(tmp_path, build_tiny_image_classifier(), unlabelled, retain)
    trainer = make(tmp_path, build_tiny_image_classifier(), forget, [again | {"label": 3}])
    assert set(trainer.retain_dataset[0]) == {"pixel_values", "labels"} and trainer.retain_dataset[0]["labels"] == 3
