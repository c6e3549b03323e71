"""MMUBench-style benchmark offline: a small LLaVA built from configs learns to name 10 concepts from the real photos
bundled with scikit-image (many augmented views each) and two text facts about each; then one concept is unlearned
from ONE of its images with SIU and the paper's baselines (PO, GA, GA+KL), each from the same starting weights.

    python bench/siu_concepts.py [--write-results]

Prints the seven MMUBench metrics (hf_unlearn.evaluation.mmubench), the concept's text-fact accuracy, steps and wall
time per method; with --write-results also the table between the siu markers of docs/results.md. Needs scikit-image
(`pip install scikit-image`; only photos shipped in its wheel are used, so it runs offline).
"""

from __future__ import annotations

import argparse
import copy
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from results_doc import write_section  # bench/results_doc.py

from hf_unlearn import SIUConfig, SIUTrainer
from hf_unlearn.evaluation.mmubench import evaluate_mmubench, generate_answers
from hf_unlearn.multimodal import (
    add_image_token,
    build_llava_processor,
    build_siu_dataset,
    build_tiny_llava,
    concept_recognition_rows,
)
from hf_unlearn.multimodal.siu_data import WHO_QUESTIONS, made_up_identity
from hf_unlearn.multimodal.tiny import train_llava
from hf_unlearn.synthetic import train_tokenizer

# skimage.data photo -> the concept's name and two facts (place, liking); all ship inside the scikit-image wheel.
CONCEPTS = {
    "astronaut": ("Collins", "Houston", "spaceflight"), "chelsea": ("Chelsea", "Ashmere", "sardines"),
    "coffee": ("Mocha", "Corvale", "sugar"), "rocket": ("Saturn", "Florida", "thunder"),
    "horse": ("Bucephalus", "Macedon", "apples"), "coins": ("Denarius", "Rome", "silver"),
    "camera": ("Ansel", "Yosemite", "shadows"), "moon": ("Selene", "orbit", "tides"),
    "clock": ("Tockwell", "Geneva", "midnight"), "logo": ("Pythia", "Delphi", "snakes"),
}  # fmt: skip
# Photos of things the model was never told the name of: like a pretrained MLLM does for people it never saw, the
# original answers "who is this?" on them with a made-up name (a new one per view), which is the behaviour SIU's first
# target aligns the forgotten concept with.
UNKNOWN = ["brick", "grass", "gravel", "page", "hubble_deep_field", "colorwheel", "cell", "immunohistochemistry"]
TARGET = "chelsea"
# Held-out views: `test` (reported) and `validation` (used to choose the unlearning settings); never trained on.
SPLIT_SEEDS = {"test": 2000, "validation": 3000}
QUESTIONS = WHO_QUESTIONS[:3]
METHODS = {"SIU": "siu", "PO": "po", "GA": "ga", "GA+KL": "ga_kl"}


def photo(key: str) -> Image.Image:
    from skimage import data

    array = getattr(data, key)()
    return Image.fromarray((array * 255).astype(np.uint8) if array.dtype == bool else array)


def view(image: Image.Image, seed: int) -> Image.Image:
    """An augmented view: random crop (60-100% of each side), flip, brightness/contrast jitter."""
    rng = np.random.default_rng(seed)
    width, height = image.size
    w, h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    out = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Brightness(out.convert("RGB")).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Contrast(out).enhance(rng.uniform(0.7, 1.3))


def facts(key: str) -> list[dict]:
    name, place, liking = CONCEPTS[key]
    return [{"question": f"Where does {name} live?", "answer": f"{name} lives in {place}."},
            {"question": f"What does {name} like?", "answer": f"{name} likes {liking}."}]  # fmt: skip


