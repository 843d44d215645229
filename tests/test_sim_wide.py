"""The simulator's HSC-SSP-Wide-like layout (issue 16): a strip of pointings over several
tracts, each position seen by ~5-10 visits, with its truth; the mosaic fit of the strip is as
accurate against that truth as on a deep field."""
import json

import numpy as np
import pytest

from mosaicfit import MosaicError, cli
from mosaicfit.config import MosaicConfig
from mosaicfit.fit.solve import solve
from mosaicfit.io.skymap import RingsSkyMap
from mosaicfit.model.camera import hsc
from mosaicfit.model.sip import sip_pixel_to_sky
from mosaicfit.model.sky import sky_to_tangent
from mosaicfit.sim import CLEAN, make_tract, positions_at
from mosaicfit.sim.sky import strip_to_sky
from test_mosaic import _errors, _exposures

STEP, WIDTH = 0.2, 0.3


@pytest.fixture(scope="module")
def strip():
    return make_tract(layout="wide", visits=10, seed=5, ra=150.3, dec=2.2,
                      wide_step_deg=STEP, wide_width_deg=WIDTH)


def test_pointings_form_a_strip(strip):
    t = strip.truth
    vis = [t.visits[v] for v in strip.visits]
    # each pointing in strip coordinates: along = k x step, across within the width (the
    # telescope's ~1" pointing error on top)
    lam = np.linspace(-4.5 * STEP, 4.5 * STEP, 10)
    for k, v in enumerate(vis):
        ra0, dec0 = strip_to_sky(lam[k], 0.0, 150.3, 2.2)
        xi, eta = sky_to_tangent(v["ra_commanded"], v["dec_commanded"], ra0, dec0)
        assert abs(np.degrees(xi)) < 1e-3 * STEP         # east-west: on its step
        assert abs(np.degrees(eta)) <= 0.5 * WIDTH + 1e-9  # across: within the width
        xi, eta = sky_to_tangent(v["ra"], v["dec"], v["ra_commanded"], v["dec_commanded"])
        assert np.degrees(np.hypot(xi, eta)) * 3600 < 6.0
    # the truth records the layout (truth/model.json)
    assert json.loads(t.to_json())["layout"] == dict(kind="wide", centre=[150.3, 2.2],
                                                     step_deg=STEP, width_deg=WIDTH)


def test_depth_and_tracts(strip):
    """Stars in the middle of the strip are seen by 5-10 visits; the strip crosses several
    tracts of the rings sky map."""
    d = strip.detections
    clean = np.asarray(d["outlier"]) == CLEAN
    tid, visit = np.asarray(d["truth_id"])[clean], np.asarray(d["visit"])[clean]
    pairs = np.unique(np.c_[tid, visit], axis=0)
    ids, nvis = np.unique(pairs[:, 0], return_counts=True)
    st = strip.stars
    row = {int(t): i for i, t in enumerate(np.asarray(st["truth_id"]))}
    ra = np.asarray(st["ra"])[[row[int(i)] for i in ids]]
    dec = np.asarray(st["dec"])[[row[int(i)] for i in ids]]
    mag = np.asarray(st["mag"])[[row[int(i)] for i in ids]]
    # the middle: 0.4 deg about the strip's centre along it, 0.15 deg across; stars well
    # above the detection limit (fainter ones drop out of the visits of poor seeing)
    xi, eta = sky_to_tangent(ra, dec, 150.3, 2.2)
    mid = (np.abs(np.degrees(xi)) < 0.4) & (np.abs(np.degrees(eta)) < 0.15) & (mag < 22.0)
    assert mid.sum() > 300
    lo, med, hi = np.percentile(nvis[mid], [10, 50, 90])
    assert 5 <= lo and hi <= 10 and 6 <= med <= 9, (lo, med, hi)
    cam = hsc()
    tracts = set()
    sm = RingsSkyMap()
    for (v, c), h in strip.wcs_headers.items():
        tracts |= {int(x) for x in sm.find_tracts_overlapping(*sip_pixel_to_sky(
            h, *cam.ccd_corners(c)))}
    assert len(tracts) >= 3, tracts


def test_truth_maps_the_detections_onto_their_stars(strip):
    """Without effects the true mapping takes the noise-free image positions onto the stars'
    positions at the visit's epoch exactly."""
    d, st, t = strip.detections, strip.stars, strip.truth
    row = {int(x): i for i, x in enumerate(np.asarray(st["truth_id"]))}
    v = strip.visits[4]
    m = (np.asarray(d["visit"]) == v) & (np.asarray(d["outlier"]) == CLEAN) \
        & (np.asarray(d["truth_id"]) > 0)
    n = 0
    for c in np.unique(np.asarray(d["ccd"])[m])[::10]:
        sub = d[m & (np.asarray(d["ccd"]) == c)]
        r = np.array([row[int(x)] for x in sub["truth_id"]])
        ra, dec = positions_at(st[r], t.visits[v]["mjd"])
        ra2, dec2 = t.pixel_to_sky(v, int(c), np.asarray(sub["x_true"]), np.asarray(sub["y_true"]))
        assert np.max(np.hypot((ra2 - ra) * np.cos(np.radians(dec)), dec2 - dec)) * 3.6e6 < 0.01
        n += len(sub)
    assert n > 100


def test_fit_of_the_strip_against_the_truth(strip):
    """One fit of the whole strip (one tangent plane about its centre): the products are as
    accurate as on the deep field (test_mosaic: 2 mas per axis, 3 mmag)."""
    sol = solve(_exposures(strip), hsc(), MosaicConfig(), strip.refcat)
    ex, ey, em, n = _errors(strip, sol, every=4)
    assert n > 3000
    assert ex <= 2.0 and ey <= 2.0, (ex, ey)
    assert em <= 3.0, em
    assert abs(sol.stats.astrometry.chi2_ndof - 1) < 0.10


def test_layout_is_checked(tmp_path, capsys):
    with pytest.raises(MosaicError, match="layout"):
        make_tract(layout="spiral", visits=1)
    with pytest.raises(MosaicError, match="wide-step"):
        make_tract(layout="wide", visits=2, wide_step_deg=0.0)
    assert cli.main(["simulate", str(tmp_path), "--layout", "wide", "--wide-step", "-1",
                     "--visits", "2", "--ccds", "50"]) == 1
    assert "wide-step" in capsys.readouterr().err
