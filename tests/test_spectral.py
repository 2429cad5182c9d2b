"""spectra.spectral against dense references on matrices with known spectra."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.errors import SpectraError
from spectra.spectral import (
    alignment,
    cos_random,
    lowrank_svd,
    subspace_overlap,
    top_singular,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, k, generator=gen(seed), dtype=F64)).Q


def with_spectrum(m: int, n: int, sigma: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """W = Q1 diag(σ) Q2ᵀ with random orthonormal Q1, Q2; returns W, Q1, σ, Q2."""
    Q1, Q2 = orthonormal(m, len(sigma), seed), orthonormal(n, len(sigma), seed + 1000)
    return (Q1 * sigma) @ Q2.T, Q1, sigma, Q2


def flat_tail(p: int, k: int) -> torch.Tensor:
    """Power-law head for the top k, then a nearly flat tail starting just below σ_k."""
    i = torch.arange(p, dtype=F64)
    head = (i[:k] + 1) ** -0.5
    tail = head[-1] * 0.97 * (1 - 1e-4 * (i[k:] - k))
    return torch.cat([head, tail])


def vec_err(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """max over vectors of 1 − |cos| (sign-free)."""
    return (1 - (a * b).sum(dim).abs()).max()


# ---------------------------------------------------------------- lowrank_svd


@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_lowrank_svd_matches_dense_svd(batch):
    m, n, r = 40, 30, 5
    B = torch.randn(*batch, m, r, generator=gen(1), dtype=F64)
    A = torch.randn(*batch, r, n, generator=gen(2), dtype=F64)
    scale = torch.linspace(-2.0, 3.0, math.prod(batch)).reshape(batch).to(F64) if batch else 0.7
    res = lowrank_svd(B, A, scale)
    dense = torch.as_tensor(scale, dtype=F64)[..., None, None] * (B @ A)
    U, S, Vh = torch.linalg.svd(dense, full_matrices=False)
    assert res.U.shape == (*batch, m, r) and res.S.shape == (*batch, r) and res.Vh.shape == (*batch, r, n)
    torch.testing.assert_close(res.S, S[..., :r], rtol=1e-10, atol=1e-12)
    assert (res.S >= 0).all() and (res.S[..., :-1] >= res.S[..., 1:]).all()
    torch.testing.assert_close(res.U @ torch.diag_embed(res.S) @ res.Vh, dense, rtol=0, atol=1e-11)
    assert vec_err(res.U, U[..., :r], -2) < 1e-10
    assert vec_err(res.Vh, Vh[..., :r, :], -1) < 1e-10


def test_lowrank_svd_negative_scale_keeps_sigma_positive_and_flips_u():
    B = torch.randn(20, 3, generator=gen(3), dtype=F64)
    A = torch.randn(3, 25, generator=gen(4), dtype=F64)
    pos, neg = lowrank_svd(B, A, 2.0), lowrank_svd(B, A, -2.0)
    torch.testing.assert_close(neg.S, pos.S)
    torch.testing.assert_close(neg.U, -pos.U)
    torch.testing.assert_close(neg.Vh, pos.Vh)
    torch.testing.assert_close(neg.U @ torch.diag(neg.S) @ neg.Vh, -2.0 * B @ A)
    assert torch.equal(lowrank_svd(B, A, 0.0).S, torch.zeros(3, dtype=F64))


def test_lowrank_svd_zero_b_is_exact_zero_without_nan():
    B = torch.zeros(2, 16, 4, dtype=torch.float32)  # PEFT's default init
    A = torch.randn(2, 4, 12, generator=gen(5))
    res = lowrank_svd(B, A, 2.0)
    assert torch.equal(res.S, torch.zeros(2, 4))
    assert torch.isfinite(res.U).all() and torch.isfinite(res.Vh).all()
    # still an orthonormal basis, so downstream cosines stay in [0, 1]
    torch.testing.assert_close(res.U.mT @ res.U, torch.eye(4).expand(2, 4, 4), atol=1e-6, rtol=0)


def test_lowrank_svd_rank_larger_than_matrix():
    B = torch.randn(6, 10, generator=gen(6), dtype=F64)
    A = torch.randn(10, 8, generator=gen(7), dtype=F64)
    res = lowrank_svd(B, A)
    assert res.U.shape == (6, 6) and res.S.shape == (6,) and res.Vh.shape == (6, 8)
    torch.testing.assert_close(res.U @ torch.diag(res.S) @ res.Vh, B @ A, atol=1e-11, rtol=0)
    torch.testing.assert_close(res.S, torch.linalg.svdvals(B @ A), atol=1e-11, rtol=0)


def test_lowrank_svd_half_inputs_are_upcast():
    res = lowrank_svd(torch.randn(8, 2).half(), torch.randn(2, 9).bfloat16())
    assert res.S.dtype == torch.float32


# ---------------------------------------------------------------- top_singular

STRICT = dict(tol=1e-11, angle_tol=1e-8, min_dim_randomized=0)


@pytest.mark.parametrize("shape", [(180, 260), (260, 180)])
@pytest.mark.parametrize("spectrum", ["power", "flat_tail"])
def test_top_singular_recovers_known_spectrum_float64(shape, spectrum):
    m, n = shape
    k, p = 12, min(shape)
    i = torch.arange(p, dtype=F64)
    sigma = (i + 1) ** -0.5 if spectrum == "power" else flat_tail(p, k)
    W, Q1, sigma, Q2 = with_spectrum(m, n, sigma)
    res = top_singular(W, k, **STRICT)
    assert res.method == "randomized", res.method
    assert bool(res.certified) and float(res.residual) < 1e-11
    torch.testing.assert_close(res.S, sigma[:k], rtol=1e-6, atol=0)
    # signs are normalised, so compare vectors up to sign without relying on it
    assert vec_err(res.U, Q1[:, :k], 0) < 1e-6
    assert vec_err(res.Vh, Q2[:, :k].T, 1) < 1e-6


def test_top_singular_default_tolerances_float32_batched():
    k = 16
    Ws = [with_spectrum(300, 520, flat_tail(300, k), seed=s)[0] for s in range(3)]
    W = torch.stack(Ws).reshape(3, 1, 300, 520).float()
    res = top_singular(W, k, min_dim_randomized=0)
    ref = top_singular(W, k, exact=True)
    assert res.U.shape == (3, 1, 300, k) and res.S.shape == (3, 1, k) and res.Vh.shape == (3, 1, k, 520)
    assert res.certified.shape == (3, 1) and res.certified.all(), res.method
    assert ((res.S[..., 0] - ref.S[..., 0]).abs() / ref.S[..., 0]).max() < 1e-4
    assert vec_err(res.U, ref.U, -2) < 1e-3 and vec_err(res.Vh, ref.Vh, -1) < 1e-3
    assert res.residual.max() < 1e-4


def test_top_singular_falls_back_to_exact_when_certificate_fails():
    k = 10
    W = with_spectrum(200, 240, flat_tail(200, k))[0]
    res = top_singular(W, k, n_iter=1, oversample=1, **STRICT)
    ref = top_singular(W, k, exact=True)
    assert res.method == "randomized+exact-fallback(1/1)"
    assert not bool(res.certified)
    torch.testing.assert_close(res.S, ref.S, rtol=1e-12, atol=0)
    assert vec_err(res.U, ref.U, 0) < 1e-12 and vec_err(res.Vh, ref.Vh, 1) < 1e-12


def test_certificate_flags_only_the_elements_that_need_it():
    k = 8
    easy = with_spectrum(150, 200, flat_tail(150, k), seed=1)[0]
    sigma = flat_tail(150, k).clone()
    sigma[4] = sigma[3]  # a repeated singular value: u_4, u_5 are not individually defined
    hard = with_spectrum(150, 200, sigma, seed=2)[0]
    res = top_singular(torch.stack([easy, hard, easy]), k, **STRICT)
    assert res.certified.tolist() == [True, False, True]
    assert res.method == "randomized+exact-fallback(1/3)"
    ref = top_singular(hard, k, exact=True)
    torch.testing.assert_close(res.S[1], ref.S, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n_iter", [1, 2, 3, 4, 6])
def test_certified_means_accurate(n_iter):
    """Whatever the iteration budget, an element flagged certified meets the promise."""
    k = 8
    tol, angle_tol = 1e-4, 0.03
    W = torch.stack([with_spectrum(160, 220, flat_tail(160, k), seed=s)[0] for s in range(4)])
    res = top_singular(W, k, n_iter=n_iter, tol=tol, angle_tol=angle_tol, min_dim_randomized=0)
    ref = top_singular(W, k, exact=True)
    ok = res.certified
    if ok.any():
        s_err = ((res.S[ok] - ref.S[ok]).abs() / ref.S[ok][:, :1]).max()
        assert s_err <= tol
        cos_bound = 1 - math.sqrt(1 - angle_tol**2)
        assert vec_err(res.U[ok], ref.U[ok], -2) <= cos_bound
        assert vec_err(res.Vh[ok], ref.Vh[ok], -1) <= cos_bound
    if not ok.all():
        assert "fallback" in res.method
        torch.testing.assert_close(res.S[~ok], ref.S[~ok], rtol=1e-12, atol=0)


@pytest.mark.parametrize("n_iter", [3, 4, 5, 6])
def test_certified_elements_meet_the_documented_gap_condition(n_iter):
    """certified ⇒ r_i ≤ tol·σ_1 and r_i ≤ angle_tol·δ_i with the TRUE gaps δ_i (Wedin's
    hypothesis), here with a close pair σ_7 − σ_8 = 1e-4 at the slow end of the top-k."""
    k, tol, angle_tol = 8, 1e-4, 0.03
    sigma = flat_tail(160, k).clone()
    sigma[6] = sigma[7] + 1e-4
    W = torch.stack([with_spectrum(160, 220, sigma, seed=s)[0] for s in range(4)])
    res = top_singular(W, k, n_iter=n_iter, tol=tol, angle_tol=angle_tol, min_dim_randomized=0)
    true = torch.linalg.svdvals(W)
    for b in res.certified.nonzero().flatten().tolist():
        U, S, Vh = res.U[b], res.S[b], res.Vh[b]
        r = torch.sqrt((W[b] @ Vh.T - U * S).square().sum(0) + (W[b].T @ U - Vh.T * S).square().sum(0))
        dist = (S[:, None] - true[b][None, :]).abs()
        dist[torch.arange(k), torch.arange(k)] = float("inf")
        delta = dist.amin(dim=1)
        assert (r <= tol * S[0]).all()
        assert (r <= angle_tol * delta).all(), (r / delta).max()


def test_signs_are_normalised_so_methods_agree_without_abs():
    W = with_spectrum(150, 190, flat_tail(150, 6), seed=4)[0]
    res = top_singular(W, 6, **STRICT)
    ref = top_singular(W, 6, exact=True)
    idx = res.U.abs().argmax(dim=0)
    assert (res.U[idx, torch.arange(6)] > 0).all()
    torch.testing.assert_close(res.U, ref.U, atol=1e-8, rtol=0)
    torch.testing.assert_close(res.Vh, ref.Vh, atol=1e-8, rtol=0)


def test_top_singular_is_deterministic_and_seeded():
    W = with_spectrum(120, 150, flat_tail(120, 6))[0]
    a = top_singular(W, 6, n_iter=2, tol=1.0, angle_tol=1e9, min_dim_randomized=0)
    b = top_singular(W, 6, n_iter=2, tol=1.0, angle_tol=1e9, min_dim_randomized=0)
    c = top_singular(W, 6, n_iter=2, tol=1.0, angle_tol=1e9, min_dim_randomized=0, generator=gen(99))
    assert a.method == "randomized"
    assert torch.equal(a.U, b.U) and torch.equal(a.S, b.S)
    assert not torch.equal(a.S, c.S)  # a two-step Krylov estimate depends on the start


def test_top_singular_exact_mode_and_small_matrices():
    W = torch.randn(40, 30, generator=gen(8), dtype=F64)
    res = top_singular(W, 5, exact=True)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    assert res.method == "exact" and not res.certified.any()
    torch.testing.assert_close(res.S, S[:5])
    torch.testing.assert_close(res.U @ torch.diag(res.S) @ res.Vh, U[:, :5] @ torch.diag(S[:5]) @ Vh[:5])
    auto = top_singular(W, 5)  # the cost model's pick for a tiny matrix: certified, same numbers
    assert auto.method in ("gram", "exact")
    torch.testing.assert_close(auto.S, S[:5])
    assert vec_err(auto.U, U[:, :5], 0) < 1e-10


@pytest.mark.parametrize("shape", [(90, 250), (250, 90), (120, 120)])
def test_gram_path_matches_the_exact_svd_and_is_certified(shape):
    m, n = shape
    sigma = torch.arange(1, min(m, n) + 1, dtype=F64).pow(-0.5)
    W, Q1, s, Q2 = with_spectrum(m, n, sigma, seed=3)
    res = top_singular(W, 12, method="gram")
    assert res.method == "gram" and res.certified.all()
    torch.testing.assert_close(res.S, s[:12], rtol=1e-12, atol=0)
    assert vec_err(res.U, Q1[:, :12], 0) < 1e-12 and vec_err(res.Vh, Q2[:, :12].T, 1) < 1e-12
    assert float(res.residual.max()) < 1e-12
    f32 = top_singular(W.float(), 12, method="gram")  # in float32: within the audit's tolerances
    assert f32.certified.all() and float(((f32.S.double() - s[:12]) / s[:12]).abs().max()) < 1e-5


@pytest.mark.parametrize("method", ["gram", "krylov"])
def test_a_flat_spectrum_at_k_cannot_be_certified_and_falls_back(method):
    """σ_k = σ_{k+1}: the k-th vector is not defined, so no residual can certify it; the
    element goes to the exact SVD and the result says so."""
    k = 8
    sigma = torch.cat([torch.linspace(2.0, 1.2, k - 1, dtype=F64), torch.full((5,), 1.0, dtype=F64),
                       torch.linspace(0.5, 0.1, 40, dtype=F64)])
    W = with_spectrum(150, 130, sigma, seed=5)[0]
    res = top_singular(W, k, method=method)
    assert res.method.startswith({"gram": "gram", "krylov": "randomized"}[method])
    assert "fallback(1/1)" in res.method and not res.certified.any()
    torch.testing.assert_close(res.S, sigma[:k], rtol=1e-10, atol=1e-10)
    clear = top_singular(with_spectrum(150, 130, torch.linspace(2.0, 0.1, 60, dtype=F64), seed=5)[0], k,
                         method=method)
    assert clear.certified.all() and "fallback" not in clear.method


def test_the_cost_model_picks_gram_for_narrow_and_krylov_for_wide_matrices():
    from spectra.spectral import cost

    assert cost.choose(576, 1536, 32) == "gram" and cost.choose(1536, 576, 32) == "gram"
    assert cost.choose(5632, 2048, 32) == "krylov" and cost.choose(4096, 14336, 32) == "krylov"
    for m, n in ((64, 64), (576, 576), (2048, 2048), (5632, 2048), (4096, 14336)):
        est = cost.estimates(m, n, 32)
        assert min(est["gram"], est["krylov"]) < est["exact"]  # never the slowest choice


def test_a_cpu_krylov_block_narrower_than_k_certifies_with_fewer_columns(monkeypatch):
    """On a CPU the block is about k/4 (16 for the top 32): block Lanczos then needs a
    smaller basis than with the classical k + oversample block, and the certificate still
    holds every triplet to the exact SVD."""
    from spectra.spectral import cost

    assert cost.krylov_block(32, 10, 2048) == 16 and cost.krylov_block(128, 10, 2048) == 32
    assert cost.krylov_block(32, 10, 2048, "cuda") == 48 and cost.krylov_block(32, 10, 12) == 12
    k, m, n = 32, 700, 1400
    sigma = (torch.arange(1, m + 1, dtype=F64) + 0.2 * torch.rand(m, generator=gen(4), dtype=F64)).pow(-0.5)
    W = with_spectrum(m, n, sigma, seed=6)[0].float()
    narrow = top_singular(W, k, method="krylov")
    assert narrow.method == "randomized" and bool(narrow.certified)
    torch.testing.assert_close(narrow.S.double(), sigma[:k], rtol=1e-5, atol=0)
    monkeypatch.setattr(cost, "krylov_block", lambda k, oversample, d, device="cpu": 48)
    wide = top_singular(W, k, method="krylov")
    assert wide.method == "randomized" and bool(wide.certified)
    assert narrow.gflop < 0.8 * wide.gflop, (narrow.gflop, wide.gflop)


@pytest.mark.parametrize("W", [torch.zeros(100, 120, dtype=F64), None])
def test_top_singular_degenerate_matrices_do_not_nan(W):
    if W is None:  # rank 3 < k
        W = with_spectrum(100, 120, torch.tensor([3.0, 2.0, 1.0], dtype=F64))[0]
    res = top_singular(W, 6, min_dim_randomized=0)
    assert "fallback" in res.method
    assert torch.isfinite(res.U).all() and torch.isfinite(res.S).all() and torch.isfinite(res.residual).all()
    torch.testing.assert_close(res.S, torch.linalg.svdvals(W)[:6], atol=1e-12, rtol=1e-10)


def test_a_hopeless_element_does_not_hold_the_batch(monkeypatch):
    import spectra.spectral.topk as topk

    sizes: list[int] = []
    real = topk._ritz
    monkeypatch.setattr(topk, "_ritz", lambda T, c: sizes.append(T.shape[-1]) or real(T, c))
    easy = with_spectrum(150, 200, flat_tail(150, 8), seed=1)[0]
    top_singular(easy, 8, min_dim_randomized=0)
    alone = list(sizes)
    sizes.clear()
    res = top_singular(torch.stack([easy, torch.zeros_like(easy)]), 8, min_dim_randomized=0)
    assert res.certified.tolist() == [True, False]
    assert sizes == alone  # the zero matrix is given up at once, not iterated to n_iter


def test_top_singular_upcasts_half():
    res = top_singular(torch.randn(30, 40, generator=gen(9)).half(), 4)
    assert res.S.dtype == torch.float32


def test_top_singular_rejects_non_finite():
    W = torch.randn(30, 40)
    W[3, 4] = float("nan")
    with pytest.raises(SpectraError, match="NaN or Inf"):
        top_singular(W, 4)


@pytest.mark.parametrize("k", [0, 31, 100])
def test_top_singular_rejects_bad_k(k):
    with pytest.raises(SpectraError, match="top .* singular vectors of a 30×40 matrix"):
        top_singular(torch.randn(30, 40), k)


# ---------------------------------------------------------------- alignment / overlap


def base_basis(m: int = 50, n: int = 60, k: int = 6):
    U = orthonormal(m, m, 11)  # full basis: first k columns are W_pre's top-k
    V = orthonormal(n, n, 12)
    return U, V, k


def test_alignment_leading_vector_equal_to_third_base_vector():
    U, V, k = base_basis()
    U_d = torch.stack([U[:, 2], U[:, k + 1]], dim=1)  # ΔW's u_1 is W_pre's u_3
    Vh_d = torch.stack([V[:, k + 3], V[:, 0]], dim=0)  # ΔW's v_1 is outside, v_2 inside
    out = alignment(U[:, :k], V[:, :k].T, U_d, Vh_d, j=2)
    torch.testing.assert_close(out["cos_max_left"], torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(out["cos_max_right"], torch.tensor(0.0, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out["cos_max_right_top2"], torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(out["cos_max_left_top2"], torch.tensor(1.0, dtype=F64))


def test_alignment_known_angle_batched_and_zero_update():
    U, V, k = base_basis()
    c = 0.6
    u = c * U[:, 1] + math.sqrt(1 - c**2) * U[:, k + 2]  # cos 0.6 with u_2, 0 with the others
    U_d = torch.stack([u[:, None], U[:, k:k + 1]])  # batch of two
    Vh_d = torch.stack([V[:, :1].T, V[:, :1].T])
    out = alignment(U[:, :k].expand(2, -1, -1), V[:, :k].T.expand(2, -1, -1), U_d, Vh_d,
                    S_d=torch.tensor([[1.0], [0.0]], dtype=F64))
    torch.testing.assert_close(out["cos_max_left"], torch.tensor([c, 0.0], dtype=F64))
    torch.testing.assert_close(out["cos_max_right"], torch.tensor([1.0, 0.0], dtype=F64))
    assert set(out) == {"cos_max_left", "cos_max_right"}


def test_overlap_inside_orthogonal_and_half():
    U, V, k = base_basis()
    Uk, Vhk = U[:, :k], V[:, :k].T
    S = torch.tensor([2.0, 1.0], dtype=F64)
    inside = subspace_overlap(Uk, Vhk, U[:, [0, 3]], S, V[:, [1, 2]].T)
    outside = subspace_overlap(Uk, Vhk, U[:, [k, k + 1]], S, V[:, [k, k + 5]].T)
    # left: σ=2 direction inside, σ=1 outside → 4/5; right: the reverse → 1/5
    mixed = subspace_overlap(Uk, Vhk, U[:, [0, k]], S, V[:, [k, 0]].T)
    for key in ("overlap_left", "overlap_right", "overlap"):
        torch.testing.assert_close(inside[key], torch.tensor(1.0, dtype=F64))
        torch.testing.assert_close(outside[key], torch.tensor(0.0, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(mixed["overlap_left"], torch.tensor(0.8, dtype=F64))
    torch.testing.assert_close(mixed["overlap_right"], torch.tensor(0.2, dtype=F64))
    torch.testing.assert_close(mixed["overlap"], torch.tensor(0.5, dtype=F64))


def test_overlap_matches_dense_definition_and_zero_update():
    U, V, k = base_basis()
    B = torch.randn(2, 50, 3, generator=gen(13), dtype=F64)
    A = torch.randn(2, 3, 60, generator=gen(14), dtype=F64)
    B[1] = 0
    d = lowrank_svd(B, A, 1.5)
    out = subspace_overlap(U[:, :k], V[:, :k].T, d.U, d.S, d.Vh)
    dW = 1.5 * B[0] @ A[0]
    total = dW.square().sum()
    torch.testing.assert_close(out["overlap_left"][0], (U[:, :k].T @ dW).square().sum() / total)
    torch.testing.assert_close(out["overlap_right"][0], (dW @ V[:, :k]).square().sum() / total)
    assert out["overlap"][1] == 0 and not any(v.isnan().any() for v in out.values())


def test_cos_random_chance_level():
    v = cos_random(384, 32)
    assert 0.10 <= v <= 0.14
    assert cos_random(384, 4) < cos_random(384, 32) < cos_random(384, 128)
    assert cos_random(4096, 32) < v  # more room, less chance overlap
    assert cos_random(384, 32) == v and cos_random(384, 32, seed=1) != v
    # k ≥ dim: the vectors span the space, and chance is the largest coordinate of a random unit
    # vector (2√2/π in 2-D: a 2-way head's left side), not 1 as it used to return
    assert abs(cos_random(2, 32, samples=200_000) - 2 * 2 ** 0.5 / math.pi) < 2e-3
    assert cos_random(10, 32) == cos_random(10, 10) < 1.0
    # closed forms: in R^3 |cos| is uniform on [0, 1]; in R^2 E|cos θ| = 2/π
    assert abs(cos_random(3, 1, samples=200_000) - 0.5) < 2e-3
    assert abs(cos_random(2, 1, samples=200_000) - 2 / math.pi) < 2e-3
    assert abs(cos_random(3, 2, samples=200_000) - 0.5) > 0.1  # k matters


def test_cos_random_large_dim_branch_matches_brute_force():
    # dim − k > 1024 draws ‖x_rest‖² by Wilson–Hilferty; check it against sampling all coords
    d, k, n = 1500, 16, 4096
    x = torch.randn(n, d, generator=gen(77), dtype=F64)
    brute = float((x[:, :k].abs().amax(-1) / x.norm(dim=-1)).mean())
    assert abs(cos_random(d, k, samples=n) - brute) < 1.5e-3  # ~5 standard errors of the difference


# ---------------------------------------------------------------- cost accounting and the accelerator path


def test_gflop_follows_each_algorithms_count():
    """``TopK.gflop``: the textbook counts (exact: 4Nd² + 22d³ plus the residual GEMMs;
    gram: the Gram product dominates; krylov: ≥ two passes over W per basis column)."""
    W = torch.randn(3, 300, 120, generator=torch.Generator().manual_seed(0))
    m, n, k = 300, 120, 8
    ex = top_singular(W, k, method="exact")
    assert ex.gflop == pytest.approx(3 * (4 * m * n * n + 22 * n**3 + 4 * m * n * k) / 1e9)
    gr = top_singular(W, k, method="gram")
    assert gr.gflop >= 3 * 2 * m * n * n / 1e9 and gr.gflop < ex.gflop
    kr = top_singular(W, k, method="krylov")
    block = k + 10
    assert kr.gflop >= 3 * 4 * m * n * block / 1e9


@pytest.mark.parametrize("method", ["krylov", "gram", "exact"])
def test_accelerator_code_path_gives_the_cpu_results(method, monkeypatch):
    """``--device cuda`` runs each batch as batched GEMMs and a full ``eigh`` instead of the
    CPU's per-matrix GEMMs and LAPACK's partial eigensolver. With no GPU here, the switch
    (``cost.on_accelerator``) is forced on a CPU tensor: same triplets, same certificate."""
    from spectra.spectral import cost

    gen = torch.Generator().manual_seed(3)
    d = torch.arange(1, 121, dtype=torch.float64)
    sigma = (d + 0.3 * torch.rand(120, generator=gen, dtype=torch.float64)).pow(-0.5)
    U = torch.linalg.qr(torch.randn(3, 300, 120, generator=gen, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(3, 200, 120, generator=gen, dtype=torch.float64)).Q
    W = ((U * sigma) @ V.mT).float()  # (3, 300, 200), tall: both algorithms flip to the short side
    cpu = top_singular(W, 16, method=method)
    calls = []
    monkeypatch.setattr(cost, "on_accelerator", lambda t: calls.append(1) or True)
    acc = top_singular(W, 16, method=method)
    assert calls, "the accelerator switch was never consulted"
    assert acc.method == cpu.method and bool(acc.certified.all()) == bool(cpu.certified.all())
    torch.testing.assert_close(acc.S, cpu.S, rtol=1e-5, atol=0)
    cos = (acc.U * cpu.U).sum(dim=-2).abs()
    assert float((1 - cos).max()) < 1e-5


@pytest.mark.parametrize("shapes", [((), (), ()), ((3,), (), ()), ((3, 1), (1, 4), ()), ((2, 3), (3,), (1,)),
                                    ((5, 1, 2), (4, 1), (2,))])
def test_batch_shapes_broadcast_as_torch_does(shapes: tuple) -> None:
    from spectra.spectral.lowrank import _broadcast_shapes

    assert _broadcast_shapes(*shapes) == torch.broadcast_shapes(*shapes)


def test_batch_shapes_that_do_not_broadcast_are_refused() -> None:
    from spectra.spectral.lowrank import _broadcast_shapes

    with pytest.raises(ValueError, match="do not broadcast"):
        _broadcast_shapes((2,), (3,))
