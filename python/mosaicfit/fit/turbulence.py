"""The turbulence of each visit: a Gaussian process on the astrometric residuals.

After the polynomial fit the residuals of one visit still carry the atmosphere's displacement
field (Léget et al. 2021; here ~10-15 mas^2 below 1' on real HSC visits), correlated over
arcminutes. Each visit's field is estimated as the posterior mean of a Gaussian process:

* kernel: von Kármán, each coordinate independent with the same isotropic covariance
  sigma^2 g(r / l), g the Matérn function of index 5/6 (the von Kármán spectrum's
  correlation; l = outer scale / 2 pi), as treegp's VonKarman kernel;
* hyper-parameters per visit from the residuals' correlation function
  xi_+(r) = <dr_i . dr_j> over pairs of distinct detections at separation r, fitted as
  2 sigma^2 g(r / l) (treegp's "two-pcf" method) below `r_fit` (the polynomial has taken
  out the larger scales);
* noise: the measurements' own variance, from the error model fitted to the residuals with
  the kernel's variance as a known additive part (fit.errors): without it the error model
  would take the turbulence for noise and the GP would smooth it away;
* prediction: the posterior mean on a regular grid of the tract plane (30" by default), in
  tiles of ~8' whose GP sees the detections within a margin of 3 l around them (the kernel is
  below 0.05 there): a few hundred detections per Cholesky instead of one of 10^4.

treegp (PyPI) implements the same model with a dense GP and TreeCorr's correlation functions;
it is not used because a dense GP of the ~10^4 detections of an HSC visit costs ~10^12 flops
per visit (this tiling: ~10^9), and because its dependencies (scikit-learn, TreeCorr,
iminuit) would triple the install for one kernel and one correlation function.

The fit validates every field on reserved stars (fitReserveFraction, as gbdes's): detections
of stars held out of the whole fit, whose scatter about their own mean must go down when the
field is removed, or the field is not used.
"""
import logging
import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from .. import _core
from ..model.turbulence import TurbulenceField

log = logging.getLogger("mosaicfit.fit")

__all__ = ["von_karman", "eb_kernel", "eb_fraction", "correlation_function", "fit_kernel",
           "predict_grid", "predict_nodes", "visit_kernel",
           "visit_field", "reserved_stars", "reserved_scatter"]

NU = 5.0 / 6.0
_DX = 0.0005
_X = np.arange(120001) * _DX             # r / length from 0 to 60


def _matern_table():
    from scipy.special import gamma, kv
    x = _X[1:]
    g = 2.0 ** (1.0 - NU) / gamma(NU) * x ** NU * kv(NU, x)
    return np.r_[1.0, g, 0.0, 0.0]        # zeros past the end: 0 beyond r / length = 60


_G = None


def von_karman(r, length):
    """The von Kármán correlation g(r / length) (1 at 0), tabulated (0.0005 steps of
    r / length: the interpolation error is below 1e-6). The table is uniform, so its index is
    computed rather than searched (np.interp's binary search was most of a fit's GP time)."""
    global _G
    if _G is None:
        _G = _matern_table()
    t = np.minimum(np.asarray(r, float) * (1.0 / (float(length) * _DX)), len(_X))
    i = t.astype(np.intp)
    t -= i
    g0 = _G[i]
    return g0 + t * (_G[i + 1] - g0)


_EB = None


def _eb_table():
    """A_T(x) of a curl-free field whose components' correlation is g (A_L + A_T = 2 g):
    A_T(x) = 2 / x^2 int_0^x s g(s) ds, tabulated on the grid of g; and its tail coefficient
    (A_T = 2 S / x^2 beyond the table, S the whole integral)."""
    global _EB
    if _EB is None:
        von_karman(0.0, 1.0)                    # fills the table of g
        g = _G[:len(_X)]
        f = _X * g
        S = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * _DX)])
        at = np.ones_like(_X)
        at[1:] = 2.0 * S[1:] / _X[1:] ** 2
        _EB = (at, float(S[-1]))
    return _EB


