"""A random-effects prior on the high-order terms of the visit polynomials (issues 13, 14).

A visit's order-9 astrometric (order-7 photometric) polynomial is determined where its stars
are; beyond the edge of its data footprint its high-order terms extrapolate fast, and within
it they carry their stars' noise. Those terms are mostly the camera's: the distortion left
over by the optics model, the flat field's and the illumination's residuals, the same in every
visit seen in the camera's frame. Visit v's terms H (degree >= ``commonFromOrder``,
``fluxCommonFromOrder``) are R_v mu + e_v, with R_v its rotation on the sky (the polar factor
of its linear terms; the identity for the photometry), mu the common terms and e_v its own
departure, N(0, tau^2 Gam). We estimate mu and tau from the visits that fit H, by the
Paule-Mandel random-effects estimator with the visits' full covariances (tau^2 makes the
weighted scatter chi2 equal to its degrees of freedom), and put the prior

    c_v,H ~ N(R_v mu, tau^2 Gam + V_mu)

on every visit. The prior is on the polynomial as a function, not term by term: a high-order
basis over a round focal plane is far from orthogonal, each coefficient's error ~100x the
function's, and a prior per term barely constrains the function. Gam is the inverse Gram
matrix of H over the data beyond what the lower terms represent (divided by |H|), so tau is the
rms over the focal plane of the departure that the visit's own low-order terms cannot absorb.

A visit whose data determine its terms to much better than tau is untouched; one whose data do
not (a partial focal plane, the extrapolated side of an edge visit) falls back on what the
other visits measured, and every visit's noise in H averages over the visits. A visit whose
departure is beyond chance against the others (a cloud's edge across it) keeps its own terms
and does not widen the others' prior. Terms a visit holds (above its order, fit.order) are
held at R_v mu instead of at 0. With fewer than MIN_VISITS visits there is no prior.

The fits estimate the prior for the visits of each filter apart: each filter's glass adds its
own distortion and flat field. This is the hierarchical shrinkage of meta-analysis
(DerSimonian & Laird 1986; Paule & Mandel 1982), with the data saying how similar the visits
are.
"""
import logging
from typing import NamedTuple

import numpy as np
# the chi2 survival function; scipy.special's, not scipy.stats.chi2.sf: the same cephes
# routine without the 0.4 s import of scipy.stats on every run
from scipy.special import chdtrc

from ..model.basis import n_terms

log = logging.getLogger("mosaicfit.fit")

__all__ = ["TAU_FLOOR_ARCSEC", "MIN_VISITS", "OUTLIER_P", "visit_rotations", "random_effects",
           "CommonPrior", "common_function_prior"]

#: arcsec: the smallest spread of the terms between visits taken (0.05 mas): a spread
#: estimated at 0 would hold every visit's terms at the common value
TAU_FLOOR_ARCSEC = 5e-5
#: visits that must determine a degree's terms before their common value is estimated
MIN_VISITS = 3


def visit_rotations(coef):
    """(nv, 2, 2) rotations of the visits: the orthogonal polar factor of each visit's linear
    terms (coefficients ``coef[:, :, 1:3]``, the basis's u and v terms)."""
    M = np.asarray(coef, float)[:, :, 1:3]
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    # a reflection (det -1) is a flip of the axes, the same for every visit: kept as it is
    return R


#: the chance below which a visit's terms are its own rather than the common ones
#: (common_function_prior): about 1 visit in 1000 wrongly left free
OUTLIER_P = 1e-3


def random_effects(d, C, Gam, tau_floor):
    """The common mean of the estimates `d` (n, ncoord, H), each coordinate with the
    covariance `C` (n, H, H) of its estimate, their departures N(0, tau^2 Gam) in each
    coordinate: tau^2 solving Q(tau^2) = (n - 1) ncoord H (Paule-Mandel, with full
    covariances). Returns (tau, mu (ncoord, H), V_mu (H, H))."""
    n, ncoord, H = d.shape
    dof = (n - 1) * ncoord * H

    def moments(t2):
        W = np.linalg.inv(C + t2 * Gam[None])
        V = np.linalg.inv(W.sum(axis=0))
        # (as matrix products: einsum's three-operand loops were 2.8 s of a 100-visit fit)
        mu = (V @ np.matmul(W, d.transpose(0, 2, 1)).sum(axis=0)).T
        r = d - mu[None]
        return float(np.sum(np.matmul(r, W) * r)), mu, V

    q0, mu, V = moments(0.0)
    t2 = 0.0
    if q0 > dof:
        lo, hi = 0.0, max(float(np.mean((d - mu[None]) ** 2))
                          / max(float(np.mean(np.diag(Gam))), 1e-300), 1e-30)
        while moments(hi)[0] > dof:
            hi *= 4.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if moments(mid)[0] > dof:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-4 * hi:
                break
        t2 = 0.5 * (lo + hi)
    tau = max(float(np.sqrt(t2)), tau_floor)
    _, mu, V = moments(tau ** 2)
    return tau, mu, V


class CommonPrior(NamedTuple):
    """common_function_prior's answer: the prior's `target` (nv, ncoord, T) and `matrix` (nv,
    T, T) per visit, the visits that keep their `own` terms, the spread `tau`, the number of
    visits `used`, and the common terms `mu` (ncoord, H) in the camera's frame with the prior's
    covariance `sigma` (H, H) = tau^2 Gam + V_mu (what a region split holds at its regions'
    consensus, fit.state.CcdTerms)."""
    target: np.ndarray
    matrix: np.ndarray
    own: np.ndarray
    tau: float
    used: int
    mu: np.ndarray
    sigma: np.ndarray


