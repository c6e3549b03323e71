"""MMUBench-style evaluation of unlearning one visual concept (Li et al. 2024, arXiv 2405.12523, §4), against the
original model. Pure metric functions first, then `evaluate_mmubench` that runs both models.

Where the paper's exact recipe could not be read (it scores some metrics with GPT-4 and general benchmarks), this
project's definition is stated in each docstring:

- Efficacy: % of answers on the training image that do not name the concept (higher: forgotten).
- Generality: the same on unseen images of the concept.
- Specificity: % of answers on other concepts' images that name their own concept, i.e. recognition accuracy of the
  concepts that were not unlearned (the paper uses general benchmarks; higher: kept). Reported for both models.
- Fluency: perplexity of the unlearned model on the original model's answers, the concept name's tokens left out
  (lower: fluent).
- Diversity: mean % of unique words per answer (higher: less repetitive).
- C-Dis: mean KL(p_original ‖ p_unlearned) at the positions of the original answers that predict a token of the
  concept name (higher: the name's distribution moved further).
- MIA: the questions whose original answer has a Min-K% (k = 40%) log-probability at or above the median (the most
  "member-like"), then the mean ROUGE-L recall (%) of the unlearned model's answers against the original's on them
  (lower: less of what the model said about the concept can be read back).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from ..losses import token_kl, token_logps
from ..multimodal.alignment import concept_token_ids
from .checks import check_positive_int, check_sized, check_strings, kind, show
from .generation import check_prompt_template
from .metrics import min_k_score, rouge_l_recall

MMUBENCH_METRICS = ("efficacy", "generality", "specificity", "fluency", "diversity", "c_dis", "mia")
WHO_PROMPT = "Who is this?"


def names_concept(answer: str, concept_name: str) -> bool:
    """Whether `answer` names the concept (case-insensitive, on word boundaries)."""
    return re.search(rf"\b{re.escape(concept_name.lower())}\b", answer.lower()) is not None


def efficacy(answers: Sequence[str], concept_name: str) -> float:
    """% of `answers` that do not name `concept_name` (Efficacy on the training image, Generality on unseen ones)."""
    if not answers:
        raise ValueError("no answers to score: pass at least one.")
    return 100.0 * sum(not names_concept(a, concept_name) for a in answers) / len(answers)


def specificity(answers: Sequence[str], concept_names: Sequence[str]) -> float:
    """% of `answers` (to other concepts' images) that name their own concept, `concept_names[i]`."""
    if len(answers) != len(concept_names) or not answers:
        raise ValueError(f"{len(answers)} answers, {len(concept_names)} names: pass one name per answer, at least 1.")
    return 100.0 * sum(names_concept(a, n) for a, n in zip(answers, concept_names, strict=True)) / len(answers)


def diversity(answers: Sequence[str]) -> float:
    """Mean over answers of 100 × unique words / words (empty answers count 0)."""
    if not answers:
        raise ValueError("no answers to score: pass at least one.")
    scores = []
    for answer in answers:
        words = re.findall(r"\w+", answer.lower())
        scores.append(100.0 * len(set(words)) / len(words) if words else 0.0)
    return sum(scores) / len(scores)


def _name_free_nll(logits: torch.Tensor, labels: torch.Tensor, name_token_ids: Sequence[int]) -> tuple[float, int]:
    """Summed NLL of the answer tokens (`labels` not -100) that are not the concept name's tokens, and their count."""
    logps, keep = token_logps(logits, labels)
    keep &= ~torch.isin(labels[:, 1:], torch.as_tensor(list(name_token_ids), dtype=labels.dtype, device=labels.device))
    return -(logps * keep).sum().item(), int(keep.sum())


def fluency(logits: torch.Tensor, labels: torch.Tensor, name_token_ids: Sequence[int]) -> float:
    """Perplexity exp(mean NLL) of answer tokens (`labels` not -100) that are not the concept name's tokens."""
    nll, count = _name_free_nll(logits, labels, name_token_ids)
    return math.exp(nll / max(count, 1))


def concept_distance(reference_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                     name_token_ids: Sequence[int]) -> float:  # fmt: skip
    """C-Dis: mean KL(p_ref ‖ p) over positions whose label is one of `name_token_ids` (0 when there is none)."""
    key = torch.isin(labels[:, 1:], torch.as_tensor(list(name_token_ids), dtype=labels.dtype, device=labels.device))
    if not key.any():
        return 0.0
    return token_kl(reference_logits, logits, labels)[key].mean().item()


def mia_score(original_min_k: Sequence[float], unlearned_answers: Sequence[str],
              original_answers: Sequence[str]) -> float:  # fmt: skip
    """Mean ROUGE-L recall (%) of unlearned answers against the original answers, on the questions whose original
    Min-K% score is at or above the median (the filtered, most member-like ones)."""
    if not len(original_min_k) == len(unlearned_answers) == len(original_answers) or not original_answers:
        raise ValueError("pass one Min-K% score, unlearned answer and original answer per question (at least one).")
    scores = torch.as_tensor(list(original_min_k), dtype=torch.float)
    kept = (scores >= scores.median()).nonzero().flatten().tolist()
    recalls = rouge_l_recall([unlearned_answers[i] for i in kept], [original_answers[i] for i in kept])
    return 100.0 * sum(recalls) / len(recalls)


# ---- running the models ----


def _prompts(processor, questions, prompt_template: str, images) -> dict:
    """One left-padded batch of prompts: text-only when `images` is None, else each with its image."""
    from ..multimodal.alignment import as_rgb

    prompts = [prompt_template.format(question=question) for question in questions]
    if images is None:
        return processor.tokenizer(prompts, return_tensors="pt", padding=True)
    texts = [f"{processor.image_token}\n{prompt}" for prompt in prompts]
    return processor(images=[as_rgb(image) for image in images], text=texts, return_tensors="pt", padding=True)


@torch.no_grad()
def generate_answers(model, processor, queries, prompt_template: str = "Question: {question}\nAnswer:",
                     max_new_tokens: int = 16, batch_size: int = 16) -> list[str]:  # fmt: skip
    """Greedy answers to `(question, image or None)` queries (images of any size), batched: image queries and
    text-only queries in separate left-padded batches, generated with the KV cache."""
    check_sized("queries", queries, what="a list of (question, image or None) pairs", min_count=0, unit="queries")
    for index, query in enumerate(queries):
        if not isinstance(query, (tuple, list)) or len(query) != 2 or not isinstance(query[0], str):
            raise TypeError(f"queries[{index}]={show(query)}: each query is a (question, image or None) pair, the "
                            "question a string.")  # fmt: skip
    check_prompt_template(prompt_template)
    check_positive_int("max_new_tokens", max_new_tokens, unit="tokens")
    check_positive_int("batch_size", batch_size, unit="queries per generate call")
    was_training, side = model.training, processor.tokenizer.padding_side
    model.eval()
    processor.tokenizer.padding_side = "left"  # generation continues every prompt from its last token
    answers = [""] * len(queries)
    try:
        for has_image in (True, False):
            indices = [i for i, (_, image) in enumerate(queries) if (image is not None) == has_image]
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                images = [queries[i][1] for i in chunk] if has_image else None
                inputs = _prompts(processor, [queries[i][0] for i in chunk], prompt_template, images).to(model.device)
                out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                     pad_token_id=processor.tokenizer.pad_token_id)  # fmt: skip
                new_tokens = out[:, inputs["input_ids"].shape[1]:]
                texts = processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text in zip(chunk, texts, strict=True):
                    answers[i] = text.strip()
    finally:
        model.train(was_training)
        processor.tokenizer.padding_side = side
    return answers


