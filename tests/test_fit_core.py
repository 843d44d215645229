"""The C++ Schur-complement solver against a direct dense least-squares solve that keeps the
star parameters (the same solution, by algebra), and against noise-free truth."""
import numpy as np
import pytest

from mosaicfit import _core
from mosaicfit.fit.core import LeastSquaresProblem, solve_least_squares


def _problem(D, K, order=2, nvisit=4, nccd=3, nstar=60, seed=0, noise=0.0, prior_frac=0.3):
    rng = np.random.default_rng(seed)
    T = (order + 1) * (order + 2) // 2
    coef = rng.normal(0, 1, (nvisit, D, T))
    dccd = rng.normal(0, 0.1, (nccd, K))
    dccd -= dccd.mean(0)                         # the gauge: sum 0
    xs = rng.normal(0, 3, (nstar, D))
    rows = []
    for s in range(nstar):
        for v in range(nvisit):
            if rng.uniform() < 0.8:
                rows.append((s, v, rng.integers(nccd)))
    star, visit, ccd = (np.array(c, dtype=np.int32) for c in zip(*rows))
    n = len(star)
    u, v = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    # CCD parameters shift the output (as a CCD offset does through the local derivative):
    # shifting all of them and the visits' constant terms together changes nothing, so the
    # sum-zero condition is a pure gauge, as in the real astrometric and photometric models.
    G = np.zeros((n, D, K))
    for k in range(K):
        G[:, k % D, k] = rng.uniform(0.5, 1.5) if k >= D else 1.0
    B = _core.basis(u, v, order, 0)[0]
    pred = np.einsum("nt,ndt->nd", B, coef[visit]) + np.einsum("ndk,nk->nd", G, dccd[ccd])
    w = rng.uniform(0.5, 2.0, n)
    y = pred - xs[star] + noise * rng.normal(0, 1, (n, D)) / np.sqrt(w)[:, None]
    has_prior = rng.uniform(size=nstar) < prior_frac
    prior = xs + noise * rng.normal(0, 1, (nstar, D)) / 2.0   # sigma 0.5 = weight 4
    prior_w = np.where(has_prior, 4.0, 0.0)
    return dict(star=star, visit=visit, ccd=ccd, u=u, v=v, y=y, w=w, G=G, prior=prior,
                prior_w=prior_w, coef=coef, dccd=dccd, xs=xs, nvisit=nvisit, nccd=nccd,
                nstar=nstar, D=D, K=K, order=order, B=B)


def _run(p, active=None, coef_prior=None, coef_prior_w=None, coef_prior_mat=None):
    n = len(p["star"])
    return solve_least_squares(LeastSquaresProblem(
        star=p["star"], visit=p["visit"], ccd=p["ccd"],
        active=np.ones(n, np.uint8) if active is None else active, u=p["u"], v=p["v"],
        y=p["y"], w=p["w"], nvisit=p["nvisit"], nccd=p["nccd"], nstar=p["nstar"],
        order=p["order"], basis="legendre", G=p["G"], prior=p["prior"], prior_w=p["prior_w"],
        coef_prior=coef_prior, coef_prior_w=coef_prior_w, coef_prior_mat=coef_prior_mat))


