"""The uncertainty of each CCD's products, from the normal equations (issue 14).

For a visit v the covariance of its polynomial's coefficients is taken from its own
detections, each weighted by its share of the information, w_j (1 - h_j), h_j the leverage
of its star (:func:`mosaicfit.fit.errors.leverage`: the star's position or magnitude, which
the least squares eliminates, takes that share). The terms above the visit's order are held
(fit.order) and have none. The error of the product at a point of a CCD is

    sigma^2(x) = b(x)' C_v b(x) + sigma_ccd^2(x)

with b(x) the basis at the point and sigma_ccd the error of the CCD's placement (astrometry:
offset and rotation from all the detections on the CCD, with the placement's prior;
photometry: the CCD's zero point with its prior). The CCD's figure is the largest sigma over a
grid of points covering it: the rms of sigma over the grid (the expected rms error of the
product against the truth) and its largest value, per coordinate (mas) or in magnitudes
(mmag). A CCD on which a
visit has no star gets the polynomial's extrapolation there, which grows fast outside the
region its stars cover: that is what marks CCDs outside the visit's data footprint.

Up to EXACT_MAX_PARAMS visit parameters the figures come from the fit's exact marginal
covariances instead (cpp/covariance.hpp: the stars profiled out, the couplings between visits
through their common stars and with the CCD placement or zero points included); beyond, and
for commonFluxCorr, from the per-visit estimate above, which leaves those couplings out
beyond the stars' leverage. Either is the precision of the solution, not its accuracy against
a truth (the tests compare the two); the photometric figures add what the residuals show the
model misses (visit_misfit, ccd_excess).
"""
import logging

import numpy as np

from ..model.basis import PolyBasis, n_terms
from ..model.groups import index_groups
from .clipping import chi2_quantile
from .core import solve_least_squares
from .errors import leverage
from .order import HELD

__all__ = ["CCD_GRID", "COHERENT_SIGMA", "COHERENT_FLOOR_MAG", "polynomial_covariances",
           "astrometric_ccd_errors", "photometric_ccd_errors", "coherent_residuals",
           "visit_misfit", "ccd_excess", "exact_affordable", "EXACT_MAX_PARAMS"]

log = logging.getLogger("mosaicfit.fit")

#: a (visit, CCD) whose residuals' plane is beyond chance at this many normal sigma ...
COHERENT_SIGMA = 5.0
#: ... and beyond this many magnitudes is one the model does not describe
COHERENT_FLOOR_MAG = 0.002

#: points across x and y of each CCD where the products' errors are evaluated
CCD_GRID = (5, 9)


def _grid(camera, ccd):
    d = camera[int(ccd)]
    gx, gy = np.meshgrid(np.linspace(0, d.width - 1, CCD_GRID[0]),
                         np.linspace(0, d.height - 1, CCD_GRID[1]))
    return gx.ravel(), gy.ravel()


def _grid_rows(sol, camera, ccds, basis, scale):
    """(B, npt): the photometric basis rows (CCDs x grid points, T) at the grid points of each
    of `ccds` (npt each), the focal plane scaled by `scale`: the same in every visit."""
    rows = [basis.values(*(np.asarray(t) / scale for t in sol.focal_plane(c, *_grid(camera, c))))
            for c in ccds]
    return np.concatenate(rows), len(rows[0])


def polynomial_covariances(basis, a, b, weff, vidx, nv, orders, prior_w=None, prior_mat=None):
    """(nv, T, T) covariances of the visits' coefficients (per coordinate), from the points
    (a, b) with effective weights `weff` (0: not used) and the coefficients' priors `prior_w`
    (nv, T) and `prior_mat` (nv, T, T) if any (fit.shrinkage); the terms above each visit's
    order (`orders`, -1: none fitted) have zero variance; a visit whose terms the points and
    priors do not determine gets infinite variance on them."""
    T = basis.n_terms
    cov = np.zeros((nv, T, T))
    # the used points grouped by visit once (a mask per visit is O(visits x points): 23 s of
    # a 100-visit strip)
    use = np.nonzero(weff > 0)[0]
    use = use[np.argsort(vidx[use], kind="stable")]
    bounds = np.searchsorted(vidx[use], np.arange(nv + 1))
    for k in range(nv):
        if orders[k] < 0:
            cov[k] = np.inf
            continue
        m = use[bounds[k]:bounds[k + 1]]
        tf = n_terms(int(orders[k]))
        B = basis.values(a[m], b[m])[:, :tf]
        N = B.T @ (weff[m, None] * B)
        if prior_w is not None:
            N[np.diag_indices(tf)] += prior_w[k, :tf]
        if prior_mat is not None:
            N += prior_mat[k, :tf, :tf]
        ev, V = np.linalg.eigh(N)
        if len(ev) == 0 or ev[0] <= 1e-14 * max(ev[-1], 1e-300):
            cov[k, :tf, :tf] = np.inf
            continue
        cov[k, :tf, :tf] = (V / ev) @ V.T
    return cov


