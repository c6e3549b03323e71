"""Write a benchmark's table into docs/results.md between its own markers, so re-running one bench replaces only its
section: `<!-- NAME:begin -->` ... `<!-- NAME:end -->`, added under `heading` at the end the first time."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(output: str | Path, name: str, heading: str, body: str) -> None:
    output = Path(output)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = output.read_text() if output.exists() else ""
    section = f"{begin}\n{body}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
    else:
        text += f"\n## {heading}\n\n{section}\n"
    output.write_text(text)
