"""Forget/retain data: checks, tokenisation of question/answer rows and raw text, pairing, collation, and TOFU
loading."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .losses import IGNORE_INDEX

TOFU_SPLITS = (
    "full", "forget01", "forget05", "forget10", "retain90", "retain95", "retain99",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
    "holdout01", "holdout05", "holdout10",
    "real_authors", "real_authors_perturbed", "world_facts", "world_facts_perturbed",
)  # fmt: skip
TOFU_HUB_ID = "locuslab/TOFU"


def load_tofu(split: str, path: str | Path | None = None):
    """Load one TOFU split (Maini et al. 2024) as a `datasets.Dataset`.

    With `path`, read `<path>/<split>.jsonl` (the published JSON Lines files, e.g. a local copy for offline use);
    otherwise `datasets.load_dataset("locuslab/TOFU", split)`.
    """
    import datasets

    if split not in TOFU_SPLITS:
        raise ValueError(f"Unknown TOFU split {split!r}: use one of {list(TOFU_SPLITS)}.")
    if path is None:
        from .sources import check_hub_reachable

        local = f"path=<a folder of TOFU's JSONL files>, e.g. load_tofu({split!r}, path='../shared/data/tofu')"
        check_hub_reachable(TOFU_HUB_ID, "load_tofu: dataset", local)
        return datasets.load_dataset(TOFU_HUB_ID, split, split="train")
    file = Path(path) / f"{split}.jsonl"
    if not file.is_file():
        raise FileNotFoundError(f"TOFU split file {file} does not exist: pass the folder that holds {split}.jsonl.")
    return datasets.Dataset.from_list(read_jsonl(file))


TOFU_QUESTIONS_PER_AUTHOR = 20


def tofu_authors(rows, split: str) -> list[dict]:
    """TOFU rows with an `author` column (0..199): every author has 20 consecutive questions, and the forget splits
    hold the last authors of `full` (forget10 = authors 180-199), the retain splits the first. For methods that need
    a group per row, e.g. `DeepCUTConfig(group_column="author")`."""
    if split.startswith(("holdout", "real_authors", "world_facts")) or "perturbed" in split:
        raise ValueError(f"TOFU split {split!r} has no author numbering: use full, forgetNN or retainNN.")
    rows = [dict(row) for row in rows]
    start = 200 - len(rows) // TOFU_QUESTIONS_PER_AUTHOR if split.startswith("forget") else 0
    for index, row in enumerate(rows):
        row["author"] = start + index // TOFU_QUESTIONS_PER_AUTHOR
    return rows


def load_digits_rows() -> list[dict]:
    """scikit-learn's handwritten digits (1,797 real 8×8 scans, shipped with the library, so offline) as image rows:
    `pixel_values` a `[1, 8, 8]` float tensor scaled to [0, 1], `labels` the digit 0-9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return [{"pixel_values": image, "labels": int(label)} for image, label in zip(images, digits.target, strict=True)]


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON Lines file (one JSON object a line); a clear error names the file and line of a bad one."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise FileNotFoundError(f"{path} is {what}: pass a JSON Lines file (one JSON object per line).")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno}): each line "
                                 "must be one JSON object, e.g. {\"question\": ..., \"answer\": ...}.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: a JSON {type(row).__name__}, not an object: each line must be one "
                                 "row, e.g. {\"question\": ..., \"answer\": ...}.")
            rows.append(row)
    return rows


def column_names(dataset) -> list[str]:
    """Column names of a `datasets.Dataset` or of the first row of a sequence of dicts."""
    names = getattr(dataset, "column_names", None)
    if names is not None:
        return list(names)
    return list(dataset[0].keys()) if len(dataset) else []


def text_column(columns) -> str | None:
    """The text column of a classification row (`text`, or GLUE's `sentence`), when it has a `label` too."""
    return next((name for name in ("text", "sentence") if name in columns), None) if "label" in columns else None


def label_column(columns) -> str | None:
    """The class-label column of a row: `labels`, or `label` as in many Hub datasets."""
    return next((name for name in ("labels", "label") if name in columns), None)


