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
from ..model.astrometry import CcdPlacement, Optics, TractPlane
from ..model.colorterms import default_band
from ..model.reference import Reference
from ..model.sky import mean_position
from ..model.solution import Solution
from ..model.statistics import RunStats
from .association import associated_references, cross_match, match_reference
from .astrometry import CCD_PLACEMENT_PRIOR_PX, fit_astrometry
from .photometry import fit_photometry
from .selection import select_detections
from ..model.groups import index_groups
from .state import FitData, PhotometryResult
from .uncertainty import astrometric_ccd_errors

log = logging.getLogger("mosaicfit.fit")

__all__ = ["solve"]


def solve(exposures, camera, config=None, refcat=None, tangent_point=None, refcat_name="",
          ccd_terms=None):
    """Fit the tract made of `exposures` (list of :class:`ExposureData`).

    refcat: an astropy Table in the LSST reference-catalogue convention (coord_ra/dec
    radians, <band>_flux nJy, optional errors, proper motions and epoch), or None for a
    relative solution (config.relativeSolution). tangent_point: (ra, dec) of the tract plane,
    degrees (default: the centre of the detections). refcat_name: the catalogue's name, which
    selects its colour terms (e.g. ps1_pv3_3pi_20170110; config.photoCatName overrides it).
    ccd_terms: a :class:`~mosaicfit.fit.state.CcdTerms` to hold the CCD placement and the
    photometric CCD terms at (a region of a split run: pipeline.regions), else they are fitted.
    Visits of several filters share one astrometric solution and get one photometric
    solution per filter. Returns a :class:`~mosaicfit.model.solution.Solution`.

    The detections are associated (into stars, and with the reference catalogue) first
    through the single-frame WCS within radXMatch, then again through each astrometric
    solution with radii that follow its residuals, until the associations no longer change
    (associationRounds): at the edge of the field the single-frame WCS can be as far off as
    radXMatch, and the first association misses or mismatches the stars there.
    """
    cfg = (config or MosaicConfig()).validate()
    if not refcat_name and refcat is not None:
        refcat_name = str(getattr(refcat, "meta", {}).get("name", ""))
    refcat_name = cfg.photoCatName or refcat_name
    t_start = time.time()
    stats = RunStats()
    inputs = _prepare(exposures, camera, cfg, refcat, stats)
    tm = time.time()
    data = _associate(inputs, inputs.det.ra, inputs.det.dec, cfg.radXMatch, cfg.radXMatch,
                      exposures, camera, cfg, stats)
    stats.timing["match"] = t_match = time.time() - tm

    if tangent_point is None:
        tp = mean_position(data.det.ra, data.det.dec, np.zeros(len(data), int), 1)
        tangent_point = (float(tp[0][0]), float(tp[1][0]))
    ps = camera.pixel_size_mm
    # the polynomials' coordinates scaled to about [-1, 1] over the detections
    scale = 1.02 * max(np.max(np.abs(data.u0)), np.max(np.abs(data.v0)))
    X0, Y0 = camera.focal_plane_to_field_angle(data.u0 * ps, data.v0 * ps)
    optics = Optics(camera, 1.02 * max(np.max(np.abs(X0)), np.max(np.abs(Y0))))
    plane = TractPlane(tangent_point)
    visit_info = {}
    of_visit = _exposures_by_visit(exposures)
    for v in data.visits:
        es = of_visit[int(v)]
        m = [x.mjd for x in es if x.mjd is not None]
        visit_info[int(v)] = dict(mjd=float(np.mean(m)) if m else np.nan, filter=es[0].filter)
    sol = Solution(camera, CcdPlacement(camera), sip_order=cfg.fittingOrder,
                   visit_info=visit_info, stats=stats)

    held_placement = ccd_terms if ccd_terms is not None and ccd_terms.placement else None
    if cfg.doSolveWcs:
        ta = time.time()
        # the first fit is provisional when associations through it follow: without the
        # common-terms prior, which the fit of the final association estimates again
        provisional = cfg.associationRounds > 0
        sol.astrometry, sol.frozen, finish = fit_astrometry(data, camera, optics, plane, cfg,
                                                            exposures, stats, held_placement,
                                                            provisional=provisional)
        sol.placement = sol.astrometry.placement
        for rnd in range(1, cfg.associationRounds + 1):
            tm = time.time()
            ra, dec = _model_positions(sol, inputs.det)
            r_int, r_ref = _association_radii(data, plane, cfg)
            new = _associate(inputs, ra, dec, r_int, r_ref, exposures, camera, cfg, stats,
                             quiet=True, exclude_refs=data.rejected_refs)
            stats.timing["match"] += time.time() - tm
            changed = _changed_detections(new, data)
            if changed <= 1e-3 * len(data):
                log.info("association through the solution (within %.2f\" between visits, "
                         "%.2f\" of the reference catalogue): %s", r_int, r_ref,
                         f"{changed} of {len(data)} detections changed (stable)" if changed
                         else "unchanged")
                if provisional:
                    # the association of the first fit is final: it is completed from
                    # where it ended
                    stats.iterations.clear()
                    sol.astrometry, sol.frozen, finish = fit_astrometry(
                        data, camera, optics, plane, cfg, exposures, stats, held_placement,
                        data.astrometry.start)
                    sol.placement = sol.astrometry.placement
                break
            log.info("association %d through the solution (within %.2f\" between visits, "
                     "%.2f\" of the reference catalogue): %d stars (%d reference) from %d "
                     "detections, was %d (%d)", rnd, r_int, r_ref, new.nstar,
                     int((new.ref_of_star >= 0).sum()), len(new), data.nstar,
                     int((data.ref_of_star >= 0).sum()))
            new.rejected_refs, new.damaged = data.rejected_refs, data.damaged
            start = data.astrometry.start
            data = new
            stats.iterations.clear()
            before = sol.frozen
            # the new association starts where the last solution ended (fit.astrometry)
            sol.astrometry, sol.frozen, finish = fit_astrometry(data, camera, optics, plane,
                                                                cfg, exposures, stats,
                                                                held_placement, start)
            sol.placement = sol.astrometry.placement
            provisional = False
            # a frozen visit's detections, placed by its single-frame WCS, may match nothing
            # through the solution and leave the problem: it stays frozen, not unwritten
            kept = {k: h for k, h in before.items()
                    if k not in sol.frozen and not sol.astrometry.has_visit(k[0])}
            if kept:
                log.warning("visit %s: no detection left after association %d through the "
                            "solution: kept at its single-frame WCS",
                            "^".join(str(v) for v in sorted({v for v, _ in kept})), rnd)
                sol.frozen.update(kept)
        else:
            if cfg.associationRounds:
                log.warning("the associations still changed after %d rounds through the "
                            "solution (associationRounds): the last one is used",
                            cfg.associationRounds)
        # the counts of the association used (a stable last round is not adopted)
        stats.n_detections, stats.n_stars = len(data.det), data.nstar
        stats.n_ref_stars = int((data.ref_of_star >= 0).sum())
        stats.n_ccds = len(np.unique(data.det.ccd))
        if finish is not None:
            finish()
        stats.timing["astrometry"] = time.time() - ta - (stats.timing["match"] - t_match)
    else:
        sol.frozen = {(e.visit, e.ccd): e.wcs_header for e in exposures}
    ccd_mag_err = {}
    if cfg.doSolveFlux:
        tp_ = time.time()
        filters = {int(v): (visit_info[int(v)]["filter"] or "") for v in data.visits}
        data.photometry = PhotometryResult.empty(len(data), data.nstar)
        for filt in sorted(set(filters.values())):
            sub = data.subset([v for v in data.visits if filters[int(v)] == filt])
            if sub.nstar == 0:
                log.warning("filter %s: no star for the photometric fit", filt)
                continue
            if len(filters) > 1:
                log.info("photometry of filter %s: %d visits", filt, len(sub.visits))
            model, fluxmag0err, mag_err = fit_photometry(
                sub, sol, cfg, exposures, filt, refcat_name, scale, stats,
                held=ccd_terms.flux.get(filt) if ccd_terms is not None else None,
                held_common=ccd_terms.flux_common.get(filt) if ccd_terms is not None else None)
            ccd_mag_err.update(mag_err)
            sol.photometry[filt] = model
            sol.fluxmag0err.update(fluxmag0err)
            _merge(data.photometry, sub)
        stats.timing["photometry"] = time.time() - tp_
    if cfg.doSolveWcs:
        _constrained_ccds(sol, data, camera, exposures, ccd_mag_err, cfg)
    stats.timing["solve_total"] = time.time() - t_start
    sol.detections, sol.stars = _record(sol, data)
    return sol


