"""ΔW's singular values, alignment and overlap against W_pre's top-k, without ΔW's singular vectors.

:func:`~spectra.spectral.lowrank_svd` forms ``U_d = Q_B U_c`` (m × r) and ``Vh_d`` (r × n) from
thin QRs of the factors, one LAPACK call per matrix. The audit's statistics only need ΔW's
singular values and the ``k × r`` projections ``U_preᵀ U_d`` and ``Vh_pre Vh_dᵀ``, and those
follow from r × r matrices: with the Cholesky factors of the Gram matrices, ``BᵀB = L_B L_Bᵀ``
and ``AAᵀ = L_A L_Aᵀ``, the thin QRs are ``B = Q_B L_Bᵀ`` and ``Aᵀ = Q_A L_Aᵀ``, so

- ``s·B·A = Q_B (s·L_Bᵀ L_A) Q_Aᵀ``: the SVD ``U_c S V_cᵀ`` of the r × r core gives ΔW's ``S``;
- ``U_preᵀ U_d = (U_preᵀ B) · L_B⁻ᵀ U_c`` and ``Vh_pre Vh_dᵀ = (Vh_pre Aᵀ) · L_A⁻ᵀ V_c``.

The only products over m or n are ``BᵀB``, ``AAᵀ``, ``U_preᵀB`` and ``Vh_pre Aᵀ`` (batched GEMMs);
everything r × r runs in float64, so the result matches the QR path to float32 rounding for
any factor whose Cholesky Q is orthonormal. A rank-deficient factor (PEFT initialises B = 0) has
no Cholesky factor, and a nearly dependent one loses orthogonality: ``ok`` is False for both, and
the caller takes the QR path there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectra.spectral.alignment import statistics_from_projections


def projected_statistics(B: Tensor, A: Tensor, scale: Tensor, U_pre: Tensor, Vh_pre: Tensor
                         ) -> tuple[dict[str, Tensor], Tensor]:
    """``(stats, ok)`` for a batch of LoRA updates ``scale · B @ A`` (``B (N, m, r)``,
    ``A (N, r, n)``, ``scale (N,)``) against unit-norm ``U_pre (N, m, k)``, ``Vh_pre (N, k, n)``.

    ``stats``: ``S`` (N, r) descending, and :func:`statistics_from_projections`' keys
    (``cos_max_left`` … ``overlap``), in float64; ``ok`` (N,) is False where a Gram matrix has
    no Cholesky factor (a rank-deficient factor) or its Q is not orthonormal to
    :data:`ORTHOGONALITY_TOL` (a nearly dependent one): those rows are not valid.
    """
    f64 = torch.float64
    B64, A64 = B.to(f64), A.to(f64)
    eye = torch.eye(B.shape[-1], dtype=f64, device=B.device)
    L_B, ok_b = _cholesky_q(B64.mT @ B64, eye)
    L_A, ok_a = _cholesky_q(A64 @ A64.mT, eye)
    ok = ok_b & ok_a
    U_c, S, Vh_c = torch.linalg.svd(scale.to(f64).abs()[:, None, None] * (L_B.mT @ L_A))
    x_b = torch.linalg.solve_triangular(L_B.mT, U_c, upper=True)  # L_B⁻ᵀ U_c
    x_a = torch.linalg.solve_triangular(L_A.mT, Vh_c.mT, upper=True)  # L_A⁻ᵀ V_c
    left = (U_pre.mT @ B).to(f64) @ x_b
    right = (Vh_pre @ A.mT).to(f64) @ x_a
    return {"S": S, **statistics_from_projections(left, right, S)}, ok


#: how far ``QᵀQ`` may be from the identity (largest entry) for a Cholesky QR to be used
ORTHOGONALITY_TOL = 1e-8


def _cholesky_q(gram: Tensor, eye: Tensor) -> tuple[Tensor, Tensor]:
    """The Cholesky factor ``L`` of each Gram matrix (the identity where there is none) and
    whether ``Q = X L⁻ᵀ`` is orthonormal to :data:`ORTHOGONALITY_TOL`: ``QᵀQ = L⁻¹ G L⁻ᵀ`` is
    checked in r × r. A nearly dependent factor passes the factorisation with a tiny pivot and
    then loses orthogonality (Cholesky QR's known failure); the check sends it to the QR path,
    so a crafted factor cannot bend the cosines or overlaps."""
    L, info = torch.linalg.cholesky_ex(gram)
    ok = info == 0
    L = torch.where(ok[:, None, None], L, eye)  # keep the batch's algebra finite where it failed
    left = torch.linalg.solve_triangular(L, gram, upper=False)  # L⁻¹ G
    qtq = torch.linalg.solve_triangular(L, left.mT, upper=False)  # L⁻¹ (L⁻¹ G)ᵀ = L⁻¹ G L⁻ᵀ
    ok &= (qtq - eye).abs().amax(dim=(-2, -1)) <= ORTHOGONALITY_TOL
    return L, ok

