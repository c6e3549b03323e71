"""Alignment Calibration on a SimCLR encoder: pre-train a small ResNet encoder with SimCLR on scikit-learn's digits
(real 8×8 scans, offline), unlearn a random 10% of its training images, and audit it as a data owner would.

    python examples/ac_simclr_digits.py          # a couple of minutes on a laptop CPU

The audit needs only query access to embeddings: it compares how consistently the encoder aligns augmented views of
the forget images with how it aligns never-seen digits (Forgetting Score, EMIA, the alignment heatmaps), then a
linear probe on its features gives retain / test / forget accuracy and CMIA. The unlearned model, its card (with the
heatmaps and the score) and the audit land in `--output-dir`.
"""

from __future__ import annotations

import argparse
import copy

import torch

from hf_unlearn import AlignmentCalibrationConfig, AlignmentCalibrationTrainer
from hf_unlearn.augmentations import image_augmentation
from hf_unlearn.data import load_digits_rows
from hf_unlearn.encoders import build_tiny_contrastive_encoder, image_embeddings, train_contrastive
from hf_unlearn.evaluation.audit import audit_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--pretrain-epochs", type=int, default=150)
    parser.add_argument("--output-dir", default="ac-simclr-digits")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = load_digits_rows()
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    pixels = torch.stack([rows[i]["pixel_values"] for i in order])
    labels = torch.tensor([rows[i]["labels"] for i in order])
    num_forget = args.train_size // 10  # a random 10% of the training images
    forget, retain, test = pixels[:num_forget], pixels[num_forget : args.train_size], pixels[args.train_size :][:400]
    label = {"forget": labels[:num_forget], "retain": labels[num_forget : args.train_size][:200],
             "heldout": labels[args.train_size :][:400]}  # fmt: skip
    augment = image_augmentation("digits", 8)

    model = build_tiny_contrastive_encoder(backbone="resnet")
    seconds = train_contrastive(model, pixels[: args.train_size], augment, args.pretrain_epochs, 100, 3e-3)
    print(f"SimCLR pre-training on {args.train_size} digits: {seconds:.0f} s")
    original = copy.deepcopy(model).eval()

    config = AlignmentCalibrationConfig(
        output_dir=args.output_dir, alpha=1.0, beta=1.0, num_train_epochs=10, per_device_train_batch_size=8,
        retain_per_forget=8, augmentation="digits", report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=True, logging_steps=10, forget_description="10% of the training digits, drawn at random.",
    )  # fmt: skip
    trainer = AlignmentCalibrationTrainer(model=model, args=config,
                                          forget_dataset=[{"pixel_values": x} for x in forget],
                                          retain_dataset=[{"pixel_values": x} for x in retain])  # fmt: skip
    trainer.train()

    def embed(encoder):
        return lambda x: image_embeddings(encoder.eval(), x)

    with torch.no_grad():
        audit = audit_encoder(embed(model), forget, test, reference_embed_fn=embed(original), augment=augment,
                              retain_examples=retain[:200], labels=label,
                              feature_fn=lambda x: model.eval()(pixel_values=x).features)  # fmt: skip
    trainer.record_audit(audit)
    trainer.save_model()
    if audit["forgetting_score_ci"]:
        low, high = audit["forgetting_score_ci"]
        print(f"Forgetting Score {audit['forgetting_score']:.3f} (95% interval {low:.3f} to {high:.3f})")
    else:
        print(f"Forgetting Score n/a: {audit['missing']['forgetting_score']}")
    print(f"EMIA {audit['emia']:.1f}% and CMIA {audit['cmia']:.1f}% of forget images judged non-members")
    print(f"linear probe: retain {audit['retain_accuracy']:.1f}%, test {audit['test_accuracy']:.1f}%, "
          f"forget {audit['forget_accuracy']:.1f}%")  # fmt: skip
    print(f"model, card (README.md) and heatmaps (plots/) in {args.output_dir}/")


if __name__ == "__main__":
    main()
