"""Certified top-k singular triplets of (stacks of) dense weight matrices."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from spectra.errors import SpectraError
from spectra.spectral import cost
from spectra.spectral.lowrank import all_finite, compute_dtype

DEFAULT_SEED = 0


class NonFiniteMatrix(SpectraError):
    """A matrix handed to :func:`top_singular` holds NaN or Inf (the caller names the tensor)."""


class TopK(NamedTuple):
    """Top-k singular triplets of a batch of matrices ``W (..., m, n)``.

    ``U (..., m, k)``, ``S (..., k)`` descending, ``Vh (..., k, n)``.
    ``certified (...)`` is True where the randomized estimate passed the residual
    certificate and was returned as is; False where the element was computed by
    ``torch.linalg.svd`` (``exact=True``, a matrix too small for the randomized path to
    pay off, or a fallback after a failed certificate). ``residual (...)`` is the largest
    measured residual ``max_i max(‖W v_i − σ_i u_i‖, ‖Wᵀu_i − σ_i v_i‖) / σ_1`` of the
    returned triplets, whatever computed them. ``method`` says how the batch was done:
    ``"randomized"``, ``"gram"``, ``"exact"`` or ``"randomized+exact-fallback(f/b)"``.
    ``gflop`` counts the floating-point work of the whole batch (the products with ``W`` and
    the textbook LAPACK counts of the eigen/SVD solvers) — what a roofline divides by time.
    """

    U: Tensor
    S: Tensor
    Vh: Tensor
    certified: Tensor
    residual: Tensor
    method: str
    gflop: float = 0.0


def top_singular(
    W: Tensor,
    k: int,
    *,
    exact: bool = False,
    method: str = "auto",
    oversample: int = 10,
    n_iter: int | None = None,
    tol: float = 1e-4,
    angle_tol: float = 0.03,
    generator: torch.Generator | None = None,
    min_dim_randomized: int | None = None,
    memory_budget_bytes: int | None = None,
) -> TopK:
    """Top-k singular triplets of ``W``, by the cheapest certified algorithm, exact on demand.

    Three algorithms (:mod:`spectra.spectral.cost` estimates each one's time for the shape
    and ``method="auto"`` takes the cheapest):

    - ``krylov``: a randomized block Krylov method (block Lanczos on ``W Wᵀ`` with full
      re-orthogonalisation, started from a Gaussian block; on a CPU about ``k/4`` columns
      wide, at least 16, because the polynomial degree is what certifies and a narrow block
      gets there with fewer columns; on an accelerator ``k + oversample``, see
      :func:`~spectra.spectral.cost.krylov_block`) followed by Rayleigh–Ritz: Halko,
      Martinsson & Tropp, *Finding structure with randomness* (SIAM Review 2011), Alg.
      4.4/5.1, and Musco & Musco, *Randomized block Krylov methods for stronger and faster
      approximate SVD* (NeurIPS 2015). Block Krylov instead of plain subspace iteration
      because pretrained weight spectra are flat around the 32nd singular value: the steps
      Krylov needs grow like ``1/√gap`` where subspace iteration's grow like ``1/gap``.
      The basis lives on the smaller side of ``W`` so that every product is a tall-skinny
      GEMM. Cheapest for wide matrices (d ≳ 1,000 on a CPU);
    - ``gram``: the top eigenpairs of the short side's Gram matrix (one GEMM and a partial
      eigensolver, :mod:`spectra.spectral.gram`); cheapest below that width, where a Krylov
      basis would have to grow to most of the space;
    - ``exact``: ``torch.linalg.svd`` (``exact=True``, or when it is estimated cheapest).

    Certificate (checked per batch element on the returned triplets, with explicitly
    computed residuals, independently of how they were obtained): let
    ``r_i = sqrt(‖W v_i − σ_i u_i‖² + ‖Wᵀu_i − σ_i v_i‖²)`` for the top ``k + 1``
    triplets. The element is certified when

    1. ``r_i ≤ tol · σ_1`` for every ``i ≤ k``. A triplet residual ``r`` puts a true
       singular value within ``r`` of ``σ_i`` (and within ``r²/δ_i``, quadratically), and
       Rayleigh–Ritz values never exceed the true ones, so ``σ_max`` is accurate to
       ``tol`` relative and every ``σ_i`` to ``tol · σ_1`` absolute; and
    2. ``r_i / δ_i ≤ angle_tol`` for every ``i ≤ k``, with the gap estimate
       ``δ_i = min(σ_{i−1} − σ_i − r_{i−1}, σ_i − σ_{i+1} − r_{i+1})``. By Wedin's
       sin θ theorem ``max(sin∠(u_i, u_i*), sin∠(v_i, v_i*)) ≤ r_i / δ_i``, so each
       certified vector has ``1 − |cos| ≤ 1 − sqrt(1 − angle_tol²)`` (``≈ 4.5e-4`` at the
       default 0.03) against the exact one; the ``σ_{k+1}`` neighbour is why ``k + 1``
       triplets are checked. Singular values closer than the residual (a degenerate
       pair) cannot be certified individually and go to the exact path.

    The residual test is a posteriori and rigorous given the Ritz/true matching; what it
    cannot see for ``krylov`` is a singular direction the random start missed entirely, an
    event of probability zero for a Gaussian start (and the Krylov basis is not truncated to
    ``k``). Elements that fail are recomputed with ``torch.linalg.svd`` (that element only).

    Parameters:
        W: ``(..., m, n)`` matrices in ``(out, in)`` orientation; leading dims are a
            batch of same-shape matrices, processed together. Computed in ``W``'s dtype
            (fp16/bf16 are raised to float32; pass float64 for the tightest results).
        k: number of leading triplets (e.g. 32); ``1 ≤ k ≤ min(m, n)`` else
            :class:`~spectra.errors.SpectraError`.
        exact: use ``torch.linalg.svd`` for every element (the reference).
        method: ``auto`` (the cost model), ``krylov``, ``gram`` or ``exact``.
        oversample: on an accelerator, the Krylov block's columns beyond ``k`` (at least
            one is used, for the ``σ_{k+1}`` gap); a wider block converges in fewer steps.
            Not used on a CPU, whose block is about ``k/4``.
        n_iter: maximum number of block Krylov steps (each is one pass of ``Wᵀ`` and one
            of ``W`` over the block); the loop stops as soon as every element's Lanczos
            residual estimate passes the certificate. Default: as many as a basis of
            ``36·k`` columns takes (far beyond what pretrained weights need, 5–9·k).
        tol: residual tolerance relative to ``σ_1`` (criterion 1).
        angle_tol: bound on ``sin∠`` of each returned vector (criterion 2).
        generator: source of the Gaussian start block (its device is used to draw it);
            default: a CPU generator seeded with ``DEFAULT_SEED``, so results are
            deterministic. One start block is shared by the whole batch.
        min_dim_randomized: the fixed rule of spectra 0.1, kept for tests and comparisons:
            below this ``min(m, n)`` the exact SVD, from it on ``krylov`` (``0`` forces
            ``krylov``). ``None`` (the default): the cost model decides.
        memory_budget_bytes: a hard bound on the dense SVD spectra may run without being
            asked (``exact=False``): where the cost model or a failed certificate would
            decompose matrices whose :func:`exact_svd_bytes` exceed it, a
            :class:`~spectra.errors.SpectraError` says so instead — a hostile base (one
            16384² Gaussian weight: no gap at the top, so nothing certifies) must not take
            6.6 GB and hours. ``None``: no bound (the library's default; the audit passes
            its ``--memory-budget``).

    Returns:
        :class:`TopK`. Singular vector signs are normalised (the largest-magnitude entry
        of each ``u_i`` is positive) so that every algorithm's results agree.
    """
    if W.ndim < 2:
        raise SpectraError(f"top_singular needs a matrix, got a tensor of shape {tuple(W.shape)}")
    m, n = W.shape[-2:]
    if not 1 <= k <= min(m, n):
        raise SpectraError(
            f"cannot take the top {k} singular vectors of a {m}×{n} matrix (k must be in 1..{min(m, n)})"
        )
    if method not in ("auto", "krylov", "gram", "exact"):
        raise SpectraError(f"top_singular: unknown method {method!r} (auto, krylov, gram or exact)")
    dtype = compute_dtype(W)
    batch = W.shape[:-2]
    Wb = W.to(dtype).reshape(-1, m, n)
    # a NaN would silently poison every Krylov vector and then crash LAPACK. A sum is a
    # 30x cheaper screen than isfinite(); only if it is not finite (NaN/Inf, or an
    # overflow of huge but finite values) is the exact element-wise check run
    if not bool(torch.isfinite(Wb.sum())) and not all_finite(Wb):
        raise NonFiniteMatrix(f"cannot take singular vectors of a {m}×{n} matrix that contains NaN or Inf")
    b = Wb.shape[0]
    small = min(m, n)
    kind = "accelerator" if cost.on_accelerator(W) else "cpu"
    block = cost.krylov_block(k, oversample, small, kind)
    if n_iter is None:
        n_iter = -(-36 * k // block)
    if exact:
        chosen = "exact"
    elif method != "auto":
        chosen = method
    elif min_dim_randomized is not None:
        chosen = "exact" if small < min_dim_randomized or 2 * block > small else "krylov"
    else:
        chosen = cost.choose(m, n, k, oversample, kind)
    if chosen == "krylov" and 2 * block > small:
        chosen = "gram"  # a Krylov basis of half the space is no shortcut
    if chosen == "exact" and not exact:
        _check_dense_budget(m, n, k, b, Wb.element_size(), memory_budget_bytes, "the exact SVD the cost model chose")

    N = max(m, n)
    flop = 0.0
    if chosen == "exact" or b == 0:
        U, S, Vh = _exact_topk(Wb, k)
        left, right = _triplet_residuals(Wb, U, S, Vh)
        flop = b * (_svd_flop(m, n) + 4 * N * small * k)
        certified = torch.zeros(b, dtype=torch.bool, device=W.device)
        method_used = "exact"
    else:
        # both algorithms work on the short side A (W, or Wᵀ for a tall W)
        flip = m > n
        A = Wb.mT if flip else Wb
        if chosen == "gram":
            from spectra.spectral.gram import gram_topk

            Ua, S, Vah, analytic = gram_topk(A, k + 1)
            algorithm = "gram"
            # A Aᵀ; tridiagonalisation (4/3 d³) and back-transformation; Z = Aᵀu
            flop = b * (2 * N * small * small + 4 / 3 * small**3 + 2 * small * small * (k + 1) + 2 * N * small * (k + 1))
            # A v by a fresh GEMM: G u / σ would not see the rounding of G itself, which is
            # exactly the error the Gram route adds (squared conditioning)
            explicit = _side_residual(A, Ua, S, Vah)
            flop += b * 2 * N * small * (k + 1)
        else:
            gen = generator if generator is not None else torch.Generator().manual_seed(DEFAULT_SEED)
            Ua, S, Vah, analytic, explicit, columns = _block_krylov(A, k, block, n_iter, tol, angle_tol, gen)
            algorithm = "randomized"
            # two products with A per basis column, plus twice-repeated Gram–Schmidt against the basis
            flop = b * (4 * N * small * columns + 4 * small * columns * columns)
        # the certificate is checked on explicit residuals, not on the algorithm's estimates:
        # ‖A v − σ u‖ by a GEMM (Krylov: A's stored products A Aᵀ Q times the Ritz coefficients,
        # the same numbers a fresh A·v would give up to GEMM rounding); ‖Aᵀu − σ v‖ is exact
        # by construction (v = Aᵀu/σ), see ``analytic``
        U, Vh = (Vah.mT, Ua.mT) if flip else (Ua, Vah)
        left, right = (analytic, explicit) if flip else (explicit, analytic)
        r = torch.sqrt(left.square() + right.square())
        if S.shape[-1] <= k:  # no σ_{k+1} neighbour (k = min(m, n)): only the gaps inside the top k
            S, r = _pad_neighbour(S, r)
        certified = _excess(S, r, k, tol, angle_tol) <= 1.0
        U, S, Vh = U[..., :k], S[..., :k], Vh[..., :k, :]
        left, right = left[..., :k], right[..., :k]
        failed = (~certified).nonzero().flatten()
        if failed.numel():
            _check_dense_budget(m, n, k, failed.numel(), Wb.element_size(), memory_budget_bytes,
                                f"its {algorithm} estimate failed the certificate (largest residual "
                                f"{float(r[failed, :k].max() / S[failed, :1].max().clamp_min(1e-30)):.1e} of σ_1; a "
                                "spectrum with no gap at the top k cannot be certified), so the exact SVD")
            flop += failed.numel() * (_svd_flop(m, n) + 4 * N * small * k)
            # one matrix at a time: the budget above bounds one dense SVD's workspace, not a batch's
            parts = [_exact_topk(Wb[i:i + 1], k) for i in failed.tolist()]
            Ue, Se, Vhe = (torch.cat([p[j] for p in parts]) for j in range(3))
            le, re = _triplet_residuals(Wb[failed], Ue, Se, Vhe)
            U, S, Vh, left, right = U.clone(), S.clone(), Vh.clone(), left.clone(), right.clone()
            U[failed], S[failed], Vh[failed], left[failed], right[failed] = Ue, Se, Vhe, le, re
            method_used = f"{algorithm}+exact-fallback({failed.numel()}/{b})"
        else:
            method_used = algorithm

    U, Vh = _normalise_signs(U, Vh)
    residual = _relative_residual(left, right, S)
    return TopK(
        U=U.reshape(*batch, m, k),
        S=S.reshape(*batch, k),
        Vh=Vh.reshape(*batch, k, n),
        certified=certified.reshape(batch),
        residual=residual.reshape(batch),
        method=method_used,
        gflop=flop / 1e9,
    )


def exact_svd_bytes(m: int, n: int, itemsize: int = 4) -> int:
    """Peak bytes of one thin ``torch.linalg.svd`` of an ``m×n`` matrix: LAPACK's gesdd copies
    the input and keeps U, Vᵀ and about ``4d²`` of workspace (``d = min(m, n)``)."""
    d = min(m, n)
    return itemsize * (m * n + d * (m + n) + 4 * d * d + 8 * d)


def _check_dense_budget(m: int, n: int, k: int, count: int, itemsize: int, budget: int | None, why: str) -> None:
    """Raise instead of running ``count`` dense SVDs that the memory budget does not allow."""
    if budget is None:
        return
    need = exact_svd_bytes(m, n, itemsize)
    if need <= budget:
        return
    minutes = cost.SVD_S * max(m, n) * min(m, n) ** 2 * count / 60
    raise SpectraError(f"a {m}×{n} base weight: {why} would need {need / 2**20:,.0f} MB, over the memory budget of "
                       f"{budget / 2**20:,.0f} MB (and ~{minutes:,.0f} min on 2 CPU cores); raise --memory-budget to "
                       f"at least {-(-need // 2**20):,} (MB) or pass --exact to allow it")


def _svd_flop(m: int, n: int) -> float:
    """Golub & Van Loan's count for a thin SVD with both factors: ``4 N d² + 22 d³``."""
    d, N = min(m, n), max(m, n)
    return 4 * N * d * d + 22 * d**3