@torch.no_grad()
def _answer_logits(model, processor, queries, answers, prompt_template):
    from ..multimodal.alignment import encode_row

    for (question, image), answer in zip(queries, answers, strict=True):
        row = encode_row({"question": question, "answer": answer or ".", "image": image}, processor, prompt_template,
                         4096, "query")  # fmt: skip
        batch = {"input_ids": torch.tensor([row["input_ids"]]), "attention_mask": torch.tensor([row["attention_mask"]])}
        if "pixel_values" in row:
            batch["pixel_values"] = row["pixel_values"].unsqueeze(0)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        yield model(**batch).logits, torch.tensor([row["labels"]], device=model.device)


def evaluate_mmubench(model, original_model, processor, concept_name: str, train_image, unseen_images,
                      other_concepts: dict, questions: Sequence[str] = (WHO_PROMPT,),
                      prompt_template: str = "Question: {question}\nAnswer:",
                      max_new_tokens: int = 16) -> dict:  # fmt: skip
    """The seven MMUBench metrics of `model` for `concept_name`, against `original_model` (module docstring).

    `other_concepts` maps each other concept's name to its images; `questions` are asked of every image."""
    _check_mmubench_arguments(processor, concept_name, train_image, unseen_images, other_concepts, questions,
                              prompt_template, max_new_tokens)  # fmt: skip
    was = (model.training, original_model.training)
    model.eval(), original_model.eval()
    tokenizer = processor.tokenizer
    name_ids = concept_token_ids(tokenizer, concept_name)
    train = [(q, train_image) for q in questions]
    unseen = [(q, image) for image in unseen_images for q in questions]
    others = [(q, image, name) for name, images in other_concepts.items() for image in images for q in questions]
    answers = {who: {split: generate_answers(m, processor, queries, prompt_template, max_new_tokens)
                     for split, queries in (("train", train), ("unseen", unseen),
                                            ("others", [(q, i) for q, i, _ in others]))}
               for who, m in (("model", model), ("original", original_model))}  # fmt: skip
    concept_queries = train + unseen
    original_answers = answers["original"]["train"] + answers["original"]["unseen"]
    unlearned_answers = answers["model"]["train"] + answers["model"]["unseen"]
    nll_sum, tokens, distances, min_k = 0.0, 0, [], []
    pairs = zip(_answer_logits(original_model, processor, concept_queries, original_answers, prompt_template),
                _answer_logits(model, processor, concept_queries, original_answers, prompt_template), strict=True)
    for (reference_logits, labels), (logits, _) in pairs:
        nll, count = _name_free_nll(logits, labels, name_ids)
        nll_sum, tokens = nll_sum + nll, tokens + max(count, 1)  # an answer of only name tokens counts one token
        distances.append(concept_distance(reference_logits, logits, labels, name_ids))
        min_k.append(min_k_score(*token_logps(reference_logits, labels), 0.4).item())
    names = [name for _, _, name in others]
    results = {
        "efficacy": efficacy(answers["model"]["train"], concept_name),
        "generality": efficacy(answers["model"]["unseen"], concept_name),
        "specificity": specificity(answers["model"]["others"], names) if others else None,
        "specificity_original": specificity(answers["original"]["others"], names) if others else None,
        "fluency": math.exp(nll_sum / max(tokens, 1)),
        "diversity": diversity(unlearned_answers),
        "c_dis": sum(distances) / len(distances),
        "mia": mia_score(min_k, unlearned_answers, original_answers),
    }
    model.train(was[0]), original_model.train(was[1])
    return results


