"""The sparse path of the reduced solve (issue 16, region scale; cpp/sparse_factor.hpp): on a
strip of visits that overlap only their neighbours, and on a field where every visit overlaps
every other, the block-sparse Cholesky (and Eigen's simplicial one) give the dense solution;
singular systems are singular on every path; the automatic choice takes the sparse path
only where the visit pairs are sparse."""
import numpy as np
import pytest

from mosaicfit import _core
from mosaicfit.fit.core import SOLVERS, LeastSquaresProblem, solve_least_squares

SPARSE = ("sparse", "simplicial")


def _strip(nvisit=40, order=3, D=2, K=2, nccd=6, stars_per=50, seed=0, reach=1.5,
           prior_frac=0.2, deep=False):
    """Visit v sees the stars within `reach` of position v along a line (its neighbours
    within 2 reach share them); `deep`: every visit sees every star."""
    rng = np.random.default_rng(seed)
    T = (order + 1) * (order + 2) // 2
    nstar = stars_per * nvisit
    pos = rng.uniform(0, nvisit, nstar)
    coef = rng.normal(0, 1, (nvisit, D, T))
    dccd = rng.normal(0, 0.1, (nccd, K))
    dccd -= dccd.mean(0)
    xs = rng.normal(0, 3, (nstar, D))
    s_idx, v_idx = np.meshgrid(np.arange(nstar), np.arange(nvisit), indexing="ij")
    seen = (rng.uniform(size=s_idx.shape) < 0.9) & \
        (deep | (np.abs(pos[s_idx] - v_idx) < reach))
    star, visit = s_idx[seen].astype(np.int32), v_idx[seen].astype(np.int32)
    n = len(star)
    ccd = rng.integers(0, nccd, n).astype(np.int32)
    u = np.clip((pos[star] - visit) / reach, -1, 1) if not deep else rng.uniform(-1, 1, n)
    v = rng.uniform(-1, 1, n)
    G = np.zeros((n, D, K))
    for k in range(K):
        G[:, k % D, k] = 1.0 if k < D else rng.uniform(0.5, 1.5)
    B = _core.basis(u, v, order, 0)[0]
    pred = np.einsum("nt,ndt->nd", B, coef[visit]) + np.einsum("ndk,nk->nd", G, dccd[ccd])
    w = rng.uniform(0.5, 2.0, n)
    y = pred - xs[star] + 0.05 * rng.normal(0, 1, (n, D)) / np.sqrt(w)[:, None]
    prior_w = np.where(rng.uniform(size=nstar) < prior_frac, 4.0, 0.0)
    return dict(star=star, visit=visit, ccd=ccd, active=np.ones(n, np.uint8), u=u, v=v, y=y,
                w=w, G=G, prior=xs + 0.05 * rng.normal(0, 1, (nstar, D)) / 2.0,
                prior_w=prior_w, nvisit=nvisit, nccd=nccd, nstar=nstar, order=order)


def _solve(p, solver, **kw):
    return solve_least_squares(LeastSquaresProblem(solver=solver, **{**p, **kw}))


def _assert_same(r, d):
    assert r.status == d.status == "ok"
    scale = np.abs(d.coef).max()
    assert np.abs(r.coef - d.coef).max() <= 1e-6 * scale
    if d.dccd.size:
        assert np.abs(r.dccd - d.dccd).max() <= 1e-6 * max(np.abs(d.dccd).max(), 1e-3)
    used = np.isfinite(d.xstar[:, 0])
    assert np.array_equal(used, np.isfinite(r.xstar[:, 0]))
    assert np.abs(r.xstar[used] - d.xstar[used]).max() <= 1e-6 * np.abs(d.xstar[used]).max()
    assert np.isclose(r.chi2, d.chi2, rtol=1e-9)
    assert (r.nobs, r.nparam) == (d.nobs, d.nparam)


