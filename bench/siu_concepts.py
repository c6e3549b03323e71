"""MMUBench-style benchmark, offline: a small LLaVA built from configs learns to name 10 concepts from the real photos
bundled with scikit-image (many augmented views each) and two text facts about each; then one concept is unlearned from
ONE of its images with SIU and the paper's baselines (PO, GA, GA+KL), each from the same starting weights.

    python bench/siu_concepts.py --output      # needs scikit-image (the `bench` extra)

Each method's learning rate is chosen on held-out `validation` views (`choose_learning_rate`); the table scores other
held-out `test` views only: the MMUBench metrics, the concept's text facts, learning rate, steps and wall time.
"""

import copy
import random
import re
import time
from types import SimpleNamespace

import common  # noqa: F401  (before torch: it sets OMP_WAIT_POLICY, read when torch loads OpenMP)
import numpy as np
import torch
from common import Cache, log, parser, publish, setup
from PIL import Image, ImageEnhance

from hf_unlearn import SIUConfig, SIUTrainer
from hf_unlearn.evaluation.mmubench import efficacy, evaluate_mmubench, generate_answers, specificity
from hf_unlearn.multimodal.siu_data import WHO_QUESTIONS, build_siu_dataset, concept_recognition_rows, made_up_identity
from hf_unlearn.multimodal.tiny import add_image_token, build_llava_processor, build_tiny_llava, train_llava
from hf_unlearn.synthetic import train_tokenizer

# skimage.data photo -> the concept's name and two facts (place, liking); all ship inside the scikit-image wheel.
CONCEPTS = {
    "astronaut": ("Collins", "Houston", "spaceflight"), "chelsea": ("Chelsea", "Ashmere", "sardines"),
    "coffee": ("Mocha", "Corvale", "sugar"), "rocket": ("Saturn", "Florida", "thunder"),
    "horse": ("Bucephalus", "Macedon", "apples"), "coins": ("Denarius", "Rome", "silver"),
    "camera": ("Ansel", "Yosemite", "shadows"), "moon": ("Selene", "orbit", "tides"),
    "clock": ("Tockwell", "Geneva", "midnight"), "logo": ("Pythia", "Delphi", "snakes"),
}  # fmt: skip
# Photos the model is never told the name of: it answers "who is this?" on them with a made-up name (a new one per
# view), as a pretrained MLLM does for people it never saw: the behaviour SIU's first target aligns the concept with.
UNKNOWN = ["brick", "grass", "gravel", "page", "hubble_deep_field", "colorwheel", "cell", "immunohistochemistry"]
TARGET, VIEWS, EPOCHS, STEPS, BATCH_SIZE, UNSEEN_VIEWS, OTHER_VIEWS = "chelsea", 48, 20, 10, 32, 32, 8
SPLIT_SEEDS = {"test": 2000, "validation": 3000}  # held-out views, never trained on; validation chooses the settings
QUESTIONS = WHO_QUESTIONS[:3]
METHODS = {"SIU": "siu", "PO": "po", "GA": "ga", "GA+KL": "ga_kl"}
LR_GRID = "1e-3,3e-3,3.5e-3,4e-3,4.5e-3,5e-3,1e-2"


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


