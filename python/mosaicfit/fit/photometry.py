"""The photometric fit of one filter: per-visit flux polynomials, CCD zero points and star
magnitudes (the model: :mod:`mosaicfit.model.photometry`), tied to the reference catalogue
through the colour terms, with worst-first clipping and the removal of stars whose fluxes
vary beyond chance.
"""
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from .. import MosaicError
from ..model.basis import PolyBasis, n_terms
from ..model.photometry import PhotometricModel, TransparencyField
from ..model.statistics import IterationSummary, PhotometryStats
from .clipping import chance_clips, inconsistent_stars, update_active
from .core import LeastSquaresProblem, require_solution, solve_least_squares
from .errors import (MAX_REFITS, detection_offsets, fit_error_model, fit_reference_errors,
                     leverage, model_leverage, repeated_only)
from .order import HELD, affordable_order, visit_orders
from .shrinkage import MIN_VISITS, common_function_prior
from ..model.groups import index_groups
from .state import PhotometryResult
from .transparency import MAX_ROUNDS, TOL_MAG, visit_transparency
from .uncertainty import (ccd_excess, coefficient_covariances, coherent_residuals,
                          exact_affordable, photometric_ccd_errors, visit_misfit)

log = logging.getLogger("mosaicfit.fit")

__all__ = ["fit_photometry"]

#: mag: the spread of the CCDs' zero points about the camera's mean (flat-fielded CCDs differ
#: by a few hundredths), a weak prior of each CCD term
CCD_ZP_PRIOR_MAG = 0.05

#: the Huber reweighting has converged when no residual moves by more than this fraction of
#: its error from one iteration to the next
HUBER_TOL = 0.05
#: ... or the calibration's remaining change below this (mag): 0.01 mmag
HUBER_TOL_MAG = 1e-5


#: mag: the smallest spread between visits of a flux polynomial's terms taken (0.05 mmag)
TAU_FLOOR_MAG = 5e-5


def _common_prior(basis, coef, a, b, w, star, active, nstar, prior_w, vidx, visits, orders,
                  lsp, from_order, filt, given=None):
    """Sets the common-terms prior (fit.shrinkage.common_function_prior) on the flux
    polynomials' terms of order >= `from_order` in the problem `lsp` (its coef_prior,
    coef_prior_w and coef_prior_mat), from the solution `coef` of `lsp` at the points (a, b)
    with weights `w`.

    What a visit's high-order terms hold is mostly the camera's (the flat field's and the
    illumination's residuals: the same function in every visit, in the focal plane) and its
    stars' noise: each visit's order-7 polynomial fitted alone spreads that noise over 36 terms
    (1.3 mmag against the truth on the simulated tract, 0.7 at order 2). Held at the visits'
    common function within their measured spread, the terms keep what the visits share and what
    a visit's data say beyond chance; a visit whose terms depart beyond chance (a cloud's edge)
    keeps them as its own. `given`: the common terms held (a region split's consensus,
    fit.state.CcdTerms.flux_common). Returns the fit.shrinkage.CommonPrior, or None."""
    held = lsp.coef_prior_w[:, 0, :] >= HELD
    cov, gram, how = coefficient_covariances(lsp, basis, a, b, w, star, active, nstar, prior_w,
                                             vidx, len(visits), orders)
    nH = basis.n_terms - n_terms(from_order - 1)
    if given is not None and np.shape(given["sigma"]) != (nH, nH):
        log.info("photometry of %s: the held common terms are of another order: estimated "
                 "here", filt or "the filter")
        given = None
    res = common_function_prior(coef, cov, orders, from_order, gram, ~held, TAU_FLOOR_MAG,
                                given=None if given is None else
                                (given["mu"], given["sigma"], given["tau"]))
    if res is None:
        log.info("photometry of %s: no common-terms prior (%d visits: fewer than %d fit the "
                 "terms of order >= %d and agree on them within chance)", filt or "the filter",
                 len(visits), MIN_VISITS, from_order)
        return None
    target, matrix, own, tau, used = res[:5]
    Ht = n_terms(from_order - 1)
    lsp.coef_prior[:, 0, Ht:] = np.where(matrix.any(axis=1)[:, Ht:] | held[:, Ht:],
                                         target[:, 0, Ht:], lsp.coef_prior[:, 0, Ht:])
    lsp.coef_prior_mat = matrix
    log.info("photometry of %s: common-terms prior on orders %d-%d of the visit flux "
             "polynomials %s (%s covariances): their departures from the common "
             "function %.2g mmag rms%s", filt or "the filter", from_order, basis.order,
             f"from {used} visits" if given is None else "held at the regions' consensus",
             how, 1000.0 * tau,
             f"; visits {', '.join(str(int(visits[k])) for k in np.nonzero(own)[0])} keep "
             "their own (beyond chance)" if own.any() else "")
    return res


