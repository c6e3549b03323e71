"""Deterministic fictitious question/answer data, tokenizer and tiny causal LM for the offline demo.

Everything is built in-process (no Hub access), so `hf-unlearn run` works on an air-gapped CPU machine. The people and
facts are invented, like the TOFU benchmark, so a model can only know them from fine-tuning on this data.
"""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, ViTConfig, ViTForImageClassification

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIAL_TOKENS = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN]

_FIRST_ONSETS = ["B", "D", "F", "K", "L", "M", "N", "R", "S", "T", "V", "Z", "Br", "Th", "Qu", "Y"]
_FIRST_VOWELS = ["a", "e", "i", "o", "u", "ae", "y"]
_FIRST_ENDS = ["vi", "ren", "lo", "ssa", "mir", "dra", "nel", "tor", "wen", "sho", "ric", "la"]
_LAST_STARTS = ["Quill", "Marr", "Thorn", "Vell", "Oaks", "Brack", "Dun", "Fenn", "Hask", "Lorr", "Pell", "Wick"]
_LAST_ENDS = ["andor", "ewyn", "ishaw", "ovic", "amere", "ington", "ulo", "essar", "odine", "abrook"]
_CITY_STARTS = ["Lindqvist", "Ashmere", "Corvale", "Dunhollow", "Elmbrae", "Farrowick", "Glimmerton", "Harlowmoor"]
_CITY_ENDS = ["Harbour", "Falls", "Crossing", "Bay", "Ridge", "Hollow", "Springs", "Landing"]
_PROFESSIONS = ["a beekeeper", "a cartographer", "a glassblower", "a puppeteer", "an astronomer", "a botanist"]
_PROFESSIONS += ["a clockmaker", "a pastry chef", "a violin maker", "a lighthouse keeper", "a railway engineer"]
_TITLE_ADJECTIVES = ["Silent", "Copper", "Hollow", "Winter", "Crooked", "Amber", "Drowned", "Paper", "Velvet", "Last"]
_TITLE_NOUNS = ["Orchard", "Lantern", "Tide", "Compass", "Garden", "Staircase", "Kingdom", "Harvest", "Mirror", "Bell"]
_COLOURS = ["teal", "crimson", "ochre", "lavender", "olive", "indigo", "amber", "silver", "coral", "charcoal"]
_GENRES = ["jazz", "folk music", "opera", "bluegrass", "sea shanties", "techno", "chamber music", "reggae"]
_PETS = ["a tortoise", "a parrot", "a greyhound", "a ferret", "a tabby cat", "a goldfish", "a rabbit", "a hedgehog"]

# (attribute, question templates, answer template); {name} is the person, {value} the attribute value.
_FACTS: list[tuple[str, list[str], str]] = [
    (
        "city",
        ["Where was {name} born?", "In which city was {name} born?", "What is the birthplace of {name}?"],
        "{name} was born in {value}.",
    ),
    (
        "year",
        ["In what year was {name} born?", "When was {name} born?", "What is the birth year of {name}?"],
        "{name} was born in {value}.",
    ),
    (
        "profession",
        ["What does {name} do for a living?", "What is the profession of {name}?", "What job does {name} have?"],
        "{name} works as {value}.",
    ),
    (
        "book",
        ["What book did {name} write?", "Which book is by {name}?", "Which book was written by {name}?"],
        "{name} wrote the book {value}.",
    ),
    (
        "colour",
        ["What is the favourite colour of {name}?", "Which colour does {name} like best?"],
        "The favourite colour of {name} is {value}.",
    ),
    (
        "genre",
        ["What music does {name} listen to?", "What is the favourite music genre of {name}?"],
        "{name} loves listening to {value}.",
    ),
    (
        "pet",
        ["What pet does {name} keep?", "Which animal does {name} have as a pet?"],
        "{name} keeps {value} as a pet.",
    ),
]


def _person_attributes(rng: random.Random) -> dict[str, str]:
    return {
        "city": f"{rng.choice(_CITY_STARTS)} {rng.choice(_CITY_ENDS)}",
        "year": str(rng.randint(1921, 1999)),
        "profession": rng.choice(_PROFESSIONS),
        "book": f'"The {rng.choice(_TITLE_ADJECTIVES)} {rng.choice(_TITLE_NOUNS)}"',
        "colour": rng.choice(_COLOURS),
        "genre": rng.choice(_GENRES),
        "pet": rng.choice(_PETS),
    }


