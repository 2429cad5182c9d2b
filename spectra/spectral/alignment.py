"""How a LoRA update's singular directions sit relative to the base weight's top-k."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


def _unit(x: Tensor, dim: int) -> Tensor:
    # cached or half-precision vectors drift off unit norm; |cos| must stay in [0, 1]
    return x / torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def _common(*tensors: Tensor) -> list[Tensor]:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in tensors]


def alignment(
    U_pre: Tensor, Vh_pre: Tensor, U_d: Tensor, Vh_d: Tensor, j: int = 1, S_d: Tensor | None = None
) -> dict[str, Tensor]:
    """Max |cosine| between ΔW's leading singular vector(s) and W_pre's top-k ones.

    The alignment statistic of Luong & Chen (2026), Figure 2: a LoRA update whose
    leading directions fall inside the base layer's dominant subspace adjusts what the
    base already does instead of overriding it. Computed as ``max_i |⟨u_i^pre, u_1^Δ⟩|``
    over the ``k`` columns given (the same for right vectors, rows of ``Vh``); vectors are
    re-normalised first, so values are in ``[0, 1]``. Compare with
    :func:`cos_random`, the value a random direction scores.

    Parameters:
        U_pre: ``(..., m, k)`` top-k left singular vectors of ``W_pre``.
        Vh_pre: ``(..., k, n)`` top-k right singular vectors of ``W_pre`` (as rows).
        U_d: ``(..., m, r)`` left singular vectors of ``ΔW``, descending by ``σ``.
        Vh_d: ``(..., r, n)`` right singular vectors of ``ΔW``.
        j: also report the max over ΔW's top ``j`` vectors (``j > 1``), as
            ``cos_max_left_top{j}`` / ``cos_max_right_top{j}``; ``j`` is clipped to ``r``.
        S_d: optional ``(..., r)`` singular values of ``ΔW``. A zero update has no
            direction (its SVD returns an arbitrary basis), so where ``S_d[..., 0] == 0``
            every value is reported as 0.

    Returns:
        ``{"cos_max_left", "cos_max_right"}`` (plus the ``_top{j}`` keys), each of the
        batch shape ``(...)``.
    """
    if j < 1:
        raise ValueError(f"j must be ≥ 1, got {j}")
    U_pre, Vh_pre, U_d, Vh_d = _common(U_pre, Vh_pre, U_d, Vh_d)
    j_eff = min(j, U_d.shape[-1])
    # (..., k, j): cosines of every base vector with each of ΔW's leading j vectors
    cos_l = (_unit(U_pre, -2).mT @ _unit(U_d[..., :j_eff], -2)).abs()
    cos_r = (_unit(Vh_pre, -1) @ _unit(Vh_d[..., :j_eff, :], -1).mT).abs()
    out = {
        "cos_max_left": cos_l[..., 0].amax(dim=-1),
        "cos_max_right": cos_r[..., 0].amax(dim=-1),
    }
    if j > 1:
        out[f"cos_max_left_top{j}"] = cos_l.flatten(-2).amax(dim=-1)
        out[f"cos_max_right_top{j}"] = cos_r.flatten(-2).amax(dim=-1)
    if S_d is not None:
        live = S_d[..., 0] > 0
        out = {key: torch.where(live, v, torch.zeros_like(v)) for key, v in out.items()}
    return out


def subspace_overlap(U_pre: Tensor, Vh_pre: Tensor, U_d: Tensor, S_d: Tensor, Vh_d: Tensor) -> dict[str, Tensor]:
    """Share of ΔW's Frobenius energy inside W_pre's top-k left / right subspaces.

    ``overlap_left = ‖U_kᵀ ΔW‖²_F / ‖ΔW‖²_F`` and ``overlap_right = ‖ΔW V_k‖²_F / ‖ΔW‖²_F``,
    the normalised form of the quantity RoRA's ``Tr`` penalty
    ``λ(‖U_kᵀ B‖²_F + ‖A V_k‖²_F)`` drives to zero (Luong & Chen 2026). From the thin SVD
    ``ΔW = U_d diag(S_d) Vh_d`` (orthonormal ``U_d``, ``Vh_d``):
    ``‖U_kᵀ ΔW‖²_F = Σ_j S_j² ‖U_kᵀ u_j‖²``, so nothing dense is formed.

    Parameters:
        U_pre: ``(..., m, k)`` orthonormal top-k left singular vectors of ``W_pre``.
        Vh_pre: ``(..., k, n)`` orthonormal top-k right singular vectors of ``W_pre``.
        U_d, S_d, Vh_d: ``ΔW``'s thin SVD, ``(..., m, r)``, ``(..., r)``, ``(..., r, n)``
            (e.g. from :func:`~spectra.spectral.lowrank_svd`).

    Returns:
        ``{"overlap_left", "overlap_right", "overlap"}`` (the last is their mean), each of
        batch shape ``(...)`` in ``[0, 1]``; 0 where ``ΔW = 0``.
    """
    U_pre, Vh_pre, U_d, S_d, Vh_d = _common(U_pre, Vh_pre, U_d, S_d, Vh_d)
    # the shares are scale-free: divide by the largest σ first, so that an update near float32's
    # top (σ ~ 1e37) does not square to ∞ and turn every share into NaN
    top = S_d.abs().amax(dim=-1, keepdim=True)
    energy = (S_d / torch.where(top > 0, top, torch.ones_like(top))).square()  # (..., r)
    total = energy.sum(dim=-1)
    left = ((U_pre.mT @ U_d).square().sum(dim=-2) * energy).sum(dim=-1)
    right = ((Vh_pre @ Vh_d.mT).square().sum(dim=-2) * energy).sum(dim=-1)
    live = total > 0
    safe = torch.where(live, total, torch.ones_like(total))
    # clamp: rounding can push a fully contained update a hair above 1
    ol = torch.where(live, left / safe, torch.zeros_like(total)).clamp(0.0, 1.0)
    orr = torch.where(live, right / safe, torch.zeros_like(total)).clamp(0.0, 1.0)
    return {"overlap_left": ol, "overlap_right": orr, "overlap": (ol + orr) / 2}


def alignment_and_overlap(U_pre: Tensor, Vh_pre: Tensor, U_d: Tensor, S_d: Tensor, Vh_d: Tensor) -> dict[str, Tensor]:
    """:func:`alignment` (``j = 1``) and :func:`subspace_overlap` from one projection per side.

    Both statistics read the same ``k × r`` products ``U_preᵀ U_d`` and ``Vh_pre Vh_dᵀ``; a
    fleet audit computes them once instead of twice, and skips re-normalising the base's
    vectors, which the caller must pass unit-norm (the fleet caches them so, per module group).
    Only ``ΔW``'s leading vectors are re-normalised for the cosines, as :func:`alignment` does.
    Same shapes and keys as the two functions together (``tests/test_spectral.py`` compares).
    """
    U_pre, Vh_pre, U_d, S_d, Vh_d = _common(U_pre, Vh_pre, U_d, S_d, Vh_d)
    tiny = torch.finfo(U_d.dtype).tiny
    u_norm = torch.linalg.vector_norm(U_d[..., :, 0], dim=-1).clamp_min(tiny)
    v_norm = torch.linalg.vector_norm(Vh_d[..., 0, :], dim=-1).clamp_min(tiny)
    return statistics_from_projections(U_pre.mT @ U_d, Vh_pre @ Vh_d.mT, S_d, u_norm, v_norm)


def statistics_from_projections(left: Tensor, right: Tensor, S_d: Tensor, u_norm: Tensor | float = 1.0,
                                v_norm: Tensor | float = 1.0) -> dict[str, Tensor]:
    """:func:`alignment_and_overlap` from its projections ``left = U_preᵀ U_d`` and
    ``right = Vh_pre Vh_dᵀ`` (each ``(..., k, r)``, unit-norm base vectors) and ΔW's singular
    values, however they were computed (:func:`spectra.spectral.projected.projected_statistics`
    never forms ``U_d``). ``u_norm``/``v_norm``: the norms of ΔW's leading vectors (1 when
    they are orthonormal by construction)."""
    energy = S_d.square()
    total = energy.sum(dim=-1)
    live_cos = S_d[..., 0] > 0
    live = total > 0
    safe = torch.where(live, total, torch.ones_like(total))
    zero = torch.zeros_like(total)
    ol = torch.where(live, (left.square().sum(dim=-2) * energy).sum(dim=-1) / safe, zero).clamp(0.0, 1.0)
    orr = torch.where(live, (right.square().sum(dim=-2) * energy).sum(dim=-1) / safe, zero).clamp(0.0, 1.0)
    return {"cos_max_left": torch.where(live_cos, left[..., 0].abs().amax(dim=-1) / u_norm, zero),
            "cos_max_right": torch.where(live_cos, right[..., 0].abs().amax(dim=-1) / v_norm, zero),
            "overlap_left": ol, "overlap_right": orr, "overlap": (ol + orr) / 2}


@lru_cache(maxsize=256)
def cos_random(dim: int, k: int, samples: int = 4096, seed: int = 0) -> float:
    """Expected max |cos| of a uniformly random unit vector against ``k`` orthonormal ones.

    The chance level for :func:`alignment`: by rotational invariance the ``k`` fixed
    vectors can be taken as the first ``k`` coordinate axes, so the statistic is
    ``E[max_{i≤k} |x_i| / ‖x‖]`` for Gaussian ``x ∈ R^dim``. Estimated by seeded Monte
    Carlo in float64 (the per-sample spread is ≈ 0.02 at ``dim=384, k=32``, so the
    standard error at the default 4096 samples is ≈ 4e-4), e.g. ≈ 0.12 for
    ``dim=384, k=32``. The other ``dim − k`` coordinates only enter through their squared
    norm, a ``χ²_{dim−k}`` variable: drawn exactly for ``dim − k ≤ 1024`` and by the
    Wilson–Hilferty cube-root normal transform above that (relative error of order
    ``(dim−k)^{-3/2}``, far below the Monte Carlo error), so the cost is ``O(samples·k)``.

    Parameters:
        dim: ambient dimension (the side of ``W_pre`` the vectors live on).
        k: number of orthonormal reference vectors (the audit's top-k); clipped to ``dim``.
        samples: Monte Carlo sample count.
        seed: generator seed; the result is a deterministic function of the arguments.

    Returns:
        The estimate as a Python float. With ``k ≥ dim`` the vectors are a basis of the whole
        space and the statistic is the largest coordinate of a random unit vector, not 1
        (≈ 0.90 for ``dim = 2``: a 2-way classifier head's left side).
    """
    if dim < 1 or k < 1 or samples < 1:
        raise ValueError(f"cos_random needs dim, k, samples ≥ 1, got {dim}, {k}, {samples}")
    k = min(k, dim)
    if k == 1 and dim == 1:
        return 1.0
    gen = torch.Generator().manual_seed(seed)
    nu = dim - k
    head = torch.randn(samples, k, generator=gen, dtype=torch.float64)
    if nu <= 1024:
        rest = torch.randn(samples, nu, generator=gen, dtype=torch.float64).square().sum(dim=-1)
    else:
        z = torch.randn(samples, generator=gen, dtype=torch.float64)
        c = 2.0 / (9.0 * nu)
        rest = nu * (1.0 - c + z * c**0.5).clamp_min(0).pow(3)
    norm = (head.square().sum(dim=-1) + rest).sqrt()
    return float((head.abs().amax(dim=-1) / norm).mean())
