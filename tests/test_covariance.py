"""The marginal covariances of the C++ core (cpp/covariance.hpp) against the inverse of the
full normal matrix of a direct dense least squares that keeps the star parameters: the
variance of the model's prediction at any point, which is what a product's error is, must
agree (it is free of the CCD gauge, which the two solvers fix differently)."""
import numpy as np
import pytest

from test_fit_core import _problem
from mosaicfit import _core
from mosaicfit.fit.core import LeastSquaresProblem, solve_least_squares


def _dense_covariance(p, active):
    """Covariance of (coefs, CCD parameters of all but the last CCD, stars); the last CCD's
    parameters are minus the sum of the others (the sum-zero gauge by elimination)."""
    D, K, T = p["D"], p["K"], p["B"].shape[1]
    nv, nc, ns = p["nvisit"], p["nccd"], p["nstar"]
    nmod, ncp = nv * D * T, (nc - 1) * K
    npar = nmod + ncp + ns * D
    N = np.zeros((npar, npar))
    for j in np.nonzero(active)[0]:
        for d in range(D):
            a = np.zeros(npar)
            o = p["visit"][j] * D * T + d * T
            a[o:o + T] = p["B"][j]
            for k in range(K):
                g, c = p["G"][j, d, k], p["ccd"][j]
                if c < nc - 1:
                    a[nmod + c * K + k] += g
                else:
                    a[nmod:nmod + ncp].reshape(nc - 1, K)[:, k] -= g
            a[nmod + ncp + p["star"][j] * D + d] = -1.0
            N += p["w"][j] * np.outer(a, a)
    for s in np.nonzero(p["prior_w"] > 0)[0]:
        for d in range(D):
            N[nmod + ncp + s * D + d, nmod + ncp + s * D + d] += p["prior_w"][s]
    return np.linalg.inv(N), nmod, ncp


def _prediction_jacobians(p, nmod, ncp, visit, ccd, u, v, d):
    """Rows of the dense parameter vector giving the model prediction (dimension d)."""
    D, K, T = p["D"], p["K"], p["B"].shape[1]
    B = _core.basis(u, v, p["order"], 0)[0]
    npar = nmod + ncp + p["nstar"] * D
    J = np.zeros((len(u), npar))
    o = visit * D * T + d * T
    J[:, o:o + T] = B
    g = np.zeros(K)
    for k in range(K):
        g[k] = 1.0 if k == d else (p["G"][0, d, k] if k >= D else 0.0)
    for k in range(K):
        if ccd < p["nccd"] - 1:
            J[:, nmod + ccd * K + k] = g[k]
        else:
            J[:, nmod:nmod + ncp].reshape(len(u), p["nccd"] - 1, K)[:, :, k] -= g[k]
    return B, g, J


@pytest.mark.parametrize("D,K", [(2, 2), (1, 1), (2, 0)])
def test_prediction_variance_equals_dense_inverse(D, K):
    p = _problem(D, K, noise=0.05, seed=10 + D + K, prior_frac=0.4)
    active = np.ones(len(p["star"]), np.uint8)
    active[::5] = 0
    r = solve_least_squares(LeastSquaresProblem(
        star=p["star"], visit=p["visit"], ccd=p["ccd"], active=active, u=p["u"], v=p["v"],
        y=p["y"], w=p["w"], nvisit=p["nvisit"], nccd=p["nccd"], nstar=p["nstar"],
        order=p["order"], basis="legendre", G=p["G"] if K else None, prior=p["prior"],
        prior_w=p["prior_w"]), covariance=True)
    assert r.status == "ok" and r.visit_cov is not None
    T = p["B"].shape[1]
    assert r.visit_cov.shape == (p["nvisit"], D, T, T)
    C, nmod, ncp = _dense_covariance(p, active)
    rng = np.random.default_rng(3)
    u, v = rng.uniform(-1, 1, 20), rng.uniform(-1, 1, 20)
    for visit in range(p["nvisit"]):
        for ccd in range(p["nccd"]):
            for d in range(D):
                B, g, J = _prediction_jacobians(p, nmod, ncp, visit, ccd, u, v, d)
                want = np.einsum("ij,jk,ik->i", J, C, J)
                got = np.einsum("it,ts,is->i", B, r.visit_cov[visit, d], B)
                if K:
                    got = got + g @ r.ccd_cov[ccd] @ g \
                        + 2.0 * B @ r.cross_cov[visit, ccd, d] @ g
                assert np.allclose(got, want, rtol=1e-6, atol=1e-12), (visit, ccd, d)


def test_covariance_only_when_asked():
    p = _problem(1, 1, noise=0.05, seed=4)
    r = solve_least_squares(LeastSquaresProblem(
        star=p["star"], visit=p["visit"], ccd=p["ccd"], active=np.ones(len(p["star"]), np.uint8),
        u=p["u"], v=p["v"], y=p["y"], w=p["w"], nvisit=p["nvisit"], nccd=p["nccd"],
        nstar=p["nstar"], order=p["order"], G=p["G"], prior=p["prior"], prior_w=p["prior_w"]))
    assert r.visit_cov is None and r.ccd_cov is None and r.cross_cov is None