def eb_kernel(dx, dy, length, b_fraction):
    """(Kxx, Kyy, Kxy) / sigma^2 at separations (dx, dy) of a von Karman displacement field
    with a share `b_fraction` of divergence-free (B) and the rest curl-free (E) power, each
    component of variance 1. A curl-free field d = grad phi has longitudinal and transverse
    correlations A_L = (r A_T)' and A_T, with A_L + A_T = 2 g(r / length) (the trace, the
    same for any share); a divergence-free one has them swapped. b_fraction = 0.5 is the
    isotropic kernel g of each component alone."""
    dx, dy = np.asarray(dx, float), np.asarray(dy, float)
    r = np.hypot(dx, dy)
    g = von_karman(r, length)
    at_tab, s_inf = _eb_table()
    x = r / float(length)
    t = np.minimum(x / _DX, len(at_tab) - 1.0)
    i = np.minimum(t.astype(np.intp), len(at_tab) - 2)
    t -= i
    at = at_tab[i] + t * (at_tab[i + 1] - at_tab[i])
    far = x > _X[-1]
    if np.any(far):
        at = np.where(far, 2.0 * s_inf / np.maximum(x, 1e-300) ** 2, at)
    al = 2.0 * g - at
    a_l = (1.0 - b_fraction) * al + b_fraction * at
    a_t = (1.0 - b_fraction) * at + b_fraction * al
    with np.errstate(invalid="ignore", divide="ignore"):
        ux = np.where(r > 0, dx / r, 0.0)
        uy = np.where(r > 0, dy / r, 0.0)
    d = a_l - a_t
    return a_t + d * ux * ux, a_t + d * uy * uy, d * ux * uy


def eb_fraction(xy, res, sigma2, length, r_max, min_significance=3.0):
    """The B share of a field of kernel (sigma2, length) from the residuals `res` (n, 2) at
    `xy` (n, 2): the pairs closer than `r_max` project their residuals on their separation
    (radial and transverse components); the mean of rr - tt is (1 - 2 b) sigma^2 (A_L - A_T)
    of a curl-free field. For uncorrelated residuals each pair's rr - tt has variance 2 s^4
    and the pairs are uncorrelated; a (1 - 2 b) below `min_significance` times its error gives
    0.5, the isotropic kernel. Returns (b, significance of 1 - 2 b)."""
    xy = np.asarray(xy, float)
    res = np.asarray(res, float)
    pairs = cKDTree(xy).query_pairs(r_max, output_type="ndarray")
    if len(pairs) < 10:
        return 0.5, 0.0
    i, j = pairs[:, 0], pairs[:, 1]
    dx, dy = xy[j, 0] - xy[i, 0], xy[j, 1] - xy[i, 1]
    r = np.hypot(dx, dy)
    ok = r > 0
    i, j, dx, dy, r = i[ok], j[ok], dx[ok], dy[ok], r[ok]
    ux, uy = dx / r, dy / r
    ri = res[i, 0] * ux + res[i, 1] * uy
    rj = res[j, 0] * ux + res[j, 1] * uy
    ti = -res[i, 0] * uy + res[i, 1] * ux
    tj = -res[j, 0] * uy + res[j, 1] * ux
    D = ri * rj - ti * tj
    kxx, kyy, kxy = eb_kernel(r, np.zeros_like(r), length, 0.0)   # along x: kxx = A_L
    m = sigma2 * (kxx - kyy)
    mm = float(np.sum(m * m))
    if mm <= 0:
        return 0.5, 0.0
    c = float(np.sum(D * m) / mm)
    s2n = float(np.mean(np.sum(res ** 2, axis=1))) / 2.0
    signif = abs(c) / math.sqrt(2.0 * s2n ** 2 / mm)
    if signif < min_significance:
        return 0.5, signif
    return float(np.clip(0.5 * (1.0 - c), 0.0, 1.0)), signif


