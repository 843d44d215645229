"""The astrometric fit: per-visit polynomials of the field angle, CCD placement and star
positions (the model: :mod:`mosaicfit.model.astrometry`), iterated (the CCD rotations are the
only non-linear parameters) with worst-first clipping.
"""
import dataclasses
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import MosaicError
from ..model.astrometry import AstrometricModel, CcdPlacement
from ..model.basis import n_terms
from ..model.groups import index_groups
from ..model.statistics import AstrometryStats, IterationSummary
from .clipping import ANNEALING, chance_clips, update_active
from .core import LeastSquaresProblem, require_solution, solve_least_squares
from .errors import (MAX_REFITS, ErrorModel, detection_offsets, fit_error_model,
                     fit_reference_errors, leverage, model_leverage, repeated_only)
from .order import HELD, visit_orders
from .shrinkage import MIN_VISITS, TAU_FLOOR_ARCSEC, common_function_prior
from .uncertainty import coefficient_covariances
from .chromatic import DcrFit, star_colours, visit_refraction
from .quality import assess_visits
from .turbulence import reserved_scatter, reserved_stars, visit_field, visit_kernel
from .state import AstrometryResult, AstrometryStart

log = logging.getLogger("mosaicfit.fit")

__all__ = ["fit_astrometry"]

#: arcsec: the single-frame WCS accuracy, which ties a relative solution's frame
RELATIVE_PRIOR_ARCSEC = 0.5

#: pixels: how far a CCD may be from the camera's nominal placement, as a Gaussian prior of
#: its offset and of its rotation's move of the CCD corners (HSC's CCDs sit within a few
#: microns, 0.2 px, of their nominal places); it holds the CCDs with fewer than
#: minStarsPerCcd stars near that place where their stars say nothing, instead of freezing
#: them there, and is negligible against a few stars' centroids (~0.1 px each)
CCD_PLACEMENT_PRIOR_PX = 1.0


def _reference_priors(data, plane, cfg):
    """(y, prior, prior_w, has): the reference stars' positions at the mean epoch in the tract
    plane with their weights, and each detection's proper-motion offset y from there to its
    own epoch; a relative solution (no reference star) ties every star weakly to its mean
    single-frame position instead."""
    n, nstar, star = len(data), data.nstar, data.star
    y = np.zeros((n, 2))
    prior = np.zeros((nstar, 2))
    prior_w = np.zeros(nstar)
    ref, ros, t0 = data.ref, data.ref_of_star, data.t0
    has = ros >= 0
    if ref is not None and has.any():
        sub = ref.take(ros[has])
        ra0, dec0, err0 = sub.at(t0)
        prior[has] = np.stack(plane.from_sky(ra0, dec0), axis=-1)
        # jointcal's convention: the catalogue's own errors (Gaia: 0.02-1 mas, which is what
        # ties the tract's global distortion, invisible to the internal data, to the sky)
        # plus a floor; hscPipe's catRMS (40 mas) where the catalogue gives no errors
        sig2 = np.where(np.isfinite(err0), (err0 / 1000.0) ** 2 + cfg.refPosErrorFloor ** 2,
                        (cfg.catRMS * 3600.0) ** 2)
        prior_w[has] = 1.0 / sig2
        # displacement between t0 and each detection's epoch, in the tract plane
        dm = np.nonzero(has[star] & np.isfinite(data.det_mjd))[0]
        if len(dm):
            rowmap = np.full(nstar, -1)
            rowmap[np.nonzero(has)[0]] = np.arange(has.sum())
            ra1, dec1, _ = sub.take(rowmap[star[dm]]).at(data.det_mjd[dm])
            xi1 = np.stack(plane.from_sky(ra1, dec1), axis=-1)
            y[dm] = xi1 - prior[star[dm]]
    else:
        # Relative solution. The internal data leave free any smooth distortion of the tract
        # plane common to all visits (not only an affine one: composed with order-9 visit
        # polynomials it stays representable to far below the noise). Every star is tied,
        # weakly, to its mean single-frame position (0.5": the single-frame WCS accuracy), as a
        # reference star would be: the frame becomes the average of the single-frame WCSs and
        # the internal precision is untouched.
        prior = np.stack(plane.from_sky(data.star_ra, data.star_dec), axis=-1)
        prior_w = np.full(nstar, 1.0 / RELATIVE_PRIOR_ARCSEC ** 2)
    return y, prior, prior_w, has