def _constrained_ccds(sol, data, camera, exposures, mag_err, cfg):
    """The uncertainty of every CCD of the fitted visits (fit.uncertainty) and whether the
    solution constrains it (maxCcdPosError, maxCcdMagError): ``sol.stats.ccd_errors`` rows;
    the CCDs outside said in the log."""
    pos_err = astrometric_ccd_errors(sol, data, camera, CCD_PLACEMENT_PRIOR_PX)
    a = data.astrometry
    key = data.det.visit.astype(np.int64) * 1000 + data.det.ccd
    n_used = dict(zip(*np.unique(key[a.active], return_counts=True)))
    coherent = {(int(q["visit"]), int(q["ccd"])): q["rms_mmag"]
                for p in sol.stats.photometry.values() for q in p.coherent}
    absolute = bool(a.prior_w is not None and np.any(data.ref_of_star >= 0))
    rows, outside = [], []
    keys = [(v, c) for v, c in sorted({(int(e.visit), int(e.ccd)) for e in exposures})
            if (v, c) not in sol.frozen and (v, c) in pos_err]
    # the limits follow the data's noise: a CCD is outside what the stars constrain when its
    # uncertainty is beyond maxCcdPosError AND maxCcdErrorRatio times the run's median CCD
    # (on the real sky the per-star scatter is 5-10 mas and the field-edge CCDs' products
    # 2.5-5 mas uncertain, well constrained; an extrapolated CCD is 10-100x the median)
    med_pe = float(np.median([pos_err[k][0] for k in keys])) if keys else 0.0
    mes = [mag_err[k][0] for k in keys if k in mag_err and np.isfinite(mag_err[k][0])]
    med_me = float(np.median(mes)) if mes else 0.0
    pos_limit = max(cfg.maxCcdPosError, cfg.maxCcdErrorRatio * med_pe)
    mag_limit = max(cfg.maxCcdMagError, cfg.maxCcdErrorRatio * med_me)
    for v, c in keys:
        pe, pe_max = pos_err[(v, c)]
        me, me_max = mag_err.get((v, c), (np.nan, np.nan))
        # a coherent residual (the model not describing the CCD) beyond the tolerance is an
        # error of the product as well
        co = coherent.get((v, c), 0.0)
        # a relative solution's frame is tied to the single-frame WCSs only (0.5" a star):
        # its CCDs are judged by having stars used by the fit, as before
        pos_ok = pe <= pos_limit if absolute else n_used.get(v * 1000 + c, 0) > 0
        ok = bool(pos_ok
                  and (not sol.has_photometry(v) or (me <= mag_limit
                                                     and abs(co) <= cfg.maxCcdMagError)))
        rows.append(dict(visit=v, ccd=c, pos_err_mas=float(pe), pos_err_max_mas=float(pe_max),
                         mag_err_mmag=float(me), mag_err_max_mmag=float(me_max),
                         coherent_mmag=float(co),
                         n_stars=int(n_used.get(v * 1000 + c, 0)), constrained=ok))
        if not ok:
            outside.append((v, c))
    sol.stats.ccd_errors = rows
    if outside:
        log.warning("%d CCDs outside what their visit's stars constrain (uncertainty beyond "
                    "%.1f mas or %.1f mmag: maxCcdPosError, maxCcdMagError or "
                    "maxCcdErrorRatio=%g x the median CCD; or a coherent residual beyond "
                    "maxCcdMagError=%.1f mmag): no products: %s",
                    len(outside), pos_limit, mag_limit, cfg.maxCcdErrorRatio,
                    cfg.maxCcdMagError, format_visit_ccds(outside))


