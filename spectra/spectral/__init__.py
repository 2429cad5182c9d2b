"""Pure tensor math of the audit: low-rank SVD of LoRA updates, certified randomized
top-k SVD of base weights, alignment/overlap statistics and a spectrum cache.

No file I/O beyond :class:`SpectrumCache`, no plotting, no CLI. Importing this package
imports torch (and nothing heavier); safetensors is imported only when the cache is used.
"""

from spectra.spectral.alignment import alignment, cos_random, subspace_overlap
from spectra.spectral.cache import SpectrumCache, default_cache_dir, spectrum_key
from spectra.spectral.lowrank import SVD, lowrank_svd
from spectra.spectral.topk import TopK, top_singular

__all__ = [
    "SVD",
    "SpectrumCache",
    "TopK",
    "alignment",
    "cos_random",
    "default_cache_dir",
    "lowrank_svd",
    "spectrum_key",
    "subspace_overlap",
    "top_singular",
]