def _common_prior(model, coef, a, b, w, star, active, nstar, prior_w, vidx, visits, orders,
                  lsp, from_order, bands, given=None, record=None):
    """The common-terms prior (fit.shrinkage.common_function_prior) on the visit polynomials'
    terms of order >= `from_order`, for the visits of each filter apart (`bands` (nv,): each
    filter's glass adds its own distortion), from the solution `coef` of the problem `lsp` at
    the points (a, b) with weights `w`: sets the targets in ``lsp.coef_prior`` (the held terms
    too: at the common value rather than at the optics) and returns the prior's matrices (nv,
    T, T), or None where no filter has enough visits. `given` {filter: common terms} (a region
    split's consensus, fit.state.CcdTerms.astro_common) holds the common terms; each filter's
    are recorded in `record` (a dict, AstrometryStats.common)."""
    held = lsp.coef_prior_w[:, 0, :] >= HELD
    cov, gram, how = coefficient_covariances(lsp, model.basis, a, b, w, star, active, nstar,
                                             prior_w, vidx, len(visits), orders)
    T = model.basis.n_terms
    matrix = np.zeros((len(visits), T, T))
    Ht = n_terms(from_order - 1)
    covered = False
    for band in sorted(set(bands)):
        k = np.nonzero(np.asarray(bands) == band)[0]
        g = (given or {}).get(band)
        nH = T - n_terms(from_order - 1)
        if g is not None and np.shape(g["sigma"]) != (nH, nH):
            log.info("astrometry: the held common terms of %s are of another order: estimated "
                     "here", band or "the filter")
            g = None
        res = common_function_prior(coef[k], cov[k], orders[k], from_order, gram, ~held[k],
                                    TAU_FLOOR_ARCSEC, rotate=True,
                                    given=None if g is None else (g["mu"], g["sigma"], g["tau"]))
        if res is None:
            log.info("astrometry: no common-terms prior for %s (%d visits: fewer than %d fit "
                     "the terms of order >= %d and agree on them within chance)",
                     band or "the filter", len(k), MIN_VISITS, from_order)
            continue
        sub = lsp.coef_prior[k]
        on = (res.matrix.any(axis=1) | held[k])[:, None, Ht:]
        sub[:, :, Ht:] = np.where(on, res.target[:, :, Ht:], sub[:, :, Ht:])
        lsp.coef_prior[k] = sub
        matrix[k] = res.matrix
        covered = True
        if record is not None:
            record[band] = dict(from_order=int(from_order), mu=np.asarray(res.mu).tolist(),
                                sigma=np.asarray(res.sigma).tolist(), tau=res.tau,
                                used=res.used)
        log.info("astrometry: common-terms prior on orders %d-%d of the %s visit polynomials "
                 "%s (%s covariances): their departures from the common function "
                 "%.2g mas rms%s", from_order, model.basis.order, band or "",
                 f"from {res.used} visits" if g is None else "held at the regions' consensus",
                 how, 1000.0 * res.tau,
                 f"; visits {', '.join(str(int(visits[i])) for i in k[res.own])} keep their "
                 "own (beyond chance)" if res.own.any() else "")
    return matrix if covered else None


