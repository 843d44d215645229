"""hscPipe's diagnostic files, with meas_mosaic's columns, order and header lines: ccd.dat,
ccdScale.dat, coeffs.dat, dmag.dat, dpos.dat and catalog.fits (the module doc of
:mod:`mosaicfit.diagnostics` says what each holds)."""
import numpy as np
from astropy.table import Table

from ..io.atomic import write_table, write_text
from ..model.sip import SipModel
from .stats import ccd_terms, column

__all__ = ["write_ccd_dat", "write_ccd_scale", "write_coeffs", "write_dmag", "write_dpos",
           "write_catalog", "catalog_table", "coeffs_from_sip", "sip_terms"]


# ------------------------------------------------------------------------------------------
# hscPipe's files
# ------------------------------------------------------------------------------------------
def write_ccd_dat(sol, fp, path):
    """Write hscPipe's ccd.dat: the fitted focal-plane centre of each CCD of `fp` and its yaw.

    Centres in 15 micron focal-plane pixels; yaw in radians, less the CCD's quarter turns
    (wrapped to [-pi, pi)), plus its fitted rotation.
    """
    lines = ["#chip   centerXFp    centerYFp   yaw (rad)\n"]
    for c in fp.ccds:
        d = sol.camera[c]
        yaw = np.radians(d.yaw_deg - 90.0 * d.nquarter)
        yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
        yaw += sol.placement.offsets.get(c, (0.0, 0.0, 0.0))[2]
        u, v = fp.centre[c]
        lines.append("%4ld %12.4f %12.4f %10.7f\n" % (c, u, v, yaw))
    write_text("".join(lines), path)


def write_ccd_scale(sol, fp, path):
    """Write ccdScale.dat: each CCD's flux scale 10^(-0.4 dC) (1 for a CCD without a term)."""
    lines = ["#chip scale\n"]
    terms = ccd_terms(sol)
    for c in fp.ccds:
        lines.append("%4ld %7.5f\n" % (c, 10.0 ** (-0.4 * terms.get(c, 0.0))))
    write_text("".join(lines), path)


def write_coeffs(sol, sips, path):
    """Write coeffs.dat: per visit its TAN-SIP about the optical axis, in meas_mosaic's layout.

    `sips` maps a visit to that header (None: the visit is left out); lines ``visit A D``
    (tangent point, radians), ``visit x0 y0``, then ``visit a b ap bp`` per term.
    """
    lines = ["# iexp     c.A          c.D\n", "# iexp     c.x0         c.y0\n",
             "# iexp     c.a(k)       c.b(k)           c.ap(k)         c.bp(k)\n"]
    for v in sorted(sips):
        h = sips[v]
        if h is None:
            continue
        (A, D), (x0, y0), a, b, ap, bp = coeffs_from_sip(h, sol.sip_order)
        x0, y0 = x0 + 0.0, y0 + 0.0          # no "-0.00000"
        # hscPipe wrote A, D with %12.5e: 1e-5 rad is 2"; 13 digits keep them exact
        lines.append("%ld %19.12e %19.12e\n" % (v, A, D))
        lines.append("%ld %12.5f %12.5f\n" % (v, x0, y0))
        for k in range(len(a)):
            lines.append("%ld %15.8e %15.8e %15.8e %15.8e\n" % (v, a[k], b[k], ap[k], bp[k]))
    write_text("".join(lines), path)


def _order_m_first(d):
    ref = column(d, "ref", bool)
    return np.concatenate([np.nonzero(ref)[0], np.nonzero(~ref)[0]])


def write_dmag(d, path):
    """Write dmag.dat from the detections table `d`: calibrated, star and catalogue magnitudes.

    Columns m|s, mag_cor, mag0, mag_cat (-9999 where unknown or internal), u, v (focal-plane
    pixels), good (used in the photometric fit); reference-matched (m) detections first.
    """
    idx = _order_m_first(d)
    ref = column(d, "ref", bool)[idx]
    cal = column(d, "mag_fit")[idx]
    star = column(d, "mag_star")[idx]
    cat = column(d, "mag_ref")[idx]
    u, v = column(d, "u")[idx], column(d, "v")[idx]
    good = column(d, "phot_used", bool)[idx] & np.isfinite(cal) & np.isfinite(star)
    good &= ~ref | np.isfinite(cat)
    cat = np.where(np.isfinite(cat) & ref, cat, -9999.0)
    cal = np.where(np.isfinite(cal), cal, -9999.0)
    star = np.where(np.isfinite(star), star, -9999.0)
    kind = np.where(ref, "m", "s")
    body = "".join("%s %9.6f %9.6f %9.6f %14.6f %14.6f %d\n" % row
                   for row in zip(kind, cal, star, cat, u, v, good.astype(int)))
    write_text("#m/s mag_cor   mag0    mag_cat         u             v       good=1\n" + body, path)


