"""The joint fit of a tract: selection, association, astrometry, photometry, the record.

    sol = solve(exposures, camera, config, refcat)

`exposures` are :class:`~mosaicfit.fit.selection.ExposureData` (in-memory catalogues and
single-frame WCS headers: no files needed), `refcat` a table in the LSST reference-catalogue
convention. Returns a :class:`~mosaicfit.model.solution.Solution`.
"""
import logging
import time

import numpy as np
from astropy.table import Table

from .. import MosaicError
from ..config import MosaicConfig
from ..io.dataid import format_visit_ccds
from ..model.colorterms import default_band
from ..model.reference import Reference
from ..model.sky import mean_position
from ..model.solution import Solution
from .association import associated_references, cross_match, match_reference
from .astrometry import fit_astrometry
from .photometry import filter_context, fit_photometry
from .selection import select_detections

log = logging.getLogger("mosaicfit.fit")


def solve(exposures, camera, config=None, refcat=None, tangent_point=None, refcat_name=""):
    """Fit the tract made of `exposures` (list of :class:`ExposureData`).

    refcat: an astropy Table in the LSST reference-catalogue convention (coord_ra/dec
    radians, <band>_flux nJy, optional errors, proper motions and epoch), or None for a
    relative solution (config.relativeSolution). tangent_point: (ra, dec) of the tract plane,
    degrees (default: the centre of the detections). refcat_name: the catalogue's name, which
    selects its colour terms (e.g. ps1_pv3_3pi_20170110). Visits of several filters share one
    astrometric solution and get one photometric solution per filter. Returns a
    :class:`Solution`.
    """
    cfg = (config or MosaicConfig()).validate()
    if not refcat_name and refcat is not None:
        refcat_name = str(getattr(refcat, "meta", {}).get("name", ""))
    t_start = time.time()
    stats = {"timing": {}, "iterations": []}
    det, excluded = select_detections(exposures, camera, cfg)
    if excluded:
        log.warning("%d CCDs without usable stars excluded: %s", len(excluded),
                    format_visit_ccds(excluded))
    stats["excluded"] = excluded
    exp_mjd = np.array([np.nan if e.mjd is None else e.mjd for e in exposures], float)
    visits = np.unique(det.visit)
    vmjd = {}
    for v in visits:
        m = [e.mjd for e in exposures if e.visit == v and e.mjd is not None]
        vmjd[int(v)] = float(np.mean(m)) if m else np.nan
    t0 = np.nanmean(list(vmjd.values())) if np.any(np.isfinite(list(vmjd.values()))) else np.nan
    det_mjd = exp_mjd[det.exp]

    # -- cross-identification ------------------------------------------------------------------
    tm = time.time()
    star, nstar, namb = cross_match(det.ra, det.dec, det.visit, cfg.radXMatch, min_visits=1)
    keep = star >= 0
    det = det.take(keep)
    star = star[keep]
    det_mjd = det_mjd[keep]
    sra, sdec = mean_position(det.ra, det.dec, star, nstar)
    nvis = np.bincount(star, minlength=nstar)

    band = cfg.refBand or default_band(next((e.filter for e in exposures if e.filter), "")) or ""
    ref = None
    ref_of_star = np.full(nstar, -1, np.int64)
    if refcat is not None and len(refcat):
        ref = Reference.from_table(refcat, band)
        given = associated_references(exposures, det, star, nstar)
        if given is not None:
            # hscPipe's match files (mosaicfit.pipeline.references): the associations they record
            ref_of_star = given
        else:
            rra, rdec, _ = ref.at(t0 if np.isfinite(t0) else np.nan)
            ref_of_star = match_reference(sra, sdec, rra, rdec, cfg.radXMatch)
    use = ((nvis >= cfg.numSourceMerge) & cfg.internalFitting) | (ref_of_star >= 0)
    new = np.full(nstar, -1, np.int64)
    new[use] = np.arange(use.sum())
    star = new[star]
    keep = star >= 0
    det, star, det_mjd = det.take(keep), star[keep], det_mjd[keep]
    ref_of_star = ref_of_star[use]
    nstar = int(use.sum())
    n_ref = int((ref_of_star >= 0).sum())
    stats.update(n_detections=len(det), n_stars=nstar, n_ref_stars=n_ref, n_ambiguous=namb,
                 n_visits=len(visits), n_ccds=len(np.unique(det.ccd)), band=band)
    stats["timing"]["match"] = time.time() - tm
    log.info("%d detections of %d stars (%d matched to the reference catalogue, %d ambiguous "
             "groups dropped) in %d visits", len(det), nstar, n_ref, namb, len(visits))
    if nstar == 0:
        raise MosaicError("no star is seen in two visits or matched to the reference catalogue")
    if n_ref == 0 and not cfg.relativeSolution:
        raise MosaicError("no star matched the reference catalogue within radXMatch="
                          f"{cfg.radXMatch}\"; use --config relativeSolution=True for a "
                          "relative solution")

    if tangent_point is None:
        tp = mean_position(det.ra, det.dec, np.zeros(len(det), int), 1)
        tangent_point = (float(tp[0][0]), float(tp[1][0]))
    ps = camera.pixel_size_mm
    u0 = np.empty(len(det))
    v0 = np.empty(len(det))
    for c in np.unique(det.ccd):
        m = det.ccd == c
        fx, fy = camera.pixel_to_focal_plane(int(c), det.x[m], det.y[m])
        u0[m], v0[m] = fx / ps, fy / ps
    scale = 1.02 * max(np.max(np.abs(u0)), np.max(np.abs(v0)))
    X0, Y0 = camera.focal_plane_to_field_angle(u0 * ps, v0 * ps)
    fa_scale = 1.02 * max(np.max(np.abs(X0)), np.max(np.abs(Y0)))
    sol = Solution(camera, tangent_point, scale, cfg.fittingOrder, cfg.fluxFitOrder,
                   "chebyshev" if cfg.chebyshev else "legendre", fa_scale=fa_scale,
                   sip_order=cfg.fittingOrder)
    sol.stats = stats
    for v in visits:
        e = next(e for e in exposures if e.visit == v)
        sol.visit_info[int(v)] = dict(mjd=vmjd[int(v)], filter=e.filter)

    vidx = np.searchsorted(visits, det.visit).astype(np.int32)
    ccds = np.unique(det.ccd)
    cidx = np.searchsorted(ccds, det.ccd).astype(np.int32)

    ctx = dict(det=det, star=star, nstar=nstar, vidx=vidx, cidx=cidx, ccds=ccds, visits=visits,
               star_ra=sra[use], star_dec=sdec[use],
               u0=u0, v0=v0, ref=ref, ref_of_star=ref_of_star, t0=t0, det_mjd=det_mjd)
    if cfg.doSolveWcs:
        ta = time.time()
        fit_astrometry(sol, ctx, cfg, exposures)
        stats["timing"]["astrometry"] = time.time() - ta
    else:
        for e in exposures:
            sol.frozen[(e.visit, e.ccd)] = e.wcs_header
    if cfg.doSolveFlux:
        tp_ = time.time()
        filters = {int(v): (sol.visit_info[int(v)]["filter"] or "") for v in visits}
        for filt in sorted(set(filters.values())):
            sub = filter_context(ctx, [v for v in visits if filters[int(v)] == filt])
            if sub["nstar"] == 0:
                log.warning("filter %s: no star for the photometric fit", filt)
                continue
            if len(filters) > 1:
                log.info("photometry of filter %s: %d visits", filt, len(sub["visits"]))
            fit_photometry(sol, sub, cfg, exposures, filt, refcat_name)
            if "phot_resid" in sub:
                if "ref_mag_used" in sub:
                    full_ref = ctx.setdefault("mag_ref_det", np.full(len(ctx["det"]), np.nan))
                    full_ref[sub["rows"]] = sub["ref_mag_used"][sub["star"]]
                for k in ("phot_active", "phot_resid", "phot_w", "m_cor"):
                    full = ctx.setdefault(k, np.full(len(ctx["det"]), np.nan if k != "phot_active" else False,
                                                     dtype=float if k != "phot_active" else bool))
                    full[sub["rows"]] = sub[k]
                xs = ctx.setdefault("phot_xstar", np.full(ctx["nstar"], np.nan))
                xs[sub["star_ids"]] = sub["phot_xstar"]
        stats["timing"]["photometry"] = time.time() - tp_
    stats["timing"]["solve_total"] = time.time() - t_start
    _record(sol, ctx, exposures)
    return sol