def common_function_prior(coef, cov, orders, from_order, gram, free, tau_floor, rotate=False,
                          given=None):
    """A random-effects prior on the visits' polynomial terms of degree >= `from_order`, taken
    as functions: their departures from the common terms correlated as the basis is over the
    data (a high-order basis over a round focal plane is far from orthogonal: term by term,
    each coefficient's error is ~100x what the function's is, and a prior per term barely
    constrains the function).

    `coef` (nv, ncoord, T) the visits' coefficients fitted without the prior, `cov` (nv, T, T)
    their covariances per coordinate (the stars and the other parameters profiled out),
    `orders` (nv,) the visits' orders (-1: not fitted), `gram` (T, T) the basis's mean outer
    product over the data, `free` (nv, T) bool the terms each visit fits (not held); `rotate`
    (ncoord 2): the common terms are the camera's, each visit seeing them through its rotation
    on the sky (visit_rotations). A visit's terms H (degree >= from_order) depart from the
    common ones mu as N(0, tau^2 Gam) in each coordinate, Gam =
    G_H|L^-1 / |H| with G_H|L the Gram matrix of H beyond what the lower terms represent: tau
    is the rms over the data of the departure the lower terms cannot absorb. tau and mu come
    from the visits that fit all of H (Paule-Mandel); a visit whose departure is beyond chance
    (OUTLIER_P, against the others) is its own and gets no prior; every other visit gets

        c_v,H ~ N(R_v mu, tau^2 Gam + V_mu)

    (its marginal on the terms it fits; those it holds go to R_v mu). `given` (mu, sigma, tau):
    the common terms and the prior's covariance as given (a region split's consensus), only
    the outliers judged here. Returns a CommonPrior, or None where fewer than MIN_VISITS
    visits fit H.
    """
    coef, cov, orders = np.asarray(coef, float), np.asarray(cov, float), np.asarray(orders)
    free = np.asarray(free, bool)
    nv, ncoord, T = coef.shape
    order = int(round((np.sqrt(8 * T + 1) - 3) / 2))
    lo_t = n_terms(int(from_order) - 1)
    if from_order <= 0 or from_order > order:
        return None
    H = np.arange(lo_t, T)
    L = np.arange(lo_t)
    full = (orders >= order) & np.all(free[:, H], axis=1) & np.all(
        np.isfinite(cov[:, H][:, :, H]), axis=(1, 2))
    R = np.broadcast_to(np.eye(ncoord), (nv, ncoord, ncoord)).copy()
    if rotate:
        fitted = orders >= 1
        R[fitted] = visit_rotations(coef[fitted])
    cam = np.einsum("kji,kjt->kit", R, coef)            # in the camera's frame
    G = np.asarray(gram, float)
    GHL = G[np.ix_(H, H)] - G[np.ix_(H, L)] @ np.linalg.solve(G[np.ix_(L, L)], G[np.ix_(L, H)])
    Gam = np.linalg.inv(GHL) / len(H)
    own = np.zeros(nv, bool)
    if given is not None:
        mu, Sigma, tau = np.asarray(given[0], float), np.asarray(given[1], float), given[2]
        k = np.nonzero(full)[0]
        for i in k:
            r = cam[i][:, H] - mu
            q = float(np.sum(r * np.linalg.solve(cov[i][np.ix_(H, H)] + Sigma, r.T).T))
            own[i] = chdtrc(ncoord * len(H), q) < OUTLIER_P
        k = np.nonzero(full & ~own)[0]
    while given is None:
        k = np.nonzero(full & ~own)[0]
        if len(k) < MIN_VISITS:
            if own.any():
                log.info("common terms: %d of %d visits depart from the others' beyond chance: "
                         "too few left to say what they share", int(own.sum()), int(full.sum()))
            return None
        d = cam[k][:, :, H]
        C = cov[k][:, H][:, :, H]
        tau, mu, V = random_effects(d, C, Gam, tau_floor)
        Sigma = tau ** 2 * Gam + V
        # each visit against the others' mean (leave-one-out at this tau, so that an outlier
        # cannot hide by having widened it): chi2 with |H| degrees of freedom
        Wk = np.linalg.inv(C + tau ** 2 * Gam[None])
        S = Wk.sum(axis=0)
        Sd = np.einsum("kij,kcj->ci", Wk, d)
        far = np.zeros(len(k), bool)
        for i in range(len(k)):
            Vo = np.linalg.inv(S - Wk[i])
            muo = (Sd - d[i] @ Wk[i]) @ Vo
            r = d[i] - muo
            q = float(np.sum(r * np.linalg.solve(C[i] + tau ** 2 * Gam + Vo, r.T).T))
            far[i] = chdtrc(ncoord * len(H), q) < OUTLIER_P
        if not far.any():
            break
        own[k[far]] = True
    target = np.zeros((nv, ncoord, T))
    matrix = np.zeros((nv, T, T))
    for v in range(nv):
        if orders[v] < 0 or own[v]:
            continue
        target[v][:, H] = R[v] @ mu
        s = H[free[v, H]]
        if len(s):
            j = np.searchsorted(H, s)
            Mv = np.linalg.inv(Sigma[np.ix_(j, j)])
            matrix[v][np.ix_(s, s)] = 0.5 * (Mv + Mv.T)
    return CommonPrior(target, matrix, own, float(tau), int(len(k)), mu, Sigma)