def check_row_container(dataset, name: str) -> None:
    """Rows must be a sequence of dicts (a list of rows, or a `datasets.Dataset`): not a string, not one dict of
    columns, not a list of strings."""
    if isinstance(dataset, (str, bytes)):
        raise TypeError(f"{name} is a string: pass rows (a list of dicts, or a datasets.Dataset), e.g. "
                        "[{'question': ..., 'answer': ...}]; to read a JSON Lines file use hf_unlearn.data.read_jsonl.")
    if isinstance(dataset, dict):
        raise TypeError(f"{name} is a dict of columns {sorted(dataset)[:6]}: pass one dict per row, e.g. "
                        "datasets.Dataset.from_dict(columns), or [dict(zip(columns, values)) for values in ...].")
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"{name} is a {type(dataset).__name__}: pass rows as a list of dicts or a datasets.Dataset "
                        "(an iterable or generator has no length: wrap it with list(...)).")
    if len(dataset) and getattr(dataset, "column_names", None) is None and not isinstance(dataset[0], dict):
        raise TypeError(f"{name} row 0 is a {type(dataset[0]).__name__}, not a dict: each row must be a dict of "
                        "columns, e.g. {'question': ..., 'answer': ...}.")


def check_row_containers(**datasets) -> None:
    """`check_row_container` for each named dataset that is given (a trainer's first check, before it reads a row)."""
    for name, dataset in datasets.items():
        if dataset is not None:
            check_row_container(dataset, name)


def row_format(dataset, name: str) -> str:
    """'qa' for question/answer text rows, 'text' for classification rows (`text` or `sentence`, and an integer
    `label`), 'corpus' for raw text for a causal LM (`text` and no label column), 'tokenized' for input_ids/labels
    rows, 'image' for image-classification rows (`pixel_values` and an integer `labels`/`label`); a clear error
    otherwise."""
    check_row_container(dataset, name)
    columns = column_names(dataset)
    if {"question", "answer"} <= set(columns):
        return "qa"
    if {"input_ids", "labels"} <= set(columns):
        return "tokenized"
    if text_column(columns):
        return "text"
    if "text" in columns and label_column(columns) is None:
        return "corpus"
    if "pixel_values" in columns:  # a classifier's rows carry `labels`; a contrastive encoder's need none
        return "image"
    raise ValueError(
        f"{name} has columns {columns}: expected 'question' and 'answer' (text question/answer rows), 'text' and "
        "'label' (classification rows), 'text' alone (raw text for a causal LM), 'input_ids' and 'labels' (already "
        "tokenised rows), or 'pixel_values' "
        "(processed images, e.g. from an image processor; with 'labels' for a classifier). Rename the columns or "
        "process the rows first."
    )