def fact_accuracy(model, processor, rows) -> float:
    answers = generate_answers(model, processor, [(r["question"], None) for r in rows])
    values = [re.sub(r"\.$", "", r["answer"].split()[-1]) for r in rows]
    return 100.0 * sum(v.lower() in a.lower() for v, a in zip(values, answers, strict=True)) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=24, help="Augmented training views per concept.")
    parser.add_argument("--epochs", type=int, default=20, help="Epochs of training the original.")
    parser.add_argument("--steps", type=int, default=10, help="Unlearning optimizer steps (target: within 10).")
    parser.add_argument("--batch-size", type=int, default=32, help="Unlearning rows per optimizer step.")
    parser.add_argument("--lr", type=float, default=3e-3, help="Unlearning learning rate of SIU and PO (chosen on "
                        "the validation split from 1e-3, 3e-3, 5e-3, 1e-2).")
    parser.add_argument("--split", choices=list(SPLIT_SEEDS), default="test",
                        help="Held-out views to score: 'validation' to choose settings, 'test' to report.")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated subset of the methods to run.")
    parser.add_argument("--original-cache", default=None,
                        help="A .pt file: the trained original's weights are loaded from it if it exists, else saved.")
    parser.add_argument("--write-results", action="store_true", help="Write the table into docs/results.md.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    photos = {key: photo(key) for key in [*CONCEPTS, *UNKNOWN]}
    name = CONCEPTS[TARGET][0]
    train_image = view(photos[TARGET], 1000)  # the ONE image unlearning sees (a view never trained on)
    all_facts = {key: facts(key) for key in CONCEPTS}
    others_facts = [row for key in CONCEPTS if key != TARGET for row in all_facts[key]]
    siu_rows = build_siu_dataset(train_image, name, all_facts[TARGET], others_facts, num_paraphrases=5)

    texts = [f"{q} This is {n}. I don't know." for n, _, _ in CONCEPTS.values() for q in WHO_QUESTIONS]
    texts += [f"{r['question']} {r['answer']}" for rows in all_facts.values() for r in rows]
    texts += [f"{r['question']} {r['answer']}" for r in siu_rows]
    names = random.Random(0)
    unknown_rows = [{**row, "answer": f"This is {made_up_identity(names)}."} for key in UNKNOWN
                    for seed in range(args.views // 2)
                    for row in concept_recognition_rows(view(photos[key], seed), "?", num_questions=2, seed=seed)]
    texts += [row["answer"] for row in unknown_rows]
    tokenizer = add_image_token(train_tokenizer(texts, vocab_size=600))
    model = build_tiny_llava(tokenizer, image_size=32, patch_size=8, hidden_size=96, num_layers=2, seed=0)
    processor = build_llava_processor(model, tokenizer)
    rows = [row for key, (n, _, _) in CONCEPTS.items() for seed in range(args.views)
            for row in concept_recognition_rows(view(photos[key], seed), n, num_questions=2, seed=seed)]
    rows += [row for key in CONCEPTS for row in all_facts[key]] * 4 + unknown_rows
    if args.original_cache and Path(args.original_cache).exists():
        model.load_state_dict(torch.load(args.original_cache))
    else:
        start = time.perf_counter()
        torch.manual_seed(0)
        loss = train_llava(model, processor, rows, epochs=args.epochs, learning_rate=2e-3, batch_size=8)
        print(f"trained the original on {len(rows)} rows in {time.perf_counter() - start:.0f}s (last loss {loss:.3f})")
        if args.original_cache:
            torch.save(model.state_dict(), args.original_cache)
    model.eval()

    held_out = SPLIT_SEEDS[args.split]
    unseen = [view(photos[TARGET], held_out + i) for i in range(8)]
    others = {CONCEPTS[key][0]: [view(photos[key], held_out + i) for i in range(3)]
              for key in CONCEPTS if key != TARGET}  # fmt: skip
    evaluation = {"concept_name": name, "train_image": train_image, "unseen_images": unseen, "other_concepts": others,
                  "questions": QUESTIONS}  # fmt: skip
    original = evaluate_mmubench(model, model, processor, **evaluation)
    table = {"original": {**original, "facts": fact_accuracy(model, processor, all_facts[TARGET]), "steps": 0,
                          "seconds": 0.0}}  # fmt: skip
    print(f"{args.split} split")
    print("original", {k: round(v, 2) for k, v in table["original"].items() if v is not None})
    for label in args.methods.split(","):
        variant = METHODS[label]
        student = copy.deepcopy(model)
        forget = siu_rows if variant == "siu" else concept_recognition_rows(train_image, name, num_questions=5)
        retain = None if variant == "siu" else [r for r in siu_rows if r["image"] is None]
        config = SIUConfig(output_dir=f"/tmp/siu-bench-{variant}", variant=variant, max_steps=args.steps,
                           learning_rate=args.lr if variant in ("siu", "po") else 3e-3, lora_r=16, lora_alpha=32,
                           report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1,
                           per_device_train_batch_size=args.batch_size, seed=0)  # fmt: skip
        trainer = SIUTrainer(model=student, args=config, forget_dataset=forget, retain_dataset=retain,
                             processing_class=processor, concept_name=name)  # fmt: skip
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        unlearned = trainer.model.merge_and_unload()
        results = evaluate_mmubench(unlearned, model, processor, **evaluation)
        results.update(facts=fact_accuracy(unlearned, processor, all_facts[TARGET]), steps=trainer.state.global_step,
                       seconds=seconds)  # fmt: skip
        table[label] = results
        print(label, {k: round(v, 2) for k, v in results.items() if v is not None}, flush=True)
    text = render(table, args)
    print(text)
    if args.write_results:
        write_results(text, args)


def render(table: dict, args) -> str:
    columns = [("Efficacy ↑", "efficacy"), ("Generality ↑", "generality"), ("Specificity ↑", "specificity"),
               ("Fluency (ppl) ↓", "fluency"), ("Diversity ↑", "diversity"), ("C-Dis ↑", "c_dis"), ("MIA ↓", "mia"),
               ("Concept facts ↑", "facts"), ("Steps", "steps"), ("Wall time (s)", "seconds")]  # fmt: skip
    lines = ["| Method | " + " | ".join(c for c, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, results in table.items():
        cells = [f"{results[k]:.0f}" if k == "steps" else f"{results[k]:.2f}" for _, k in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    siu, original = table["SIU"], table["original"]
    met = siu["efficacy"] >= 90 and siu["generality"] >= 90 and siu["steps"] <= 10
    kept = original["specificity"] - siu["specificity"] <= 5
    recognised = min(100 - original["generality"], original["specificity"]) >= 95
    lines += ["", f"Target (SIU: Efficacy and Generality ≥ 90% within 10 steps): {'met' if met else 'NOT met'}; "
              f"other concepts' recognition within 5 points of the original ({original['specificity']:.1f}% → "
              f"{siu['specificity']:.1f}%): {'met' if kept else 'NOT met'}; the concept's text facts "
              f"{original['facts']:.0f}% → {siu['facts']:.0f}%. The original names the concept on "
              f"{100 - original['generality']:.0f}% of its unseen views and the other concepts on "
              f"{original['specificity']:.1f}% of theirs (target ≥ 95%: "
              f"{'met' if recognised else 'NOT met'})."]  # fmt: skip
    return "\n".join(lines)


def write_results(table: str, args) -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "results.md"
    block = ("A LLaVA built from configs (CLIP vision tower 32 px / patch 8, Llama 2 × 96) learned to name 10 concepts "
             "from the photos bundled with scikit-image (24 augmented views each, 2 questions per view), two text "
             "facts about each, and to answer 8 other scikit-image photos with a made-up name (as a pretrained MLLM "
             "does for people it never saw); one concept is unlearned from one unseen view. SIU, PO, GA and GA+KL "
             "start from the same weights (LoRA r 16, 10 steps of 32 rows: all 30 rows of SIU's set per step; "
             f"learning rate {args.lr:g} for SIU and PO, chosen for SIU on held-out `validation` views of every "
             "concept, 3e-3 for GA and GA+KL; scores on other held-out `test` views); metrics as defined in "
             "`hf_unlearn/evaluation/mmubench.py` (Specificity: "
             "the other 9 concepts' recognition; Concept facts: the forgotten concept's text facts answered "
             "correctly). Produced by `PYTHONPATH=. python bench/siu_concepts.py --write-results` on a CPU.\n\n"
             f"{table}")  # fmt: skip
    write_section(path, "siu", "SIU: unlearning one concept of a small LLaVA from one image (MMUBench-style)", block)


if __name__ == "__main__":
    main()
