"""Diagnostics of a mosaic solution: hscPipe's plots and files, and a one-page report.

``write_all(sol, outdir)`` writes into ``outdir`` (``mosaic.py --diagnostics --diagDir=DIR``
and ``--config outputDiag=True outputDir=DIR`` pass ``DIR/TTTT``).

Per visit (focal-plane maps, u and v in 15 micron focal-plane pixels from the optical axis,
CCD outlines at their fitted positions with their numbers, CCDs without detections in the
visit dashed):

* ``ResPosArrow2D_<visit>.png``: left, the astrometric residual (model - star) of every
  detection used, turned to the focal-plane axes, reference-matched stars green, internal
  red, with an arrow key; right, their weighted means in 1024-px cells with their own key and
  the rms those means would have from the errors alone (structure shows as an excess);
* ``fcont_<visit>.png``: the flux correction 10^(-0.4 (P_v(u, v) - P_v(axis) + dC)) by which
  the calibration multiplies fluxes, relative to the optical axis (P_v the visit's polynomial,
  dC the CCD's term);
* ``jcont_<visit>.png``: the Jacobian J (pixel area relative to the optical axis) of the visit's
  TAN-SIP about the optical axis, which should be concentric; beside it, J minus the best
  concentric pattern (its centre and rms also in ``index.html``).

All visits: ``DFlux2D.png`` (weighted mean photometric residuals in focal-plane cells:
detection - star, and calibrated - catalogue), ``ResFlux.png`` (residual histogram with its
sigma, CCD terms against radius, residuals by visit and by CCD), ``MdM.png`` (residual against
magnitude, matched and internal stars, calibrated - catalogue), ``PosDPos.png`` (residuals
against xi and eta with running medians), ``ResPosScatter.png`` (dxi against deta with
histograms, sigmas, and the distribution of residual / error).

hscPipe's files, with meas_mosaic's columns, order and header lines:

* ``ccd.dat``: ``chip centerXFp centerYFp yaw``: the fitted focal-plane position of each
  CCD's centre (15 micron pixels) and its yaw less its quarter turns (radians);
* ``ccdScale.dat``: ``chip scale``: the CCD's flux scale fchip = 10^(-0.4 dC);
* ``coeffs.dat``: per visit ``visit A D`` (the tangent point, radians: the sky at the
  optical axis), ``visit x0 y0`` (offset of the polynomials' origin from the focal-plane
  origin: 0, the origin is the optical axis), then ``visit a b ap bp`` for k = 0..ncoeff-1 in
  meas_mosaic's order (total order n = 1..N, then decreasing power of u): xi = sum_k a_k u^i
  v^j (degrees; a_0, a_1, b_0, b_1 are the CD matrix), ap, bp the SIP inverse. This is the
  visit's TAN-SIP about the optical axis, fitted to the model over the CCDs. A and D have
  13 significant digits (hscPipe's %12.5e rounds them by up to 2");
* ``dmag.dat``: ``m|s mag_cor mag0 mag_cat u v good``: calibrated magnitude of the detection,
  the star's fitted magnitude, the catalogue magnitude (-9999 for internal stars), the
  focal-plane position, 1 if used in the final photometric fit (m: detections of
  reference-matched stars, listed first; s: of internal stars);
* ``dpos.dat``: ``m|s xi_fit eta_fit xi eta u v good``: the detection's model position and the
  star's position at the detection's epoch, degrees in the tract's gnomonic plane (so
  (xi_fit - xi) * 3600 is the residual in arcsec, as with hscPipe), with 9 decimals (hscPipe's
  6 round the residuals to 3.6 mas);
* ``catalog.fits``: one row per star with a good detection: ``id``, ``coord_ra``,
  ``coord_dec`` (radians, afw's convention), ``mag`` (fitted magnitude), ``err`` (weighted rms
  of its calibrated detections about it), ``num`` (good detections).

``summary.json`` holds the numbers of the page. ``index.html`` shows the run's summary
(counts, chi2/ndof per iteration, rms internal and against the reference catalogue, timings),
a table of the visits and every plot (PNGs referenced relatively: the folder is
self-contained and can be moved or copied as a whole).

Rebuilding: ``write_all`` also saves the solution (``solution.json``: the model parameters
and run statistics; ``detections.fits`` and ``stars.fits``: ``sol.detections`` and
``sol.stars``). ``mosaicfit report ROOT --rerun=R --tract=T [--diagDir DIR]`` reads them back
(:func:`load_solution`) and writes everything again: a run made without ``--diagnostics``
leaves nothing to rebuild from.

Figures are drawn with Matplotlib's object API on the Agg canvas (no pyplot, no global
state). With many visits the per-visit plots are shared with helper processes (fresh
interpreters, see :func:`write_all`). Every file is written atomically.
"""
import contextlib
import html
import json
import logging
import os
import time

import numpy as np

from . import MosaicError, __version__
from .atomic import atomic_path, write_fits, write_text

log = logging.getLogger("mosaicfit.diagnostics")

STATE_FORMAT = "mosaicfit-solution"
STATE_VERSION = 1
MAS_PER_DEG = 3.6e6
GREEN, RED, GREY, CYAN, BLUE = "#1a9641", "#d7191c", "#9a9a9a", "#2c9fbf", "#2b5fab"
GRID_STEP = 150.0     # focal-plane pixels between grid points of the contour maps
FP_PX = 660           # size of the focal-plane panels in pixels (at 100 dpi)


# ------------------------------------------------------------------------------------------
# statistics helpers
# ------------------------------------------------------------------------------------------
def clipped_std(a, nsig=3.0, iters=5):
    """(std, mean, n) of the finite values of `a`, iteratively clipped at nsig x std."""
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return np.nan, np.nan, 0
    keep = np.ones(len(a), bool)
    for _ in range(iters):
        mean, std = a[keep].mean(), a[keep].std()
        new = np.abs(a - mean) <= nsig * std if std > 0 else keep
        if np.array_equal(new, keep) or new.sum() < 3:
            break
        keep = new
    return float(a[keep].std()), float(a[keep].mean()), int(keep.sum())


def _rms(a):
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(a ** 2))) if len(a) else np.nan


def _rms2(dx, dy):
    """Per-coordinate rms of 2-D residuals: sqrt(mean((dx^2 + dy^2) / 2))."""
    d = np.asarray(dx, float) ** 2 + np.asarray(dy, float) ** 2
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d / 2))) if len(d) else np.nan


def _col(t, name, dtype=float):
    if t is None or name not in t.colnames:
        return None
    return np.asarray(t[name], dtype)


def _nice(x, choices=(1, 2, 5)):
    """The smallest 'nice' number (1, 2, 5 x 10^k) >= x."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    k = np.floor(np.log10(x))
    for c in choices:
        if c * 10 ** k >= x * (1 - 1e-9):
            return float(c * 10 ** k)
    return float(10 ** (k + 1))


def summarize(sol):
    """The run's summary (a dict of plain numbers) from the solution and its tables."""
    st = sol.stats or {}
    d, s = sol.detections, sol.stars
    out = dict(n_visits=int(st.get("n_visits", 0)), n_ccds=int(st.get("n_ccds", 0)),
               n_stars=int(st.get("n_stars", 0)), n_ref_stars=int(st.get("n_ref_stars", 0)),
               n_detections=int(st.get("n_detections", 0)))
    if d is not None and len(d):
        visit, ref = _col(d, "visit", np.int64), _col(d, "ref", bool)
        out.update(n_visits=len(np.unique(visit)), n_ccds=len(np.unique(_col(d, "ccd", int))),
                   n_detections=len(d), n_ref_detections=int(ref.sum()))
        au = _col(d, "astro_used", bool)
        dxi, deta = _col(d, "dxi"), _col(d, "deta")
        out.update(astro_used=int(au.sum()), astro_rejected=int((~au).sum()),
                   astro_rms_all=_rms2(dxi[au], deta[au]),
                   astro_rms_internal=_rms2(dxi[au & ~ref], deta[au & ~ref]),
                   astro_rms_ref=_rms2(dxi[au & ref], deta[au & ref]))
        pu = _col(d, "phot_used", bool)
        dm = _col(d, "dmag")
        cal_cat = (_col(d, "mag_fit") - _col(d, "mag_ref")) * 1000.0
        good_cat = pu & ref & np.isfinite(cal_cat)
        out.update(phot_used=int(pu.sum()), phot_rejected=int((~pu).sum()),
                   phot_rms_all=_rms(dm[pu]), phot_rms_internal=_rms(dm[pu & ~ref]),
                   phot_rms_ref=_rms(dm[pu & ref]),
                   phot_rms_vs_catalog=_rms(cal_cat[good_cat]),
                   phot_sigma_vs_catalog=clipped_std(cal_cat[good_cat])[0],
                   phot_mean_vs_catalog=float(np.mean(cal_cat[good_cat])) if good_cat.any() else np.nan)
    if s is not None and len(s):
        has = _col(s, "ref_index", np.int64) >= 0
        out["n_stars"] = len(s)
        out["n_ref_stars"] = int(has.sum())
        ra, dec, rra, rdec = (_col(s, c) for c in ("ra", "dec", "ref_ra", "ref_dec"))
        dra = ((ra - rra + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec)) * MAS_PER_DEG
        ddec = (dec - rdec) * MAS_PER_DEG
        ok = has & np.isfinite(dra) & np.isfinite(ddec)
        out["astro_rms_star_vs_catalog"] = _rms2(dra[ok], ddec[ok])
        out["astro_mean_star_vs_catalog"] = (float(np.mean(dra[ok])), float(np.mean(ddec[ok]))) \
            if ok.any() else (np.nan, np.nan)
    for k in ("astro_chi2", "astro_ndof", "astro_rms_mas", "astro_clipped", "phot_chi2",
              "phot_ndof", "phot_rms_mmag", "phot_clipped", "phot_variables", "phot_order",
              "absolute", "n_ambiguous", "band"):
        if k in st:
            out[k] = st[k]
    out["frozen_visits"] = sorted({int(v) for v, _ in sol.frozen})
    out["excluded"] = [list(map(int, e)) for e in st.get("excluded", [])]
    return out


