"""Atomic output folders: write into a temporary sibling, rename into place at the end.

A crash mid-way never leaves a half-written report where a pipeline would read it, and
an existing output is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spectra.errors import SpectraError


def check_output_dir(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Fail early (before any work) when ``out`` exists and ``overwrite`` is not set."""
    path = Path(out)
    if path.exists() and not overwrite:
        raise SpectraError(f"{path}: output already exists (pass --overwrite to replace it)")
    if path.exists() and not path.is_dir():
        raise SpectraError(f"{path}: output exists and is not a folder")
    return path


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out`` in one rename.

    On an exception the temporary folder is removed and ``out`` is left untouched.
    """
    final = check_output_dir(out, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        backup = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, backup)
        os.replace(tmp, final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, final)

