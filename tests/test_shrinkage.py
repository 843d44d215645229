"""The common-terms prior of the visit polynomials (fit.shrinkage), against analytic truth."""
import numpy as np
import pytest

from mosaicfit.fit.shrinkage import TAU_FLOOR_ARCSEC, common_function_prior, visit_rotations
from mosaicfit.model.basis import n_terms


def _rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def test_random_effects_recover_the_between_visit_variance():
    """With diagonal covariances and Gam = I the estimator is Paule-Mandel's."""
    from mosaicfit.fit.shrinkage import random_effects
    rng = np.random.default_rng(1)
    n, H, tau = 100, 60, 2.0
    var = rng.uniform(0.5, 2.0, (n, H))
    mu = rng.normal(0, 10, H)
    d = mu + rng.normal(0, tau, (n, H)) + rng.normal(0, np.sqrt(var))
    C = np.stack([np.diag(x) for x in var])
    t, m, V = random_effects(d[:, None, :], C, np.eye(H), 1e-6)
    # tau^2 from (n - 1) H = 5940 degrees of freedom: ~2% (x (1 + var / tau^2))
    assert t ** 2 == pytest.approx(tau ** 2, rel=0.08)
    assert np.sqrt(np.mean((m[0] - mu) ** 2)) < 3 * np.sqrt(np.mean(np.diag(V)))
    assert np.allclose(np.diag(V), 1.0 / np.sum(1.0 / (var + t ** 2), axis=0))
    # within the errors: the floor
    d0 = rng.normal(0, 1.0, (30, 1, 5))
    t0, m0, _ = random_effects(d0, np.stack([4.0 * np.eye(5)] * 30), np.eye(5), 1e-6)
    assert t0 == 1e-6 and np.allclose(m0, d0.mean(axis=0))


def test_visit_rotations_are_the_polar_factor_of_the_linear_terms():
    rng = np.random.default_rng(3)
    th = rng.uniform(-np.pi, np.pi, 12)
    coef = rng.normal(0, 1e-3, (12, 2, 10))
    for k, t in enumerate(th):
        # a scale and a 1e-4 shear on top of the rotation
        coef[k, :, 1:3] = 600.0 * _rot(t) @ np.array([[1.0, 1e-4], [1e-4, 1.0 - 2e-4]])
    R = visit_rotations(coef)
    for k, t in enumerate(th):
        assert np.allclose(R[k], _rot(t), atol=2e-4)


def _rotated_visits(nv=20, order=6, sig=1e-4, seed=4, npts=300):
    """Visits at random rotations sharing common terms c in the camera's frame, each fitted
    to its own points (in the camera's frame, coordinates -1..1) with errors `sig` (arcsec)."""
    from mosaicfit.model.basis import PolyBasis
    rng = np.random.default_rng(seed)
    basis = PolyBasis(order, "legendre")
    T = basis.n_terms
    c = rng.normal(0, 5e-3, (2, T))
    th = rng.uniform(-np.pi, np.pi, nv)
    coef, cov, pts = np.empty((nv, 2, T)), np.empty((nv, T, T)), []
    for k in range(nv):
        a, b = rng.uniform(-1, 1, (2, npts))
        B = basis.values(a, b)
        pts.append(B)
        truth = _rot(th[k]) @ c
        truth[:, 1:3] += 600.0 * _rot(th[k])
        f = truth @ B.T + rng.normal(0, sig, (2, npts))
        coef[k] = np.linalg.lstsq(B, f.T, rcond=None)[0].T
        cov[k] = np.linalg.inv(B.T @ B / sig ** 2)
    B = np.vstack(pts)
    return coef, cov, B.T @ B / len(B), th, c, B


def test_the_prior_is_the_common_terms_seen_through_each_rotation():
    coef, cov, gram, th, c, B = _rotated_visits()
    nv, _, T = coef.shape
    res = common_function_prior(coef, cov, np.full(nv, 6), 4, gram, np.ones((nv, T), bool),
                                TAU_FLOOR_ARCSEC, rotate=True)
    assert res.used == nv and not res.own.any() and res.tau == TAU_FLOOR_ARCSEC
    lo = n_terms(3)
    assert np.all(res.matrix[:, :lo, :] == 0) and np.all(res.target[:, :, :lo] == 0)
    for k in range(nv):
        want = _rot(th[k]) @ c[:, lo:]
        # the common function known to sig / sqrt(20 visits x 300 points / 28 terms)
        err = B[:, lo:] @ (res.target[k, :, lo:] - want).T
        assert np.sqrt(np.mean(err ** 2)) < 3 * 1e-4 / np.sqrt(20 * 300 / 28)


