"""fit.turbulence's faster pieces give the answers of the straightforward ones (issue 15)."""
import numpy as np
from scipy.spatial.distance import pdist

from mosaicfit.fit.turbulence import correlation_function


def test_correlation_function_equals_pair_listing():
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 3000, (1500, 2))
    xy[1] = xy[0]                                  # a repeated position: d = 0, in no bin
    res = rng.normal(0, 0.01, (1500, 2)) + 0.003 * np.sin(xy / 300.0)
    r, xi, n = correlation_function(xy, res, 600.0, r_min=10.0)
    # every pair i < j listed, binned edges[k] < d <= edges[k + 1]
    d = pdist(xy)
    i, j = np.triu_indices(len(xy), 1)
    edges = np.geomspace(10.0, 600.0, 17)
    k = np.searchsorted(edges, d) - 1
    ok = (k >= 0) & (k < 16)
    prod = np.sum(res[i[ok]] * res[j[ok]], axis=1)
    n_ref = np.bincount(k[ok], minlength=16)
    xi_ref = np.bincount(k[ok], weights=prod, minlength=16) / n_ref
    assert np.array_equal(n, n_ref)
    assert np.allclose(xi, xi_ref, rtol=1e-12, atol=1e-20)
    assert np.allclose(r, np.sqrt(edges[1:] * edges[:-1]))


def test_correlation_function_refuses_what_the_pair_binning_cannot_read():
    import pytest
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        correlation_function(rng.uniform(size=(50, 3)), rng.normal(size=(50, 2)), 0.5)
    with pytest.raises(ValueError, match="one residual row each"):
        correlation_function(rng.uniform(size=(50, 2)), rng.normal(size=(49, 2)), 0.5)
    with pytest.raises(ValueError, match="r_min < r_max"):
        correlation_function(rng.uniform(size=(50, 2)), rng.normal(size=(50, 2)), 0.5, r_min=1.0)
