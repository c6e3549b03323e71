"""Shared fixtures: tiny in-process models on the package's fictitious people; no network."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hf_unlearn.pipeline import finetune  # noqa: E402
from hf_unlearn.progress import show_progress  # noqa: E402
from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, split_forget_retain, train_tokenizer  # noqa: E402

# Tiny models run fastest on one thread, and a second thread contends with anything else on a 2-core machine.
torch.set_num_threads(1)


show_progress(False)  # session fixtures (the memorised model's fine-tune) run before the per-test fixture below


@pytest.fixture(autouse=True)
def no_progress_bars():
    """Tests run without bars or printed training logs (`hf-unlearn run` in-process turns them on: reset after each);
    tests/test_cli_product.py checks the bars in a subprocess."""
    show_progress(False)
    yield
    show_progress(False)

# TOFU's JSON Lines files (locuslab/TOFU): the folder HF_UNLEARN_TOFU_PATH names, else ../shared/data/tofu beside the
# repository. Tests that read them take the `tofu_path` fixture, which skips or fails when the folder is not there.
TOFU_ENV = "HF_UNLEARN_TOFU_PATH"
TOFU_DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/tofu"
TOFU_PATH = Path(os.environ[TOFU_ENV]) if os.environ.get(TOFU_ENV) else TOFU_DEFAULT


# CI runs every test on the CPU. `HF_UNLEARN_TEST_DEVICE=cuda` lets the trainers pick the accelerator instead (a GPU
# check of every method; tests that compare with hand-worked numbers may then differ in the last digits).
USE_CPU = os.environ.get("HF_UNLEARN_TEST_DEVICE", "cpu") == "cpu"
# The trainers' seed (data order, dropout, pairing draws). CI uses 0; `HF_UNLEARN_TEST_SEED=N` reruns the suite at
# another seed, a check that a test's claim does not rest on one lucky draw.
SEED = int(os.environ.get("HF_UNLEARN_TEST_SEED", "0"))


def training_args(tmp_path, **overrides) -> dict:
    """Quiet, fast arguments for a few unlearning steps; CPU-only unless HF_UNLEARN_TEST_DEVICE says otherwise."""
    args = {
        "output_dir": str(tmp_path), "report_to": "none", "save_strategy": "no", "disable_tqdm": True,
        "use_cpu": USE_CPU, "logging_steps": 1, "per_device_train_batch_size": 4, "seed": SEED,
    }  # fmt: skip
    args.update(overrides)
    return args


def tofu_folder_problem(path: Path) -> str | None:
    """Why `path` is not a TOFU folder (None when it is one): missing, a file, or no `.jsonl` split in it."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is a file, not a folder"
    return None if any(path.glob("*.jsonl")) else "holds no .jsonl file"


@pytest.fixture(scope="session")
def tofu_path() -> Path:
    """The TOFU folder, for tests that read TOFU's splits.

    HF_UNLEARN_TOFU_PATH unset and nothing at ../shared/data/tofu: the test is skipped, with where to put the data.
    HF_UNLEARN_TOFU_PATH set (even empty) to something that is not a folder of TOFU's files: the test fails (errors in
    setup) — a wrong path is a mistake to fix, not a reason to run fewer tests. A folder that lacks one split fails
    in `load_tofu`, which names the file."""
    if TOFU_ENV in os.environ:
        value = os.environ[TOFU_ENV]
        problem = "is empty" if not value else tofu_folder_problem(TOFU_PATH)
        if problem:
            pytest.fail(f"{TOFU_ENV}={value!r} {problem}: point it at the folder of TOFU's JSON Lines files "
                        f"(forget01.jsonl, full.jsonl, ...), or unset it to use {TOFU_DEFAULT} (where TOFU tests are "
                        "skipped when the folder is absent).", pytrace=False)  # fmt: skip
    elif not TOFU_PATH.exists():
        pytest.skip(f"TOFU data absent: {TOFU_PATH} does not exist and {TOFU_ENV} is unset (put TOFU's JSON Lines "
                    f"files there, or set {TOFU_ENV} to their folder).")  # fmt: skip
    return TOFU_PATH


