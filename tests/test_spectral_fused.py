"""The fleet's fused statistics: alignment and overlap from shared projections, and from r × r
algebra (no singular vectors), against the module-by-module definitions."""

from __future__ import annotations

import torch

from spectra.spectral import alignment, alignment_and_overlap, lowrank_svd, projected_statistics, subspace_overlap

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def base_basis():  # noqa: ANN201 - (U, V, k): orthonormal bases of a 50 x 60 weight and k = 5
    W = torch.randn(50, 60, generator=gen(7), dtype=F64)
    U, _, Vh = torch.linalg.svd(W, full_matrices=False)
    return U, Vh.T, 5


def test_the_fused_statistics_equal_alignment_and_overlap_computed_apart():
    U, V, k = base_basis()
    B = torch.randn(3, 50, 4, generator=gen(15), dtype=F64)
    A = torch.randn(3, 4, 60, generator=gen(16), dtype=F64)
    B[2] = 0  # a zero update: no direction, no energy
    d = lowrank_svd(B, A, torch.tensor([1.0, -2.0, 1.0], dtype=F64))
    U_pre, Vh_pre = U[:, :k].expand(3, -1, -1), V[:, :k].T.expand(3, -1, -1)
    fused = alignment_and_overlap(U_pre, Vh_pre, d.U, d.S, d.Vh)
    apart = {**alignment(U_pre, Vh_pre, d.U, d.Vh, S_d=d.S), **subspace_overlap(U_pre, Vh_pre, d.U, d.S, d.Vh)}
    assert set(fused) == set(apart)
    for key in apart:
        torch.testing.assert_close(fused[key], apart[key])
    assert fused["cos_max_left"][2] == 0 and fused["overlap"][2] == 0
    assert 0 < float(fused["cos_max_left"][0]) < 1  # a real value, not a degenerate 0 or 1


def test_the_projected_statistics_match_the_qr_path_and_flag_a_rank_deficient_factor():
    """ΔW's singular values, cosines and overlaps from r × r algebra (no singular vectors) equal
    the QR path's; a zero B (PEFT's initialisation) has no Cholesky factor and is flagged."""
    g = gen(21)
    B = torch.randn(5, 60, 4, generator=g, dtype=F64)
    A = torch.randn(5, 4, 50, generator=g, dtype=F64)
    B[3] = 0
    B[4, :, 3] = B[4, :, 2] + 1e-9 * B[4, :, 1]  # nearly dependent: Cholesky succeeds, Q is not orthonormal
    scale = torch.tensor([2.0, -1.0, 0.5, 1.0, 1.0], dtype=F64)
    U = torch.linalg.qr(torch.randn(5, 60, 6, generator=g, dtype=F64))[0]
    Vh = torch.linalg.qr(torch.randn(5, 50, 6, generator=g, dtype=F64))[0].mT
    got, ok = projected_statistics(B, A, scale, U, Vh)
    assert ok.tolist() == [True, True, True, False, False]
    svd = lowrank_svd(B, A, scale)
    want = alignment_and_overlap(U, Vh, svd.U, svd.S, svd.Vh)
    torch.testing.assert_close(got["S"][:3], svd.S[:3])
    for key, value in want.items():
        torch.testing.assert_close(got[key][:3], value[:3])
    assert 0 < float(got["overlap"][0]) < 1 and 0 < float(got["cos_max_left"][1]) < 1