def correlation_function(xy, res, r_max, n_bins=16, r_min=None):
    """xi_+(r) = <res_i . res_j> over pairs of distinct points closer than `r_max` (same unit
    as `xy`), in logarithmic bins from `r_min` (default r_max / 100). Returns (bin centres,
    xi_+, pairs per bin)."""
    xy = np.ascontiguousarray(xy, float)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(np.asarray(res)) != len(xy):
        raise ValueError(f"correlation_function: positions {xy.shape} must be (n, 2), with "
                         f"one residual row each ({np.shape(res)})")
    r_min = r_max / 100.0 if r_min is None else r_min
    if not 0 < r_min < r_max:
        raise ValueError(f"correlation_function: need 0 < r_min < r_max, not {r_min}, {r_max}")
    edges = np.geomspace(r_min, r_max, n_bins + 1)
    if len(xy) < 2:
        return np.sqrt(edges[1:] * edges[:-1]), np.full(n_bins, np.nan), np.zeros(n_bins, int)
    # the pairs binned in C++ (cpp/kdtree.hpp binned_pair_products: the count and every
    # component's products in one pass over the pairs, same bins as scipy's count_neighbors,
    # edges[k] < d <= edges[k + 1]; scipy's dual-tree counting needs one pass for the count
    # and one per component, ~3x the time, and this is most of the turbulence phase when no
    # visit has a field: ~200 correlation functions in a 200-visit run)
    res = np.ascontiguousarray(np.asarray(res, float).reshape(len(xy), -1))
    n, s = _core.binned_pair_products(xy, res, np.ascontiguousarray(edges))
    with np.errstate(invalid="ignore", divide="ignore"):
        xi = np.where(n > 0, s / n, np.nan)
    return np.sqrt(edges[1:] * edges[:-1]), xi, n


def fit_kernel(r, xip, npairs, lengths=None, pair_var=None):
    """(sigma^2, length, significance) of xi_+(r) = 2 sigma^2 g(r / length): for each length
    of a logarithmic grid, sigma^2 by weighted linear least squares (weights: the pairs per
    bin), the best length by chi2. Significance: sigma^2 over its error.

    With `pair_var`, the variance of one pair's product r_i . r_j for uncorrelated residuals
    (2 sigma_n^4 for a noise sigma_n per axis), the error is the noise's: under that null
    hypothesis the pairs' products are uncorrelated (even pairs sharing a point), so a bin of
    P pairs has variance pair_var / P and the amplitude pair_var / sum(P f^2). Without it,
    from the bins' scatter about the fit, which also counts how far the correlation function
    departs from the kernel's shape (the visit polynomial takes out the field's largest
    scales, so that the residuals' correlation drops below the kernel's beyond a few
    arcminutes): a real field then looks insignificant."""
    ok = np.isfinite(xip) & (npairs > 0)
    if ok.sum() < 3:
        return 0.0, float("nan"), 0.0
    r, y, w = r[ok], xip[ok], npairs[ok].astype(float)
    if lengths is None:
        # up to half the fitted range: beyond it the polynomial has taken the field out
        lengths = np.geomspace(r.min() / 3.0, r.max() / 2.0, 50)
    best = None
    for ell in lengths:
        f = 2.0 * von_karman(r, ell)
        a = float(np.sum(w * f * y) / max(np.sum(w * f * f), 1e-300))
        if a <= 0:
            continue
        chi2 = float(np.sum(w * (y - a * f) ** 2))
        if best is None or chi2 < best[0]:
            best = (chi2, a, ell, f)
    if best is None:
        return 0.0, float("nan"), 0.0
    chi2, a, ell, f = best
    if pair_var is not None:
        var_a = float(pair_var) / max(np.sum(w * f * f), 1e-300)
    else:
        dof = max(len(r) - 2, 1)
        var_a = (chi2 / dof) / max(np.sum(w * f * f), 1e-300)
    return a, float(ell), float(a / math.sqrt(var_a)) if var_a > 0 else float("inf")


