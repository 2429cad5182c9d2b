"""Open a base model checkpoint lazily: a local Hugging Face folder or a hub id.

``open_base`` accepts a folder holding ``config.json`` and ``model.safetensors`` (or
shards listed in ``model.safetensors.index.json``). Pickled weights (``.bin``/``.pt``)
are read only with ``allow_pickle=True``, through ``torch.load(weights_only=True)``.
Nothing is read beyond the safetensors headers until ``get`` asks for one tensor.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from spectra.errors import SpectraError, one_line, pickle_refused
from spectra.io._tensors import MappedTensor, PickleStore, SafetensorsStore, TensorStore
from spectra.io.files import read_json, regular_entries
from spectra.io.hub import resolve_folder

ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"

# pickles that sit next to weights in Trainer output folders but are not weights
_NOT_WEIGHTS = re.compile(r"^(training_args|optimizer|scheduler|scaler|rng_state.*|adapter_model)\.(bin|pt|pth)$")


def find_weight_files(folder: Path, allow_pickle: bool) -> tuple[str, list[Path], dict[str, str] | None] | None:
    """``(format, files, weight_map)`` of the model weights in ``folder``, or None if it holds none.

    Safetensors win over pickles. A folder with pickles only raises unless ``allow_pickle``.
    """
    index = folder / ST_INDEX
    if index.is_file():
        weight_map = _weight_map(index)
        return "safetensors", _shards(folder, index, weight_map), weight_map
    st = sorted(f for f in folder.glob("*.safetensors") if not f.name.startswith("adapter_model"))
    if st:
        return "safetensors", st, None
    bin_index = folder / BIN_INDEX
    pickles: list[Path]
    weight_map = None
    if bin_index.is_file():
        weight_map = _weight_map(bin_index)
        pickles = _shards(folder, bin_index, weight_map)
    else:
        pickles = sorted(
            f for f in list(folder.glob("*.bin")) + list(folder.glob("*.pt")) + list(folder.glob("*.pth"))
            if not _NOT_WEIGHTS.match(f.name)
        )
    if not pickles:
        return None
    if not allow_pickle:
        names = ", ".join(f.name for f in pickles[:3]) + (", ..." if len(pickles) > 3 else "")
        raise pickle_refused(folder, f"its only weights ({names}) are")
    return "pickle", pickles, weight_map


def _weight_map(index: Path) -> dict[str, str]:
    data = read_json(index)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise SpectraError(f"{index}: no weight_map in the index")
    return {str(k): str(v) for k, v in weight_map.items()}


def _shards(folder: Path, index: Path, weight_map: dict[str, str]) -> list[Path]:
    """The shard files an index names: plain file names inside ``folder`` (never a path that
    leads elsewhere), each a regular file."""
    from spectra.io.files import regular_file

    shards = sorted(set(weight_map.values()))
    for name in shards:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise SpectraError(f"{index}: names shard {name!r}, which is not a file name inside {folder}; refused")
        if not (folder / name).exists():
            raise SpectraError(f"{index}: names shard {name}, which is missing from {folder}")
        regular_file(folder / name, "shard")
    return [folder / name for name in shards]


def open_store(fmt: str, files: list[Path], weight_map: dict[str, str] | None = None) -> TensorStore:
    if fmt == "safetensors":
        return SafetensorsStore(files, expected=weight_map)
    return PickleStore(files)


def check_not_empty(folder: Path) -> None:
    try:
        empty = not any(folder.iterdir())
    except OSError as exc:
        raise SpectraError(f"{folder}: cannot list the folder ({one_line(exc)})") from None
    if empty:
        raise SpectraError(f"{folder}: empty folder")


class BaseCheckpoint:
    """A model checkpoint opened lazily.

    ``keys``/``shape``/``dtype`` come from file headers; ``get`` reads exactly one tensor
    (in its stored dtype); ``fingerprint`` identifies a tensor's content cheaply (file name,
    size, mtime and the tensor's byte range, dtype and shape) for content-keyed caches.
    """

    def __init__(self, path: Path, config: dict[str, Any], store: TensorStore, fmt: str):
        self.path = path
        self.config = config
        self.format = fmt
        self._store = store

    @property
    def files(self) -> list[Path]:
        return list(self._store.files)

    @property
    def model_type(self) -> str | None:
        mt = self.config.get("model_type")
        return str(mt) if mt else None

    def keys(self) -> list[str]:
        return self._store.keys()

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def shape(self, key: str) -> tuple[int, ...]:
        return self._store.shape(key)

    def dtype(self, key: str) -> torch.dtype:
        return self._store.dtype(key)

    def get(self, key: str) -> torch.Tensor:
        return self._store.get(key)

    def mapped(self, key: str) -> MappedTensor:
        """One tensor for a single read-through, unmapped on ``close()``; no view of it may
        outlive that (:class:`~spectra.io._tensors.MappedTensor`)."""
        return self._store.mapped(key)

    def fingerprint(self, key: str) -> str:
        return self._store.fingerprint(key)

    def file_of(self, key: str) -> Path:
        return self._store.file_of(key)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> BaseCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BaseCheckpoint({str(self.path)!r}, {len(self.keys())} tensors, {self.format})"


def open_base(path: str | os.PathLike[str], allow_pickle: bool = False, revision: str | None = None) -> BaseCheckpoint:
    """Open the base model at ``path`` (local folder, or hub id at ``revision``) without reading any tensor."""
    folder = resolve_folder(path, "model", allow_pickle, revision)
    check_not_empty(folder)
    regular_entries(folder)  # a FIFO or device among the files is refused, read or not
    found = find_weight_files(folder, allow_pickle)
    has_config = (folder / MODEL_CONFIG).is_file()
    if found is None:
        if (folder / ADAPTER_CONFIG).is_file():
            raise SpectraError(f"{folder}: is a PEFT adapter folder (adapter_config.json), not a base model")
        if has_config:
            raise SpectraError(f"{folder}: config.json but no weights (expected model.safetensors)")
        raise SpectraError(
            f"{folder}: neither a model nor an adapter (no config.json + model.safetensors, no adapter_config.json)"
        )
    fmt, files, weight_map = found
    config = read_json(folder / MODEL_CONFIG) if has_config else {}
    store = open_store(fmt, files, weight_map)
    return BaseCheckpoint(folder, config, store, fmt)