def _transparency_fields(res, w, active, field_off, det, u, v, vidx, visits, camera, fields,
                         field_var, field_info, gate_mag=5e-4):
    """The visits' transparency fields (fit.transparency) from the residuals `res` of a
    converged solve that held the fields `field_off` (mag at each detection): each visit's
    field from what is left for it, F - res, where the visit's residuals hold a coherent
    misfit beyond `gate_mag` (fit.uncertainty.visit_misfit: the cheap test, so that the
    correlation function is measured on the few visits that may need it) or it has a field
    already. Updates `fields`, `field_var`, `field_info` ({visit index: ...}); returns the new
    offsets at every detection."""
    coherent = coherent_residuals(res, w, active, det.visit, det.ccd, det.x, det.y, camera)
    misfit = visit_misfit(coherent, visits)
    out = np.zeros(len(res))
    px = camera.pixel_scale_arcsec
    todo = [k for k in range(len(visits)) if misfit[k] > gate_mag or k in fields]

    def one(k):
        rows = np.nonzero(active & (vidx == k))[0]
        return visit_transparency(np.column_stack([u[rows], v[rows]]),
                                  field_off[rows] - res[rows], 1.0 / w[rows], px)
    # on threads: scipy's pair counting and the tiles' factorisations release the GIL. BLAS
    # single-threaded around the pool: each tile's own limit (fit.turbulence.predict_nodes)
    # then saves and restores 1, so that threads ending in any order leave it as it was
    with threadpool_limits(limits=1, user_api="blas"), \
            ThreadPoolExecutor(max(1, min(len(todo), os.cpu_count() or 1))) as ex:
        found = list(ex.map(one, todo))
    for k, (f, var, info) in zip(todo, found):
        info["misfit_mmag"] = 1000.0 * float(misfit[k])
        field_info[k] = info
        if f is None:
            fields.pop(k, None)
            field_var.pop(k, None)
            continue
        fields[k], field_var[k] = f, var
        m = vidx == k
        out[m] = f(u[m], v[m])
    return out


def _field_ccd_variance(fields, field_var, visits, sol, nx=3, ny=5):
    """{(visit, ccd): mag^2} the transparency fields' posterior variance, the mean over an
    nx x ny grid of each science CCD."""
    out = {}
    for k, f in fields.items():
        var = TransparencyField(f.x0, f.y0, f.step, field_var[k])
        for c in sol.camera.science_ccds:
            d = sol.camera[c]
            gx, gy = np.meshgrid(np.linspace(0, d.width - 1, nx), np.linspace(0, d.height - 1, ny))
            fu, fv = sol.focal_plane(int(c), gx.ravel(), gy.ravel())
            out[(int(visits[k]), int(c))] = float(np.mean(var(fu, fv)))
    return out