def astrometric_ccd_errors(sol, data, camera, ccd_prior_px):
    """{(visit, ccd): (rms, largest) mas} for every fitted visit and science CCD of `camera`:
    the error per coordinate of the product over the CCD."""
    am, A = sol.astrometry, data.astrometry
    if A.problem is not None and exact_affordable(A.problem):
        out = _exact_astrometric_errors(sol, data, camera, ccd_prior_px)
        if out is not None:
            return out
    basis = am.basis
    det, star, vidx = data.det, data.star, data.vidx
    n = len(det)
    h = leverage(A.w, star, A.active, data.nstar, A.prior_w)
    weff = np.where(A.active, A.w * (1.0 - h), 0.0)            # arcsec^-2
    a, b = np.empty(n), np.empty(n)
    for c, m in index_groups(det.ccd):
        a[m], b[m] = am.optics(*sol.placement.to_focal_plane(int(c), det.x[m], det.y[m]))
    prior_w = None
    if A.problem is not None and A.problem.coef_prior_w is not None:
        prior_w = np.asarray(A.problem.coef_prior_w)[:, 0, :]
        prior_w = np.where(prior_w < HELD, prior_w, 0.0)        # the held terms are not fitted
    cov = polynomial_covariances(basis, a, b, weff, vidx, len(data.visits), A.orders, prior_w,
                                 None if A.problem is None else A.problem.coef_prior_mat)
    # the CCD placement: offset (per coordinate) and rotation, in pixels and radians, from the
    # detections of all visits on the CCD (pixel scale: the single-frame WCS's)
    scale = float(np.median(det.pixscale))                    # arcsec / pixel
    place_var = {}
    for c in camera.science_ccds:
        d = camera[int(c)]
        half = 0.5 * np.hypot(d.width, d.height)
        m = det.ccd == c
        ox, oy = sol.placement.origin(int(c))
        r2 = (data.u0[m] - ox) ** 2 + (data.v0[m] - oy) ** 2
        s_off = float(np.sum(weff[m])) * scale ** 2 + 1.0 / ccd_prior_px ** 2
        s_rot = float(np.sum(weff[m] * r2)) * scale ** 2 + (half / ccd_prior_px) ** 2
        place_var[int(c)] = (1.0 / s_off, 1.0 / s_rot)
    # each CCD's grid, basis rows and placement variance: the same in every visit
    ccds = [int(c) for c in camera.science_ccds]
    rows, extra = [], []
    for c in ccds:
        gx, gy = _grid(camera, c)
        u, vv = sol.placement.to_focal_plane(c, gx, gy)
        ga, gb = am.optics(u, vv)
        ox, oy = sol.placement.origin(c)
        var_off, var_rot = place_var[c]
        extra.append(scale ** 2 * (var_off + var_rot * ((u - ox) ** 2 + (vv - oy) ** 2)))
        rows.append(basis.values(ga, gb))
    out = {}
    if not ccds:
        return out
    B = np.concatenate(rows)                       # (CCDs x grid points, T)
    extra2 = np.concatenate(extra)
    npt = len(rows[0])
    for k, v in enumerate(data.visits):
        if not sol.has_astrometry(v) or A.orders[k] < 0:
            continue
        if not np.all(np.isfinite(cov[k])):
            out.update({(int(v), c): (np.inf, np.inf) for c in ccds})
            continue
        # sigma = sqrt(b' C b + extra2) at every grid point of every CCD, in one product
        var = np.maximum(np.einsum("ij,ij->i", B @ cov[k], B) + extra2, 0.0).reshape(-1, npt)
        rms, top = np.sqrt(np.mean(var, axis=1)), np.sqrt(np.max(var, axis=1))
        out.update({(int(v), c): (1000.0 * float(r_), 1000.0 * float(t_))
                    for c, r_, t_ in zip(ccds, rms, top)})
    return out


