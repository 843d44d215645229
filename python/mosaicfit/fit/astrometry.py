"""The astrometric fit: per-visit polynomials of the field angle, CCD placement and star
positions (the model: :mod:`mosaicfit.model.astrometry`), iterated (the CCD rotations are the
only non-linear parameters) with worst-first clipping.
"""
import logging

import numpy as np

from .. import MosaicError
from ..model.astrometry import AstrometricModel, CcdPlacement
from ..model.basis import n_terms
from ..model.statistics import AstrometryStats, IterationSummary
from .clipping import chance_clips, update_active
from .core import LeastSquaresProblem, require_solution, solve_least_squares
from .errors import fit_error_model, leverage, reference_scale
from .order import affordable_order
from .state import AstrometryResult

log = logging.getLogger("mosaicfit.fit")

__all__ = ["fit_astrometry"]

#: arcsec: the single-frame WCS accuracy, which ties a relative solution's frame
RELATIVE_PRIOR_ARCSEC = 0.5


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


def _ccd_derivatives(model, coef, vidx, a, b, u, v, ru, rv, rotation):
    """G (n, 2, 3): d(xi, eta)/d(dx, dy, theta) of each detection, the chain rule through the
    maps: polynomial gradient x optics Jacobian x placement derivative."""
    n = len(a)
    G = np.zeros((n, 2, 3))
    ja, jb, jc, jd = model.optics.jacobian(u, v)       # d(a, b)/d(u, v)
    basis = model.basis
    for k in range(len(coef)):
        m = vidx == k
        if not m.any():
            continue
        _, dpa, dpb = basis.evaluate_with_gradients(coef[k], a[m], b[m])
        dpu = dpa * ja[m] + dpb * jc[m]      # dP/du, dP/dv: (2, n_m)
        dpv = dpa * jb[m] + dpb * jd[m]
        G[m, :, 0] = dpu.T
        G[m, :, 1] = dpv.T
        if rotation:                         # du/dtheta = -rv, dv/dtheta = ru
            G[m, :, 2] = (dpu * -rv[m] + dpv * ru[m]).T
    return G


