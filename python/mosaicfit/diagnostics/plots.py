"""hscPipe's diagnostic plots, drawn with Matplotlib's object API on the Agg canvas (no
pyplot, no global state): the per-visit focal-plane maps (ResPosArrow2D, fcont, jcont) and
the all-visit plots (ResPosScatter, PosDPos, MdM, DFlux2D, ResFlux)."""
import contextlib

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from threadpoolctl import threadpool_limits

from ..io.atomic import atomic_path
from ..model.basis import PolyBasis
from ..model.sip import SipModel, fit_tan_sip
from ..model.sky import sky_to_tangent
from ..units import DEG_MAS
from .stats import ccd_term, ccd_terms, clipped_std, column, nice, rms, rms2

__all__ = ["FocalPlane", "visit_sip", "model_jacobian", "jacobian_map", "concentric_fit",
           "concentric_centre", "flux_correction_map", "plot_res_pos_arrow", "plot_fcont",
           "plot_jcont", "plot_res_pos_scatter", "plot_pos_dpos", "plot_mdm", "plot_dflux2d",
           "plot_res_flux", "single_thread_blas"]


GREEN, RED, GREY, CYAN, BLUE = "#1a9641", "#d7191c", "#9a9a9a", "#2c9fbf", "#2b5fab"


GRID_STEP = 150.0     # focal-plane pixels between grid points of the contour maps


FP_PX = 660           # size of the focal-plane panels in pixels (at 100 dpi)