def write_dpos(d, path):
    """Write dpos.dat from the detections table `d`: model and star positions.

    Columns m|s, xi_fit, eta_fit (model), xi, eta (the star at the detection's epoch), degrees in
    the tract plane; u, v (focal-plane pixels); good (used in the astrometric fit);
    reference-matched (m) detections first.
    """
    idx = _order_m_first(d)
    ref = column(d, "ref", bool)[idx]
    xf, ef = column(d, "xi_fit")[idx], column(d, "eta_fit")[idx]
    # the star at the detection's epoch: model minus residual (arcsec) -> degrees
    xs = (xf - column(d, "dxi")[idx] / 1000.0) / 3600.0
    es = (ef - column(d, "deta")[idx] / 1000.0) / 3600.0
    xf, ef = xf / 3600.0, ef / 3600.0
    u, v = column(d, "u")[idx], column(d, "v")[idx]
    good = column(d, "astro_used", bool)[idx]
    kind = np.where(ref, "m", "s")
    body = "".join("%s %13.9f %13.9f %13.9f %13.9f %14.6f %14.6f %d\n" % row
                   for row in zip(kind, xf, ef, xs, es, u, v, good.astype(int)))
    write_text("#m/s  xi_fit   eta_fit       xi        eta           u              v    good=1\n" + body,
               path)


def catalog_table(sol):
    """hscPipe's catalog.fits rows: stars with at least one good photometric detection."""
    d, s = sol.detections, sol.stars
    nstar = len(s)
    star = column(d, "star", np.int64)
    pu = column(d, "phot_used", bool) & np.isfinite(column(d, "dmag"))
    w = np.where(pu, 1.0 / column(d, "mag_err") ** 2, 0.0)
    w[~np.isfinite(w)] = 0.0
    r = np.where(pu, column(d, "dmag") / 1000.0, 0.0)
    num = np.bincount(star[pu], minlength=nstar)
    sw = np.bincount(star, weights=w, minlength=nstar)
    swr = np.bincount(star, weights=w * r * r, minlength=nstar)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt(swr / sw)
    keep = num > 0
    t = Table()
    t["id"] = column(s, "id", np.int64)[keep]
    t["coord_ra"] = np.radians(column(s, "ra")[keep])
    t["coord_dec"] = np.radians(column(s, "dec")[keep])
    t["mag"] = column(s, "mag")[keep].astype(np.float32)
    t["err"] = err[keep].astype(np.float32)
    t["num"] = num[keep].astype(np.int32)
    t["coord_ra"].unit = t["coord_dec"].unit = "rad"
    t["mag"].unit = t["err"].unit = "mag"
    return t


def write_catalog(sol, path):
    """Write :func:`catalog_table` of `sol` to `path` (catalog.fits)."""
    write_table(catalog_table(sol), path)


def sip_terms(order):
    """meas_mosaic's coefficient order: (i, j) powers of (u, v) for n = 1..order, i = n..0."""
    return [(n - j, j) for n in range(1, order + 1) for j in range(0, n + 1)]


def coeffs_from_sip(h, order):
    """(A, D) radians, (x0, y0), and arrays a, b, ap, bp in meas_mosaic's convention."""
    sm = SipModel.from_header(h)
    cd = sm.cd
    terms = sip_terms(order)
    a, b, ap, bp = (np.zeros(len(terms)) for _ in range(4))
    for k, (i, j) in enumerate(terms):
        if i + j == 1:              # the CD matrix: xi = CD11 u + CD12 v, eta = CD21 u + CD22 v
            a[k], b[k] = cd[0, 1 - i], cd[1, 1 - i]
        else:
            sa, sb = sm.a.get((i, j), 0.0), sm.b.get((i, j), 0.0)
            a[k] = cd[0, 0] * sa + cd[0, 1] * sb
            b[k] = cd[1, 0] * sa + cd[1, 1] * sb
        ap[k] = sm.ap.get((i, j), 0.0)
        bp[k] = sm.bp.get((i, j), 0.0)
    A, D = np.radians(sm.crval)
    x0, y0 = -(sm.crpix - 1.0)
    return (A, D), (x0, y0), a, b, ap, bp
