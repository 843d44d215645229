"""The astrometric fit: per-visit polynomials of the field angle, CCD placement, star
positions, iterated (the CCD rotations are the only non-linear parameters) with worst-first
clipping.
"""
import logging

import numpy as np

from .. import MosaicError
from ..model.reference import Reference
from .clipping import chance_clips, update_active
from .core import LeastSquaresProblem, require_solution, solve_least_squares
from .order import affordable_order
from .state import IterationSummary

log = logging.getLogger("mosaicfit.fit")

__all__ = ["fit_astrometry"]

#: arcsec: the single-frame WCS accuracy, which ties a relative solution's frame
RELATIVE_PRIOR_ARCSEC = 0.5


def _placement(sol, ctx, geom):
    """Focal-plane (u, v) of every detection for CCD parameters geom[(ncc, 3)], and the
    offsets (ru, rv) from each CCD's centre (for the rotation derivative)."""
    cam = sol.camera
    ps = cam.pixel_size_mm
    ccds = ctx["ccds"]
    ox = np.array([cam[int(c)].offset_mm[0] / ps for c in ccds])[ctx["cidx"]]
    oy = np.array([cam[int(c)].offset_mm[1] / ps for c in ccds])[ctx["cidx"]]
    g = geom[ctx["cidx"]]
    c, s = np.cos(g[:, 2]), np.sin(g[:, 2])
    ru0, rv0 = ctx["u0"] - ox, ctx["v0"] - oy
    ru, rv = c * ru0 - s * rv0, s * ru0 + c * rv0
    return ox + g[:, 0] + ru, oy + g[:, 1] + rv, ru, rv