def _dense(p, active, coef_prior=None, coef_prior_w=None, coef_prior_mat=None):
    """Direct weighted least squares over (coefs, ccd, stars) with the sum-zero constraint
    on the CCD parameters imposed by elimination of the last CCD (and coefficient priors as
    extra rows)."""
    D, K, T = p["D"], p["K"], p["B"].shape[1]
    nv, nc, ns = p["nvisit"], p["nccd"], p["nstar"]
    nmod = nv * D * T
    ncp = (nc - 1) * K
    npar = nmod + ncp + ns * D
    rows, rhs, wts = [], [], []
    for j in np.nonzero(active)[0]:
        for d in range(D):
            a = np.zeros(npar)
            a[p["visit"][j] * D * T + d * T: p["visit"][j] * D * T + (d + 1) * T] = p["B"][j]
            for k in range(K):
                g = p["G"][j, d, k]
                c = p["ccd"][j]
                if c < nc - 1:
                    a[nmod + c * K + k] += g
                else:                                # last CCD = -(sum of the others)
                    for c2 in range(nc - 1):
                        a[nmod + c2 * K + k] -= g
            a[nmod + ncp + p["star"][j] * D + d] = -1.0
            rows.append(a); rhs.append(p["y"][j, d]); wts.append(p["w"][j])
    for s in np.nonzero(p["prior_w"] > 0)[0]:
        for d in range(D):
            a = np.zeros(npar)
            a[nmod + ncp + s * D + d] = 1.0
            rows.append(a); rhs.append(p["prior"][s, d]); wts.append(p["prior_w"][s])
    if coef_prior_w is not None:
        for i in np.nonzero(coef_prior_w.ravel() > 0)[0]:
            a = np.zeros(npar)
            a[i] = 1.0
            rows.append(a); rhs.append(coef_prior.ravel()[i]); wts.append(coef_prior_w.ravel()[i])
    if coef_prior_mat is not None:
        # (c - t)' M (c - t) as the rows of M^(1/2) (c - t), unit weight
        for v in range(nv):
            ev, V = np.linalg.eigh(coef_prior_mat[v])
            R = (V * np.sqrt(np.clip(ev, 0, None))).T
            for d in range(D):
                for row in R:
                    a = np.zeros(npar)
                    a[v * D * T + d * T: v * D * T + (d + 1) * T] = row
                    rows.append(a); rhs.append(row @ coef_prior[v, d]); wts.append(1.0)
    A, b, sw = np.array(rows), np.array(rhs), np.sqrt(wts)
    sol = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)[0]
    dc = sol[nmod:nmod + ncp].reshape(nc - 1, K)
    return (sol[:nmod].reshape(nv, D, T), np.vstack([dc, -dc.sum(0)]),
            sol[nmod + ncp:].reshape(ns, D))


@pytest.mark.parametrize("D,K", [(2, 2), (1, 1), (2, 0)])
def test_schur_equals_dense_solve(D, K):
    p = _problem(D, K, noise=0.05, seed=D + K)
    active = np.ones(len(p["star"]), np.uint8)
    active[::7] = 0
    r = _run(p, active)
    assert r.status == "ok"
    coef, dccd, xs = _dense(p, active)
    assert np.allclose(r.coef, coef, atol=1e-8)
    if K:
        assert np.allclose(r.dccd, dccd, atol=1e-8)
    used = np.isfinite(r.xstar[:, 0])
    assert np.allclose(r.xstar[used], xs[used], atol=1e-8)
    # chi2 from the residuals, degrees of freedom
    assert np.isclose(r.chi2_det, np.sum(p["w"][active == 1] * np.sum(r.resid[active == 1] ** 2, 1)))


@pytest.mark.parametrize("D,K", [(2, 2), (1, 1), (2, 0)])
def test_schur_with_coefficient_priors_equals_dense_solve(D, K):
    """Priors on polynomial terms (the photometric fit holds the spatial terms of sparse
    visits at 0 with weight 1e12), the same in every dimension as the solver requires."""
    p = _problem(D, K, order=3, nvisit=5, nccd=4, nstar=80, noise=0.05, seed=11)
    T = p["B"].shape[1]
    cp = np.zeros((p["nvisit"], D, T))
    cw = np.zeros((p["nvisit"], D, T))
    cw[1, :, 1:] = 1e12                  # visit 1: zero point only
    cp[3, :, 2] = 0.25
    cw[3, :, 2] = 1e2                    # visit 3: a soft prior on a spatial term (a prior
    #                                      on a constant term would fight the CCD gauge)
    active = np.ones(len(p["star"]), np.uint8)
    r = _run(p, active, cp, cw)
    assert r.status == "ok"
    coef, dccd, xs = _dense(p, active, cp, cw)
    assert np.allclose(r.coef, coef, atol=1e-7)
    if K:
        assert np.allclose(r.dccd, dccd, atol=1e-7)
    assert np.abs(r.coef[1, :, 1:]).max() < 1e-9


