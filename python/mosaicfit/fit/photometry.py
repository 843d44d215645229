"""The photometric fit of one filter: per-visit flux polynomials, CCD zero points and star
magnitudes, tied to the reference catalogue through the colour terms, with worst-first
clipping and the removal of stars whose fluxes vary beyond chance.
"""
import logging

import numpy as np

from .. import MosaicError
from .clipping import chance_clips, inconsistent_stars, update_active
from .core import LeastSquaresProblem, require_solution, solve_least_squares
from .order import affordable_order
from .state import IterationSummary

log = logging.getLogger("mosaicfit.fit")

__all__ = ["filter_context", "fit_photometry"]


# ------------------------------------------------------------------------------------------
# Photometry
# ------------------------------------------------------------------------------------------
def filter_context(ctx, visits):
    """The part of the fit context made of the detections of `visits` (one filter), with the
    stars and visits renumbered; rows / star_ids map back to the full context."""
    visits = np.asarray(sorted(visits))
    rows = np.nonzero(np.isin(ctx["det"].visit, visits))[0]
    star_ids, star = np.unique(ctx["star"][rows], return_inverse=True)
    det = ctx["det"].take(rows)
    ccds = np.unique(det.ccd)
    return dict(ctx, det=det, star=star.astype(np.int64), nstar=len(star_ids),
                vidx=np.searchsorted(visits, det.visit).astype(np.int32),
                cidx=np.searchsorted(ccds, det.ccd).astype(np.int32), ccds=ccds, visits=visits,
                ref_of_star=ctx["ref_of_star"][star_ids], rows=rows, star_ids=star_ids)


