"""GradNorm, the sixth membership-inference attack: per-row gradient norms, checked against the reference's formula,
members told from non-members, and the suites' opt-in `gradnorm=True`."""

import pytest
import torch

from hf_unlearn.data import prepare_dataset
from hf_unlearn.evaluation import evaluate_qa_suite
from hf_unlearn.evaluation.probability import gradient_norms
from hf_unlearn.synthetic import add_truth_ratio_fields, make_holdout_qa

TEMPLATE = "Question: {question}\nAnswer:"


def tokenised(rows, tokenizer):
    return prepare_dataset(rows, "rows", tokenizer, TEMPLATE, 512)


def test_gradient_norms_follow_the_reference_formula(memorised_model, tokenizer, qa_data):
    """open-unlearning's GradNormAttack, per row: `model.zero_grad(); loss.backward()` with loss = −mean of the answer
    tokens' log-probs, then the mean over parameters with a gradient of `param.grad.norm(p)`. Recomputed here that way,
    on each of 3 rows, for p = 1, 2 and inf; `gradient_norms` must leave the model's `.grad` untouched."""
    rows = tokenised(qa_data[0][:3], tokenizer)
    for p in (1, 2, float("inf")):
        expected = []
        for row in rows:
            memorised_model.zero_grad()
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            logits = memorised_model(input_ids=ids).logits[:, :-1]
            answer = labels[:, 1:] != -100
            logps = torch.log_softmax(logits, -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
            (-logps[answer].mean()).backward()
            expected.append(torch.stack([q.grad.norm(p) for q in memorised_model.parameters()]).mean())
        memorised_model.zero_grad(set_to_none=True)
        norms = gradient_norms(memorised_model, rows, p)
        torch.testing.assert_close(norms, torch.stack(expected), rtol=1e-4, atol=1e-7)  # fp32 summation order
        assert all(q.grad is None for q in memorised_model.parameters())


def test_members_have_smaller_gradients(memorised_model, tokenizer, qa_data):
    """The memorised forget rows' gradients are far smaller than those of rows about people the model never saw, so
    the score (−norm) tells them apart: AUC 1.0 here, and the suite reports it as mia_gradnorm_auc with its ROC."""
    forget, retain = qa_data
    people = {row["person"] for row in forget + retain}
    holdout = make_holdout_qa(2, 4, people)
    members = gradient_norms(memorised_model, tokenised(forget, tokenizer))
    others = gradient_norms(memorised_model, tokenised(holdout, tokenizer))
    assert members.max() < others.min()
    results = evaluate_qa_suite(memorised_model, tokenizer, add_truth_ratio_fields(forget), holdout,
                                {"retain": add_truth_ratio_fields(retain[:8])}, max_new_tokens=4, gradnorm=True)
    assert results["mia_gradnorm_auc"] == 1.0 and "gradnorm" in results["mia_roc"]
    plain = evaluate_qa_suite(memorised_model, tokenizer, add_truth_ratio_fields(forget), holdout,
                              {"retain": add_truth_ratio_fields(retain[:8])}, max_new_tokens=4)
    assert "mia_gradnorm_auc" not in plain and "mia_gradnorm_auc" not in plain["missing"]


def test_bad_norm_and_frozen_model_are_refused(memorised_model, tokenizer, qa_data):
    rows = tokenised(qa_data[0][:1], tokenizer)
    with pytest.raises(ValueError, match=r"p=3 is not a GradNorm norm: use 1, 2 or float\('inf'\)"):
        gradient_norms(memorised_model, rows, 3)
    memorised_model.requires_grad_(False)
    with pytest.raises(ValueError, match="the model has no trainable parameter"):
        gradient_norms(memorised_model, rows)