def predict_grid(xy, res, noise_var, sigma2, length, step, tile=480.0, margin=None,
                 max_train=2000, b_fraction=0.5):
    """The GP posterior mean of `res` (n, 2) observed at `xy` (n, 2) with noise variances
    `noise_var`, on a grid of `step` covering the points: a TurbulenceField. Units: those of
    `xy` for lengths (arcsec), of `res` for the field. With `b_fraction` other than 0.5 the
    two components are one GP of the E/B kernel (:func:`eb_kernel`), else each its own of
    the isotropic kernel."""
    (x0, y0), out, _ = predict_nodes(xy, res, noise_var, sigma2, length, step, tile, margin,
                                     max_train, b_fraction)
    return TurbulenceField(x0, y0, step, out[0], out[1])


def predict_nodes(xy, res, noise_var, sigma2, length, step, tile=480.0, margin=None,
                  max_train=2000, b_fraction=0.5, variance=False):
    """The GP posterior mean of each column of `res` (n, k) (isotropic kernel, each column
    its own GP; or, k = 2 and `b_fraction` other than 0.5, one GP of the E/B kernel) on a
    grid of `step` covering the points: ((x0, y0) of node (0, 0), means (k, ny, nx), and
    with `variance` the posterior variance of one column (ny, nx), else None). Each tile of
    `tile` sees the points within `margin` (default 3 lengths) of it."""
    margin = float(np.clip(3.0 * length, 60.0, 600.0)) if margin is None else margin
    res = np.asarray(res, float).reshape(len(xy), -1)
    lo = xy.min(axis=0) - step
    hi = xy.max(axis=0) + step
    nx = int(math.ceil((hi[0] - lo[0]) / step)) + 1
    ny = int(math.ceil((hi[1] - lo[1]) / step)) + 1
    gx = lo[0] + step * np.arange(nx)
    gy = lo[1] + step * np.arange(ny)
    out = np.zeros((res.shape[1], ny, nx))
    var = np.full((ny, nx), float(sigma2)) if variance else None
    # nodes per tile
    per = max(1, int(round(tile / step)))
    # the tiles' factorisations are small (a few hundred points): a multi-threaded BLAS only
    # spins on them (7.0 s against 0.45 s of CPU for a 6000-point visit on 2 busy cores);
    # mosaic.py sets OPENBLAS_NUM_THREADS=1 itself, this covers the library's other callers
    with threadpool_limits(limits=1, user_api="blas"):
        _predict_tiles(xy, res, noise_var, sigma2, length, gx, gy, per, margin, max_train, out,
                       b_fraction, var)
    return (float(lo[0]), float(lo[1])), out, var


def _predict_tiles(xy, res, noise_var, sigma2, length, gx, gy, per, margin, max_train, out,
                   b_fraction=0.5, var=None):
    ny, nx = len(gy), len(gx)
    for ty in range(0, ny, per):
        for tx in range(0, nx, per):
            x0, x1 = gx[tx], gx[min(tx + per, nx) - 1]
            y0, y1 = gy[ty], gy[min(ty + per, ny) - 1]
            m = ((xy[:, 0] > x0 - margin) & (xy[:, 0] < x1 + margin)
                 & (xy[:, 1] > y0 - margin) & (xy[:, 1] < y1 + margin))
            idx = np.nonzero(m)[0]
            if len(idx) == 0:
                continue
            if len(idx) > max_train:      # keep the nearest to the tile's centre
                c = np.array([0.5 * (x0 + x1), 0.5 * (y0 + y1)])
                d = np.max(np.abs(xy[idx] - c), axis=1)
                idx = idx[np.argsort(d)[:max_train]]
            p = xy[idx]
            qx, qy = np.meshgrid(gx[tx:tx + per], gy[ty:ty + per])
            if b_fraction != 0.5:
                pred = _tile_eb(p, res[idx], noise_var[idx], sigma2, length, b_fraction,
                                np.column_stack([qx.ravel(), qy.ravel()]))
                if pred is not None:
                    out[0, ty:ty + per, tx:tx + per] = pred[:, 0].reshape(qx.shape)
                    out[1, ty:ty + per, tx:tx + per] = pred[:, 1].reshape(qx.shape)
                continue
            d = cdist(p, p)
            K = sigma2 * von_karman(d, length)
            K[np.diag_indices_from(K)] += noise_var[idx]
            try:
                cho = cho_factor(K, lower=True, overwrite_a=True, check_finite=False)
            except np.linalg.LinAlgError:
                continue
            alpha = cho_solve(cho, res[idx], check_finite=False)
            ks = sigma2 * von_karman(cdist(np.column_stack([qx.ravel(), qy.ravel()]), p), length)
            pred = ks @ alpha
            for k in range(out.shape[0]):
                out[k, ty:ty + per, tx:tx + per] = pred[:, k].reshape(qx.shape)
            if var is not None:        # sigma^2 - k*' (K + N)^-1 k*
                red = np.sum(ks * cho_solve(cho, ks.T, check_finite=False).T, axis=1)
                var[ty:ty + per, tx:tx + per] = np.maximum(sigma2 - red, 0.0).reshape(qx.shape)