def _record(sol, ctx, exposures):
    """sol.detections and sol.stars: what the fit used and found, for diagnostics and for
    users (astropy Tables; positions in the tract plane in arcsec, residuals in mas/mmag)."""
    det, star, nstar = ctx["det"], ctx["star"], ctx["nstar"]
    n = len(det)
    ros = ctx["ref_of_star"]
    t = Table()
    t["visit"] = det.visit.astype(np.int64)
    t["ccd"] = det.ccd.astype(np.int32)
    t["x"], t["y"] = det.x, det.y
    u, v = np.empty(n), np.empty(n)
    for c in np.unique(det.ccd):
        m = det.ccd == c
        u[m], v[m] = sol.focal_plane(int(c), det.x[m], det.y[m])
    t["u"], t["v"] = u, v
    t["star"] = star.astype(np.int64)
    t["ref"] = ros[star] >= 0
    nan = np.full(n, np.nan)
    if "astro_resid" in ctx:
        res, xs = ctx["astro_resid"], ctx["astro_xstar"]
        t["xi_star"], t["eta_star"] = xs[star, 0], xs[star, 1]
        # the model's position of the detection (the fit's residuals are taken about a star
        # position of 0 where the star has none left: all its detections clipped)
        x0 = np.nan_to_num(xs[star], nan=0.0)
        t["xi_fit"], t["eta_fit"] = x0[:, 0] + res[:, 0] + ctx["astro_y"][:, 0], \
            x0[:, 1] + res[:, 1] + ctx["astro_y"][:, 1]
        t["dxi"], t["deta"] = res[:, 0] * 1000.0, res[:, 1] * 1000.0        # mas
        t["pos_err"] = 1000.0 / np.sqrt(ctx["astro_w"])                     # mas
        t["astro_used"] = ctx["astro_active"]
    else:
        for c in ("xi_star", "eta_star", "xi_fit", "eta_fit", "dxi", "deta", "pos_err"):
            t[c] = nan
        t["astro_used"] = np.zeros(n, bool)
    t["mag_inst"] = -2.5 * np.log10(det.flux)
    if "phot_resid" in ctx:
        xs = ctx["phot_xstar"]
        t["mag_cor"] = ctx["m_cor"]                       # m_inst - 2.5 log10 J
        t["jacobian"] = 10 ** (-0.4 * (ctx["m_cor"] - t["mag_inst"]))
        t["mag_fit"] = np.nan_to_num(xs[star], nan=0.0) + ctx["phot_resid"]   # calibrated magnitude
        t["mag_star"] = xs[star]
        t["dmag"] = ctx["phot_resid"] * 1000.0             # mmag
        t["mag_err"] = 1.0 / np.sqrt(ctx["phot_w"])
        t["phot_used"] = ctx["phot_active"]
    else:
        for c in ("mag_cor", "jacobian", "mag_fit", "mag_star", "dmag", "mag_err"):
            t[c] = nan
        t["phot_used"] = np.zeros(n, bool)
    ref = ctx["ref"]
    rmag = np.full(nstar, np.nan)
    rra = np.full(nstar, np.nan)
    rdec = np.full(nstar, np.nan)
    if ref is not None:
        has = ros >= 0
        rmag[has] = ref.mag[ros[has]]
        r0 = ref.at(ctx["t0"])
        rra[has], rdec[has] = r0[0][ros[has]], r0[1][ros[has]]
    # the reference magnitude the photometric fit used (through the colour term of the
    # detection's filter), else the catalogue's band magnitude
    t["mag_ref"] = ctx["mag_ref_det"] if "mag_ref_det" in ctx else rmag[star]
    sol.detections = t
    st = Table()
    st["id"] = np.arange(nstar, dtype=np.int64)
    ra, dec = mean_position(det.ra, det.dec, star, nstar)     # single-frame, the fallback
    if "astro_xstar" in ctx:
        fa, fd = sol.tract_to_sky(ctx["astro_xstar"][:, 0], ctx["astro_xstar"][:, 1])
        fitted = np.isfinite(fa) & np.isfinite(fd)       # not for stars all of whose
        ra, dec = np.where(fitted, fa, ra), np.where(fitted, fd, dec)   # detections were clipped
    st["ra"], st["dec"] = ra, dec                            # degrees, at the mean epoch
    st["mag"] = ctx["phot_xstar"] if "phot_xstar" in ctx else np.full(nstar, np.nan)
    st["n_det"] = np.bincount(star, minlength=nstar)
    st["ref_index"] = ros
    st["ref_ra"], st["ref_dec"], st["ref_mag"] = rra, rdec, rmag
    sol.stars = st


