"""Blend + A-AMU on scikit-learn digits, offline on a CPU in about a minute: train a small ViT (built from a config) on
digits, condense its retain set with Blend, then unlearn a random 10% of its training rows with A-AMU on the reduced
set, and compare forget / retain / test accuracy and the membership-inference AUC before and after.

    python examples/blend_aamu_digits.py [--epochs 30] [--images-per-class 30] [--output-dir blend-aamu-digits]
"""

from __future__ import annotations

import argparse
import time

import torch

from hf_unlearn import AAMUConfig, AAMUTrainer
from hf_unlearn.data import load_digits_rows
from hf_unlearn.evaluation import evaluate_classifier
from hf_unlearn.preparation import blend_condense
from hf_unlearn.synthetic import build_tiny_image_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="Epochs of the original model's training.")
    parser.add_argument("--images-per-class", type=int, default=30, help="Blend's k-means clusters per class.")
    parser.add_argument("--output-dir", default="blend-aamu-digits")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = load_digits_rows()  # 1,797 real 8×8 scans: pixel_values [1, 8, 8] and labels 0-9
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    rows = [rows[i] for i in order]
    forget, retain, heldout, test = rows[:100], rows[100:1000], rows[1000:1200], rows[1200:]

    # the model to unlearn: a small ViT trained on forget + retain
    model = build_tiny_image_classifier(hidden_size=64, num_layers=4, num_heads=4, seed=0)
    pixels = torch.stack([r["pixel_values"] for r in forget + retain])
    labels = torch.tensor([r["labels"] for r in forget + retain])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        for batch in torch.randperm(len(labels)).split(64):
            loss = model(pixel_values=pixels[batch], labels=labels[batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    before = evaluate_classifier(model, forget, retain, test)

    # Blend: clusters holding a forget row keep their retain rows, every other cluster becomes one blended image
    start = time.perf_counter()
    reduced = blend_condense(retain, forget, images_per_class=args.images_per_class)
    print(f"Blend: {len(retain)} retain rows -> {len(reduced)} in {time.perf_counter() - start:.2f} s")

    # A-AMU on the reduced set: squared retain CE + 34 · MMD² between forget and held-out loss distributions
    config = AAMUConfig(output_dir=args.output_dir, per_device_train_batch_size=32, report_to="none",
                        use_cpu=True, save_strategy="no", logging_steps=5)  # fmt: skip
    trainer = AAMUTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=reduced,
                          heldout_dataset=heldout)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    print(f"A-AMU: {trainer.state.global_step} steps in {time.perf_counter() - start:.2f} s")
    after = evaluate_classifier(model, forget, retain, test)
    trainer.record_evaluation(unlearned=after)
    trainer.save_model()  # the model, its card (README.md) and the manifest; no forget image in any of them

    print(f"{'':<18}{'before':>8}{'after':>8}")
    for key in ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_auc"):
        print(f"{key:<18}{before[key]:>8.3f}{after[key]:>8.3f}")
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()
