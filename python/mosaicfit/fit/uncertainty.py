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

The couplings between visits (through common stars) and between the polynomials and the CCD
placement are left out beyond the stars' leverage: the figures are the precision of the
solution, not its accuracy against a truth (the tests compare the two).
"""
import numpy as np

from ..model.basis import PolyBasis, n_terms
from .errors import leverage

__all__ = ["CCD_GRID", "COHERENT_SIGMA", "COHERENT_FLOOR_MAG", "polynomial_covariances",
           "astrometric_ccd_errors", "photometric_ccd_errors", "coherent_residuals"]

#: a (visit, CCD) whose residuals' median is beyond this many of its errors ...
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


def polynomial_covariances(basis, a, b, weff, vidx, nv, orders):
    """(nv, T, T) covariances of the visits' coefficients (per coordinate), from the points
    (a, b) with effective weights `weff` (0: not used); the terms above each visit's order
    (`orders`, -1: none fitted) have zero variance; a visit whose terms the points do not
    determine gets infinite variance on them."""
    T = basis.n_terms
    cov = np.zeros((nv, T, T))
    for k in range(nv):
        if orders[k] < 0:
            cov[k] = np.inf
            continue
        m = (vidx == k) & (weff > 0)
        tf = n_terms(int(orders[k]))
        B = basis.values(a[m], b[m])[:, :tf]
        N = B.T @ (weff[m, None] * B)
        ev, V = np.linalg.eigh(N)
        if len(ev) == 0 or ev[0] <= 1e-14 * max(ev[-1], 1e-300):
            cov[k, :tf, :tf] = np.inf
            continue
        cov[k, :tf, :tf] = (V / ev) @ V.T
    return cov


def _sigmas(B, C, extra2):
    """(rms, largest) of sigma = sqrt(b' C b + extra2) over the rows b of B."""
    if not np.all(np.isfinite(C)):
        return np.inf, np.inf
    var = np.maximum(np.einsum("ij,jk,ik->i", B, C, B) + extra2, 0.0)
    return float(np.sqrt(np.mean(var))), float(np.sqrt(np.max(var)))


def astrometric_ccd_errors(sol, data, camera, ccd_prior_px):
    """{(visit, ccd): (rms, largest) mas} for every fitted visit and science CCD of `camera`:
    the error per coordinate of the product over the CCD."""
    am, A = sol.astrometry, data.astrometry
    basis = am.basis
    det, star, vidx = data.det, data.star, data.vidx
    n = len(det)
    h = leverage(A.w, star, A.active, data.nstar, A.prior_w)
    weff = np.where(A.active, A.w * (1.0 - h), 0.0)            # arcsec^-2
    a, b = np.empty(n), np.empty(n)
    for c in np.unique(det.ccd):
        m = det.ccd == c
        a[m], b[m] = am.optics(*sol.placement.to_focal_plane(int(c), det.x[m], det.y[m]))
    cov = polynomial_covariances(basis, a, b, weff, vidx, len(data.visits), A.orders)
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
    out = {}
    for k, v in enumerate(data.visits):
        if not sol.has_astrometry(v) or A.orders[k] < 0:
            continue
        for c in camera.science_ccds:
            gx, gy = _grid(camera, c)
            u, vv = sol.placement.to_focal_plane(int(c), gx, gy)
            ga, gb = am.optics(u, vv)
            ox, oy = sol.placement.origin(int(c))
            var_off, var_rot = place_var[int(c)]
            extra2 = scale ** 2 * (var_off + var_rot * ((u - ox) ** 2 + (vv - oy) ** 2))
            rms, top = _sigmas(basis.values(ga, gb), cov[k], extra2)
            out[(int(v), int(c))] = (1000.0 * rms, 1000.0 * top)
    return out


def photometric_ccd_errors(sol, model, data, u, v, camera, ccd_prior_mag, solve_ccd):
    """{(visit, ccd): (rms, largest) mmag} for the visits of one filter's fit (`data`,
    `model`; (u, v) the detections' focal-plane positions) and every science CCD: the error
    of the calibration over the CCD."""
    p = data.photometry
    basis = PolyBasis(model.order, model.kind)
    h = leverage(p.w, data.star, p.active, data.nstar, p.prior_w)
    weff = np.where(p.active, p.w * (1.0 - h), 0.0)            # mag^-2
    s = model.scale
    cov = polynomial_covariances(basis, u / s, v / s, weff, data.vidx, len(data.visits),
                                 p.orders)
    zp_var = {}
    for c in camera.science_ccds:
        m = data.det.ccd == c
        zp_var[int(c)] = 1.0 / (float(np.sum(weff[m])) + 1.0 / ccd_prior_mag ** 2) \
            if solve_ccd else 0.0
    out = {}
    for k, vis in enumerate(data.visits):
        for c in camera.science_ccds:
            gx, gy = _grid(camera, c)
            gu, gv = sol.focal_plane(int(c), gx, gy)
            B = basis.values(gu / s, gv / s)
            rms, top = _sigmas(B, cov[k], zp_var[int(c)])
            out[(int(vis), int(c))] = (1000.0 * rms, 1000.0 * top)
    return out


def coherent_residuals(res, w, active, visit, ccd, min_n=5):
    """{(visit, ccd): (median, its error, n, flagged)} of the residuals `res` (weights `w`)
    of the active detections of each (visit, CCD) with at least `min_n`: the median's error
    is 1.2533 sigma / sqrt(n), sigma the residuals' robust scatter (1.4826 MAD) or their
    errors' (1 / sqrt(mean w)), the larger; flagged when the median is beyond COHERENT_SIGMA
    errors and COHERENT_FLOOR_MAG. A fitted model leaves no coherent residual on a CCD; one
    that cannot follow the data there (a cloud's edge across a visit) does."""
    out = {}
    key = np.asarray(visit, np.int64) * 1000 + np.asarray(ccd)
    keys, inv = np.unique(key[active], return_inverse=True)
    r, ww = res[active], w[active]
    for i, k in enumerate(keys):
        m = inv == i
        n = int(m.sum())
        if n < min_n:
            continue
        med = float(np.median(r[m]))
        sig = max(1.4826 * float(np.median(np.abs(r[m] - med))),
                  1.0 / np.sqrt(float(np.mean(ww[m]))))
        err = 1.2533 * sig / np.sqrt(n)
        bad = abs(med) > COHERENT_SIGMA * err and abs(med) > COHERENT_FLOOR_MAG
        out[(int(k // 1000), int(k % 1000))] = (med, err, n, bool(bad))
    return out
