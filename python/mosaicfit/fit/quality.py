"""Per-visit quality of the astrometry: robust residuals, clipped fraction, and the damage a
visit can carry (doubled images, trailed images, bad seeing).

A visit with doubled images (a tracking or guiding fault, a wind shake) has a large fraction
of its detections measured tens to hundreds of mas away along one direction. Least squares
followed by worst-first clipping converges to a biased compromise between the two
populations (it keeps "a biased half"), and nothing in chi2 says so. What tells it: against
its star's position from the *other* detections (the leave-one-out residual r / (1 - h), h the
detection's share of its star's weight), the visit's outliers are many and point the same way
(a mean resultant length of their directions near 1), whereas ordinary outliers (blends,
cosmic rays, wrong identifications) are few and point anywhere. The residual across the
direction of the shift is not affected by it: it gives the clean population's noise, and the
residual along it has its clean population at the densest narrow peak (the mode), not at the
mean. The detections away from that peak are then excluded from the fit, which sees the visit
through its clean part.

Trailed images widen the residuals along one direction (an axis ratio of the robust residual
covariance well above the other visits'); bad seeing widens them in every direction (a
robust sigma well above the other visits'). Both are down-weighted by the error model's
per-visit scale (:mod:`mosaicfit.fit.errors`) and are flagged here.
"""
import numpy as np

from ..model.statistics import VISIT_FLAGS as FLAGS, VisitQuality

__all__ = ["VisitQuality", "assess_visits", "doubled_outliers", "FLAGS"]

# a visit is "doubled" when at least this fraction of its detections are coherent outliers
DOUBLED_MIN_FRACTION = 0.08
# ... whose directions have at least this mean resultant length (1: all the same way)
DOUBLED_MIN_COHERENCE = 0.6
# a visit whose clean part is below this fraction of its detections is excluded (no products)
EXCLUDE_BELOW = 0.3
# "trailed": robust axis ratio of the residuals above this and above 1.5x the median visit's
TRAIL_AXIS_RATIO = 1.6
# "noisy": robust sigma above this multiple of the median visit's
NOISY_FACTOR = 2.0


def _robust_sigma(a):
    a = np.asarray(a, float)
    if len(a) < 2:
        return np.nan
    return float(1.4826 * np.median(np.abs(a - np.median(a))))


def _leave_one_out(res, w, star, active, nstar, prior_w):
    """Residuals against the star's position from its other detections: r / (1 - h)."""
    W = np.bincount(star[active], weights=w[active], minlength=nstar) + prior_w
    wa = np.where(active, w, 0.0)
    # a detection not in the fit does not pull its star: its residual is already "loo"
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(W[star] > 0, wa / W[star], 1.0)
    ok = h < 0.95
    return np.where(ok[:, None], res / (1.0 - np.minimum(h, 0.95))[:, None], np.nan), ok