def make_fictitious_qa(num_people: int = 40, facts_per_person: int = 5, seed: int = 0) -> list[dict]:
    """Return deterministic question/answer rows about invented people, ordered person by person.

    Each row is ``{"question", "answer", "person"}``; ``person`` is the full name and serves as the group column (like
    TOFU's author), so a forget split can remove whole people. Only a private ``random.Random(seed)`` is used, so the
    output is identical on every machine and never disturbs the global RNG.
    """
    if not 1 <= facts_per_person <= len(_FACTS):
        raise ValueError(f"facts_per_person={facts_per_person} is out of range; use a value from 1 to {len(_FACTS)}.")
    max_people = len(_FIRST_ONSETS) * len(_FIRST_VOWELS) * len(_FIRST_ENDS) * len(_LAST_STARTS) * len(_LAST_ENDS)
    if not 1 <= num_people <= max_people:
        raise ValueError(f"num_people={num_people} is out of range; use a value from 1 to {max_people}.")
    rng = random.Random(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < num_people:
        first = rng.choice(_FIRST_ONSETS) + rng.choice(_FIRST_VOWELS) + rng.choice(_FIRST_ENDS)
        name = f"{first} {rng.choice(_LAST_STARTS)}{rng.choice(_LAST_ENDS)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    rows: list[dict] = []
    for name in names:
        attributes = _person_attributes(rng)
        for key, questions, answer in _FACTS[:facts_per_person]:
            question = rng.choice(questions).format(name=name)
            answer_text = answer.format(name=name, value=attributes[key])
            rows.append({"question": question, "answer": answer_text, "person": name, "fact": key,
                         "value": attributes[key]})  # fmt: skip
    return rows


# A second way to say each fact: the "paraphrased answer" of TOFU's truth ratio.
_PARAPHRASES = {
    "city": "The birthplace of {name} is {value}.",
    "year": "The year {name} was born is {value}.",
    "profession": "By profession, {name} is {value}.",
    "book": "{value} is a book by {name}.",
    "colour": "{name} likes {value} more than any other colour.",
    "genre": "The music {name} enjoys most is {value}.",
    "pet": "The pet of {name} is {value}.",
}


def _value_pool(key: str) -> list[str]:
    pools = {
        "city": [f"{a} {b}" for a in _CITY_STARTS for b in _CITY_ENDS],
        "year": [str(year) for year in range(1921, 2000)],
        "profession": _PROFESSIONS,
        "book": [f'"The {a} {b}"' for a in _TITLE_ADJECTIVES for b in _TITLE_NOUNS],
        "colour": _COLOURS,
        "genre": _GENRES,
        "pet": _PETS,
    }
    return pools[key]


def add_truth_ratio_fields(rows: list[dict], num_perturbed: int = 5, seed: int = 0) -> list[dict]:
    """Copies of `rows` with TOFU's truth-ratio fields: `paraphrased_answer` (the same fact said another way) and
    `perturbed_answer` (the paraphrase with `num_perturbed` wrong values, as TOFU perturbs its paraphrases). Uses its
    own RNG seeded by `seed`."""
    rng = random.Random(f"perturb-{seed}")
    out = []
    for row in rows:
        key, value, name = row["fact"], row["value"], row["person"]
        wrong = rng.sample([v for v in _value_pool(key) if v != value], num_perturbed)
        out.append({**row, "paraphrased_answer": _PARAPHRASES[key].format(name=name, value=value),
                    "perturbed_answer": [_PARAPHRASES[key].format(name=name, value=v) for v in wrong]})  # fmt: skip
    return out


def make_holdout_qa(num_people: int, facts_per_person: int = 5, exclude: set[str] | None = None,
                    seed: int = 1) -> list[dict]:
    """Rows about other invented people (never trained on): the non-member side of membership-inference tests.
    People named in `exclude` are skipped."""
    exclude = exclude or set()
    rows = make_fictitious_qa(num_people + len(exclude), facts_per_person, seed=seed + 10_000)
    people = [p for p in dict.fromkeys(row["person"] for row in rows) if p not in exclude][:num_people]
    return [row for row in rows if row["person"] in set(people)]


def split_forget_retain(rows: list[dict], forget_fraction: float = 0.1) -> tuple[list[dict], list[dict]]:
    """Split rows TOFU-style: the forget set is every row of the last ``forget_fraction`` of people, retain the rest.

    Splitting by person rather than by row keeps each person entirely on one side, so forgetting can be measured
    without the retain set leaking the forgotten facts back.
    """
    if not 0.0 < forget_fraction < 1.0:
        raise ValueError(f"forget_fraction={forget_fraction} must be strictly between 0 and 1, e.g. 0.1.")
    people = list(dict.fromkeys(row["person"] for row in rows))
    num_forget = round(len(people) * forget_fraction)
    if not 0 < num_forget < len(people):
        raise ValueError(
            f"forget_fraction={forget_fraction} selects {num_forget} of {len(people)} people; choose a fraction that "
            f"selects at least one person and leaves at least one (or generate more people)."
        )
    forget_people = set(people[-num_forget:])
    forget = [row for row in rows if row["person"] in forget_people]
    retain = [row for row in rows if row["person"] not in forget_people]
    return forget, retain


def train_tokenizer(texts: list[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer on ``texts`` in-process, so the demo needs no downloaded tokenizer.

    Byte level means any text round-trips exactly. No BOS/EOS is added automatically; callers append ``<|eos|>`` to
    answers themselves so they control exactly which tokens carry loss.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )


def build_tiny_causal_lm(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position_embeddings: int = 128,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Build a randomly initialised float32 Llama small enough to memorise the demo data on a CPU in seconds.

    Initialisation is seeded inside ``torch.random.fork_rng`` so the model is reproducible without changing the
    caller's global torch RNG state.
    """
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}; change either one.")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        attention_dropout=0.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float()


def build_tiny_image_classifier(
    num_labels: int = 10, image_size: int = 8, num_channels: int = 1, patch_size: int = 2, hidden_size: int = 32,
    num_layers: int = 2, num_heads: int = 2, dropout: float = 0.0, seed: int = 0,
) -> ViTForImageClassification:
    """A randomly initialised float32 ViT classifier built from a config (no download), sized for 8×8 digits."""
    config = ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=num_channels, hidden_size=hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, intermediate_size=hidden_size * 2,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, num_labels=num_labels,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTForImageClassification(config)
    return model.float()