# ------------------------------------------------------------------------------------------
# geometry shared by the focal-plane plots
# ------------------------------------------------------------------------------------------
class _FocalPlane:
    """CCD outlines at their fitted positions and a grid over the focal plane with the CCD
    each grid point falls on (-1: none)."""

    def __init__(self, sol, ccds):
        cam = sol.camera
        self.ccds = [int(c) for c in ccds]
        self.outline = {}
        self.centre = {}
        for c in self.ccds:
            d = cam[c]
            x, y = cam.ccd_corners(c)
            u, v = sol.focal_plane(c, x, y)
            self.outline[c] = np.column_stack([u, v])
            cu, cv = sol.focal_plane(c, np.array([(d.width - 1) / 2.0]), np.array([(d.height - 1) / 2.0]))
            self.centre[c] = (float(cu[0]), float(cv[0]))
        allc = np.concatenate(list(self.outline.values())) if self.outline else np.zeros((1, 2))
        self.rmax = float(np.max(np.hypot(allc[:, 0], allc[:, 1])))
        lim = np.max(np.abs(allc)) + 300.0
        self.lim = float(lim)
        g = np.arange(-lim, lim + GRID_STEP, GRID_STEP)
        self.gu, self.gv = np.meshgrid(g, g)
        which = np.full(self.gu.shape, -1, int)
        fu, fv = self.gu.ravel(), self.gv.ravel()
        for c in self.ccds:
            d = cam[c]
            o = self.outline[c]
            box = ((fu >= o[:, 0].min()) & (fu <= o[:, 0].max()) & (fv >= o[:, 1].min())
                   & (fv <= o[:, 1].max()))
            idx = np.nonzero(box)[0]
            if len(idx) == 0:
                continue
            x, y = sol.focal_plane_to_pixel(c, fu[idx], fv[idx])
            inside = (x >= -0.5) & (x <= d.width - 0.5) & (y >= -0.5) & (y <= d.height - 0.5)
            which.ravel()[idx[inside]] = c
        self.which = which
        self.on = which >= 0
        # the CCDs and their surroundings (4 grid cells): where the model means something
        near = self.on.copy()
        for _ in range(4):
            grow = near.copy()
            grow[1:, :] |= near[:-1, :]
            grow[:-1, :] |= near[1:, :]
            grow[:, 1:] |= near[:, :-1]
            grow[:, :-1] |= near[:, 1:]
            near = grow
        self.in_fov = near & (np.hypot(self.gu, self.gv) <= self.rmax)

    def ccd_at(self, u, v):
        """The CCD of the grid cell nearest each (u, v) (-1: none)."""
        g0 = self.gu[0, 0]
        n = self.gu.shape[0]
        i = np.clip(np.rint((np.asarray(v) - g0) / GRID_STEP).astype(int), 0, n - 1)
        j = np.clip(np.rint((np.asarray(u) - g0) / GRID_STEP).astype(int), 0, n - 1)
        return self.which[i, j]

    def numbers_layer(self, px=None):
        """The CCD numbers drawn once on a transparent px x px image (RGBA) covering
        [-lim, lim]^2: pasted into every focal-plane panel of that size, it saves drawing
        ~100 texts per plot (text is most of Matplotlib's time here)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        px = px or FP_PX
        if getattr(self, "_layer", None) is None:
            fig = Figure(figsize=(px / 100.0, px / 100.0), dpi=100)
            canvas = FigureCanvasAgg(fig)
            fig.patch.set_alpha(0.0)
            ax = fig.add_axes([0, 0, 1, 1])
            ax.set_axis_off()
            ax.patch.set_alpha(0.0)
            for c in self.ccds:
                u, v = self.centre[c]
                ax.text(u, v, str(c), ha="center", va="center", fontsize=6.5, color="k",
                        alpha=0.85)
            ax.set_xlim(-self.lim, self.lim)
            ax.set_ylim(-self.lim, self.lim)
            canvas.draw()
            self._layer = np.asarray(canvas.buffer_rgba()).copy()
        return self._layer

    def draw(self, ax, present=None, numbers=True, color="k"):
        from matplotlib.collections import PolyCollection
        on = [c for c in self.ccds if present is None or c in present]
        off = [c for c in self.ccds if present is not None and c not in present]
        if on:
            ax.add_collection(PolyCollection([self.outline[c] for c in on], facecolors="none",
                                             edgecolors=color, linewidths=0.5, zorder=3))
        if off:
            ax.add_collection(PolyCollection([self.outline[c] for c in off], facecolors="none",
                                             edgecolors=GREY, linewidths=0.5, linestyles="--",
                                             zorder=3))
        if numbers:
            ax.imshow(self.numbers_layer(), extent=(-self.lim, self.lim, -self.lim, self.lim),
                      origin="upper", interpolation="none", zorder=4)
        ax.set_xlim(-self.lim, self.lim)
        ax.set_ylim(-self.lim, self.lim)
        ax.set_aspect("equal")
        ax.set_xlabel("u (focal-plane pixels of 15 µm from the optical axis)")
        ax.set_ylabel("v (focal-plane pixels)")


def _fp_axes(fig, left_px, bottom_px):
    """An FP_PX x FP_PX pixel axes at (left_px, bottom_px) of `fig` (dpi 100): the size of
    the CCD-number layer, so that it is pasted pixel for pixel."""
    W, H = fig.get_size_inches() * 100.0
    return fig.add_axes([left_px / W, bottom_px / H, FP_PX / W, FP_PX / H])


@contextlib.contextmanager
def _single_thread_blas():
    """Run small LAPACK fits single-threaded: multi-threaded OpenBLAS on a busy machine makes a
    1000 x 54 least-squares fit take up to 0.5 s instead of 1 ms."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _figure(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi=100):
    with atomic_path(path) as tmp:
        # zlib level 2: PNG compression is a large part of the time at the default 6
        fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": 2})


# ------------------------------------------------------------------------------------------
# the visit-level TAN-SIP (coeffs.dat, jcont)
# ------------------------------------------------------------------------------------------
def visit_sip(sol, visit, fp):
    """The visit's TAN-SIP header in focal-plane pixels about the optical axis
    (pixel (x, y) = (u, v), CRPIX = (1, 1): the origin), fitted to the model (through
    Solution.pixel_to_sky) over the CCDs; None where the visit has no astrometric solution."""
    from .sip import fit_tan_sip
    if not sol.has_astrometry(visit):
        return None
    order = int(getattr(sol, "sip_order", None) or sol.order)
    gu, gv = _sample_on_ccds(fp, 1500)
    ra, dec = _fp_to_sky(sol, visit, fp, gu, gv)
    c = fp.ccds[0]
    ax, ay = sol.optical_axis_pixel(c)
    r0, d0 = sol.pixel_to_sky(visit, c, np.array([ax]), np.array([ay]))
    crval = (float(np.ravel(r0)[0]), float(np.ravel(d0)[0]))
    h = fit_tan_sip(gu, gv, ra, dec, (1.0, 1.0), crval, order, inverse_order=order)
    _refit_inverse(h, order, *_sample_on_ccds(fp, 3000))
    from .sip import sip_pixel_to_sky
    r1, d1 = sip_pixel_to_sky(h, gu, gv)
    err = np.hypot((r1 - ra) * np.cos(np.radians(dec)), d1 - dec) * MAS_PER_DEG
    h["FITRMS"] = (float(np.sqrt(np.mean(err ** 2) / 2)), "mas per axis: this TAN-SIP - model")
    h["FITMAX"] = (float(np.max(err)), "mas: largest distance, TAN-SIP - model")
    return h


def _fp_to_sky(sol, visit, fp, u, v):
    """Sky (deg) of focal-plane points: the model is a function of the focal-plane position,
    evaluated through the pixels of one reference CCD (one call instead of one per CCD)."""
    ref = _reference_ccd(sol, visit, fp)
    x, y = sol.focal_plane_to_pixel(ref, np.asarray(u, float), np.asarray(v, float))
    return sol.pixel_to_sky(visit, ref, np.asarray(x, float), np.asarray(y, float))