class _Inputs:
    """The selected detections of all exposures and what every association needs."""

    def __init__(self, det, ref, t0, det_mjd, band, visits):
        self.det, self.ref, self.t0, self.det_mjd = det, ref, t0, det_mjd
        self.band, self.visits = band, visits


def _prepare(exposures, camera, cfg, refcat, stats):
    """Star selection of every CCD, the epochs, and the reference catalogue."""
    det, excluded = select_detections(exposures, camera, cfg)
    if excluded:
        log.warning("%d CCDs without usable stars excluded: %s", len(excluded),
                    format_visit_ccds(excluded))
    stats.excluded = excluded
    exp_mjd = np.array([np.nan if e.mjd is None else e.mjd for e in exposures], float)
    visits = np.unique(det.visit)
    vmjd = []
    of_visit = _exposures_by_visit(exposures)
    for v in visits:
        m = [e.mjd for e in of_visit.get(int(v), ()) if e.mjd is not None]
        vmjd.append(float(np.mean(m)) if m else np.nan)
    t0 = np.nanmean(vmjd) if np.any(np.isfinite(vmjd)) else np.nan
    band = cfg.refBand or default_band(next((e.filter for e in exposures if e.filter), "")) or ""
    ref = Reference.from_table(refcat, band) if refcat is not None and len(refcat) else None
    return _Inputs(det, ref, t0, exp_mjd[det.exp], band, visits)


