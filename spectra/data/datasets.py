"""Loading labelled text: one loader for CSV/TSV/JSONL/Parquet files, ``datasets`` folders and
the built-in corpora (``mr``, ``cr``, ``rt``), and a deterministic stratified split.

Labels come out as contiguous ints ``0..K-1`` by the rules of :mod:`spectra.data.labelled`.

Any user-fixable problem raises :class:`spectra.errors.SpectraError` with one line that
names the file and the problem.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from pathlib import Path
from typing import Any

from spectra.data.labelled import LabelledData, build_labelled
from spectra.errors import SpectraError, one_line
from spectra.provenance import file_sha256

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
    from spectra.io.files import protect

    protect(path)  # no output of this process may replace it
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
        digest = file_sha256(path)
        source = str(path)
    return build_labelled(rows_text, rows_label, source=source, sha256=digest,
                          label_map=label_map, class_names=class_names)


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
        digest.update(file_sha256(arrow).encode())
    return columns, ds[tcol], ds[lcol], class_names, digest.hexdigest()


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
