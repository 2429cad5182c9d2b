"""Small file helpers with one home each: the cache folder, JSON objects read with one-line
errors, and atomic writes (a temporary sibling renamed into place, so readers never see
half a file)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError, one_line


def cache_dir() -> Path:
    """``$SPECTRA_CACHE_DIR`` when set and non-empty, else ``~/.cache/spectra``."""
    env = os.environ.get("SPECTRA_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spectra"


def regular_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` if it is (or links to) a regular file; else one line naming it.

    A FIFO, a device or a socket must never be opened: reading ``/dev/zero`` never ends and
    opening a FIFO blocks until someone writes to it, so a hostile folder could hang the tool.
    """
    import stat

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SpectraError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise SpectraError(f"{path}: cannot read ({one_line(exc)})") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise SpectraError(f"{path}: is {kind}, not a regular {what}; refused")
    return path


def regular_entries(folder: str | os.PathLike[str]) -> None:
    """Refuse a folder holding a FIFO, device or socket at its top level (transformers and
    tokenizers open whatever files a model folder lists; one of those would block or never end),
    or a link that leads out of it: a shard linked to ``/home/…/other-model.safetensors`` would
    be read as this model's. A huggingface_hub snapshot's links into its own repository's
    ``blobs/`` are how the hub cache is laid out, and stay allowed."""
    import stat

    root = Path(folder).resolve()
    allowed = [root]
    if root.parent.name == "snapshots":  # models--owner--name/snapshots/<commit>: blobs live beside
        allowed.append(root.parent.parent / "blobs")
    for entry in Path(folder).iterdir():
        try:
            mode = os.stat(entry).st_mode
        except OSError:
            continue  # a dangling link is not read by anyone
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            regular_file(entry)  # raises the one-line refusal
        if entry.is_symlink():
            target = entry.resolve()
            if not any(target == a or a in target.parents for a in allowed):
                raise SpectraError(f"{entry}: a link to {target}, outside {root}; spectra reads only the files "
                                   "inside a model or adapter folder (copy the file in)")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object (from a regular file only); any problem is one line naming the file."""
    path = regular_file(path, "JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpectraError(f"{path}: cannot read ({one_line(exc)})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpectraError(f"{path}: invalid JSON ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise SpectraError(f"{path}: expected a JSON object")
    return data


def umask_mode(mode: int) -> int:
    """``mode`` with the process's umask applied: what ``open``/``mkdir`` would have given, for
    files and folders that ``tempfile`` creates 0600/0700 and renames into place."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` through a temporary sibling and rename it over ``path``; the new file
    gets the permissions a plain ``open(..., "w")`` would (the umask applied)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


#: every input path this process has opened (resolved): outputs keep apart from them
_INPUTS: set[Path] = set()


def protect(path: str | os.PathLike[str]) -> None:
    """Register an input (a model, adapter or data path) that no output may be or contain
    (:func:`spectra.io.output.check_output_dir_apart` reads the registry)."""
    try:
        _INPUTS.add(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):  # an unresolvable path cannot be an output's ancestor either
        pass


def opened_inputs() -> set[Path]:
    """The inputs registered by :func:`protect` so far (a copy)."""
    return set(_INPUTS)
