"""SIU end to end, offline: teach a tiny LLaVA (built from configs) to name three concepts from real photos bundled
with scikit-image, unlearn one of them from ONE image, and score it MMUBench-style against the original.

    pip install scikit-image   # the photos ship in its wheel
    python examples/siu_llava.py [--output-dir siu-llava]

With a real LLaVA, replace the first block by `LlavaForConditionalGeneration.from_pretrained(...)` and
`AutoProcessor.from_pretrained(...)`; the rest is the same.
"""

import argparse
import copy

import numpy as np
import torch
from PIL import Image

from hf_unlearn import SIUConfig, SIUTrainer
from hf_unlearn.evaluation.mmubench import evaluate_mmubench
from hf_unlearn.multimodal import (
    add_image_token,
    build_llava_processor,
    build_siu_dataset,
    build_tiny_llava,
    concept_recognition_rows,
)
from hf_unlearn.multimodal.siu_data import WHO_QUESTIONS
from hf_unlearn.multimodal.tiny import train_llava
from hf_unlearn.synthetic import train_tokenizer

CONCEPTS = {"astronaut": ("Collins", "Houston"), "chelsea": ("Chelsea", "Ashmere"), "rocket": ("Saturn", "Florida")}


def crops(image: Image.Image, count: int, seed: int) -> list[Image.Image]:
    """Random crops (70-100% of each side) and flips: the concept's 'other photos'."""
    rng, out = np.random.default_rng(seed), []
    for _ in range(count):
        w, h = (int(side * rng.uniform(0.7, 1.0)) for side in image.size)
        x, y = int(rng.integers(0, image.size[0] - w + 1)), int(rng.integers(0, image.size[1] - h + 1))
        crop = image.crop((x, y, x + w, y + h))
        out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", default="siu-llava")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from skimage import data

    photos = {key: Image.fromarray(getattr(data, key)()) for key in CONCEPTS}
    facts = {key: [{"question": f"Where does {n} live?", "answer": f"{n} lives in {place}."}]
             for key, (n, place) in CONCEPTS.items()}  # fmt: skip

    # 1. A tiny LLaVA that knows the concepts (stands in for a pretrained one).
    texts = [f"{q} This is {n}." for n, _ in CONCEPTS.values() for q in WHO_QUESTIONS]
    texts += [f"{r['question']} {r['answer']}" for rows in facts.values() for r in rows] + ["No. The image shows"]
    tokenizer = add_image_token(train_tokenizer(texts, vocab_size=500))
    model = build_tiny_llava(tokenizer, hidden_size=64)
    processor = build_llava_processor(model, tokenizer)
    rows = [row for key, (n, _) in CONCEPTS.items() for i, image in enumerate(crops(photos[key], 8, 0))
            for row in concept_recognition_rows(image, n, num_questions=2, seed=i)]  # fmt: skip
    rows += [row for key in CONCEPTS for row in facts[key]] * 4
    torch.manual_seed(0)
    train_llava(model, processor, rows, epochs=25)
    original = copy.deepcopy(model)

    # 2. SIU's multifaceted data from ONE image of the concept, then unlearning (LoRA on by default).
    image = crops(photos["chelsea"], 1, seed=99)[0]
    others = [row for key in CONCEPTS if key != "chelsea" for row in facts[key]]
    dataset = build_siu_dataset(image, "Chelsea", facts["chelsea"], others, num_paraphrases=5)
    config = SIUConfig(output_dir=args.output_dir, learning_rate=1e-2, max_steps=10, lora_r=16, lora_alpha=32,
                       report_to="none", use_cpu=True, logging_steps=2, save_strategy="no")  # fmt: skip
    trainer = SIUTrainer(model=model, args=config, forget_dataset=dataset, processing_class=processor,
                         concept_name="Chelsea")  # fmt: skip
    trainer.train()
    trainer.save_model()  # adapter, processor, card and manifest (the concept's name is in neither)

    # 3. MMUBench-style scores against the original.
    results = evaluate_mmubench(
        trainer.model, original, processor, "Chelsea", image, crops(photos["chelsea"], 4, seed=7),
        {n: crops(photos[key], 2, seed=7) for key, (n, _) in CONCEPTS.items() if key != "chelsea"},
    )  # fmt: skip
    for name, value in results.items():
        print(f"{name:>22}: {value:.2f}")


if __name__ == "__main__":
    main()
