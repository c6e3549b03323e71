"""MMUBench-style metrics on hand-worked cases, and the suite end to end on the tiny LLaVA."""

import math

import pytest
import torch
from siu_fixtures import CONCEPTS, TARGET, concept_image, llava_parts, memorised_llava  # noqa: F401 (fixtures)

from hf_unlearn.evaluation import mmubench


def test_efficacy_specificity_diversity_by_hand():
    answers = ["This is Zorblat.", "This is zorblat!", "This is Jorvik.", "Zorblatian stuff"]
    # 2 of 4 do not name the concept (a longer word containing it does not count): 50%
    assert mmubench.efficacy(answers, "Zorblat") == 50.0
    # Quimby named, Fennick not: 1 of 2
    assert mmubench.specificity(["This is Quimby.", "This is Jorvik."], ["Quimby", "Fennick"]) == 50.0
    # "the cat the cat" : 2 unique of 4 words = 50%; "a b c": 100%; "": 0 → mean 50
    assert mmubench.diversity(["the cat the cat", "a b c", ""]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="pass one name per answer"):
        mmubench.specificity(["x"], [])


def test_fluency_and_concept_distance_by_hand():
    """Labels [-100, 1, 3]: predictions of word 1 (position 0) and word 3 (position 1); word 3 is the name's token.
    The model is uniform over 4 words: NLL ln 4 per token. Fluency leaves word 3 out: exp(ln 4) = 4.
    C-Dis at the name position (1): the reference puts p = [1/2, 1/4, 1/8, 1/8], the model 1/4 each:
    KL = ½ ln2 + 0 − ⅛ ln2 − ⅛ ln2 = ¼ ln2."""
    labels = torch.tensor([[-100, 1, 3]])
    logits = torch.zeros(1, 3, 4)
    assert mmubench.fluency(logits, labels, [3]) == pytest.approx(4.0)
    reference = torch.zeros(1, 3, 4)
    reference[0, 1] = torch.log(torch.tensor([4.0, 2, 1, 1]) / 8)
    assert mmubench.concept_distance(reference, logits, labels, [3]) == pytest.approx(0.25 * math.log(2))
    assert mmubench.concept_distance(reference, logits, labels, [2]) == 0.0  # no name position


def test_mia_score_by_hand():
    # Min-K% scores -1, -5, -2, -9: median (lower middle, torch) -5; kept: questions 0, 1, 2.
    # ROUGE-L recall vs the original: "this is zorblat" / "this is zorblat" = 1; "x" vs "this is fennick" = 0;
    # "this is jorvik" vs "this is zorblat" = 2/3 → mean 5/9 = 55.6%
    unlearned = ["this is zorblat", "x", "this is jorvik", "anything"]
    original = ["this is zorblat", "this is fennick", "this is zorblat", "this is zorblat"]
    assert mmubench.mia_score([-1, -5, -2, -9], unlearned, original) == pytest.approx(100 * 5 / 9)


def test_evaluate_mmubench_on_the_original_model(memorised_llava):  # noqa: F811
    """Against itself, the memorised model names everything: efficacy 0, specificity 100, C-Dis 0, MIA 100."""
    model, processor = memorised_llava
    others = {name: [concept_image(name, 30)] for name in CONCEPTS if name != TARGET}
    results = mmubench.evaluate_mmubench(model, model, processor, TARGET, concept_image(TARGET, 0),
                                         [concept_image(TARGET, 31), concept_image(TARGET, 32)], others)  # fmt: skip
    assert set(mmubench.MMUBENCH_METRICS) <= set(results)
    assert results["efficacy"] == results["generality"] == 0.0
    assert results["specificity"] == results["specificity_original"] == 100.0
    assert results["c_dis"] == pytest.approx(0.0, abs=1e-6) and results["mia"] == pytest.approx(100.0)
    assert 1.0 <= results["fluency"] < 2.0 and results["diversity"] == 100.0


def test_batched_generation_equals_one_query_at_a_time(memorised_llava):  # noqa: F811
    """Image and text-only queries, interleaved and of several image sizes, batched (left-padded, KV cache): the same
    greedy answers as one query per call, in the queries' order."""
    model, processor = memorised_llava
    queries = [("Who is this?", concept_image(name, 40 + i, size=32 + 8 * i)) for i, name in enumerate(CONCEPTS)]
    queries.insert(1, ("Where does Quimby live?", None))
    queries.append(("What is this?", None))
    batched = mmubench.generate_answers(model, processor, queries, batch_size=3)
    single = [mmubench.generate_answers(model, processor, [query])[0] for query in queries]
    assert batched == single
    assert any(name in answer for name, answer in zip(CONCEPTS, batched[:1] + batched[2:], strict=False))
    assert processor.tokenizer.padding_side == "right"  # restored


def test_cli_eval_mmubench(tmp_path, memorised_llava):  # noqa: F811
    import json

    from hf_unlearn.cli import main

    model, processor = memorised_llava
    model.save_pretrained(tmp_path / "original")
    processor.save_pretrained(tmp_path / "original")
    paths = {}
    for name, seed in ((TARGET, 0), (TARGET, 31), ("Quimby", 30)):
        paths[(name, seed)] = str(tmp_path / f"{name}-{seed}.png")
        concept_image(name, seed).save(paths[(name, seed)])
    spec = {"concept": TARGET, "train_image": paths[(TARGET, 0)], "unseen_images": [paths[(TARGET, 31)]],
            "other_concepts": {"Quimby": [paths[("Quimby", 30)]]}}  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    output = tmp_path / "eval_results.json"
    assert main(["eval", "--suite", "mmubench", "--model", str(tmp_path / "original"), "--original-model",
                 str(tmp_path / "original"), "--mmubench-data", str(tmp_path / "spec.json"), "--output",
                 str(output)]) == 0  # fmt: skip
    results = json.loads(output.read_text())
    assert results["efficacy"] == 0.0 and results["specificity"] == 100.0
    assert TARGET not in output.read_text()
