"""Outliers: worst-first clipping per star with an annealed threshold, the convergence test
that stops it at the Gaussian noise level, and stars inconsistent with a constant source.

Both fits use the same rules; the chi2 values are per detection, in units of its error, with
`dims` dimensions (2 for positions, 1 for magnitudes).
"""
from math import erfc, exp, sqrt

import numpy as np

__all__ = ["ANNEALING", "clip_worst", "clip_threshold", "chi2_quantile", "inconsistent_stars",
           "chance_clips", "update_active"]


def clip_worst(chi, star, active, threshold):
    """Deactivate, for each star, its worst active detection if it is beyond `threshold`."""
    cand = np.nonzero(active & (chi > threshold))[0]
    if len(cand) == 0:
        return 0
    order = cand[np.lexsort((-chi[cand], star[cand]))]
    first = np.r_[True, star[order][1:] != star[order][:-1]]
    active[order[first]] = False
    return int(first.sum())


# the clipping thresholds of the first iterations (in sigma; none at the first)
ANNEALING = (np.inf, 50.0, 20.0, 10.0)


def clip_threshold(it, clip_sigma):
    """Clipping threshold (in sigma) at iteration `it` (0-based; none at 0). A few gross
    mismatches (wrong cross-identifications, ~1") bias the first solution by several mas near
    them, which would make good bright detections look like 5-sigma outliers: the threshold
    starts wide and comes down to `clip_sigma` as the solution cleans up."""
    return max(clip_sigma, ANNEALING[it]) if it < len(ANNEALING) else clip_sigma


def chi2_quantile(dof, z):
    """Upper quantile of chi2 with `dof` degrees of freedom at normal deviate z
    (Wilson-Hilferty; good to a few per cent for dof >= 1)."""
    k = np.maximum(np.asarray(dof, float), 1e-9)
    return k * (1.0 - 2.0 / (9.0 * k) + z * np.sqrt(2.0 / (9.0 * k))) ** 3


def inconsistent_stars(chi, star, active, nstar, has_prior, dims, z=3.72):
    """Stars whose active detections are inconsistent with a constant source (variables,
    galaxies whose PSF flux follows the seeing, moving stars): their summed chi2 is beyond the
    1e-4 upper quantile (z = 3.72) of chi2 with (detections - 1) x dims degrees of freedom
    (x dims when a reference value ties the star)."""
    csum = np.bincount(star[active], weights=chi[active], minlength=nstar)
    n = np.bincount(star[active], minlength=nstar)
    dof = (n - (~has_prior).astype(int)) * dims
    bad = (dof >= 2) & (csum > chi2_quantile(dof, z))
    return np.nonzero(bad)[0]


def chance_clips(n_active, thr, dims):
    """How many clips of one iteration pure Gaussian noise explains: the expected number of
    the n_active detections beyond `thr` sigma (chi2 with `dims` degrees of freedom), plus
    two Poisson sigmas and one. Worst-first clipping at 5 sigma of 5e5 detections finds ~2
    such by chance in every iteration, and would otherwise never stop."""
    if not np.isfinite(thr):
        return 0
    p = exp(-thr * thr / 2.0) if dims == 2 else erfc(thr / sqrt(2.0))
    expected = n_active * p
    return int(expected + 2.0 * sqrt(expected) + 1.0)


def update_active(chi, star, active, usable, it, clip_sigma, returned=None):
    """Clip the worst detection per star beyond this iteration's threshold and reinstate
    clipped detections that now fit well (0.8 of the threshold). Returns (clipped,
    reinstated, threshold).

    `returned` (bool per detection, updated) marks the detections reinstated once: they are
    not reinstated again. Without it a few detections whose clipping moves the solution
    enough to make them fit (bright stars on a sparse CCD, whose placement they pull) flip
    in and out forever, and the solution with them (a 2-cycle seen on turbulent tracts)."""
    thr = clip_threshold(it, clip_sigma)
    if not np.isfinite(thr):
        return 0, 0, thr
    back = usable & ~active & (chi < (0.8 * thr) ** 2)
    if returned is not None:
        back &= ~returned
        returned |= back
    active |= back
    return clip_worst(chi, star, active, thr ** 2), int(back.sum()), thr