def test_a_visit_that_does_not_determine_its_terms_gets_the_common_ones():
    coef, cov, gram, th, c, B = _rotated_visits()
    nv, _, T = coef.shape
    cov[3] = np.inf                              # a visit whose stars cover a corner only
    coef[3, :, n_terms(3):] = 1.0                # whatever its few stars allowed
    orders = np.full(nv, 6)
    res = common_function_prior(coef, cov, orders, 4, gram, np.ones((nv, T), bool),
                                TAU_FLOOR_ARCSEC, rotate=True)
    assert res.used == nv - 1 and not res.own[3]              # not used for the estimate
    want = _rot(th[3]) @ c
    assert np.max(np.abs(res.target[3, :, n_terms(3):] - want[:, n_terms(3):])) < 5e-4
    assert np.all(np.diag(res.matrix[3])[n_terms(3):] > 0)


def test_held_terms_get_the_target_and_no_matrix():
    coef, cov, gram, th, c, B = _rotated_visits()
    nv, _, T = coef.shape
    orders = np.full(nv, 6)
    orders[5] = 4
    free = np.ones((nv, T), bool)
    free[5, n_terms(4):] = False
    res = common_function_prior(coef, cov, orders, 4, gram, free, TAU_FLOOR_ARCSEC,
                                rotate=True)
    assert np.all(res.matrix[5][n_terms(4):, :] == 0) and np.all(res.matrix[5][:, n_terms(4):] == 0)
    assert np.all(np.diag(res.matrix[5])[n_terms(3):n_terms(4)] > 0)
    assert np.allclose(res.target[5, :, n_terms(4):], (_rot(th[5]) @ c)[:, n_terms(4):],
                       atol=5e-4)


def test_no_prior_from_too_few_visits_or_when_off():
    coef, cov, gram, th, c, B = _rotated_visits(nv=2)
    free = np.ones((2, coef.shape[2]), bool)
    assert common_function_prior(coef, cov, np.full(2, 6), 4, gram, free, TAU_FLOOR_ARCSEC,
                                 rotate=True) is None
    coef, cov, gram, th, c, B = _rotated_visits()
    free = np.ones((len(th), coef.shape[2]), bool)
    assert common_function_prior(coef, cov, np.full(len(th), 6), 0, gram, free,
                                 TAU_FLOOR_ARCSEC, rotate=True) is None


def test_the_per_visit_covariances_count_the_prior():
    from mosaicfit.fit.uncertainty import polynomial_covariances
    from mosaicfit.model.basis import PolyBasis
    basis = PolyBasis(4, "legendre")
    rng = np.random.default_rng(5)
    # visit 0 covers the field, visit 1 one corner only: its order-4 terms are undetermined
    a = np.r_[rng.uniform(-1, 1, 400), rng.uniform(0.8, 1.0, 400)]
    b = np.r_[rng.uniform(-1, 1, 400), rng.uniform(0.8, 1.0, 400)]
    vidx = np.repeat([0, 1], 400)
    weff = np.ones(800)
    orders = np.array([4, 4])
    cov = polynomial_covariances(basis, a, b, weff, vidx, 2, orders)
    assert np.all(np.isfinite(cov[0]))
    pw = np.zeros((2, basis.n_terms))
    pw[:, n_terms(3):] = 1e6                         # the prior on the order-4 terms
    cp = polynomial_covariances(basis, a, b, weff, vidx, 2, orders, pw)
    assert np.all(np.isfinite(cp[1]))
    # a prior only adds information; with the data's weak in a direction, the prior's variance
    assert np.all(np.diag(cp[0]) <= np.diag(cov[0]) * (1 + 1e-9))
    assert np.all(np.diag(cp[1])[n_terms(3):] <= 1e-6 * (1 + 1e-9))
    # the same prior as matrices (fit.shrinkage.common_function_prior's)
    pm = np.stack([np.diag(x) for x in pw])
    assert np.allclose(polynomial_covariances(basis, a, b, weff, vidx, 2, orders,
                                              prior_mat=pm), cp)


