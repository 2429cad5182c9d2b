"""Generated blocks inside a hand-written Markdown file (the README's measured readings).

A block lives between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; everything outside
the markers is left as it is. The README's sentences about what the study and the demo
measured are such blocks, so they are rewritten from the results whenever the study is
rendered and cannot outlive the numbers (``python scripts/reproduce.py render``).
"""

from __future__ import annotations

import re
from pathlib import Path


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the block ``name`` replaced by ``body`` (markers kept).

    Raises:
        KeyError: ``text`` has no complete ``name`` block (a missing marker is an error, so a
            renamed block never silently stops being updated).
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise KeyError(f"no '{begin}' … '{end}' block")
    return pattern.sub(lambda _m: f"{begin}\n{body.strip()}\n{end}", text, count=1)


def update_file_blocks(path: str | Path, blocks: dict[str, str]) -> list[str]:
    """Rewrite the named blocks of ``path`` in place; returns the names written (a block the
    file does not have is skipped, so a fork's trimmed README still renders)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    written = []
    for name, body in blocks.items():
        try:
            text = replace_block(text, name, body)
        except KeyError:
            continue
        written.append(name)
    path.write_text(text, encoding="utf-8")
    return written