@pytest.fixture(scope="session")
def qa_data():
    rows = make_fictitious_qa(num_people=10, facts_per_person=4, seed=0)
    return split_forget_retain(rows, forget_fraction=0.2)  # 8 forget rows (2 people), 32 retain rows


@pytest.fixture(scope="session")
def tokenizer(qa_data):
    forget, retain = qa_data
    return train_tokenizer([f"{r['question']} {r['answer']}" for r in forget + retain], vocab_size=500)


@pytest.fixture
def make_model(tokenizer):
    def make(seed: int = 0):
        return build_tiny_causal_lm(tokenizer, hidden_size=64, num_layers=2, num_heads=2, seed=seed)

    return make


@pytest.fixture(scope="session")
def memorised_state(tokenizer, qa_data, tmp_path_factory):
    """Weights of a tiny LM fine-tuned on forget + retain until it has memorised them."""
    forget, retain = qa_data
    model = build_tiny_causal_lm(tokenizer, hidden_size=64, num_layers=2, num_heads=2, seed=0)
    finetune(model, tokenizer, forget + retain, tmp_path_factory.mktemp("finetune"), num_train_epochs=100,
             learning_rate=5e-3, per_device_train_batch_size=8, use_cpu=True)  # fmt: skip
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def memorised_model(make_model, memorised_state):
    model = make_model()
    model.load_state_dict(memorised_state)
    return model


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A Hub-compatible server on loopback (tests/hub_server.py) that in-process clients talk to."""
    import transformers
    from hub_server import FakeHub
    from huggingface_hub import constants

    # conftest.py sets HF_HUB_OFFLINE=1; in-process clients read these constants per call.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with FakeHub() as hub:
        # what HF_ENDPOINT sets when huggingface_hub is imported
        template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers' shared HfApi, made afresh
        yield hub


@pytest.fixture(scope="session")
def digits_data():
    """Real images (scikit-learn digits): 20 forget, 100 retain and 200 test rows, disjoint."""
    from hf_unlearn.data import load_digits_rows

    rows = load_digits_rows()
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(rows), generator=generator).tolist()
    pick = [rows[i] for i in order]
    return {"forget": pick[:20], "retain": pick[20:120], "test": pick[120:320]}


@pytest.fixture(scope="session")
def memorised_image_state(digits_data):
    """Weights of a tiny ViT trained on forget + retain digits until it fits them (plain torch loop, seconds)."""
    from hf_unlearn.synthetic import build_tiny_image_classifier

    model = build_tiny_image_classifier(seed=0)
    rows = digits_data["forget"] + digits_data["retain"]
    pixels = torch.stack([row["pixel_values"] for row in rows])
    labels = torch.tensor([row["labels"] for row in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(250):
        loss = model(pixel_values=pixels, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def memorised_image_classifier(memorised_image_state):
    from hf_unlearn.synthetic import build_tiny_image_classifier

    model = build_tiny_image_classifier(seed=0)
    model.load_state_dict(memorised_image_state)
    return model


@pytest.fixture(scope="session")
def memorised_encoder_state(digits_data):
    """Weights of a tiny ResNet contrastive encoder pre-trained with SimCLR (`train_contrastive`, 60 epochs, seconds)
    on the forget + retain digits: it aligns the views of an image it trained on (positive alignment ≈ 0.9) more than
    those of an unseen one (≈ 0.8), and different images hardly at all (≈ 0.02) — something for unlearning to undo."""
    from hf_unlearn.augmentations import image_augmentation
    from hf_unlearn.encoders import build_tiny_contrastive_encoder, train_contrastive

    model = build_tiny_contrastive_encoder(backbone="resnet", seed=0)
    pixels = torch.stack([row["pixel_values"] for row in digits_data["forget"] + digits_data["retain"]])
    with torch.random.fork_rng(devices=[]):  # the views draw from torch's global generator
        torch.manual_seed(0)
        train_contrastive(model, pixels, image_augmentation("digits", 8), epochs=60, batch_size=120,
                          learning_rate=3e-3)  # fmt: skip
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def memorised_encoder(memorised_encoder_state):
    from hf_unlearn.encoders import build_tiny_contrastive_encoder

    model = build_tiny_contrastive_encoder(backbone="resnet", seed=0)
    model.load_state_dict(memorised_encoder_state)
    return model