def fit_astrometry(sol, ctx, cfg, exposures):
    det, star, nstar = ctx["det"], ctx["star"], ctx["nstar"]
    vidx, cidx, ccds, visits = ctx["vidx"], ctx["cidx"], ctx["ccds"], ctx["visits"]
    n, nv, nc = len(det), len(visits), len(ccds)
    # the polynomial order: reduced when the typical visit has too few stars for it (narrow
    # bands, sparse fields); visits far below the typical one are frozen further down
    order = affordable_order(cfg.fittingOrder, np.bincount(vidx, minlength=nv), 1, "astrometric")
    sol.order = order
    T = (order + 1) * (order + 2) // 2
    fs = sol.fa_scale
    ps = sol.camera.pixel_size_mm

    # weights: centroid errors in arcsec (single-frame pixel scale) plus the floor
    sig = det.sig_pix * det.pixscale
    w = 1.0 / (sig ** 2 + cfg.astromErrorFloor ** 2)
    # reference stars: prior at the mean epoch, proper motion to each visit's epoch
    y = np.zeros((n, 2))
    prior = np.zeros((nstar, 2))
    prior_w = np.zeros(nstar)
    ref, ros, t0 = ctx["ref"], ctx["ref_of_star"], ctx["t0"]
    has = ros >= 0
    if ref is not None and has.any():
        r = ros[has]
        sub = Reference(*(getattr(ref, f)[r] for f in ("ra", "dec", "pm_ra", "pm_dec", "epoch",
                                                        "pos_err", "pm_err", "mag", "mag_err")))
        ra0, dec0, err0 = sub.at(t0)
        prior[has] = np.stack(sol.sky_to_tract(ra0, dec0), axis=-1)
        # jointcal's convention: the catalogue's own errors (Gaia: 0.02-1 mas, which is what
        # ties the tract's global distortion, invisible to the internal data, to the sky)
        # plus a floor; hscPipe's catRMS (40 mas) where the catalogue gives no errors
        sig2 = np.where(np.isfinite(err0), (err0 / 1000.0) ** 2 + cfg.refPosErrorFloor ** 2,
                        (cfg.catRMS * 3600.0) ** 2)
        prior_w[has] = 1.0 / sig2
        # displacement between t0 and each detection's epoch, in the tract plane
        dm = np.nonzero(has[star] & np.isfinite(ctx["det_mjd"]))[0]
        if len(dm):
            rowmap = np.full(nstar, -1)
            rowmap[np.nonzero(has)[0]] = np.arange(has.sum())
            rr = rowmap[star[dm]]
            sub2 = Reference(*(getattr(sub, f)[rr] for f in ("ra", "dec", "pm_ra", "pm_dec", "epoch",
                                                             "pos_err", "pm_err", "mag", "mag_err")))
            ra1, dec1, _ = sub2.at(ctx["det_mjd"][dm])
            xi1 = np.stack(sol.sky_to_tract(ra1, dec1), axis=-1)
            y[dm] = xi1 - prior[star[dm]]
    coef_prior = coef_prior_w = None
    if not has.any():
        # Relative solution. The internal data leave free any smooth distortion of the tract
        # plane common to all visits (not only an affine one: composed with order-9 visit
        # polynomials it stays representable to far below the noise). Every star is tied,
        # weakly, to its mean single-frame position (0.5": the single-frame WCS accuracy), as a
        # reference star would be: the frame becomes the average of the single-frame WCSs and
        # the internal precision is untouched.
        prior = np.stack(sol.sky_to_tract(ctx["star_ra"], ctx["star_dec"]), axis=-1)
        prior_w = np.full(nstar, 1.0 / RELATIVE_PRIOR_ARCSEC ** 2)

    geom = np.zeros((nc, 3))
    ref_prior = has.copy() if (ref is not None and has.any()) else np.zeros(nstar, bool)
    n_ref_rejected = 0
    half_diag = np.array([0.5 * np.hypot(sol.camera[int(c)].width, sol.camera[int(c)].height)
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
        u, v, ru, rv = _placement(sol, ctx, geom)
        a, b = sol.field_coords(u, v)            # the polynomial's coordinates
        K = 3
        G = np.zeros((n, 2, K))
        ccd_fixed = np.ones(nc, np.uint8)
        if it > 0 and cfg.solveCcd:
            # d(field angle)/d(focal plane), per 15-micron unit, for the CCD derivatives
            ja, jb, jc, jd = (j * ps / fs for j in sol.camera.field_angle_jacobian(u * ps, v * ps))
            for k in range(nv):
                m = vidx == k
                if not m.any():
                    continue
                _, dpa, dpb = sol.astro_basis().evaluate_with_gradients(coef[k], a[m], b[m])
                dpu = dpa * ja[m] + dpb * jc[m]      # dP/du, dP/dv: (2, n_m)
                dpv = dpa * jb[m] + dpb * jd[m]
                G[m, :, 0] = dpu.T
                G[m, :, 1] = dpv.T
                if cfg.allowRotation:
                    G[m, :, 2] = (dpu * -rv[m] + dpv * ru[m]).T
            n_on = np.bincount(cidx[active], minlength=nc)
            ccd_fixed = (n_on < cfg.minStarsPerCcd).astype(np.uint8)
        r = require_solution(solve_least_squares(LeastSquaresProblem(
            star=star, visit=vidx, ccd=cidx, active=active, u=a, v=b, y=y, w=w, G=G,
            prior=prior, prior_w=prior_w, coef_prior=coef_prior, coef_prior_w=coef_prior_w,
            ccd_fixed=ccd_fixed, nvisit=nv, nccd=nc, nstar=nstar, order=order,
            basis="legendre")), "astrometric")
        coef = r.coef
        res = r.resid
        chi = w * np.sum(res ** 2, axis=1)
        ndof = int(r.nobs_det - r.nparam)
        rms = float(np.sqrt(np.mean(np.sum(res[active] ** 2, axis=1) / 2))) * 1000.0
        # no clipping before the CCD placement is fitted (iteration 0): offsets of ~0.2 px
        # would look like outliers for the brightest stars
        nclip, nback, thr = update_active(chi, star, active, usable, it, cfg.clipSigma)
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
        summ = IterationSummary("astrometry", it + 1, float(r.chi2_det), ndof, rms,
                                int(active.sum()), nclip, float(r.t_assemble), float(r.t_solve))
        sol.stats["iterations"].append(summ)
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
                and thr <= cfg.clipSigma and (small or stalled):
            break
    if ndof <= 0:
        raise MosaicError(f"too few stars to determine the astrometric solution: "
                          f"{r.nobs_det} measurements for {r.nparam} parameters")
    # final state
    for k, vv in enumerate(visits):
        if frozen_v[k]:
            for e in exposures:
                if e.visit == vv:
                    sol.frozen[(e.visit, e.ccd)] = e.wcs_header
        else:
            sol.astro[int(vv)] = coef[k]
    for k, c in enumerate(ccds):
        sol.ccd_geom[int(c)] = tuple(float(a) for a in geom[k])
    xstar = r.xstar
    n_clip_total = int((usable & ~active).sum())
    sol.stats["astro_ref_rejected"] = n_ref_rejected
    if n_ref_rejected:
        ctx["ref_of_star"] = np.where(has & ~ref_prior, -1, ros)   # not these stars' records
        sol.stats["n_ref_stars"] = int((ctx["ref_of_star"] >= 0).sum())
    sol.stats.update(astro_order=order, astro_chi2=float(r.chi2_det), astro_ndof=ndof, astro_rms_mas=rms,
                     astro_clipped=n_clip_total, astro_n_active=int(active.sum()))
    ctx.update(astro_active=active, astro_resid=res, astro_w=w, astro_xstar=xstar, astro_y=y)