def test_noise_free_problem_recovers_truth():
    p = _problem(2, 2, noise=0.0, prior_frac=0.5)
    r = _run(p)
    assert np.allclose(r.coef, p["coef"], atol=1e-9)
    assert np.allclose(r.dccd, p["dccd"], atol=1e-9)
    assert np.allclose(r.xstar, p["xs"], atol=1e-9)
    assert r.chi2 < 1e-15


def test_chi2_per_dof_is_one_for_correct_noise():
    p = _problem(1, 1, order=3, nvisit=6, nccd=4, nstar=3000, noise=1.0, seed=5)
    r = _run(p)
    ndof = r.nobs - r.nparam
    assert abs(r.chi2 / ndof - 1) < 5 * np.sqrt(2 / ndof)


def test_basis_derivatives_match_finite_differences():
    u, v = np.array([0.3, -0.7]), np.array([0.2, 0.9])
    for kind in (0, 1, 2):
        val, du, dv = _core.basis(u, v, 5, kind, True)
        h = 1e-6
        num_u = (_core.basis(u + h, v, 5, kind)[0] - _core.basis(u - h, v, 5, kind)[0]) / (2 * h)
        num_v = (_core.basis(u, v + h, 5, kind)[0] - _core.basis(u, v - h, 5, kind)[0]) / (2 * h)
        assert np.allclose(du, num_u, atol=1e-6) and np.allclose(dv, num_v, atol=1e-6)
    # Legendre P2(x) = (3x^2 - 1)/2; term order (0,0), (1,0), (0,1), (2,0), (1,1), (0,2)
    val = _core.basis(np.array([0.5]), np.array([0.25]), 2, 0)[0][0]
    assert np.allclose(val, [1, 0.5, 0.25, (3 * 0.25 - 1) / 2, 0.125, (3 / 16 - 1) / 2])


def test_ccd_priors_hold_what_no_detection_sees_and_count_by_their_leverage():
    """A CCD parameter no detection determines sits at its prior; one the detections
    determine is theirs (the weak prior moves it by ~prior weight / data weight); a prior
    counts in ndof by its leverage: ~1 where it alone holds its parameter, ~0 elsewhere."""
    p = _problem(D=2, K=3, noise=0.0, seed=4)
    n = len(p["star"])
    K, nc = p["K"], p["nccd"]
    G = p["G"].copy()
    G[:, :, 2] = 0.0                       # parameter 2 of every CCD: no detection sees it
    base = dict(star=p["star"], visit=p["visit"], ccd=p["ccd"], active=np.ones(n, np.uint8),
                u=p["u"], v=p["v"], w=p["w"], nvisit=p["nvisit"], nccd=nc, nstar=p["nstar"],
                order=p["order"], basis="legendre", G=G, prior=p["prior"],
                prior_w=p["prior_w"])
    B = p["B"]
    pred = np.einsum("nt,ndt->nd", B, p["coef"][p["visit"]]) + \
        np.einsum("ndk,nk->nd", G, p["dccd"][p["ccd"]])
    y = pred - p["xs"][p["star"]]
    # (with the sum-zero gauge the targets of a parameter sum to 0 over the CCDs, as the
    # fitted values do)
    target = np.zeros((nc, K))
    target[:, 2] = np.linspace(-0.37, 0.37, nc)
    pw = np.full((nc, K), 1e-6)
    pw[:, 2] = 1.0
    r = solve_least_squares(LeastSquaresProblem(y=y, ccd_prior=target, ccd_prior_w=pw, **base))
    assert r.status == "ok"
    np.testing.assert_allclose(r.dccd[:, 2], target[:, 2], atol=1e-9)   # held by its prior
    np.testing.assert_allclose(r.dccd[:, :2], p["dccd"][:, :2], atol=1e-5)   # the data's
    r0 = solve_least_squares(LeastSquaresProblem(y=y, ccd_fixed=None, **base))
    # parameter 2 without a prior: held at 0 (no data), not a parameter; with its prior, one
    # parameter and one observation per CCD less the sum-zero gauge (whose constraint the
    # priors then also satisfy: one degree of freedom more); the weak priors count ~0
    assert r.nparam - r0.nparam == nc - 1
    assert r.ndof - r0.ndof == 1


