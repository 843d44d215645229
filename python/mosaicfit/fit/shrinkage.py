"""A random-effects prior on the high-order terms of the visit polynomials (issue 14).

A visit's order-9 polynomial is determined where its stars are; beyond the edge of its data
footprint its high-order terms extrapolate fast, and a CCD there gets a product several mas
off. Those terms are mostly the camera's distortion left over by the optics model, which is the
same in every visit seen in the camera's frame: visit v's terms are R_v c + e_v, with R_v its
rotation on the sky (the polar factor of its linear terms), c the common terms and e_v its own
departure. We estimate c and the spread tau of e_v per degree from the visits that determine
them, by the Paule-Mandel random-effects estimator (the between-visit variance that makes the
weighted scatter chi2 equal to its degrees of freedom), and put the prior

    c_v,t ~ N(R_v c_t, tau_d^2 + var(c_t))

on every visit's terms of degree d >= ``commonFromOrder``. A visit whose data determine a term
to much better than tau is untouched; one whose data do not (a partial focal plane, the
extrapolated side of an edge visit) falls back on what the other visits measured instead of
on whatever its few stars allow. With one visit, or where fewer than MIN_VISITS visits
determine a degree, there is no prior. Terms a visit holds (above its order, fit.order) are
held at R_v c instead of at 0.

The fit estimates the prior for the visits of each filter apart (fit.astrometry): each
filter's glass adds its own distortion.

This is the hierarchical shrinkage of meta-analysis (DerSimonian & Laird 1986; Paule & Mandel
1982), applied per polynomial degree: the data say how similar the visits are.
"""
import numpy as np

from ..model.basis import n_terms

__all__ = ["TAU_FLOOR_ARCSEC", "MIN_VISITS", "visit_rotations", "paule_mandel",
           "common_terms_prior"]

#: arcsec: the smallest spread of a degree's terms between visits taken (0.05 mas): a spread
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


def paule_mandel(d, var, group):
    """The random-effects variance tau^2 common to groups of estimates.

    `d` (n,) estimates with variances `var` (n,), `group` (n,) ints: estimates of the same
    quantity share a group. tau^2 solves sum (d - mu_g)^2 / (var + tau^2) = n - G, mu_g the
    weighted mean of group g with weights 1 / (var + tau^2); 0 where the scatter is within the
    errors. Returns (tau2, mu (G,), var_mu (G,)) with the groups numbered 0..G-1.
    """
    d, var, group = np.asarray(d, float), np.asarray(var, float), np.asarray(group, int)
    G = int(group.max()) + 1 if len(group) else 0
    dof = len(d) - G

    def moments(t2):
        w = 1.0 / (var + t2)
        sw = np.bincount(group, weights=w, minlength=G)
        mu = np.bincount(group, weights=w * d, minlength=G) / np.where(sw > 0, sw, 1.0)
        return float(np.sum(w * (d - mu[group]) ** 2)), mu, 1.0 / np.where(sw > 0, sw, np.inf)

    q0, mu, vmu = moments(0.0)
    if dof <= 0 or q0 <= dof:
        return 0.0, mu, vmu
    lo, hi = 0.0, max(float(np.var(d - mu[group])) * 4.0, 1e-30)
    while moments(hi)[0] > dof:          # Q decreases with tau^2 towards 0
        hi *= 4.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if moments(mid)[0] > dof:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-6 * hi:
            break
    t2 = 0.5 * (lo + hi)
    _, mu, vmu = moments(t2)
    return t2, mu, vmu


def common_terms_prior(coef, var, orders, from_order, held=None):
    """The prior on the visits' terms of degree >= `from_order`.

    `coef` (nv, 2, T) the visits' coefficients (arcsec) fitted without the prior, `var` (nv, T)
    their variances per coordinate (inf where the visit's data do not determine them), `orders`
    (nv,) the visits' polynomial orders (-1: not fitted), `held` (nv, T) bool the terms each
    visit holds. Returns (target, weight, spread): target and weight (nv, 2, T) for the terms the
    prior covers (weight 0 elsewhere; on held terms the target only, weight 0: the caller keeps
    its own), spread {degree: (tau arcsec, visits used)} for the degrees estimated.
    """
    coef, var, orders = np.asarray(coef, float), np.asarray(var, float), np.asarray(orders)
    nv, _, T = coef.shape
    order = int(round((np.sqrt(8 * T + 1) - 3) / 2))
    held = np.zeros((nv, T), bool) if held is None else np.asarray(held, bool)
    target = np.zeros_like(coef)
    weight = np.zeros_like(coef)
    spread = {}
    fitted = orders >= 1
    if from_order <= 0 or fitted.sum() < MIN_VISITS:
        return target, weight, spread
    R = np.zeros((nv, 2, 2))
    R[fitted] = visit_rotations(coef[fitted])
    # each visit's terms in the camera's frame (the rotation is orthogonal and the variance
    # the same in both coordinates, so the variances carry over)
    cam = np.einsum("kji,kjt->kit", R, coef)
    for deg in range(max(int(from_order), 2), order + 1):
        ts = np.arange(n_terms(deg - 1), n_terms(deg))
        use = fitted & (orders >= deg) & np.all(np.isfinite(var[:, ts]) & (var[:, ts] > 0)
                                                & ~held[:, ts], axis=1)
        if use.sum() < MIN_VISITS:
            continue
        k = np.nonzero(use)[0]
        # groups: (term, coordinate); estimates: one per visit
        d = cam[k][:, :, ts].reshape(len(k), -1)                     # (visits, 2 * terms)
        vv = np.repeat(var[k][:, None, ts], 2, axis=1).reshape(len(k), -1)
        grp = np.broadcast_to(np.arange(d.shape[1]), d.shape)
        t2, mu, vmu = paule_mandel(d.ravel(), vv.ravel(), grp.ravel())
        tau = max(float(np.sqrt(t2)), TAU_FLOOR_ARCSEC)
        spread[deg] = (tau, int(len(k)))
        mu = mu.reshape(2, len(ts))
        vmu = vmu.reshape(2, len(ts))
        on = np.nonzero(fitted)[0]
        tgt = np.einsum("kij,jt->kit", R[on], mu)                    # back to each visit's frame
        target[on[:, None], :, ts[None, :]] = np.moveaxis(tgt, 2, 1)
        wt = 1.0 / (tau ** 2 + vmu.mean(axis=0))                      # per term
        free = ~held[on][:, ts]                                       # (visits, terms)
        weight[on[:, None], :, ts[None, :]] = (free * wt[None, :])[:, :, None]
    return target, weight, spread