def _exposures_by_visit(exposures):
    """{visit: [its ExposureData]}, in the order of `exposures`."""
    out = {}
    for e in exposures:
        out.setdefault(int(e.visit), []).append(e)
    return out


def _model_positions(sol, det):
    """(ra, dec) in degrees of the detections through the solution (the single-frame WCS of
    CCDs kept at it)."""
    ra, dec = det.ra.copy(), det.dec.copy()
    if sol.astrometry is None:
        return ra, dec
    visit, ccd = det.visit.astype(np.int64), det.ccd.astype(np.int64)
    fitted = np.isin(visit, list(sol.astrometry.coefficients))
    if sol.frozen:
        frozen = np.array(sorted(v * 1000 + c for v, c in sol.frozen), np.int64)
        fitted &= ~np.isin(visit * 1000 + ccd, frozen)
    m = np.nonzero(fitted)[0]
    ra[m], dec[m] = sol.astrometry.pixels_to_sky(visit[m], ccd[m], det.x[m], det.y[m])
    return ra, dec


def _association_radii(data, plane, cfg):
    """(between visits, to the reference catalogue) in arcsec: 5 sigma of the separations the
    solution's residuals make (sigma from the 95th percentile of the detections' residuals,
    Rayleigh-distributed; for the references with their scatter about the fitted stars),
    bounded below (0.2", 0.5") and above by radXMatch."""
    a = data.astrometry
    r = np.hypot(a.resid[a.active, 0], a.resid[a.active, 1])
    sigma = float(np.percentile(r, 95)) / np.sqrt(-2.0 * np.log(0.05)) if len(r) else np.inf
    r_int = float(np.clip(5.0 * np.sqrt(2.0) * sigma, 0.2, cfg.radXMatch))
    has = data.ref_of_star >= 0
    r_ref = cfg.radXMatch
    if has.any() and data.ref is not None:
        ra0, dec0, _ = data.ref.take(data.ref_of_star[has]).at(data.t0)
        xs = a.xstar[has]
        ok = np.all(np.isfinite(xs), axis=1)
        if ok.sum() > 10:
            px, py = plane.from_sky(ra0[ok], dec0[ok])
            d = np.hypot(xs[ok, 0] - px, xs[ok, 1] - py)
            s_ref = float(np.percentile(d, 95)) / np.sqrt(-2.0 * np.log(0.05))
            r_ref = float(np.clip(5.0 * np.hypot(sigma, s_ref), 0.5, cfg.radXMatch))
    return r_int, r_ref


