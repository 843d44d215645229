"""The C++ kd-tree against brute force."""
import numpy as np
import pytest

import mosaicfit.fit.matching as matching


@pytest.mark.parametrize("dim", [2, 3])
def test_pairs_and_nearest_match_brute_force(dim):
    rng = np.random.default_rng(dim)
    tree = rng.uniform(0, 1, (3000, dim))
    query = rng.uniform(0, 1, (500, dim))
    r = 0.03
    d = np.sqrt(((query[:, None, :] - tree[None, :, :]) ** 2).sum(-1))
    iq, it = matching.pairs_within(tree, query, r)
    bq, bt = np.nonzero(d <= r)
    assert np.array_equal(iq, bq) and np.array_equal(it, bt)
    idx, dist = matching.nearest(tree, query, r)
    has = d.min(1) <= r
    assert np.array_equal(idx[has], d.argmin(1)[has]) and np.all(idx[~has] == -1)
    assert np.allclose(dist[has], d.min(1)[has]) and np.all(np.isnan(dist[~has]))


def test_friends_of_friends_links_transitively():
    pts = np.array([[0.0, 0.0], [0.9, 0.0], [1.8, 0.0], [5.0, 5.0], [5.5, 5.0], [9.0, 9.0]])
    lab = matching.friends_of_friends(pts, 1.0)
    assert list(lab) == [0, 0, 0, 1, 1, 2]


def test_fof_matches_scipy_components():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    rng = np.random.default_rng(7)
    pts = rng.uniform(0, 1, (4000, 2))
    lab = matching.friends_of_friends(pts, 0.01)
    iq, it = matching.pairs_within(pts, pts, 0.01)
    n, ref = connected_components(coo_matrix((np.ones(len(iq)), (iq, it)), shape=(4000, 4000)))
    assert lab.max() + 1 == n
    # same partition: labels map one-to-one
    assert len(set(zip(lab, ref))) == n


def test_sky_match_separations():
    ra = np.array([10.0, 10.0, 200.0])
    dec = np.array([0.0, 89.9, -30.0])
    # partners 0.5" away in Dec, and one 3" away
    ra2, dec2 = ra.copy(), dec + np.array([0.5, 0.5, 3.0]) / 3600
    idx, sep = matching.match_sky(ra, dec, ra2, dec2, 1.0)
    assert list(idx) == [0, 1, -1]
    assert np.allclose(sep[:2], 0.5, atol=1e-6) and np.isnan(sep[2])


def test_bad_points_rejected():
    with pytest.raises(ValueError, match="NaN"):
        matching.nearest(np.zeros((3, 2)), np.array([[np.nan, 0.0]]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        matching.friends_of_friends(np.zeros((3, 4)), 1.0)


def test_empty_inputs():
    idx, dist = matching.nearest(np.zeros((0, 3)), np.zeros((2, 3)), 1.0)
    assert list(idx) == [-1, -1]
    iq, it = matching.pairs_within(np.zeros((4, 2)), np.zeros((0, 2)), 1.0)
    assert len(iq) == 0 and len(it) == 0
    assert len(matching.friends_of_friends(np.zeros((0, 2)), 1.0)) == 0