def _sample_on_ccds(fp, n):
    """About n points of the focal-plane grid that fall on CCDs."""
    u, v = fp.gu[fp.on], fp.gv[fp.on]
    step = max(1, len(u) // n)
    return u[::step], v[::step]


def ccd_term(sol, visit, ccd):
    """The CCD's magnitude term dC for the visit's filter (0 where not fitted)."""
    f = getattr(sol, "_dc", None)
    if f is not None:
        return float(f(visit, ccd))
    return float(sol.ccd_mag.get(int(ccd), 0.0))


def ccd_terms(sol):
    """{ccd: dC} (of the first visit's filter when the solution has several)."""
    v = min(sol.phot) if sol.phot else None
    byf = getattr(sol, "ccd_mag_by_filter", None)
    if byf is not None:
        keys = set().union(*[set(m) for m in byf.values()]) if byf else set()
    else:
        keys = set(sol.ccd_mag)
    return {int(c): ccd_term(sol, v, c) for c in sorted(keys)} if v is not None else {}


def _refit_inverse(h, order, u, v):
    """Replace the header's AP/BP by a fit over the points (u, v) (on the CCDs): fitted over
    a square box around the field, the inverse would chase the order-N forward polynomial
    where no CCD constrains it (the box's corners are 40% farther out) and be pixels off."""
    from .sip import _fit_poly
    pu, pv = [np.ones_like(u)], [np.ones_like(v)]
    for _ in range(order):
        pu.append(pu[-1] * u)
        pv.append(pv[-1] * v)
    U, V = u.copy(), v.copy()
    for p in range(order + 1):
        for q in range(order + 1 - p):
            if p + q >= 2:
                t = pu[p] * pv[q]
                U += h.get(f"A_{p}_{q}", 0.0) * t
                V += h.get(f"B_{p}_{q}", 0.0) * t
    inv = _fit_poly(U, V, np.stack([u - U, v - V], axis=-1), order, 0)
    h["AP_ORDER"] = order
    h["BP_ORDER"] = order
    for (p, q), c in inv.items():
        h[f"AP_{p}_{q}"] = float(c[0])
    for (p, q), c in inv.items():
        h[f"BP_{p}_{q}"] = float(c[1])


def _sip_terms(order):
    """meas_mosaic's coefficient order: (i, j) powers of (u, v) for n = 1..order, i = n..0."""
    return [(n - j, j) for n in range(1, order + 1) for j in range(0, n + 1)]


def coeffs_from_sip(h, order):
    """(A, D) radians, (x0, y0), and arrays a, b, ap, bp in meas_mosaic's convention."""
    cd = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    terms = _sip_terms(order)
    a, b, ap, bp = (np.zeros(len(terms)) for _ in range(4))
    for k, (i, j) in enumerate(terms):
        if i + j == 1:              # the CD matrix: xi = CD11 u + CD12 v, eta = CD21 u + CD22 v
            a[k], b[k] = cd[0, 1 - i], cd[1, 1 - i]
        else:
            sa, sb = h.get(f"A_{i}_{j}", 0.0), h.get(f"B_{i}_{j}", 0.0)
            a[k] = cd[0, 0] * sa + cd[0, 1] * sb
            b[k] = cd[1, 0] * sa + cd[1, 1] * sb
        ap[k] = h.get(f"AP_{i}_{j}", 0.0)
        bp[k] = h.get(f"BP_{i}_{j}", 0.0)
    A, D = np.radians(h["CRVAL1"]), np.radians(h["CRVAL2"])
    x0, y0 = -(h["CRPIX1"] - 1.0), -(h["CRPIX2"] - 1.0)
    return (A, D), (x0, y0), a, b, ap, bp


def model_jacobian(sol, visit, fp, u, v, step=1.0):
    """J(u, v) of the model itself: |det d(xi, eta)/d(u, v)| in the visit's gnomonic plane
    about the sky at the optical axis, over its value at the axis, by forward differences of
    Solution.pixel_to_sky (`step` in pixels) through a reference CCD's pixels (the model is a
    function of the focal-plane position)."""
    from .camera import sky_to_tangent
    u = np.append(np.ravel(np.asarray(u, float)), 0.0)       # the axis last
    v = np.append(np.ravel(np.asarray(v, float)), 0.0)
    ref = _reference_ccd(sol, visit, fp)
    x, y = (np.asarray(a, float) for a in sol.focal_plane_to_pixel(ref, u, v))
    r0, d0 = (float(np.ravel(a)[-1]) for a in sol.pixel_to_sky(visit, ref, x[-1:], y[-1:]))
    p = [np.array(sky_to_tangent(*sol.pixel_to_sky(visit, ref, x + dx, y + dy), r0, d0))
         for dx, dy in ((0.0, 0.0), (step, 0.0), (0.0, step))]
    a, b = (p[1] - p[0]) / step, (p[2] - p[0]) / step
    det = np.abs(a[0] * b[1] - a[1] * b[0])
    return det[:-1] / det[-1]


def _reference_ccd(sol, visit, fp):
    """A CCD of the visit with the model's astrometry (not frozen), nearest the axis."""
    cs = sorted(fp.ccds, key=lambda c: np.hypot(*fp.centre[c]))
    for c in cs:
        if (int(visit), int(c)) not in sol.frozen:
            return int(c)
    return int(cs[0])


def jacobian_map(h, u, v):
    """J(u, v) of a TAN-SIP header (|det d(xi, eta)/d(x, y)| / |det CD|), as
    mosaicfit.sip.pixel_area_ratio but with the coefficients read once (fast on large grids)."""
    u = np.asarray(u, float) + 1.0 - h["CRPIX1"]
    v = np.asarray(v, float) + 1.0 - h["CRPIX2"]
    order = int(h.get("A_ORDER", 0))
    keys = set(h.keys())
    pu, pv = [np.ones_like(u)], [np.ones_like(v)]
    for _ in range(order):
        pu.append(pu[-1] * u)
        pv.append(pv[-1] * v)
    a_u, a_v = np.ones_like(u), np.zeros_like(u)
    b_u, b_v = np.zeros_like(u), np.ones_like(u)
    for p in range(order + 1):
        for q in range(order + 1 - p):
            if p + q < 2:
                continue
            A = float(h[f"A_{p}_{q}"]) if f"A_{p}_{q}" in keys else 0.0
            B = float(h[f"B_{p}_{q}"]) if f"B_{p}_{q}" in keys else 0.0
            if A == 0.0 and B == 0.0:
                continue
            if p:
                t = p * pu[p - 1] * pv[q]
                a_u += A * t
                b_u += B * t
            if q:
                t = q * pu[p] * pv[q - 1]
                a_v += A * t
                b_v += B * t
    return np.abs(a_u * b_v - a_v * b_u)


def concentric_fit(J, u, v, degree=8, iters=4):
    """The best-fitting concentric pattern J = f(|r - r0|^2), f a polynomial of `degree`,
    fitted with its centre r0 = (u0, v0) by Gauss-Newton. Returns (u0, v0, rms of J about
    it, f as a function of (u, v))."""
    ok = np.isfinite(J)
    J, u, v = J[ok], u[ok], v[ok]
    if len(J) > 6000:
        pick = np.linspace(0, len(J) - 1, 6000).astype(int)
        J, u, v = J[pick], u[pick], v[pick]
    s = max(np.max(np.hypot(u, v)), 1.0)
    x, y = u / s, v / s
    x0 = y0 = 0.0
    powers = lambda rr: np.column_stack([rr ** k for k in range(degree + 1)])
    for _ in range(iters):
        rr = (x - x0) ** 2 + (y - y0) ** 2
        P = powers(rr)
        c, *_ = np.linalg.lstsq(P, J, rcond=None)
        fprime = sum(k * c[k] * rr ** (k - 1) for k in range(1, degree + 1))
        M = np.column_stack([P, -2 * fprime * (x - x0), -2 * fprime * (y - y0)])
        step, *_ = np.linalg.lstsq(M, J, rcond=None)
        x0 += step[-2]
        y0 += step[-1]
    P = powers((x - x0) ** 2 + (y - y0) ** 2)
    c, *_ = np.linalg.lstsq(P, J, rcond=None)
    res = J - P @ c

    def model(uu, vv):
        return powers(((np.ravel(uu) / s - x0) ** 2 + (np.ravel(vv) / s - y0) ** 2)) @ c
    return float(x0 * s), float(y0 * s), float(np.sqrt(np.mean(res ** 2))), model


def concentric_centre(J, u, v):
    """(u0, v0, rms of the non-concentric part) of J: see :func:`concentric_fit`."""
    return concentric_fit(J, u, v)[:3]


# ------------------------------------------------------------------------------------------
# per-visit plots
# ------------------------------------------------------------------------------------------
def _cell_means(u, v, du, dv, w, cell):
    """Weighted mean (du, dv) in square cells of `cell` focal-plane pixels with >= 3
    detections: (u, v, du, dv, sigma of the mean per axis) of the cells."""
    iu = np.floor(u / cell).astype(np.int64)
    iv = np.floor(v / cell).astype(np.int64)
    key = (iu + 100000) * 200000 + (iv + 100000)
    _, inv, n = np.unique(key, return_inverse=True, return_counts=True)
    sw = np.bincount(inv, weights=w)
    cu = np.bincount(inv, weights=u) / n
    cv = np.bincount(inv, weights=v) / n
    mu = np.bincount(inv, weights=w * du) / sw
    mv = np.bincount(inv, weights=w * dv) / sw
    ok = n >= 3
    return cu[ok], cv[ok], mu[ok], mv[ok], 1.0 / np.sqrt(sw[ok])


def plot_res_pos_arrow(sol, visit, fp, hdr, d, path):
    fig = _figure(15.6, 8.2)
    ax = _fp_axes(fig, 95, 65)
    ax2 = _fp_axes(fig, 870, 65)
    m = (_col(d, "visit", np.int64) == visit)
    present = set(np.unique(_col(d, "ccd", int)[m]).tolist())
    fp.draw(ax, present)
    fp.draw(ax2, present, numbers=False)
    used = m & _col(d, "astro_used", bool)
    ref = _col(d, "ref", bool)
    fig.suptitle(f"ResPosArrow2D: visit {visit} — astrometric residuals (model − star) turned to "
                 "the focal-plane axes", fontsize=11)
    if used.any() and hdr is not None:
        dxi, deta = _col(d, "dxi")[used], _col(d, "deta")[used]
        # residuals turned to the focal-plane axes: d(u, v) = CD^-1 d(xi, eta), in mas
        cd = np.array([[hdr["CD1_1"], hdr["CD1_2"]], [hdr["CD2_1"], hdr["CD2_2"]]])
        R = np.linalg.inv(cd) * np.sqrt(abs(np.linalg.det(cd)))
        du = R[0, 0] * dxi + R[0, 1] * deta
        dv = R[1, 0] * dxi + R[1, 1] * deta
        rms = _rms2(dxi, deta)
        key = _nice(3 * rms)
        u, v, r = _col(d, "u")[used], _col(d, "v")[used], ref[used]
        kw = dict(angles="xy", scale_units="xy", scale=key / 1500.0, width=0.0016, headwidth=3,
                  headlength=4, zorder=5)
        q = None
        for sel, col, lab in ((~r, RED, "internal stars"), (r, GREEN, "reference-matched stars")):
            if sel.any():
                q = ax.quiver(u[sel], v[sel], du[sel], dv[sel], color=col,
                              label=f"{lab}: {int(sel.sum())}, rms {_rms2(dxi[sel], deta[sel]):.1f} mas",
                              **kw)
        ax.quiverkey(q, 0.80, 0.035, key, f"{key:g} mas", coordinates="axes", color="k",
                     labelpos="E", fontproperties={"size": 9})
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
        ax.set_title(f"each detection used ({int(used.sum())}): rms {rms:.1f} mas per axis",
                     fontsize=10)
        # structure: means in 1024-px cells (about 2 x 4 per CCD)
        w = 1.0 / _col(d, "pos_err")[used] ** 2
        cu, cv, cdu, cdv, csig = _cell_means(u, v, du, dv, w, 1024.0)
        amp = np.hypot(cdu, cdv)
        key2 = _nice(2.0 * np.sqrt(np.mean(amp ** 2))) if len(amp) else 1.0
        q2 = ax2.quiver(cu, cv, cdu, cdv, color="k", angles="xy", scale_units="xy",
                        scale=key2 / 1500.0, width=0.0025, headwidth=3.5, headlength=4.5, zorder=5)
        ax2.quiverkey(q2, 0.80, 0.035, key2, f"{key2:g} mas", coordinates="axes", color="k",
                      labelpos="E", fontproperties={"size": 9})
        ax2.set_title(f"weighted means in 1024-px cells (≥ 3 detections): rms {np.sqrt(np.mean(amp ** 2) / 2):.2f} "
                      f"mas per axis\n(from the errors alone: {np.sqrt(np.mean(csig ** 2)):.2f} mas)", fontsize=10)
    else:
        for a in (ax, ax2):
            a.text(0, 0, "no astrometric residuals for this visit\n(frozen at its single-frame "
                   "WCS or astrometry not solved)", ha="center", va="center", fontsize=11)
    _save(fig, path)


def flux_correction_map(sol, visit, fp, u, v, ccd):
    """10^(-0.4 (P(u, v) - P(axis) + dC[ccd])): the factor the calibration applies to fluxes
    (fcr polynomial and CCD term), relative to the optical axis. P is taken through a
    reference CCD's pixels (it is a function of the focal-plane position): less that CCD's
    2.5 log10 FLUXMAG0 (= P(axis) + its dC), plus each point's own CCD term."""
    ref = _reference_ccd(sol, visit, fp)
    x, y = sol.focal_plane_to_pixel(ref, np.asarray(u, float), np.asarray(v, float))
    P = sol.mag_offset(visit, ref, np.asarray(x, float), np.asarray(y, float)) \
        - 2.5 * np.log10(sol.fluxmag0(visit, ref))
    ccd = np.asarray(ccd)
    dc = np.zeros(len(P))
    for c in np.unique(ccd):
        dc[ccd == c] = ccd_term(sol, visit, int(c))
    return 10.0 ** (-0.4 * (P + dc))


def plot_fcont(sol, visit, fp, path, present=None):
    """The flux correction over the focal plane. Its colour range is that of the CCDs with
    detections in the visit: on the others (dashed) the polynomial is extrapolated, and
    their extreme values are given in the title."""
    fig = _figure(9.1, 7.8)
    ax = _fp_axes(fig, 95, 65)
    cax = fig.add_axes([785 / 910, 65 / 780, 18 / 910, FP_PX / 780])
    gu, gv = fp.gu, fp.gv
    F = np.full(gu.shape, np.nan)
    on = fp.which >= 0
    F[on] = flux_correction_map(sol, visit, fp, gu[on], gv[on], fp.which[on])
    Z = np.ma.masked_invalid(F)
    seen = on if present is None else np.isin(fp.which, sorted(present))
    ref = F[seen & np.isfinite(F)] if (seen & np.isfinite(F)).any() else Z.compressed()
    lo, hi = float(ref.min()), float(ref.max())
    half = max(abs(1 - lo), abs(hi - 1), 1e-4)
    step = _nice(2 * half / 40)
    half = step * np.ceil(half / step)
    levels = np.arange(1 - half, 1 + half + step / 2, step)
    cs = ax.contourf(gu, gv, Z, levels=levels, cmap="RdBu_r", extend="both", zorder=1)
    cb = fig.colorbar(cs, cax=cax)
    cb.set_label("flux correction factor (relative to the optical axis)")
    ax.contour(gu, gv, Z, levels=levels[::2], colors="k", linewidths=0.3, alpha=0.5, zorder=2)
    fp.draw(ax, present)
    title = f"fcont: visit {visit} — 10^(-0.4 (P − P(axis) + dC)): {lo:.4f} .. {hi:.4f}"
    other = on & ~seen & np.isfinite(F)
    if other.any():
        olo, ohi = float(F[other].min()), float(F[other].max())
        if olo < lo - 1e-3 or ohi > hi + 1e-3:
            title += f"\nextrapolated on CCDs without detections (dashed): {olo:.3f} .. {ohi:.3f}"
    ax.set_title(title, fontsize=10, loc="right")
    _save(fig, path)


def plot_jcont(sol, visit, fp, hdr, path, present=None):
    """J contours over the focal plane, and the part of J that is not concentric (J minus
    the best concentric pattern, whose centre is marked)."""
    fig = _figure(13.8, 7.8)
    ax = _fp_axes(fig, 95, 65)
    cax = fig.add_axes([770 / 1380, 65 / 780, 16 / 1380, FP_PX / 780])
    ax2 = fig.add_axes([955 / 1380, 300 / 780, 400 / 1380, 400 / 780])
    cax2 = fig.add_axes([955 / 1380, 205 / 780, 400 / 1380, 14 / 780])
    info = None
    if hdr is not None:
        # J of the model on every other grid point (300 px): smooth, and 5x cheaper
        gu, gv = fp.gu[::2, ::2], fp.gv[::2, ::2]
        in_fov, which = fp.in_fov[::2, ::2], fp.which[::2, ::2]
        J = np.full(gu.shape, np.nan)
        J[in_fov] = model_jacobian(sol, visit, fp, gu[in_fov], gv[in_fov])
        Z = np.ma.masked_where(~in_fov, J)
        lo, hi = float(Z.min()), float(Z.max())
        step = _nice((hi - lo) / 24)
        levels = np.arange(np.floor(lo / step) * step, hi + step, step)
        cs = ax.contourf(gu, gv, Z, levels=levels, cmap="viridis", zorder=1)
        cb = fig.colorbar(cs, cax=cax)
        cb.set_label("J: pixel area relative to the optical axis")
        lines = ax.contour(gu, gv, Z, levels=levels[::2], colors="w", linewidths=0.5, zorder=2)
        ax.clabel(lines, levels=lines.levels[::2], fontsize=6, fmt="%.3f")
        on = which >= 0          # fitted where CCDs are: the model is extrapolated elsewhere
        u0, v0, nonc, model = concentric_fit(J[on], gu[on], gv[on])
        info = dict(u0=u0, v0=v0, nonconcentric=nonc, jmin=lo, jmax=hi)
        for a in (ax, ax2):
            a.plot([0], [0], "k+", ms=12, mew=1.5, zorder=6)
            a.plot([u0], [v0], "rx", ms=9, mew=1.5, zorder=6)
        # the non-concentric part, in units of 1e-4
        R = np.ma.masked_where(~in_fov, (J - model(gu, gv).reshape(J.shape)) * 1e4)
        vmax = _nice(3 * nonc * 1e4)
        im = ax2.imshow(R, extent=(gu.min() - GRID_STEP, gu.max() + GRID_STEP,
                                   gv.min() - GRID_STEP, gv.max() + GRID_STEP),
                        origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax, zorder=1)
        cb2 = fig.colorbar(im, cax=cax2, orientation="horizontal")
        cb2.set_label("J − concentric fit (10⁻⁴)", fontsize=8)
        cb2.ax.tick_params(labelsize=7)
        ax2.set_title(f"non-concentric part: rms {nonc:.1e} over the CCDs\n+ optical axis, x concentric centre "
                      f"({u0:.0f}, {v0:.0f}) px", fontsize=8)
        title = f"jcont: visit {visit} — J range {lo:.4f} .. {hi:.4f}"
    else:
        cax.set_axis_off()
        cax2.set_axis_off()
        ax.text(0, 0, "no astrometric solution for this visit", ha="center", va="center")
        title = f"jcont: visit {visit}"
    fp.draw(ax, present)
    fp.draw(ax2, present, numbers=False)
    from matplotlib.ticker import MaxNLocator
    ax2.xaxis.set_major_locator(MaxNLocator(4))
    ax2.yaxis.set_major_locator(MaxNLocator(4))
    ax2.set_xlabel("u (focal-plane px)", fontsize=8)
    ax2.set_ylabel("v (focal-plane px)", fontsize=8)
    ax2.tick_params(labelsize=7)
    ax.set_title(title, fontsize=10, loc="right")
    _save(fig, path)
    return info


# ------------------------------------------------------------------------------------------
# all-visit plots
# ------------------------------------------------------------------------------------------
def _hist_sigma(ax, data, bins, colors, labels, orientation="vertical", unit="mas"):
    """Step histograms with their clipped sigmas (and Gaussians of those sigmas)."""
    width = bins[1] - bins[0]
    x = 0.5 * (bins[1:] + bins[:-1])
    texts = []
    for a, col, lab in zip(data, colors, labels):
        a = a[np.isfinite(a)]
        if len(a) == 0:
            continue
        ax.hist(a, bins=bins, histtype="step", color=col, orientation=orientation, lw=1)
        s, mu, n = clipped_std(a)
        g = n * width / (s * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((x - mu) / s) ** 2) if s > 0 else 0 * x
        if orientation == "vertical":
            ax.plot(x, g, ":", color=col, lw=1)
        else:
            ax.plot(g, x, ":", color=col, lw=1)
        texts.append((f"σ_{lab} = {s:.1f} {unit}", col))
    return texts


def _put_texts(ax, texts, x=0.98, y=0.95, dy=0.12, fontsize=8):
    for i, (t, c) in enumerate(texts):
        ax.text(x, y - i * dy, t, color=c, transform=ax.transAxes, ha="right", va="top",
                fontsize=fontsize)


def plot_res_pos_scatter(d, path):
    au, ref = _col(d, "astro_used", bool), _col(d, "ref", bool)
    dxi, deta = _col(d, "dxi"), _col(d, "deta")
    fin = np.isfinite(dxi) & np.isfinite(deta)
    fig = _figure(8.0, 8.0)
    ax = fig.add_axes([0.10, 0.08, 0.60, 0.60])
    axt = fig.add_axes([0.10, 0.70, 0.60, 0.22], sharex=ax)
    axr = fig.add_axes([0.72, 0.08, 0.22, 0.60], sharey=ax)
    good_m, good_s, bad = au & ref & fin, au & ~ref & fin, ~au & fin
    sig = clipped_std(np.concatenate([dxi[au & fin], deta[au & fin]]))[0]
    lim = 5 * sig if np.isfinite(sig) and sig > 0 else 100.0
    for sel, col, lab in ((bad, GREY, "rejected"), (good_s, RED, "internal"), (good_m, GREEN, "reference-matched")):
        if sel.any():
            ax.plot(dxi[sel], deta[sel], "o", ms=1.2, mew=0, alpha=0.35, color=col,
                    label=f"{lab} ({int(sel.sum())})", rasterized=True)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.axhline(0, color="k", lw=0.4)
    ax.axvline(0, color="k", lw=0.4)
    ax.set_xlabel("Δξ = model − star (mas)")
    ax.set_ylabel("Δη = model − star (mas)")
    ax.legend(loc="lower left", fontsize=7, markerscale=5)
    bins = np.linspace(-lim, lim, 81)
    sets = [au & fin, good_m, good_s]
    labs = ["all", "ref", "int"]
    cols = [BLUE, GREEN, RED]
    t = _hist_sigma(axt, [dxi[s] for s in sets], bins, cols, labs)
    _put_texts(axt, t)
    t = _hist_sigma(axr, [deta[s] for s in sets], bins, cols, labs, orientation="horizontal")
    _put_texts(axr, t, y=0.98, dy=0.05, fontsize=7)
    axt.tick_params(labelbottom=False)
    axr.tick_params(labelleft=False)
    axt.set_ylabel("detections")
    axr.set_xlabel("detections")
    axt.set_title("ResPosScatter: astrometric residuals of all visits (σ: 3σ-clipped)", fontsize=10)
    # normalised residuals: should be a unit Gaussian if the errors are right
    axn = fig.add_axes([0.77, 0.74, 0.20, 0.18])
    err = _col(d, "pos_err")
    chi = np.concatenate([dxi[au & fin] / err[au & fin], deta[au & fin] / err[au & fin]])
    nb = np.linspace(-5, 5, 51)
    axn.hist(chi, bins=nb, histtype="step", color=BLUE, density=True)
    xx = np.linspace(-5, 5, 201)
    axn.plot(xx, np.exp(-0.5 * xx ** 2) / np.sqrt(2 * np.pi), "k:", lw=1)
    axn.set_yticks([])
    axn.set_xlabel("residual / error (both axes)", fontsize=7)
    axn.tick_params(labelsize=7)
    axn.text(0.98, 0.95, f"rms {_rms(chi):.2f}\nσ {clipped_std(chi)[0]:.2f}", transform=axn.transAxes,
             ha="right", va="top", fontsize=7)
    _save(fig, path)


def _binned_median(x, y, nbins=24):
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 * nbins:
        return np.array([]), np.array([])
    e = np.quantile(x, np.linspace(0, 1, nbins + 1))
    i = np.clip(np.searchsorted(e, x, side="right") - 1, 0, nbins - 1)
    xm = np.array([np.median(x[i == k]) if np.any(i == k) else np.nan for k in range(nbins)])
    ym = np.array([np.median(y[i == k]) if np.any(i == k) else np.nan for k in range(nbins)])
    return xm, ym


def plot_pos_dpos(d, path):
    au, ref = _col(d, "astro_used", bool), _col(d, "ref", bool)
    xi, eta = _col(d, "xi_fit") / 3600.0, _col(d, "eta_fit") / 3600.0
    dxi, deta = _col(d, "dxi"), _col(d, "deta")
    fig = _figure(10.0, 8.0)
    axes = fig.subplots(2, 2, sharex="col", sharey=True)
    sig = clipped_std(np.concatenate([dxi[au], deta[au]]))[0]
    lim = 5 * sig if np.isfinite(sig) and sig > 0 else 100.0
    for (r, c), (x, y, xl, yl) in zip([(0, 0), (0, 1), (1, 0), (1, 1)],
                                      [(xi, dxi, "ξ", "Δξ"), (eta, dxi, "η", "Δξ"),
                                       (xi, deta, "ξ", "Δη"), (eta, deta, "η", "Δη")]):
        ax = axes[r, c]
        for sel, col, lab in ((au & ~ref, RED, "internal"), (au & ref, GREEN, "reference-matched")):
            ax.plot(x[sel], y[sel], "o", ms=1.0, mew=0, alpha=0.25, color=col, rasterized=True,
                    label=lab)
        for sel, col in ((au & ~ref, "#7f0000"), (au & ref, "#00441b")):
            xm, ym = _binned_median(x[sel], y[sel])
            ax.plot(xm, ym, "-", color=col, lw=1.5)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(-lim, lim)
        if r == 1:
            ax.set_xlabel(f"{xl} (deg, tract plane)")
        if c == 0:
            ax.set_ylabel(f"{yl} (mas)")
    axes[0, 0].legend(loc="upper left", fontsize=7, markerscale=6)
    fig.suptitle("PosDPos: astrometric residuals against position (lines: running medians)", fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.93, hspace=0.08, wspace=0.05)
    _save(fig, path)


def plot_mdm(d, path):
    pu, ref = _col(d, "phot_used", bool), _col(d, "ref", bool)
    dm = _col(d, "dmag")
    mag = _col(d, "mag_star")
    cal_cat = (_col(d, "mag_fit") - _col(d, "mag_ref")) * 1000.0
    mref = _col(d, "mag_ref")
    fin = np.isfinite(dm) & np.isfinite(mag)
    fig = _figure(10.0, 7.0)
    ax = fig.add_axes([0.08, 0.09, 0.64, 0.83])
    axr = fig.add_axes([0.74, 0.09, 0.23, 0.83], sharey=ax)
    gm, gs, bad = pu & ref & fin, pu & ~ref & fin, ~pu & fin
    gc = pu & ref & np.isfinite(cal_cat)
    sig = clipped_std(dm[pu & fin])[0]
    lim = max(8 * sig, 50.0) if np.isfinite(sig) else 250.0
    for sel, x, y, col, lab in ((bad, mag, dm, GREY, "rejected"),
                                (gc, mref, cal_cat, CYAN, "calibrated − catalogue (vs catalogue mag)"),
                                (gs, mag, dm, RED, "internal: detection − star"),
                                (gm, mag, dm, GREEN, "reference-matched: detection − star")):
        if sel.any():
            ax.plot(x[sel], y[sel], "o", ms=1.3, mew=0, alpha=0.4, color=col, rasterized=True,
                    label=f"{lab} ({int(sel.sum())})")
    ax.axhline(0, color="k", lw=0.6, ls="--")
    ax.set_ylim(-lim, lim)
    mm = mag[fin]
    if len(mm):
        ax.set_xlim(np.floor(np.min(mm)) - 0.2, np.ceil(np.max(mm)) + 0.2)
    ax.set_xlabel("magnitude (fitted star magnitude; catalogue magnitude for cyan)")
    ax.set_ylabel("Δmag (mmag)")
    ax.legend(loc="upper left", fontsize=7, markerscale=5)
    ax.set_title("MdM: photometric residuals against magnitude", fontsize=10)
    bins = np.linspace(-lim, lim, 81)
    t = _hist_sigma(axr, [dm[pu & fin], dm[gm], dm[gs], cal_cat[gc]], bins,
                    [BLUE, GREEN, RED, CYAN], ["all", "ref", "int", "cat"],
                    orientation="horizontal", unit="mmag")
    _put_texts(axr, t, dy=0.04, fontsize=8)
    axr.tick_params(labelleft=False)
    axr.set_xlabel("detections")
    _save(fig, path)


def _grid_means(u, v, val, w, lim, cell):
    """Weighted means of `val` in square cells over [-lim, lim]^2 (masked below 3 detections)
    and the errors of those means from the weights."""
    n = int(np.ceil(2 * lim / cell))
    iu = np.clip(((u + lim) / cell).astype(int), 0, n - 1)
    iv = np.clip(((v + lim) / cell).astype(int), 0, n - 1)
    k = iv * n + iu
    cnt = np.bincount(k, minlength=n * n)
    sw = np.bincount(k, weights=w, minlength=n * n)
    swv = np.bincount(k, weights=w * val, minlength=n * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = swv / sw
        err = 1.0 / np.sqrt(sw)
    bad = cnt < 3
    edges = -lim + cell * np.arange(n + 1)
    return (edges, np.ma.masked_where(bad, mean).reshape(n, n),
            np.ma.masked_where(bad, err).reshape(n, n))


def plot_dflux2d(sol, d, fp, path):
    pu, ref = _col(d, "phot_used", bool), _col(d, "ref", bool)
    u, v, dm = _col(d, "u"), _col(d, "v"), _col(d, "dmag")
    w = 1.0 / (_col(d, "mag_err") * 1000.0) ** 2
    cal_cat = (_col(d, "mag_fit") - _col(d, "mag_ref")) * 1000.0
    sel_c = pu & ref & np.isfinite(cal_cat) & np.isfinite(w)
    off = float(np.average(cal_cat[sel_c], weights=w[sel_c])) if sel_c.any() else 0.0
    fig = _figure(16.0, 7.6)
    panels = [(pu & np.isfinite(dm) & np.isfinite(w), dm, "detection − star, all stars"),
              (sel_c, cal_cat - off, f"calibrated − catalogue − ({off:+.1f}), reference-matched")]
    for k, (sel, val, lab) in enumerate(panels):
        ax = fig.add_axes([0.05 + 0.51 * k, 0.08, 0.37, 0.82])
        cax = fig.add_axes([0.425 + 0.51 * k, 0.08, 0.01, 0.82])
        title = f"{lab}: {int(sel.sum())} detections"
        if sel.sum() > 0:
            edges, mean, err = _grid_means(u[sel], v[sel], val[sel], w[sel], fp.lim, 768.0)
            rms = float(np.sqrt(np.mean(mean.compressed() ** 2))) if mean.count() else np.nan
            expect = float(np.sqrt(np.mean(err.compressed() ** 2))) if err.count() else np.nan
            vmax = _nice(2.5 * rms) if np.isfinite(rms) and rms > 0 else 10.0
            im = ax.pcolormesh(edges, edges, mean, cmap="RdBu_r", vmin=-vmax, vmax=vmax, zorder=1)
            cb = fig.colorbar(im, cax=cax)
            cb.set_label("weighted mean Δmag in the cell (mmag); red: too faint")
            title += (f"\ncell rms {rms:.2f} mmag; from the detections' errors alone {expect:.2f} mmag"
                      + (" (+ catalogue errors)" if k else ""))
        fp.draw(ax, numbers=False)
        ax.set_title(title, fontsize=9)
    fig.suptitle("DFlux2D: photometric residuals by focal-plane position, all visits "
                 "(768-px cells with ≥ 3 detections)", fontsize=10)
    _save(fig, path)


def plot_res_flux(sol, d, fp, path):
    pu = _col(d, "phot_used", bool)
    dm = _col(d, "dmag")
    visit, ccd = _col(d, "visit", np.int64), _col(d, "ccd", int)
    fin = pu & np.isfinite(dm)
    fig = _figure(12.0, 8.5)
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    s, mu, n = clipped_std(dm[fin])
    lim = max(6 * s, 30.0) if np.isfinite(s) else 200.0
    bins = np.linspace(-lim, lim, 101)
    ax.hist(dm[fin], bins=bins, histtype="step", color=BLUE)
    x = 0.5 * (bins[1:] + bins[:-1])
    if s > 0:
        ax.plot(x, n * (bins[1] - bins[0]) / (s * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((x - mu) / s) ** 2),
                ":", color=BLUE)
    ax.text(0.03, 0.95, f"σ = {s:.1f} mmag (3σ-clipped)\nrms = {_rms(dm[fin]):.1f} mmag\n"
            f"{int(fin.sum())} detections", transform=ax.transAxes, va="top", fontsize=8)
    ax.set_xlabel("Δmag = detection − star (mmag)")
    ax.set_ylabel("detections")
    ax.set_title("ResFlux: residual histogram", fontsize=9)
    ax = axes[0, 1]
    terms = ccd_terms(sol)
    cs = [c for c in fp.ccds if c in terms]
    if cs:
        r = np.array([np.hypot(*fp.centre[c]) for c in cs])
        dc = np.array([terms[c] * 1000.0 for c in cs])
        ax.plot(r, dc, "o", ms=4, color=BLUE)
        for ri, di, c in zip(r, dc, cs):
            ax.annotate(str(c), (ri, di), fontsize=5, xytext=(2, 2), textcoords="offset points")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("distance of the CCD centre from the optical axis (focal-plane pixels)")
    ax.set_ylabel("CCD term dC (mmag)")
    ax.set_title("per-CCD magnitude offsets", fontsize=9)
    for ax, key, lab in ((axes[1, 0], visit, "visit"), (axes[1, 1], ccd, "CCD")):
        ks = np.unique(key[fin])
        pos = np.searchsorted(ks, key)
        ax.plot(pos[fin] + np.random.default_rng(0).uniform(-0.3, 0.3, fin.sum()), dm[fin], "o",
                ms=0.8, mew=0, alpha=0.2, color=GREY, rasterized=True)
        med = np.array([np.median(dm[fin & (key == k)]) for k in ks])
        sd = np.array([clipped_std(dm[fin & (key == k)])[0] for k in ks])
        ax.errorbar(np.arange(len(ks)), med, yerr=sd, fmt="o", ms=2.5, color=RED, lw=0.8,
                    label="median ± clipped σ")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(-lim, lim)
        ax.set_ylabel("Δmag (mmag)")
        ax.legend(fontsize=7, loc="upper right")
        if lab == "visit":
            step = max(1, len(ks) // 12)
            ax.set_xticks(np.arange(len(ks))[::step])
            ax.set_xticklabels([str(k) for k in ks[::step]], rotation=45, fontsize=7)
            ax.set_xlabel("visit")
        else:
            ax.set_xlabel("CCD (index in the fit; labels: CCD id)")
            step = max(1, len(ks) // 20)
            ax.set_xticks(np.arange(len(ks))[::step])
            ax.set_xticklabels([str(k) for k in ks[::step]], fontsize=7)
        ax.set_title(f"residuals by {lab}", fontsize=9)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.09, top=0.95, hspace=0.35, wspace=0.22)
    _save(fig, path)


# ------------------------------------------------------------------------------------------
# hscPipe's files
# ------------------------------------------------------------------------------------------
def write_ccd_dat(sol, fp, path):
    lines = ["#chip   centerXFp    centerYFp   yaw (rad)\n"]
    for c in fp.ccds:
        d = sol.camera[c]
        yaw = np.radians(d.yaw_deg - 90.0 * d.nquarter)
        yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
        yaw += sol.ccd_geom.get(c, (0.0, 0.0, 0.0))[2]
        u, v = fp.centre[c]
        lines.append("%4ld %12.4f %12.4f %10.7f\n" % (c, u, v, yaw))
    write_text("".join(lines), path)


def write_ccd_scale(sol, fp, path):
    lines = ["#chip scale\n"]
    terms = ccd_terms(sol)
    for c in fp.ccds:
        lines.append("%4ld %7.5f\n" % (c, 10.0 ** (-0.4 * terms.get(c, 0.0))))
    write_text("".join(lines), path)


def write_coeffs(sol, sips, path):
    lines = ["# iexp     c.A          c.D\n", "# iexp     c.x0         c.y0\n",
             "# iexp     c.a(k)       c.b(k)           c.ap(k)         c.bp(k)\n"]
    for v in sorted(sips):
        h = sips[v]
        if h is None:
            continue
        (A, D), (x0, y0), a, b, ap, bp = coeffs_from_sip(h, sol.order)
        x0, y0 = x0 + 0.0, y0 + 0.0          # no "-0.00000"
        # hscPipe wrote A, D with %12.5e: 1e-5 rad is 2"; 13 digits keep them exact
        lines.append("%ld %19.12e %19.12e\n" % (v, A, D))
        lines.append("%ld %12.5f %12.5f\n" % (v, x0, y0))
        for k in range(len(a)):
            lines.append("%ld %15.8e %15.8e %15.8e %15.8e\n" % (v, a[k], b[k], ap[k], bp[k]))
    write_text("".join(lines), path)


def _order_m_first(d):
    ref = _col(d, "ref", bool)
    return np.concatenate([np.nonzero(ref)[0], np.nonzero(~ref)[0]])


def write_dmag(d, path):
    idx = _order_m_first(d)
    ref = _col(d, "ref", bool)[idx]
    cal = _col(d, "mag_fit")[idx]
    star = _col(d, "mag_star")[idx]
    cat = _col(d, "mag_ref")[idx]
    u, v = _col(d, "u")[idx], _col(d, "v")[idx]
    good = _col(d, "phot_used", bool)[idx] & np.isfinite(cal) & np.isfinite(star)
    good &= ~ref | np.isfinite(cat)
    cat = np.where(np.isfinite(cat) & ref, cat, -9999.0)
    cal = np.where(np.isfinite(cal), cal, -9999.0)
    star = np.where(np.isfinite(star), star, -9999.0)
    kind = np.where(ref, "m", "s")
    body = "".join("%s %9.6f %9.6f %9.6f %14.6f %14.6f %d\n" % row
                   for row in zip(kind, cal, star, cat, u, v, good.astype(int)))
    write_text("#m/s mag_cor   mag0    mag_cat         u             v       good=1\n" + body, path)


def write_dpos(d, path):
    idx = _order_m_first(d)
    ref = _col(d, "ref", bool)[idx]
    xf, ef = _col(d, "xi_fit")[idx], _col(d, "eta_fit")[idx]
    # the star at the detection's epoch: model minus residual (arcsec) -> degrees
    xs = (xf - _col(d, "dxi")[idx] / 1000.0) / 3600.0
    es = (ef - _col(d, "deta")[idx] / 1000.0) / 3600.0
    xf, ef = xf / 3600.0, ef / 3600.0
    u, v = _col(d, "u")[idx], _col(d, "v")[idx]
    good = _col(d, "astro_used", bool)[idx]
    kind = np.where(ref, "m", "s")
    body = "".join("%s %13.9f %13.9f %13.9f %13.9f %14.6f %14.6f %d\n" % row
                   for row in zip(kind, xf, ef, xs, es, u, v, good.astype(int)))
    write_text("#m/s  xi_fit   eta_fit       xi        eta           u              v    good=1\n" + body,
               path)


def catalog_table(sol):
    """hscPipe's catalog.fits rows: stars with at least one good photometric detection."""
    from astropy.table import Table
    d, s = sol.detections, sol.stars
    nstar = len(s)
    star = _col(d, "star", np.int64)
    pu = _col(d, "phot_used", bool) & np.isfinite(_col(d, "dmag"))
    w = np.where(pu, 1.0 / _col(d, "mag_err") ** 2, 0.0)
    w[~np.isfinite(w)] = 0.0
    r = np.where(pu, _col(d, "dmag") / 1000.0, 0.0)
    num = np.bincount(star[pu], minlength=nstar)
    sw = np.bincount(star, weights=w, minlength=nstar)
    swr = np.bincount(star, weights=w * r * r, minlength=nstar)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt(swr / sw)
    keep = num > 0
    t = Table()
    t["id"] = _col(s, "id", np.int64)[keep]
    t["coord_ra"] = np.radians(_col(s, "ra")[keep])
    t["coord_dec"] = np.radians(_col(s, "dec")[keep])
    t["mag"] = _col(s, "mag")[keep].astype(np.float32)
    t["err"] = err[keep].astype(np.float32)
    t["num"] = num[keep].astype(np.int32)
    t["coord_ra"].unit = t["coord_dec"].unit = "rad"
    t["mag"].unit = t["err"].unit = "mag"
    return t


def _table_hdulist(t, extname=None, header=None):
    from astropy.io import fits
    hdu = fits.table_to_hdu(t)
    if extname:
        hdu.name = extname
    prim = fits.PrimaryHDU()
    for k, v in (header or {}).items():
        prim.header[k] = v
    return fits.HDUList([prim, hdu])


def write_catalog(sol, path):
    write_fits(_table_hdulist(catalog_table(sol)), path)


# ------------------------------------------------------------------------------------------
# the solution's state (for `mosaicfit report`)
# ------------------------------------------------------------------------------------------
def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if hasattr(x, "__dataclass_fields__"):
        from dataclasses import asdict
        return _jsonable(asdict(x))
    return x


_SKIP = ("camera", "detections", "stars")


def _encode(x):
    """Tagged JSON of the solution's attributes: numbers, strings, lists, arrays, dicts with
    any keys, tuples, FITS headers and objects of mosaicfit's own classes (by their
    attributes). Nothing is pickled: reading a state file runs no code."""
    from astropy.io import fits
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return {"__nd__": _encode(x.tolist()), "dtype": str(x.dtype), "shape": list(x.shape)}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v) for v in x]}
    if isinstance(x, list):
        return [_encode(v) for v in x]
    if isinstance(x, dict):
        if all(isinstance(k, str) for k in x):
            return {"__map__": {k: _encode(v) for k, v in x.items()}}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in x.items()]}
    if isinstance(x, fits.Header):
        return {"__header__": x.tostring()}
    cls = type(x)
    if cls.__module__.startswith("mosaicfit.") and hasattr(x, "__dict__"):
        return {"__obj__": f"{cls.__module__}:{cls.__qualname__}",
                "state": {k: _encode(v) for k, v in vars(x).items()}}
    if hasattr(x, "keys") and hasattr(x, "__getitem__"):        # header-like mappings
        return {"__header__": _header_text(x)}
    raise TypeError(f"cannot save a {cls.__name__} in the solution state")


