"""MMUBench-style benchmark offline: a small LLaVA built from configs learns to name 10 concepts from the real photos
bundled with scikit-image (many augmented views each) and two text facts about each; then one concept is unlearned
from ONE of its images with SIU and the paper's baselines (PO, GA, GA+KL), each from the same starting weights.

    python bench/siu_concepts.py [--write-results]

Each method's learning rate is chosen from --lr-grid on held-out `validation` views (`choose_learning_rate`); the
table scores other held-out `test` views only. Prints the seven MMUBench metrics (hf_unlearn.evaluation.mmubench), the
concept's text-fact accuracy, the chosen learning rate, steps and wall time per method; with --write-results also the
table between the siu markers of docs/results.md. Needs scikit-image
(`pip install scikit-image`; only photos shipped in its wheel are used, so it runs offline).
"""

from __future__ import annotations

import argparse
import copy
import random
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageEnhance
from results_doc import write_section  # bench/results_doc.py

from hf_unlearn import SIUConfig, SIUTrainer
from hf_unlearn.evaluation.mmubench import efficacy, evaluate_mmubench, generate_answers, specificity
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


def build_original(views: int, epochs: int, cache: str | None = None, schedule: str = "cosine") -> SimpleNamespace:
    """The concepts' photos, the ONE image unlearning sees, SIU's multifaceted set, and the original model trained on
    `views` augmented views per concept for `epochs` epochs (loaded from `cache` when that file exists)."""
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
                    for seed in range(views // 2)
                    for row in concept_recognition_rows(view(photos[key], seed), "?", num_questions=2, seed=seed)]
    texts += [row["answer"] for row in unknown_rows]
    tokenizer = add_image_token(train_tokenizer(texts, vocab_size=600))
    model = build_tiny_llava(tokenizer, image_size=32, patch_size=8, hidden_size=96, num_layers=2, seed=0)
    processor = build_llava_processor(model, tokenizer)
    rows = [row for key, (n, _, _) in CONCEPTS.items() for seed in range(views)
            for row in concept_recognition_rows(view(photos[key], seed), n, num_questions=2, seed=seed)]
    rows += [row for key in CONCEPTS for row in all_facts[key]] * (views // 6) + unknown_rows  # facts: 1/6 per view
    if cache and Path(cache).exists():
        model.load_state_dict(torch.load(cache))
    else:
        start = time.perf_counter()
        torch.manual_seed(0)
        loss = train_llava(model, processor, rows, epochs=epochs, learning_rate=2e-3, batch_size=8,
                           lr_scheduler_type=schedule, warmup_ratio=0.05)  # fmt: skip
        print(f"trained the original on {len(rows)} rows in {time.perf_counter() - start:.0f}s (last loss {loss:.3f})")
        if cache:
            torch.save(model.state_dict(), cache)
    model.eval()
    return SimpleNamespace(model=model, processor=processor, photos=photos, name=name, train_image=train_image,
                           facts=all_facts[TARGET], siu_rows=siu_rows)  # fmt: skip


def evaluation_inputs(world, split: str, unseen_views: int, other_views: int) -> dict:
    """`evaluate_mmubench`'s keyword arguments on the held-out views of `split`."""
    held_out = SPLIT_SEEDS[split]
    unseen = [view(world.photos[TARGET], held_out + i) for i in range(unseen_views)]
    others = {CONCEPTS[key][0]: [view(world.photos[key], held_out + i) for i in range(other_views)]
              for key in CONCEPTS if key != TARGET}  # fmt: skip
    return {"concept_name": world.name, "train_image": world.train_image, "unseen_images": unseen,
            "other_concepts": others, "questions": QUESTIONS}  # fmt: skip


def unlearn(world, variant: str, learning_rate: float, steps: int, batch_size: int):
    """Unlearn the concept from `world.train_image` with `variant` on a copy of the original; returns the merged
    unlearned model, its optimizer steps and its training wall time."""
    student = copy.deepcopy(world.model)
    forget = world.siu_rows if variant == "siu" else concept_recognition_rows(world.train_image, world.name,
                                                                             num_questions=5)  # fmt: skip
    retain = None if variant == "siu" else [r for r in world.siu_rows if r["image"] is None]
    config = SIUConfig(output_dir=f"/tmp/siu-bench-{variant}", variant=variant, max_steps=steps,
                       learning_rate=learning_rate, lora_r=16, lora_alpha=32, report_to="none", save_strategy="no",
                       use_cpu=True, disable_tqdm=True, logging_steps=steps, per_device_train_batch_size=batch_size,
                       seed=0)  # fmt: skip
    trainer = SIUTrainer(model=student, args=config, forget_dataset=forget, retain_dataset=retain,
                         processing_class=world.processor, concept_name=world.name)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    return trainer.model.merge_and_unload(), trainer.state.global_step, time.perf_counter() - start


def score(world, model, evaluation: dict) -> dict:
    results = evaluate_mmubench(model, world.model, world.processor, **evaluation)
    return {**results, "facts": fact_accuracy(model, world.processor, world.facts)}


def recognition(world, model, evaluation: dict) -> dict:
    """Efficacy, Generality, Specificity and concept facts of `model` alone (what the validation selection needs,
    without the other metrics' forward passes)."""
    name, questions = evaluation["concept_name"], evaluation["questions"]
    ask = lambda images: generate_answers(model, world.processor, [(q, i) for i in images for q in questions])  # noqa: E731
    others = evaluation["other_concepts"]
    owners = [n for n, images in others.items() for _ in images for _ in questions]
    return {"efficacy": efficacy(ask([evaluation["train_image"]]), name),
            "generality": efficacy(ask(evaluation["unseen_images"]), name),
            "specificity": specificity(ask([i for images in others.values() for i in images]), owners),
            "facts": fact_accuracy(model, world.processor, world.facts)}  # fmt: skip


def keeps(results: dict, original: dict) -> bool:
    """Specificity within 5 points of the original's and the concept's text facts as good as the original's."""
    return original["specificity"] - results["specificity"] <= 5 and results["facts"] >= original["facts"]


def meets(results: dict, original: dict) -> bool:
    """The target: Efficacy and Generality >= 90% while `keeps` holds."""
    return results["efficacy"] >= 90 and results["generality"] >= 90 and keeps(results, original)


def choose_learning_rate(scores: dict, original: dict) -> float:
    """The selection rule on the validation split (`scores`: learning rate -> `recognition` results, `original`: the
    original's): the smallest learning rate that meets the target; if none does, the one with the highest Generality
    (then Efficacy) among those that keep Specificity and the facts; if none keeps them, the one that loses the least
    Specificity."""
    met = [lr for lr, r in scores.items() if meets(r, original)]
    if met:
        return min(met)
    kept = [lr for lr, r in scores.items() if keeps(r, original)]
    if kept:
        return max(kept, key=lambda lr: (scores[lr]["generality"], scores[lr]["efficacy"], -lr))
    return max(scores, key=lambda lr: (scores[lr]["specificity"], -lr))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=48, help="Augmented training views per concept.")
    parser.add_argument("--epochs", type=int, default=20, help="Epochs of training the original (cosine schedule).")
    parser.add_argument("--steps", type=int, default=10, help="Unlearning optimizer steps (target: within 10).")
    parser.add_argument("--batch-size", type=int, default=32, help="Unlearning rows per optimizer step.")
    parser.add_argument("--lr-grid", default="1e-3,3e-3,3.5e-3,4e-3,4.5e-3,5e-3,1e-2",
                        help="Learning rates each method chooses from on the validation split (choose_learning_rate).")
    parser.add_argument("--lr", type=float, default=None, help="Use this learning rate for every method, no selection.")
    parser.add_argument("--unseen-views", type=int, default=32, help="Held-out views of the concept scored per split.")
    parser.add_argument("--other-views", type=int, default=8, help="Held-out views of each other concept per split.")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated subset of the methods to run.")
    parser.add_argument("--original-cache", default=None,
                        help="A .pt file: the trained original's weights are loaded from it if it exists, else saved.")
    parser.add_argument("--write-results", action="store_true", help="Write the table into docs/results.md.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = build_original(args.views, args.epochs, args.original_cache)
    validation, test = (evaluation_inputs(world, split, args.unseen_views, args.other_views) for split in SPLIT_SEEDS)
    grid = [args.lr] if args.lr is not None else [float(lr) for lr in args.lr_grid.split(",")]
    original_validation = recognition(world, world.model, validation)
    print("validation: original", {k: round(v, 2) for k, v in original_validation.items()})
    table = {"original": {**score(world, world.model, test), "steps": 0, "seconds": 0.0}}
    chosen = {}
    for label in args.methods.split(","):
        scores = {}
        for lr in grid if len(grid) > 1 else []:
            scores[lr] = recognition(world, unlearn(world, METHODS[label], lr, args.steps, args.batch_size)[0],
                                     validation)  # fmt: skip
            print(f"validation: {label} lr {lr:g}", {k: round(v, 2) for k, v in scores[lr].items()}, flush=True)
        chosen[label] = choose_learning_rate(scores, original_validation) if scores else grid[0]
        model, steps, seconds = unlearn(world, METHODS[label], chosen[label], args.steps, args.batch_size)
        table[label] = {**score(world, model, test), "steps": steps, "seconds": seconds}
        print(f"test: {label} lr {chosen[label]:g}", {k: round(v, 2) for k, v in table[label].items() if v is not None},
              flush=True)  # fmt: skip
    text = render(table, chosen, args)
    print(text)
    if args.write_results:
        write_results(text, args)


def render(table: dict, chosen: dict, args) -> str:
    columns = [("Efficacy ↑", "efficacy"), ("Generality ↑", "generality"), ("Specificity ↑", "specificity"),
               ("Fluency (ppl) ↓", "fluency"), ("Diversity ↑", "diversity"), ("C-Dis ↑", "c_dis"), ("MIA ↓", "mia"),
               ("Concept facts ↑", "facts"), ("Learning rate", "lr"), ("Steps", "steps"),
               ("Wall time (s)", "seconds")]  # fmt: skip
    lines = ["| Method | " + " | ".join(c for c, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, results in table.items():
        results = {**results, "lr": chosen.get(label)}
        cells = ["–" if results[k] is None else f"{results[k]:.0f}" if k == "steps" else f"{results[k]:g}"
                 if k == "lr" else f"{results[k]:.2f}" for _, k in columns]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    siu, original = table["SIU"], table["original"]
    forgotten = siu["efficacy"] >= 90 and siu["generality"] >= 90 and siu["steps"] <= 10
    kept = original["specificity"] - siu["specificity"] <= 5
    facts_kept = siu["facts"] >= original["facts"]
    sane = min(100 - original["generality"], original["specificity"]) >= 95 and original["facts"] == 100
    verdict = "met" if forgotten and kept and facts_kept else "NOT met"
    lines += ["", f"**Target {verdict}.** SIU: Efficacy {siu['efficacy']:.1f}% and Generality {siu['generality']:.1f}% "
              f"(≥ 90% within 10 steps: {'met' if forgotten else 'NOT met'}, in {siu['steps']} steps); other "
              f"concepts' recognition {original['specificity']:.1f}% → {siu['specificity']:.1f}% (within 5 points: "
              f"{'met' if kept else 'NOT met'}); the concept's text facts {original['facts']:.0f}% → "
              f"{siu['facts']:.0f}% ({'kept' if facts_kept else 'NOT kept'}). Generality is scored on "
              f"{args.unseen_views} unseen test views × {len(QUESTIONS)} questions = "
              f"{args.unseen_views * len(QUESTIONS)} answers, Specificity on "
              f"{len(CONCEPTS) - 1} concepts × {args.other_views} views × {len(QUESTIONS)} questions = "
              f"{(len(CONCEPTS) - 1) * args.other_views * len(QUESTIONS)} answers. The original names the concept on "
              f"{100 - original['generality']:.1f}% of its unseen test views and the other concepts on "
              f"{original['specificity']:.1f}% of theirs, and answers {original['facts']:.0f}% of the concept's facts "
              f"(sanity check: ≥ 95%, ≥ 95% and 100%: {'met' if sane else 'NOT met'})."]
    return "\n".join(lines)


def write_results(table: str, args) -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "results.md"
    selection = (f"learning rate {args.lr:g} for every method" if args.lr is not None else
                 f"each method's learning rate chosen from {{{args.lr_grid}}} on the `validation` split (held-out "
                 "views the test split does not use) by one rule: the smallest learning rate that meets the target "
                 "(Efficacy and Generality ≥ 90%, Specificity within 5 points of the original's, the concept's text "
                 "facts as good as the original's); if none does, the one with the highest Generality among those "
                 "keeping Specificity and the facts; if none keeps them, the one losing the least Specificity")
    block = ("A LLaVA built from configs (CLIP vision tower 32 px / patch 8, Llama 2 × 96) learned to name 10 concepts "
             f"from the photos bundled with scikit-image ({args.views} augmented views each, 2 questions per view, "
             f"{args.epochs} epochs, cosine learning-rate schedule), two text facts about each, and to answer 8 other "
             "scikit-image photos with a made-up name (as a pretrained MLLM does for people it never saw); one concept "
             "is unlearned from one unseen view. SIU, PO, GA and GA+KL start from the same weights (LoRA r 16, "
             f"{args.steps} steps of {args.batch_size} rows: all 30 rows of SIU's set per step; {selection}). The "
             "table scores held-out `test` views only; metrics as defined in `hf_unlearn/evaluation/mmubench.py` "
             "(Specificity: the other 9 concepts' recognition; Concept facts: the forgotten concept's text facts "
             "answered correctly). Produced by `PYTHONPATH=. python bench/siu_concepts.py --write-results` on a CPU "
             "(one thread).\n\n"
             f"{table}")  # fmt: skip
    write_section(path, "siu", "SIU: unlearning one concept of a small LLaVA from one image (MMUBench-style)", block)


if __name__ == "__main__":
    main()
