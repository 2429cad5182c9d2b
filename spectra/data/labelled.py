"""Labelled text, the leaf every other data module builds on: :class:`LabelledData` and
:func:`build_labelled`, which turns raw rows into contiguous labels ``0..K-1``.

The mapping rules (applied in this order):

1. an explicit ``label_map`` (``{"neg": 0, "pos": 1}``; keys compared as strings);
2. a ``datasets`` ``ClassLabel`` column: its ids and names as they are;
3. booleans: ``False -> 0``, ``True -> 1``;
4. integers (or integer-valued strings/floats) whose values are exactly ``{-1, 1}``:
   ``-1 -> 0``, ``1 -> 1`` (Pang & Lee style polarity);
5. non-negative integers that include 0: kept as they are (they are the ids a model's head
   was trained on), ``label_names = ["0", ..., str(max)]``;
6. anything else (strings, ``1..5`` star ratings, ...): the distinct values sorted
   (numerically when all are numbers) and numbered from 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from spectra.errors import SpectraError


@dataclass
class LabelledData:
    """Texts with integer labels ``0..K-1``; ``label_names[i]`` names class ``i``.

    ``source`` says where the rows came from and ``sha256`` is the content hash of the
    source file (of the cached normalised CSV for built-ins, of the Arrow files for a
    ``datasets`` folder). ``notes`` records what the loader did to the rows (dropped
    empty rows, dropped neutral ratings, ...) and shows up in :meth:`summary`.
    """

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    source: str
    sha256: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def counts(self) -> list[int]:
        """Rows per class, indexed by label id (zeros included)."""
        c = Counter(self.labels)
        return [c.get(i, 0) for i in range(self.num_classes)]

    def summary(self) -> str:
        """One line, e.g. ``1,000 rows: 0 (neg) 480 · 1 (pos) 520``."""
        parts = []
        for i, n in enumerate(self.counts()):
            name = self.label_names[i]
            parts.append(f"{i} {n:,}" if name == str(i) else f"{i} ({name}) {n:,}")
        line = f"{len(self):,} rows: " + " · ".join(parts)
        if self.notes:
            line += " (" + "; ".join(self.notes) + ")"
        return line

    def require_target(self, target_label: int) -> None:
        """Raise unless ``target_label`` is one of this data's labels and some rows have
        another label: ASR is measured on the non-target rows."""
        if not 0 <= target_label < self.num_classes or target_label not in set(self.labels):
            names = ", ".join(f"{i} ({n})" if n != str(i) else str(i) for i, n in enumerate(self.label_names))
            raise SpectraError(f"{self.source}: target label {target_label} is absent from the data (labels: {names})")
        if all(y == target_label for y in self.labels):
            raise SpectraError(f"{self.source}: every row has the target label {target_label}; "
                               "ASR needs non-target rows")

    def subset(self, indices: Iterable[int]) -> LabelledData:
        """The rows at ``indices`` (in that order), same label names, source and hash."""
        idx = list(indices)
        return replace(self, texts=[self.texts[i] for i in idx], labels=[self.labels[i] for i in idx],
                       notes=list(self.notes))

    def to_dict(self) -> dict[str, Any]:
        """Provenance of the data (not the rows): source, hash, size, class counts."""
        return {"source": self.source, "sha256": self.sha256, "rows": len(self),
                "label_names": list(self.label_names), "counts": self.counts(), "notes": list(self.notes)}


def build_labelled(
    texts: Sequence[Any],
    raw_labels: Sequence[Any],
    *,
    source: str,
    sha256: str,
    label_map: dict[Any, int] | None = None,
    class_names: list[str] | None = None,
    notes: list[str] | None = None,
) -> LabelledData:
    """Drop rows with a missing text or label, map labels to ``0..K-1``, check the result."""
    notes = list(notes or [])
    keep_t, keep_l = [], []
    missing = 0
    for t, y in zip(texts, raw_labels):
        if _is_missing(t) or _is_missing(y) or (isinstance(t, str) and not t.strip()):
            missing += 1
            continue
        keep_t.append(t if isinstance(t, str) else str(t))
        keep_l.append(y)
    if missing:
        notes.append(f"dropped {missing:,} rows with an empty text or label")
    if not keep_t:
        raise SpectraError(f"{source}: no rows with both a text and a label")
    labels, names = _map_labels(source, keep_l, label_map, class_names)
    present = sorted(set(labels))
    if len(present) < 2:
        only = names[present[0]]
        raise SpectraError(f"{source}: only one class ({only!r}) in {len(labels):,} rows; a classifier needs at least two")
    return LabelledData(texts=keep_t, labels=labels, label_names=names, source=source, sha256=sha256, notes=notes)


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    try:  # pandas NA / NaT
        import pandas as pd

        return bool(pd.isna(v)) if not isinstance(v, (list, tuple, dict)) else False
    except (TypeError, ValueError, ImportError):
        return False


def _as_int(v: Any) -> int | None:
    """The integer a label value stands for, or None when it is not integer-valued."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalars
        try:
            v = v.item()
        except (ValueError, TypeError):
            return None
        if isinstance(v, bool):
            return None
        if isinstance(v, int):
            return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else None
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                return None
            return int(f) if f.is_integer() else None
    return None


def _as_float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _map_labels(source: str, raw: list[Any], label_map: dict[Any, int] | None,
                class_names: list[str] | None) -> tuple[list[int], list[str]]:
    if label_map:
        smap = {str(k): int(v) for k, v in label_map.items()}
        ids = sorted(set(smap.values()))
        if ids != list(range(len(ids))):
            raise SpectraError(f"{source}: label map values must be 0..K-1, got {ids}")
        unknown = sorted({str(v) for v in raw} - set(smap))
        if unknown:
            raise SpectraError(f"{source}: labels {unknown[:5]} are not in the label map (keys: {sorted(smap)})")
        names = [""] * len(ids)
        for k, v in smap.items():
            names[v] = k if not names[v] else names[v] + "|" + k
        return [smap[str(v)] for v in raw], names

    if class_names is not None:  # datasets ClassLabel: ids are already 0..K-1
        return [int(v) for v in raw], list(class_names)

    if all(isinstance(v, bool) or (hasattr(v, "dtype") and str(getattr(v, "dtype", "")) == "bool") for v in raw):
        return [int(bool(v)) for v in raw], ["False", "True"]

    ints = [_as_int(v) for v in raw]
    if all(i is not None for i in ints):
        values = set(ints)
        if values == {-1, 1}:
            return [0 if i == -1 else 1 for i in ints], ["-1", "1"]
        if min(values) == 0:
            return list(ints), [str(i) for i in range(max(values) + 1)]  # type: ignore[arg-type]
        order = sorted(values)  # type: ignore[type-var]
    else:
        strings = [str(v).strip() for v in raw]
        floats = [_as_float(s) for s in strings]
        if all(f is not None for f in floats):
            keyed = {s: f for s, f in zip(strings, floats)}
            order = sorted(keyed, key=lambda s: keyed[s])
        else:
            order = sorted(set(strings))
        rank = {v: i for i, v in enumerate(order)}
        return [rank[s] for s in strings], [str(v) for v in order]
    rank_i = {v: i for i, v in enumerate(order)}
    return [rank_i[i] for i in ints], [str(v) for v in order]  # type: ignore[index]