def fit_photometry(data, sol, cfg, exposures, filt, refcat_name, scale, stats, held=None,
                   held_common=None):
    """Fit the photometry of `data` (the detections of one filter, a FitData subset) on top of
    the astrometry of `sol` (J of its TAN-SIP products); with `held` ({ccd: dC}, magnitudes)
    the CCD terms are held at those values, with `held_common` (dict from_order, mu, sigma,
    tau: PhotometryStats.common) the common terms of the visit polynomials. Returns
    (PhotometricModel, {(visit, ccd): FLUXMAG0ERR}, {(visit, ccd): uncertainty of the
    calibration, mmag} (every science CCD: fit.uncertainty)); sets ``data.photometry``;
    appends to `stats`."""
    det, star, nstar = data.det, data.star, data.nstar
    vidx, cidx, ccds, visits = data.vidx, data.cidx, data.ccds, data.visits
    n, nv, nc = len(det), len(visits), len(ccds)
    frozen_visits = {v for (v, c) in sol.frozen}
    # pixel-area correction J of the written WCS (TAN-SIP), exactly as the calibration step
    # (calibrateExposure/calibrateCatalog) will apply it
    J = sol.pixel_area_ratios(det.visit, det.ccd, det.x, det.y)
    m_inst = -2.5 * np.log10(det.flux)
    m_cor = m_inst - 2.5 * np.log10(J)
    sig0_2 = (2.5 / np.log(10) * det.flux_err / det.flux) ** 2 + cfg.photomErrorFloor ** 2
    w = 1.0 / sig0_2
    errors, ref_scale = None, 1.0
    prior = np.zeros((nstar, 1))
    prior_w = np.zeros(nstar)
    ref, ros = data.ref, data.ref_of_star
    absolute = bool(cfg.fluxFitAbsolute and ref is not None)
    ref_mag_used = np.full(nstar, np.nan)          # for the record (mag_ref)
    how = ""
    if absolute:
        has = ros >= 0
        rmag, rerr, how = ref.magnitudes(filt, refcat_name, band=cfg.refBand,
                                         color_terms=cfg.doColorTerms,
                                         library=cfg.colorTermLibrary or None)
        log.info("reference magnitudes for %s: %s", filt or "the filter", how)
        rm = rmag[ros[has]]
        re = np.nan_to_num(rerr[ros[has]], nan=0.02)
        ok = np.isfinite(rm)
        idx = np.nonzero(has)[0][ok]
        prior[idx, 0] = rm[ok]
        prior_w[idx] = 1.0 / (re[ok] ** 2 + cfg.refMagErrorFloor ** 2)
        ref_mag_used[idx] = rm[ok]
        if not ok.any():
            log.warning("no reference magnitudes in band %r: relative photometry", stats.band)
            absolute = False

    prior_var0 = np.where(prior_w > 0, 1.0 / np.where(prior_w > 0, prior_w, 1.0), np.inf)
    # the catalogue's own variances, without the floor (fit.errors.fit_reference_errors)
    cat_var = np.maximum(prior_var0 - cfg.refMagErrorFloor ** 2, 1e-12)
    ref_floor = float(cfg.refMagErrorFloor)

    active = np.ones(n, bool)
    per_visit = np.bincount(vidx, minlength=nv)
    basis = "chebyshev" if cfg.chebyshev else "legendre"
    u, v = np.empty(n), np.empty(n)
    for c, m in index_groups(det.ccd):
        u[m], v[m] = sol.focal_plane(int(c), det.x[m], det.y[m])
    s = scale
    # the flux polynomial order of each visit: what its stars determine, by their number and
    # the region they cover (fit.order.footprint_order); the terms above it held at 0. A visit
    # without an astrometric solution keeps only its zero point.
    if cfg.commonFluxCorr:
        orders = np.full(nv, affordable_order(cfg.fluxFitOrder, per_visit, 0, "flux"))
    else:
        orders, _ = visit_orders(u / s, v / s, vidx, visits, cfg.fluxFitOrder, 0, basis,
                                 "flux")
        orders = np.maximum(orders, 0)
    for k in range(nv):
        if int(visits[k]) in frozen_visits and orders[k] > 0:
            log.warning("visit %d: no astrometric solution: flux zero point only", visits[k])
            orders[k] = 0
    order = int(orders.max())
    T = n_terms(order)
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
    # CCD terms held at given values: a known offset of each detection, the parameters fixed
    c0 = np.zeros(nc)
    if held is not None and not cfg.commonFluxCorr:
        c0 = np.array([held.get(int(c), 0.0) for c in ccds])
        solve_par = False
    y_held = (-m_cor - c0[cidx])[:, None]
    # the visits' transparency fields (fit.transparency), a known term of the solve as the
    # held CCD terms: m_true = m_cor + P + dC + F
    fields, field_var, field_info = {}, {}, {}
    field_off = np.zeros(n)
    field_rounds = 0
    field_cal = None                  # the calibration at the last round's fields
    coef_prior = np.zeros((npoly, 1, T))
    coef_prior_w = np.zeros((npoly, 1, T))
    ccd_prior = ccd_prior_w = None
    if not cfg.commonFluxCorr:
        for k in range(nv):
            coef_prior_w[k, 0, n_terms(orders[k]):] = HELD     # the terms above its order
        if solve_par:
            # the CCD zero points: a weak prior at 0 holds what no star distinguishes (the
            # CCDs seen by one visit only against that visit's zero point)
            ccd_prior = np.zeros((npar, 1))
            ccd_prior_w = np.full((npar, 1), 1.0 / CCD_ZP_PRIOR_MAG ** 2)
    if not absolute:
        # relative: the first visit's zero point at its single-frame FLUXMAG0
        f0 = [e.fluxmag0 for e in exposures if e.visit == visits[0] and e.fluxmag0]
        zp0 = 2.5 * np.log10(np.median(f0)) if f0 else 0.0
        coef_prior[0, 0, 0] = zp0
        coef_prior_w[0, 0, 0] = 1e12
    G = np.ones((n, 1, 1))
    usable = active.copy()
    returned = np.zeros(n, bool)      # reinstated once (fit.clipping.update_active)
    n_refits = 0                      # of the error model (fit.errors.MAX_REFITS)
    variables_done = False
    n_variable = 0
    # the Huber loss (photHuber = k sigma; 0: least squares): each detection's weight times
    # min(1, k / |chi|), iterated with the solution (IRLS). A region the polynomial cannot
    # follow (a cloud's edge) then pulls the solution only linearly, instead of bending it
    # until worst-first clipping has removed the region's stars one by one, which leaves the
    # polynomial free there (the 30-visit failure of issue 14)
    huber = np.ones(n)
    prev_res = prev_model = None
    prev_step = 0.0
    converged = False
    # the common-terms prior (fit.shrinkage): estimated once, from the fit without it once its
    # clipping and error model have settled
    coef_prior_mat = None
    common_record = None
    common_pending = (not cfg.commonFluxCorr and cfg.fluxCommonFromOrder > 0
                      and order >= cfg.fluxCommonFromOrder and nv >= 2)
    budget = cfg.maxIter
    for it in itertools.count():
        if it >= budget:
            break
        lsp = LeastSquaresProblem(
            star=star, visit=poly_idx, ccd=par_idx, active=active.copy(), u=u / s, v=v / s,
            y=y_held, w=w * huber, G=G, prior=prior, prior_w=prior_w.copy(),
            coef_prior=coef_prior, coef_prior_w=coef_prior_w, coef_prior_mat=coef_prior_mat,
            ccd_fixed=None if solve_par else np.ones(npar, bool),
            ccd_prior=ccd_prior, ccd_prior_w=ccd_prior_w,
            nvisit=npoly, nccd=npar, nstar=nstar, order=order, basis=basis)
        r = require_solution(solve_least_squares(lsp), "photometric")
        res = r.resid[:, 0]
        chi = w * res ** 2
        rms = float(np.sqrt(np.mean(res[active] ** 2))) * 1000.0
        huber_moved = False
        # the calibration at every detection (model = residual + star + y): what the products
        # are made of
        model_now = res + np.nan_to_num(r.xstar[:, 0])[star]
        if cfg.photHuber > 0:
            # the reweighting has converged when it no longer moves the solution: no residual
            # changed by HUBER_TOL of its error since the last iteration (a criterion on the
            # weights never settles on 1e5 detections, some of which always sit near k sigma),
            # or the calibration's remaining change, extrapolated from its last two steps
            # (IRLS converges geometrically), is below HUBER_TOL_MAG: a star of a few
            # detections, one near k sigma, can crawl 1% per iteration for hundreds of them
            # without moving any product (seed 43 of the 30-visit check)
            huber_moved = prev_res is None or bool(np.max(
                np.abs(res - prev_res)[active] * np.sqrt(w[active]), initial=0.0) > HUBER_TOL)
            if huber_moved and prev_model is not None:
                step = float(np.max(np.abs(model_now - prev_model)[active], initial=0.0))
                ratio = step / prev_step if prev_step > 0 else 1.0
                huber_moved = not (ratio < 1.0 and step * ratio / (1.0 - ratio) + step
                                   < HUBER_TOL_MAG)
                prev_step = step
            huber = np.minimum(1.0, cfg.photHuber / np.maximum(np.sqrt(chi), 1e-12))
        prev_model = model_now
        prev_res = res.copy()
        nclip, nback, thr = update_active(chi, star, active, usable, it + 1, cfg.clipSigma,
                                          returned)
        # once the threshold is down, the errors follow the residuals (fit.errors)
        new_errors = None
        if cfg.fitErrorModel and thr <= cfg.clipSigma and n_refits < MAX_REFITS:
            n_refits += 1
            h = leverage(w, star, active, nstar, prior_w)
            # the star's share, then the model's of the rest (fit.errors.model_leverage)
            h = repeated_only(h + (1.0 - h) * model_leverage(
                vidx, cidx, active, [n_terms(o) for o in orders],
                1.0 if solve_par and not cfg.commonFluxCorr else 0.0), star, active, nstar)
            new_errors = fit_error_model(res[active] ** 2, sig0_2[active], h[active],
                                         vidx[active], nv, 1)
            pr = prior_w > 0
            if absolute and pr.any():
                hm = model_leverage(vidx, cidx, active, [n_terms(o) for o in orders],
                                    1.0 if solve_par and not cfg.commonFluxCorr else 0.0)
                d2, var_det, ok, hbar = detection_offsets(r.xstar[:, 0], prior[:, 0], res, w,
                                                          star, active, nstar, hm)
                pr &= ok
                e = fit_reference_errors(d2[pr], cat_var[pr], var_det[pr], 1, hbar[pr])
                if e is not None:
                    ref_scale, ref_floor = float(e.scale[0]), e.floor
                    prior_w = np.where(prior_w > 0, 1.0 / (ref_scale ** 2 * cat_var
                                                           + ref_floor ** 2), 0.0)
            w = 1.0 / new_errors.variance(sig0_2, vidx)
        model_moved = new_errors is not None and (
            errors is None or np.max(np.abs(new_errors.scale / errors.scale - 1)) > 0.01
            or abs(new_errors.floor - errors.floor) > 0.01 * max(new_errors.floor, 1e-4))
        if new_errors is not None:
            errors = new_errors
        summ = IterationSummary("photometry", it + 1, float(r.chi2), r.ndof, rms,
                                int(active.sum()), nclip, float(r.t_assemble), float(r.t_solve),
                                r.solver)
        stats.iterations.append(summ)
        log.info(summ.line())
        # the common-terms prior (fit.shrinkage.common_function_prior), once the clipping
        # threshold is down and the error model settled: from then on one convergence
        if common_pending and thr <= cfg.clipSigma and not model_moved \
                and (errors is not None or not cfg.fitErrorModel):
            common_pending = False
            common = _common_prior(PolyBasis(order, basis), r.coef, u / s, v / s, w * huber,
                                   star, active, nstar, prior_w, vidx, visits, orders, lsp,
                                   cfg.fluxCommonFromOrder, filt, held_common)
            if common is not None:
                coef_prior_mat = lsp.coef_prior_mat
                common_record = dict(from_order=int(cfg.fluxCommonFromOrder),
                                     mu=common.mu.tolist(), sigma=common.sigma.tolist(),
                                     tau=common.tau, used=common.used)
                # a new problem: the fit with the prior gets maxIter iterations of its own
                budget = max(budget, it + 1 + cfg.maxIter)
                continue
        if nclip <= chance_clips(int(active.sum()), thr, 1) and nback == 0 \
                and thr <= cfg.clipSigma and not model_moved and not huber_moved:
            bad = inconsistent_stars(chi, star, active, nstar, prior_w > 0, 1) \
                if cfg.rejectVariables and not variables_done else []
            variables_done = True
            if len(bad) == 0:
                # the transparency fields (fit.transparency), backfitted: until the
                # calibration of their visits (polynomial + field, what the products are)
                # moves by less than TOL_MAG rms between two rounds. (The field alone keeps
                # trading its largest scales with the polynomial for many rounds without
                # moving their sum.)
                on = np.isin(vidx, list(fields))
                moved = float(np.sqrt(np.mean((model_now - field_cal)[on] ** 2))) \
                    if field_cal is not None and on.any() else np.inf
                if fields:
                    log.info("photometry: transparency fields of %d visits (round %d: their "
                             "calibration moved by %.2f mmag rms)", len(fields), field_rounds,
                             1000.0 * moved if np.isfinite(moved) else np.nan)
                if cfg.fitTransparency and not cfg.commonFluxCorr \
                        and field_rounds < MAX_ROUNDS and moved > TOL_MAG:
                    field_rounds += 1
                    field_cal = model_now.copy()
                    field_off = _transparency_fields(res, w * huber, active, field_off, det, u,
                                                     v, vidx, visits, sol.camera, fields,
                                                     field_var, field_info)
                    if fields:
                        # a new problem: the visit polynomials and the stars with the fields
                        y_held = (-m_cor - c0[cidx] - field_off)[:, None]
                        budget = max(budget, it + 1 + cfg.maxIter)
                        continue
                converged = True
                break
            drop = np.isin(star, bad)
            active &= ~drop
            usable &= ~drop
            n_variable = len(bad)
            log.info("photometry: %d stars inconsistent with a constant flux (variables, "
                     "galaxies) removed", len(bad))
    if not converged:
        log.warning("photometry of %s: not converged after %d iterations (maxIter=%d; last: "
                    "%d clipped, chi2/ndof %.3f): check the diagnostics' coherent residuals",
                    filt or "the filter", budget, cfg.maxIter, nclip, r.chi2 / max(r.ndof, 1))
    if r.ndof <= 0:
        raise MosaicError(f"too few stars to determine the photometric solution of {filt}: "
                          f"{r.nobs} measurements (detections and reference values) for {r.nparam} "
                          "parameters")
    coef = r.coef
    par = r.dccd[:, 0] + (0.0 if cfg.commonFluxCorr else c0)
    model = PhotometricModel(filt, order, basis, scale, absolute=absolute)
    for k, vv in enumerate(visits):
        if cfg.commonFluxCorr:
            c = coef[0].copy()
            c[0, 0] += par[k]            # the visit's zero point joins the constant term
            model.coefficients[int(vv)] = c
        else:
            model.coefficients[int(vv)] = coef[k]
    if not cfg.commonFluxCorr:
        model.ccd_terms = {int(c): float(par[k]) for k, c in enumerate(ccds)}
    model.fields = {int(visits[k]): f for k, f in fields.items()}
    for k, f in sorted(fields.items()):
        i = field_info[k]
        log.info("photometry of %s: visit %d: its residuals correlated beyond chance (%.1f "
                 "mmag rms, length %.1f', %.0f sigma): a transparency field fitted, which its "
                 "fcr- products carry", filt or "the filter", visits[k], i["sigma_mmag"],
                 i["length_arcmin"], i["significance"])
    # FLUXMAG0ERR: the scatter of all the CCD's usable residuals (calibrated minus fitted
    # star magnitudes; resid = calibrated - star magnitude), not only of its reference stars
    xs = r.xstar[:, 0]
    mag_err = {}
    for e_idx, m in index_groups(det.exp):
        e = exposures[e_idx]
        d = res[m[active[m]]]
        mag_err[(e.visit, e.ccd)] = float(np.sqrt(np.mean(d ** 2))) if len(d) >= 3 else np.nan
    # the visit's median where a CCD has too few stars; in flux, as FLUXMAG0
    by_visit = {}
    for (vv, _), x in mag_err.items():
        if np.isfinite(x):
            by_visit.setdefault(vv, []).append(x)
    fluxmag0err = {}
    axis = {}                  # each visit's P_v + F_v at the optical axis, once
    for (vv, c), err in mag_err.items():
        if not np.isfinite(err):
            vals = by_visit.get(vv)
            err = float(np.median(vals)) if vals else 0.0
        if vv not in axis:
            axis[vv] = model.axis_value(vv)
        zp = axis[vv] + model.ccd_term(c)            # model.zero_point(vv, c)
        fluxmag0err[(vv, c)] = 10.0 ** (0.4 * zp) * 0.4 * np.log(10) * err
    if errors is not None:
        log.info("photometric errors of %s: scale %.2f-%.2f (median %.2f) per visit, floor "
                 "%.2f mmag; reference magnitude errors x %.2f with a floor of %.2f mmag", filt,
                 np.min(errors.scale), np.max(errors.scale), np.median(errors.scale),
                 errors.floor * 1000.0, ref_scale, ref_floor * 1000.0)
    stats.photometry[filt] = PhotometryStats(
        filter=filt, order=order, chi2=float(r.chi2), ndof=r.ndof, rms_mmag=rms,
        clipped=int((usable & ~active).sum()), n_active=int(active.sum()), variables=n_variable,
        absolute=absolute, visits=[int(v) for v in visits], colour_terms=how,
        error_scale={int(v): float(x) for v, x in zip(visits, errors.scale)} if errors else {},
        error_floor_mmag=errors.floor * 1000.0 if errors else 0.0, ref_error_scale=ref_scale,
        transparency={int(visits[k]): dict(field_info[k]) for k in fields})
    data.photometry = PhotometryResult(active=active, resid=res, w=w, xstar=xs, m_cor=m_cor,
                                       prior_w=prior_w, orders=orders, prior_mat=coef_prior_mat,
                                       mag_ref=ref_mag_used[star])
    coherent = coherent_residuals(res, w, active, det.visit, det.ccd, det.x, det.y, sol.camera)
    misfit = visit_misfit(coherent, visits)
    for k in np.nonzero(misfit > 0.002)[0]:
        log.warning("photometry of %s: visit %d: its CCDs' residuals scatter by %.1f mmag "
                    "beyond their errors: the flux model does not describe the visit (a "
                    "cloud's edge?); its uncertainties include it", filt or "the filter",
                    visits[k], 1000.0 * misfit[k])
    # the products' errors from the marginal covariances of the last solve (the stars
    # profiled out: the couplings between visits through their common stars included)
    cov = None if cfg.commonFluxCorr or not exact_affordable(lsp) else \
        solve_least_squares(lsp, covariance=True)
    # and what each CCD's own residuals hold beyond their noise (fit.uncertainty.ccd_excess):
    # a product the model misses there says so in its figure
    excess = ccd_excess(coherent)
    # and, where a visit has a transparency field, the field's own posterior variance
    for (vk, c), var in _field_ccd_variance(fields, field_var, visits, sol).items():
        excess[(vk, c)] = float(np.sqrt(excess.get((vk, c), 0.0) ** 2 + var))
    ccd_err = photometric_ccd_errors(sol, model, data, u, v, sol.camera, CCD_ZP_PRIOR_MAG,
                                     solve_par and not cfg.commonFluxCorr, misfit, cov,
                                     excess)
    stats.photometry[filt].converged = converged
    stats.photometry[filt].common = common_record
    stats.photometry[filt].coherent = [
        dict(visit=v_, ccd=c_, rms_mmag=1000.0 * m_, noise_mmag=1000.0 * e_, n=n_)
        for (v_, c_), (m_, e_, n_, bad) in sorted(coherent.items()) if bad]
    for row in stats.photometry[filt].coherent:
        log.warning("photometry of %s: visit %d CCD %d: its %d residuals follow a plane of "
                    "%.1f mmag rms across the CCD (noise %.1f mmag): the model does not "
                    "describe this CCD (a cloud's edge, a flat-field defect?)",
                    filt or "the filter", row["visit"], row["ccd"], row["n"], row["rms_mmag"],
                    row["noise_mmag"])
    return model, fluxmag0err, ccd_err
