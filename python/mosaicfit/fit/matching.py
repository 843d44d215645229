"""Positional matching with the C++ kd-tree (mosaicfit._core, cpp/kdtree.hpp).

Sky positions are matched as unit vectors, where the chord length 2 sin(theta/2) is monotonic
in the angle theta, so a radius in arcsec converts exactly. scipy's cKDTree and astropy's
matching are the alternatives users know: the benchmark (bench/run.py, matching) measures
ours against both on the same points, and this one is kept because it is as fast or faster
for the nearest neighbours and pairs and runs with the GIL released.
"""
import numpy as np

from .. import _core
from ..model.sky import radec_to_xyz
from ..units import ARCSEC_RAD

__all__ = ["pairs_within", "nearest", "friends_of_friends", "match_sky", "group_sky"]


def _chord(radius_arcsec):
    return 2.0 * np.sin(0.5 * radius_arcsec * ARCSEC_RAD)


def _angle_arcsec(chord):
    return 2.0 * np.arcsin(np.clip(0.5 * np.asarray(chord), 0.0, 1.0)) / ARCSEC_RAD


def _points(a, name):
    a = np.ascontiguousarray(a, dtype=float)
    if a.ndim != 2 or a.shape[1] not in (2, 3):
        raise ValueError(f"{name} must have shape (n, 2) or (n, 3), not {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return a


def _tree_and_query(tree_points, query_points):
    t, q = _points(tree_points, "tree_points"), _points(query_points, "query_points")
    if t.shape[1] != q.shape[1]:
        raise ValueError(f"tree_points and query_points differ in dimension: {t.shape[1]} and "
                         f"{q.shape[1]}")
    return t, q


def pairs_within(tree_points, query_points, radius):
    """All pairs closer than `radius` (same units as the points).

    Returns (i_query, i_tree), sorted by query then tree index.
    """
    return _core.pairs_within(*_tree_and_query(tree_points, query_points), float(radius))


def nearest(tree_points, query_points, radius):
    """For each query point, the index of the nearest tree point within `radius` (-1 if none)
    and its distance (NaN if none)."""
    return _core.nearest(*_tree_and_query(tree_points, query_points), float(radius))


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


