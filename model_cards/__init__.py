"""The model card templates (`huggingface_hub.ModelCard.from_template`). They live in `model_cards/` at the
repository's root and ship in the wheel as the package `hf_unlearn.model_cards`."""

from importlib.resources import as_file, files
from pathlib import Path

UNLEARNED = "unlearned_model_card.md"
PREPARED = "prepared_model_card.md"


def template_path(name: str) -> Path:
    """The file system path of template `name` (`UNLEARNED` or `PREPARED`), in a wheel or an editable install."""
    with as_file(files(__name__) / name) as path:  # a real file for every install this package supports
        return Path(path)
