"""Exact thin SVD of a LoRA update ``ΔW = scale · B @ A`` from its factors."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

# LAPACK (and torch's CPU qr/svd) has no half-precision kernels.
_UPCAST = (torch.float16, torch.bfloat16)


class SVD(NamedTuple):
    """A thin SVD ``U @ diag(S) @ Vh`` with ``S`` descending and non-negative.

    Shapes: ``U (..., m, t)``, ``S (..., t)``, ``Vh (..., t, n)`` where ``t`` is the rank
    bound of the factorisation (``min(r, m, n)`` for :func:`lowrank_svd`).
    """

    U: Tensor
    S: Tensor
    Vh: Tensor


def all_finite(t: Tensor, chunk_bytes: int = 16 << 20) -> bool:
    """Whether every entry of ``t`` is finite, reading it in slices of about ``chunk_bytes``:
    ``torch.isfinite`` on the whole tensor allocates temporaries of several times its size
    (+460 MB for one 256 MB weight), which a hostile 1 GiB weight turns into gigabytes."""
    flat = t.reshape(-1)
    step = max(1, chunk_bytes // max(1, t.element_size()))
    if flat.numel() <= step:  # one slice: no generator (an adapter has hundreds of small factors)
        return bool(torch.isfinite(flat).all())
    return all(bool(torch.isfinite(flat[i:i + step]).all()) for i in range(0, flat.numel(), step))


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted dtype of ``tensors``, with fp16/bf16 raised to float32."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype in _UPCAST or not (dtype.is_floating_point or dtype.is_complex):
        return torch.float32
    return dtype


def _broadcast_shapes(*shapes: tuple[int, ...]) -> torch.Size:
    """NumPy broadcasting of batch shapes, in Python: ``torch.broadcast_shapes`` imports
    ``torch._refs`` on its first call, 0.4 s of every ``spectra audit`` process."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, start=ndim - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    raise ValueError(f"batch shapes {[tuple(s) for s in shapes]} do not broadcast")
                out[i] = size
    return torch.Size(out)


def lowrank_svd(B: Tensor, A: Tensor, scale: float | Tensor = 1.0) -> SVD:
    """Exact thin SVD of ``scale · B @ A`` without forming the dense ``m × n`` product.

    With thin QR factorisations ``B = Q_B R_B`` and ``Aᵀ = Q_A R_A`` the update is
    ``scale · Q_B (R_B R_Aᵀ) Q_Aᵀ``; the SVD of the small core ``C = scale · R_B R_Aᵀ =
    U_c S V_cᵀ`` gives ``ΔW = (Q_B U_c) S (Q_A V_c)ᵀ``. This is exact (no truncation),
    costs ``O((m + n) r² + r³)`` instead of ``O(m n min(m, n))`` for a dense SVD, and is
    the standard "QR the thin factors, SVD the small core" step of Halko, Martinsson &
    Tropp, *Finding structure with randomness* (SIAM Review 2011), §5.1.

    Parameters:
        B: LoRA ``B`` factor, ``(..., m, r)`` in ``(out_features, rank)`` orientation.
        A: LoRA ``A`` factor, ``(..., r, n)`` in ``(rank, in_features)`` orientation.
            Leading dims of ``A`` and ``B`` broadcast, so a stack of same-shape
            modules is handled in one batched call.
        scale: the PEFT scaling ``α/r`` (or ``α/√r``), a Python number or a tensor
            broadcastable to the batch shape ``(...)``. A negative scale yields the same
            ``S ≥ 0`` and ``Vh`` as ``|scale|`` with ``U`` negated.

    Returns:
        :class:`SVD` with ``U (..., m, t)``, ``S (..., t)`` descending and non-negative,
        ``Vh (..., t, n)``, ``t = min(r, m, n)`` (``t = r`` in the usual ``r ≤ min(m, n)``
        case; a larger ``r`` cannot have more than ``min(m, n)`` non-zero values).
        Computed in the promoted dtype of the inputs (fp16/bf16 are raised to float32
        because LAPACK has no half kernels); callers wanting float64 upcast first.
        Rank-deficient factors (PEFT initialises ``B = 0``) give exact zeros in ``S``
        with some orthonormal completion in ``U``/``Vh`` and never NaN.
    """
    if B.ndim < 2 or A.ndim < 2:
        raise ValueError(f"lowrank_svd needs matrices, got B {tuple(B.shape)} and A {tuple(A.shape)}")
    if B.shape[-1] != A.shape[-2]:
        raise ValueError(f"rank mismatch: B {tuple(B.shape)} vs A {tuple(A.shape)}")
    dtype = compute_dtype(B, A)
    B = B.to(dtype)
    A = A.to(dtype)
    scale_t = torch.as_tensor(scale, dtype=dtype, device=B.device)
    batch = _broadcast_shapes(B.shape[:-2], A.shape[:-2], scale_t.shape)
    B = B.expand(*batch, *B.shape[-2:])
    A = A.expand(*batch, *A.shape[-2:])

    Q_B, R_B = torch.linalg.qr(B, mode="reduced")  # (.., m, p), (.., p, r)
    Q_A, R_A = torch.linalg.qr(A.mT, mode="reduced")  # (.., n, q), (.., q, r)
    U_c, S, Vh_c = torch.linalg.svd(R_B @ R_A.mT, full_matrices=False)  # (.., p, q) core
    # scaling after the SVD keeps S ≥ 0 and puts a negative scale's sign on U, always
    scale_t = scale_t.expand(batch)
    sign = torch.where(scale_t < 0, -1.0, 1.0).to(dtype)
    return SVD(U=(Q_B @ U_c) * sign[..., None, None], S=S * scale_t.abs()[..., None], Vh=Vh_c @ Q_A.mT)


def frobenius_from_singular_values(S: Tensor) -> Tensor:
    """‖·‖_F of a matrix from its singular values (over the last dimension, so a batch works):
    scaled by the largest first, because σ ~ 1e37 squares to ∞ in float32 while the norm itself
    is finite. A zero spectrum gives 0."""
    top = S.abs().amax(dim=-1, keepdim=True) if S.shape[-1] else torch.zeros(*S.shape[:-1], 1, dtype=S.dtype)
    safe = torch.where(top > 0, top, torch.ones_like(top))
    return (top * torch.linalg.vector_norm(S / safe, dim=-1, keepdim=True)).squeeze(-1)
