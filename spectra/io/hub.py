"""Models and adapters named by Hugging Face hub id: the one rule for what counts as a hub id,
their resolution to a local snapshot through ``huggingface_hub`` (its cache and offline mode
honoured), and the commit a snapshot came from, for the reports.

A hub reference is written ``hf://owner/name``, optionally ``hf://owner/name@revision``;
``revision`` arguments (the CLI's ``--revision``) win over an ``@`` in the id. A bare
``owner/name`` is a *local path*, always: a missing or misspelled adapter folder must never
turn into a download that passes the gate on someone else's weights. The CLI's ``--hub``
rewrites bare ids that do not exist locally into ``hf://`` references (:func:`as_hub_reference`),
and every resolution is announced (a :class:`~spectra.errors.SpectraNotice` naming the commit). With ``HF_HUB_OFFLINE=1`` nothing is
downloaded: the snapshot must already be in the cache (``HF_HUB_CACHE``, else
``$HF_HOME/hub``, else huggingface_hub's default), laid out as huggingface_hub lays it out
(``models--owner--name/{blobs,refs,snapshots/<commit>}``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError, SpectraNotice, one_line
from spectra.provenance import snapshot_info

#: how a hub repository is named wherever spectra takes a model or adapter path
HUB_PREFIX = "hf://"

#: ``namespace/name`` as the hub spells repository ids (bare legacy names are not accepted:
#: a typo in a local path would otherwise turn into a network request)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_TRUE = ("1", "true", "yes", "on")


def split_revision(text: str) -> tuple[str, str | None]:
    """``owner/name@rev`` → ``("owner/name", "rev")``; ids without ``@`` keep ``None``."""
    repo, sep, rev = text.partition("@")
    return (repo, rev) if sep and rev else (text, None)


def has_hub_id_shape(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (without ``hf://``) has the shape of a hub repository id (``owner/name[@rev]``)."""
    repo, _ = split_revision(os.fspath(path))
    return bool(_HUB_ID.match(repo)) and ".." not in repo


def hub_reference(path: str | os.PathLike[str]) -> str | None:
    """``owner/name[@rev]`` for an explicit ``hf://owner/name[@rev]``; ``None`` for anything else.

    Raises:
        SpectraError: ``hf://`` followed by something that is not a repository id.
    """
    text = os.fspath(path)
    if not text.startswith(HUB_PREFIX):
        return None
    rest = text[len(HUB_PREFIX):]
    if not has_hub_id_shape(rest):
        raise SpectraError(f"{text}: not a hub repository (write hf://owner/name or hf://owner/name@revision)")
    return rest


def looks_like_hub_id(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a hub repository: only an explicit ``hf://owner/name[@rev]`` does."""
    return hub_reference(path) is not None


def as_hub_reference(path: str, hub: bool) -> str:
    """The CLI's ``--hub``: a bare ``owner/name`` that is not a local path becomes ``hf://owner/name``;
    everything else (and everything without ``--hub``) is returned as given."""
    if hub and not path.startswith(HUB_PREFIX) and not Path(path).expanduser().exists() and has_hub_id_shape(path):
        return HUB_PREFIX + path
    return path


def missing_local(path: str | os.PathLike[str], what: str) -> SpectraError:
    """The one line for a local path that does not exist (naming the hub spelling when it has an id's shape)."""
    p = Path(path).expanduser()
    if has_hub_id_shape(os.fspath(path)):
        return SpectraError(f"{p}: no such local {what} folder (a local path is never looked up on the hub; for the "
                            f"hub repository write {HUB_PREFIX}{os.fspath(path)} or pass --hub)")
    return SpectraError(f"{p}: no such folder")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it, at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache() -> str | None:
    """The cache folder huggingface_hub would use, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def download(repo_id: str, revision: str | None, patterns: list[str], what: str) -> Path:
    """The local snapshot folder of ``repo_id`` at ``revision`` (only ``patterns`` fetched)."""
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id, revision=revision, allow_patterns=patterns, cache_dir=hub_cache(),
                                  local_files_only=offline())
    except Exception as exc:  # offline and not cached, unknown repo or revision, gated, network errors
        msg = one_line(exc)
        msg = msg[:157] + "..." if len(msg) > 160 else msg
        how = ("it is not in the hub cache and HF_HUB_OFFLINE is set" if offline() else
               "downloading it from the Hugging Face hub failed")
        raise SpectraError(f"{HUB_PREFIX}{repo_id}{'@' + revision if revision else ''}: {how} "
                           f"({type(exc).__name__}: {msg}); pass a local {what} folder or go online") from None
    import warnings

    from spectra.io.files import protect

    protect(local)  # no output of this process may replace the snapshot it read
    found = snapshot_info(local)
    warnings.warn(f"{HUB_PREFIX}{repo_id}{'@' + revision if revision else ''}: {what} resolved through the Hugging "
                  f"Face hub" + (f" to commit {found['commit']}" if found else "") + f" ({local})", SpectraNotice,
                  stacklevel=2)
    return Path(local)


def resolve_folder(path: str | os.PathLike[str], what: str = "model", allow_pickle: bool = False,
                   revision: str | None = None) -> Path:
    """A local folder for ``path``; an ``hf://owner/name`` reference resolves to its snapshot.

    Only ``*.json`` and ``*.safetensors`` are fetched (plus ``*.bin`` with ``allow_pickle``),
    and tokenizer files (``*.txt``, ``*.model``) so a snapshot can also be run.
    """
    ref = hub_reference(path)
    if ref is not None:
        repo, rev = split_revision(ref)
        patterns = ["*.json", "*.safetensors", "*.txt", "*.model"] + (["*.bin"] if allow_pickle else [])
        return download(repo, revision or rev, patterns, what)
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise SpectraError(f"{p}: is a file; pass the {what} folder that holds it")
        if revision:
            raise SpectraError(f"{p}: --revision applies to hub ids, not to a local folder")
        from spectra.io.files import protect

        protect(p)  # no output of this process may replace it
        return p
    raise missing_local(path, what)