def _changed_detections(a, b):
    """How many detections two associations of the run treat differently: present in one
    only, or in a star whose other detections or reference differ.

    A detection is its row in the run's selection (Detections.row); a star is named by its
    first detection in that order. O(detections): a lexicographic sort of both associations'
    (exposure, x, y) had been 0.7 s a call at 200 visits (and a loop over the detections 7 s
    of a 100-visit strip)."""
    ua, ub = np.asarray(a.det.row, np.int64), np.asarray(b.det.row, np.int64)
    nkey = int(max(ua.max(initial=-1), ub.max(initial=-1))) + 1

    def by_key(d, u):
        """(present, star name, reference) per key; the name is the smallest key of the
        star's detections."""
        first = np.full(max(d.nstar, 1), nkey, np.int64)
        np.minimum.at(first, d.star, u)
        present = np.zeros(nkey, bool)
        name = np.full(nkey, -1, np.int64)
        ref = np.full(nkey, -2, np.int64)
        present[u] = True
        name[u] = first[d.star]
        ref[u] = d.ref_of_star[d.star]
        return present, name, ref
    pa, na, ra = by_key(a, ua)
    pb, nb, rb = by_key(b, ub)
    both = pa & pb
    return int(np.sum(pa ^ pb)) + int(np.sum(both & ((na != nb) | (ra != rb))))