@pytest.mark.parametrize("D,K", [(2, 2), (1, 1), (2, 0)])
def test_sparse_equals_dense_on_a_strip(D, K):
    p = _strip(D=D, K=K, seed=D + K)
    p["active"][::9] = 0
    d = _solve(p, "dense")
    assert d.solver == "dense"
    for s in SPARSE:
        r = _solve(p, s)
        assert r.solver == s
        _assert_same(r, d)
    # a strip's factor is a band: a few blocks per visit
    assert r.fill < 0.2 and 0 < r.npairs < 3 * p["nvisit"]


def test_sparse_equals_dense_where_every_visit_overlaps_every_other():
    p = _strip(nvisit=12, stars_per=20, deep=True, seed=3)
    d = _solve(p, "dense")
    assert d.npairs == 12 * 11 // 2 and d.fill == 1.0
    for s in SPARSE:
        _assert_same(_solve(p, s), d)


def test_sparse_with_coefficient_priors_and_a_visit_without_data():
    """Coefficient priors (held terms at weight 1e12, as the photometry does) and a visit
    with no active detection (its rows held at 0) on the sparse path."""
    p = _strip(order=3, seed=7)
    T = 10
    cp = np.zeros((p["nvisit"], 2, T))
    cw = np.zeros((p["nvisit"], 2, T))
    cw[5, :, 1:] = 1e12
    cp[9, :, 2] = 0.25
    cw[9, :, 2] = 1e2
    p["active"][p["visit"] == 20] = 0
    d = _solve(p, "dense", coef_prior=cp, coef_prior_w=cw)
    for s in SPARSE:
        r = _solve(p, s, coef_prior=cp, coef_prior_w=cw)
        _assert_same(r, d)
        assert np.abs(r.coef[5, :, 1:]).max() < 1e-9
        assert np.all(r.coef[20] == 0.0)


def test_the_automatic_choice():
    strip = _strip(nvisit=40, seed=1)
    assert _solve(strip, "auto").solver == "sparse"
    assert _solve(strip, None).solver == "sparse"            # the default is auto
    deep = _solve(_strip(nvisit=30, stars_per=10, deep=True, order=2), "auto")
    assert deep.solver == "dense"
    few = _solve(_strip(nvisit=10, seed=2), "auto")           # too few visits to bother
    assert few.solver == "dense" and few.fill < 0.5


def test_solver_from_the_environment(monkeypatch):
    p = _strip(nvisit=30, seed=4)
    monkeypatch.setenv("MOSAICFIT_SOLVER", "dense")
    assert _solve(p, None).solver == "dense"
    assert _solve(p, "simplicial").solver == "simplicial"     # the argument wins
    monkeypatch.setenv("MOSAICFIT_SOLVER", "nosuch")
    with pytest.raises(ValueError, match="unknown solver"):
        _solve(p, None)
    assert SOLVERS == ("auto", "dense", "sparse", "simplicial")


@pytest.mark.parametrize("case", ["no-reference", "disconnected-half"])
def test_singular_on_every_path(case):
    """Without reference stars a translation of every visit and star is free; a strip cut in
    two whose second half has no reference star leaves that half free."""
    p = _strip(nvisit=40, seed=5)
    if case == "no-reference":
        p["prior_w"] = np.zeros(p["nstar"])
    else:
        # no detection of visits >= 20 of the stars seen by a visit < 20, no reference star
        # among the stars of visits >= 20
        low = np.zeros(p["nstar"], bool)
        low[p["star"][p["visit"] < 20]] = True
        p["active"][(p["visit"] >= 20) & low[p["star"]]] = 0
        p["prior_w"][~low] = 0.0
    for s in ("dense",) + SPARSE:
        r = _solve(p, s)
        assert r.status == "singular", (s, r.solver, r.rcond)
        assert r.rcond < 1e-13
    if case == "disconnected-half":
        assert _solve(p, "sparse").npairs < _strip(nvisit=40, seed=5)["nvisit"] * 3


def test_unknown_solver():
    with pytest.raises(ValueError, match="unknown solver"):
        _solve(_strip(nvisit=5), "cholmod")