def doubled_outliers(r_mas, sig_mas, direction_deg=None):
    """For the leave-one-out residuals `r_mas` (n, 2) of one visit with errors `sig_mas`:
    (fraction of coherent outliers, coherence, direction [deg, north through east], the
    boolean mask of the displaced detections, their median shift [mas]).

    The outliers are beyond 5 sigma (each detection's own error combined with the visit's
    robust scatter); the shift direction is their mean direction; the clean peak is the mode
    of the residuals along it (a histogram with bins of a quarter of the across-direction
    robust sigma, smoothed); displaced are the detections beyond 4 sigma of that peak along
    the direction on the side of the shift, or beyond 5 sigma across it, sigma each
    detection's own error scaled to the visit's robust scatter across the direction (which
    the shift leaves alone). With `direction_deg` (a visit found damaged before) that
    direction is used and the coherence is not required.
    """
    ok = np.all(np.isfinite(r_mas), axis=1)
    n = int(ok.sum())
    empty = (0.0, 0.0, 0.0, np.zeros(len(r_mas), bool), 0.0)
    if n < 20:
        return empty
    r = r_mas[ok]
    s_vis = np.hypot(_robust_sigma(r[:, 0]), _robust_sigma(r[:, 1])) / np.sqrt(2.0)
    s = np.hypot(sig_mas[ok], 0.5 * s_vis)
    big = np.hypot(r[:, 0], r[:, 1]) > 5.0 * s
    frac = float(big.mean())
    if direction_deg is not None:
        pa = float(direction_deg)
        e = np.array([np.sin(np.radians(pa)), np.cos(np.radians(pa))])
        coh = 1.0
    else:
        if big.sum() < 5:
            return (frac, 0.0, 0.0, np.zeros(len(r_mas), bool), 0.0)
        unit = r[big] / np.hypot(r[big, 0], r[big, 1])[:, None]
        m = unit.mean(axis=0)
        coh = float(np.hypot(*m))
        e = m / max(np.hypot(*m), 1e-12)
        pa = float(np.degrees(np.arctan2(e[0], e[1])) % 360.0)    # (xi east, eta north)
    p = r @ e
    q = r @ np.array([-e[1], e[0]])
    s_q = max(_robust_sigma(q), 1e-6)
    # the clean population's errors: each detection's own, scaled to the scatter across the
    # shift (which the shift does not touch)
    kappa = max(_robust_sigma(q / sig_mas[ok]), 1e-3)
    s_det = kappa * sig_mas[ok]
    # the clean peak: mode of p, on a grid of s_q / 4 over the central part
    lo, hi = np.percentile(p, [1, 99])
    nb = int(min(4000, max(20, (hi - lo) / (0.25 * s_q))))
    hist, edges = np.histogram(p, bins=nb, range=(lo, hi))
    k = 4                                            # smoothing over one s_q
    smooth = np.convolve(hist, np.ones(2 * k + 1), mode="same")
    centres = 0.5 * (edges[1:] + edges[:-1])
    mode = centres[int(np.argmax(smooth))]
    near = np.abs(p - mode) < 3.0 * s_q
    mode = float(np.median(p[near])) if near.sum() > 5 else float(mode)
    disp = ((p - mode) > 4.0 * s_det) | (np.abs(q - np.median(q)) > 5.0 * s_det)
    mask = np.zeros(len(r_mas), bool)
    mask[np.nonzero(ok)[0]] = disp
    shift = float(np.median(p[disp] - mode)) if disp.any() else 0.0
    return frac, coh, pa, mask, shift