def _associate(inputs, ra, dec, r_int, r_ref, exposures, camera, cfg, stats, quiet=False,
               exclude_refs=None):
    """Cross-identification between visits (friends of friends within `r_int` arcsec of the
    detections' sky positions `ra`, `dec`) and association with the reference catalogue
    (within `r_ref`; the rows `exclude_refs` left out): the FitData both fits read."""
    det, det_mjd, ref, t0 = inputs.det, inputs.det_mjd, inputs.ref, inputs.t0
    star, nstar, namb = cross_match(ra, dec, det.visit, r_int, min_visits=1)
    keep = star >= 0
    det, star, det_mjd = det.take(keep), star[keep], det_mjd[keep]
    pra, pdec = ra[keep], dec[keep]
    sra, sdec = mean_position(pra, pdec, star, nstar)
    nvis = np.bincount(star, minlength=nstar)

    ref_of_star = np.full(nstar, -1, np.int64)
    if ref is not None:
        given = associated_references(exposures, det, star, nstar)
        if given is not None:
            # hscPipe's match files (mosaicfit.pipeline.references): the associations they record
            ref_of_star = given
        else:
            rra, rdec, _ = ref.at(t0 if np.isfinite(t0) else np.nan)
            allowed = np.setdiff1d(np.arange(len(rra)), exclude_refs) \
                if exclude_refs is not None and len(exclude_refs) else np.arange(len(rra))
            got = match_reference(sra, sdec, rra[allowed], rdec[allowed], r_ref)
            ref_of_star = np.where(got >= 0, allowed[np.maximum(got, 0)], -1)
    if cfg.minNumMatch > 0:
        det, star, det_mjd = _drop_ccds_with_few_matches(det, star, det_mjd, ref_of_star, cfg,
                                                         stats, quiet)
        nvis = np.bincount(star, minlength=nstar)
    use = ((nvis >= cfg.numSourceMerge) & cfg.internalFitting) | (ref_of_star >= 0)
    new = np.full(nstar, -1, np.int64)
    new[use] = np.arange(use.sum())
    star = new[star]
    keep = star >= 0
    det, star, det_mjd = det.take(keep), star[keep], det_mjd[keep]
    ref_of_star = ref_of_star[use]
    nstar = int(use.sum())
    n_ref = int((ref_of_star >= 0).sum())
    stats.n_detections, stats.n_stars, stats.n_ref_stars = len(det), nstar, n_ref
    stats.n_ambiguous, stats.n_visits, stats.band = namb, len(inputs.visits), inputs.band
    stats.n_ccds = len(np.unique(det.ccd))
    if not quiet:
        log.info("%d detections of %d stars (%d matched to the reference catalogue, %d "
                 "ambiguous groups dropped) in %d visits", len(det), nstar, n_ref, namb,
                 len(inputs.visits))
    if nstar == 0:
        raise MosaicError("no star is seen in two visits or matched to the reference catalogue")
    if n_ref == 0 and not cfg.relativeSolution:
        raise MosaicError("no star matched the reference catalogue within radXMatch="
                          f"{cfg.radXMatch}\"; use --config relativeSolution=True for a "
                          "relative solution")

    ps = camera.pixel_size_mm
    u0, v0 = np.empty(len(det)), np.empty(len(det))
    for c, m in index_groups(det.ccd):
        fx, fy = camera.pixel_to_focal_plane(int(c), det.x[m], det.y[m])
        u0[m], v0[m] = fx / ps, fy / ps
    visits = np.unique(det.visit)
    ccds = np.unique(det.ccd)
    return FitData(det=det, star=star, nstar=nstar,
                   vidx=np.searchsorted(visits, det.visit).astype(np.int32),
                   cidx=np.searchsorted(ccds, det.ccd).astype(np.int32), ccds=ccds,
                   visits=visits, star_ra=sra[use], star_dec=sdec[use], u0=u0, v0=v0, ref=ref,
                   ref_of_star=ref_of_star, t0=t0, det_mjd=det_mjd)