def _check_mmubench_arguments(processor, concept_name, train_image, unseen_images, other_concepts, questions,
                              prompt_template, max_new_tokens) -> None:  # fmt: skip
    """`evaluate_mmubench`'s arguments, before either model runs (messages never quote the concept's images)."""
    if not isinstance(concept_name, str) or not concept_name.strip():
        raise (TypeError if not isinstance(concept_name, str) else ValueError)(
            f"concept_name={show(concept_name)}: pass the unlearned concept's name as a non-empty string (answers are "
            "judged by whether they name it)."
        )
    if not hasattr(processor, "tokenizer"):
        raise TypeError(f"processor is {kind(processor)}: pass the model's processor (AutoProcessor, with a "
                        ".tokenizer and an image processor).")  # fmt: skip
    if train_image is None:
        raise ValueError("train_image=None: pass the image the concept was unlearned on (Efficacy is measured on it).")
    check_sized("unseen_images", unseen_images, what="a list of images", unit="image(s)")
    if not isinstance(other_concepts, dict):
        raise TypeError(f"other_concepts is {kind(other_concepts)}: pass a dict of another concept's name "
                        "-> a list of its images ({} for none: Specificity is then None).")  # fmt: skip
    for name, images in other_concepts.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"other_concepts has the key {show(name)}: name each other concept with a non-empty "
                             "string.")  # fmt: skip
        if name.strip().lower() == concept_name.strip().lower():
            raise ValueError("other_concepts holds the unlearned concept itself: Specificity is measured on the "
                             "concepts that were not unlearned; drop that key.")  # fmt: skip
        check_sized(f"other_concepts[{name!r}]", images, what="a list of images", unit="image(s)")
    check_strings("questions", questions, min_count=1, unit="questions")
    check_prompt_template(prompt_template)
    check_positive_int("max_new_tokens", max_new_tokens, unit="tokens")