# ------------------------------------------------------------------------------------------
# geometry shared by the focal-plane plots
# ------------------------------------------------------------------------------------------
class FocalPlane:
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
        """Draw the CCD outlines on `ax`, set to the focal plane [-lim, lim]^2 (focal-plane pixels).

        Parameters
        ----------
        present : set of int, optional
            CCDs drawn in `color`; the others dashed grey. None: all in `color`.
        numbers : bool
            Also paste the CCD numbers (:meth:`numbers_layer`).
        """
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
def single_thread_blas():
    """Run small LAPACK fits single-threaded: multi-threaded OpenBLAS on a busy machine makes a
    1000 x 54 least-squares fit take up to 0.5 s instead of 1 ms."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _figure(w, h):
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
    if not sol.has_astrometry(visit):
        return None
    order = sol.sip_order
    gu, gv = _sample_on_ccds(fp, 1500)
    ra, dec = _fp_to_sky(sol, visit, fp, gu, gv)
    c = fp.ccds[0]
    ax, ay = sol.optical_axis_pixel(c)
    r0, d0 = sol.pixel_to_sky(visit, c, np.array([ax]), np.array([ay]))
    crval = (float(np.ravel(r0)[0]), float(np.ravel(d0)[0]))
    h = fit_tan_sip(gu, gv, ra, dec, (1.0, 1.0), crval, order, inverse_order=order)
    _refit_inverse(h, order, *_sample_on_ccds(fp, 3000))
    r1, d1 = SipModel.from_header(h).pixel_to_sky(gu, gv)
    err = np.hypot((r1 - ra) * np.cos(np.radians(dec)), d1 - dec) * DEG_MAS
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


def _refit_inverse(h, order, u, v):
    """Replace the header's AP/BP by a fit over the points (u, v) (on the CCDs): fitted over
    a square box around the field, the inverse would chase the order-N forward polynomial
    where no CCD constrains it (the box's corners are 40% farther out) and be pixels off."""
    U, V = SipModel.from_header(h).forward(u, v)       # CRPIX = 1: pixel (u, v) is (u, v)
    basis = PolyBasis(order, "monomial")
    inv = dict(zip(basis.terms, basis.fit(U, V, np.stack([u - U, v - V], axis=-1))))
    h["AP_ORDER"] = order
    h["BP_ORDER"] = order
    for (p, q), c in inv.items():
        h[f"AP_{p}_{q}"] = float(c[0])
    for (p, q), c in inv.items():
        h[f"BP_{p}_{q}"] = float(c[1])


def model_jacobian(sol, visit, fp, u, v, step=1.0):
    """J(u, v) of the model itself: |det d(xi, eta)/d(u, v)| in the visit's gnomonic plane
    about the sky at the optical axis, over its value at the axis, by forward differences of
    Solution.pixel_to_sky (`step` in pixels) through a reference CCD's pixels (the model is a
    function of the focal-plane position)."""
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
    """J(u, v) of a TAN-SIP header (|det d(xi, eta)/d(x, y)| / |det CD|)."""
    return SipModel.from_header(h).area_ratio(u, v)


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
    """Draw ResPosArrow2D_<visit>.png: the visit's astrometric residuals on the focal plane.

    Left, the residual (model - star, mas) of each detection used, turned to the focal-plane
    axes; right, their weighted means in 1024-px cells, with the rms the errors alone would give.

    Parameters
    ----------
    hdr : header or None
        The visit's TAN-SIP header about the optical axis: its CD matrix turns (dxi, deta) to
        (du, dv). None: no arrows, a note instead.
    d : astropy.table.Table
        The detections (``sol.detections``: u, v in focal-plane pixels, dxi, deta, pos_err in mas).
    """
    fig = _figure(15.6, 8.2)
    ax = _fp_axes(fig, 95, 65)
    ax2 = _fp_axes(fig, 870, 65)
    m = (column(d, "visit", np.int64) == visit)
    present = set(np.unique(column(d, "ccd", int)[m]).tolist())
    fp.draw(ax, present)
    fp.draw(ax2, present, numbers=False)
    used = m & column(d, "astro_used", bool)
    ref = column(d, "ref", bool)
    fig.suptitle(f"ResPosArrow2D: visit {visit} — astrometric residuals (model − star) turned to "
                 "the focal-plane axes", fontsize=11)
    if used.any() and hdr is not None:
        dxi, deta = column(d, "dxi")[used], column(d, "deta")[used]
        # residuals turned to the focal-plane axes: d(u, v) = CD^-1 d(xi, eta), in mas
        cd = np.array([[hdr["CD1_1"], hdr["CD1_2"]], [hdr["CD2_1"], hdr["CD2_2"]]])
        R = np.linalg.inv(cd) * np.sqrt(abs(np.linalg.det(cd)))
        du = R[0, 0] * dxi + R[0, 1] * deta
        dv = R[1, 0] * dxi + R[1, 1] * deta
        rms = rms2(dxi, deta)
        key = nice(3 * rms)
        u, v, r = column(d, "u")[used], column(d, "v")[used], ref[used]
        kw = dict(angles="xy", scale_units="xy", scale=key / 1500.0, width=0.0016, headwidth=3,
                  headlength=4, zorder=5)
        q = None
        for sel, col, lab in ((~r, RED, "internal stars"), (r, GREEN, "reference-matched stars")):
            if sel.any():
                q = ax.quiver(u[sel], v[sel], du[sel], dv[sel], color=col,
                              label=f"{lab}: {int(sel.sum())}, rms {rms2(dxi[sel], deta[sel]):.1f} mas",
                              **kw)
        ax.quiverkey(q, 0.80, 0.035, key, f"{key:g} mas", coordinates="axes", color="k",
                     labelpos="E", fontproperties={"size": 9})
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
        ax.set_title(f"each detection used ({int(used.sum())}): rms {rms:.1f} mas per axis",
                     fontsize=10)
        # structure: means in 1024-px cells (about 2 x 4 per CCD)
        w = 1.0 / column(d, "pos_err")[used] ** 2
        cu, cv, cdu, cdv, csig = _cell_means(u, v, du, dv, w, 1024.0)
        amp = np.hypot(cdu, cdv)
        key2 = nice(2.0 * np.sqrt(np.mean(amp ** 2))) if len(amp) else 1.0
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
    step = nice(2 * half / 40)
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
        step = nice((hi - lo) / 24)
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
        vmax = nice(3 * nonc * 1e4)
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
    """Draw ResPosScatter.png: dxi against deta (mas), histograms, clipped sigmas, residual / error."""
    au, ref = column(d, "astro_used", bool), column(d, "ref", bool)
    dxi, deta = column(d, "dxi"), column(d, "deta")
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
    err = column(d, "pos_err")
    chi = np.concatenate([dxi[au & fin] / err[au & fin], deta[au & fin] / err[au & fin]])
    nb = np.linspace(-5, 5, 51)
    axn.hist(chi, bins=nb, histtype="step", color=BLUE, density=True)
    xx = np.linspace(-5, 5, 201)
    axn.plot(xx, np.exp(-0.5 * xx ** 2) / np.sqrt(2 * np.pi), "k:", lw=1)
    axn.set_yticks([])
    axn.set_xlabel("residual / error (both axes)", fontsize=7)
    axn.tick_params(labelsize=7)
    axn.text(0.98, 0.95, f"rms {rms(chi):.2f}\nσ {clipped_std(chi)[0]:.2f}", transform=axn.transAxes,
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
    """Draw PosDPos.png: dxi, deta (mas) against xi, eta (degrees, tract plane), running medians."""
    au, ref = column(d, "astro_used", bool), column(d, "ref", bool)
    xi, eta = column(d, "xi_fit") / 3600.0, column(d, "eta_fit") / 3600.0
    dxi, deta = column(d, "dxi"), column(d, "deta")
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
    """Draw MdM.png: photometric residuals (mmag) against magnitude, with histograms.

    Detection - star against the fitted star magnitude, and calibrated - catalogue against the
    catalogue magnitude.
    """
    pu, ref = column(d, "phot_used", bool), column(d, "ref", bool)
    dm = column(d, "dmag")
    mag = column(d, "mag_star")
    cal_cat = (column(d, "mag_fit") - column(d, "mag_ref")) * 1000.0
    mref = column(d, "mag_ref")
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


def plot_turbulence(sol, path):
    """Turbulence.png: each visit's residual correlation function xi_+(r) before (solid) and
    after (dashed) its turbulence field was removed (fit.turbulence); visits whose field was
    not used in grey."""
    info = sol.stats.turbulence or {}
    fig = _figure(8.0, 5.5)
    ax = fig.add_axes([0.11, 0.11, 0.85, 0.8])
    for k, v in enumerate(sorted(info)):
        t = info[v]
        r = np.asarray(t.get("r_arcmin") or [], float)
        if len(r) == 0:
            continue
        col = f"C{k % 10}" if t.get("used") else GREY
        ax.plot(r, t.get("xi_before_mas2"), "-", color=col, lw=1.0, label=f"{v}")
        if t.get("xi_after_mas2"):
            ax.plot(r, t["xi_after_mas2"], "--", color=col, lw=1.0)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("separation (arcmin)")
    ax.set_ylabel("ξ₊ (mas²)")
    ax.set_title("residual correlation per visit: before (solid) and after (dashed) the "
                 "turbulence field", fontsize=9)
    if info:
        ax.legend(fontsize=6, ncol=4, loc="upper right")
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
    """Draw DFlux2D.png: weighted mean photometric residuals (mmag) in 768-px focal-plane cells.

    Left detection - star, right calibrated - catalogue less its weighted mean (the zero-point
    offset, in the panel's title); cells with fewer than 3 detections are blank.
    """
    pu, ref = column(d, "phot_used", bool), column(d, "ref", bool)
    u, v, dm = column(d, "u"), column(d, "v"), column(d, "dmag")
    w = 1.0 / (column(d, "mag_err") * 1000.0) ** 2
    cal_cat = (column(d, "mag_fit") - column(d, "mag_ref")) * 1000.0
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
            vmax = nice(2.5 * rms) if np.isfinite(rms) and rms > 0 else 10.0
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
    """Draw ResFlux.png: the photometric residuals (mmag) of all visits.

    Their histogram with the 3-sigma-clipped sigma, the CCD terms dC against the CCD's distance
    from the optical axis, and the residuals by visit and by CCD (medians and clipped sigmas).
    """
    pu = column(d, "phot_used", bool)
    dm = column(d, "dmag")
    visit, ccd = column(d, "visit", np.int64), column(d, "ccd", int)
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
    ax.text(0.03, 0.95, f"σ = {s:.1f} mmag (3σ-clipped)\nrms = {rms(dm[fin]):.1f} mmag\n"
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