def test_each_filter_has_its_own_common_terms():
    """A filter's glass adds its own distortion: the visits of each filter share their terms,
    not those of another filter (fit.astrometry._common_prior)."""
    from types import SimpleNamespace
    from mosaicfit.fit.astrometry import _common_prior
    from mosaicfit.fit.core import LeastSquaresProblem
    from mosaicfit.model.basis import PolyBasis
    order, nv, npts = 6, 8, 400
    T = n_terms(order)
    rng = np.random.default_rng(9)
    common = {"HSC-I": rng.normal(0, 5e-3, (2, T)), "HSC-R": rng.normal(0, 5e-3, (2, T))}
    bands = ["HSC-I", "HSC-R"] * (nv // 2)
    th = rng.uniform(-np.pi, np.pi, nv)
    coef = np.empty((nv, 2, T))
    for k in range(nv):
        coef[k] = _rot(th[k]) @ (common[bands[k]] + rng.normal(0, 1e-4, (2, T)))
        coef[k, :, 1:3] = 600.0 * _rot(th[k])
    # every visit's stars over the whole field, each tied to the catalogue (no leverage)
    vidx = np.repeat(np.arange(nv), npts).astype(np.int32)
    a, b = rng.uniform(-1, 1, (2, nv * npts))
    n = nv * npts
    w = np.full(n, 1e8)                               # 0.1 mas detections, arcsec^-2
    star = np.arange(n)
    prior_w = np.full(n, 1e12)
    lsp = LeastSquaresProblem(
        star=star, visit=vidx, ccd=np.zeros(n, np.int32), active=np.ones(n, bool), u=a, v=b,
        y=np.zeros((n, 2)), w=w, G=np.zeros((n, 2, 0)), prior=np.zeros((n, 2)),
        prior_w=prior_w, coef_prior=np.zeros((nv, 2, T)), coef_prior_w=np.zeros((nv, 2, T)),
        nvisit=nv, nccd=1, nstar=n, order=order, basis="legendre")
    model = SimpleNamespace(basis=PolyBasis(order, "legendre"))
    M = _common_prior(model, coef, a, b, w, star, np.ones(n, bool), n, prior_w, vidx,
                      np.arange(nv), np.full(nv, order), lsp, 4, bands)
    lo = n_terms(3)
    for k in range(nv):
        want = (_rot(th[k]) @ common[bands[k]])[:, lo:]
        other = (_rot(th[k]) @ common["HSC-R" if bands[k] == "HSC-I" else "HSC-I"])[:, lo:]
        assert np.max(np.abs(lsp.coef_prior[k, :, lo:] - want)) < 5e-4
        assert np.max(np.abs(lsp.coef_prior[k, :, lo:] - other)) > 2e-3
        assert np.all(np.diag(M[k])[lo:] > 0) and np.all(M[k][:lo, :] == 0)


# -- the photometry's prior on the visit polynomials as functions -----------------------------

def _gamma(gram, H):
    """The departures' shape: the inverse Gram matrix of H beyond the lower terms, / |H|."""
    L = np.arange(H[0])
    GHL = gram[np.ix_(H, H)] - gram[np.ix_(H, L)] @ np.linalg.solve(gram[np.ix_(L, L)],
                                                                     gram[np.ix_(L, H)])
    return np.linalg.inv(GHL) / len(H)


def _function_visits(nv=12, order=5, from_order=3, tau=0.0, sig=1e-3, outlier=None, seed=7,
                     npts=400):
    """Visits sharing one function (a flat field) in the focal plane, each seen through its
    own stars' noise: least-squares coefficients with their exact (correlated) covariances in
    a Chebyshev basis over a disc; departures N(0, tau^2 Gam) (an rms of tau over the points
    beyond what the terms below `from_order` absorb); visit `outlier` departs by 20 times
    `sig`."""
    from mosaicfit.model.basis import PolyBasis
    rng = np.random.default_rng(seed)
    basis = PolyBasis(order, "chebyshev")
    T = basis.n_terms
    common = rng.normal(0, 0.01, T)
    H = np.arange(n_terms(from_order - 1), T)
    r, t = np.sqrt(rng.uniform(0, 1, 20000)), rng.uniform(0, 2 * np.pi, 20000)
    B0 = basis.values(r * np.cos(t), r * np.sin(t))
    Lg = np.linalg.cholesky(_gamma(B0.T @ B0 / len(B0), H))
    coef, cov, pts = np.empty((nv, T)), np.empty((nv, T, T)), []
    for k in range(nv):
        r, t = np.sqrt(rng.uniform(0, 1, npts)), rng.uniform(0, 2 * np.pi, npts)
        a, b = r * np.cos(t), r * np.sin(t)
        B = basis.values(a, b)
        truth = common.copy()
        if tau > 0:
            truth[H] += tau * Lg @ rng.normal(0, 1, len(H))
        f = B @ truth + rng.normal(0, sig * np.sqrt(npts / T), npts)
        if k == outlier:
            f += 20 * sig * np.sqrt(npts / T) * np.cos(4 * t) * r ** 4
        N = B.T @ B / (sig ** 2 * npts / T)
        cov[k] = np.linalg.inv(N)
        coef[k] = np.linalg.lstsq(B, f, rcond=None)[0]
        pts.append(B)
    B = np.vstack(pts)
    return coef[:, None, :], cov, B.T @ B / len(B), common, H, B


def test_the_function_prior_pulls_every_visit_to_the_common_function():
    coef, cov, gram, common, H, B = _function_visits()
    nv, _, T = coef.shape
    res = common_function_prior(coef, cov, np.full(nv, 5), 3, gram, np.ones((nv, T), bool),
                                5e-5)
    target, M, own, tau, used = res[:5]
    assert used == nv and not own.any()
    assert tau == 5e-5                               # no departures: the floor
    # the common function within the errors of the mean of 12 visits, as a function over the
    # points (the coefficients alone scatter ~100x more: the basis is far from orthogonal)
    mean_err = np.sqrt(np.mean((B[:, H] @ (target[0, 0, H] - common[H])) ** 2))
    one_err = np.sqrt(np.mean((B[:, H] @ (coef[0, 0, H] - common[H])) ** 2))
    assert mean_err < one_err / 2.0
    # the prior is the inverse of the mean's covariance (tau at the floor) on H, 0 elsewhere
    assert np.all(M[:, :H[0], :] == 0) and np.allclose(M, np.swapaxes(M, 1, 2))
    Gam = tau ** 2 * _gamma(gram, H)
    V = np.linalg.inv(sum(np.linalg.inv(c[np.ix_(H, H)] + Gam) for c in cov))
    assert np.allclose(M[0][np.ix_(H, H)], np.linalg.inv(V + Gam), rtol=1e-6)


def test_a_visit_beyond_chance_keeps_its_own_terms_and_does_not_widen_the_others():
    coef, cov, gram, common, H, B = _function_visits(outlier=4)
    nv, _, T = coef.shape
    target, M, own, tau, used = common_function_prior(coef, cov, np.full(nv, 5), 3, gram,
                                                      np.ones((nv, T), bool), 5e-5)[:5]
    assert list(np.nonzero(own)[0]) == [4] and used == nv - 1
    assert np.all(M[4] == 0) and tau == 5e-5


def test_the_function_spread_is_measured_and_held_terms_go_to_the_common_value():
    coef, cov, gram, common, H, B = _function_visits(nv=40, tau=2e-3, sig=5e-4)
    nv, _, T = coef.shape
    free = np.ones((nv, T), bool)
    orders = np.full(nv, 5)
    orders[7] = 4                                   # a partial focal plane: order 4
    free[7, n_terms(4):] = False
    res = common_function_prior(coef, cov, orders, 3, gram, free, 5e-5)
    target, M, own, tau, used = res[:5]
    # tau^2 from (39 - 1) x 15 degrees of freedom, the noise a quarter of it: ~10%
    assert tau == pytest.approx(2e-3, rel=0.25) and used == nv - 1 and not own.any()
    assert np.all(M[7][n_terms(4):, :] == 0) and np.any(M[7][H[0], H[0]] > 0)
    assert np.allclose(target[7][:, H], target[0][:, H])
    # too few visits: none
    assert common_function_prior(coef[:2], cov[:2], orders[:2], 3, gram, free[:2], 5e-5) is None

    # held at given common terms (a region split's consensus): the same prior, the outliers
    # judged against them
    again = common_function_prior(coef, cov, orders, 3, gram, free, 5e-5,
                                  given=(res.mu, res.sigma, res.tau))
    assert np.allclose(again.matrix, M) and np.allclose(again.target, target)
    coef2 = coef.copy()
    coef2[3, 0, H] += 30 * np.sqrt(np.diag(res.sigma))
    moved = common_function_prior(coef2, cov, orders, 3, gram, free, 5e-5,
                                  given=(res.mu, res.sigma, res.tau))
    assert list(np.nonzero(moved.own)[0]) == [3] and np.all(moved.matrix[3] == 0)
