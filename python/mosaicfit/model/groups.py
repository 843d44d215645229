"""Elements of arrays grouped by a key (a CCD, a visit, an exposure): the index arrays of each
group from one sort, for loops over groups of 10^5-10^6 detections."""
import numpy as np

__all__ = ["index_groups"]


def index_groups(keys):
    """(key, indices) for each distinct value of `keys` (an integer array), in increasing key
    order, the indices ascending: one sort instead of a mask over every element per key
    (O(n log n), not O(n x keys): 10^4 CCDs x 5 10^5 detections was 5 s of a 100-visit fit)."""
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]) if len(ks) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(ks)]
    return [(ks[a], order[a:b]) for a, b in zip(starts, ends)]