def fit_astrometry(data, camera, optics, plane, cfg, exposures, stats, held=None, start=None,
                   provisional=False):
    """Fit the astrometry of `data` (a :class:`~mosaicfit.fit.state.FitData`); with `held`
    (a :class:`~mosaicfit.fit.state.CcdTerms`) the CCD placement is held at its values.
    With `start` (a :class:`~mosaicfit.fit.state.AstrometryStart`: a converged fit of the
    same run, before a new association) the fit starts where that one ended: its CCD
    placement, polynomials, error model and chromatic vectors, with the clipping threshold
    already at clipSigma (the wide first thresholds are for the gross mismatches of the
    first association through the single-frame WCS). A `provisional` fit (one a new
    association will follow) leaves out the common-terms prior: the fit after the new
    association estimates it from its own stars.

    Returns (AstrometricModel, frozen, finish) with `frozen` the {(visit, ccd): single-frame
    header} of the visits with too few stars for their polynomial and `finish` the turbulence
    phase to run once the associations are final (None with fitTurbulence off); sets
    ``data.astrometry`` and, where
    reference associations were dropped, ``data.ref_of_star``; appends the iterations and
    the final state to `stats`.
    """
    det, star, nstar = data.det, data.star, data.nstar
    vidx, cidx, ccds, visits = data.vidx, data.cidx, data.ccds, data.visits
    n, nv, nc = len(det), len(visits), len(ccds)
    placement = CcdPlacement(camera)
    ox = np.array([placement.origin(int(c))[0] for c in ccds])[cidx]
    oy = np.array([placement.origin(int(c))[1] for c in ccds])[cidx]
    # the polynomial order of each visit: what its detections determine, by their number and
    # by the region they cover (fit.order.footprint_order); the terms above a visit's order
    # are held at 0, i.e. at the camera's optics, which the model sits on. A visit that does
    # not determine even order 1 keeps its single-frame WCS.
    zeros = np.zeros(n)
    a0, b0 = optics(*placement.place(ox, oy, zeros, zeros, zeros, data.u0, data.v0)[:2])
    orders, why = visit_orders(a0, b0, vidx, visits, cfg.fittingOrder, 1, "legendre",
                               "astrometric")
    order = max(int(orders.max()), 1)
    T = n_terms(order)
    coef_prior = np.zeros((nv, 2, T))
    coef_prior_w = np.zeros((nv, 2, T))
    for k in range(nv):
        if 0 <= orders[k] < order:
            coef_prior_w[k, :, n_terms(orders[k]):] = HELD
    model = AstrometricModel(placement, optics, plane, order)
    n_terms_v = np.array([n_terms(o) if o >= 0 else 0 for o in orders])

    # weights: centroid errors in arcsec (single-frame pixel scale) plus the floor, then the
    # error model fitted from the residuals (fit.errors)
    sig0_2 = (det.sig_pix * det.pixscale) ** 2 + cfg.astromErrorFloor ** 2
    w = 1.0 / sig0_2
    y, prior, prior_w, has = _reference_priors(data, plane, cfg)
    prior_var0 = np.where(prior_w > 0, 1.0 / np.where(prior_w > 0, prior_w, 1.0), np.inf)
    errors, ref_scale, ref_floor = None, 1.0, float(cfg.refPosErrorFloor)
    # the catalogue's own variances, without the floor (fit.errors.fit_reference_errors)
    cat_var = np.maximum(prior_var0 - cfg.refPosErrorFloor ** 2, 1e-12)
    ref_prior = has.copy() if (data.ref is not None and has.any()) else np.zeros(nstar, bool)
    n_ref_rejected = 0
    if start is not None and start.error_scale:
        errors = ErrorModel([start.error_scale.get(int(v), 1.0) for v in visits],
                            start.error_floor)
        w = 1.0 / errors.variance(sig0_2, vidx)
    if start is not None:
        ref_scale, ref_floor = start.ref_scale, start.ref_floor
        prior_w = np.where(ref_prior, 1.0 / (ref_scale ** 2 * cat_var + ref_floor ** 2), prior_w)

    geom = np.zeros((nc, 3))
    if held is not None:
        geom[:] = [held.placement.get(int(c), (0.0, 0.0, 0.0)) for c in ccds]
    elif start is not None:
        geom[:] = [start.placement.get(int(c), (0.0, 0.0, 0.0)) for c in ccds]
    half_diag = np.array([0.5 * np.hypot(camera[int(c)].width, camera[int(c)].height)
                          for c in ccds])

    def refit_errors(r, act):
        """The error model of the residuals of solution `r` (detections `act`): the weights
        and the reference catalogue's error scale follow it (fit.errors)."""
        nonlocal w
        h = leverage(w, star, act, nstar, prior_w)
        h = repeated_only(h + (1.0 - h) * model_leverage(
            vidx, cidx, act, n_terms_v, 1.5 if cfg.solveCcd else 0.0), star, act, nstar)
        e = fit_error_model(np.sum(r.resid[act] ** 2, axis=1), sig0_2[act], h[act], vidx[act],
                            nv, 2)
        if ref_prior.any() and data.ref is not None:
            refit_references(r, act)
        w = 1.0 / e.variance(sig0_2, vidx)
        return e

    def refit_references(r, act):
        """The reference errors (scale and floor) from the stars' detections' offsets."""
        nonlocal prior_w, ref_scale, ref_floor
        hm = model_leverage(vidx, cidx, act, n_terms_v, 1.5 if cfg.solveCcd else 0.0)
        d2, var_det, ok, hbar = detection_offsets(r.xstar, prior, r.resid, w, star, act, nstar,
                                                  hm)
        pr = ref_prior & ok
        e = fit_reference_errors(d2[pr], cat_var[pr], var_det[pr], 2, hbar[pr])
        if e is not None:
            ref_scale, ref_floor = float(e.scale[0]), e.floor
            prior_w = np.where(ref_prior, 1.0 / (ref_scale ** 2 * cat_var + ref_floor ** 2),
                               prior_w)

    # the chromatic term (fit.chromatic): a known displacement of each detection, refitted
    # after every solve
    dcr, y_dcr, dcr_pending = None, np.zeros((n, 2)), None
    if cfg.fitDcr:
        colours, where = star_colours(data, exposures, cfg.dcrColor)
        dec_v = np.bincount(vidx, det.dec, nv) / np.bincount(vidx, minlength=nv)
        dcr = DcrFit(colours, visit_refraction(exposures, visits, dec_v), star, vidx, visits, cfg)
        if dcr.active:
            log.info("chromatic term: %s colours (%s); vectors of %d visits from the colours, "
                     "%d from the headers", cfg.dcrColor, where, int(dcr.from_colours.sum()),
                     int(dcr.from_headers.sum()))
        elif dcr.can_start_from_residuals:
            log.info("chromatic term: no star with a %s colour (%s) and no zenith distance "
                     "and parallactic angle in the headers: fitted from the residuals once the "
                     "fit has converged, where they show it", cfg.dcrColor, where)
            dcr_pending, dcr = dcr, None
        else:
            log.info("chromatic term: not fitted (no star with a %s colour: %s; no zenith "
                     "distance and parallactic angle in the headers)", cfg.dcrColor, where)
            dcr = None
    if dcr is not None and start is not None:
        for k, vv in enumerate(visits):
            if dcr.from_colours[k] and int(vv) in start.dcr_vectors:
                dcr.d[k] = start.dcr_vectors[int(vv)]
        y_dcr = dcr.offsets()

    active = np.ones(n, bool)
    # frozen visits / CCDs: too few stars for their parameters
    per_visit = np.bincount(vidx, minlength=nv)
    frozen_v = orders < 0
    for k in np.nonzero(frozen_v)[0]:
        log.warning("visit %d: %s, too few for an order-1 astrometric polynomial: frozen at "
                    "its single-frame WCS", visits[k], why[k])
    active &= ~frozen_v[vidx]
    usable = active.copy()
    # stars held out of the whole fit to validate the turbulence fields (fit.turbulence):
    # only stars with two detections or more say anything about them
    reserved = np.zeros(n, bool)
    if cfg.fitTurbulence and cfg.fitReserveFraction > 0:
        multi = np.bincount(star, minlength=nstar) >= 2
        reserved = (reserved_stars(det, star, nstar, cfg.fitReserveFraction) & multi)[star] & usable
        active &= ~reserved
        usable &= ~reserved
    coef = np.zeros((nv, 2, T))
    if start is not None:
        for k, vv in enumerate(visits):
            c = start.coefficients.get(int(vv))
            if c is not None and c.shape == coef[k].shape:
                coef[k] = c
    # a warm start skips the annealing of the clipping threshold (fit.clipping)
    it0 = 0 if start is None else len(ANNEALING)
    last_chi2 = np.inf
    excluded = np.zeros(n, bool)      # displaced images of damaged visits (fit.quality)
    returned = np.zeros(n, bool)      # reinstated once (fit.clipping.update_active)
    n_refits = 0                      # of the error model (fit.errors.MAX_REFITS)
    passes, at_floor, converged = 0, False, False    # the damaged-visit check (fit.quality)
    # the common-terms prior (fit.shrinkage): estimated once from the converged fit without it
    coef_prior_mat = None
    common_record = {}
    common_pending = (cfg.commonFromOrder > 0 and order >= cfg.commonFromOrder and nv >= 2
                      and not provisional)
    band_of = {e.visit: str(e.filter) for e in exposures}
    bands = [band_of.get(int(v), "") for v in visits]
    # a new problem at convergence (a damaged visit's images excluded, the common-terms prior
    # set; at most 3 + 1 times) gets maxIter iterations of its own
    budget = cfg.maxIter
    for it in itertools.count():
        if it >= budget:
            break
        g = geom[cidx]
        u, v, ru, rv = placement.place(ox, oy, g[:, 0], g[:, 1], g[:, 2], data.u0, data.v0)
        ccd_fixed = np.ones(nc, bool)
        ccd_prior = ccd_prior_w = None
        if it + it0 > 0 and cfg.solveCcd and held is None:
            a, b, jac = optics.values_and_jacobian(u, v)    # the polynomial's coordinates
            G = model.placement_derivatives(coef, vidx, a, b, u, v, ru, rv, cfg.allowRotation,
                                            jac)
            n_on = np.bincount(cidx[active], minlength=nc)
            # a weak prior towards the nominal placement on every CCD: it holds the sparse
            # CCDs (not frozen there) and the directions no detection sees (the common move of
            # CCDs seen by one visit only, which that visit's polynomial absorbs)
            ccd_fixed = np.zeros(nc, bool)
            sparse = n_on < cfg.minStarsPerCcd
            ccd_prior_w = np.empty((nc, 3))
            ccd_prior_w[:, :2] = 1.0 / CCD_PLACEMENT_PRIOR_PX ** 2
            ccd_prior_w[:, 2] = (half_diag / CCD_PLACEMENT_PRIOR_PX) ** 2
            ccd_prior = -geom                  # the increment back to the nominal placement
            if it + it0 == 1 and sparse.any():
                log.info("astrometry: %d CCDs with fewer than minStarsPerCcd=%d stars: their "
                         "placement held within %.1f px of the nominal one by a prior",
                         int(sparse.sum()), cfg.minStarsPerCcd, CCD_PLACEMENT_PRIOR_PX)
        else:
            a, b = optics(u, v)
            G = np.zeros((n, 2, 3))
        lsp = LeastSquaresProblem(
            star=star, visit=vidx, ccd=cidx, active=active.copy(), u=a, v=b, y=y + y_dcr, w=w,
            G=G, prior=prior, prior_w=prior_w.copy(), prior_is_measurement=bool(ref_prior.any()),
            coef_prior=coef_prior, coef_prior_w=coef_prior_w, coef_prior_mat=coef_prior_mat,
            ccd_fixed=ccd_fixed, ccd_prior=ccd_prior, ccd_prior_w=ccd_prior_w, nvisit=nv,
            nccd=nc, nstar=nstar, order=order, basis="legendre")
        r = require_solution(solve_least_squares(lsp), "astrometric")
        coef = r.coef
        res = r.resid
        dcr_step = 0.0
        if dcr is not None:
            dcr_step = dcr.update(res, w, active)
            y_dcr = dcr.offsets()
        chi = w * np.sum(res ** 2, axis=1)
        rms = float(np.sqrt(np.mean(np.sum(res[active] ** 2, axis=1) / 2))) * 1000.0
        # no clipping before the CCD placement is fitted (iteration 0): offsets of ~0.2 px
        # would look like outliers for the brightest stars
        nclip, nback, thr = update_active(chi, star, active, usable, it + it0, cfg.clipSigma,
                                          returned)
        # once the clipping threshold is down, the errors follow the residuals: the weights
        # of the next iteration, and its clipping threshold, are those of the error model
        new_errors = None
        if cfg.fitErrorModel and np.isfinite(thr) and thr <= cfg.clipSigma \
                and n_refits < MAX_REFITS:
            new_errors = refit_errors(r, active)
            n_refits += 1
        model_moved = new_errors is not None and (
            errors is None or np.max(np.abs(new_errors.scale / errors.scale - 1)) > 0.01
            or abs(new_errors.floor - errors.floor) > 0.01 * max(new_errors.floor, 1e-4))
        # the chromatic term still moving a detection by more than 0.1 mas
        model_moved = model_moved or dcr_step > 1e-4
        if new_errors is not None:
            errors = new_errors
        # a reference association the detections contradict (a neighbour within radXMatch,
        # a blend, a catalogue error) is dropped, not fought detection by detection: held at
        # the catalogue's mas-level errors, one such star 0.5" off bends the solution around
        # it by several mas
        # (only where two detections or more say so: one detection against the catalogue
        # is a conflict the detection's clipping settles, e.g. a damaged visit's image)
        # (the test is the offset of the star's detections, averaged, from the reference in
        # units of its error (fit.errors.detection_offsets): the fitted star position, which
        # a catalogue of Gaia's precision pins to itself, would hide any offset)
        if np.isfinite(thr) and ref_prior.any():
            d2, var_det, ok, _ = detection_offsets(r.xstar, prior, res, w, star, active, nstar)
            with np.errstate(divide="ignore", invalid="ignore"):
                pchi = np.where(ok & (prior_w > 0), d2 / (var_det + 1.0 / prior_w), np.nan)
            n_on = np.bincount(star[active], minlength=nstar)
            wrong = ref_prior & np.isfinite(pchi) & (pchi > thr ** 2) & (n_on >= 2)
            if wrong.any():
                prior_w[wrong] = 0.0
                ref_prior &= ~wrong
                y[wrong[star]] = 0.0          # no proper motion of a catalogue star not theirs
                n_ref_rejected += int(wrong.sum())
                nclip += int(wrong.sum())
                log.info("astrometry: %d reference associations contradicted by the detections "
                         "(beyond %.0f sigma) dropped", int(wrong.sum()), thr)
        summ = IterationSummary("astrometry", it + 1, float(r.chi2), r.ndof, rms,
                                int(active.sum()), nclip, float(r.t_assemble), float(r.t_solve),
                                r.solver)
        stats.iterations.append(summ)
        log.info(summ.line())
        step = r.dccd
        geom[:, :2] += step[:, :2]
        geom[:, 2] += step[:, 2]
        # the largest move of a CCD corner the step made, in pixels: the polynomials were
        # solved jointly with it, so what a further iteration would still change is O(move^2)
        move = float(np.max(np.abs(step[:, :2]).max(axis=1) + np.abs(step[:, 2]) * half_diag,
                            initial=0.0))
        log.debug("astrometry iteration %d: CCD placement step %.2g px", it + 1, move)
        small = move < 1e-3
        # steps along nearly degenerate directions (CCD offsets against the polynomials) may
        # not vanish but no longer change chi2
        stalled = it > 1 and abs(summ.chi2 - last_chi2) < 1e-6 * max(summ.chi2, 1.0)
        last_chi2 = summ.chi2
        done = it > 0 and nclip <= chance_clips(int(active.sum()), thr, 2) and nback == 0 \
            and thr <= cfg.clipSigma and (small or stalled) and not model_moved
        # damaged visits (fit.quality): looked for as soon as the clipping is down to its
        # floor (a damaged visit can keep the fit from converging) and again at convergence;
        # their displaced images out, their clean part back in (a visit already known only
        # when its clean part moved enough to show 1% more)
        if (done or (thr <= cfg.clipSigma and not at_floor)) and passes < 3:
            at_floor = True
            passes += 1
            known = dict(data.damaged)
            quality, new_excl = assess_visits(visits, res, w, star, active, usable, vidx,
                                              nstar, prior_w, errors, excluded, known)
            new_excl &= ~excluded
            n_new = np.bincount(vidx[new_excl], minlength=nv)
            grew = [k for k in range(nv)
                    if n_new[k] > (0.01 * per_visit[k] if int(visits[k]) in known else 0)]
            for k in grew:
                q = quality[k]
                m = vidx == k
                excluded |= new_excl & m
                usable &= ~excluded
                active[m] = usable[m]
                if q.visit not in data.damaged:
                    log.warning("visit %d looks damaged (doubled images?): %s", q.visit, q.note)
                data.damaged[q.visit] = q.shift_direction_deg
            active &= ~excluded
            if grew:
                if done:
                    budget = max(budget, it + 1 + cfg.maxIter)
                continue
        if done and dcr_pending is not None:
            # the chromatic term from the residuals (fit.chromatic): a new problem when found
            pending, dcr_pending = dcr_pending, None
            if pending.start_from_residuals(res, w, active):
                dcr = pending
                y_dcr = dcr.offsets()
                budget = max(budget, it + 1 + cfg.maxIter)
                continue
        if done and common_pending:
            common_pending = False
            m = _common_prior(model, coef, a, b, w, star, active, nstar, prior_w, vidx, visits,
                              orders, lsp, cfg.commonFromOrder, bands,
                              held.astro_common if held is not None else None, common_record)
            if m is not None:
                coef_prior_mat = m
                budget = max(budget, it + 1 + cfg.maxIter)
                continue
        if done:
            converged = True
            break
    if r.ndof <= 0:
        raise MosaicError(f"too few stars to determine the astrometric solution: "
                          f"{r.nobs} measurements (detections and reference values) for {r.nparam} "
                          "parameters")
    y = y + y_dcr                         # the chromatic term, as fitted, from here on
    if dcr is not None:
        model.chromatic = dcr.term()
        if dcr.free.any():
            log.info("chromatic term: effective colours fitted for %d stars without a "
                     "catalogue colour", int(dcr.free.sum()))
    if not converged:
        log.warning("astrometry: not converged after %d iterations (maxIter=%d; last: %d "
                    "clipped, CCD step %.2g px)", budget, cfg.maxIter, nclip, move)
    quality, _ = assess_visits(visits, res, w, star, active, usable, vidx, nstar, prior_w,
                               errors, excluded, data.damaged)
    frozen = {}
    for k, vv in enumerate(visits):
        if frozen_v[k]:
            frozen.update({(e.visit, e.ccd): e.wcs_header for e in exposures if e.visit == vv})
        else:
            model.coefficients[int(vv)] = coef[k]
    placement.offsets.update({int(c): tuple(float(x) for x in geom[k]) for k, c in enumerate(ccds)})
    if n_ref_rejected:
        data.rejected_refs = np.union1d(data.rejected_refs, data.ref_of_star[has & ~ref_prior])
        data.ref_of_star = np.where(has & ~ref_prior, -1, data.ref_of_star)   # not theirs
        stats.n_ref_stars = int((data.ref_of_star >= 0).sum())
    if errors is not None:
        log.info("astrometric errors: scale %.2f-%.2f (median %.2f) per visit, floor %.2f mas; "
                 "reference catalogue errors x %.2f with a floor of %.2f mas", np.min(errors.scale),
                 np.max(errors.scale), np.median(errors.scale), errors.floor * 1000.0, ref_scale,
                 ref_floor * 1000.0)
    stats.astrometry = AstrometryStats(
        order=order, chi2=float(r.chi2), ndof=r.ndof, rms_mas=rms,
        clipped=int((usable & ~active).sum()), n_active=int(active.sum()),
        ref_rejected=n_ref_rejected,
        error_scale={int(v): float(x) for v, x in zip(visits, errors.scale)} if errors else {},
        error_floor_mas=errors.floor * 1000.0 if errors else 0.0, ref_error_scale=ref_scale,
        converged=converged, visit_quality=[q.as_row() for q in quality],
        common=common_record)
    for q in quality:
        if q.flag in ("trailed", "noisy"):
            log.warning("visit %d looks %s: %s (down-weighted by its error scale %.2f)",
                        q.visit, q.flag, q.note, q.error_scale)
    warm = AstrometryStart(
        placement={int(c): tuple(float(x) for x in geom[k]) for k, c in enumerate(ccds)},
        coefficients={int(vv): coef[k].copy() for k, vv in enumerate(visits) if not frozen_v[k]},
        error_scale={int(vv): float(x) for vv, x in zip(visits, errors.scale)} if errors else {},
        error_floor=errors.floor if errors else 0.0, ref_scale=ref_scale, ref_floor=ref_floor,
        dcr_vectors={int(vv): dcr.d[k].copy() for k, vv in enumerate(visits)}
        if dcr is not None else {})
    data.astrometry = AstrometryResult(active=active, resid=res, w=w, xstar=r.xstar, y=y,
                                       prior_w=prior_w, orders=orders, problem=lsp, start=warm)
    if not cfg.fitTurbulence:
        return model, frozen, None

    def solve_at(y_extra, act):
        # the polynomials and stars again, with the CCD placement as fitted
        g = geom[cidx]
        pu, pv, _, _ = placement.place(ox, oy, g[:, 0], g[:, 1], g[:, 2], data.u0, data.v0)
        pa, pb = optics(pu, pv)
        return require_solution(solve_least_squares(LeastSquaresProblem(
            star=star, visit=vidx, ccd=cidx, active=act, u=pa, v=pb, y=y + y_extra, w=w,
            G=np.zeros((n, 2, 3)), prior=prior, prior_w=prior_w,
            prior_is_measurement=bool(ref_prior.any()), coef_prior=coef_prior,
            coef_prior_w=coef_prior_w, coef_prior_mat=coef_prior_mat,
            ccd_fixed=np.ones(nc, bool), nvisit=nv, nccd=nc,
            nstar=nstar, order=order, basis="legendre")), "astrometric")

    def noise(r, turb_var):
        """The measurements' own variances: the error model of the residuals of `r` with
        the turbulence's variance `turb_var` known (fit.errors)."""
        h = leverage(w, star, active, nstar, prior_w)
        h = repeated_only(h + (1.0 - h) * model_leverage(
            vidx, cidx, active, n_terms_v, 1.5 if cfg.solveCcd else 0.0), star, active, nstar)
        e = fit_error_model(np.sum(r.resid[active] ** 2, axis=1), sig0_2[active], h[active],
                            vidx[active], nv, 2, extra=turb_var[active])
        return e.variance(sig0_2, vidx)

    def refit_refs(r):
        """The reference errors again, the stars freed of the turbulence."""
        if ref_prior.any() and data.ref is not None and cfg.fitErrorModel:
            refit_references(r, active)

    def finish():
        """The turbulence phase, once the associations are final (fit.turbulence): the
        fields, the polynomials and stars solved again without them, the reserved stars
        back in; updates the model, ``data.astrometry`` and the statistics."""
        skip = frozen_v | np.isin(visits, [q.visit for q in quality
                                           if q.flag in ("doubled", "excluded")])
        r2, y_turb, model.turbulence, info, act = _fit_turbulence(
            solve_at, noise, refit_refs, r, y, star, vidx, visits, active,
            reserved & ~excluded, w, skip, thr if np.isfinite(thr) else cfg.clipSigma, cfg)
        for k, vv in enumerate(visits):
            if not frozen_v[k]:
                model.coefficients[int(vv)] = r2.coef[k]
        stats.turbulence = info
        a = stats.astrometry
        # (the CCD placement, fitted before and held here, keeps its degrees of freedom)
        a.chi2, a.ndof, a.n_active = float(r2.chi2), r2.ndof - r.n_ccd_dof, int(act.sum())
        a.rms_mas = float(np.sqrt(np.mean(np.sum(r2.resid[act] ** 2, axis=1) / 2))) * 1000.0
        a.clipped = int(((usable | reserved) & ~excluded & ~act).sum())
        data.astrometry = AstrometryResult(active=act, resid=r2.resid, w=w, xstar=r2.xstar,
                                           prior_w=prior_w, orders=orders,
                                           y=y + y_turb, problem=dataclasses.replace(
                                               lsp, active=act.copy(), w=w,
                                               prior_w=prior_w.copy()))
    return model, frozen, finish