def _row_key(row: dict, fmt: str) -> str:
    if fmt == "qa":
        content = f"{row['question']}\x1f{row['answer']}"
    elif fmt == "text":
        content = f"{row[text_column(row)]}\x1f{row['label']}"
    elif fmt == "corpus":
        content = str(row["text"])
    elif fmt == "image":
        pixels = torch.as_tensor(row["pixel_values"]).float().contiguous()
        label = label_column(row)  # the same image under another class is another example
        content = f"{hashlib.sha256(pixels.numpy().tobytes()).hexdigest()}\x1f{list(pixels.shape)}\x1f"
        content += str(int(torch.as_tensor(row[label]))) if label else ""
    else:
        content = json.dumps([list(map(int, row["input_ids"])), _as_list(row["labels"])])
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _as_list(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def check_forget_retain(forget, retain) -> None:
    """Fail before training on an empty forget set or forget examples that also appear in the retain set."""
    if forget is None or len(forget) == 0:
        raise ValueError("forget_dataset is empty: pass at least one example to forget.")
    forget_format = row_format(forget, "forget_dataset")
    if retain is None:
        return
    if len(retain) == 0:
        raise ValueError("retain_dataset is empty: pass retain examples, or set alpha=0 to drop the retain term.")
    retain_format = row_format(retain, "retain_dataset")
    if retain_format != forget_format:
        return
    retain_keys = {_row_key(row, retain_format) for row in retain}
    shared = [i for i, row in enumerate(forget) if _row_key(row, forget_format) in retain_keys]
    if shared:
        shown = shared[:10]
        raise ValueError(
            f"{len(shared)} forget example(s) also appear in retain_dataset (forget rows {shown}"
            f"{' ...' if len(shared) > 10 else ''}): remove them from retain_dataset, or the retain term would "
            "train the model on exactly what it is asked to forget."
        )


def check_text_cells(rows, name: str, columns: tuple[str, ...]) -> None:
    """Every row's `columns` must be non-empty strings: a None, NaN, number or empty cell would be trained on as the
    text "None", "nan", "5" or nothing. The error names the row and column, never the row's content."""
    for index, row in enumerate(rows):
        for column in columns:
            value = row[column]
            if not isinstance(value, str):
                raise ValueError(f"{name} row {index} has {column}={value!r} ({type(value).__name__}): every "
                                 f"{column} must be a non-empty string; drop or fix that row.")
            if not value.strip():
                raise ValueError(f"{name} row {index} has an empty {column}: every {column} must be a non-empty "
                                 "string; drop or fix that row.")


def check_tokenized_rows(rows, name: str) -> None:
    """Already tokenised rows: non-negative integer ids; `labels` (when a sequence) and `attention_mask` as long as
    `input_ids`, each label a token id or -100."""
    for index, row in enumerate(rows):
        ids = torch.as_tensor(row["input_ids"])
        if ids.dim() != 1 or ids.is_floating_point() or ids.numel() == 0:
            raise ValueError(f"{name} row {index}: input_ids must be a non-empty list of integer token ids (got a "
                             f"{'float ' if ids.is_floating_point() else ''}tensor of shape {list(ids.shape)}).")
        if ids.min() < 0:
            raise ValueError(f"{name} row {index} holds token id {int(ids.min())}: token ids are >= 0; re-tokenise "
                             "the row with the model's tokenizer (labels, not input_ids, take -100).")
        for column in ("labels", "attention_mask"):
            value = torch.as_tensor(row[column]) if column in row else None
            if value is None or value.dim() == 0:
                continue  # a classifier's label is one class index
            if value.shape != ids.shape:
                raise ValueError(f"{name} row {index} has {len(ids)} input_ids but {value.numel()} {column}: they "
                                 f"must be as long as input_ids (mask prompt tokens in labels with -100).")
            if column == "labels" and ((value < 0) & (value != IGNORE_INDEX)).any():
                raise ValueError(f"{name} row {index} has label {int(value.min())}: a label is a token id or -100 "
                                 "(ignored).")


def tokenize_qa_row(row: dict, tokenizer, prompt_template: str, max_length: int) -> dict:
    """Tokenise one question/answer row: prompt tokens are masked (-100) in `labels`, answer tokens end with EOS."""
    return tokenize_qa_rows([row], tokenizer, prompt_template, max_length)[0]


def tokenize_qa_rows(rows, tokenizer, prompt_template: str, max_length: int) -> list[dict]:
    """`tokenize_qa_row` of every row, with one tokenizer call for all prompts and one for all answers (a fast
    tokenizer encodes a list in one batch: 4,000 TOFU rows in a fraction of the time of 8,000 calls)."""
    prompts = tokenizer([prompt_template.format(question=row["question"]) for row in rows], add_special_tokens=True)
    answers = tokenizer([" " + str(row["answer"]) for row in rows], add_special_tokens=False)
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    tokenised = []
    for prompt_ids, answer_ids in zip(prompts["input_ids"], answers["input_ids"], strict=True):
        input_ids = (list(prompt_ids) + list(answer_ids) + end)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + list(answer_ids) + end)[:max_length]
        tokenised.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels})
    return tokenised


def lm_row(ids) -> dict:
    """A causal-LM row that scores every token: `labels` are the `input_ids` (the loss's shift leaves the first out)."""
    ids = list(ids)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids}


