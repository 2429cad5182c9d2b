"""Content-keyed on-disk cache of base-weight spectra (one safetensors file per key).

Auditing several adapters against one base model should pay for the base's top-k
triplets once. Keys come from :func:`spectrum_key` (a content fingerprint of the weight
plus the settings that change the result); values are :class:`~spectra.spectral.TopK`.
A damaged file is a miss, never an error: the cache can always be rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import torch

from spectra.io.files import cache_dir, umask_mode
from spectra.spectral.topk import TopK

# bump when the stored layout or the meaning of a cached spectrum changes
_FORMAT = "spectra-topk-v1"
_FIELDS = ("U", "S", "Vh", "certified", "residual")


def spectrum_key(fingerprint: str, k: int, dtype: str, method: str) -> str:
    """sha256 hex key for the top-``k`` spectrum of one weight.

    Parameters:
        fingerprint: content identity of the weight (e.g. ``BaseCheckpoint.fingerprint``:
            a hash of the tensor bytes or of file identity + offsets).
        k: number of triplets.
        dtype: compute dtype name (``"float32"``/``"float64"``): results differ by it.
        method: ``"randomized"`` or ``"exact"`` — the requested mode, so ``--exact``
            never reuses a randomized result.
    """
    text = "\x1f".join((_FORMAT, fingerprint, str(int(k)), str(dtype), str(method)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_folder() -> Path:
    """Where base spectra are cached by default: ``<cache>/base_spectra``."""
    return cache_dir() / "base_spectra"


class SpectrumCache:
    """Folder of ``<key>.safetensors`` files holding :class:`TopK` results.

    Writes go to a temporary file in the same folder and are moved into place with
    ``os.replace``, so readers (including concurrent audits writing the same key) see a
    complete file or none, and an interrupted write (Ctrl-C) leaves no entry behind. A
    folder that cannot be written (read-only, full, not a folder) turns the cache off for
    the rest of the run with one :class:`~spectra.errors.SpectraWarning`: the audit goes on
    without it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.disabled: str | None = None  # why writes stopped, when they did

    def path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdefABCDEF" for c in key):
            # keys become file names: refuse anything that could walk out of the folder
            raise ValueError(f"cache keys are hex digests, got {key!r}")
        return self.folder / f"{key}.safetensors"

    def get(self, key: str) -> TopK | None:
        """The cached value, or ``None`` on a miss. Unreadable files are deleted."""
        from safetensors import safe_open

        file = self.path(key)
        if not file.is_file():
            return None
        try:
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in _FIELDS}
            if meta.get("format") != _FORMAT or meta.get("key") != key or "method" not in meta:
                raise ValueError("foreign or stale cache file")
            value = TopK(**tensors, method=meta["method"])
            _check_shapes(value)
            return value
        except Exception:  # noqa: BLE001 — any damage means "recompute", by design
            try:
                file.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only cache: leave the damaged file, recompute anyway
            return None

    def put(self, key: str, value: TopK) -> None:
        """Store ``value`` under ``key`` atomically (overwrites an existing entry)."""
        import warnings

        from safetensors.torch import save_file

        from spectra.errors import SpectraWarning, one_line

        if self.disabled is not None:
            return
        file = self.path(key)
        tensors = {name: getattr(value, name).detach().to("cpu").contiguous() for name in _FIELDS}
        meta = {"format": _FORMAT, "key": key, "method": value.method}
        tmp: str | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.folder)
            os.close(fd)
            save_file(tensors, tmp, metadata=meta)
            os.chmod(tmp, umask_mode(0o666))  # mkstemp's 0600 would hide a shared cache from its group
            os.replace(tmp, file)
        except OSError as exc:  # read-only, full, or not a folder: go on without the cache
            self.disabled = one_line(exc)
            warnings.warn(f"{self.folder}: cannot write the spectrum cache ({self.disabled}); continuing without it",
                          SpectraWarning, stacklevel=2)
        finally:  # after os.replace no temporary is left; after any failure (Ctrl-C too) remove it
            if tmp is not None:
                with contextlib.suppress(OSError):
                    Path(tmp).unlink(missing_ok=True)


def _check_shapes(t: TopK) -> None:
    k = t.S.shape[-1]
    batch = t.S.shape[:-1]
    ok = (
        t.U.shape[:-2] == batch
        and t.U.shape[-1] == k
        and t.Vh.shape[:-2] == batch
        and t.Vh.shape[-2] == k
        and t.certified.shape == batch
        and t.certified.dtype == torch.bool
        and t.residual.shape == batch
    )
    if not ok:
        raise ValueError("inconsistent shapes in cached spectrum")
