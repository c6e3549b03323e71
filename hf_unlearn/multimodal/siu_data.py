"""SIU's multifaceted fine-tuning data, built from ONE image of the concept and its name (Li et al. 2024, arXiv
2405.12523, §3.2), and the concept-recognition rows the single-image baselines (PO, GA, GA+KL) unlearn.

Four targets (the paper's §3.2); every row is `{"question", "answer", "image", "target", "excluded_span"}`, with
`excluded_span` the `[start, end)` characters of `answer` that the Dual Masked KL leaves out (None: nothing):

1. `unseen_concept` — image + a paraphrase of "who is this?" → a made-up identity, the way the model answers for
   concepts it never saw. Excluded: the made-up name.
2. `visual_description` — image + "Does <concept> appear in the image?" → "No" and a fictitious description of what
   is shown, decoupling the name from its look. Excluded: the whole answer.
3. `concept_facts` — text only: questions about the concept → its true facts. Nothing excluded.
4. `other_concepts` — text only: facts about other concepts. Nothing excluded.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

TARGETS = ("unseen_concept", "visual_description", "concept_facts", "other_concepts")
IMAGE_TARGETS = frozenset(TARGETS[:2])

WHO_QUESTIONS = [
    "Who is this?", "What is this?", "What is shown in this image?", "Can you tell me who this is?",
    "What is the name of what is in this picture?", "Who or what appears in this photo?",
    "Do you recognise what is in this image?", "Name what you see in this picture.",
    "What is the subject of this photo called?", "Identify the subject of this image.",
]  # fmt: skip
APPEAR_QUESTIONS = [
    "Does {concept} appear in the image?", "Is {concept} in this picture?", "Is this a photo of {concept}?",
    "Can you see {concept} in this image?", "Is the subject of this image {concept}?",
]  # fmt: skip
_MADE_UP_FIRST = ["Jorvik", "Talwyn", "Mereth", "Brannoc", "Quillon", "Saffra", "Odrey", "Veylin", "Caspen", "Lunet"]
_MADE_UP_LAST = ["Harrowgate", "Penwarden", "Ostrander", "Kilbride", "Fenwyck", "Ashdown", "Marlowe", "Tressel"]
FICTITIOUS_DESCRIPTIONS = [
    "a wooden rowing boat resting on a pebble beach at dusk",
    "a stack of blue ceramic plates on a kitchen shelf",
    "a field of sunflowers under a cloudy sky",
    "an old bicycle leaning against a brick wall",
    "a bowl of green apples on a checked tablecloth",
    "a snowy mountain path lined with pine trees",
]


def made_up_identity(rng: random.Random, avoid: str = "") -> str:
    """A fictitious name (first + last) that is not `avoid`."""
    while True:
        name = f"{rng.choice(_MADE_UP_FIRST)} {rng.choice(_MADE_UP_LAST)}"
        if name.lower() != avoid.lower():
            return name


def _facts(facts, what: str) -> list[dict]:
    rows = []
    for index, fact in enumerate(facts):
        if isinstance(fact, Mapping):
            question, answer = fact.get("question"), fact.get("answer")
        elif isinstance(fact, Sequence) and not isinstance(fact, str) and len(fact) == 2:
            question, answer = fact
        else:
            question = answer = None
        if not isinstance(question, str) or not isinstance(answer, str) or not question or not answer:
            raise ValueError(f"{what}[{index}] is {fact!r}: give each fact as {{'question': ..., 'answer': ...}} or "
                             "a (question, answer) pair of non-empty strings.")  # fmt: skip
        rows.append({"question": question, "answer": answer})
    return rows


def build_siu_dataset(
    image, concept_name: str, concept_facts, other_concepts, num_paraphrases: int = 5, identity: str | None = None,
    description: str | None = None, seed: int = 0,
) -> list[dict]:
    """SIU's multifaceted fine-tuning set from ONE `image` of `concept_name` (any PIL image or array).

    Args:
        image: the single training image of the concept.
        concept_name: the concept's name as the model says it (its tokens form the DMK vocabulary mask).
        concept_facts: the concept's textual facts to keep, as `{"question", "answer"}` dicts or pairs (target 3).
        other_concepts: facts about other concepts to keep, same form (target 4).
        num_paraphrases: how many rows each image target gets (paraphrased questions; paper: several).
        identity: the made-up identity of target 1 (default: a fictitious name drawn with `seed`).
        description: the fictitious visual description of target 2 (default: one drawn with `seed`).

    Returns rows `{"question", "answer", "image", "target", "excluded_span"}` (see the module docstring), image targets
    first; text rows have `image=None`.
    """
    if image is None:
        raise ValueError("image is None: SIU builds its data from one image of the concept; pass it.")
    if not isinstance(concept_name, str) or not concept_name.strip():
        raise ValueError(f"concept_name={concept_name!r}: pass the concept's name as a non-empty string.")
    most = min(len(WHO_QUESTIONS), len(APPEAR_QUESTIONS))
    if not 1 <= num_paraphrases <= most:
        raise ValueError(f"num_paraphrases={num_paraphrases}: use 1 to {most}.")
    facts, others = _facts(concept_facts, "concept_facts"), _facts(other_concepts, "other_concepts")
    rng = random.Random(f"siu-{seed}")
    identity = identity or made_up_identity(rng, avoid=concept_name)
    description = description or rng.choice(FICTITIOUS_DESCRIPTIONS)
    rows = []
    for question in rng.sample(WHO_QUESTIONS, num_paraphrases):
        answer = f"This is {identity}."
        start = answer.index(identity)
        rows.append({"question": question, "answer": answer, "image": image, "target": "unseen_concept",
                     "excluded_span": [start, start + len(identity)]})  # fmt: skip
    for template in rng.sample(APPEAR_QUESTIONS, num_paraphrases):
        answer = f"No. The image shows {description}."
        rows.append({"question": template.format(concept=concept_name), "answer": answer, "image": image,
                     "target": "visual_description", "excluded_span": [0, len(answer)]})  # fmt: skip
    for target, group in (("concept_facts", facts), ("other_concepts", others)):
        rows += [{**fact, "image": None, "target": target, "excluded_span": None} for fact in group]
    return rows


def concept_recognition_rows(image, concept_name: str, num_questions: int = 5, seed: int = 0) -> list[dict]:
    """Rows the single-image baselines unlearn: `image` + paraphrases of "who is this?" → "This is <concept>."
    (GA and GA+KL raise their loss; PO trains them to "I don't know")."""
    if image is None:
        raise ValueError("image is None: pass the one image of the concept to unlearn.")
    if not 1 <= num_questions <= len(WHO_QUESTIONS):
        raise ValueError(f"num_questions={num_questions}: use 1 to {len(WHO_QUESTIONS)}.")
    questions = random.Random(f"siu-{seed}").sample(WHO_QUESTIONS, num_questions)
    return [{"question": q, "answer": f"This is {concept_name}.", "image": image, "excluded_span": None}
            for q in questions]  # fmt: skip
