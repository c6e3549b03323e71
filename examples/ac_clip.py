"""Alignment Calibration on a small CLIP: train a two-tower image–text model from configs on scikit-learn's digits
with captions ("a handwritten seven"), unlearn a random 10% of its image–caption pairs, and audit the image tower.

    python examples/ac_clip.py            # about a minute on a laptop CPU, offline

Prints zero-shot accuracy (each image matched to the nearest of the 10 class captions) on the forget and test
images before and after, and the black-box audit of the image embeddings (Forgetting Score, EMIA); writes the
unlearned model, its card and the alignment heatmaps to `--output-dir`.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import CLIPConfig, CLIPModel

from hf_unlearn import AlignmentCalibrationConfig, AlignmentCalibrationTrainer
from hf_unlearn.augmentations import image_augmentation
from hf_unlearn.data import load_digits_rows
from hf_unlearn.encoders import image_embeddings, text_embeddings
from hf_unlearn.evaluation.audit import audit_encoder
from hf_unlearn.losses import clip_info_nce

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = ["a handwritten {}", "the digit {}", "a scan of a {}"]
VOCAB = ["<pad>", "<bos>", "<eos>"] + sorted({w for t in TEMPLATES for w in t.format("").split()} | set(WORDS))


def tokenize(text: str) -> list[int]:
    """Word-level ids of a caption with BOS and EOS (the vocabulary is the captions' 20-odd words)."""
    return [1] + [VOCAB.index(word) for word in text.split()] + [2]


def build_clip(seed: int = 0) -> CLIPModel:
    text = {"vocab_size": len(VOCAB), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 8, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 0}  # fmt: skip
    vision = {"image_size": 8, "patch_size": 2, "num_channels": 1, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2}  # fmt: skip
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))


def caption_batch(rows: list[dict]) -> dict[str, torch.Tensor]:
    length = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [0] * (length - len(r["input_ids"])) for r in rows])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def pretrain(model, rows, augment, epochs: int, seed: int = 0) -> float:
    """CLIP's symmetric InfoNCE on (augmented image, caption) pairs with AdamW."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for begin in range(0, len(rows), 64):
            batch = [rows[i] for i in order[begin : begin + 64]]
            images = image_embeddings(model, augment(torch.stack([r["pixel_values"] for r in batch])))
            texts = text_embeddings(model, **caption_batch(batch))
            loss = clip_info_nce(images, texts, 0.1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


@torch.no_grad()
def zero_shot_accuracy(model, rows) -> float:
    """% of images whose nearest class caption ("a handwritten <digit>") is their own class."""
    model.eval()
    classes = text_embeddings(model, **caption_batch([{"input_ids": tokenize(TEMPLATES[0].format(w))} for w in WORDS]))
    images = image_embeddings(model, torch.stack([r["pixel_values"] for r in rows]))
    predicted = (images @ classes.T).argmax(-1)
    return 100.0 * (predicted == torch.tensor([r["labels"] for r in rows])).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain-epochs", type=int, default=60)
    parser.add_argument("--epochs", type=float, default=10, help="AC epochs (passes over the forget set).")
    parser.add_argument("--beta", type=float, default=1.0, help="β of the calibration term (β' = β·|D_f|/|D|).")
    parser.add_argument("--output-dir", default="ac-clip-digits")
    args = parser.parse_args()
    torch.set_num_threads(1)

    digits = load_digits_rows()
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0)).tolist()
    rows = []
    for k, i in enumerate(order):
        caption = TEMPLATES[k % len(TEMPLATES)].format(WORDS[digits[i]["labels"]])
        rows.append({**digits[i], "input_ids": tokenize(caption)})
    train, test = rows[:600], rows[600:900]
    forget, retain = train[:60], train[60:]  # a random 10% of the training pairs
    augment = image_augmentation("digits", 8)

    model = build_clip()
    seconds = pretrain(model, train, augment, args.pretrain_epochs)
    print(f"pre-trained a {sum(p.numel() for p in model.parameters()) / 1e3:.0f}k-parameter CLIP on {len(train)} "
          f"digit–caption pairs in {seconds:.0f} s")  # fmt: skip
    original = build_clip()
    original.load_state_dict(model.state_dict())
    before = {"forget": zero_shot_accuracy(model, forget), "test": zero_shot_accuracy(model, test)}

    config = AlignmentCalibrationConfig(output_dir=args.output_dir, num_train_epochs=args.epochs, beta=args.beta,
                                        per_device_train_batch_size=16, retain_per_forget=4, temperature=0.1,
                                        learning_rate=0.01, augmentation="digits", report_to="none",
                                        save_strategy="no", logging_steps=10, disable_tqdm=True, use_cpu=True,
                                        forget_description="10% of the training digit–caption pairs, at random.")
    strip = ("pixel_values", "input_ids")  # the trainer takes image–caption rows; labels stay for our evaluation
    trainer = AlignmentCalibrationTrainer(model=model, args=config,
                                          forget_dataset=[{k: r[k] for k in strip} for r in forget],
                                          retain_dataset=[{k: r[k] for k in strip} for r in retain])  # fmt: skip
    trainer.train()
    after = {"forget": zero_shot_accuracy(model, forget), "test": zero_shot_accuracy(model, test)}
    pixels = {name: torch.stack([r["pixel_values"] for r in split]) for name, split in
              (("forget", forget), ("test", test), ("retain", retain[:300]))}  # fmt: skip
    audit = audit_encoder(lambda x: image_embeddings(model.eval(), x), pixels["forget"], pixels["test"],
                          reference_embed_fn=lambda x: image_embeddings(original.eval(), x), augment=augment,
                          retain_examples=pixels["retain"])  # fmt: skip
    trainer.record_audit(audit)
    trainer.save_model()
    print(f"zero-shot accuracy, forget: {before['forget']:.1f}% -> {after['forget']:.1f}%; "
          f"test: {before['test']:.1f}% -> {after['test']:.1f}%")  # fmt: skip
    if audit["forgetting_score_ci"]:
        low, high = audit["forgetting_score_ci"]
        print(f"Forgetting Score {audit['forgetting_score']:.3f} (95% interval {low:.3f} to {high:.3f})")
    else:
        print(f"Forgetting Score n/a: {audit['missing']['forgetting_score']}")
    print(f"EMIA {audit['emia']:.1f}% of forget images judged non-members")
    print(f"model, card and heatmaps in {args.output_dir}/")


if __name__ == "__main__":
    main()
