"""Bad inputs to the public evaluation and preparation functions: each is refused up front with the exception type a
caller expects and a message that names the bad value and the fix — before any model runs (every model here raises
AssertionError in its forward, and every encoder in its call, so a check that came after a forward would fail the
test with that instead). Also: a metric that comes out NaN is reported under `missing`, never as a number."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import TOFU_PATH

from hf_unlearn.encoders import build_tiny_contrastive_encoder, image_embeddings
from hf_unlearn.evaluation import (
    accuracy_and_macro_f1,
    answer_stats,
    classifier_mia_auc,
    evaluate_classifier,
    evaluate_qa_suite,
    evaluate_tofu,
    forget_quality,
    greedy_answers,
    mia_roc,
    min_k_score,
    privleak,
    rouge_l_recall,
    token_statistics,
    truth_ratio,
)
from hf_unlearn.evaluation.audit import audit_encoder, audit_numbers, fit_threshold
from hf_unlearn.evaluation.mmubench import evaluate_mmubench
from hf_unlearn.evaluation.report import flat_numbers
from hf_unlearn.preparation import blend_condense, load_image_rows, save_image_rows
from hf_unlearn.synthetic import add_truth_ratio_fields, build_tiny_causal_lm, build_tiny_image_classifier

NAN = float("nan")


def exploding(model):
    """`model` whose forward raises AssertionError (its signature kept, so input-name checks still see it)."""
    forward = model.forward

    @functools.wraps(forward)
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran before the bad input was refused")

    model.forward = refuse
    return model


def boom(batch):
    raise AssertionError("the encoder ran before the bad input was refused")


@pytest.fixture(scope="module")
def ctx(tokenizer, qa_data, digits_data, tmp_path_factory):
    forget, retain = qa_data
    partial_tofu = tmp_path_factory.mktemp("partial_tofu")  # one split file of the seven evaluate_tofu reads
    (partial_tofu / "forget01_perturbed.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    junk = tmp_path_factory.mktemp("junk") / "rows.safetensors"
    junk.write_text("not a safetensors file")
    tokenised = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5, 8], "labels": [-100, 8]}]
    return SimpleNamespace(
        tok=tokenizer,
        lm=exploding(build_tiny_causal_lm(tokenizer, hidden_size=16, num_layers=1, num_heads=2)),
        forget=add_truth_ratio_fields(forget[:3]),
        retain=add_truth_ratio_fields(retain[:3]),
        holdout=[{"question": r["question"], "answer": r["answer"]} for r in retain[3:6]],
        tokenised=tokenised,
        vit=exploding(build_tiny_image_classifier(seed=0)),
        digits=digits_data["forget"] + digits_data["retain"][:20],
        points=torch.randn(8, 4, generator=torch.Generator().manual_seed(0)),
        partial_tofu=partial_tofu,
        junk=junk,
        missing_dir=tmp_path_factory.mktemp("gone") / "no" / "such" / "folder",
        processor=SimpleNamespace(tokenizer=tokenizer),
        encoder=exploding(build_tiny_contrastive_encoder(seed=0)),
    )


def tofu(c, **kw):
    # every bad argument is refused before the folder is looked at, so these cases run without TOFU's files too
    return evaluate_tofu(c.lm, c.tok, **{"forget_split": "forget01", "path": TOFU_PATH, "limit": 2, **kw})


def qa(c, **kw):
    args = {"forget_rows": c.forget, "holdout_rows": c.holdout, "utility_splits": {"retain": c.retain}, **kw}
    return evaluate_qa_suite(c.lm, c.tok, max_new_tokens=4, **args)


def classifier(c, **kw):
    splits = {"forget": c.digits[:5], "retain": c.digits[5:20], "test": c.digits[20:40], **kw}
    return evaluate_classifier(c.vit, **splits)


def with_row(rows, index, **change):
    rows = list(rows)
    rows[index] = {**rows[index], **change}
    return rows


def audit(c, **kw):
    return audit_encoder(**{"embed_fn": boom, "forget_examples": c.points[:4], "heldout_examples": c.points[4:],
                            "num_views": 2, **kw})  # fmt: skip


def blend(c, **kw):
    args = {"retain_dataset": c.digits[5:], "forget_dataset": c.digits[:5], "progress": False, **kw}
    return blend_condense(**args)


def mmubench(c, **kw):
    args = {"concept_name": "Zorblat", "train_image": object(), "unseen_images": [object()],
            "other_concepts": {"Quimby": [object()]}, "processor": c.processor, **kw}  # fmt: skip
    return evaluate_mmubench(c.lm, c.lm, **args)


def dict_of_columns(rows):
    return {key: [row[key] for row in rows] for key in rows[0]}


CASES = [
    # --- evaluate_tofu --------------------------------------------------------------------------------------------
    pytest.param(lambda c: tofu(c, limit=0), ValueError,
                 r"limit=0: pass None \(every row\) or a whole number of rows >= 1", id="tofu-limit-0"),
    pytest.param(lambda c: tofu(c, limit=-1), ValueError, r"limit=-1: pass None \(every row\) or .* >= 1",
                 id="tofu-limit-negative"),
    pytest.param(lambda c: tofu(c, limit=2.5), TypeError, r"limit=2\.5 is a float: pass None \(every row\) or a whole",
                 id="tofu-limit-float"),
    pytest.param(lambda c: tofu(c, max_new_tokens=0), ValueError,
                 r"max_new_tokens=0: pass a whole number of tokens >= 1", id="tofu-max-new-tokens-0"),
    pytest.param(lambda c: tofu(c, max_new_tokens=-4), ValueError, r"max_new_tokens=-4: pass a whole number .* >= 1",
                 id="tofu-max-new-tokens-negative"),
    pytest.param(lambda c: tofu(c, batch_size=0), ValueError, r"batch_size=0: pass a whole number .* >= 1",
                 id="tofu-batch-size-0"),
    pytest.param(lambda c: tofu(c, batch_size="8"), TypeError, r"batch_size='8' is a str: pass a whole number",
                 id="tofu-batch-size-str"),
    pytest.param(lambda c: tofu(c, generation_batch_size=-2), ValueError,
                 r"generation_batch_size=-2: pass None \(batch_size\) or a whole number", id="tofu-generation-batch"),
    pytest.param(lambda c: tofu(c, forget_split="forget02"), ValueError,
                 r"forget_split='forget02': use forget01, forget05 or forget10", id="tofu-unknown-split"),
    pytest.param(lambda c: tofu(c, path="/no/such/tofu"), FileNotFoundError,
                 r"path='/no/such/tofu' does not exist: pass the folder that holds TOFU's", id="tofu-path-missing"),
    pytest.param(lambda c: tofu(c, path=c.partial_tofu), FileNotFoundError,
                 r"lacks \['holdout01\.jsonl', .*download those TOFU splits", id="tofu-path-lacks-split"),
    pytest.param(lambda c: tofu(c, gold_mia_auc=NAN), ValueError,
                 r"gold_mia_auc=nan is not a finite number: pass None \(no PrivLeak\) or a number in \[0, 1\)",
                 id="tofu-gold-auc-nan"),
    pytest.param(lambda c: tofu(c, gold_mia_auc=1.5), ValueError, r"gold_mia_auc=1\.5 is not in \[0, 1\): pass",
                 id="tofu-gold-auc-out-of-range"),
    pytest.param(lambda c: tofu(c, gold_mia_auc=1.0), ValueError, r"gold_mia_auc=1 is not in \[0, 1\): pass",
                 id="tofu-gold-auc-one"),  # MUSE's PrivLeak divides by 1 − AUC
    pytest.param(lambda c: tofu(c, gold_forget_truth_ratios=[0.5, NAN]), ValueError,
                 r"gold_forget_truth_ratios holds NaN at position\(s\) \[1\]: pass non-NaN", id="tofu-gold-ratios-nan"),
    pytest.param(lambda c: tofu(c, privleak_attack="reference"), ValueError,
                 r"privleak_attack='reference': use loss, .*'reference' needs reference_model",
                 id="tofu-reference-attack-without-model"),
    pytest.param(lambda c: tofu(c, privleak_attack="gradnorm"), ValueError,
                 r"privleak_attack='gradnorm': use loss, zlib, min_k or min_k_plus_plus", id="tofu-unknown-attack"),
    # --- evaluate_qa_suite ----------------------------------------------------------------------------------------
    pytest.param(lambda c: qa(c, forget_rows="forget.jsonl"), TypeError,
                 r"forget_rows is a string \('forget\.jsonl'\), not rows: pass a list of dicts", id="qa-rows-string"),
    pytest.param(lambda c: qa(c, forget_rows=dict_of_columns(c.forget)), TypeError,
                 r"forget_rows is a dict \(keys .*\), not a list of rows: .*datasets\.Dataset\.from_dict",
                 id="qa-rows-dict-of-lists"),
    pytest.param(lambda c: qa(c, holdout_rows=[{"question": "Where?"}]), ValueError,
                 r"holdout_rows\[0\] lacks \['answer'\]: each row needs 'question', 'answer'", id="qa-missing-column"),
    pytest.param(lambda c: qa(c, holdout_rows=[]), ValueError, r"holdout_rows is empty: pass at least 1 row",
                 id="qa-empty-rows"),
    pytest.param(lambda c: qa(c, forget_rows=with_row(c.forget, 1, perturbed_answer="wrong")), TypeError,
                 r"forget_rows\[1\]\['perturbed_answer'\]='wrong' is a str: pass a list of wrong answers",
                 id="qa-perturbed-string"),
    pytest.param(lambda c: qa(c, forget_rows=[1, 2]), TypeError, r"forget_rows\[0\] is an int \(1\), not a dict: pass",
                 id="qa-rows-of-ints"),
    pytest.param(lambda c: qa(c, utility_splits={}), ValueError, r"utility_splits=\{\}: pass a non-empty dict",
                 id="qa-no-utility-split"),
    pytest.param(lambda c: qa(c, utility_splits={"forget": c.retain}), ValueError,
                 r"utility_splits has the key 'forget': name each utility split .* other than 'forget'",
                 id="qa-utility-named-forget"),
    # --- token statistics and generation --------------------------------------------------------------------------
    pytest.param(lambda c: answer_stats(c.lm, c.forget), ValueError,
                 r"rows\[0\] lacks \['input_ids', 'labels'\].*Tokenise question/answer rows first",
                 id="answer-stats-untokenised"),
    pytest.param(lambda c: answer_stats(c.lm, c.tokenised, batch_size=0), ValueError,
                 r"batch_size=0: pass a whole number .* >= 1", id="answer-stats-batch-size-0"),
    pytest.param(lambda c: token_statistics(c.lm, c.tokenised, pad_token_id=-1), ValueError,
                 r"pad_token_id=-1: pass a whole number >= 0; use tokenizer\.pad_token_id", id="token-stats-pad-id"),
    pytest.param(lambda c: greedy_answers(c.lm, c.tok, "Where does Ana live?"), TypeError,
                 r"questions is one string \('Where does Ana live\?'\), not a list of questions: pass \[",
                 id="greedy-one-string"),
    pytest.param(lambda c: greedy_answers(c.lm, c.tok, ["Where?"], "Q: {q}"), ValueError,
                 r"prompt_template='Q: \{q\}' does not format .*use \{question\}", id="greedy-bad-template"),
    # --- metrics ----------------------------------------------------------------------------------------------------
    pytest.param(lambda c: min_k_score(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), 0), ValueError,
                 r"k=0 is not in \(0, 1\]: pass a number in \(0, 1\]", id="min-k-zero"),
    pytest.param(lambda c: min_k_score(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), 1.5), ValueError,
                 r"k=1\.5 is not in \(0, 1\]: pass a number in \(0, 1\]", id="min-k-above-one"),
    pytest.param(lambda c: min_k_score(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), NAN), ValueError,
                 r"k=nan is not a finite number: pass a number in \(0, 1\]", id="min-k-nan"),
    pytest.param(lambda c: privleak(NAN, 0.5), ValueError, r"auc_unlearned=nan is not a finite number: pass a number",
                 id="privleak-nan"),
    pytest.param(lambda c: privleak(0.5, 1.0), ValueError, r"privleak needs the gold model's AUC < 1, got 1\.0",
                 id="privleak-gold-auc-one"),
    pytest.param(lambda c: mia_roc([1.0, NAN], [0.0, 1.0]), ValueError, r"NaN or inf .*: clamp or drop those examples",
                 id="mia-roc-nan"),
    pytest.param(lambda c: truth_ratio(torch.zeros(3), torch.zeros(3)), ValueError,
                 r"shape \(3,\) and perturbed_mean_logps \(3,\): pass \[N\] and \[N, K\]", id="truth-ratio-shapes"),
    pytest.param(lambda c: rouge_l_recall("the cat", "the cat sat"), TypeError,
                 r"predictions is one string \('the cat'\), not a list .*: pass \['the cat'\]", id="rouge-strings"),
    pytest.param(lambda c: forget_quality([0.5, NAN], [0.5, 0.7]), ValueError,
                 r"unlearned_truth_ratios holds NaN at position\(s\) \[1\]: pass non-NaN", id="forget-quality-nan"),
    # --- evaluate_classifier ----------------------------------------------------------------------------------------
    pytest.param(lambda c: classifier(c, retain=with_row(c.digits[5:20], 3, labels=10)), ValueError,
                 r"retain\[3\]\['labels'\]=10: .*num_labels=10, so labels are 0\.\.9; fix the label",
                 id="classifier-label-too-large"),
    pytest.param(lambda c: classifier(c, test=with_row(c.digits[20:40], 0, labels=-1)), ValueError,
                 r"test\[0\]\['labels'\]=-1: .*labels are 0\.\.9; fix the label", id="classifier-label-negative"),
    pytest.param(lambda c: classifier(c, test=with_row(c.digits[20:40], 2, labels=1.5)), TypeError,
                 r"test\[2\]\['labels'\]=1\.5 is a float: .*one int class index", id="classifier-label-float"),
    pytest.param(lambda c: classifier(c, test=with_row(c.digits[20:40], 1, pixel_values=torch.zeros(3, 8, 8))),
                 ValueError, r"test\[1\]\['pixel_values'\] has shape \[3, 8, 8\], .*takes \[1, 8, 8\].*image processor",
                 id="classifier-channels"),
    pytest.param(lambda c: classifier(c, retain=with_row(c.digits[5:20], 0, pixel_values=torch.zeros(1, 16, 16))),
                 ValueError, r"retain\[0\]\['pixel_values'\] has shape \[1, 16, 16\], .*takes \[1, 8, 8\]",
                 id="classifier-image-size"),
    pytest.param(lambda c: classifier(c, forget=c.digits[:1]), ValueError,
                 r"forget split has 1 row: .*at least 2 forget .*pass more rows", id="classifier-one-forget-row"),
    pytest.param(lambda c: evaluate_classifier(c.vit, c.digits[:5], c.digits[5:20], c.digits[20:40], batch_size=0),
                 ValueError, r"batch_size=0: pass a whole number .* >= 1", id="classifier-batch-size-0"),
    pytest.param(lambda c: classifier(c, retain="retain.jsonl"), TypeError,
                 r"retain is a string \('retain\.jsonl'\), not rows: pass a list of dicts",
                 id="classifier-rows-string"),
    pytest.param(lambda c: classifier(c, retain=dict_of_columns(c.digits[5:20])), TypeError,
                 r"retain is a dict \(keys \['labels', 'pixel_values'\]\), not a list of rows", id="classifier-dict"),
    pytest.param(lambda c: classifier_mia_auc([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], n_splits=1), ValueError,
                 r"n_splits=1: pass a whole number of cross-validation folds >= 2", id="classifier-attack-folds"),
    pytest.param(lambda c: accuracy_and_macro_f1(torch.zeros(3, 2), torch.zeros(2)), ValueError,
                 r"logits \(3, 2\) and labels \(2,\): pass logits \[N, C\] and labels \[N\]", id="accuracy-lengths"),
    # --- audit_encoder ----------------------------------------------------------------------------------------------
    pytest.param(lambda c: audit(c, num_views=1), ValueError, r"num_views=1: pass a whole number of views >= 2",
                 id="audit-one-view"),
    pytest.param(lambda c: audit(c, num_views=0), ValueError, r"num_views=0: pass a whole number of views >= 2",
                 id="audit-zero-views"),
    pytest.param(lambda c: audit(c, emia_threshold="median"), ValueError,
                 r"emia_threshold='median' is not a threshold rule; use one of \('accuracy', 'logistic'\)",
                 id="audit-unknown-rule"),
    pytest.param(lambda c: audit(c, heldout_examples=["a photo", "a dog"]), ValueError,
                 r"different kinds \(forget_examples: tensor, heldout_examples: list of strings\): pass them all",
                 id="audit-mixed-kinds"),
    pytest.param(lambda c: audit(c, heldout_examples=torch.zeros(3, 5)), ValueError,
                 r"different shapes per example \(forget_examples: \[4\], heldout_examples: \[5\]\): process them",
                 id="audit-mixed-shapes"),
    pytest.param(lambda c: audit(c, forget_examples=c.points[:0]), ValueError,
                 r"forget_examples is empty: pass at least 2 examples", id="audit-empty-forget"),
    pytest.param(lambda c: audit(c, retrained_embed_fn=boom), ValueError,
                 r"retrained_embed_fn was given without reference_embed_fn: .*pass the original encoder",
                 id="audit-retrained-without-reference"),
    pytest.param(lambda c: audit(c, retain_examples=c.points, labels={"forget": [0, 1], "heldout": [0] * 4,
                                                                      "retain": [0] * 8}),  # fmt: skip
                 ValueError, r"forget_examples has 4 item\(s\) but labels\['forget'\] has 2: pass one of",
                 id="audit-labels-length"),
    pytest.param(lambda c: audit(c, num_bootstrap=0), ValueError, r"num_bootstrap=0: pass a whole number .* >= 1",
                 id="audit-no-bootstrap"),
    pytest.param(lambda c: audit(c, embed_fn="clip"), TypeError, r"embed_fn='clip' is a str, not callable: pass a",
                 id="audit-embed-not-callable"),
    pytest.param(lambda c: fit_threshold([], [1.0, 2.0]), ValueError,
                 r"member_scores is empty: pass at least 1 number", id="fit-threshold-empty"),
    pytest.param(lambda c: fit_threshold([NAN, 1.0], [1.0, 2.0]), ValueError,
                 r"member_scores holds NaN or inf at position\(s\) \[0\]: pass finite numbers", id="fit-threshold-nan"),
    # --- blend_condense and image rows ------------------------------------------------------------------------------
    pytest.param(lambda c: blend(c, images_per_class=0), ValueError,
                 r"images_per_class=0: pass a whole number of clusters per class >= 1", id="blend-images-per-class"),
    pytest.param(lambda c: blend(c, steps=-1), ValueError, r"steps=-1: pass a whole number of SGD steps >= 0",
                 id="blend-negative-steps"),
    pytest.param(lambda c: blend(c, batch_size=0), ValueError, r"batch_size=0: pass a whole number .* >= 1",
                 id="blend-batch-size"),
    pytest.param(lambda c: blend(c, lr=NAN), ValueError, r"lr=nan is not a finite number: pass a number > 0",
                 id="blend-lr-nan"),
    pytest.param(lambda c: blend(c, forget_dataset=[{**r, "pixel_values": torch.zeros(3, 8, 8)} for r in c.digits[:5]]),
                 ValueError, r"forget images are \(3, 8, 8\) but retain images are \(1, 8, 8\): process both",
                 id="blend-image-shapes"),  # fmt: skip
    pytest.param(lambda c: blend(c, forget_dataset=with_row(c.digits[:5], 2, labels="three")), TypeError,
                 r"forget_dataset\[2\]\['labels'\]='three' is a str: .*one int class index", id="blend-label-str"),
    pytest.param(lambda c: blend(c, retain_dataset=with_row(c.digits[5:], 4, labels=2.5)), TypeError,
                 r"retain_dataset\[4\]\['labels'\]=2\.5 is a float: .*one int class index", id="blend-label-float"),
    pytest.param(lambda c: blend(c, forget_dataset=with_row(c.digits[:5], 4, pixel_values=torch.zeros(1, 9, 9))),
                 ValueError, r"forget_dataset\[4\]\['pixel_values'\] has shape \[1, 9, 9\] but .*process every image",
                 id="blend-ragged-images"),
    pytest.param(lambda c: load_image_rows(c.missing_dir / "rows.safetensors"), FileNotFoundError,
                 r"rows\.safetensors does not exist: pass a safetensors file", id="load-image-rows-missing"),
    pytest.param(lambda c: load_image_rows(c.junk), ValueError,
                 r"rows\.safetensors is not a safetensors file .*: pass a file written by .*save_image_rows",
                 id="load-image-rows-junk"),
    pytest.param(lambda c: save_image_rows(c.digits[:3], c.missing_dir / "rows.safetensors"), FileNotFoundError,
                 r"path='.*rows\.safetensors' is in a folder that does not exist: pass a file path",
                 id="save-image-rows-no-folder"),
    # --- evaluate_mmubench and encoders -----------------------------------------------------------------------------
    pytest.param(lambda c: mmubench(c, unseen_images=[]), ValueError, r"unseen_images is empty: pass at least 1 image",
                 id="mmubench-no-unseen-images"),
    pytest.param(lambda c: mmubench(c, questions="Who is this?"), TypeError,
                 r"questions is one string \('Who is this\?'\), not a list of questions: pass \[",
                 id="mmubench-questions-string"),
    pytest.param(lambda c: mmubench(c, max_new_tokens=0), ValueError, r"max_new_tokens=0: pass a whole number .* >= 1",
                 id="mmubench-max-new-tokens"),
    pytest.param(lambda c: mmubench(c, other_concepts={"zorblat": [object()]}), ValueError,
                 r"other_concepts holds the unlearned concept itself: .*drop that key",
                 id="mmubench-concept-in-others"),
    pytest.param(lambda c: mmubench(c, processor=None), TypeError,
                 r"processor is a NoneType: pass the model's processor", id="mmubench-no-processor"),
    pytest.param(lambda c: image_embeddings(c.encoder, torch.zeros(2, 3, 8, 8)), ValueError,
                 r"pixel_values has 3 channels .* num_channels=1: convert the images", id="encoder-channels"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_input_is_refused_before_the_model_runs(ctx, call, error, match):
    with pytest.raises(error, match=match) as raised:
        call(ctx)
    assert type(raised.value) is error  # not a subclass standing in (e.g. an IsADirectoryError for a missing file)


def test_the_models_here_do_explode_on_good_input(ctx):
    """The guard is live: with good arguments the forward runs, and raises — so the cases above were refused first."""
    with pytest.raises(AssertionError, match="ran before"):
        qa(ctx)
    with pytest.raises(AssertionError, match="ran before"):
        classifier(ctx)
    with pytest.raises(AssertionError, match="ran before"):
        audit(ctx)


def test_a_nan_model_reports_missing_metrics_never_nan_numbers(ctx, tokenizer):
    """A model whose logits are NaN: every metric that depends on them is under `missing` with the reason, and the
    numbers the card and eval_results.json take (`flat_numbers`) hold no NaN."""
    model = build_tiny_causal_lm(tokenizer, hidden_size=16, num_layers=1, num_heads=2)
    with torch.no_grad():
        model.get_output_embeddings().weight.fill_(NAN)
    results = evaluate_qa_suite(model, tokenizer, ctx.forget, ctx.holdout, {"retain": ctx.retain},
                                gold_forget_truth_ratios=[0.5, 0.7], gold_mia_auc=0.5, max_new_tokens=2)  # fmt: skip
    for key in ("forget_probability", "forget_truth_ratio", "forget_rouge", "retain_probability", "model_utility",
                "forget_quality", "mia_loss_auc", "mia_min_k_auc", "privleak", "extraction_strength"):  # fmt: skip
        assert key not in results and "nan" in results["missing"][key].lower(), key
    numbers = flat_numbers(results)
    assert all(math.isfinite(value) for value in numbers.values())
    assert flat_numbers({"a": NAN, "b": math.inf, "c": 0.5}) == {"c": 0.5}


def test_an_encoder_with_nan_embeddings_reports_missing_emia(ctx):
    """EMIA on NaN alignments would compare False and look like a number: it is missing, with the reason."""
    def nan_for_forget(batch):
        out = batch.clone()
        out[batch[:, 0] > 0] = NAN  # some examples embed to NaN
        return out

    points = ctx.points.clone()
    points[:, 0] = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0])
    result = audit_encoder(nan_for_forget, points[:4], points[4:], reference_embed_fn=lambda b: b, num_views=2,
                           num_bootstrap=20)  # fmt: skip
    assert result["emia"] is None and "NaN" in result["missing"]["emia"]
    assert result["forgetting_score"] is None and "NaN" in result["missing"]["forgetting_score"]
    assert all(math.isfinite(value) for value in audit_numbers(result).values())
