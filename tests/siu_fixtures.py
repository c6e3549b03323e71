"""A tiny LLaVA that learned to name three concepts from their (synthetic) pictures and a few facts about each: the
model the multimodal method matrix and tests/test_siu.py unlearn one concept from. No download, seconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hf_unlearn.multimodal import add_image_token, build_llava_processor, build_tiny_llava
from hf_unlearn.multimodal.siu_data import WHO_QUESTIONS, build_siu_dataset, concept_recognition_rows
from hf_unlearn.multimodal.tiny import train_llava
from hf_unlearn.synthetic import train_tokenizer

CONCEPTS = {"Zorblat": (200, 40, 40), "Quimby": (40, 200, 40), "Fennick": (40, 40, 200)}
HOMES, FOODS = {"Zorblat": "Ashmere", "Quimby": "Corvale", "Fennick": "Elmbrae"}, {"Zorblat": "plums", "Quimby": "figs",
                                                                                  "Fennick": "oats"}  # fmt: skip
FACTS = {name: [(f"Where does {name} live?", f"{name} lives in {HOMES[name]}."),
                (f"What does {name} eat?", f"{name} eats {FOODS[name]}.")] for name in CONCEPTS}  # fmt: skip
TARGET = "Zorblat"


def concept_image(name: str, seed: int, size: int = 40) -> Image.Image:
    """A noisy picture of a concept: its colour on the left half, noise, and a seed-dependent size/mode."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 60, size=(size, size + seed % 7, 3))
    array[:, : array.shape[1] // 2] += np.array(CONCEPTS[name])
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def fact_rows(name: str) -> list[dict]:
    return [{"question": q, "answer": a} for q, a in FACTS[name]]


@pytest.fixture(scope="session")
def llava_parts():
    """(tokenizer, memorised weights, training image of TARGET) — the model learns 'This is <name>.' from 6 views per
    concept and every fact."""
    texts = [f"{q} This is {n}. I don't know." for n in CONCEPTS for q in WHO_QUESTIONS]
    texts += [f"{q} {a}" for n in CONCEPTS for q, a in FACTS[n]]
    texts += [r["question"] + " " + r["answer"] for r in build_siu_dataset(
        concept_image(TARGET, 0), TARGET, fact_rows(TARGET), fact_rows("Quimby"), num_paraphrases=5)]
    tokenizer = add_image_token(train_tokenizer(texts, vocab_size=400))
    model = build_tiny_llava(tokenizer, hidden_size=64)
    processor = build_llava_processor(model, tokenizer)
    rows = [row for n in CONCEPTS for seed in range(6)
            for row in concept_recognition_rows(concept_image(n, seed), n, num_questions=2, seed=seed)]
    rows += [row for n in CONCEPTS for row in fact_rows(n)] * 3
    torch.manual_seed(0)
    train_llava(model, processor, rows, epochs=25, learning_rate=3e-3)
    return tokenizer, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def memorised_llava(llava_parts):
    """(model, processor) fresh from the memorised weights."""
    tokenizer, state = llava_parts
    model = build_tiny_llava(tokenizer, hidden_size=64)
    model.load_state_dict(state)
    return model, build_llava_processor(model, tokenizer)


@torch.no_grad()
def mean_answer_nll(model, processor, rows) -> float:
    """Mean answer-token NLL of question/answer(/image) rows under `model` (the default prompt template)."""
    from hf_unlearn.losses import mean_nll, sequence_logps
    from hf_unlearn.multimodal.alignment import MultimodalCollator, encode_row

    encoded = [encode_row(row, processor, "Question: {question}\nAnswer:", 256, "row") for row in rows]
    batch = MultimodalCollator(processor.tokenizer.pad_token_id).pad(encoded)
    batch.pop("excluded")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    labels = batch.pop("labels")
    was_training = model.training
    model.eval()
    value = mean_nll(*sequence_logps(model(**batch).logits, labels)).mean().item()
    model.train(was_training)
    return value


def siu_data(variant: str):
    """(forget rows, retain rows) for a variant: SIU's multifaceted set, or the baselines' recognition rows + facts."""
    image = concept_image(TARGET, 0)
    others = [row for name in CONCEPTS if name != TARGET for row in fact_rows(name)]
    if variant == "siu":
        return build_siu_dataset(image, TARGET, fact_rows(TARGET), others, num_paraphrases=4), None
    return concept_recognition_rows(image, TARGET, num_questions=4), fact_rows(TARGET) + others