def corpus_rows(texts, name: str, tokenizer, max_length: int) -> list[dict]:
    """Raw texts as causal-LM rows: each text tokenised (BOS as the tokenizer adds it, EOS appended when the
    tokenizer has one) and cut into windows of at most `max_length` tokens, every token scored (`lm_row`). The last
    window is kept when it has at least two tokens (one to predict from, one to score), so a text gives one row or
    more."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rows = []
    for index, ids in enumerate(tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]):
        ids = list(ids) + eos
        if len(ids) < 2:
            raise ValueError(f"{name} row {index} has {len(ids)} token(s): a text needs at least two (one to predict "
                             "from, one to score); drop it or join it to another text.")  # fmt: skip
        rows += [lm_row(ids[start:start + max_length]) for start in range(0, len(ids), max_length)
                 if len(ids[start:start + max_length]) >= 2]  # fmt: skip
    return rows


def tokenize_text_row(row: dict, tokenizer, max_length: int) -> dict:
    """Tokenise one classification row: the text (truncated to `max_length`), and its integer class as `labels`."""
    label = row["label"]
    if isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f"A classification row has label {label!r}: labels must be class indices 0..C-1 (ints); "
                         "map names to indices first, e.g. with datasets' ClassLabel.str2int.")  # fmt: skip
    encoded = tokenizer(str(row[text_column(row)]), truncation=True, max_length=max_length)
    return {**{k: list(v) for k, v in encoded.items()}, "labels": label}


def image_row(row: dict) -> dict:
    """An image-classification row as the collator takes it: `pixel_values` (a tensor) and the int class in `labels`;
    other columns (file names, captions) are dropped."""
    if label_column(row) is None:
        raise ValueError(f"An image row has no class label (columns {sorted(row)}): a classifier's rows need an int "
                         "'labels' column; unlabelled images are for contrastive encoders (Alignment Calibration).")
    label = torch.as_tensor(row[label_column(row)])
    if label.dim() != 0 or label.is_floating_point():
        raise ValueError(f"An image row has label {row[label_column(row)]!r}: labels must be one class index "
                         "0..C-1 (an int) per image.")  # fmt: skip
    return {"pixel_values": torch.as_tensor(row["pixel_values"], dtype=torch.float32), "labels": int(label)}


def prepare_dataset(dataset, name: str, tokenizer, prompt_template: str, max_length: int):
    """Return rows ready for the collator: question/answer and classification text rows are tokenised, raw text
    (`corpus` rows) is cut into windows of `max_length` tokens (`corpus_rows`: one text may give several rows), image
    rows keep `pixel_values` and `labels`, tokenised rows pass through.

    Raises before training when a row has every label masked (no answer token left to learn or forget).
    """
    if dataset is None:
        return None
    fmt = row_format(dataset, name)
    if fmt in ("qa", "text", "corpus") and tokenizer is None:
        raise ValueError(f"{name} holds text but no tokenizer was given: pass processing_class=tokenizer.")
    if fmt == "qa":
        check_text_cells(dataset, name, ("question", "answer"))
        rows = tokenize_qa_rows([dataset[i] for i in range(len(dataset))], tokenizer, prompt_template, max_length)
    elif fmt == "text":
        check_text_cells(dataset, name, (text_column(column_names(dataset)),))
        rows = [tokenize_text_row(row, tokenizer, max_length) for row in dataset]
    elif fmt == "corpus":
        check_text_cells(dataset, name, ("text",))
        rows = corpus_rows([row["text"] for row in dataset], name, tokenizer, max_length)
    elif fmt == "image":
        rows = [image_row(row) for row in dataset]
    else:
        check_tokenized_rows(dataset, name)
        rows = dataset
    for index in range(len(rows)):
        labels = torch.as_tensor(rows[index]["labels"])
        if labels.numel() > 0 and (labels != IGNORE_INDEX).any():
            continue
        hint = (
            f"raise max_length (now {max_length}) or shorten the prompt template" if fmt == "qa"
            else "give it at least one label that is not -100"
        )
        raise ValueError(f"{name} row {index} has every label masked (-100), so it has nothing to learn: {hint}.")
    return rows


def check_vocabulary(rows, name: str, tokenizer, model) -> None:
    """Fail when token ids do not fit the model's input embedding (a tokenizer from another model, say)."""
    try:
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except NotImplementedError:  # two-tower models (CLIPModel) have no single input embedding
        return
    if embedding is None or not hasattr(embedding, "num_embeddings"):
        return
    size = embedding.num_embeddings
    if tokenizer is not None and hasattr(tokenizer, "__len__") and len(tokenizer) > size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's embedding has {size} rows: pass the tokenizer "
            "the model was trained with, or call model.resize_token_embeddings(len(tokenizer)) and fine-tune first."
        )
    if len(rows) == 0 or "input_ids" not in rows[0]:
        return  # image rows: no token ids
    largest = max((max(row["input_ids"], default=0) for row in rows), default=0)
    if largest >= size:
        raise ValueError(
            f"{name} holds token id {int(largest)} but the model's embedding has {size} rows: the rows were "
            "tokenised with another vocabulary; re-tokenise them with the model's tokenizer."
        )