def fit_photometry(sol, ctx, cfg, exposures, filt="", refcat_name=""):
    det, star, nstar = ctx["det"], ctx["star"], ctx["nstar"]
    vidx, cidx, ccds, visits = ctx["vidx"], ctx["cidx"], ctx["ccds"], ctx["visits"]
    n, nv, nc = len(det), len(visits), len(ccds)
    frozen_visits = {v for (v, c) in sol.frozen}
    # pixel-area correction J of the written WCS (TAN-SIP), exactly as the calibration step
    # (calibrateExposure/calibrateCatalog) will apply it
    J = np.ones(n)
    for e_idx in np.unique(det.exp):
        m = det.exp == e_idx
        e = exposures[e_idx]
        J[m] = sol.sip_model(e.visit, e.ccd).area_ratio(det.x[m], det.y[m])
    m_inst = -2.5 * np.log10(det.flux)
    m_cor = m_inst - 2.5 * np.log10(J)
    sig = 2.5 / np.log(10) * det.flux_err / det.flux
    w = 1.0 / (sig ** 2 + cfg.photomErrorFloor ** 2)
    prior = np.zeros((nstar, 1))
    prior_w = np.zeros(nstar)
    ref, ros = ctx["ref"], ctx["ref_of_star"]
    absolute = bool(cfg.fluxFitAbsolute and ref is not None)
    if absolute:
        has = ros >= 0
        rmag, rerr, how = ref.magnitudes(filt, refcat_name, band=cfg.refBand,
                                         color_terms=cfg.doColorTerms,
                                         library=cfg.colorTermLibrary or None)
        log.info("reference magnitudes for %s: %s", filt or "the filter", how)
        sol.stats.setdefault("colour_terms", {})[filt] = how
        rm = rmag[ros[has]]
        re = np.nan_to_num(rerr[ros[has]], nan=0.02)
        ok = np.isfinite(rm)
        idx = np.nonzero(has)[0][ok]
        prior[idx, 0] = rm[ok]
        prior_w[idx] = 1.0 / (re[ok] ** 2 + cfg.refMagErrorFloor ** 2)
        ctx["ref_mag_used"] = np.full(nstar, np.nan)          # for the record (mag_ref)
        ctx["ref_mag_used"][idx] = rm[ok]
        if not ok.any():
            log.warning("no reference magnitudes in band %r: relative photometry", sol.stats.get("band"))
            absolute = False
    sol.stats["absolute"] = absolute

    # the flux polynomial order: reduced when stars are too few for it (narrow bands), judged
    # on the typical visit; a visit with far fewer stars than that (or without an astrometric
    # solution) keeps only its zero point
    active = np.ones(n, bool)
    per_visit = np.bincount(vidx, minlength=nv)
    order = affordable_order(cfg.fluxFitOrder, per_visit, 0, "flux")
    sol.phot_order = order
    T = (order + 1) * (order + 2) // 2
    basis = sol.phot_basis
    zp_only = [k for k in range(nv) if per_visit[k] < 3 * T or int(visits[k]) in frozen_visits]
    for k in zp_only:
        if T > 1:
            log.warning("visit %d: %d stars, too few for an order-%d flux polynomial: zero point "
                        "only", visits[k], per_visit[k], order)
    if cfg.commonFluxCorr:
        # one polynomial for all visits (visit index 0) and per-visit zero points, carried by
        # the per-"CCD" parameter slot, indexed by visit
        poly_idx = np.zeros(n, np.int32)
        par_idx = vidx.astype(np.int32)
        npoly, npar = 1, nv
    else:
        poly_idx = vidx.astype(np.int32)
        par_idx = cidx.astype(np.int32)
        npoly, npar = nv, nc
    solve_par = cfg.commonFluxCorr or cfg.fluxFitSolveCcd
    u, v = np.empty(n), np.empty(n)
    for c in np.unique(det.ccd):
        m = det.ccd == c
        u[m], v[m] = sol.focal_plane(int(c), det.x[m], det.y[m])
    s = sol.scale
    coef_prior = np.zeros((npoly, 1, T))
    coef_prior_w = np.zeros((npoly, 1, T))
    if not cfg.commonFluxCorr:
        for k in zp_only:
            coef_prior_w[k, 0, 1:] = 1e12          # the spatial terms held at 0
    if not absolute:
        # relative: the first visit's zero point at its single-frame FLUXMAG0
        f0 = [e.fluxmag0 for e in exposures if e.visit == visits[0] and e.fluxmag0]
        zp0 = 2.5 * np.log10(np.median(f0)) if f0 else 0.0
        coef_prior[0, 0, 0] = zp0
        coef_prior_w[0, 0, 0] = 1e12
    G = np.ones((n, 1, 1))
    usable = active.copy()
    variables_done = False
    n_variable = 0
    for it in range(cfg.maxIter):
        r = require_solution(solve_least_squares(LeastSquaresProblem(
            star=star, visit=poly_idx, ccd=par_idx, active=active, u=u / s, v=v / s,
            y=-m_cor[:, None], w=w, G=G, prior=prior, prior_w=prior_w, coef_prior=coef_prior,
            coef_prior_w=coef_prior_w, ccd_fixed=None if solve_par else np.ones(npar, bool),
            nvisit=npoly, nccd=npar, nstar=nstar, order=order, basis=basis)), "photometric")
        res = r.resid[:, 0]
        chi = w * res ** 2
        ndof = int(r.nobs_det - r.nparam)
        rms = float(np.sqrt(np.mean(res[active] ** 2))) * 1000.0
        nclip, nback, thr = update_active(chi, star, active, usable, it + 1, cfg.clipSigma)
        summ = IterationSummary("photometry", it + 1, float(r.chi2_det), ndof, rms,
                                int(active.sum()), nclip, float(r.t_assemble), float(r.t_solve))
        sol.stats["iterations"].append(summ)
        log.info(summ.line())
        if nclip <= chance_clips(int(active.sum()), thr, 1) and nback == 0 and thr <= cfg.clipSigma:
            bad = inconsistent_stars(chi, star, active, nstar, prior_w > 0, 1) \
                if cfg.rejectVariables and not variables_done else []
            variables_done = True
            if len(bad) == 0:
                break
            drop = np.isin(star, bad)
            active &= ~drop
            usable &= ~drop
            n_variable = len(bad)
            log.info("photometry: %d stars inconsistent with a constant flux (variables, "
                     "galaxies) removed", len(bad))
    if ndof <= 0:
        raise MosaicError(f"too few stars to determine the photometric solution of {filt}: "
                          f"{r.nobs_det} measurements for {r.nparam} parameters")
    n_clip_total = int((usable & ~active).sum())
    coef = r.coef
    par = r.dccd[:, 0]
    for k, vv in enumerate(visits):
        if cfg.commonFluxCorr:
            c = coef[0].copy()
            c[0, 0] += par[k]            # the visit's zero point joins the constant term
            sol.phot[int(vv)] = c
        else:
            sol.phot[int(vv)] = coef[k]
    if not cfg.commonFluxCorr:
        for k, c in enumerate(ccds):
            sol.ccd_mag_by_filter.setdefault(filt, {})[int(c)] = float(par[k])
    # FLUXMAG0ERR: clipped scatter of calibrated minus reference magnitudes per CCD (minus
    # the fitted star magnitudes in a relative solution); resid = calibrated - star magnitude
    xs = r.xstar[:, 0]
    cal = res + xs[star]
    for e_idx in np.unique(det.exp):
        m = (det.exp == e_idx) & active
        e = exposures[e_idx]
        if absolute:
            mm = m & (prior_w[star] > 0)
            d = cal[mm] - prior[star[mm], 0]
        else:
            d = res[m]
        err = float(np.sqrt(np.mean(d ** 2))) if len(d) >= 3 else np.nan
        sol.fluxmag0err[(e.visit, e.ccd)] = err
    # fall back to the visit's scatter where a CCD has too few stars; convert to flux
    for (vv, c), err in list(sol.fluxmag0err.items()):
        if not np.isfinite(err):
            vals = [x for (v2, _), x in sol.fluxmag0err.items() if v2 == vv and np.isfinite(x)]
            err = float(np.median(vals)) if vals else 0.0
        if sol.has_photometry(vv):
            sol.fluxmag0err[(vv, c)] = sol.fluxmag0(vv, c) * 0.4 * np.log(10) * err
    sol.stats.setdefault("phot_by_filter", {})[filt] = dict(
        chi2=float(r.chi2_det), ndof=ndof, rms_mmag=rms, order=order, absolute=absolute,
        visits=[int(v) for v in visits])
    sol.stats.update(phot_chi2=float(r.chi2_det), phot_ndof=ndof, phot_rms_mmag=rms,
                     phot_clipped=n_clip_total, phot_variables=n_variable, phot_order=order, phot_n_active=int(active.sum()))
    ctx.update(phot_active=active, phot_resid=res, phot_w=w, phot_xstar=xs, m_cor=m_cor)