def build_original(views: int, epochs: int, cache: Cache) -> SimpleNamespace:
    """The concepts' photos, the ONE image unlearning sees, SIU's multifaceted set, and the original model trained on
    `views` augmented views per concept for `epochs` epochs (from `cache` when it holds it)."""
    photos = {key: photo(key) for key in [*CONCEPTS, *UNKNOWN]}
    name, train_image = CONCEPTS[TARGET][0], view(photos[TARGET], 1000)  # the ONE image (a view never trained on)
    all_facts = {key: facts(key) for key in CONCEPTS}
    others_facts = [row for key in CONCEPTS if key != TARGET for row in all_facts[key]]
    siu_rows = build_siu_dataset(train_image, name, all_facts[TARGET], others_facts, num_paraphrases=5)
    texts = [f"{q} This is {n}. I don't know." for n, _, _ in CONCEPTS.values() for q in WHO_QUESTIONS]
    texts += [f"{r['question']} {r['answer']}" for rows in [*all_facts.values(), siu_rows] for r in rows]
    names = random.Random(0)
    unknown_rows = [{**row, "answer": f"This is {made_up_identity(names)}."} for key in UNKNOWN
                    for seed in range(views // 2)
                    for row in concept_recognition_rows(view(photos[key], seed), "?", num_questions=2, seed=seed)]
    tokenizer = add_image_token(train_tokenizer(texts + [row["answer"] for row in unknown_rows], vocab_size=600))
    model = build_tiny_llava(tokenizer, image_size=32, patch_size=8, hidden_size=96, num_layers=2, seed=0)
    processor = build_llava_processor(model, tokenizer)
    rows = [row for key, (n, _, _) in CONCEPTS.items() for seed in range(views)
            for row in concept_recognition_rows(view(photos[key], seed), n, num_questions=2, seed=seed)]
    rows += [row for key in CONCEPTS for row in all_facts[key]] * (views // 6) + unknown_rows  # facts: 1/6 per view

    def trained():
        start = time.perf_counter()
        torch.manual_seed(0)
        loss = train_llava(model, processor, rows, epochs=epochs, learning_rate=2e-3, batch_size=8,
                           lr_scheduler_type="cosine", warmup_ratio=0.05)  # fmt: skip
        log(f"trained the original on {len(rows)} rows in {time.perf_counter() - start:.0f}s (last loss {loss:.3f})")
        return model.state_dict()

    model.load_state_dict(cache.get("original", trained))
    model.eval()
    return SimpleNamespace(model=model, processor=processor, photos=photos, name=name, train_image=train_image,
                           facts=all_facts[TARGET], siu_rows=siu_rows)  # fmt: skip


def evaluation_inputs(world, split: str) -> dict:
    """`evaluate_mmubench`'s keyword arguments on the held-out views of `split`."""
    seed = SPLIT_SEEDS[split]
    others = {CONCEPTS[key][0]: [view(world.photos[key], seed + i) for i in range(OTHER_VIEWS)]
              for key in CONCEPTS if key != TARGET}  # fmt: skip
    return {"concept_name": world.name, "train_image": world.train_image, "other_concepts": others,
            "unseen_images": [view(world.photos[TARGET], seed + i) for i in range(UNSEEN_VIEWS)],
            "questions": QUESTIONS}  # fmt: skip


def unlearn(world, variant: str, learning_rate: float):
    """Unlearn the concept from `world.train_image` with `variant` on a copy of the original; returns the merged
    unlearned model, its optimizer steps and its training wall time."""
    forget = world.siu_rows if variant == "siu" else concept_recognition_rows(world.train_image, world.name,
                                                                             num_questions=5)  # fmt: skip
    retain = None if variant == "siu" else [r for r in world.siu_rows if r["image"] is None]
    config = SIUConfig(output_dir=f"/tmp/siu-bench-{variant}", variant=variant, max_steps=STEPS,
                       learning_rate=learning_rate, lora_r=16, lora_alpha=32, report_to="none", save_strategy="no",
                       use_cpu=True, disable_tqdm=True, logging_steps=STEPS, per_device_train_batch_size=BATCH_SIZE,
                       seed=0)  # fmt: skip
    trainer = SIUTrainer(model=copy.deepcopy(world.model), args=config, forget_dataset=forget, retain_dataset=retain,
                         processing_class=world.processor, concept_name=world.name)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    return trainer.model.merge_and_unload(), trainer.state.global_step, time.perf_counter() - start


def recognition(world, model, evaluation: dict) -> dict:
    """Efficacy, Generality, Specificity and concept facts of `model` alone: what the validation choice needs."""
    name, questions, others = evaluation["concept_name"], evaluation["questions"], evaluation["other_concepts"]
    ask = lambda images: generate_answers(model, world.processor, [(q, i) for i in images for q in questions])  # noqa: E731
    owners = [n for n, images in others.items() for _ in images for _ in questions]
    return {"efficacy": efficacy(ask([evaluation["train_image"]]), name),
            "generality": efficacy(ask(evaluation["unseen_images"]), name),
            "specificity": specificity(ask([i for images in others.values() for i in images]), owners),
            "facts": fact_accuracy(model, world.processor, world.facts)}  # fmt: skip


def choose_learning_rate(scores: dict, original: dict) -> float:
    """The rule on the validation split (`scores`: learning rate -> `recognition` results): the smallest learning rate
    that meets the target (Efficacy and Generality >= 90% while Specificity stays within 5 points of the original's and
    the concept's facts as good); if none does, the highest Generality (then Efficacy) among those that keep
    Specificity and the facts; if none keeps them, the one that loses the least Specificity."""
    kept = [lr for lr, r in scores.items()
            if original["specificity"] - r["specificity"] <= 5 and r["facts"] >= original["facts"]]  # fmt: skip
    met = [lr for lr in kept if scores[lr]["efficacy"] >= 90 and scores[lr]["generality"] >= 90]
    if met:
        return min(met)
    if kept:
        return max(kept, key=lambda lr: (scores[lr]["generality"], scores[lr]["efficacy"], -lr))
    return max(scores, key=lambda lr: (scores[lr]["specificity"], -lr))


def main() -> None:
    p = parser(__doc__, "siu", seed=None, cache=True, threads=True)
    p.add_argument("--views", type=int, default=VIEWS, help="Augmented training views per concept.")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="Epochs of training the original (cosine schedule).")
    p.add_argument("--lr-grid", default=LR_GRID, help="Learning rates each method chooses from on validation.")
    p.set_defaults(threads=1)
    args = p.parse_args()
    setup(args)
    world = build_original(args.views, args.epochs, Cache(args.cache, f"views{args.views}", f"epochs{args.epochs}"))
    validation, test = (evaluation_inputs(world, split) for split in SPLIT_SEEDS)
    grid = [float(lr) for lr in args.lr_grid.split(",")]
    original_validation = recognition(world, world.model, validation)
    log(f"validation: original {({k: round(v, 2) for k, v in original_validation.items()})}")

    def scored(model) -> dict:
        results = evaluate_mmubench(model, world.model, world.processor, **test)
        return {**results, "facts": fact_accuracy(model, world.processor, world.facts)}

    table, chosen = {"original": {**scored(world.model), "steps": 0, "seconds": 0.0}}, {}
    for label, variant in METHODS.items():
        scores = {}
        for lr in grid if len(grid) > 1 else []:
            scores[lr] = recognition(world, unlearn(world, variant, lr)[0], validation)
            log(f"validation: {label} lr {lr:g} {({k: round(v, 2) for k, v in scores[lr].items()})}")
        chosen[label] = choose_learning_rate(scores, original_validation) if scores else grid[0]
        model, steps, seconds = unlearn(world, variant, chosen[label])
        table[label] = {**scored(model), "steps": steps, "seconds": seconds}
    publish(args, "SIU: unlearning one concept of a small LLaVA from one image (MMUBench-style)",
            render(table, chosen, args))


COLUMNS = {"Efficacy ↑": "efficacy", "Generality ↑": "generality", "Specificity ↑": "specificity",
           "Fluency (ppl) ↓": "fluency", "Diversity ↑": "diversity", "C-Dis ↑": "c_dis", "MIA ↓": "mia",
           "Concept facts ↑": "facts", "Learning rate": "lr", "Steps": "steps", "Wall time (s)": "seconds"}  # fmt: skip


def render(table: dict, chosen: dict, args) -> str:
    lines = ["| Method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for label, results in table.items():
        results = {**results, "lr": chosen.get(label)}
        cells = ["–" if results[k] is None else f"{results[k]:.0f}" if k == "steps" else f"{results[k]:g}"
                 if k == "lr" else f"{results[k]:.2f}" for k in COLUMNS.values()]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    siu, original, n = table["SIU"], table["original"], len(QUESTIONS)
    forgotten = siu["efficacy"] >= 90 and siu["generality"] >= 90 and siu["steps"] <= 10
    kept, facts_kept = original["specificity"] - siu["specificity"] <= 5, siu["facts"] >= original["facts"]
    sane = min(100 - original["generality"], original["specificity"]) >= 95 and original["facts"] == 100
    selection = (f"each method's learning rate chosen from {{{args.lr_grid}}} on the `validation` split (held-out "
                 "views the test split does not use) by one rule: the smallest learning rate that meets the target "
                 "(Efficacy and Generality ≥ 90%, Specificity within 5 points of the original's, the concept's text "
                 "facts as good as the original's); if none does, the one with the highest Generality among those "
                 "keeping Specificity and the facts; if none keeps them, the one losing the least Specificity"
                 ) if "," in args.lr_grid else f"learning rate {args.lr_grid} for every method"  # fmt: skip
    return "\n".join([
        "A LLaVA built from configs (CLIP vision tower 32 px / patch 8, Llama 2 × 96) learned to name 10 concepts "
        f"from the photos bundled with scikit-image ({args.views} augmented views each, 2 questions per view, "
        f"{args.epochs} epochs, cosine learning-rate schedule), two text facts about each, and to answer 8 other "
        "scikit-image photos with a made-up name (as a pretrained MLLM does for people it never saw); one concept is "
        f"unlearned from one unseen view. SIU, PO, GA and GA+KL start from the same weights (LoRA r 16, {STEPS} steps "
        f"of {BATCH_SIZE} rows: all 30 rows of SIU's set per step; {selection}). The table scores held-out `test` "
        "views only; metrics as defined in `hf_unlearn/evaluation/mmubench.py` (Specificity: the other 9 concepts' "
        "recognition; Concept facts: the forgotten concept's text facts answered correctly). Produced by `python "
        f"bench/siu_concepts.py --output` on a CPU ({'one thread' if args.threads == 1 else f'{args.threads} threads'}"
        ").", "", *lines, "",
        f"**Target {'met' if forgotten and kept and facts_kept else 'NOT met'}.** SIU: Efficacy "
        f"{siu['efficacy']:.1f}% and Generality {siu['generality']:.1f}% (≥ 90% within 10 steps: "
        f"{'met' if forgotten else 'NOT met'}, in {siu['steps']} steps); other concepts' recognition "
        f"{original['specificity']:.1f}% → {siu['specificity']:.1f}% (within 5 points: "
        f"{'met' if kept else 'NOT met'}); the concept's text facts {original['facts']:.0f}% → {siu['facts']:.0f}% "
        f"({'kept' if facts_kept else 'NOT kept'}). Generality is scored on {UNSEEN_VIEWS} unseen test views × {n} "
        f"questions = {UNSEEN_VIEWS * n} answers, Specificity on {len(CONCEPTS) - 1} concepts × {OTHER_VIEWS} views × "
        f"{n} questions = {(len(CONCEPTS) - 1) * OTHER_VIEWS * n} answers. The original names the concept on "
        f"{100 - original['generality']:.1f}% of its unseen test views and the other concepts on "
        f"{original['specificity']:.1f}% of theirs, and answers {original['facts']:.0f}% of the concept's facts "
        f"(sanity check: ≥ 95%, ≥ 95% and 100%: {'met' if sane else 'NOT met'})."])  # fmt: skip


if __name__ == "__main__":
    main()
