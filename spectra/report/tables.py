"""Plain Markdown tables (no tabulate dependency) and number formatting for reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def fmt_multiplier(value: float | None, digits: int = 3) -> str:
    """A scale multiplier k: ∞ where it is infinite or JSON's null (a threshold never crossed)."""
    return "∞" if value is None or value == math.inf else f"{float(value):.{digits}g}"


def fmt(value: Any, digits: int = 4) -> str:
    """Format a cell: floats with ``digits`` significant digits, inf/nan spelled out."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    if isinstance(value, (tuple, list)):
        return "×".join(fmt(v, digits) for v in value) if all(isinstance(v, int) for v in value) else (
            "[" + ", ".join(fmt(v, digits) for v in value) + "]")
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Render dict rows as a GitHub-flavoured Markdown table."""
    if not rows:
        return "_(no rows)_\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"
