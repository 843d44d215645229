"""Association: detections of different visits into stars (cross-identification) and stars
to reference objects, by position or from the associations hscPipe's match files record.
"""
import numpy as np

from ..model.groups import index_groups
from .matching import group_sky, match_sky

__all__ = ["cross_match", "match_reference", "associated_references"]


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


def associated_references(exposures, det, star, nstar):
    """Reference row of each star from associations made outside the fit: the catalogues'
    ``ref_index`` arrays (reference row per source, -1 if none; set from hscPipe's match files
    by mosaicfit.pipeline.references), or None when no exposure carries one. A star takes the reference
    most of its detections name; a reference goes to the star with most detections naming it.
    """
    if not any("ref_index" in e.catalog for e in exposures):
        return None
    ref_det = np.full(len(det), -1, np.int64)
    for k, m in index_groups(det.exp):
        cat = exposures[k].catalog
        ri = cat.get("ref_index")
        if ri is None:
            continue
        rows = np.nonzero(np.asarray(ri) >= 0)[0]
        if not len(rows) or not len(m):
            continue
        # the selected detections are rows of the catalogue: found by their pixel position,
        # which the selection copied exactly
        cx, cy = np.asarray(cat["x"], float)[rows], np.asarray(cat["y"], float)[rows]
        order = np.argsort(cx, kind="stable")
        pos = np.clip(np.searchsorted(cx[order], det.x[m]), 0, len(rows) - 1)
        r = order[pos]
        hit = (cx[r] == det.x[m]) & (cy[r] == det.y[m])
        ref_det[m[hit]] = np.asarray(ri)[rows[r[hit]]]
    out = np.full(nstar, -1, np.int64)
    sel = ref_det >= 0
    if not sel.any():
        return out
    pairs, votes = np.unique(np.stack([star[sel], ref_det[sel]], axis=1), axis=0,
                             return_counts=True)
    # per star the most named reference, then per reference the star naming it most
    o = np.lexsort((-votes, pairs[:, 0]))
    first = np.r_[True, pairs[o, 0][1:] != pairs[o, 0][:-1]]
    pairs, votes = pairs[o][first], votes[o][first]
    o = np.lexsort((-votes, pairs[:, 1]))
    first = np.r_[True, pairs[o, 1][1:] != pairs[o, 1][:-1]]
    best = pairs[o][first]
    out[best[:, 0]] = best[:, 1]
    return out
