"""The error model, fitted from the residuals (as jointcal's positionErrorPedestal and gbdes's
systematicError): the errors the inputs claim are often off (real HSC centroid errors span
3-60 mas per star while a catalogue may give one value for all; the reference catalogue's own
errors can be a factor 2 too small), and a fit weighted by wrong errors lets faint stars weigh
like bright ones and clips at the wrong threshold.

The variance of a detection j of group g (a visit) is modelled as

    sigma_j^2 = s_g^2 sigma0_j^2 + f^2

with sigma0_j the error the inputs give, s_g a scale per group and f a floor shared by all
(the systematic part: seeing-dependent centroiding, charge diffusion, turbulence on small
scales). Each residual of a least-squares fit has a smaller variance than its measurement,
by the leverage h_j of its own parameters: for a star of detections with weights w_j and a
prior of weight pw, h_j = w_j / (sum_k w_k + pw) (the model parameters' share is negligible:
a few thousand against 1e5-1e6 observations). So E[|r_j|^2] = D (1 - h_j) sigma_j^2 with D
the dimensions, which is linear in (s_g^2, f^2): fitted by weighted least squares
(weights 1 / sigma_j^4, the variance of a chi2 variable, iterated).
"""
import numpy as np

__all__ = ["ErrorModel", "fit_error_model", "leverage", "reference_scale", "MAX_REFITS",
           "REF_SCALE_MIN", "repeated_only", "fit_reference_errors", "detection_offsets",
           "model_leverage"]

# refits of the error model per fit: the weights it gives move the solution, whose residuals
# give the next model; where the residuals are not what the model describes (correlated
# turbulence on a sparse tract) that loop can cycle (a 3-cycle of 2-3% in the scales was seen)
# instead of settling, so the model is frozen after this many refits (3-4 settle it otherwise)
MAX_REFITS = 6

# the reference errors' scale is fitted within [REF_SCALE_MIN, inf): a catalogue's errors with
# the configured floor added (refMagErrorFloor, refPosErrorFloor) can be too large as well as
# too small, and a one-visit solution's chi2 is then mostly theirs
REF_SCALE_MIN = 0.2


class ErrorModel:
    """Scales per group and a floor: sigma^2 = scale[g]^2 sigma0^2 + floor^2."""

    def __init__(self, scale, floor):
        self.scale = np.asarray(scale, float)
        self.floor = float(floor)

    def variance(self, sigma0_2, group):
        """Modelled variance scale[group]^2 sigma0_2 + floor^2.

        Parameters
        ----------
        sigma0_2 : array_like
            The variances the inputs give (squared units of the residuals, e.g. arcsec^2).
        group : array_like of int
            Group (visit index) of each value: indices into `scale`.
        """
        return self.scale[group] ** 2 * sigma0_2 + self.floor ** 2

    def __repr__(self):
        return (f"ErrorModel(scale {np.min(self.scale):.3g}..{np.max(self.scale):.3g}, "
                f"floor {self.floor:.3g})")


def leverage(w, star, active, nstar, prior_w=None):
    """h_j = w_j / (sum of the active weights of j's star + its prior weight)."""
    W = np.bincount(star[active], weights=w[active], minlength=nstar)
    if prior_w is not None:
        W = W + prior_w
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(W[star] > 0, w / W[star], 1.0)


def model_leverage(vidx, cidx, active, terms, ccd_terms):
    """The model parameters' share h of each detection's residual, per dimension: a visit's
    `terms[v]` polynomial coefficients spread over its active detections and `ccd_terms`
    (per dimension) over those of each CCD. Negligible on a full tract (a few thousand
    parameters against 1e5-1e6 detections), it is 10-20% of a small run's observations, whose
    errors would otherwise be fitted that much too small (chi2/ndof 1.1-1.15)."""
    nv = np.bincount(vidx[active], minlength=len(terms))
    nc = np.bincount(cidx[active], minlength=int(cidx.max()) + 1 if len(cidx) else 0)
    return np.asarray(terms, float)[vidx] / np.maximum(nv[vidx], 1) \
        + ccd_terms / np.maximum(nc[cidx], 1)


def repeated_only(h, star, active, nstar):
    """The leverages `h` with those of stars with fewer than two active detections set to 1
    (left out of the error model): a star seen once with a reference value measures the sum
    of the detection's and the catalogue's variances, not the detection's."""
    n_on = np.bincount(star[active], minlength=nstar)
    return np.where(n_on[star] >= 2, h, 1.0)