def photometric_ccd_errors(sol, model, data, u, v, camera, ccd_prior_mag, solve_ccd,
                           misfit=None, cov=None, excess=None):
    """{(visit, ccd): (rms, largest) mmag} for the visits of one filter's fit (`data`,
    `model`; (u, v) the detections' focal-plane positions) and every science CCD: the error
    of the calibration over the CCD. `misfit` (per visit, mag): the scatter of the CCDs'
    residuals the visit's model leaves beyond their noise (:func:`visit_misfit`), added in
    quadrature: where the model does not describe a visit its figures say so; `excess`
    ({(visit, ccd): mag}) the same for each CCD's own residuals.

    `cov`: the last solve with its marginal covariances (one polynomial per visit, one zero
    point per CCD of ``data.ccds``): then the error at a point is exactly
    b' C_v b + 2 b' C_vc + C_c, the couplings between visits and with the CCD zero points
    included, which the per-visit estimate leaves out."""
    p = data.photometry
    basis = PolyBasis(model.order, model.kind)
    if cov is not None and cov.visit_cov is not None:
        return _exact_photometric_errors(sol, model, data, camera, basis, ccd_prior_mag,
                                         solve_ccd, misfit, cov, excess or {})
    h = leverage(p.w, data.star, p.active, data.nstar, p.prior_w)
    weff = np.where(p.active, p.w * (1.0 - h), 0.0)            # mag^-2
    s = model.scale
    cov = polynomial_covariances(basis, u / s, v / s, weff, data.vidx, len(data.visits),
                                 p.orders, prior_mat=p.prior_mat)
    zp_var = {}
    for c in camera.science_ccds:
        m = data.det.ccd == c
        zp_var[int(c)] = 1.0 / (float(np.sum(weff[m])) + 1.0 / ccd_prior_mag ** 2) \
            if solve_ccd else 0.0
    ccds = [int(c) for c in camera.science_ccds]
    out = {}
    if not ccds:
        return out
    B, npt = _grid_rows(sol, camera, ccds, basis, s)
    zp = np.repeat([zp_var[c] for c in ccds], npt)
    excess = excess or {}
    for k, vis in enumerate(data.visits):
        if not np.all(np.isfinite(cov[k])):
            out.update({(int(vis), c): (np.inf, np.inf) for c in ccds})
            continue
        sys2 = 0.0 if misfit is None else float(misfit[k]) ** 2
        ex2 = np.repeat([excess.get((int(vis), c), 0.0) ** 2 for c in ccds], npt)
        # sigma = sqrt(b' C b + the CCD's and the visit's extra variance) at every grid point
        # of every CCD, in one product
        var = np.maximum(np.einsum("ij,ij->i", B @ cov[k], B) + zp + sys2 + ex2,
                         0.0).reshape(-1, npt)
        rms, top = np.sqrt(np.mean(var, axis=1)), np.sqrt(np.max(var, axis=1))
        out.update({(int(vis), c): (1000.0 * float(r_), 1000.0 * float(t_))
                    for c, r_, t_ in zip(ccds, rms, top)})
    return out


