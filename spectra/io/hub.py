"""Models and adapters named by Hugging Face hub id: the one rule for what counts as a hub id,
and the download of a repository's weight files when no local folder of that name exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

from spectra.errors import SpectraError, one_line

#: ``namespace/name`` as the hub spells repository ids (bare legacy names are not accepted:
#: a typo in a local path would otherwise turn into a network request)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def looks_like_hub_id(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has the shape of a hub repository id (``owner/name``)."""
    text = os.fspath(path)
    return bool(_HUB_ID.match(text)) and ".." not in text


def resolve_folder(path: str | os.PathLike[str], what: str = "model", allow_pickle: bool = False) -> Path:
    """A local folder for ``path``; a hub id (``org/name``) that is not a local path is downloaded.

    Only ``*.json`` and ``*.safetensors`` are fetched (plus ``*.bin`` with ``allow_pickle``).
    """
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise SpectraError(f"{p}: is a file; pass the {what} folder that holds it")
        return p
    if looks_like_hub_id(path):
        patterns = ["*.json", "*.safetensors"] + (["*.bin"] if allow_pickle else [])
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(str(path), allow_patterns=patterns)
        except Exception as exc:  # offline, unknown repo, gated, network errors, ...
            msg = one_line(exc)
            if len(msg) > 160:
                msg = msg[:157] + "..."
            raise SpectraError(
                f"{path}: no such local folder, and downloading it from the Hugging Face hub failed "
                f"({type(exc).__name__}: {msg}); pass a local {what} folder or go online"
            ) from None
        return Path(local)
    raise SpectraError(f"{p}: no such folder")


