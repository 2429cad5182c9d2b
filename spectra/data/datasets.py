"""Labelled text: one loader for CSV/TSV/JSONL/Parquet files, ``datasets`` folders and the
built-in corpora (``mr``, ``cr``, ``rt``), and a deterministic stratified split.

Labels always come out as contiguous ints ``0..K-1`` with ``label_names[i]`` naming class
``i``. The mapping rules (applied in this order):

1. an explicit ``label_map`` (``{"neg": 0, "pos": 1}``; keys compared as strings);
2. a ``datasets`` ``ClassLabel`` column: its ids and names as they are;
3. booleans: ``False -> 0``, ``True -> 1``;
4. integers (or integer-valued strings/floats) whose values are exactly ``{-1, 1}``:
   ``-1 -> 0``, ``1 -> 1`` (Pang & Lee style polarity);
5. non-negative integers that include 0: kept as they are (they are the ids a model's head
   was trained on), ``label_names = ["0", ..., str(max)]``;
6. anything else (strings, ``1..5`` star ratings, ...): the distinct values sorted
   (numerically when all are numbers) and numbered from 0.

Any user-fixable problem raises :class:`spectra.errors.SpectraError` with one line that
names the file and the problem.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError, one_line

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "sentence1")
LABEL_COLUMNS = ("label", "labels", "sentiment", "polarity", "class", "target")

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


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


# --------------------------------------------------------------------------- loading


def load_labelled(
    spec: str | os.PathLike[str],
    text_col: str | None = None,
    label_col: str | None = None,
    label_map: dict[Any, int] | None = None,
) -> LabelledData:
    """Load labelled text from a file, a ``datasets`` folder or a built-in name.

    Args:
        spec: a ``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet`` file (optionally
            compressed, e.g. ``.csv.gz``), a folder written by ``Dataset.save_to_disk``
            (for a ``DatasetDict`` pass the split's sub-folder, e.g. ``data/test``), or a
            built-in corpus: ``mr`` (Pang & Lee sentence polarity), ``cr`` (Hu & Liu product
            review snippets), ``rt`` (Rotten Tomatoes snippets); see :mod:`spectra.data.builtin`.
        text_col: the text column; default: the first of ``text, sentence, review, content,
            document, sentence1`` that exists.
        label_col: the label column; default: the first of ``label, labels, sentiment,
            polarity, class, target`` that exists.
        label_map: explicit mapping from raw label values to ints ``0..K-1``.

    Raises:
        SpectraError: missing file, unknown extension, unknown column, no rows, one class.
    """
    from spectra.data import builtin

    spec_str = os.fspath(spec)
    if isinstance(spec, str) and spec_str.lower() in builtin.BUILTINS and not Path(spec_str).exists():
        return builtin.load_builtin(spec_str.lower(), label_map=label_map)

    path = Path(spec_str).expanduser()
    if not path.exists():
        hint = f" (built-in names: {', '.join(sorted(builtin.BUILTINS))})" if os.sep not in spec_str and "." not in spec_str else ""
        raise SpectraError(f"{path}: no such file or folder{hint}")
    if path.is_dir():
        columns, rows_text, rows_label, class_names, digest = _read_datasets_folder(path, text_col, label_col)
        source = str(path)
    else:
        fmt = _format_of(path)
        frame = _read_table(path, fmt)
        columns = [str(c) for c in frame.columns]
        tcol = _pick_column(path, columns, text_col, TEXT_COLUMNS, "text")
        lcol = _pick_column(path, columns, label_col, LABEL_COLUMNS, "label")
        rows_text = frame[tcol].tolist()
        rows_label = frame[lcol].tolist()
        class_names = None
        digest = _file_sha256(path)
        source = str(path)
    return build_labelled(rows_text, rows_label, source=source, sha256=digest,
                          label_map=label_map, class_names=class_names)


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


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION:
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    if ext not in _EXTENSIONS:
        known = ", ".join(sorted(_EXTENSIONS))
        raise SpectraError(f"{path}: unknown data format {ext or '(no extension)'!r}; use one of {known} or a datasets folder")
    return _EXTENSIONS[ext]


def _read_table(path: Path, fmt: str) -> Any:
    import pandas as pd

    if path.stat().st_size == 0:
        raise SpectraError(f"{path}: file is empty")
    try:
        if fmt in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=object,
                                keep_default_na=False, na_values=[""], encoding="utf-8-sig")
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif fmt == "json":
            try:
                frame = pd.read_json(path, dtype=False)
            except ValueError:
                frame = pd.read_json(path, lines=True, dtype=False)
        else:
            try:
                frame = pd.read_parquet(path)
            except ImportError as exc:
                raise SpectraError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    except SpectraError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise SpectraError(f"{path}: no rows") from exc
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as exc:
        raise SpectraError(f"{path}: cannot read as {fmt.upper()}: {one_line(exc)}") from exc
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        if type(exc).__module__.startswith("pyarrow"):
            raise SpectraError(f"{path}: cannot read as Parquet: {one_line(exc)}") from exc
        raise
    if len(frame) == 0:
        raise SpectraError(f"{path}: no rows")
    return frame


def _pick_column(path: Path, columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str) -> str:
    if wanted is not None:
        if wanted in columns:
            return wanted
        raise SpectraError(f"{path}: no {what} column {wanted!r}; available columns: {', '.join(columns)}")
    lower = {c.lower(): c for c in columns}
    for name in defaults:
        if name in lower:
            return lower[name]
    flag = "--text-col" if what == "text" else "--label-col"
    raise SpectraError(f"{path}: no {what} column found (tried {', '.join(defaults)}); pass {flag}; available columns: {', '.join(columns)}")


def _read_datasets_folder(path: Path, text_col: str | None, label_col: str | None):
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if p.is_dir())
        raise SpectraError(f"{path}: a DatasetDict; pass one split's folder, e.g. {path / (splits[0] if splits else 'test')} (splits: {', '.join(splits)})")
    if not (path / "dataset_info.json").is_file() and not (path / "state.json").is_file():
        if not any(path.iterdir()):
            raise SpectraError(f"{path}: folder is empty")
        raise SpectraError(f"{path}: not a datasets folder (no state.json / dataset_info.json from save_to_disk)")
    try:
        import datasets
    except ImportError as exc:
        raise SpectraError(f"{path}: reading a datasets folder needs the `datasets` package (pip install datasets)") from exc
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError/ValueError/... for bad folders
        raise SpectraError(f"{path}: cannot load the datasets folder: {one_line(exc)}") from exc
    if isinstance(ds, datasets.DatasetDict):
        raise SpectraError(f"{path}: a DatasetDict; pass one split's folder (splits: {', '.join(ds)})")
    columns = list(ds.column_names)
    tcol = _pick_column(path, columns, text_col, TEXT_COLUMNS, "text")
    lcol = _pick_column(path, columns, label_col, LABEL_COLUMNS, "label")
    if len(ds) == 0:
        raise SpectraError(f"{path}: no rows")
    feature = ds.features.get(lcol)
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    digest = hashlib.sha256()
    for arrow in sorted(path.glob("*.arrow")):
        digest.update(arrow.name.encode())
        digest.update(_file_sha256(arrow).encode())
    return columns, ds[tcol], ds[lcol], class_names, digest.hexdigest()


def _file_sha256(path: Path) -> str:
    from spectra.provenance import file_sha256

    return file_sha256(path)


# --------------------------------------------------------------------------- split


def split(data: LabelledData, test_size: float | int, seed: int = 0) -> tuple[LabelledData, LabelledData]:
    """Deterministic stratified split into ``(train, test)``.

    ``test_size`` is a fraction in (0, 1) or a row count. Each class contributes in
    proportion to its size (largest remainders settle rounding), at least one row to each
    side when it has two or more. Rows keep their original order on both sides; the same
    ``(data, test_size, seed)`` always gives the same split.
    """
    n = len(data)
    if isinstance(test_size, bool):
        raise SpectraError(f"{data.source}: test size must be a fraction or a count, got {test_size!r}")
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise SpectraError(f"{data.source}: test fraction must be in (0, 1), got {test_size}")
        n_test = int(round(test_size * n))
    else:
        n_test = int(test_size)
    if not 1 <= n_test <= n - 1:
        raise SpectraError(f"{data.source}: test size {test_size} leaves no rows on one side of the split ({n:,} rows)")

    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(data.labels):
        by_class.setdefault(y, []).append(i)
    rng = random.Random(f"spectra-split:{seed}")
    for y in sorted(by_class):
        rng.shuffle(by_class[y])

    # Largest-remainder allocation of n_test over the classes.
    quotas = {y: n_test * len(ix) / n for y, ix in by_class.items()}
    alloc = {y: int(math.floor(q)) for y, q in quotas.items()}
    for y in sorted(by_class, key=lambda c: (-(quotas[c] - alloc[c]), c))[: n_test - sum(alloc.values())]:
        alloc[y] += 1
    # Keep every class with >= 2 rows on both sides where the totals allow it.
    for y, ix in by_class.items():
        if len(ix) >= 2 and alloc[y] == 0:
            donor = max((c for c in alloc if alloc[c] > 1), key=lambda c: alloc[c], default=None)
            if donor is not None:
                alloc[donor] -= 1
                alloc[y] += 1
        elif len(ix) >= 2 and alloc[y] == len(ix):
            taker = max((c for c in alloc if alloc[c] < len(by_class[c]) - 1), key=lambda c: len(by_class[c]) - alloc[c], default=None)
            if taker is not None:
                alloc[y] -= 1
                alloc[taker] += 1

    test_idx = sorted(i for y, ix in by_class.items() for i in ix[: alloc[y]])
    test_set = set(test_idx)
    train_idx = [i for i in range(n) if i not in test_set]
    return data.subset(train_idx), data.subset(test_idx)