def coherent_residuals(res, w, active, visit, ccd, x, y, camera, min_n=6, z=COHERENT_SIGMA):
    """{(visit, ccd): (rms, its noise, n, flagged)} of the residuals `res` (weights `w`) of
    the active detections of each (visit, CCD) with at least `min_n`: a plane (offset and
    slopes across the CCD) fitted to them by weighted least squares, `rms` its rms over the
    CCD (mag) and `noise` the rms such a plane has from the errors alone (the errors scaled
    by the scatter about the plane where larger). Flagged when the plane is beyond chance at
    `z` normal sigma (chi2 with 3 degrees of freedom) and beyond COHERENT_FLOOR_MAG. A model
    that describes the data leaves no such plane on a CCD; one that cannot follow them there
    (a cloud's edge across the visit) does."""
    key = np.asarray(visit, np.int64) * 1000 + np.asarray(ccd)
    act = np.nonzero(active)[0]
    keys, inv, n = np.unique(key[act], return_inverse=True, return_counts=True)
    inv = inv.ravel()
    if len(keys) == 0:
        return {}
    # every (visit, CCD) at once: the weighted normal equations of the plane from per-group
    # sums, 3 x 3 inverses as one batch (a loop over ~20000 CCDs of a 200-visit run cost
    # ~1.5 s a call in numpy's per-call overheads)
    c = (keys % 1000).astype(int)
    wid = np.array([camera[int(k)].width for k in c], float)
    hgt = np.array([camera[int(k)].height for k in c], float)
    ww, r = np.asarray(w, float)[act], np.asarray(res, float)[act]
    A = np.stack([np.ones(len(act)), x[act] / wid[inv] - 0.5, y[act] / hgt[inv] - 0.5], axis=1)
    G = len(keys)

    def sums(v):
        return np.bincount(inv, weights=v, minlength=G)
    N = np.empty((G, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            N[:, i, j] = N[:, j, i] = sums(ww * A[:, i] * A[:, j])
    rhs = np.stack([sums(ww * r * A[:, i]) for i in range(3)], axis=1)
    use = n >= min_n
    ok = use & (np.abs(np.linalg.det(N)) > 0)
    C = np.zeros((G, 3, 3))
    C[ok] = np.linalg.inv(N[ok])
    b = np.einsum("gij,gj->gi", C, rhs)
    resid = r - np.einsum("ni,ni->n", A, b[inv])
    chi2 = sums(ww * resid ** 2)
    scale = np.maximum(1.0, chi2 / np.maximum(n - 3, 1))
    C *= scale[:, None, None]
    dchi2 = np.einsum("gi,gij,gj->g", b, N, b) / scale      # b' C^-1 b
    M = np.array([1.0, 1.0 / 12.0, 1.0 / 12.0])     # the plane's mean square over the CCD
    rms = np.sqrt(np.einsum("gi,i,gi->g", b, M, b))
    noise = np.sqrt(np.einsum("gii,i->g", C, M))
    bad = (dchi2 > float(chi2_quantile(3, z))) & (rms > COHERENT_FLOOR_MAG)
    return {(int(k // 1000), int(k % 1000)): (float(rms[g]), float(noise[g]), int(n[g]),
                                              bool(bad[g]))
            for g, k in enumerate(keys) if ok[g]}


def visit_misfit(coherent, visits):
    """(nvisit,) mag: what the CCDs' residual planes of each visit hold beyond their noise,
    sqrt(max(0, <rms^2 - noise^2>)) over its CCDs (`coherent`, from
    :func:`coherent_residuals`), the mean weighted by each CCD's precision 1 / noise^4 (the
    variance of rms^2 by chance is ~ noise^4): zero within the noise where the model
    describes the visit, the size of what it misses where it does not (a cloud's edge, which
    no smooth polynomial follows). Unweighted, one CCD of 9 faint stars (plane 226 mmag,
    noise 207) made a clean visit of the 30-visit check look 8 mmag off and lose every
    product."""
    num = {int(v): 0.0 for v in visits}
    den = {int(v): 0.0 for v in visits}
    for (v, _), (med, err, _, _) in coherent.items():
        if v in num and err > 0:
            num[v] += (med * med - err * err) / err ** 4
            den[v] += 1.0 / err ** 4
    return np.array([np.sqrt(max(0.0, num[int(v)] / den[int(v)])) if den[int(v)] > 0 else 0.0
                     for v in visits])


def ccd_excess(coherent):
    """{(visit, ccd): mag}: what each CCD's residual plane (`coherent`, from
    :func:`coherent_residuals`) holds beyond its noise, sqrt(max(0, rms^2 - noise^2)), the
    moment estimate of the model's misfit there, significant or not: a field-edge CCD of
    the cloud's edge on the 30-visit check of issue 14 is 11 mmag off the truth with its
    residuals' plane at 10.3 mmag against a noise of 3.7 (2.8 sigma alone; its neighbours
    say the same). Noise alone adds ~its own size on half the CCDs: a product should rather
    be missing than wrong."""
    return {k: float(np.sqrt(rms * rms - noise * noise))
            for k, (rms, noise, n, bad) in coherent.items() if rms > noise}


def _exact_photometric_errors(sol, model, data, camera, basis, ccd_prior_mag, solve_ccd,
                              misfit, cov, excess):
    """photometric_ccd_errors from the marginal covariances of the fit (`cov`)."""
    s = model.scale
    T = basis.n_terms
    par = {int(c): k for k, c in enumerate(data.ccds)}
    ccds = [int(c) for c in camera.science_ccds]
    out = {}
    if not ccds:
        return out
    # (built once, not per (visit, CCD): that was 4.9 s of a 100-visit strip's photometry)
    B, npt = _grid_rows(sol, camera, ccds, basis, s)
    pc = np.array([par.get(c, -1) for c in ccds])
    seen = np.repeat(pc >= 0, npt)                 # CCDs with a fitted zero point
    pcr = np.repeat(np.maximum(pc, 0), npt)
    for k, vis in enumerate(data.visits):
        Cv = cov.visit_cov[k, 0, :T, :T]
        sys2 = 0.0 if misfit is None else float(misfit[k]) ** 2
        exc2 = np.repeat([excess.get((int(vis), c), 0.0) ** 2 for c in ccds], npt)
        # (quadratic forms as a product and a row sum: einsum's three-operand loop is slower)
        var = np.sum((B @ Cv) * B, axis=1) + sys2 + exc2
        if solve_ccd:
            cross = cov.cross_cov[k, pcr, 0, :T, 0]                  # (points, T)
            var += np.where(seen, cov.ccd_cov[pcr, 0, 0] + 2.0 * np.sum(B * cross, axis=1),
                            ccd_prior_mag ** 2)     # no detection on the CCD: its prior
        var = np.maximum(var, 0.0).reshape(len(ccds), npt)
        rms, top = np.sqrt(np.mean(var, axis=1)), np.sqrt(np.max(var, axis=1))
        out.update({(int(vis), c): (1000.0 * float(r_), 1000.0 * float(t_))
                    for c, r_, t_ in zip(ccds, rms, top)})
    return out


#: the exact covariances invert the visit block (nvisit x n_terms square): up to this size
#: (~70 visits at order 9 in astrometry, ~110 at order 7 in photometry; a few seconds), the
#: per-visit estimate beyond
EXACT_MAX_PARAMS = 4000


def coefficient_covariances(problem, basis, a, b, w, star, active, nstar, prior_w, vidx, nv,
                            orders):
    """(cov (nv, T, T) per coordinate, gram (T, T), how) of the visits' coefficients of the
    least-squares `problem` solved at the points (a, b) with weights `w`: its exact marginal
    covariances (the stars and every other parameter profiled out) where affordable, else the
    per-visit estimate with the stars' share removed by their leverage (a little narrower: the
    CCD parameters' share is left out); gram the basis's mean outer product over the active
    points; how "exact" or "per-visit". What fit.shrinkage.common_function_prior needs."""
    if exact_affordable(problem):
        cov = solve_least_squares(problem, covariance=True).visit_cov[:, 0]
        how = "exact"
    else:
        h = leverage(w, star, active, nstar, prior_w)
        weff = np.where(active, w * (1.0 - h), 0.0)
        cov = polynomial_covariances(basis, a, b, weff, vidx, nv, orders)
        how = "per-visit"
    # the Gram matrix in chunks of points (the basis of all of them is 0.5 GB at 200 visits)
    rows = np.nonzero(active)[0]
    gram = np.zeros((basis.n_terms, basis.n_terms))
    for i in range(0, len(rows), 1 << 16):
        B = basis.values(a[rows[i:i + (1 << 16)]], b[rows[i:i + (1 << 16)]])
        gram += B.T @ B
    return cov, gram / max(len(rows), 1), how


def exact_affordable(problem):
    """Whether the exact covariances of `problem` are cheap enough (EXACT_MAX_PARAMS)."""
    n = problem.nvisit * n_terms(problem.order)
    if n > EXACT_MAX_PARAMS:
        log.info("per-CCD uncertainties from the per-visit estimate: the exact covariances "
                 "of %d visit parameters would cost minutes (limit %d)", n, EXACT_MAX_PARAMS)
        return False
    return True


def _exact_astrometric_errors(sol, data, camera, ccd_prior_px):
    """astrometric_ccd_errors from the marginal covariances of the fit's last problem: per
    grid point and coordinate b' C_v b + 2 b' C_vc g + g' C_c g, g the derivative by the
    CCD's placement (offset, rotation) there."""
    am, A = sol.astrometry, data.astrometry
    p = A.problem
    cov = solve_least_squares(p, covariance=True)
    scale = float(np.median(data.det.pixscale))               # arcsec / pixel
    if cov.visit_cov is None:
        return None                   # singular: the caller falls back to the estimate
    T = n_terms(p.order)
    par = {int(c): k for k, c in enumerate(data.ccds)}
    fixed = np.zeros(p.nccd, bool) if p.ccd_fixed is None else np.asarray(p.ccd_fixed, bool)
    rotation = bool(p.G is not None and np.any(np.asarray(p.G)[:, :, 2] != 0))
    placement = sol.placement
    # the grid points of every science CCD at once: their geometry is the visits' own
    ccds = [int(c) for c in camera.science_ccds]
    parts = []
    for c in ccds:
        gx, gy = _grid(camera, c)
        u0, v0 = placement.nominal(c, gx, gy)
        ox, oy = placement.origin(c)
        dx, dy, th = placement.offsets.get(c, (0.0, 0.0, 0.0))
        parts.append(placement.place(ox, oy, dx, dy, th, u0, v0))
    npt = len(parts[0][0])
    u, vv, ru, rv = (np.concatenate([q[i] for q in parts]) for i in range(4))
    ga, gb = am.optics(u, vv)
    B = am.basis.values(ga, gb)[:, :T]
    pc = np.array([par.get(c, -1) for c in ccds])
    free = np.repeat((pc >= 0) & ~fixed[np.maximum(pc, 0)], npt)     # placement fitted
    absent = np.repeat(pc < 0, npt)                                   # no detections
    pcp = np.repeat(np.maximum(pc, 0), npt)
    half = np.repeat([0.5 * np.hypot(camera[c].width, camera[c].height) for c in ccds], npt)
    # a CCD without detections in any visit: its placement's prior (a CCD held,
    # solveCcd=False, sits at the camera's placement, taken as known)
    var_absent = scale ** 2 * ccd_prior_px ** 2 * (1.0 + (ru ** 2 + rv ** 2) / half ** 2)
    Cc = cov.ccd_cov[pcp[free]]                                       # (m, K, K)
    out = {}
    for k, v in enumerate(data.visits):
        if not sol.has_astrometry(v) or A.orders[k] < 0:
            continue
        coef = np.asarray(am.coefficients[int(v)])[None]
        G = am.placement_derivatives(coef, np.zeros(len(u), int), ga, gb, u, vv, ru, rv,
                                      rotation)
        var = np.zeros((len(u), 2))
        for d in range(2):
            # (quadratic forms as products and row sums: einsum's three-operand loops are
            # 5x slower here)
            var[:, d] = np.sum((B @ cov.visit_cov[k, d]) * B, axis=1)
            g = G[free, d, :]
            gc = np.matmul(g[:, None, :], Cc)[:, 0, :] \
                + 2.0 * np.matmul(B[free][:, None, :], cov.cross_cov[k, pcp[free], d])[:, 0, :]
            var[free, d] += np.sum(gc * g, axis=1)
            var[absent, d] += var_absent[absent]
        var = np.maximum(var, 0.0).reshape(len(ccds), npt * 2)
        rms = 1000.0 * np.sqrt(np.mean(var, axis=1))
        top = 1000.0 * np.sqrt(np.max(var, axis=1))
        out.update({(int(v), c): (float(r), float(t)) for c, r, t in zip(ccds, rms, top)})
    return out