def _fit_turbulence(solve_at, noise, refit_refs, r, y, star, vidx, visits, active, reserved, w,
                    frozen_v, thr, cfg, rounds=3):
    """The turbulence field of every visit (fit.turbulence), fitted to the residuals of the
    active detections, then the polynomials and stars solved again with it removed and the
    reference errors' scale refitted (`refit_refs(r)`: the stars, no longer carrying their
    mean turbulence, agree with the reference catalogue better, which then ties them
    again); `rounds` times, so that the stars' positions (means over the visits) lose their
    share of each field too. The GP's noise is the measurements' own (`noise(r, turb_var)`),
    fitted once, before any field is removed. A visit's field is kept only if the reserved
    stars' scatter goes down with it. Finally the reserved stars join the fit (their
    detections within `thr` sigma of their own mean). Returns (last solution, the fields'
    displacement of each detection (n, 2) arcsec, {visit: TurbulenceField}, {visit: info},
    the detections now active)."""
    n, nv = len(star), len(visits)
    y_turb = np.zeros((n, 2))
    fields, info, noise_var = {}, {}, None

    def positions(rr):
        """Each detection's model position in the tract plane (P_v), arcsec."""
        xs = np.nan_to_num(rr.xstar[star], nan=0.0)
        return rr.resid + xs + y + y_turb

    any_kernel = True
    for rnd in range(rounds):
        pos = positions(r)
        target = r.resid + y_turb              # what the field must explain
        kernels = {}
        if any_kernel:
            # (once no visit has a field the rounds only refit the reference errors: the
            # residuals barely move, their correlation functions are not measured again)
            # (the visits' correlation functions on threads: scipy's pair counting releases
            # the GIL, and it is most of this phase when no visit has a field)
            todo = [k for k in range(nv) if not frozen_v[k]]
            # each visit's active detections, in order (index arrays: masks of every
            # detection for each of 200 visits were 200 MB)
            rows_on = np.nonzero(active)[0]
            of_visit = {int(k): rows_on[i] for k, i in index_groups(vidx[rows_on])}
            empty = np.zeros(0, np.int64)
            sel = [of_visit.get(k, empty) for k in todo]
            with ThreadPoolExecutor(max(1, min(len(todo), os.cpu_count() or 1))) as ex:
                found = list(ex.map(lambda m: visit_kernel(pos[m], target[m]), sel))
            info = {}
            for k, (s2, ell, inf) in zip(todo, found):
                info[int(visits[k])] = inf
                if s2 > 0:
                    kernels[int(visits[k])] = (s2, ell)
            any_kernel = bool(kernels)
            if not any_kernel and rnd == 0:
                # no field to remove: the solution stands as it is (the reference errors
                # are at their fixed point already, fit.errors.detection_offsets)
                break
        if noise_var is None:
            turb_var = np.zeros(n)
            for k, v in enumerate(visits):
                if int(v) in kernels:
                    turb_var[vidx == k] = kernels[int(v)][0]
            noise_var = noise(r, turb_var) if cfg.fitErrorModel else 1.0 / w
        fields = {}
        y_turb = np.zeros((n, 2))
        for k, v in enumerate(visits):
            if int(v) not in kernels:
                continue
            m = (vidx == k) & active
            f = visit_field(pos[m], target[m], noise_var[m], *kernels[int(v)], cfg.turbulenceGridStep,
                            info[int(v)], after=rnd == rounds - 1)
            fields[int(v)] = f
            mv = vidx == k
            y_turb[mv] = np.stack(f(pos[mv, 0], pos[mv, 1]), axis=1)
        r = solve_at(y_turb, active)
        refit_refs(r)
    # validation on the reserved stars: their scatter about their own mean, without and with
    pos = positions(r)
    rows = np.nonzero(reserved)[0]
    if len(rows):
        before, nres = reserved_scatter(pos - y, w, star, vidx, nv, rows, thr)
        after, _ = reserved_scatter(pos - y - y_turb, w, star, vidx, nv, rows, thr)
    else:
        before = after = np.full(nv, np.nan)
        nres = np.zeros(nv, int)
    dropped = []
    for k, v in enumerate(visits):
        inf = info.get(int(v))
        if inf is None:
            continue
        inf.update(reserved_before_mas=float(before[k] * 1000.0),
                   reserved_after_mas=float(after[k] * 1000.0), reserved_n=int(nres[k]))
        if int(v) in fields:
            worse = np.isfinite(after[k]) and np.isfinite(before[k]) and after[k] >= before[k]
            inf["used"] = not worse
            if worse:
                dropped.append(int(v))
                del fields[int(v)]
        else:
            inf["used"] = False
    if fields:
        log.info("turbulence: fields of %d visits (rms %.1f-%.1f mas, outer scale %.1f-%.1f'); "
                 "reserved stars %.2f -> %.2f mas (median per visit)", len(fields),
                 min(info[v]["sigma_mas"] for v in fields), max(info[v]["sigma_mas"] for v in fields),
                 min(2 * np.pi * info[v]["length_arcmin"] for v in fields),
                 max(2 * np.pi * info[v]["length_arcmin"] for v in fields),
                 np.nanmedian([info[v]["reserved_before_mas"] for v in fields]),
                 np.nanmedian([info[v]["reserved_after_mas"] for v in fields]))
    elif info:
        log.info("turbulence: no visit has a significant correlated residual")
    if dropped:
        log.warning("turbulence: the fields of %d visits did not reduce the reserved stars' "
                    "scatter and are not used: %s", len(dropped), ", ".join(map(str, dropped)))
    y_turb = np.zeros((n, 2))
    for k, v in enumerate(visits):
        if int(v) in fields:
            m = vidx == k
            y_turb[m] = np.stack(fields[int(v)](pos[m, 0], pos[m, 1]), axis=1)
    act = active.copy()
    if len(rows):
        p = pos[rows] - y[rows] - y_turb[rows]
        s, ww = star[rows], w[rows]
        W = np.bincount(s, weights=ww, minlength=len(r.xstar))
        mean = np.stack([np.bincount(s, weights=ww * p[:, d], minlength=len(W)) for d in (0, 1)],
                        axis=1) / np.maximum(W, 1e-300)[:, None]
        chi = ww * np.sum((p - mean[s]) ** 2, axis=1)
        act[rows] = np.isfinite(chi) & (chi < thr ** 2)
    r = solve_at(y_turb, act)
    if fields:
        # the fields the reserved stars validated, fitted again with those stars in: a tenth
        # more stars (and a detection of their own at each) is 0.3 mas of an 8 mas field
        # (bench/turbulence_floor.py); the validation figures stay those of the held-out fit.
        # This last fit also takes the field's E/B structure where the residuals show it
        # (the rounds above only move the stars: the isotropic kernel serves them)
        pos = positions(r)
        target = r.resid + y_turb
        for k, v in enumerate(visits):
            if int(v) not in fields:
                continue
            m = (vidx == k) & act
            f = visit_field(pos[m], target[m], noise_var[m], *kernels[int(v)],
                            cfg.turbulenceGridStep, info[int(v)], eb=True)
            fields[int(v)] = f
            mv = vidx == k
            y_turb[mv] = np.stack(f(pos[mv, 0], pos[mv, 1]), axis=1)
        r = solve_at(y_turb, act)
    return r, y_turb, fields, info, act

