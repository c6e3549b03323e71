"""The encoder audit: Forgetting Score on planted encoders, EMIA on planted members, matrices, probe, CLI."""

import json

import pytest
import torch

from hf_unlearn.evaluation.audit import (
    alignment_matrix,
    audit_encoder,
    emia,
    fit_threshold,
    forgetting_score,
    positive_alignment,
)


def planted(memorised: torch.Tensor, radius: float = 6.0):
    """An encoder that has memorised `memorised` [M, 64]: an input within `radius` of a memorised point is mapped to
    that point exactly (so all its views align perfectly, pa = 1), any other input to itself. Points are N(0, I) in 64
    dimensions (≈ 11 apart) and views add 0.5·N(0, I) noise (≈ 4 long), so only a memorised point's views snap; the
    views of any other point align at about 64 / (64 + 16) = 0.8."""

    def embed(x):
        distance = torch.cdist(x, memorised)
        nearest = distance.min(-1)
        snapped = memorised[nearest.indices]
        return torch.where((nearest.values < radius).unsqueeze(-1), snapped, x)

    return embed


def noise(x):
    return x + 0.5 * torch.randn_like(x)


@pytest.fixture(scope="module")
def points():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 64, generator=generator)
    return {"forget": x[:20], "retain": x[20:60], "heldout": x[60:120]}


def test_alignment_matrix_by_hand():
    """Two examples, two views each: v_1(x_1) = v_2(x_1) = (1, 0); v_1(x_2) = (0, 1), v_2(x_2) = (0.6, 0.8).
    AM[1,1] = cos(v_1, v_2) of x_1 = 1; AM[2,2] = (0, 1)·(0.6, 0.8) = 0.8;
    AM[1,2] = mean over t ≠ t' of cos(v_t(x_1), v_t'(x_2)) = mean((1,0)·(0.6,0.8), (1,0)·(0,1)) = 0.6 / 2 = 0.3."""
    views = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.6, 0.8]]])
    assert torch.allclose(alignment_matrix(views), torch.tensor([[1.0, 0.3], [0.3, 0.8]]))
    assert positive_alignment(views).tolist() == pytest.approx([1.0, 0.8])
    # FS: original pa_f = 1, held-out 0.8; audited pa_f = 0.9 → (1 − 0.9) / (1 − 0.8) = 0.5
    assert forgetting_score([1.0], [0.9], [0.8]) == pytest.approx(0.5)


