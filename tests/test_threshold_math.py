"""spectra.threshold's closed form (Proposition 4.2) on hand-built linear models, checked against
an independent implementation; the command end to end is in test_threshold.py."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.threshold import (
    INF,
    aggregate,
    linear_threshold,
    quantile,
    threshold_from_margins,
)

SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------- exact linear case


def test_hand_built_linear_model_matches_the_closed_form() -> None:
    # class 0 is the target; x has label 1; the trigger moves x to x̃ = e_0.
    W_pre = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    dW = torch.tensor([[0.0, 0.0], [0.5, 1.0]])
    X = torch.tensor([[0.0, 1.0]])
    X_trig = torch.tensor([[1.0, 0.0]])
    res = linear_threshold(W_pre, dW, X, X_trig, [1], 0, scale=3.0)
    # M_0(x) = 1, M_0(x̃) = -2; s·ΔW x = [0, 3] → D(x) = 3; s·ΔW x̃ = [0, 1.5] → D(x̃) = 1.5
    assert res.M0_clean.tolist() == [1.0]
    assert res.M0_trig.tolist() == [-2.0]
    assert res.D_clean.tolist() == [3.0]
    assert res.D_trig.tolist() == [1.5]
    assert res.gamma_star_flip.tolist() == pytest.approx([2.0 / 1.5])
    assert res.gamma_star_bound.tolist() == pytest.approx([2.0 / (3.0 - 1.5)])
    sigma_delta = 3.0 * math.sqrt(0.25 + 1.0)  # σ_max of the rank-1 s·ΔW
    assert res.sigma_pre == pytest.approx(2.0)
    assert res.sigma_delta == pytest.approx(sigma_delta)
    assert res.rho_bd.tolist() == pytest.approx([2.0 / (SQRT2 * 2.0)])
    assert res.rho_cl.tolist() == pytest.approx([3.0 / (SQRT2 * sigma_delta)])
    assert res.rho_tr.tolist() == pytest.approx([1.5 / (SQRT2 * sigma_delta)])
    assert res.s_star_flip.tolist() == pytest.approx([3.0 * 2.0 / 1.5])
    # Proposition 4.2 written with the ρ's gives the same sufficient multiplier
    s_star = (res.rho_bd / res.rho_eff) * (res.sigma_pre / res.sigma_delta)
    assert s_star.tolist() == pytest.approx(res.gamma_star_bound.tolist())


def _independent(W_pre, dW, s, X, X_trig, y, y_bd):
    """The closed form with plain Python floats, row by row (no code shared with spectra)."""
    Wl, dl = W_pre.tolist(), dW.tolist()

    def z(W, x, k):
        return [sum((W[c][j] + k * s * dl[c][j]) * x[j] for j in range(len(x))) for c in range(len(W))]

    sig_pre = float(torch.linalg.svdvals(W_pre.double())[0])
    sig_d = float(torch.linalg.svdvals(s * dW.double())[0])
    rows = []
    for x, xt, yy in zip(X.tolist(), X_trig.tolist(), y):
        if yy == y_bd:
            continue
        m = lambda v, k: z(Wl, v, k)[yy] - z(Wl, v, k)[y_bd]  # noqa: E731
        m0c, m0t, m1c, m1t = m(x, 0), m(xt, 0), m(x, 1), m(xt, 1)
        dc, dt = m1c - m0c, m1t - m0t
        if m0t > 0:
            kb = kf = 0.0
        else:
            den = dc - abs(dt - dc)
            kb = -m0t / den if den > 0 else INF
            kf = -m0t / dt if dt > 0 else INF
        rows.append(dict(m0c=m0c, m0t=m0t, dc=dc, dt=dt, kb=kb, kf=kf, bd=-m0t / (SQRT2 * sig_pre),
                         cl=dc / (SQRT2 * sig_d), tr=abs(dt - dc) / (SQRT2 * sig_d)))
    return rows, sig_pre, sig_d


def _random_linear(seed: int, n: int = 120, C: int = 3, d: int = 8, r: int = 2, target: int = 0):
    """A random linear classifier with a planted backdoor: W_pre's target row points along the
    trigger direction t, and each x̃ carries t with a random strength (so some samples flip)."""
    g = torch.Generator().manual_seed(seed)
    W_pre = torch.randn(C, d, generator=g, dtype=torch.float64)
    B = torch.randn(C, r, generator=g, dtype=torch.float64)
    A = torch.randn(r, d, generator=g, dtype=torch.float64)
    X = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    t = torch.nn.functional.normalize(torch.randn(d, generator=g, dtype=torch.float64), dim=0)
    W_pre[target] += 2.0 * t
    strength = torch.rand(n, 1, generator=g, dtype=torch.float64)
    X_trig = torch.nn.functional.normalize(X + strength * t, dim=1)
    y = torch.randint(0, C, (n,), generator=g).tolist()
    return W_pre, B, A, X, X_trig, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_linear_models_match_an_independent_closed_form(seed: int) -> None:
    W_pre, B, A, X, X_trig, y = _random_linear(seed)
    s = 0.75
    res = linear_threshold(W_pre, (B, A), X, X_trig, y, 0, scale=s)
    rows, sig_pre, sig_d = _independent(W_pre, B @ A, s, X, X_trig, y, 0)
    assert len(res) == len(rows) == sum(1 for v in y if v != 0)
    assert res.index.tolist() == [i for i, v in enumerate(y) if v != 0]
    assert res.sigma_pre == pytest.approx(sig_pre, rel=1e-10)
    assert res.sigma_delta == pytest.approx(sig_d, rel=1e-10)
    for name, field in [("m0c", "M0_clean"), ("m0t", "M0_trig"), ("dc", "D_clean"), ("dt", "D_trig"),
                        ("kb", "gamma_star_bound"), ("kf", "gamma_star_flip"), ("bd", "rho_bd"), ("cl", "rho_cl"),
                        ("tr", "rho_tr")]:
        assert getattr(res, field).tolist() == pytest.approx([r[name] for r in rows], rel=1e-9, abs=1e-12), field
    # the cases this draw covers, so the comparison above is not vacuous
    assert bool((res.gamma_star_flip == 0).any()) and bool(torch.isinf(res.gamma_star_bound).any())
    assert bool((torch.isfinite(res.gamma_star_flip) & (res.gamma_star_flip > 0)).any())
    # a sufficient scale is never below the exact crossing
    both = torch.isfinite(res.gamma_star_bound)
    assert bool((res.gamma_star_bound[both] >= res.gamma_star_flip[both] - 1e-12).all())


def test_a_fine_sweep_crosses_zero_at_k_star_flip() -> None:
    W_pre, B, A, X, X_trig, y = _random_linear(3, n=160, C=2, target=1)
    s = 2.0
    res = linear_threshold(W_pre, (B, A), X, X_trig, y, 1, scale=s)
    step = 1e-3
    ks = torch.arange(0, 30 + step / 2, step, dtype=torch.float64)
    keep = [i for i, v in enumerate(y) if v != 1]
    xt, yy = X_trig[keep], torch.tensor([y[i] for i in keep])
    # triggered margin at every k: ((W_pre + k s ΔW) x̃)_y − (…)_ybd, evaluated directly
    Wk = W_pre[None] + ks[:, None, None] * s * (B @ A)[None]  # (K, C, d)
    z = torch.einsum("kcd,nd->knc", Wk, xt)
    M = z.gather(2, yy.view(1, -1, 1).expand(len(ks), -1, 1)).squeeze(2) - z[:, :, 1]
    checked = 0
    for i in range(len(keep)):
        kf = float(res.gamma_star_flip[i])
        if float(res.M0_trig[i]) > 0:
            assert kf == 0.0
            continue
        positive = torch.nonzero(M[:, i] > 0).reshape(-1)
        if not math.isfinite(kf):
            assert len(positive) == 0  # never crosses while D(x̃) ≤ 0
            continue
        if kf > 30:
            continue
        measured = float(ks[positive[0]])
        assert measured == pytest.approx(kf, abs=step), i
        checked += 1
    assert checked >= 5
    # the predicted ASR curve is exact for a linear model: compare on the fine grid
    predicted = res.predicted_asr(ks[::50])
    measured_asr = (M[::50] < 0).double().mean(dim=1)
    assert predicted.tolist() == pytest.approx(measured_asr.tolist(), abs=1.0 / len(keep) + 1e-12)
    # and the predicted threshold is the first fine-grid k where the measured ASR < 50%
    below = torch.nonzero((M < 0).double().mean(dim=1) < 0.5).reshape(-1)
    kp = res.predicted_threshold()
    if len(below):
        assert kp == pytest.approx(float(ks[below[0]]), abs=step)
    else:
        assert kp > 30


def test_zero_when_already_positive_and_infinite_when_the_adapter_does_not_help() -> None:
    #            already +   D(x̃)=0   D(x̃)<0   D(x)<0    flips at 4
    M0c = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    M0t = torch.tensor([0.5, -1.0, -1.0, -1.0, -2.0])
    M1c = torch.tensor([3.0, 2.0, 2.0, 0.0, 2.0])
    M1t = torch.tensor([-4.0, -1.0, -3.0, 0.0, -1.5])
    res = threshold_from_margins(M0c, M0t, M1c, M1t)
    assert res.gamma_star_flip.tolist() == [0.0, INF, INF, 1.0, 4.0]
    # bound: denominators D(x) − |D(x̃) − D(x)| = [., 1−1, 1−3, −1−2, 1−0.5]
    assert res.gamma_star_bound.tolist() == [0.0, INF, INF, INF, 4.0]
    assert res.rho_eff.tolist() == pytest.approx([x / SQRT2 for x in (2 - 6.5, 0.0, -2.0, -3.0, 0.5)])


def test_predicted_asr_at_zero_is_the_share_the_base_flips() -> None:
    g = torch.Generator().manual_seed(5)
    M0c, M0t, M1c, M1t = (torch.randn(200, generator=g) for _ in range(4))
    res = threshold_from_margins(M0c, M0t, M1c, M1t)
    assert float(res.predicted_asr(0.0)) == pytest.approx(float((M0t < 0).double().mean()))
    # the linearised margin M_0(x̃) + k·D(x̃) < 0 is the predicted flip at any k, entering samples included
    for k in (0.3, 1.0, 2.5, 10.0):
        assert float(res.predicted_asr(k)) == pytest.approx(float((M0t + k * (M1t - M0t) < 0).double().mean()))
    assert res.summary()["n_entering"] == int(((M0t > 0) & (M1t < M0t)).sum())


def test_predicted_threshold_is_exact() -> None:
    # four flipped samples crossing at 1, 2, 3, 4 and one never crossing: ASR < 50% from k = 3
    M0t = torch.tensor([-1.0, -2.0, -3.0, -4.0, -1.0])
    D = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0])
    zeros = torch.zeros(5)
    res = threshold_from_margins(zeros, M0t, zeros + 1.0, M0t + D)
    assert res.predicted_asr([0.0, 2.999, 3.0]).tolist() == pytest.approx([1.0, 0.6, 0.4])
    assert res.predicted_threshold() == 3.0
    assert res.summary()["predicted_threshold_gamma"] == 3.0
    never = threshold_from_margins(zeros, M0t, zeros, M0t - 1.0)
    assert never.predicted_threshold() == INF


def test_uniform_constants_and_aggregates() -> None:
    M0c = torch.tensor([0.0, 0.0])
    M0t = torch.tensor([-2.0, -1.0])
    M1c = torch.tensor([4.0, 2.0])
    M1t = torch.tensor([-2.0 + 4.5, -1.0 + 2.0])
    res = threshold_from_margins(M0c, M0t, M1c, M1t, sigma_pre=4.0, sigma_delta=2.0, scale=0.5)
    # ρ_bd = [2, 1]/(√2·4); ρ_cl = [4, 2]/(√2·2); ρ_tr = [0.5, 0]/(√2·2)
    bd, eff = 2 / (SQRT2 * 4), (2 - 0.5) / (SQRT2 * 2)
    assert res.uniform_gamma() == pytest.approx(bd / eff * 4.0 / 2.0)
    s = res.summary()
    assert s["gamma_star_bound"]["worst"] == pytest.approx(max(2 / (4 - 0.5), 1 / 2))
    assert s["gamma_star_flip"]["worst"] == pytest.approx(max(2 / 4.5, 1 / 2))
    assert s["s_star"]["flip"]["worst"] == pytest.approx(0.5 * max(2 / 4.5, 1 / 2))
    assert s["gamma_star_bound"]["uniform"] >= s["gamma_star_bound"]["worst"]


def test_quantiles_tolerate_infinity() -> None:
    v = torch.tensor([1.0, 2.0, 3.0, INF])
    assert quantile(v, 0.5) == pytest.approx(2.5)
    assert quantile(v, 0.9) == INF
    assert quantile(torch.tensor([INF, INF]), 0.5) == INF
    agg = aggregate(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert agg == {"worst": 4.0, "median": 2.0, "p90": pytest.approx(3.6)}


def test_the_proof_needs_eq16_a_lower_bound_and_spectra_estimates_the_value_that_gives_it() -> None:
    """Proposition 4.2's A1 (Eq. 5) bounds the backdoor margin from *above*,
    ⟨c, W x̃⟩ ≤ −ρ_bd‖c‖σ_pre, but the proof substitutes a bound from *below* (Eq. 16,
    ⟨c, W x̃⟩ ≥ −ρ_bd‖c‖σ_pre). With a ρ_bd that only satisfies Eq. 5, s just above s* can leave
    the triggered margin negative; spectra's per-sample ρ_bd = −⟨c, W x̃⟩/(‖c‖σ_pre) makes Eq. 16
    hold with equality, so s > s* does flip the sample."""
    from spectra.threshold.margins import threshold_from_margins

    c_norm, sigma_pre, sigma_delta = math.sqrt(2.0), 1.0, 0.25
    m0 = -1.2  # ⟨c, W_pre x̃⟩: |m0| ≤ ‖c‖σ_pre for a unit x̃
    rho_eff = 0.5  # ⟨c, ΔW x̃⟩ = ρ_eff‖c‖σ_Δ (x̃ = x, so ρ_tr = 0)
    push = rho_eff * c_norm * sigma_delta

    rho_eq5 = 0.5  # satisfies Eq. 5: −1.2 ≤ −0.5·√2 = −0.71 ...
    assert m0 <= -rho_eq5 * c_norm * sigma_pre
    s_star = rho_eq5 / rho_eff * sigma_pre / sigma_delta
    assert m0 + 1.01 * s_star * push < 0  # ... yet s = 1.01·s* leaves the backdoor in place: Eq. 5 is not enough

    res = threshold_from_margins(torch.tensor([0.5]), torch.tensor([m0]), torch.tensor([0.5 + push]),
                                 torch.tensor([m0 + push]), sigma_pre=sigma_pre, sigma_delta=sigma_delta, scale=1.0,
                                 c_norm=c_norm)
    rho_bd = float(res.rho_bd[0])
    assert rho_bd == pytest.approx(-m0 / (c_norm * sigma_pre))  # the value at which Eq. 16 is an equality
    assert m0 >= -rho_bd * c_norm * sigma_pre - 1e-12  # Eq. 16 holds
    s_star = rho_bd / float(res.rho_eff[0]) * sigma_pre / sigma_delta
    assert m0 + 1.01 * s_star * push > 0 and float(res.gamma_star_bound[0]) == pytest.approx(s_star)
    assert rho_bd > 0.8  # and here ρ_bd < 1: A1's range; on the study's sweeps it is ≈ 9 (reported, see the page)