def _decode(x):
    from astropy.io import fits
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__nd__" in x:
        return np.array(x["__nd__"], dtype=x["dtype"]).reshape(x["shape"])
    if "__tuple__" in x:
        return tuple(_decode(v) for v in x["__tuple__"])
    if "__map__" in x:
        return {k: _decode(v) for k, v in x["__map__"].items()}
    if "__items__" in x:
        return {_decode(k): _decode(v) for k, v in x["__items__"]}
    if "__header__" in x:
        return fits.Header.fromstring(x["__header__"])
    if "__obj__" in x:
        import importlib
        mod, name = x["__obj__"].split(":")
        if not mod.startswith("mosaicfit."):
            raise MosaicError(f"solution state: refusing to build a {x['__obj__']}")
        cls = importlib.import_module(mod)
        for part in name.split("."):
            cls = getattr(cls, part)
        obj = cls.__new__(cls)
        obj.__dict__.update({k: _decode(v) for k, v in x["state"].items()})
        return obj
    return {k: _decode(v) for k, v in x.items()}


def _header_text(h):
    from astropy.io import fits
    if isinstance(h, fits.Header):
        return h.tostring()
    hh = fits.Header()
    for k in h.keys():
        hh[k] = h[k]
    return hh.tostring()


def save_solution(sol, outdir):
    """Write solution.json (every attribute of the Solution but its camera, tables and
    caches), detections.fits and stars.fits into `outdir`."""
    attrs = {k: _encode(v) for k, v in vars(sol).items()
             if k not in _SKIP and not k.startswith("_")}
    state = dict(format=STATE_FORMAT, version=STATE_VERSION, mosaicfit=__version__,
                 camera=sol.camera.name, solution=f"{type(sol).__module__}:{type(sol).__qualname__}",
                 attributes=attrs)
    write_text(json.dumps(state, indent=1, allow_nan=True) + "\n", os.path.join(outdir, "solution.json"))
    if sol.detections is not None:
        write_fits(_table_hdulist(sol.detections, "DETECTIONS"), os.path.join(outdir, "detections.fits"))
    if sol.stars is not None:
        write_fits(_table_hdulist(sol.stars, "STARS"), os.path.join(outdir, "stars.fits"))


