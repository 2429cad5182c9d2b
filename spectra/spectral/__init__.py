"""Pure tensor math of the audit: low-rank SVD of LoRA updates, certified randomized
top-k SVD of base weights, alignment/overlap statistics.

No file I/O (the on-disk cache of base spectra is :mod:`spectra.io.spectrum_cache`), no
plotting, no CLI. Importing this package imports torch and nothing heavier.
"""

from spectra.spectral.alignment import (
    alignment,
    alignment_and_overlap,
    cos_random,
    statistics_from_projections,
    subspace_overlap,
)
from spectra.spectral.lowrank import SVD, frobenius_from_singular_values, lowrank_svd
from spectra.spectral.projected import projected_statistics
from spectra.spectral.topk import TopK, top_singular

__all__ = [
    "SVD",
    "TopK",
    "alignment",
    "alignment_and_overlap",
    "cos_random",
    "frobenius_from_singular_values",
    "lowrank_svd",
    "projected_statistics",
    "statistics_from_projections",
    "subspace_overlap",
    "top_singular",
]
