"""The wheel: the card templates from model_cards/ ship inside it as hf_unlearn.model_cards, every package folder of
hf_unlearn/ is listed in pyproject.toml, and nothing else of the repository goes in."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # no build isolation: the installed setuptools builds it, offline
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)  # fmt: skip
    (path,) = out.glob("hf_unlearn-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_the_card_templates_from_model_cards(wheel):
    names = set(wheel.namelist())
    for template in sorted((ROOT / "model_cards").glob("*.md")):
        inside = f"hf_unlearn/model_cards/{template.name}"
        assert inside in names, f"{inside} is not in the wheel"
        assert wheel.read(inside) == template.read_bytes()
    assert {"hf_unlearn/model_cards/unlearned_model_card.md", "hf_unlearn/model_cards/prepared_model_card.md"} <= names


def test_every_package_folder_ships_and_nothing_else(wheel):
    shipped = {str(Path(n).parent) for n in wheel.namelist() if n.endswith(".py")}
    folders = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "hf_unlearn").rglob("*.py")}
    assert folders - shipped == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    tops = {n.split("/")[0] for n in wheel.namelist()}
    assert tops == {"hf_unlearn", next(t for t in tops if t.endswith(".dist-info"))}


def test_wheel_metadata_has_the_spdx_license(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text


def test_installed_package_reads_the_templates_from_model_cards():
    from hf_unlearn.model_cards import PREPARED, UNLEARNED, template_path

    for name in (UNLEARNED, PREPARED):
        path = template_path(name)
        assert path.read_bytes() == (ROOT / "model_cards" / name).read_bytes()