@pytest.mark.parametrize("solver", ["dense", "sparse"])
@pytest.mark.parametrize("D,K", [(1, 1), (2, 2)])
def test_full_coefficient_prior_matrices_equal_dense_solve(D, K, solver):
    """A prior on a visit's polynomial as a function, (c - t)' M (c - t) with M full (the
    photometry's common-terms prior, fit.shrinkage.common_function_prior), on both paths of the
    visit block; its chi2 and observation count as the rank of M."""
    p = _problem(D, K, order=3, nvisit=5, nccd=4, nstar=80, noise=0.05, seed=12)
    T = p["B"].shape[1]
    rng = np.random.default_rng(3)
    cp = np.zeros((p["nvisit"], D, T))
    cw = np.zeros((p["nvisit"], D, T))
    cm = np.zeros((p["nvisit"], T, T))
    X = rng.normal(0, 1, (T - 3, T - 3))
    cm[2, 3:, 3:] = X @ X.T * 50.0               # visit 2: its order-2 and 3 terms, correlated
    cp[2, :, 3:] = rng.normal(0, 0.5, (D, T - 3))
    cm[4, 5, 5] = 1e3                             # visit 4: one term, as a diagonal prior would
    cp[4, :, 5] = 0.3
    active = np.ones(len(p["star"]), np.uint8)
    r = solve_least_squares(LeastSquaresProblem(
        star=p["star"], visit=p["visit"], ccd=p["ccd"], active=active, u=p["u"], v=p["v"],
        y=p["y"], w=p["w"], nvisit=p["nvisit"], nccd=p["nccd"], nstar=p["nstar"],
        order=p["order"], basis="legendre", G=p["G"], prior=p["prior"], prior_w=p["prior_w"],
        coef_prior=cp, coef_prior_w=cw, coef_prior_mat=cm, solver=solver))
    assert r.status == "ok"
    coef, dccd, xs = _dense(p, active, cp, cw, cm)
    assert np.allclose(r.coef, coef, atol=1e-7)
    if K:
        assert np.allclose(r.dccd, dccd, atol=1e-7)
    # the same as the diagonal prior where M is diagonal
    cw2 = np.zeros_like(cw)
    cw2[4, :, 5] = 1e3
    cm2 = cm.copy()
    cm2[4] = 0.0
    r2 = _run(p, active, cp, cw2, cm2)
    assert np.allclose(r2.coef, r.coef, atol=1e-9)
    # counted as the diagonal prior counts (chi2 and observations)
    assert np.isclose(r.chi2, r2.chi2, rtol=1e-10) and r.nobs == r2.nobs
    r0 = _run(p, active, cp, cw)
    assert r.nobs - r0.nobs == D * ((T - 3) + 1)
    with pytest.raises(ValueError, match="symmetric"):
        bad = cm.copy()
        bad[2, 3, 4] += 1.0
        _run(p, active, cp, cw, bad)


def test_ccd_data_weight_is_each_ccds_information_with_the_stars_eliminated():
    # sum over the active detections of w (1 - w / W_star) |G|^2 per CCD parameter, W_star the
    # star's active weight plus its prior's: what the CCD priors' leverage is measured against
    p = _problem(2, 3, nstar=80, seed=4, prior_frac=0.4)
    n = len(p["star"])
    active = (np.arange(n) % 7 != 3).astype(np.uint8)
    r = _run(p, active=active)
    act = active.astype(bool)
    W = np.bincount(p["star"][act], weights=p["w"][act], minlength=p["nstar"]) + p["prior_w"]
    Ws = W[p["star"]]
    h = np.divide(p["w"], Ws, out=np.ones(n), where=Ws > 0)     # (a star of inactive ones)
    g2 = np.einsum("ndk,ndk->nk", p["G"], p["G"])
    want = np.stack([np.bincount(p["ccd"][act], weights=(p["w"] * (1 - h) * g2[:, q])[act],
                                 minlength=p["nccd"]) for q in range(3)], axis=1)
    np.testing.assert_allclose(r.ccd_data_weight, want, rtol=1e-12)
    assert np.all(want > 0)
