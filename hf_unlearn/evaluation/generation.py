"""Batched greedy generation of answers (left-padded prompts, KV cache), for ROUGE-L recall."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..progress import bar
from .checks import check_positive_int, check_strings, kind, show

DEFAULT_MAX_NEW_TOKENS = 64


@torch.no_grad()
def greedy_answers(
    model,
    tokenizer,
    questions: Sequence[str],
    prompt_template: str = "Question: {question}\nAnswer:",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 32,
    stop: Sequence[str] = (),
) -> list[str]:
    """Greedy (no sampling) answers to `questions`, prompted exactly as in training, at most `max_new_tokens` each.

    `prompt_template="{question}"` uses each question as the whole prompt (a text to continue). `stop`: each answer
    is cut before the first of these strings, e.g. `["\n\nQuestion"]` where the model goes on to a next question.
    """
    check_strings("questions", questions, unit="questions")
    check_prompt_template(prompt_template)
    check_positive_int("max_new_tokens", max_new_tokens, unit="tokens")
    check_positive_int("batch_size", batch_size, unit="questions per generate call")
    check_strings("stop", stop, unit="stop strings")
    if any(not text for text in stop):
        raise ValueError(f"stop={list(stop)!r} holds an empty string: every answer would be cut to nothing.")
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token: set tokenizer.pad_token = tokenizer.eos_token first.")
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues every prompt from its last token
    device = next(model.parameters()).device
    prompts_all = [prompt_template.format(question=q) for q in questions]
    order = sorted(range(len(prompts_all)), key=lambda i: len(prompts_all[i]))  # similar lengths: less padding
    answers: list[str] = [""] * len(prompts_all)
    cache = {"cache_implementation": "static"} if _takes_static_cache(model) else {}
    # transformers steps the generate loops of all processes together under ZeRO-3 (each token's forward gathers the
    # shards); a whole model (e.g. `whole_copy`'s, on the main process) generates alone
    synced = any(hasattr(parameter, "ds_id") for parameter in model.parameters())
    try:
        for start in bar(range(0, len(order), batch_size), "generating answers"):
            indices = order[start:start + batch_size]
            prompts = [prompts_all[i] for i in indices]
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
            output = model.generate(
                **batch, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True, **cache, synced_gpus=synced,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )  # fmt: skip
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            for i, text in zip(indices, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
                for word in stop:
                    text = text.split(word, 1)[0]
                answers[i] = text.strip()
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    return answers


def check_prompt_template(prompt_template) -> None:
    """A prompt template is a string with one `{question}` field (and no other)."""
    if not isinstance(prompt_template, str):
        raise TypeError(f"prompt_template={show(prompt_template)} is {kind(prompt_template)}: pass a string "
                        "with a {question} field, e.g. 'Question: {question}\\nAnswer:'.")  # fmt: skip
    try:
        prompt_template.format(question="")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"prompt_template={show(prompt_template)} does not format with only a question ({error!r}): "
                         "use {question} for the question and double other braces ({{ }}).") from None
    if "{question}" not in prompt_template:
        raise ValueError(f"prompt_template={show(prompt_template)} has no {{question}} field: every prompt would be "
                         "the same; put {question} where the question goes.")


def _takes_static_cache(model) -> bool:
    """Whether `generate` can preallocate the KV cache (`cache_implementation="static"`): the models transformers marks
    as compilable. A preallocated cache is written in place, where a growing one copies itself at every new token."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(target, "_can_compile_fullgraph", False))
