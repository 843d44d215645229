"""fit.transparency on synthetic residuals: a cloud's edge is found and recovered to what the
noise allows; uncorrelated noise gives no field."""
import numpy as np

from mosaicfit.fit.transparency import MIN_SIGNIFICANCE, visit_transparency
from mosaicfit.model.photometry import TransparencyField

PX = 0.168                      # arcsec per focal-plane pixel (HSC)
R = 0.7 * 3600 / PX             # a field of 0.7 deg radius, in pixels


def _points(rng, n):
    r = R * np.sqrt(rng.uniform(0, 1, n))
    t = rng.uniform(0, 2 * np.pi, n)
    return np.column_stack([r * np.cos(t), r * np.sin(t)])


def _edge(uv, depth=0.05, width_arcmin=4.0):
    """A cloud's edge: `depth` mag of extinction beyond a line, a logistic ramp across it."""
    d = (uv[:, 0] * 0.8 + uv[:, 1] * 0.6) * PX / 60.0          # arcmin along the normal
    return depth / (1.0 + np.exp(-(d - 10.0) / width_arcmin))


def test_uncorrelated_noise_gives_no_field():
    rng = np.random.default_rng(3)
    uv = _points(rng, 4000)
    sig = 0.01
    f, var, info = visit_transparency(uv, rng.normal(0, sig, len(uv)), np.full(len(uv), sig ** 2),
                                      PX)
    assert f is None and var is None
    assert info["significance"] < MIN_SIGNIFICANCE and "no significant" in info["why"]


def test_a_cloud_edge_is_recovered_to_the_noise():
    """4000 detections of 10 mmag over the field, an edge of 50 mmag: the field recovers the
    edge (its mean removed, which the visit's zero point takes) to a few mmag, and its posterior
    variance says so; far from the data the variance is the kernel's."""
    rng = np.random.default_rng(4)
    uv = _points(rng, 4000)
    sig = 0.01
    truth = _edge(uv)
    target = truth - truth.mean() + rng.normal(0, sig, len(uv))
    f, var, info = visit_transparency(uv, target, np.full(len(uv), sig ** 2), PX)
    assert isinstance(f, TransparencyField)
    assert info["significance"] >= MIN_SIGNIFICANCE
    q = _points(np.random.default_rng(5), 2000) * 0.9                 # inside the data
    est = f(q[:, 0], q[:, 1])
    t = _edge(q) - truth.mean()
    err = est - t
    err -= err.mean()
    assert np.sqrt(np.mean(err ** 2)) < 0.25 * np.std(t), (np.sqrt(np.mean(err ** 2)), np.std(t))
    # the posterior variance: below the prior where the stars are, and of the size of the error
    vf = TransparencyField(f.x0, f.y0, f.step, var)
    v_in = vf(q[:, 0], q[:, 1])
    sigma2 = (info["sigma_mmag"] / 1000.0) ** 2
    assert np.all(v_in < sigma2)
    assert 0.3 < np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(v_in)) < 3.0