def fit_astrometry(data, camera, optics, plane, cfg, exposures, stats):
    """Fit the astrometry of `data` (a :class:`~mosaicfit.fit.state.FitData`).

    Returns (AstrometricModel, frozen) with `frozen` the {(visit, ccd): single-frame header} of
    the visits with too few stars for their polynomial; sets ``data.astrometry`` and, where
    reference associations were dropped, ``data.ref_of_star``; appends the iterations and
    the final state to `stats`.
    """
    det, star, nstar = data.det, data.star, data.nstar
    vidx, cidx, ccds, visits = data.vidx, data.cidx, data.ccds, data.visits
    n, nv, nc = len(det), len(visits), len(ccds)
    # the polynomial order: reduced when the typical visit has too few stars for it (narrow
    # bands, sparse fields); visits far below the typical one are frozen further down
    order = affordable_order(cfg.fittingOrder, np.bincount(vidx, minlength=nv), 1, "astrometric")
    T = n_terms(order)
    placement = CcdPlacement(camera)
    model = AstrometricModel(placement, optics, plane, order)

    # weights: centroid errors in arcsec (single-frame pixel scale) plus the floor, then the
    # error model fitted from the residuals (fit.errors)
    sig0_2 = (det.sig_pix * det.pixscale) ** 2 + cfg.astromErrorFloor ** 2
    w = 1.0 / sig0_2
    y, prior, prior_w, has = _reference_priors(data, plane, cfg)
    prior_var0 = np.where(prior_w > 0, 1.0 / np.where(prior_w > 0, prior_w, 1.0), np.inf)
    errors, ref_scale = None, 1.0
    ref_prior = has.copy() if (data.ref is not None and has.any()) else np.zeros(nstar, bool)
    n_ref_rejected = 0

    ox = np.array([placement.origin(int(c))[0] for c in ccds])[cidx]
    oy = np.array([placement.origin(int(c))[1] for c in ccds])[cidx]
    geom = np.zeros((nc, 3))
    half_diag = np.array([0.5 * np.hypot(camera[int(c)].width, camera[int(c)].height)
                          for c in ccds])
    active = np.ones(n, bool)
    # frozen visits / CCDs: too few stars for their parameters
    per_visit = np.bincount(vidx, minlength=nv)
    frozen_v = per_visit < 2 * T
    for k in np.nonzero(frozen_v)[0]:
        log.warning("visit %d has only %d stars for %d astrometric terms: frozen at its "
                    "single-frame WCS", visits[k], per_visit[k], T)
    active &= ~frozen_v[vidx]
    usable = active.copy()
    coef = np.zeros((nv, 2, T))
    last_chi2 = np.inf
    for it in range(cfg.maxIter):
        g = geom[cidx]
        u, v, ru, rv = placement.place(ox, oy, g[:, 0], g[:, 1], g[:, 2], data.u0, data.v0)
        a, b = optics(u, v)                       # the polynomial's coordinates
        ccd_fixed = np.ones(nc, bool)
        if it > 0 and cfg.solveCcd:
            G = _ccd_derivatives(model, coef, vidx, a, b, u, v, ru, rv, cfg.allowRotation)
            n_on = np.bincount(cidx[active], minlength=nc)
            ccd_fixed = n_on < cfg.minStarsPerCcd
        else:
            G = np.zeros((n, 2, 3))
        r = require_solution(solve_least_squares(LeastSquaresProblem(
            star=star, visit=vidx, ccd=cidx, active=active, u=a, v=b, y=y, w=w, G=G,
            prior=prior, prior_w=prior_w, ccd_fixed=ccd_fixed, nvisit=nv, nccd=nc,
            nstar=nstar, order=order, basis="legendre")), "astrometric")
        coef = r.coef
        res = r.resid
        chi = w * np.sum(res ** 2, axis=1)
        rms = float(np.sqrt(np.mean(np.sum(res[active] ** 2, axis=1) / 2))) * 1000.0
        # no clipping before the CCD placement is fitted (iteration 0): offsets of ~0.2 px
        # would look like outliers for the brightest stars
        nclip, nback, thr = update_active(chi, star, active, usable, it, cfg.clipSigma)
        # once the clipping threshold is down, the errors follow the residuals: the weights
        # of the next iteration, and its clipping threshold, are those of the error model
        new_errors = None
        if cfg.fitErrorModel and np.isfinite(thr) and thr <= cfg.clipSigma:
            h = leverage(w, star, active, nstar, prior_w)
            new_errors = fit_error_model(np.sum(res[active] ** 2, axis=1), sig0_2[active],
                                         h[active], vidx[active], nv, 2)
            if ref_prior.any() and data.ref is not None:
                pr = ref_prior & np.all(np.isfinite(r.xstar), axis=1)
                W = np.bincount(star[active], weights=w[active], minlength=nstar) + prior_w
                ref_scale = max(1.0, reference_scale(
                    np.sum((r.xstar[pr] - prior[pr]) ** 2, axis=1),
                    prior_var0[pr] * ref_scale ** 2, prior_w[pr] / W[pr], 2) * ref_scale)
                prior_w = np.where(ref_prior, 1.0 / (prior_var0 * ref_scale ** 2), prior_w)
            w = 1.0 / new_errors.variance(sig0_2, vidx)
        model_moved = new_errors is not None and (
            errors is None or np.max(np.abs(new_errors.scale / errors.scale - 1)) > 0.01
            or abs(new_errors.floor - errors.floor) > 0.01 * max(new_errors.floor, 1e-4))
        if new_errors is not None:
            errors = new_errors
        # a reference association the detections contradict (a neighbour within radXMatch,
        # a blend, a catalogue error) is dropped, not fought detection by detection: held at
        # the catalogue's mas-level errors, one such star 0.5" off bends the solution around
        # it by several mas
        if np.isfinite(thr) and ref_prior.any():
            pchi = prior_w * np.sum((r.xstar - prior) ** 2, axis=1)
            wrong = ref_prior & np.isfinite(pchi) & (pchi > thr ** 2)
            if wrong.any():
                prior_w[wrong] = 0.0
                ref_prior &= ~wrong
                y[wrong[star]] = 0.0          # no proper motion of a catalogue star not theirs
                n_ref_rejected += int(wrong.sum())
                nclip += int(wrong.sum())
                log.info("astrometry: %d reference associations contradicted by the detections "
                         "(beyond %.0f sigma) dropped", int(wrong.sum()), thr)
        summ = IterationSummary("astrometry", it + 1, float(r.chi2_det), r.ndof, rms,
                                int(active.sum()), nclip, float(r.t_assemble), float(r.t_solve))
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
        if it > 0 and nclip <= chance_clips(int(active.sum()), thr, 2) and nback == 0 \
                and thr <= cfg.clipSigma and (small or stalled) and not model_moved:
            break
    if r.ndof <= 0:
        raise MosaicError(f"too few stars to determine the astrometric solution: "
                          f"{r.nobs_det} measurements for {r.nparam} parameters")
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
                 "reference catalogue errors x %.2f", np.min(errors.scale), np.max(errors.scale),
                 np.median(errors.scale), errors.floor * 1000.0, ref_scale)
    stats.astrometry = AstrometryStats(
        order=order, chi2=float(r.chi2_det), ndof=r.ndof, rms_mas=rms,
        clipped=int((usable & ~active).sum()), n_active=int(active.sum()),
        ref_rejected=n_ref_rejected,
        error_scale={int(v): float(x) for v, x in zip(visits, errors.scale)} if errors else {},
        error_floor_mas=errors.floor * 1000.0 if errors else 0.0, ref_error_scale=ref_scale)
    data.astrometry = AstrometryResult(active=active, resid=res, w=w, xstar=r.xstar, y=y)
    return model, frozen