def assess_visits(visits, res, w, star, active, usable, vidx, nstar, prior_w, errors=None,
                  excluded=None, known=None):
    """One :class:`VisitQuality` per visit, and the detections to exclude as displaced
    (doubled images) (boolean mask over all detections).

    res: (n, 2) residuals in arcsec; w: weights (arcsec^-2); active/usable: in the fit / not
    refused by the selection; excluded: detections already excluded as displaced; known:
    {visit: direction (deg)} of the visits found damaged before (an earlier association).

    Of the visits newly found damaged only the worst is taken per call: its displaced images
    pull their stars, which makes the other visits' detections of those stars look displaced
    the opposite way; once they are out, the others are judged again.
    """
    known = dict(known or {})
    nv = len(visits)
    excluded = np.zeros(len(res), bool) if excluded is None else excluded
    loo, ok = _leave_one_out(res, w, star, active, nstar, prior_w)
    loo_mas = loo * 1000.0
    sig_mas = 1000.0 / np.sqrt(np.maximum(w, 1e-30))
    if errors is not None and len(errors.scale) == nv:
        # judged against the typical visit's error model, not the visit's own: the per-visit
        # scale fitted to a damaged visit's residuals has absorbed the damage (a doubled
        # visit among turbulent ones got 3x the median scale and its displaced images then
        # looked like 5-sigma noise)
        f2 = errors.floor ** 2 * 1e6
        s0_2 = np.maximum(sig_mas ** 2 - f2, 0.0) / errors.scale[vidx] ** 2
        sig_mas = np.sqrt(np.median(errors.scale) ** 2 * s0_2 + f2)
    out, new_excl = [], np.zeros(len(res), bool)
    sig_v, ratio_v = np.full(nv, np.nan), np.full(nv, np.nan)
    # each visit's detections as index arrays from one sort (a mask per visit is O(visits x
    # detections), seconds per call on a 100-visit strip)
    order = np.argsort(vidx, kind="stable")
    bounds = np.searchsorted(vidx[order], np.arange(nv + 1))
    rows = [order[bounds[k]:bounds[k + 1]] for k in range(nv)]
    for k in range(nv):
        a = rows[k][active[rows[k]]]
        if len(a) >= 5:
            ra = res[a] * 1000.0
            sig_v[k] = np.hypot(_robust_sigma(ra[:, 0]), _robust_sigma(ra[:, 1])) / np.sqrt(2.0)
            # robust covariance from the MADs along the principal axes of the central part
            c = np.cov(ra[np.hypot(ra[:, 0], ra[:, 1]) < 3.0 * sig_v[k] * np.sqrt(2)].T) \
                if len(a) > 10 else np.eye(2)
            ev, evec = np.linalg.eigh(np.atleast_2d(c))
            proj = ra @ evec
            s_major = _robust_sigma(proj[:, 1])
            s_minor = max(_robust_sigma(proj[:, 0]), 1e-9)
            ratio_v[k] = s_major / s_minor
    med_sig = float(np.nanmedian(sig_v)) if np.isfinite(sig_v).any() else np.nan
    med_ratio = float(np.nanmedian(ratio_v)) if np.isfinite(ratio_v).any() else np.nan
    found = {}
    free = usable & ok & ~excluded
    for k, v in enumerate(visits):
        cand = rows[k][free[rows[k]]]
        found[k] = (cand, doubled_outliers(loo_mas[cand], sig_mas[cand], known.get(int(v))))
    new = [k for k, (_, (frac, coh, _, disp, _)) in found.items()
           if int(visits[k]) not in known and frac >= DOUBLED_MIN_FRACTION
           and coh >= DOUBLED_MIN_COHERENCE and disp.any()]
    if new:
        new = [max(new, key=lambda k: found[k][1][0] * found[k][1][1])]
    for k, v in enumerate(visits):
        r = rows[k]
        n = len(r)
        cand, (frac, coh, pa, disp, shift) = found[k]
        n_used = int(active[r].sum())
        clipped = float((usable[r] & ~active[r] & ~excluded[r]).sum() / max(n, 1))
        flag, note = "ok", ""
        if k in new or int(v) in known:
            new_excl[cand[disp]] = True
        gone = r[(excluded[r] | new_excl[r]) & ok[r]]
        excl_frac = float(len(gone) / max(n, 1))
        if excl_frac > 0 or int(v) in known:
            # the displaced images' direction and size, from all of them
            rg = loo_mas[gone]
            if len(rg):
                mean = rg.mean(axis=0)
                pa = float(np.degrees(np.arctan2(mean[0], mean[1])) % 360.0)
                shift = float(np.median(np.hypot(rg[:, 0], rg[:, 1])))
            flag = "doubled"
            note = (f"{100 * excl_frac:.0f}% of its detections displaced by a median "
                    f"{shift:.0f} mas towards PA {pa:.0f} deg: excluded")
            if 1.0 - excl_frac < EXCLUDE_BELOW:
                flag = "excluded"
                note += "; too little is left to fit the visit"
        elif np.isfinite(ratio_v[k]) and ratio_v[k] > TRAIL_AXIS_RATIO \
                and ratio_v[k] > 1.5 * med_ratio:
            flag = "trailed"
            note = f"residuals elongated {ratio_v[k]:.2f}:1 (median visit {med_ratio:.2f}:1)"
        elif np.isfinite(sig_v[k]) and sig_v[k] > NOISY_FACTOR * med_sig:
            flag = "noisy"
            note = f"robust residual {sig_v[k]:.1f} mas per axis (median visit {med_sig:.1f})"
        out.append(VisitQuality(
            visit=int(v), n_detections=n, n_used=n_used, clipped_fraction=clipped,
            sigma_mas=float(sig_v[k]) if np.isfinite(sig_v[k]) else float("nan"),
            axis_ratio=float(ratio_v[k]) if np.isfinite(ratio_v[k]) else float("nan"),
            error_scale=float(errors.scale[k]) if errors is not None else 1.0,
            outlier_fraction=frac, coherence=coh, shift_direction_deg=pa, shift_mas=shift,
            excluded_fraction=excl_frac, flag=flag, note=note))
    return out, new_excl
