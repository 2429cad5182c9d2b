"""An audit's rows as plain Python: ``audit.csv``, ``audit.json`` and the pandas view,
from one list of dicts.

``spectra audit`` writes every output from these rows, so the command never imports
pandas (0.24 s of an 8-layer audit's 7 s, and a larger share of a small adapter's CI
gate); :attr:`spectra.audit.AuditReport.table` builds the DataFrame only when a library
user asks for it. The files are the ones pandas wrote before (the CSV byte for byte;
the JSON with the same keys and full-precision numbers where pandas rounded to 10
decimals), which ``tests/test_audit_rows.py`` checks against pandas itself.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def columns_of(rows: Sequence[Mapping[str, Any]], leading: Sequence[str]) -> list[str]:
    """``leading`` columns present in any row, in that order, then every other key in order of
    first appearance (extra cosine columns an update kind adds)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return [c for c in leading if c in seen] + [c for c in seen if c not in leading]


def as_rows(table: Any) -> list[dict[str, Any]]:
    """Rows from a list of dicts or from a DataFrame (what the figure and policy functions
    accepted before they took rows), with pandas' NA (a missing ``layer``) as ``None``."""
    if hasattr(table, "to_dict"):
        return [{k: (None if _is_na(v) else v) for k, v in row.items()} for row in table.to_dict("records")]
    return [dict(row) for row in table]


def _is_na(value: Any) -> bool:
    # pandas' NA (a nullable integer's missing value) and NaT, named so as not to import
    # pandas here; a float NaN stays a float, as the numeric columns expect
    return type(value).__name__ in ("NAType", "NaTType")


def finite_values(rows: Iterable[Mapping[str, Any]], column: str) -> list[float]:
    """The column's values that are numbers and finite (what pandas' median and min keep
    once ``inf`` has been replaced by NaN)."""
    out = []
    for row in rows:
        value = row.get(column)
        if value is not None and not isinstance(value, bool) and math.isfinite(float(value)):
            out.append(float(value))
    return out


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values (as pandas gives)."""
    return float(statistics.median(values)) if values else math.nan


def json_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows for ``audit.json``: every column in every row, in ``columns`` order, through
    :func:`spectra.provenance.json_safe` (NaN/∞ as ``null``, tuples as lists)."""
    from spectra.provenance import json_safe

    return [json_safe({c: row.get(c) for c in columns}) for row in rows]


def _csv_cell(column: str, value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "shape" and isinstance(value, (tuple, list)):
        return f"{value[0]}x{value[1]}"
    return value  # csv writes str(x): Python's shortest float repr, 'inf', 'True', as pandas did


def write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: str | os.PathLike[str]) -> None:
    """``audit.csv``: a header, then one line per row (``shape`` as ``MxN``, missing values empty)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(c, row.get(c)) for c in columns])


def frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Any:
    """The rows as a pandas DataFrame in ``columns`` order, ``layer`` as nullable integers."""
    import pandas as pd

    table = pd.DataFrame(list(rows), columns=list(columns))
    if "layer" in table.columns:
        table["layer"] = table["layer"].astype("Int64")
    return table
