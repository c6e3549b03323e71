"""The documentation points at what exists: every relative link and every repository path named in README.md,
CONTRIBUTING.md and docs/*.md is a file of this repository, every `#anchor` is a heading of its page, and the README
stays short (the details live in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 10_240  # bytes, as `wc -c README.md` counts them
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGE_IDS = [page.relative_to(ROOT).as_posix() for page in PAGES]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), optionally <target> and a "title"; the text may run over lines
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# A file inside one of the repository's folders, named anywhere in a page (prose, `code`, code blocks):
# `tests/test_docs.py`, `hf_unlearn/methods/npo.py`, `docs/results.md`, `examples/configs/tofu_npo.yaml`. Folders are
# not checked: results.md names folders that a benchmark creates only when asked to.
FOLDERS = "bench|docs|examples|hf_unlearn|tests"
REPO_FILE = re.compile(rf"(?<![\w./-])((?:{FOLDERS})/[\w./-]*\w\.[A-Za-z]{{1,5}})(?![\w/-])")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def prose(text: str) -> str:
    """A page without its code blocks and inline code, where `[x](y)` is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    return LINK.findall(prose(text))


def anchors(page: Path) -> set[str]:
    """The `#fragment`s GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens, and a
    repeated heading's slug numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `page` whose file is missing or outside the repository, or whose anchor is no heading."""
    broken, root, page = [], root.resolve(), page.resolve()
    for target in links(page.read_text(encoding="utf-8")):
        if SCHEME.match(target):
            continue  # https:, mailto:, ...
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path.split("?")[0]).resolve() if path else page
        if not resolved.is_relative_to(root):
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target} (no heading #{fragment} in {resolved.relative_to(root).as_posix()})")
    return broken


def missing_paths(page: Path, root: Path = ROOT) -> list[str]:
    """The repository files named in `page` that are not in the repository."""
    return sorted({path for path in REPO_FILE.findall(page.read_text(encoding="utf-8")) if not (root / path).is_file()})


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_point_at_files_and_headings(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)} links to what does not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_repository_paths_exist(page):
    missing = missing_paths(page)
    assert not missing, f"{page.relative_to(ROOT)} names paths that are not in the repository: {missing}"


def test_the_checks_find_what_they_look_for(tmp_path):
    """The patterns see the links and paths as these pages write them (a pattern that matched nothing would pass),
    and report each kind of breakage."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/methods.md" in links(readme) and "tests/test_bad_input.py" in REPO_FILE.findall(readme)
    assert "hf_unlearn/methods/npo.py" in REPO_FILE.findall((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    assert {"how-it-behaves", "metrics-hf_unlearnevaluation-plain-functions"} <= anchors(ROOT / "README.md")

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_here.py").write_text("")
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n## Usage: `--check`\n\n[ok](tests/test_here.py) [gone](nowhere.md) [here](#a-page) "
        "[flag](#usage---check) [there](#nope) [out](../elsewhere.md) [web](https://example.com/x.md)\n"
        "[a link over\ntwo lines](gone.md)\n\n"
        "`tests/test_here.py`, `tests/test_gone.py` and docs/gone.md in prose; `[not](a-link.md)`\n\n"
        "```python\nrows = table[0](1)  # not a link: bench/gone.py is still a path\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "nowhere.md (no such file)", "#nope (no heading #nope in page.md)", "../elsewhere.md (outside the repository)",
        "gone.md (no such file)",
    ]  # fmt: skip
    assert missing_paths(page, tmp_path) == ["bench/gone.py", "docs/gone.md", "tests/test_gone.py"]


def test_readme_is_at_most_10_kib():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes (limit {README_LIMIT}): move the details to docs/"
