"""Atomic output folders: write into a temporary sibling, rename into place at the end.

A crash mid-way never leaves a half-written report where a pipeline would read it, and
an existing output is replaced only with ``overwrite=True``. An output may never be, contain
or lie inside an input: every model, adapter and data path spectra opens is registered
(:func:`spectra.io.files.protect`) by the loader that opens it, and every output folder is
checked against them — so ``-o ADAPTER --overwrite`` cannot replace the adapter it audits,
whichever command or library call writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from spectra.errors import SpectraError
from spectra.io.files import opened_inputs, umask_mode


def check_output_dir_apart(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Raise :class:`SpectraError` when ``out`` is, contains or lies inside one of ``inputs``, is or
    contains an input this process opened (:func:`spectra.io.files.protect`), or is the working folder or one above it."""
    from spectra.io.hub import looks_like_hub_id

    path = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise SpectraError(f"{out}: the output would replace the working folder{' or one above it' if path != cwd else ''}"
                           "; name a new folder for -o")
    given = {Path(p).expanduser().resolve() for p in inputs
             if p is not None and str(p) and not looks_like_hub_id(str(p)) and Path(p).expanduser().exists()}
    # an input a command built itself (the demo's poisoned base) may sit inside its output, so
    # for the registry only replacing matters: an output that is or holds an input it opened
    for inp in sorted(given | opened_inputs()):
        if path == inp:
            raise SpectraError(f"{out}: is an input of this run; name another folder for -o")
        if path in inp.parents:
            raise SpectraError(f"{out}: holds an input of this run ({inp}); name another folder for -o")
        if inp in given and inp in path.parents:
            raise SpectraError(f"{out}: lies inside an input of this run ({inp}); name a folder outside it for -o")
    return path


def check_writable(out: str | os.PathLike[str]) -> None:
    """Fail before any work when the folder that will hold ``out`` cannot be written (read-only
    mounts, missing permissions, a file in the way), by creating and removing a probe there."""
    parent = Path(out).expanduser().absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".spectra-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as exc:
        raise SpectraError(f"{out}: cannot write the output there ({exc.strerror or type(exc).__name__}: "
                           f"{exc.filename or parent})") from None


def check_output_dir(out: str | os.PathLike[str], overwrite: bool,
                     inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Fail early (before any work) when ``out`` exists and ``overwrite`` is not set, when it is,
    holds or lies inside an input, or when its folder cannot be written."""
    path = Path(out)
    if not path.name or path.name in (".", ".."):
        path = Path(out).expanduser().resolve()
    check_output_dir_apart(path, inputs)
    if path.exists() and not overwrite:
        raise SpectraError(f"{path}: output already exists (pass --overwrite to replace it)")
    if path.exists() and not path.is_dir():
        raise SpectraError(f"{path}: output exists and is not a folder")
    check_writable(path)
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
        os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would outlive the rename: mkdir's mode instead
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        try:  # what this run opened meanwhile (a hub snapshot, a data folder) is checked too
            check_output_dir_apart(final)
        except SpectraError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        backup = final.with_name(f".{final.name}.old-{os.getpid()}")
        with _signals_held():  # a SIGTERM between the two renames would leave no output at all
            os.replace(final, backup)
            os.replace(tmp, final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT and SIGTERM around a step that must not be cut in half: Python runs signal
    handlers in the main thread whichever thread the kernel gave the signal to (torch's OpenMP
    threads often get it, so masking the main thread alone is not enough); the handlers installed
    here only note the signal, which is delivered again, to the previous handler, after the block.
    A no-op off the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in caught[:1]:
            signal.raise_signal(sig)