def check_rows_fit_model(rows, name: str, model) -> None:
    """Fail before training on rows the model cannot take: more tokens than its positions, a class label outside
    its classes, images of another channel count or size than its config says."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or rows is None or len(rows) == 0:
        return
    positions = getattr(config, "max_position_embeddings", None)
    if positions and "input_ids" in rows[0]:
        index, length = max(enumerate(len(row["input_ids"]) for row in rows), key=lambda item: item[1])
        if length > positions:
            raise ValueError(f"{name} row {index} has {length} tokens but the model takes at most {positions} "
                             f"(config.max_position_embeddings): set max_length={positions} or lower in the config, "
                             "or shorten the rows.")
    if "SequenceClassification" in type(base).__name__ and torch.as_tensor(rows[0]["labels"]).dim() != 0:
        raise ValueError(f"{name} rows have a label per token but {type(base).__name__} takes one class per row: give "
                         "each text an integer 'label' column (classification rows); 'text' alone is raw text for a "
                         "causal LM.")  # fmt: skip
    if "Classification" in type(base).__name__ and torch.as_tensor(rows[0]["labels"]).dim() == 0:
        classes = config.num_labels
        bad = next(((i, int(row["labels"])) for i, row in enumerate(rows)
                    if not 0 <= int(row["labels"]) < classes), None)  # fmt: skip
        if bad:
            raise ValueError(f"{name} row {bad[0]} has label {bad[1]} but the model has {classes} classes "
                             f"(config.num_labels): labels must be 0..{classes - 1}; map them, or load the model "
                             f"with num_labels=... large enough.")
    channels, size = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if "pixel_values" in rows[0] and channels and size:
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        for index, row in enumerate(rows):
            shape = tuple(torch.as_tensor(row["pixel_values"]).shape)
            if shape != (channels, *size):
                raise ValueError(f"{name} row {index} has pixel_values of shape {list(shape)} but the model takes "
                                 f"[{channels}, {size[0]}, {size[1]}] (config.num_channels, config.image_size): "
                                 "process the images with the model's image processor.")


def pairing_seed(seed: int, epoch: int, rank: int) -> int:
    """A generator seed that depends on (seed, epoch, process rank) and nothing else."""
    digest = hashlib.sha256(f"hf-unlearn-pairing:{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class ForgetRetainDataset(torch.utils.data.Dataset):
    """One epoch is one pass over the forget set; each forget example is paired with one retain example.

    The retain example for forget index `i` in epoch `e` on process `rank` is `retain_indices(e)[i]`, drawn without
    replacement (cycling when the forget set is larger; `replacement=True`: with replacement, as open-unlearning
    draws) by a generator seeded by (seed, e, rank) only. So processes draw different retain examples, and a run
    resumed from a checkpoint draws exactly what the uninterrupted run did.
    """

    def __init__(self, forget, retain=None, seed: int = 0, rank: int = 0, replacement: bool = False):
        self.forget, self.retain, self.seed, self.rank = forget, retain, seed, rank
        self.replacement = replacement
        self.epoch = 0
        self._cache: tuple[int, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def retain_indices(self, epoch: int) -> torch.Tensor:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        generator = torch.Generator().manual_seed(pairing_seed(self.seed, epoch, self.rank))
        n, m = len(self.forget), len(self.retain)
        if self.replacement:
            indices = torch.randint(m, (n,), generator=generator)
        else:
            indices = torch.cat([torch.randperm(m, generator=generator) for _ in range(math.ceil(n / m))])[:n]
        self._cache = (epoch, indices)
        return indices

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index: int) -> dict:
        item = {"forget": self.forget[index], "forget_index": index}
        if self.retain is not None:
            retain_index = int(self.retain_indices(self.epoch)[index])
            item["retain"] = self.retain[retain_index]
            item["retain_index"] = retain_index
        return item


_PAD_VALUES = {"labels": IGNORE_INDEX, "attention_mask": 0, "token_type_ids": 0}


class UnlearningCollator:
    """Pads forget and retain parts separately (input ids with the pad token, labels with -100, masks with 0).

    Rows of a `ForgetRetainDataset` become `{"forget": {...}, "retain": {...}, "forget_index": ..., ...}`; plain rows
    (evaluation) become one padded batch. Scalar fields (a classifier's label) are stacked.
    """

    def __init__(self, pad_token_id: int = 0):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        if "forget" not in features[0]:
            return self.pad([dict(f) for f in features])
        batch = {"forget": self.pad([f["forget"] for f in features])}
        batch["forget_index"] = torch.tensor([f["forget_index"] for f in features])
        if "retain" in features[0]:
            batch["retain"] = self.pad([f["retain"] for f in features])
            batch["retain_index"] = torch.tensor([f["retain_index"] for f in features])
        return batch

    def pad(self, rows: list[dict]) -> dict:
        batch = {}
        for key in rows[0]:
            values = [torch.as_tensor(row[key]) for row in rows]
            if values[0].dim() == 0:
                batch[key] = torch.stack(values)
                continue
            value = _PAD_VALUES.get(key, self.pad_token_id)
            batch[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=value)
        return batch