def test_forgetting_score_zero_for_unchanged_and_near_one_for_never_seen(points, tmp_path):
    original = planted(torch.cat([points["forget"], points["retain"]]))
    never_saw_forget = planted(points["retain"])
    unchanged = audit_encoder(original, points["forget"], points["heldout"], reference_embed_fn=original,
                              augment=noise, num_views=6, num_bootstrap=200)  # fmt: skip
    assert unchanged["forgetting_score"] == 0.0
    assert unchanged["forgetting_score_ci"] == [0.0, 0.0]
    assert unchanged["positive_alignment"]["reference"]["forget"] == pytest.approx(1.0)
    assert max(map(max, map(abs, map(torch.tensor, unchanged["alignment_gap_matrix"])))) == 0.0
    retrained = audit_encoder(never_saw_forget, points["forget"], points["heldout"], reference_embed_fn=original,
                              retrained_embed_fn=never_saw_forget, augment=noise, num_views=6, num_bootstrap=200,
                              output_dir=tmp_path)  # fmt: skip
    low, high = retrained["forgetting_score_ci"]
    assert 0.85 < retrained["forgetting_score"] < 1.15 and low <= 1.0 <= high, retrained["forgetting_score_ci"]
    assert torch.tensor(retrained["alignment_gap_matrix"]).diagonal().min() > 0  # forget views no longer snap
    for name in ("alignment_matrix", "alignment_gap_matrix", "retrained_alignment_gap_matrix"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved["forgetting_score"] == pytest.approx(retrained["forgetting_score"])
    assert "alignment_matrix" not in saved  # numbers only


def test_emia_on_planted_members(points):
    original = planted(torch.cat([points["forget"], points["retain"]]))
    never_saw_forget = planted(points["retain"])
    # members (retain) snap (pa = 1), held-out do not: the threshold separates them. Forget examples are members of
    # the original (0% judged non-members) and non-members of the encoder that never saw them (100%).
    kept = audit_encoder(original, points["forget"], points["heldout"], augment=noise, num_views=6,
                         retain_examples=points["retain"])  # fmt: skip
    gone = audit_encoder(never_saw_forget, points["forget"], points["heldout"], augment=noise, num_views=6,
                         retain_examples=points["retain"])  # fmt: skip
    assert kept["emia"] == 0.0 and gone["emia"] == 100.0
    assert "no reference_embed_fn" in kept["missing"]["forgetting_score"]
    # without retain examples the members are the forget examples under the original encoder
    fallback = audit_encoder(never_saw_forget, points["forget"], points["heldout"], reference_embed_fn=original,
                             augment=noise, num_views=6)  # fmt: skip
    assert fallback["emia"] == 100.0


def test_white_box_suite(points):
    """Labels = the sign of the first coordinate: a linear probe on the first 4 features (`feature_fn`) learns it; the
    identity treats forget and held-out points alike, so CMIA is a share, not a certainty."""
    def identity(x):
        return x
    labels = {k: (v[:, 0] > 0).long().tolist() for k, v in points.items()}
    result = audit_encoder(identity, points["forget"], points["heldout"], augment=noise, num_views=3,
                           retain_examples=points["retain"], labels=labels, feature_fn=lambda x: x[:, :4])  # fmt: skip
    assert min(result["retain_accuracy"], result["test_accuracy"], result["forget_accuracy"]) >= 85.0, result
    assert 0.0 <= result["cmia"] <= 100.0
    with pytest.raises(ValueError, match="no retain_examples"):
        audit_encoder(identity, points["forget"], points["heldout"], labels=labels)


def test_cli_audit(tmp_path, digits_data, capsys):
    from hf_unlearn.cli import main
    from hf_unlearn.encoders import build_tiny_contrastive_encoder

    build_tiny_contrastive_encoder(seed=0).save_pretrained(tmp_path / "original")
    build_tiny_contrastive_encoder(seed=1).save_pretrained(tmp_path / "unlearned")
    for split in ("forget", "test", "retain"):
        rows = digits_data[split][:40]
        torch.save({"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                    "labels": [r["labels"] for r in rows]}, tmp_path / f"{split}.pt")  # fmt: skip
    code = main(["audit", "--model", str(tmp_path / "unlearned"), "--reference-model", str(tmp_path / "original"),
                 "--forget", str(tmp_path / "forget.pt"), "--heldout", str(tmp_path / "test.pt"),
                 "--retain", str(tmp_path / "retain.pt"), "--augmentation", "digits", "--num-views", "3",
                 "--output-dir", str(tmp_path / "audit")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "Forgetting Score:" in out and "EMIA:" in out and "test_accuracy:" in out and "cmia:" in out
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert {"emia", "retain_accuracy", "test_accuracy", "forget_accuracy", "cmia"} <= set(saved)
    assert (tmp_path / "audit" / "alignment_gap_matrix.png").is_file()
    (tmp_path / "forget.csv").write_text("text,label\n")
    code = main(["audit", "--model", str(tmp_path / "unlearned"), "--forget", str(tmp_path / "forget.csv"),
                 "--heldout", str(tmp_path / "test.pt")])  # fmt: skip
    assert code == 2 and "use a .pt file of images or a .jsonl file of texts" in capsys.readouterr().err


def test_cli_audit_of_a_text_encoder(tmp_path, capsys):
    """Text rows (.jsonl) are audited with word-dropout views of a text encoder's mean-pooled embeddings."""
    from transformers import BertConfig, BertModel

    from hf_unlearn.cli import main
    from hf_unlearn.synthetic import train_tokenizer

    things, colours = ["cat", "dog", "sky", "sea", "tree", "road"], ["red", "blue", "green"]
    sentences = [f"sentence number {i} says the {things[i % 6]} is {colours[i % 3]}" for i in range(30)]
    tokenizer = train_tokenizer(sentences, vocab_size=300)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "encoder")  # fmt: skip
    tokenizer.save_pretrained(tmp_path / "encoder")
    for name, rows in (("forget", sentences[:10]), ("heldout", sentences[10:30])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    code = main(["audit", "--model", str(tmp_path / "encoder"), "--reference-model", str(tmp_path / "encoder"),
                 "--forget", str(tmp_path / "forget.jsonl"), "--heldout", str(tmp_path / "heldout.jsonl"),
                 "--num-views", "3", "--output-dir", str(tmp_path / "audit")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "Forgetting Score: 0.000" in out  # the same encoder as its own reference: nothing forgotten
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["emia"] >= 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_threshold_is_the_first_best_candidate_with_ties(seed):
    """The vectorised threshold equals the definition scored candidate by candidate (lowest t among equal balanced
    accuracies), on scores rounded to 2 decimals so members, non-members and candidates tie."""
    import numpy as np

    rng = np.random.default_rng(seed)
    members, nonmembers = (np.round(rng.normal(mu, 0.05, n), 2) for mu, n in ((0.9, 50), (0.85, 70)))
    best, best_accuracy = None, -1.0
    for t in np.unique(np.concatenate([members, nonmembers])):
        accuracy = ((members >= t).mean() + (nonmembers < t).mean()) / 2
        if accuracy > best_accuracy:
            best, best_accuracy = t, accuracy
    assert fit_threshold(members, nonmembers) == best


def test_emia_by_hand():
    # members 1, 1; non-members 0, 0: threshold 1 (balanced accuracy (1 + 1)/2 beats threshold 0's (1 + 0)/2), so the
    # forget scores 0, 0.5, 1, 1 below it: 2 of 4 = 50%
    assert emia([0.0, 0.5, 1.0, 1.0], [1.0, 1.0], [0.0, 0.0]) == 50.0


def test_logistic_threshold_by_symmetry_and_unbalanced_classes():
    # members 0, 1, 2, 3 and non-members -1, 0, 1, 2 are mirror images about 1 (x -> 2 - x swaps them), so the fitted
    # logistic curve is symmetric about 1: P(member | 1) = 1/2, the threshold is 1. Repeating every non-member three
    # times changes nothing with class-balanced weights.
    members, nonmembers = [0.0, 1.0, 2.0, 3.0], [-1.0, 0.0, 1.0, 2.0]
    assert fit_threshold(members, nonmembers, "logistic") == pytest.approx(1.0, abs=1e-4)
    assert fit_threshold(members, nonmembers * 3, "logistic") == pytest.approx(1.0, abs=1e-4)
    # shifting and scaling the scores moves the threshold with them (the fit standardises and maps back)
    assert fit_threshold([10 + 100 * m for m in members], [10 + 100 * n for n in nonmembers], "logistic") == \
        pytest.approx(110.0, abs=1e-2)
    # forget scores -1, 0.5, 1.5, 3 against threshold 1: 2 of 4 below = 50%
    assert emia([-1.0, 0.5, 1.5, 3.0], members, nonmembers, rule="logistic") == 50.0


def test_threshold_rules_reject_what_they_cannot_fit():
    with pytest.raises(ValueError, match="unknown rule 'median'.*accuracy.*logistic"):
        fit_threshold([1.0, 2.0], [0.0, 1.0], "median")
    with pytest.raises(ValueError, match="not higher than the non-member.*rule='accuracy'"):
        fit_threshold([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], "logistic")


def test_logistic_threshold_moves_less_between_samples_than_the_accuracy_argmax():
    """Two heavily overlapping score distributions (members N(0.3, 1), non-members N(0, 1), 200 each, as a weak
    membership signal): over 100 draws the logistic threshold's spread is under half the accuracy argmax's. The rule
    bench/ac_digits.py --emia-threshold logistic relies on this."""
    import numpy as np

    rng = np.random.default_rng(0)
    spread = {}
    for rule in ("accuracy", "logistic"):
        thresholds = [fit_threshold(rng.normal(0.3, 1, 200), rng.normal(0, 1, 200), rule) for _ in range(100)]
        spread[rule] = float(np.std(thresholds))
    assert spread["logistic"] < spread["accuracy"] / 2, spread


def test_audit_encoder_logistic_emia_and_bad_rule():
    """Identity encoder, views = example + noise 0.1: an example's positive alignment grows with its norm. Members
    (retain, norm ~10) align better than held-out examples (norm ~0.1): the logistic threshold lies between, and forget
    examples of norm ~0.1 / ~10 fall below / above it. With the roles swapped no member-above threshold exists: the
    audit reports EMIA missing, with the reason, instead of a number."""
    import torch

    torch.manual_seed(0)
    small, large = 0.1 * torch.randn(12, 4), 10 * torch.randn(12, 4)
    forget = torch.cat([0.1 * torch.randn(3, 4), 10 * torch.randn(1, 4)])

    def embed(x):
        return x

    def augment(x):
        return x + 0.1 * torch.randn_like(x)

    with pytest.raises(ValueError, match="emia_threshold='mean' is not a threshold rule.*logistic"):
        audit_encoder(embed, forget, small, augment=augment, retain_examples=large, emia_threshold="mean")
    result = audit_encoder(embed, forget, small, augment=augment, retain_examples=large, emia_threshold="logistic")
    assert result["emia"] == 75.0 and "emia" not in result["missing"]
    result = audit_encoder(embed, forget, large, augment=augment, retain_examples=small, emia_threshold="logistic")
    assert result["emia"] is None and "not higher than the non-member" in result["missing"]["emia"]


def test_cli_audit_passes_the_emia_threshold_rule(tmp_path, capsys, monkeypatch):
    import hf_unlearn.evaluation.audit
    from hf_unlearn.cli import main

    seen = {}

    def fake_audit(*args, **kwargs):
        seen.update(kwargs)
        return {"forgetting_score": None, "forgetting_score_ci": None, "emia": 12.5, "missing": {}, "plots": {}}

    monkeypatch.setattr(hf_unlearn.evaluation.audit, "audit_encoder", fake_audit)
    monkeypatch.setattr("transformers.AutoModel.from_pretrained", lambda name: torch.nn.Identity())
    for name in ("forget", "heldout"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"text": "a row"}) + "\n")
    data = ["--forget", str(tmp_path / "forget.jsonl"), "--heldout", str(tmp_path / "heldout.jsonl")]
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda name: None)
    monkeypatch.setattr("hf_unlearn.sources.check_model_source", lambda name, what="model": None)  # "m": no real model
    assert main(["audit", "--model", "m", *data, "--emia-threshold", "logistic"]) == 0
    assert seen["emia_threshold"] == "logistic" and "EMIA: 12.5%" in capsys.readouterr().out
    assert main(["audit", "--model", "m", *data]) == 0 and seen["emia_threshold"] == "accuracy"
    with pytest.raises(SystemExit):
        main(["audit", "--model", "m", *data, "--emia-threshold", "median"])
    assert "invalid choice: 'median'" in capsys.readouterr().err


def test_the_old_module_name_still_imports_every_public_name():
    """`hf_unlearn.audit` moved to `hf_unlearn.evaluation.audit` (heatmaps to `hf_unlearn.plots`); the old name
    re-exports the same objects, so users' imports keep working."""
    import hf_unlearn.audit
    import hf_unlearn.evaluation
    import hf_unlearn.evaluation.audit
    import hf_unlearn.plots

    new = hf_unlearn.evaluation.audit
    assert {"audit_encoder", "save_heatmaps", "HEATMAPS", "EMIA_THRESHOLDS"} <= set(new.__all__)
    assert all(getattr(hf_unlearn.audit, name) is getattr(new, name) for name in new.__all__)
    assert new.save_heatmaps is hf_unlearn.plots.save_heatmaps and new.HEATMAPS is hf_unlearn.plots.HEATMAPS
    assert hf_unlearn.evaluation.audit_encoder is new.audit_encoder
