"""Generated documents: commands that measure (`lam evaluate`, `lam bench`) each own one section of a markdown
file and one key of its JSON twin, and rewrite only those, so every command regenerates its own figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCHMARKS_TITLE = "# Benchmarks\n\nFigures written by the commands in `bench/`."


def write_section(path: Path, begin: str, end: str, block: str, title: str) -> None:
    """Replace the text between the markers `begin` and `end` (inclusive) with `block`, which carries them; add
    it at the end if the markers are not there yet, and start the file with `title` if it does not exist."""
    text = path.read_text() if path.exists() else f"{title}\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def merge_json(path: Path, key: str, value: Any) -> None:
    """Set one key of a JSON object file, keeping the others."""
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[key] = value
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
