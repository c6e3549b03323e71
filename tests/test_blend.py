"""Blend (retain-set condensation), the DM baseline, the image-rows file format and `hf-unlearn condense`."""

import pytest
import torch

from hf_unlearn.cli import main
from hf_unlearn.preparation import blend_condense, dm_condense, load_image_rows, random_convnet, save_image_rows


@pytest.fixture(scope="module")
def condensed(digits_data):
    rows, clusters = blend_condense(digits_data["retain"], digits_data["forget"], images_per_class=3, steps=16,
                                    progress=False, return_clusters=True)  # fmt: skip
    return rows, clusters


def test_blended_images_are_convex_combinations_of_their_cluster(digits_data, condensed):
    rows, clusters = condensed
    retain = digits_data["retain"]
    blended = [c for c in clusters if not c.kept]
    assert blended and len(rows) == sum(len(c.retain_indices) for c in clusters if c.kept) + len(blended)
    images = rows[len(rows) - len(blended) :]
    for row, cluster in zip(images, blended, strict=True):
        members = torch.stack([retain[i]["pixel_values"] for i in cluster.retain_indices])
        weights = cluster.weights
        assert (weights >= 0).all() and torch.allclose(weights.sum(), torch.tensor(1.0))
        assert torch.allclose(row["pixel_values"], torch.einsum("m,m...->...", weights, members), atol=1e-6)
        # a convex combination lies, pixel by pixel, between its members' smallest and largest values
        assert (row["pixel_values"] >= members.min(0).values - 1e-6).all()
        assert (row["pixel_values"] <= members.max(0).values + 1e-6).all()
        assert row["labels"] == cluster.label == retain[cluster.retain_indices[0]]["labels"]
        assert all(retain[i]["labels"] == cluster.label for i in cluster.retain_indices)
    # several members were really mixed, not one picked
    assert any(len(c.retain_indices) > 1 and c.weights.max() < 0.9 for c in blended)


def test_clusters_with_a_forget_example_keep_their_retain_members_and_no_forget_example_survives(digits_data,
                                                                                                 condensed):
    rows, clusters = condensed
    retain, forget = digits_data["retain"], digits_data["forget"]
    assert sum(c.num_forget for c in clusters) <= len(forget)  # a class with no retain row has no cluster
    kept = sorted(i for c in clusters if c.kept for i in c.retain_indices)
    assert kept and all(c.num_forget > 0 for c in clusters if c.kept)
    assert all(c.num_forget == 0 for c in clusters if not c.kept)
    for row, index in zip(rows[: len(kept)], kept, strict=True):
        assert torch.equal(row["pixel_values"], retain[index]["pixel_values"])  # bit for bit, untouched
        assert row["labels"] == retain[index]["labels"]
    for row in rows:
        assert not any(torch.equal(row["pixel_values"], f["pixel_values"]) for f in forget)
    # at most images_per_class clusters per class
    per_class = torch.bincount(torch.tensor([c.label for c in clusters]))
    assert per_class.max() <= 3


def test_learned_weights_match_the_mean_embedding_better_than_equal_weights(digits_data):
    retain, forget = digits_data["retain"], digits_data["forget"]

    def gap(steps):
        rows, clusters = blend_condense(retain, forget, images_per_class=3, steps=steps, progress=False,
                                        return_clusters=True)  # fmt: skip
        phi = random_convnet(1, (8, 8), 64, seed=1)  # the matching network: seed + 1
        blended = [c for c in clusters if not c.kept]
        images = torch.stack([r["pixel_values"] for r in rows[len(rows) - len(blended) :]])
        targets = torch.stack([phi(torch.stack([retain[i]["pixel_values"] for i in c.retain_indices])).mean(0)
                               for c in blended])  # fmt: skip
        return (phi(images) - targets).pow(2).mean(-1).sum().item()

    assert gap(16) < 0.95 * gap(0)


def test_dataset_in_dataset_out(digits_data):
    import datasets

    retain = datasets.Dataset.from_list([{"pixel_values": r["pixel_values"].numpy(), "label": r["labels"]}
                                         for r in digits_data["retain"]])  # fmt: skip
    forget = [{"pixel_values": r["pixel_values"], "label": r["labels"]} for r in digits_data["forget"]]
    reduced = blend_condense(retain, forget, images_per_class=3, progress=False)
    assert isinstance(reduced, datasets.Dataset) and set(reduced.column_names) == {"pixel_values", "label"}
    assert len(reduced) < len(retain) and torch.as_tensor(reduced[0]["pixel_values"]).shape == (1, 8, 8)


def test_text_rows_are_refused(digits_data):
    text = [{"text": "a sentence", "label": 0}, {"text": "another", "label": 1}]
    with pytest.raises(ValueError, match="Blend condenses image rows, but retain_dataset holds text rows"):
        blend_condense(text, digits_data["forget"], progress=False)
    with pytest.raises(ValueError, match="forget_dataset holds text rows"):
        blend_condense(digits_data["retain"], text, progress=False)


def test_dm_condense_optimises_pixels_per_class(digits_data):
    rows = dm_condense(digits_data["retain"], images_per_class=2, iterations=5, batch_real=16, progress=False)
    labels = torch.tensor([r["labels"] for r in rows])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 2))
    originals = [r["pixel_values"] for r in digits_data["retain"]]
    # started from real images, then every synthetic image moved
    assert not any(torch.equal(r["pixel_values"], o) for r in rows for o in originals)


def test_image_rows_file_round_trip_and_cli_condense(digits_data, tmp_path, capsys):
    retain_file, forget_file, output = tmp_path / "retain.safetensors", tmp_path / "forget.safetensors", tmp_path / "o"
    save_image_rows(digits_data["retain"], retain_file)
    save_image_rows(digits_data["forget"], forget_file)
    again = load_image_rows(retain_file)
    assert len(again) == len(digits_data["retain"])
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) and a["labels"] == b["labels"]
               for a, b in zip(again, digits_data["retain"], strict=True))  # fmt: skip

    code = main(["condense", "--retain", str(retain_file), "--forget", str(forget_file), "--output", str(output),
                 "--images-per-class", "3"])  # fmt: skip
    assert code == 0
    reduced = load_image_rows(output)
    expected = blend_condense(digits_data["retain"], digits_data["forget"], images_per_class=3, progress=False)
    assert len(reduced) == len(expected) < len(digits_data["retain"])
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(reduced, expected, strict=True))
    assert f"condensed {len(digits_data['retain'])} retain rows to {len(reduced)}" in capsys.readouterr().out

    assert main(["condense", "--retain", str(tmp_path / "missing"), "--forget", str(forget_file), "--output",
                 str(output)]) == 2  # fmt: skip
    assert "missing does not exist" in capsys.readouterr().err