def _tile_eb(p, res, noise_var, sigma2, length, b_fraction, q):
    """The posterior mean (m, 2) at `q` of one tile's GP of the E/B kernel; None if its
    matrix is not positive definite."""
    n = len(p)
    kxx, kyy, kxy = eb_kernel(p[:, None, 0] - p[None, :, 0], p[:, None, 1] - p[None, :, 1],
                              length, b_fraction)
    K = sigma2 * np.block([[kxx, kxy], [kxy, kyy]])
    K[np.diag_indices_from(K)] += np.r_[noise_var, noise_var]
    try:
        alpha = cho_solve(cho_factor(K, lower=True, overwrite_a=True, check_finite=False),
                          np.r_[res[:, 0], res[:, 1]], check_finite=False)
    except np.linalg.LinAlgError:
        return None
    qxx, qyy, qxy = eb_kernel(q[:, None, 0] - p[None, :, 0], q[:, None, 1] - p[None, :, 1],
                              length, b_fraction)
    a, b = alpha[:n], alpha[n:]
    return sigma2 * np.stack([qxx @ a + qxy @ b, qxy @ a + qyy @ b], axis=1)


def visit_kernel(xy, res, r_fit=600.0, min_points=200, min_significance=5.0):
    """The von Kármán kernel of one visit's residuals `res` (n, 2) at tract-plane positions
    `xy` (n, 2), arcsec: (sigma^2 [arcsec^2] or 0 when there is no significant correlated
    residual, length [arcsec], info dict with sigma_mas, length_arcmin, significance and the
    correlation function)."""
    info = dict(n=int(len(xy)))
    if len(xy) < min_points:
        info["why"] = f"{len(xy)} detections (< {min_points})"
        return 0.0, float("nan"), info
    r, xip, npairs = correlation_function(xy, res, r_fit, r_min=r_fit / 60.0)
    # the noise of the pairs' products if the residuals were uncorrelated: 2 s^4, s^2 their
    # variance per axis (the field's own share included, which only makes the test stricter)
    s2n = float(np.mean(np.sum(np.asarray(res, float) ** 2, axis=1))) / 2.0
    sigma2, length, signif = fit_kernel(r, xip, npairs, pair_var=2.0 * s2n ** 2)
    info.update(sigma_mas=math.sqrt(max(sigma2, 0.0)) * 1000.0,
                length_arcmin=length / 60.0 if np.isfinite(length) else float("nan"),
                significance=signif, r_arcmin=(r / 60.0).tolist(),
                xi_before_mas2=(xip * 1e6).tolist(), pairs=npairs.tolist())
    if not (sigma2 > 0 and signif >= min_significance):
        info["why"] = f"no significant correlated residual ({signif:.1f} sigma)"
        return 0.0, length, info
    return sigma2, length, info