def _drop_ccds_with_few_matches(det, star, det_mjd, ref_of_star, cfg, stats, quiet=False):
    """meas_mosaic's minNumMatch: the CCDs with no more than that many reference matches
    leave the fit (and get no products), said in the log."""
    matched = ref_of_star[star] >= 0
    key = det.visit.astype(np.int64) * 1000 + det.ccd
    keys, inv = np.unique(key, return_inverse=True)
    n_match = np.bincount(inv, weights=matched, minlength=len(keys))
    few = n_match <= cfg.minNumMatch
    if not few.any():
        return det, star, det_mjd
    dropped = [(int(k // 1000), int(k % 1000)) for k in keys[few]]
    (log.info if quiet else log.warning)("%d CCDs with no more than minNumMatch=%d reference matches left out: %s",
                len(dropped), cfg.minNumMatch, format_visit_ccds(dropped))
    stats.excluded = sorted(set(stats.excluded) | set(dropped))
    keep = ~few[inv]
    return det.take(keep), star[keep], det_mjd[keep]


def _merge(full, sub):
    """Copy one filter's photometric result (FitData subset `sub`) into `full`."""
    r = sub.photometry
    for name in ("active", "resid", "w", "m_cor", "mag_ref"):
        getattr(full, name)[sub.rows] = getattr(r, name)
    full.xstar[sub.star_ids] = r.xstar


def _record(sol, data):
    """(detections, stars): what the fit used and found, for diagnostics and for users
    (astropy Tables; positions in the tract plane in arcsec, residuals in mas/mmag)."""
    det, star, nstar = data.det, data.star, data.nstar
    n = len(det)
    ros = data.ref_of_star
    t = Table()
    t["visit"] = det.visit.astype(np.int64)
    t["ccd"] = det.ccd.astype(np.int32)
    t["x"], t["y"] = det.x, det.y
    u, v = np.empty(n), np.empty(n)
    for c, m in index_groups(det.ccd):
        u[m], v[m] = sol.focal_plane(int(c), det.x[m], det.y[m])
    t["u"], t["v"] = u, v
    t["star"] = star.astype(np.int64)
    t["ref"] = ros[star] >= 0
    nan = np.full(n, np.nan)
    a = data.astrometry
    if a is not None:
        xs = a.xstar
        t["xi_star"], t["eta_star"] = xs[star, 0], xs[star, 1]
        # the model's position of the detection (the fit's residuals are taken about a star
        # position of 0 where the star has none left: all its detections clipped)
        x0 = np.nan_to_num(xs[star], nan=0.0)
        t["xi_fit"], t["eta_fit"] = x0[:, 0] + a.resid[:, 0] + a.y[:, 0], \
            x0[:, 1] + a.resid[:, 1] + a.y[:, 1]
        t["dxi"], t["deta"] = a.resid[:, 0] * 1000.0, a.resid[:, 1] * 1000.0      # mas
        t["pos_err"] = 1000.0 / np.sqrt(a.w)                                    # mas
        t["astro_used"] = a.active
    else:
        for c in ("xi_star", "eta_star", "xi_fit", "eta_fit", "dxi", "deta", "pos_err"):
            t[c] = nan
        t["astro_used"] = np.zeros(n, bool)
    t["mag_inst"] = -2.5 * np.log10(det.flux)
    p = data.photometry
    if p is not None:
        t["mag_cor"] = p.m_cor                            # m_inst - 2.5 log10 J
        t["jacobian"] = 10 ** (-0.4 * (p.m_cor - t["mag_inst"]))
        t["mag_fit"] = np.nan_to_num(p.xstar[star], nan=0.0) + p.resid   # calibrated magnitude
        t["mag_star"] = p.xstar[star]
        t["dmag"] = p.resid * 1000.0                       # mmag
        t["mag_err"] = 1.0 / np.sqrt(p.w)
        t["phot_used"] = p.active
    else:
        for c in ("mag_cor", "jacobian", "mag_fit", "mag_star", "dmag", "mag_err"):
            t[c] = nan
        t["phot_used"] = np.zeros(n, bool)
    ref = data.ref
    rmag = np.full(nstar, np.nan)
    rra = np.full(nstar, np.nan)
    rdec = np.full(nstar, np.nan)
    if ref is not None:
        has = ros >= 0
        rmag[has] = ref.mag[ros[has]]
        r0 = ref.at(data.t0)
        rra[has], rdec[has] = r0[0][ros[has]], r0[1][ros[has]]
    # the reference magnitude the photometric fit used (through the colour term of the
    # detection's filter), else (no absolute photometry) the catalogue's band magnitude
    used = p is not None and bool(np.isfinite(p.mag_ref).any())
    t["mag_ref"] = p.mag_ref if used else rmag[star]
    st = Table()
    st["id"] = np.arange(nstar, dtype=np.int64)
    ra, dec = mean_position(det.ra, det.dec, star, nstar)     # single-frame, the fallback
    if a is not None:
        fa, fd = sol.astrometry.plane.to_sky(a.xstar[:, 0], a.xstar[:, 1])
        fitted = np.isfinite(fa) & np.isfinite(fd)       # not for stars all of whose
        ra, dec = np.where(fitted, fa, ra), np.where(fitted, fd, dec)   # detections were clipped
    st["ra"], st["dec"] = ra, dec                            # degrees, at the mean epoch
    st["mag"] = p.xstar if p is not None else np.full(nstar, np.nan)
    st["n_det"] = np.bincount(star, minlength=nstar)
    st["ref_index"] = ros
    st["ref_ra"], st["ref_dec"], st["ref_mag"] = rra, rdec, rmag
    return t, st
