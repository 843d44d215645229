"""The transparency of each visit: a Gaussian process on the photometric residuals.

A cloud's edge across an exposure dims one side of the field by up to tenths of a magnitude
over a few arcminutes: far finer than the visit's flux polynomial (order 7 over 1.5 deg)
follows, and not a property of any CCD. After the polynomial fit the residuals of such a visit
are correlated over arcminutes (the 30-visit failure of issue 14; the simulator's ``clouds``);
those of a clear visit are not. As for the turbulence (:mod:`mosaicfit.fit.turbulence`, whose
kernel, correlation function and tiled prediction this module uses), each visit's field is
the posterior mean of a Gaussian process:

* kernel: von Kármán, sigma^2 g(r / l), a smooth field with the residuals' own correlation
  length (clouds have no single scale; the kernel is the family the astrometry already fits);
* hyper-parameters from the residuals' correlation function xi(r) = <r_i r_j> below R_FIT,
  the field kept only where its amplitude is significant at MIN_SIGNIFICANCE against the
  noise of uncorrelated residuals (a pair's product has variance s^4): a clear visit has none;
* noise: each detection's variance from the fit's error model (its Huber weight included);
* prediction on a grid of focal-plane pixels (STEP_ARCSEC), with the posterior variance, which
  the products' uncertainties carry.

The field is a known term of the next photometric solve, its visit polynomial and the stars
re-fitted with it, then the field re-estimated from what is left (backfitting, at most
MAX_ROUNDS times or until they move by less than TOL_MAG rms).
"""
import math

import numpy as np

from ..model.photometry import TransparencyField
from .turbulence import correlation_function, fit_kernel, predict_nodes

__all__ = ["visit_transparency", "R_FIT_ARCSEC", "STEP_ARCSEC", "MIN_SIGNIFICANCE",
           "MAX_ROUNDS", "TOL_MAG"]

#: arcsec: pairs up to this separation measure the kernel (the polynomial takes out larger
#: scales). On the every-effect tract's cloudy visit, one field from its residuals without a
#: refit: 10' left its products 1.76 mmag from the truth, 20' 1.44, 40' 1.46
R_FIT_ARCSEC = 1200.0
#: arcsec: grid step of the fields (the kernel lengths are arcminutes)
STEP_ARCSEC = 60.0
#: a field where its kernel's amplitude is this many sigma from uncorrelated residuals
MIN_SIGNIFICANCE = 5.0
#: backfitting rounds at most, and the change of the fields (mag, rms over their visits'
#: detections) below which they have converged
MAX_ROUNDS = 4
TOL_MAG = 1e-4
#: fewest detections of a visit to measure a correlation function
MIN_POINTS = 200


def visit_transparency(uv, target, noise_var, px_arcsec):
    """The transparency field of one visit from `target` (n,) mag at focal-plane positions
    `uv` (n, 2) px with noise variances `noise_var` (mag^2), `px_arcsec` arcsec per
    focal-plane pixel: (TransparencyField or None, variance grid or None, info dict with
    sigma_mmag, length_arcmin, significance, or why not)."""
    info = dict(n=int(len(uv)))
    if len(uv) < MIN_POINTS:
        info["why"] = f"{len(uv)} detections (< {MIN_POINTS})"
        return None, None, info
    xy = np.ascontiguousarray(uv, float) * px_arcsec               # arcsec
    t = np.asarray(target, float)[:, None]
    r, xi, npairs = correlation_function(xy, t, R_FIT_ARCSEC, r_min=R_FIT_ARCSEC / 60.0)
    s2 = float(np.mean(t ** 2))
    # fit_kernel models xi = 2 a g (two components); one component: sigma^2 = 2 a, and the
    # amplitude's noise from pairs of variance s^4
    a, length, signif = fit_kernel(r, xi, npairs, pair_var=s2 ** 2)
    sigma2 = 2.0 * a
    info.update(sigma_mmag=1000.0 * math.sqrt(max(sigma2, 0.0)),
                length_arcmin=length / 60.0 if np.isfinite(length) else float("nan"),
                significance=signif)
    if not (sigma2 > 0 and signif >= MIN_SIGNIFICANCE):
        info["why"] = f"no significant correlated residual ({signif:.1f} sigma)"
        return None, None, info
    (x0, y0), mean, var = predict_nodes(xy, t, np.asarray(noise_var, float), sigma2, length,
                                        STEP_ARCSEC, variance=True)
    field = TransparencyField(x0 / px_arcsec, y0 / px_arcsec, STEP_ARCSEC / px_arcsec, mean[0],
                              dict(sigma=info["sigma_mmag"], lenarcm=info["length_arcmin"],
                                   signif=signif))
    return field, var, info
