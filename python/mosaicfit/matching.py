"""Positional matching with the C++ kd-tree (mosaicfit._core).

Sky positions are matched as unit vectors, where the chord length 2 sin(theta/2) is monotonic
in the angle theta, so a radius in arcsec converts exactly.
"""
import numpy as np

from . import _core

ARCSEC = np.pi / (180.0 * 3600.0)


def radec_to_xyz(ra_deg, dec_deg):
    """Unit vectors (n, 3) for RA, Dec in degrees."""
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def _chord(radius_arcsec):
    return 2.0 * np.sin(0.5 * radius_arcsec * ARCSEC)


def _angle_arcsec(chord):
    return 2.0 * np.arcsin(np.clip(0.5 * np.asarray(chord), 0.0, 1.0)) / ARCSEC


def _points(a, name):
    a = np.ascontiguousarray(a, dtype=float)
    if a.ndim != 2 or a.shape[1] not in (2, 3):
        raise ValueError(f"{name} must have shape (n, 2) or (n, 3), not {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return a


def pairs_within(tree_points, query_points, radius):
    """All pairs closer than `radius` (same units as the points).

    Returns (i_query, i_tree), sorted by query then tree index.
    """
    return _core.pairs_within(_points(tree_points, "tree_points"),
                              _points(query_points, "query_points"), float(radius))


def nearest(tree_points, query_points, radius):
    """For each query point, the index of the nearest tree point within `radius` (-1 if none)
    and its distance (NaN if none)."""
    return _core.nearest(_points(tree_points, "tree_points"),
                         _points(query_points, "query_points"), float(radius))


def friends_of_friends(points, radius):
    """Group labels (0..ngroups-1) linking points closer than `radius`, transitively."""
    return _core.friends_of_friends(_points(points, "points"), float(radius))


def match_sky(ra1, dec1, ra2, dec2, radius_arcsec):
    """Nearest neighbour in catalogue 2 of each source of catalogue 1 within `radius_arcsec`.

    Returns (index into 2 or -1, separation in arcsec or NaN).
    """
    idx, chord = nearest(radec_to_xyz(ra2, dec2), radec_to_xyz(ra1, dec1), _chord(radius_arcsec))
    return idx, np.where(idx >= 0, _angle_arcsec(np.nan_to_num(chord)), np.nan)


def group_sky(ra, dec, radius_arcsec):
    """Friends-of-friends groups of sky positions linked within `radius_arcsec`."""
    return friends_of_friends(radec_to_xyz(ra, dec), _chord(radius_arcsec))


# ------------------------------------------------------------------------------------------
# Star selection and cross-identification for the mosaic fit
# ------------------------------------------------------------------------------------------
def select_stars(cat, width, height, cell_size=512, n_per_cell=5, n_brightest=0,
                 include_saturated=False, min_snr=5.0):
    """Indices of the detections of one CCD used by the fit, as meas_mosaic's SourceReader:
    point sources (PSF stars, or extendedness < 0.5), not saturated, finite and unflagged,
    at most `n_per_cell` brightest per `cell_size` pixel cell (and `n_brightest` overall).

    `cat` is a standardized catalogue (mosaicfit.catalog.standardize).
    """
    x, y = cat["x"], cat["y"]
    flux, ferr = cat["flux"], cat["flux_err"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & np.isfinite(ferr)
              & (flux > 0) & (ferr > 0) & (flux / ferr >= min_snr)
              & (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5))
        ok &= ~cat["centroid_flag"] & ~cat["flux_flag"]
        if not include_saturated:
            ok &= ~cat["saturated"] & ~cat["saturated_center"]
        ext = cat["extendedness"]
        ok &= cat["psf_used"] | (np.nan_to_num(ext, nan=1.0) < 0.5)
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        return idx
    ncx = int(np.ceil(width / cell_size))
    cell = (np.clip(np.floor(x[idx] + 0.5), 0, width - 1) // cell_size).astype(np.int64) + ncx * (
        np.clip(np.floor(y[idx] + 0.5), 0, height - 1) // cell_size).astype(np.int64)
    order = np.lexsort((-flux[idx], cell))
    c = cell[order]
    start = np.r_[0, np.nonzero(np.diff(c))[0] + 1]
    rank = np.arange(len(c)) - np.repeat(start, np.diff(np.r_[start, len(c)]))
    keep = idx[order[rank < n_per_cell]]
    if n_brightest > 0 and len(keep) > n_brightest:
        keep = keep[np.argsort(-flux[keep])[:n_brightest]]
    return np.sort(keep)


def cross_match(ra_deg, dec_deg, visit, radius_arcsec, min_visits=2):
    """Stars from detections of several visits: friends-of-friends within `radius_arcsec`.

    Groups holding two detections of the same visit are ambiguous (two stars closer than the
    radius, or a chain through a neighbour) and are dropped. Returns (star index per
    detection, -1 if unused; number of stars; number of ambiguous groups dropped). Groups of
    fewer than `min_visits` detections get -1 (the caller may still keep singles that match
    the reference catalogue: see :func:`match_reference`).
    """
    n = len(ra_deg)
    if n == 0:
        return np.full(0, -1, np.int64), 0, 0
    label = group_sky(ra_deg, dec_deg, radius_arcsec)
    visit = np.asarray(visit)
    order = np.lexsort((visit, label))
    lab, vis = label[order], visit[order]
    dup_group = np.unique(lab[1:][(lab[1:] == lab[:-1]) & (vis[1:] == vis[:-1])])
    size = np.bincount(label)
    bad = np.zeros(len(size), bool)
    bad[dup_group] = True
    good = ~bad & (size >= min_visits)
    new_id = np.full(len(size), -1, np.int64)
    new_id[good] = np.arange(good.sum())
    return new_id[label], int(good.sum()), int(len(dup_group))


def match_reference(star_ra, star_dec, ref_ra, ref_dec, radius_arcsec):
    """Nearest reference object of each star within `radius_arcsec`, one star per reference
    (the nearer wins). Returns the reference index per star (-1 if none)."""
    if len(star_ra) == 0 or len(ref_ra) == 0:
        return np.full(len(star_ra), -1, np.int64)
    idx, sep = match_sky(star_ra, star_dec, ref_ra, ref_dec, radius_arcsec)
    m = np.nonzero(idx >= 0)[0]
    order = m[np.lexsort((sep[m], idx[m]))]
    first = np.r_[True, idx[order][1:] != idx[order][:-1]]
    out = np.full(len(star_ra), -1, np.int64)
    out[order[first]] = idx[order[first]]
    return out
