"""A scan's results on disk: a Parquet dataset written in parts, so nothing finished is ever lost.

``OUT/adapters/part-NNNNN.parquet`` holds one row per adapter (its summary and forgetting
verdict, or its error), ``OUT/modules/part-NNNNN.parquet`` one row per audited module. Each part
is written to a temporary name and renamed, so an interrupted scan leaves whole parts only;
``--resume`` reads the ids already there and audits the rest. DuckDB and pandas read the
folders directly (``SELECT * FROM 'OUT/adapters/*.parquet'``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

#: errors worth retrying on --resume (the worker, not the adapter, failed)
TRANSIENT = ("worker lost",)


def adapter_columns() -> list[str]:
    """Every part of ``adapters/`` has these columns (an error row leaves the numbers null), so
    the dataset reads as one table whatever each part happened to hold."""
    from spectra.forgetting import FEATURES

    return ["id", "adapter", "base", "status", "error", "duplicate_of", "modules", "ratio_min", "ratio_median",
            "cos_max", "overlap_median", "forgetting_evidence", "forgetting_p_survives", "forgetting_estimate",
            "forgetting_reason", *(f"feature_{f}" for f in FEATURES)]


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        from spectra.errors import SpectraError

        raise SpectraError("spectra scan writes Parquet: pip install 'spectra-lora[fleet]' (pyarrow)") from None
    return pa, pq


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Parquet-friendly values: tuples as lists, non-finite floats as null (their meaning is in the row)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


class PartWriter:
    """Buffers rows and writes them as numbered Parquet parts (``flush`` on demand and at close)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        (out / "adapters").mkdir(parents=True, exist_ok=True)
        (out / "modules").mkdir(parents=True, exist_ok=True)
        existing = [int(p.stem.split("-")[1]) for p in (out / "adapters").glob("part-*.parquet")]
        self.next = max(existing, default=-1) + 1
        self.adapters: list[dict[str, Any]] = []
        self.modules: list[dict[str, Any]] = []

    def add(self, adapter_row: dict[str, Any], module_rows: list[dict[str, Any]]) -> None:
        self.adapters.append(_clean(adapter_row))
        self.modules.extend(_clean(r) for r in module_rows)

    def flush(self) -> None:
        if not self.adapters:
            return
        pa, pq = _pyarrow()
        name = f"part-{self.next:05d}.parquet"
        columns = {"adapters": adapter_columns(),
                   "modules": list(dict.fromkeys(k for r in self.modules for k in r))}
        for folder, rows in (("modules", self.modules), ("adapters", self.adapters)):  # adapters last: they mark done
            if rows:
                keys = columns[folder]
                table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
                tmp = self.out / folder / f".{name}.tmp"
                pq.write_table(table, tmp)
                os.replace(tmp, self.out / folder / name)
        self.next += 1
        self.adapters, self.modules = [], []


def done_ids(out: Path) -> set[str]:
    """Ids a previous scan finished (an ok row, or an error of the adapter's own making)."""
    if not (out / "adapters").is_dir():
        return set()
    _, pq = _pyarrow()
    ids = set()
    for part in sorted((out / "adapters").glob("part-*.parquet")):
        for row in pq.read_table(part, columns=["id", "status", "error"]).to_pylist():
            if row["status"] == "ok" or not str(row.get("error") or "").startswith(TRANSIENT):
                ids.add(row["id"])
    return ids


def module_parts(out: Path) -> Any:
    """The module rows, one Parquet part (about 50 adapters' worth) at a time."""
    _, pq = _pyarrow()
    for part in sorted((out / "modules").glob("part-*.parquet")):
        yield pq.read_table(part).to_pylist()


def module_types(out: Path) -> set[str]:
    """Every module type the fleet's module rows hold (one column read per part)."""
    _, pq = _pyarrow()
    seen: set[str] = set()
    for part in sorted((out / "modules").glob("part-*.parquet")):
        seen.update(str(t) for t in pq.read_table(part, columns=["module_type"]).column(0).to_pylist())
    return seen


def read_rows(out: Path, table: str = "adapters") -> list[dict[str, Any]]:
    """Every row of ``OUT/<table>`` (the latest row per id wins for adapters: a retried error is replaced)."""
    _, pq = _pyarrow()
    rows: list[dict[str, Any]] = []
    for part in sorted((out / table).glob("part-*.parquet")):
        rows.extend(pq.read_table(part).to_pylist())
    if table == "adapters":
        latest = {r["id"]: r for r in rows}
        rows = list(latest.values())
    return rows