def fit_error_model(r2, sigma0_2, h, group, ngroup, dims, floor=True, iterations=4, extra=None):
    """The ErrorModel of residuals with squared norms `r2` (over `dims` dimensions), input
    variances `sigma0_2` and leverages `h`, detections of `group` (0..ngroup-1). Groups
    without residuals keep a scale of 1; with floor=False only the scales are fitted.
    `extra`: a known variance per detection in the residuals besides the errors (the
    turbulence's, fit.turbulence), taken out first."""
    keep = (h < 0.999) & np.isfinite(r2) & (sigma0_2 > 0)
    y = r2[keep] / (dims * (1.0 - h[keep]))
    ex = 0.0
    if extra is not None:
        ex = extra[keep]
        y = y - ex
    s2, g = sigma0_2[keep], group[keep]
    n_g = np.bincount(g, minlength=ngroup)
    scale2 = np.ones(ngroup)
    f2 = 0.0
    if len(y) == 0:
        return ErrorModel(np.sqrt(scale2), 0.0)
    # starting point: per-group scales without floor
    num = np.bincount(g, weights=y / s2, minlength=ngroup)
    scale2 = np.where(n_g > 0, num / np.maximum(n_g, 1), 1.0)
    for _ in range(iterations):
        var = np.maximum(scale2[g] * s2 + f2, 0.0) + ex
        wt = 1.0 / var ** 2
        if floor:
            # normal equations of y ~ a_g s2 + b, unknowns (a_0..a_G-1, b)
            A_gg = np.bincount(g, weights=wt * s2 * s2, minlength=ngroup)
            A_gb = np.bincount(g, weights=wt * s2, minlength=ngroup)
            A_bb = float(np.sum(wt))
            r_g = np.bincount(g, weights=wt * s2 * y, minlength=ngroup)
            r_b = float(np.sum(wt * y))
            # eliminate the a_g (diagonal) to solve for b
            ok = A_gg > 0
            denom = A_bb - np.sum(A_gb[ok] ** 2 / A_gg[ok])
            b = (r_b - np.sum(A_gb[ok] * r_g[ok] / A_gg[ok])) / denom if denom > 0 else 0.0
            b = max(b, 0.0)
            a = np.where(ok, (r_g - A_gb * b) / np.where(ok, A_gg, 1.0), 1.0)
            if np.any(a[ok] <= 0):           # a floor larger than a group's scatter: no floor
                b = 0.0
                a = np.where(ok, r_g / np.where(ok, A_gg, 1.0), 1.0)
            scale2, f2 = np.maximum(a, 1e-6), b
        else:
            A_gg = np.bincount(g, weights=wt * s2 * s2, minlength=ngroup)
            r_g = np.bincount(g, weights=wt * s2 * y, minlength=ngroup)
            scale2 = np.where(A_gg > 0, r_g / np.where(A_gg > 0, A_gg, 1.0), 1.0)
            scale2 = np.maximum(scale2, 1e-6)
    return ErrorModel(np.sqrt(scale2), np.sqrt(f2))


def detection_offsets(xstar, prior, resid, w, star, act, nstar, h=None):
    """The offsets of the stars' detections, averaged (weights `w`, detections `act`), from
    their reference values: (d2, var, ok, hbar) per star, d2 the squared norm of the offset,
    var the variance per dimension of the detections' mean (1 / their summed weight), ok
    where both exist, hbar the mean of the detections' model leverages `h`
    (:func:`model_leverage`; 0 without): the share of the offset the model absorbs, which
    on a single visit's CCDs of a dozen stars is a third of it.

    Unlike the fitted star position, which the reference pulls towards itself by the weight
    it is given, this mean does not depend on the reference's weight: its scatter about the
    reference measures the catalogue's errors in one step, not by a fixed-point iteration on
    that weight (which converges by ~1 % a refit and stopped wherever its last refit left
    it)."""
    xstar = np.asarray(xstar, float).reshape(nstar, -1)
    prior = np.asarray(prior, float).reshape(nstar, -1)
    resid = np.asarray(resid, float).reshape(len(star), -1)
    W = np.bincount(star[act], weights=w[act], minlength=nstar)
    mean = np.stack([np.bincount(star[act], weights=w[act] * resid[act, k], minlength=nstar)
                     for k in range(resid.shape[1])], axis=1)
    ok = (W > 0) & np.all(np.isfinite(xstar), axis=1) & np.all(np.isfinite(prior), axis=1)
    Ws = np.where(ok, W, 1.0)
    d = xstar + mean / Ws[:, None] - prior
    hbar = np.zeros(nstar) if h is None else \
        np.bincount(star[act], weights=w[act] * h[act], minlength=nstar) / Ws
    return np.where(ok, np.sum(d * d, axis=1), np.nan), 1.0 / Ws, ok, np.minimum(hbar, 0.99)


def fit_reference_errors(d2, cat_var, var_det, dims, h=None):
    """The ErrorModel (one group: scale and floor) of the reference values: `d2` the squared
    norms of the offsets of the stars' detections (averaged) from them, `var_det` the
    variance of that average per dimension and `h` the model's share of it
    (:func:`detection_offsets`), `cat_var` the variances the catalogue gives (without any
    floor). The floor follows the offsets instead of being configured: refPosErrorFloor and
    refMagErrorFloor are its starting point only. None with fewer than 10 stars."""
    keep = np.isfinite(d2) & (cat_var > 0) & np.isfinite(var_det)
    if keep.sum() < 10:
        return None
    h = np.zeros(len(d2)) if h is None else np.asarray(h, float)
    return fit_error_model(d2[keep], cat_var[keep], h[keep], np.zeros(int(keep.sum()), int), 1,
                           dims, extra=var_det[keep])


def reference_scale(d2, sigma_2, h, dims):
    """The factor by which the reference catalogue's errors (variances `sigma_2`) must be
    scaled for the offsets of the fitted stars from it (squared norms `d2`, leverages `h`
    of the priors) to be as large as they are: sqrt of the weighted mean of
    d2 / (dims (1 - h) sigma^2)."""
    keep = (h < 0.999) & np.isfinite(d2) & (sigma_2 > 0)
    if keep.sum() < 10:
        return 1.0
    z = d2[keep] / (dims * (1.0 - h[keep]) * sigma_2[keep])
    return float(np.sqrt(np.mean(z)))
