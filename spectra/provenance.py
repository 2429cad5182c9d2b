"""What produced a report: library versions and content hashes of the inputs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import platform
import re
from pathlib import Path
from typing import Any

_PACKAGES = ("spectra-lora", "torch", "transformers", "peft", "safetensors", "accelerate", "pandas", "numpy")


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries whose behaviour shapes the numbers."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_hash(path: str | os.PathLike[str], full_limit: int = 64 << 20) -> str:
    """``sha256:<hex>`` of a file, or for files above ``full_limit`` bytes a sampled
    ``sha256-sampled:<hex>`` over (size, first and last MiB) so that reports on
    multi-gigabyte checkpoints do not spend seconds per gigabyte on hashing."""
    size = os.path.getsize(path)
    if size <= full_limit:
        return "sha256:" + file_sha256(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return "sha256-sampled:" + digest.hexdigest()


def describe_path(path: str | os.PathLike[str] | None,
                  suffixes: tuple[str, ...] = (".json", ".safetensors", ".bin", ".txt", ".model")) -> dict[str, Any] | None:
    """How a report names an input folder: its resolved path and ``{file: content_hash}`` of
    its config/weight/tokenizer files (:func:`content_hash`: sampled above 64 MiB); a hub id
    is recorded as ``{"path": id, "hub_id": True}``; ``None`` stays ``None``."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_dir():
        return {"path": os.fspath(path), "hub_id": True}

    out: dict[str, Any] = {"path": str(p.resolve())}
    hub = snapshot_info(p)  # a huggingface_hub snapshot: which repository and commit
    if hub is not None:
        out["hub"] = hub
    out["files"] = {f.name: content_hash(f) for f in sorted(p.iterdir()) if f.is_file() and f.suffix in suffixes}
    return out


def strict_json(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text (RFC 8259: no NaN or Infinity, which Node's parser and
    GitHub's SARIF upload reject): non-finite numbers become ``null``; anything else JSON
    cannot hold becomes its ``str``. The one writer for files pipelines parse."""
    import json

    return json.dumps(json_safe(obj), indent=indent, allow_nan=False, default=str, ensure_ascii=False)


def json_safe(obj: Any) -> Any:
    """``obj`` with ±∞ and NaN replaced by None (so the JSON is strict: pipelines parse it
    with any parser), dict keys as strings, and tensors/arrays as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # torch.Tensor, numpy arrays and scalars
        return json_safe(obj.tolist())
    return obj


#: a huggingface_hub cache snapshot folder: ``…/models--OWNER--NAME/snapshots/COMMIT``
_SNAPSHOT = re.compile(r"(?:^|/)models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})$")


def snapshot_info(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"repo_id", "commit"}`` when ``folder`` is a huggingface_hub snapshot, else ``None``
    (read from the path alone: provenance imports no hub code)."""
    m = _SNAPSHOT.search(Path(folder).as_posix())
    if m is None:
        return None
    return {"repo_id": f"{m['owner']}/{m['name']}", "commit": m["commit"]}