def visit_field(xy, res, noise_var, sigma2, length, step, info, r_fit=600.0, eb=False,
                after=True):
    """The turbulence field of one visit (posterior mean on the grid, :func:`predict_grid`)
    with the kernel of :func:`visit_kernel`, isotropic or (`eb`) with the E/B share the
    residuals show; adds the correlation function after it to `info` (`after`: the
    diagnostics show the last field's only, and each costs as much as the kernel's)."""
    b = 0.5
    if eb:
        # from the pairs within a few lengths (4: A_L - A_T is small beyond), where the data
        # say it; else the isotropic kernel
        b, b_signif = eb_fraction(xy, res, sigma2, length, 4.0 * length)
        info.update(b_fraction=b, eb_significance=b_signif)
    field = predict_grid(xy, res, noise_var, sigma2, length, step, b_fraction=b)
    field.params.update(sigma=info["sigma_mas"], lenarcm=info["length_arcmin"],
                        signif=info["significance"], bfrac=b)
    if after:
        left = res - np.stack(field(xy[:, 0], xy[:, 1]), axis=1)
        _, xia, _ = correlation_function(xy, left, r_fit, r_min=r_fit / 60.0)
        info["xi_after_mas2"] = (xia * 1e6).tolist()
    return field


def reserved_stars(det, star, nstar, fraction):
    """(nstar,) bool: the stars held out of the fit, a `fraction` of them chosen by a hash of
    each star's first detection (exposure, x, y), so that the same stars are held out
    whatever the association's numbering."""
    if fraction <= 0 or nstar == 0:
        return np.zeros(nstar, bool)
    key = (np.asarray(det.exp, np.uint64) * np.uint64(1 << 40)
           + (np.asarray(np.round(det.x * 64), np.int64) & 0xFFFFF).astype(np.uint64) * np.uint64(1 << 20)
           + (np.asarray(np.round(det.y * 64), np.int64) & 0xFFFFF).astype(np.uint64))
    first = np.full(nstar, np.iinfo(np.uint64).max, np.uint64)
    np.minimum.at(first, star, key)
    h = first.copy()                  # splitmix64
    with np.errstate(over="ignore"):
        h = (h + np.uint64(0x9E3779B97F4A7C15))
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return u < fraction


def reserved_scatter(pos, w, star, vidx, nv, rows, nsigma=5.0):
    """Per visit, the rms per axis (arcsec) of the detections `rows` (of reserved stars) about
    their stars' weighted mean positions, from positions `pos` (n, 2) and weights `w`, with one
    `nsigma` clip about the mean; the correction sqrt(n / (n - 1)) for the star's own mean.
    Returns (rms per visit (nv,), detections per visit)."""
    s = star[rows]
    p, ww, vv = pos[rows], w[rows], vidx[rows]
    uniq, inv = np.unique(s, return_inverse=True)
    for _ in range(2):
        W = np.bincount(inv, weights=ww, minlength=len(uniq))
        mx = np.bincount(inv, weights=ww * p[:, 0], minlength=len(uniq)) / np.maximum(W, 1e-300)
        my = np.bincount(inv, weights=ww * p[:, 1], minlength=len(uniq)) / np.maximum(W, 1e-300)
        e = p - np.stack([mx[inv], my[inv]], axis=1)
        z = np.sum(e ** 2, axis=1) * ww
        good = z < nsigma ** 2 * 2
        ww = np.where(good, ww, 0.0)
    cnt = np.bincount(inv, weights=(ww > 0).astype(float), minlength=len(uniq))
    corr = np.where(cnt[inv] > 1, cnt[inv] / np.maximum(cnt[inv] - 1, 1), np.nan)
    use = (ww > 0) & np.isfinite(corr)
    e2 = np.sum(e ** 2, axis=1) / 2.0 * corr
    n_v = np.bincount(vv[use], minlength=nv)
    s_v = np.bincount(vv[use], weights=e2[use], minlength=nv)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.where(n_v > 0, s_v / n_v, np.nan)), n_v