def load_solution(outdir, camera=None):
    """The Solution saved by :func:`save_solution` in `outdir` (model, stats and tables)."""
    from astropy.table import Table
    from .camera import hsc
    from .model import Solution
    path = os.path.join(outdir, "solution.json")
    try:
        with open(path) as f:
            st = json.load(f)
    except FileNotFoundError:
        raise MosaicError(f"{path}: not found: the diagnostics of a run are rebuilt from the "
                          "files that 'mosaic.py --diagnostics' leaves there (solution.json, "
                          "detections.fits, stars.fits)") from None
    except ValueError as e:
        raise MosaicError(f"{path}: not a mosaicfit solution file: {e}") from None
    if st.get("format") != STATE_FORMAT or int(st.get("version", 0)) > STATE_VERSION:
        raise MosaicError(f"{path}: not a mosaicfit solution file of version <= {STATE_VERSION}")
    if camera is None:
        camera = hsc()
        if st["camera"] != camera.name:
            raise MosaicError(f"{path}: made with camera {st['camera']!r}; give that camera")
    try:
        attrs = {k: _decode(v) for k, v in st["attributes"].items()}
    except (KeyError, TypeError, ValueError, AttributeError, ImportError) as e:
        raise MosaicError(f"{path}: unreadable solution state: {e}") from None
    try:      # a fresh Solution for its private attributes (caches), then the saved state
        sol = Solution(camera, attrs["tangent_point"], attrs["scale"], attrs["order"],
                       attrs["phot_order"], attrs["phot_basis"])
    except (KeyError, TypeError):
        sol = Solution.__new__(Solution)
        sol._wcs_cache = {}
    sol.__dict__.update(attrs)
    sol.camera = camera
    for name, attr in (("detections.fits", "detections"), ("stars.fits", "stars")):
        p = os.path.join(outdir, name)
        if not os.path.exists(p):
            raise MosaicError(f"{p}: not found (needed with solution.json)")
        setattr(sol, attr, Table.read(p, hdu=1))
    return sol


