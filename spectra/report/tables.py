"""Plain Markdown tables (no tabulate dependency) and number formatting for reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def provenance_sections(settings: Any, inputs: Any, versions: dict[str, str],
                        timings: dict[str, float]) -> list[str]:
    """The closing sections every report carries, so a number can be traced to what made it:
    settings and inputs as JSON (strict: a NaN is null there too), library versions, timings."""
    from spectra.provenance import strict_json

    return [
        "\n## Settings\n",
        "```json\n" + strict_json(settings) + "\n```\n",
        "## Inputs\n",
        "```json\n" + strict_json(inputs) + "\n```\n",
        "## Versions\n",
        "".join(f"- {k}: {v}\n" for k, v in versions.items()),
        "\n## Timings (s)\n",
        "".join(f"- {k}: {v:.3f}\n" for k, v in timings.items()),
    ]


def sweep_gamma(row: dict[str, Any]) -> float:
    """A sweep row's scale multiplier γ (rows written before 0.2 call it ``k``)."""
    return float(row["gamma"] if "gamma" in row else row["k"])


def fmt_multiplier(value: float | None, digits: int = 3) -> str:
    """A scale multiplier γ: ∞ where it is infinite or JSON's null (a threshold never crossed)."""
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


#: what :func:`sweep_figure` draws besides the CA/ASR curves, for every caption under it
SWEEP_MARKS = ("Thin lines: the ASR floor (the target share on clean non-target inputs). ×: a γ at which at least "
               "one seed's model collapsed (one class for ≥ 95% of inputs, or CA at the majority share); its ASR "
               "there reads the class it collapsed to, not the trigger.")


def fmt_pct(x: Any, *, suffix: str = "%", missing: str = "—") -> str:
    """A share as a percentage with one decimal (``0.123`` → ``12.3%``); ``missing`` for a value that
    is absent or not finite — every report spells those the same way, and none raises on them."""
    try:
        value = float(x)  # numpy scalars too (a float32 NaN printed "nan%")
    except (TypeError, ValueError):
        return missing
    return f"{100 * value:.1f}{suffix}" if math.isfinite(value) else missing


def fmt_interval(ci: Any, *, missing: str = "") -> str:
    """A 95 % interval of shares in percent, ``[12.3, 45.6]``; ``missing`` when there is none or a
    bound is not finite."""
    if not ci or any(v is None or not math.isfinite(float(v)) for v in ci[:2]):
        return missing
    return f"[{100 * float(ci[0]):.1f}, {100 * float(ci[1]):.1f}]"
