"""Which top-k algorithm is cheapest for a matrix shape: a cost model with measured constants.

Three ways to the top-k singular triplets of ``W (m, n)``, ``d = min(m, n)``, ``N = max(m, n)``:

- ``exact``: LAPACK's ``gesdd`` on the tall orientation, about ``c_svd · N · d²`` seconds;
- ``gram``: one GEMM ``W Wᵀ`` (``2·N·d²`` flop at GEMM speed) and a partial ``syevr``
  eigensolver (``c_eig · d³``, its tridiagonalisation), :mod:`spectra.spectral.gram`;
- ``krylov``: block Krylov (:func:`krylov_block` columns per step): per step two skinny
  GEMMs (``4·N·d·b`` flop) plus re-orthogonalisation; pretrained spectra need a basis of
  about 5–9 columns per wanted triplet for the certificate (real weights need more than
  synthetic ones).

The constants were measured on the 2-core benchmark machine (bench/README.md, "cost
model"): what matters is their ratios, which hold across CPUs of one family; on a GPU the
eigensolver is relatively slower and the GEMMs faster, so ``krylov`` wins earlier. The
choice never has to be right to the last percent: every algorithm's result is certified
the same way, and ``exact`` is only chosen when it is estimated cheapest.
"""

from __future__ import annotations

from typing import Any

#: seconds per flop of the GEMMs the algorithms run (≈ 100 GFLOP/s for skinny products,
#: ≈ 150 GFLOP/s for the square-ish Gram product; 2 cores, AVX2, MKL)
SKINNY_GEMM_S = 1 / 100e9
GRAM_GEMM_S = 1 / 150e9
#: gesdd: seconds per N·d² (94 ms at 576×1536, 1.6 s at 2048², 2.4 s at 5632×2048 tall)
SVD_S = 1.8e-10
#: partial syevr: seconds per d³ (9 ms at d = 576, 0.2 s at d = 2048)
EIG_S = 4.0e-11
#: expected Krylov basis columns per wanted triplet to certify the top k of a pretrained
#: weight at the CPU block width (measured at k = 32, block 16: 5–5.5 on the synthetic
#: power-law weights, 8–9 on SmolLM2's real ones; the larger keeps the model conservative),
#: the share of a step spent outside the two main GEMMs (re-orthogonalisation, QR), the Ritz
#: check's full eigh of the growing L×L projection (seconds per L³, torch), and a fixed cost
#: per step (small QRs, launches, Python): together they make Krylov lose on narrow matrices
KRYLOV_COLUMNS_PER_K = 9
KRYLOV_OVERHEAD = 0.35
RITZ_EIG_S = 7.3e-11
KRYLOV_STEP_S = 5e-4


#: Krylov blocks are multiples of this: MKL's skinny SGEMM runs markedly slower per flop on
#: blocks that are not (92 GFLOP/s at 42 columns, 120–135 at 48; bench/README.md, "block width")
BLOCK_MULTIPLE = 16


def krylov_block(k: int, oversample: int, d: int, device: str = "cpu") -> int:
    """Columns of the Krylov block, a multiple of :data:`BLOCK_MULTIPLE`, at most ``d``.

    On a CPU: about ``k/4`` (at least 16). What certifies the top ``k`` is the Krylov
    polynomial's degree, and a narrow block reaches a given degree with fewer basis
    columns: to certify the top 32 of a 2048-wide weight a 16-wide block needs 160–176
    columns (0.11–0.12 s for 5632×2048 on 2 cores), a 48-wide one 288–336 (0.13–0.16 s);
    at k = 128 a 32-wide block is fastest (bench/README.md, "block width"). Blocks of 8
    lose again: SGEMM on 8 columns is bandwidth-bound. On an accelerator, where every
    step is a round of kernel launches and its Ritz eigensolver is slow, the block is
    ``k + oversample`` (the classical choice: fewest steps).
    """
    if device == "cpu":
        want = max(BLOCK_MULTIPLE, -(-k // 4))
    else:
        want = k + max(oversample, 1)
    return min(-(-want // BLOCK_MULTIPLE) * BLOCK_MULTIPLE, d)


def krylov_columns(k: int, block: int, d: int) -> int:
    """Basis columns the cost model expects Krylov to build for the top ``k``: whole blocks."""
    return min(-(-(KRYLOV_COLUMNS_PER_K * k) // block) * block, d)


def estimates(m: int, n: int, k: int, oversample: int = 10, device: str = "cpu") -> dict[str, float]:
    """Estimated seconds per matrix for ``exact``, ``gram`` and ``krylov``."""
    d, N = min(m, n), max(m, n)
    block = krylov_block(k, oversample, d, device)
    gemm_scale = 0.1 if device != "cpu" else 1.0  # a GPU's GEMMs are ~10x faster relative to its eigh
    exact = SVD_S * N * d * d
    gram = gemm_scale * GRAM_GEMM_S * 2 * N * d * d + EIG_S * d**3 + gemm_scale * SKINNY_GEMM_S * 4 * N * d * (k + 1)
    columns = krylov_columns(k, block, d)
    steps = max(1, columns // block)
    krylov = (1 + KRYLOV_OVERHEAD) * gemm_scale * SKINNY_GEMM_S * 4 * N * d * columns
    krylov += sum(RITZ_EIG_S * (block * j) ** 3 for j in range(1, steps + 1)) + KRYLOV_STEP_S * steps
    if 2 * columns > d:  # the Krylov basis would cover most of the space: not a shortcut any more
        krylov = float("inf")
    return {"exact": exact, "gram": gram, "krylov": krylov}


def choose(m: int, n: int, k: int, oversample: int = 10, device: str = "cpu") -> str:
    """The algorithm with the smallest estimated cost (ties: the more accurate, exact > gram > krylov)."""
    est = estimates(m, n, k, oversample, device)
    return min(("exact", "gram", "krylov"), key=lambda a: est[a])


def on_accelerator(t: Any) -> bool:
    """Whether ``t`` lives on an accelerator (CUDA, MPS): the one test that switches the
    spectral code between its CPU kernels (per-matrix GEMMs, LAPACK's partial eigensolver)
    and its accelerator kernels (one batched call per batch), so tests can run the
    accelerator path on a CPU by patching it."""
    return t.device.type != "cpu"