# ------------------------------------------------------------------------------------------
# index.html
# ------------------------------------------------------------------------------------------
def _f(x, fmt="{:.2f}"):
    try:
        if x is None or not np.isfinite(x):
            return "–"
    except TypeError:
        return html.escape(str(x))
    return fmt.format(x)


def visit_table(sol):
    """Per-visit numbers for the page."""
    d = sol.detections
    rows = []
    visit = _col(d, "visit", np.int64)
    ccd = _col(d, "ccd", int)
    ref = _col(d, "ref", bool)
    au, pu = _col(d, "astro_used", bool), _col(d, "phot_used", bool)
    dxi, deta, dm = _col(d, "dxi"), _col(d, "deta"), _col(d, "dmag")
    for v in sorted(np.unique(visit).tolist()):
        m = visit == v
        zp = np.nan
        if sol.has_photometry(v):
            zp = float(np.median([2.5 * np.log10(sol.fluxmag0(v, int(c))) for c in np.unique(ccd[m])]))
        rows.append(dict(visit=v, mjd=sol.visit_info.get(v, {}).get("mjd", np.nan),
                         n_ccd=len(np.unique(ccd[m])), n_det=int(m.sum()), n_ref=int((m & ref).sum()),
                         astro_rms=_rms2(dxi[m & au], deta[m & au]),
                         astro_rej=int((m & ~au).sum()), phot_rms=_rms(dm[m & pu]),
                         phot_rej=int((m & ~pu).sum()), zp=zp,
                         frozen=any(fv == v for fv, _ in sol.frozen)))
    return rows


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.2em 2em;color:#222;max-width:1500px}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.4em 0;font-size:.9em} details{max-width:28em;text-align:left} td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f0f0f0} td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px} .grid figure{margin:0;flex:1 1 30%;min-width:320px}
figure img{width:100%;border:1px solid #ddd} figcaption{font-size:.85em;color:#444}
.cols{display:flex;flex-wrap:wrap;gap:2em} .note{color:#555;font-size:.9em}
"""


def _img(name, caption, cls=""):
    return (f'<figure{cls}><a href="{html.escape(name)}"><img src="{html.escape(name)}" '
            f'alt="{html.escape(name)}" loading="lazy"></a><figcaption>{caption}</figcaption></figure>')


def write_index(sol, outdir, summ, visits, jinfo, files, t_diag):
    st = sol.stats or {}
    tm = st.get("timing", {})
    e = html.escape
    rows = [("visits", summ.get("n_visits")), ("CCDs", summ.get("n_ccds")),
            ("stars", summ.get("n_stars")),
            ("stars matched to the reference catalogue", summ.get("n_ref_stars")),
            ("detections", summ.get("n_detections")),
            ("detections of reference-matched stars", summ.get("n_ref_detections")),
            ("astrometry: detections clipped", st.get("astro_clipped")),
            ("astrometry: detections not used (clipped or frozen visit)", summ.get("astro_rejected")),
            ("photometry: detections clipped", st.get("phot_clipped")),
            ("photometry: variable / inconsistent stars removed", st.get("phot_variables")),
            ("photometry: detections not used", summ.get("phot_rejected")),
            ("photometry: polynomial order", st.get("phot_order")),
            ("photometry: absolute (reference magnitudes)", st.get("absolute")),
            ("band", st.get("band")),
            ("visits frozen at their single-frame WCS", ", ".join(map(str, summ["frozen_visits"])) or "none")]
    excl = summ["excluded"]
    acc = [("astrometry, all used detections (= the fit's rms)", _f(summ.get("astro_rms_all")), "mas"),
           ("astrometry, internal stars (detection − fitted star)", _f(summ.get("astro_rms_internal")), "mas"),
           ("astrometry, reference-matched stars (detection − fitted star)", _f(summ.get("astro_rms_ref")), "mas"),
           ("astrometry, fitted star − reference catalogue", _f(summ.get("astro_rms_star_vs_catalog")), "mas"),
           ("photometry, all used detections (= the fit's rms)", _f(summ.get("phot_rms_all")), "mmag"),
           ("photometry, internal stars", _f(summ.get("phot_rms_internal")), "mmag"),
           ("photometry, reference-matched stars", _f(summ.get("phot_rms_ref")), "mmag"),
           ("photometry, calibrated − catalogue (rms / 3σ-clipped σ)",
            f"{_f(summ.get('phot_rms_vs_catalog'))} / {_f(summ.get('phot_sigma_vs_catalog'))}", "mmag"),
           ("photometry, calibrated − catalogue mean", _f(summ.get("phot_mean_vs_catalog")), "mmag")]
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mosaicfit diagnostics</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>Mosaic diagnostics</h1><p class='note'>{e(os.path.abspath(outdir))} — mosaicfit {e(__version__)}, "
           f"written {e(time.strftime('%Y-%m-%d %H:%M:%S'))}. Per-coordinate rms of astrometric "
           "residuals; residuals are model − star.</p>",
           "<div class='cols'><div><h2>Run</h2><table>"]
    out += [f"<tr><td class='l'>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in rows]
    if excl:
        out.append(f"<tr><td class='l'>visit/CCDs excluded (no usable stars)</td><td><details><summary>"
                   f"{len(excl)}</summary>{e(', '.join(f'{v}/{c}' for v, c in excl))}</details></td></tr>")
    else:
        out.append("<tr><td class='l'>visit/CCDs excluded (no usable stars)</td><td>none</td></tr>")
    out.append("</table></div><div><h2>Accuracy</h2><table><tr><th class='l'>rms</th><th>value</th><th>unit</th></tr>")
    out += [f"<tr><td class='l'>{e(k)}</td><td>{v}</td><td class='l'>{u}</td></tr>" for k, v, u in acc]
    out.append("</table><h2>Timing</h2><table><tr><th class='l'>phase</th><th>s</th></tr>")
    for k in ("match", "astrometry", "photometry", "solve_total"):
        if k in tm:
            out.append(f"<tr><td class='l'>{e(k)}</td><td>{tm[k]:.2f}</td></tr>")
    out.append(f"<tr><td class='l'>diagnostics</td><td>{t_diag:.2f}</td></tr></table></div></div>")
    out.append("<h2>Iterations</h2><table><tr><th class='l'>fit</th><th>iteration</th><th>χ²</th>"
               "<th>ndof</th><th>χ²/ndof</th><th>rms</th><th>used</th><th>clipped</th>"
               "<th>assemble (s)</th><th>solve (s)</th></tr>")
    for it in st.get("iterations", []):
        unit = "mas" if it.kind == "astrometry" else "mmag"
        out.append(f"<tr><td class='l'>{e(it.kind)}</td><td>{it.iteration}</td><td>{it.chi2:.1f}</td>"
                   f"<td>{it.ndof}</td><td>{it.chi2 / max(it.ndof, 1):.3f}</td><td>{it.rms:.2f} {unit}</td>"
                   f"<td>{it.n_active}</td><td>{it.n_clipped}</td><td>{it.t_assemble:.2f}</td>"
                   f"<td>{it.t_solve:.2f}</td></tr>")
    out.append("</table>")
    out.append("<h2>All visits</h2><div class='grid'>")
    caps = {"ResPosScatter.png": "astrometric residuals: Δξ against Δη, histograms with clipped σ",
            "PosDPos.png": "astrometric residuals against ξ and η (tract plane)",
            "MdM.png": "photometric residuals against magnitude; matched vs internal; calibrated − catalogue",
            "ResFlux.png": "photometric residual histogram, CCD terms against radius, by visit and CCD",
            "DFlux2D.png": "photometric residuals by focal-plane position"}
    for name, cap in caps.items():
        if name in files:
            out.append(_img(name, e(cap)))
    out.append("</div>")
    out.append("<h2>Visits</h2><table><tr><th>visit</th><th>MJD</th><th>CCDs</th><th>detections</th>"
               "<th>ref.</th><th>astrom. rms (mas)</th><th>astrom. not used</th><th>photom. rms (mmag)</th>"
               "<th>photom. not used</th><th>zero point 2.5 log FLUXMAG0 (median, mag)</th><th>J centre (u, v) px</th>"
               "<th>J non-concentric rms</th></tr>")
    for r in visits:
        ji = jinfo.get(r["visit"])
        jc = f"({ji['u0']:.0f}, {ji['v0']:.0f})" if ji else "–"
        jn = f"{ji['nonconcentric']:.1e}" if ji else "–"
        fz = " (frozen)" if r["frozen"] else ""
        out.append(f"<tr><td><a href='#v{r['visit']}'>{r['visit']}</a>{fz}</td><td>{_f(r['mjd'], '{:.4f}')}</td>"
                   f"<td>{r['n_ccd']}</td><td>{r['n_det']}</td><td>{r['n_ref']}</td><td>{_f(r['astro_rms'])}</td>"
                   f"<td>{r['astro_rej']}</td><td>{_f(r['phot_rms'])}</td><td>{r['phot_rej']}</td>"
                   f"<td>{_f(r['zp'], '{:.4f}')}</td><td>{jc}</td><td>{jn}</td></tr>")
    out.append("</table>")
    for r in visits:
        v = r["visit"]
        out.append(f"<h3 id='v{v}'>visit {v}</h3><div class='grid'>")
        for name, cap in ((f"ResPosArrow2D_{v}.png", "astrometric residuals (focal-plane axes)"),
                          (f"fcont_{v}.png", "flux correction"), (f"jcont_{v}.png", "Jacobian (pixel area)")):
            if name in files:
                out.append(_img(name, e(cap)))
        out.append("</div>")
    out.append("<h2>Files</h2><p class='note'>hscPipe's files: " + ", ".join(
        f"<a href='{n}'>{n}</a>" for n in ("catalog.fits", "ccd.dat", "ccdScale.dat", "coeffs.dat",
                                           "dmag.dat", "dpos.dat") if n in files)
        + ". To rebuild this folder: <code>mosaicfit report ROOT --rerun=RERUN --tract=T</code> "
        "(reads <a href='solution.json'>solution.json</a>, detections.fits, stars.fits).</p>")
    out.append("</body></html>\n")
    write_text("\n".join(out), os.path.join(outdir, "index.html"))


# ------------------------------------------------------------------------------------------
def write_all(sol, outdir, save=True, jobs=None):
    """Write every diagnostic plot and file of `sol` into `outdir` (created if needed) and
    index.html; with `save`, also the solution's state for `mosaicfit report`.

    jobs: processes drawing the per-visit plots (default: up to 4, the CPUs there are, for 8
    visits or more; 1 draws everything here). The helpers are fresh interpreters
    (``python -m mosaicfit.diagnostics``), not forks: safe after OpenMP and in any script.
    Returns the list of file names written."""
    with _single_thread_blas():
        return _write_all(sol, outdir, save, jobs)


def _visit_plots(sol, fp, visits, sips, cols, present, outdir):
    """The three per-visit plots of `visits`: (file names, {visit: J centre info})."""
    files, jinfo = [], {}
    for v in visits:
        name = f"ResPosArrow2D_{v}.png"
        plot_res_pos_arrow(sol, v, fp, sips[v], cols, os.path.join(outdir, name))
        files.append(name)
        if sol.has_photometry(v):
            name = f"fcont_{v}.png"
            plot_fcont(sol, v, fp, os.path.join(outdir, name), present=present[v])
            files.append(name)
        name = f"jcont_{v}.png"
        info = plot_jcont(sol, v, fp, sips[v], os.path.join(outdir, name), present=present[v])
        files.append(name)
        if info:
            jinfo[int(v)] = info
    return files, jinfo


class _Cols(dict):
    """Detection columns as a dict of arrays that _col reads like a Table."""
    @property
    def colnames(self):
        return list(self)


ARROW_COLUMNS = ("visit", "ccd", "astro_used", "ref", "dxi", "deta", "u", "v", "pos_err")


def _start_helpers(sol, fp, shares, sips, present, outdir):
    """Start one helper process per share of visits; returns [(process, share, result path)]."""
    import copy
    import pickle
    import subprocess
    import sys
    import tempfile
    slim = copy.copy(sol)
    slim.detections = slim.stars = None
    slim._wcs_cache = {}
    d = sol.detections
    cols = _Cols({c: np.asarray(d[c]) for c in ARROW_COLUMNS})
    fp.numbers_layer()
    fd, payload = tempfile.mkstemp(prefix=".diag-", suffix=".pkl", dir=outdir)
    with os.fdopen(fd, "wb") as f:
        pickle.dump(dict(sol=slim, fp=fp, sips=sips, cols=cols, present=present, outdir=outdir),
                    f, protocol=pickle.HIGHEST_PROTOCOL)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = []
    for share in shares:
        result = payload[:-4] + f"-{share[0]}.json"
        cmd = [sys.executable, "-m", "mosaicfit.diagnostics", payload, result] + [str(v) for v in share]
        procs.append((subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE), share, result))
    return procs, payload


def _finish_helpers(procs, payload, redo):
    """Wait for the helpers; the visits of one that failed are drawn by `redo(visits)`."""
    files, jinfo = [], {}
    for p, share, result in procs:
        _, err = p.communicate()
        ok = p.returncode == 0 and os.path.exists(result)
        if ok:
            with open(result) as f:
                r = json.load(f)
            files += r["files"]
            jinfo.update({int(k): v for k, v in r["jcont"].items()})
            os.unlink(result)
        else:
            log.warning("diagnostics helper for visits %s failed (%s): drawing them here",
                        share, err.decode(errors="replace").strip().splitlines()[-1:] or p.returncode)
            f2, j2 = redo(share)
            files += f2
            jinfo.update(j2)
    if os.path.exists(payload):
        os.unlink(payload)
    return files, jinfo


def _helper_main(argv):
    """Entry of a helper process: python -m mosaicfit.diagnostics PAYLOAD RESULT VISIT..."""
    import pickle
    payload, result, visits = argv[0], argv[1], [int(v) for v in argv[2:]]
    with open(payload, "rb") as f:
        w = pickle.load(f)
    with _single_thread_blas():
        files, jinfo = _visit_plots(w["sol"], w["fp"], visits, w["sips"], w["cols"], w["present"],
                                    w["outdir"])
    write_text(json.dumps(_jsonable(dict(files=files, jcont=jinfo))), result)
    return 0


def _default_jobs(nvisit):
    """Helpers only for 8 visits or more (each costs ~2 s to start), at most 4, and no more
    than the CPUs left idle by the machine's load: on a busy machine they only compete."""
    if nvisit < 8:
        return 1
    ncpu = os.cpu_count() or 1
    try:
        idle = ncpu - os.getloadavg()[0]
    except (AttributeError, OSError):
        idle = ncpu
    return int(max(1, min(4, ncpu, np.floor(idle + 0.5))))


def _write_all(sol, outdir, save, jobs):
    t0 = time.time()
    os.makedirs(outdir, exist_ok=True)
    d = sol.detections
    if d is None or len(d) == 0:
        raise MosaicError("the solution has no detection table: nothing to diagnose")
    files = []
    if save:
        save_solution(sol, outdir)
        files += ["solution.json", "detections.fits", "stars.fits"]
    ccds = sorted(set(np.unique(_col(d, "ccd", int)).tolist()) | set(sol.ccd_geom))
    fp = _FocalPlane(sol, ccds)
    visits = sorted(np.unique(_col(d, "visit", np.int64)).tolist())
    sips = {v: visit_sip(sol, v, fp) for v in visits}
    has_astro = bool(np.isfinite(_col(d, "dxi")).any())
    has_phot = bool(np.isfinite(_col(d, "dmag")).any())
    dv, dc = _col(d, "visit", np.int64), _col(d, "ccd", int)
    present = {v: set(np.unique(dc[dv == v]).tolist()) for v in visits}

    # per-visit plots: shares for helper processes, started first, the last share drawn here
    if jobs is None:
        jobs = _default_jobs(len(visits))
    jobs = max(1, min(int(jobs), len(visits)))
    shares = [visits[i::jobs] for i in range(jobs)]
    procs, payload = ([], None)
    if jobs > 1:
        procs, payload = _start_helpers(sol, fp, shares[:-1], sips, present, outdir)

    write_ccd_dat(sol, fp, os.path.join(outdir, "ccd.dat"))
    files.append("ccd.dat")
    if any(h is not None for h in sips.values()):
        write_coeffs(sol, sips, os.path.join(outdir, "coeffs.dat"))
        files.append("coeffs.dat")
    if has_astro:
        write_dpos(d, os.path.join(outdir, "dpos.dat"))
        files.append("dpos.dat")
    if has_phot:
        write_ccd_scale(sol, fp, os.path.join(outdir, "ccdScale.dat"))
        write_dmag(d, os.path.join(outdir, "dmag.dat"))
        write_catalog(sol, os.path.join(outdir, "catalog.fits"))
        files += ["ccdScale.dat", "dmag.dat", "catalog.fits"]
    t_files = time.time() - t0
    if has_astro:
        plot_res_pos_scatter(d, os.path.join(outdir, "ResPosScatter.png"))
        plot_pos_dpos(d, os.path.join(outdir, "PosDPos.png"))
        files += ["ResPosScatter.png", "PosDPos.png"]
    if has_phot:
        plot_mdm(d, os.path.join(outdir, "MdM.png"))
        plot_res_flux(sol, d, fp, os.path.join(outdir, "ResFlux.png"))
        plot_dflux2d(sol, d, fp, os.path.join(outdir, "DFlux2D.png"))
        files += ["MdM.png", "ResFlux.png", "DFlux2D.png"]

    redo = lambda vs: _visit_plots(sol, fp, vs, sips, d, present, outdir)
    vfiles, jinfo = redo(shares[-1])
    if procs:
        f2, j2 = _finish_helpers(procs, payload, redo)
        vfiles += f2
        jinfo.update(j2)
    order = {v: k for k, v in enumerate(visits)}
    vfiles.sort(key=lambda n: (order[int(n.rsplit("_", 1)[1][:-4])], n))
    files += vfiles

    summ = summarize(sol)
    summ["jcont"] = {int(v): jinfo[v] for v in sorted(jinfo)}
    write_text(json.dumps(_jsonable(summ), indent=1) + "\n", os.path.join(outdir, "summary.json"))
    files.append("summary.json")
    write_index(sol, outdir, summ, visit_table(sol), jinfo, set(files), time.time() - t0)
    files.append("index.html")
    log.info("diagnostics: %d files in %s (%.1f s, files %.1f s, %d process%s)", len(files),
             outdir, time.time() - t0, t_files, jobs, "es" if jobs > 1 else "")
    return files


if __name__ == "__main__":
    import sys
    sys.exit(_helper_main(sys.argv[1:]))