def _pad_neighbour(S: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """Append a zero ``σ_{k+1}`` with zero residual (k = min(m, n): there is no neighbour below)."""
    zero = torch.zeros_like(S[:, :1])
    return torch.cat([S, zero], dim=-1), torch.cat([r, zero], dim=-1)


def _exact_topk(W: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    # LAPACK's gesdd is markedly faster on tall than on wide inputs (7 s vs 3.5 s for
    # 2048×5632 on 2 cores), so a wide matrix is decomposed as its transpose
    if W.shape[-2] < W.shape[-1]:
        Ut, S, Vht = torch.linalg.svd(W.mT, full_matrices=False)
        return Vht[..., :k, :].mT, S[..., :k], Ut[..., :k].mT
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[..., :k], S[..., :k], Vh[..., :k, :]


def _block_krylov(
    W: Tensor, k: int, block: int, n_iter: int, tol: float, angle_tol: float, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
    """Block Lanczos on ``W Wᵀ`` (``W (b, m, n)``, ``m ≤ n``); top ``k + 1`` Ritz triplets,
    each one's residuals ``‖Wᵀu − σv‖`` (which follows from how the triplets are formed) and
    ``‖Wv − σu‖`` (from the stored products ``W Wᵀ Q``), and the number of basis columns
    built (the passes over ``W``, for flop counts).

    ``Qt`` holds the orthonormal basis and ``Zt = (Wᵀ Q)ᵀ`` row-wise, so that growing
    them touches memory only as far as the basis has grown. ``T = Qᵀ W Wᵀ Q`` is assembled
    from products the iteration computes anyway, so Rayleigh–Ritz needs no extra pass
    over ``W``; ``T`` is solved in ``W``'s dtype because its entries carry that rounding.
    """
    b, m, n = W.shape
    dtype, device = W.dtype, W.device
    tiny = torch.finfo(dtype).tiny
    L_max = min(block * (n_iter + 1), m)
    Qt = torch.empty(b, L_max, m, dtype=dtype, device=device)
    Zt = torch.empty(b, L_max, n, dtype=dtype, device=device)
    # W Wᵀ Q_j as the products came out (before Gram–Schmidt), for the final residual
    Yt = torch.empty(b, L_max, m, dtype=dtype, device=device)
    # every step writes all of T[:hi, :hi], so no zero fill (and no page faults) is needed
    T = torch.empty(b, L_max, L_max, dtype=dtype, device=device)

    omega = torch.randn(m, block, generator=gen, dtype=dtype, device=gen.device).to(device)
    Qt[:, :block] = torch.linalg.qr(omega).Q.mT
    lo, hi = 0, block
    step, next_check, last = 0, 0, None
    # per element: best progress seen and the basis size it was reached at, to spot
    # stagnation; measured in columns, not steps, so that it means the same at any block
    best = torch.full((b,), math.inf, dtype=torch.float64)
    best_hi = torch.zeros(b, dtype=torch.long)
    patience, floor = max(6 * k, 4 * block), max(9 * k, 6 * block)
    while True:
        Zj, Y = _krylov_products(W, Qt[:, lo:hi])  # Wᵀ Q_j (b, n, l) and W Wᵀ Q_j (b, m, l)
        Zt[:, lo:hi] = Zj.mT
        Yt[:, lo:hi] = Y.mT
        Q_all = Qt[:, :hi]
        # two Gram–Schmidt passes ("twice is enough") keep Q orthonormal to working precision
        C = Q_all @ Y
        Y = Y - Q_all.mT @ C
        C2 = Q_all @ Y
        Y = Y - Q_all.mT @ C2
        C = C + C2
        T[:, :hi, lo:hi] = C
        T[:, lo:hi, :hi] = C.mT
        T[:, lo:hi, lo:hi] = (C[:, lo:hi] + C[:, lo:hi].mT) / 2
        Q_next, R_next = torch.linalg.qr(Y)
        nxt = min(block, L_max - hi)
        if nxt == 0 or (step >= next_check and hi > k):
            theta, vecs = _ritz(T[:, :hi, :hi], k + 1)
            if nxt == 0:
                break
            # Lanczos residual estimate: W Wᵀ u − θ u = Q_{j+1} R_{j+1} y_last for a Ritz pair
            sigma = theta.clamp_min(0).sqrt()
            r_est = torch.linalg.vector_norm(R_next @ vecs[:, lo:hi], dim=1) / sigma.clamp_min(tiny)
            passed = (_excess(sigma, r_est, k, tol, angle_tol) <= 1.0).cpu()
            progress = _progress(sigma, r_est, k, tol, angle_tol).double().cpu()
            improved = progress < 0.7 * best
            best = torch.where(improved, progress, best)
            best_hi = torch.where(improved, torch.full_like(best_hi, hi), best_hi)
            # an element that stopped improving (a zero matrix, an exactly repeated σ) would
            # hold the whole batch to n_iter steps; it goes to the exact fallback instead
            hopeless = ~progress.isfinite() & (hi >= 2 * (k + 1)) | (hi >= floor) & (hi - best_hi >= patience)
            if bool((passed | hopeless).all()):
                break
            # each eigh costs O(L³): skip checks while the residuals' geometric decay
            # rate says convergence is still several steps away (half the predicted gap)
            worst = float(progress[~(passed | hopeless)].max())
            next_check = step + 1
            if last is not None and 1.0 < worst < last[1] < math.inf:
                rate = (worst / last[1]) ** (1.0 / (step - last[0]))
                skip = int(0.5 * math.log(worst) / -math.log(rate))
                # the early decay rate underestimates Krylov's acceleration: bound the jump
                next_check = step + max(1, min(skip, (step + 1) // 2))
            last = (step, worst)
        Q_next = Q_next[..., :nxt]
        # a (numerically) rank-deficient Y gives arbitrary QR columns: project them out
        # again. Y is orthogonal to the basis after two passes, so with a well-conditioned
        # R (every |R_ii| above 1e-4 of the largest) its Q is too and the pass is skipped
        diag = R_next.diagonal(dim1=-2, dim2=-1).abs()[..., :nxt]
        if not bool((diag > 1e-4 * diag.amax(dim=-1, keepdim=True).clamp_min(tiny)).all()):
            Q_next = Q_next - Q_all.mT @ (Q_all @ Q_next)
            Q_next = torch.linalg.qr(Q_next).Q
        lo, hi = hi, hi + nxt
        Qt[:, lo:hi] = Q_next.mT
        step += 1

    U = Qt[:, :hi].mT @ vecs  # (b, m, k+1) = ũ
    V = Zt[:, :hi].mT @ vecs  # (b, n, k+1) = Wᵀ ũ
    WV = Yt[:, :hi].mT @ vecs  # (b, m, k+1) = W Wᵀ ũ, from the products W itself gave
    S = torch.linalg.vector_norm(V, dim=-2)
    V = V / S.clamp_min(tiny)[:, None, :]
    WV = WV / S.clamp_min(tiny)[:, None, :]  # = W v
    norms = torch.linalg.vector_norm(U, dim=-2)
    U = U / norms.clamp_min(tiny)[:, None, :]
    # v = Wᵀũ/σ with u = ũ/‖ũ‖, so Wᵀu − σv = v·σ(1/‖ũ‖ − 1): this side's residual needs no GEMM
    analytic = S * (1 / norms.clamp_min(tiny) - 1).abs()
    # W v − σ u from W's own products (not from the Lanczos recurrence), so it is an
    # explicit residual like a fresh GEMM's — without another pass over W
    explicit = torch.linalg.vector_norm(WV - U * S[:, None, :], dim=-2)
    # ‖Wᵀu‖ can reorder nearly equal Ritz values; keep S descending
    S, order = S.sort(dim=-1, descending=True)
    U = U.gather(-1, order[:, None, :].expand_as(U))
    V = V.gather(-1, order[:, None, :].expand_as(V))
    return U, S, V.mT, analytic.gather(-1, order), explicit.gather(-1, order), hi


def per_matrix_kernels(W: Tensor) -> bool:
    """Whether to run a batch's GEMMs one matrix at a time (a CPU and more than one matrix)
    rather than as one batched call (GPUs, where one launch for the batch is what pays).
    :func:`~spectra.spectral.cost.on_accelerator` decides the device side."""
    return not cost.on_accelerator(W) and W.shape[0] > 1


def _krylov_products(W: Tensor, Qj_t: Tensor) -> tuple[Tensor, Tensor]:
    """``Z = Wᵀ Q_j`` and ``Y = W Z`` for each batch element (``Qj_t`` holds ``Q_jᵀ`` row-wise).

    One 2-D GEMM per element: on MKL CPU builds a loop of plain ``mm`` on these skinny
    shapes runs about 20 % faster than the strided batched ``bmm`` (33 vs 41 ms for three
    2048×5632 weights × 42 columns, bench/README.md); on a GPU the batched call is kept.
    """
    if not per_matrix_kernels(W):
        Z = W.mT @ Qj_t.mT
        return Z, W @ Z
    Z = torch.empty(W.shape[0], W.shape[2], Qj_t.shape[1], dtype=W.dtype)
    Y = torch.empty(W.shape[0], W.shape[1], Qj_t.shape[1], dtype=W.dtype)
    for i in range(W.shape[0]):
        torch.mm(W[i].T, Qj_t[i].T, out=Z[i])
        torch.mm(W[i], Z[i], out=Y[i])
    return Z, Y


def _ritz(T: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` largest eigenpairs of symmetric ``T (b, L, L)``, descending."""
    theta, vecs = torch.linalg.eigh(T)
    count = min(count, T.shape[-1])
    return theta.flip(-1)[:, :count], vecs.flip(-1)[:, :, :count]


def _excess(S: Tensor, r: Tensor, k: int, tol: float, angle_tol: float) -> Tensor:
    """How far each element is from the certificate: ≤ 1 passes (``S, r (b, k+1)``).

    The worst over ``i ≤ k`` of ``r_i / (tol σ_1)`` and ``r_i / (angle_tol δ_i)``, with
    the gap estimate ``δ_i`` of :func:`top_singular`; ``inf`` for a zero ``σ_1``/``σ_k``
    or a non-positive gap.
    """
    s1 = S[:, :1]
    inf = torch.full_like(s1, float("inf"))
    diff = S[:, :-1] - S[:, 1:]
    gap_up = torch.cat([inf, diff - r[:, :-1]], dim=-1)  # to σ_{i−1}
    gap_down = torch.cat([diff - r[:, 1:], inf], dim=-1)  # to σ_{i+1}
    delta = torch.minimum(gap_up, gap_down)[:, :k]
    rk = r[:, :k]
    ratio = torch.maximum(rk / (tol * s1), rk / (angle_tol * delta))
    bad = (s1 <= 0) | (S[:, k - 1 : k] <= 0) | (delta <= 0) | ratio.isnan()
    return torch.where(bad, torch.full_like(ratio, float("inf")), ratio).amax(dim=-1)


def _progress(S: Tensor, r: Tensor, k: int, tol: float, angle_tol: float) -> Tensor:
    """A finite stand-in for :func:`_excess` (raw Ritz gaps, no residual slack) whose
    geometric decay over the steps predicts when the certificate can pass."""
    diff = S[:, :-1] - S[:, 1:]
    inf = torch.full_like(S[:, :1], float("inf"))
    gap = torch.minimum(torch.cat([inf, diff], dim=-1), torch.cat([diff, inf], dim=-1))[:, :k]
    need = torch.minimum(tol * S[:, :1], angle_tol * gap)
    return (r[:, :k] / need).amax(dim=-1)


def _side_residual(A: Tensor, U: Tensor, S: Tensor, Vh: Tensor) -> Tensor:
    """``‖A v_i − σ_i u_i‖`` per triplet (one GEMM; 2-D per element on a CPU)."""
    if per_matrix_kernels(A):
        AV = torch.stack([A[i] @ Vh[i].T for i in range(A.shape[0])])
    else:
        AV = A @ Vh.mT
    return torch.linalg.vector_norm(AV - U * S[:, None, :], dim=-2)


def _triplet_residuals(W: Tensor, U: Tensor, S: Tensor, Vh: Tensor) -> tuple[Tensor, Tensor]:
    """``‖W v_i − σ_i u_i‖`` and ``‖Wᵀ u_i − σ_i v_i‖`` per triplet: the second is the first
    for ``Wᵀ`` with the roles of ``u`` and ``v`` swapped."""
    return _side_residual(W, U, S, Vh), _side_residual(W.mT, Vh.mT, S, U.mT)


def _relative_residual(left: Tensor, right: Tensor, S: Tensor) -> Tensor:
    worst = torch.maximum(left, right).amax(dim=-1)
    s1 = S[:, 0]
    return torch.where(s1 > 0, worst / s1.clamp_min(torch.finfo(S.dtype).tiny), worst)


def _normalise_signs(U: Tensor, Vh: Tensor) -> tuple[Tensor, Tensor]:
    idx = U.abs().argmax(dim=-2, keepdim=True)
    sign = torch.sign(U.gather(-2, idx))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return U * sign, Vh * sign.mT
