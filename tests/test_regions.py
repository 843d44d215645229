"""Sky regions (issue 16, beyond one machine): a run split into HEALPix cells, each fitted
with a margin of neighbouring visits as one Dask task; its products agree with the one-fit
solution at the region borders, and each (visit, CCD) is written once."""
import glob
import os
import shutil
import sys

import numpy as np
import pytest

from mosaicfit import MosaicError, cli
from mosaicfit.config import MosaicConfig
from mosaicfit.fit.state import CcdTerms
from mosaicfit.io.wcsfile import read_wcs_header
from mosaicfit.model.camera import hsc
from mosaicfit.model.sip import SipModel
from mosaicfit.model.sky import radec_to_xyz
from mosaicfit.pipeline.regions import sky_regions
from mosaicfit.sim import Truth, simulate_repository

astropy_healpix = pytest.importorskip("astropy_healpix")
BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench")


def _centres(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return {1000 + 2 * k: (150.0 + rng.uniform(-4, 4), 2.0 + rng.uniform(-2, 2))
            for k in range(n)}


def test_each_visit_has_one_region_and_its_margin():
    c = _centres()
    import astropy.units as u
    hp = astropy_healpix.HEALPix(nside=16, order="nested")
    regions = sky_regions(c, 16, 1.5)
    owned = [v for r in regions for v in r.own]
    assert sorted(owned) == sorted(c)                  # every visit owned, once
    assert len(regions) >= 3
    xyz = {v: radec_to_xyz(*c[v]) for v in c}
    for r in regions:
        for v in r.own:                                # the cell of its centre
            assert int(hp.lonlat_to_healpix(c[v][0] * u.deg, c[v][1] * u.deg)) == r.pixel
        margin = set(r.fitted) - set(r.own)
        want = {w for w in c if w not in r.own and any(
            np.degrees(np.arccos(min(1.0, xyz[v] @ xyz[w]))) <= 1.5 for v in r.own)}
        assert margin == want
    # no overlap: each region fits its own visits only
    assert all(r.fitted == r.own for r in sky_regions(c, 16, 0.0))


def test_ccd_terms_consensus_is_the_weighted_mean():
    a = CcdTerms(placement={1: (1.0, 0.0, 0.0), 2: (0.0, 2.0, 1e-5)}, flux={"HSC-I": {1: 0.01}},
                 placement_weights={1: 100, 2: 50}, flux_weights={"HSC-I": {1: 100}})
    b = CcdTerms(placement={1: (4.0, 0.0, 0.0), 2: (9.0, 9.0, 9.0)}, flux={"HSC-I": {1: 0.04}},
                 placement_weights={1: 200, 2: 0}, flux_weights={"HSC-I": {1: 300}})
    c = CcdTerms.consensus([a, b])
    assert c.placement[1] == pytest.approx((3.0, 0.0, 0.0))
    assert c.placement[2] == pytest.approx((0.0, 2.0, 1e-5))      # weight 0 does not count
    assert c.flux["HSC-I"][1] == pytest.approx(0.0325)
    assert c.placement_weights[1] == 300


def test_region_config_is_checked():
    assert MosaicConfig().update(["regionNside=32"]).regionNside == 32
    with pytest.raises(MosaicError, match="regionNside"):
        MosaicConfig().update(["regionNside=12"])      # not a HEALPix nside


# a strip of 14 pointings 0.2 deg apart (the central 24 CCDs: 0.6 deg wide fields, each
# overlapping its 2-3 neighbours on each side) across the border of two HEALPix cells of
# nside 32 (1.8 deg) at RA 150.47
VISITS, NSIDE = 14, 32


def _central_ccds(n):
    cam = hsc()
    r = {c: np.hypot(*cam.pixel_to_focal_plane(c, 1023.5, 2087.5)) for c in cam.science_ccds}
    return tuple(sorted(sorted(r, key=r.get)[:n]))


@pytest.fixture(scope="module")
def strip(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("regions") / "repo")
    simulate_repository(root, "sim", jobs=2, visits=VISITS, layout="wide", seed=7, ra=150.5,
                        dec=2.2, ccds=_central_ccds(24))
    assert cli.main(["make-skymap", root, "--rerun=sim", "--rings"]) == 0
    assert cli.mosaic_main([root, "--rerun=sim:one", "--id", "ccd=0..103"]) == 0
    return root


def _products(root, rerun):
    """{(visit, ccd): (wcs, fcr)}, and the number of copies of each (one per tract folder)."""
    out, copies = {}, {}
    for p in sorted(glob.glob(os.path.join(root, "rerun", rerun, "*", "*", "corr", "*",
                                           "wcs-*.fits"))):
        v, c = (int(x) for x in os.path.basename(p)[4:-5].split("-"))
        out.setdefault((v, c), (p, p.replace("wcs-", "fcr-")))
        copies[(v, c)] = copies.get((v, c), 0) + 1
    return out, copies


def _evaluate(prods, truth):
    """{(visit, ccd): (ra, dec, mag of a unit flux) at the clean stars' true pixels}: the
    benchmark's evaluation (bench/region_split.py), so that test and bench measure alike."""
    sys.path.insert(0, BENCH)
    try:
        from region_split import at_stars
    finally:
        sys.path.remove(BENCH)
    return {k: v[1:] for k, v in at_stars(prods, truth).items()}


def test_region_split_on_dask_agrees_with_the_one_fit(strip, tmp_path):
    """Two regions as two tasks on a loopback LocalCluster: every CCD of the one fit gets one
    product (written once per tract folder), and the products depart from the one-fit ones by
    far less than either departs from the truth (the seam the split leaves is below the
    noise), so the split is as accurate as the one fit."""
    distributed = pytest.importorskip("distributed")
    root = str(tmp_path / "repo")
    shutil.copytree(strip, root)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cli.mosaic_main([root, "--rerun=sim:split", "--id", "ccd=0..103",
                                "--config", f"regionNside={NSIDE}", "regionOverlap=1.0",
                                "--scheduler", cluster.scheduler_address]) == 0
    one, one_copies = _products(root, "one")
    split, split_copies = _products(root, "split")
    assert set(split) == set(one)
    assert split_copies == one_copies                   # each CCD in every tract wanting it
    # the regions really split the visits (and fit a margin of their neighbours)
    centres = {v: SipModel.from_header(read_wcs_header(one[(v, c)][0])).pixel_to_sky(
        1023.5, 2087.5) for v, c in one}
    regions = sky_regions(centres, NSIDE, 1.0)
    assert len(regions) >= 2 and all(len(r.fitted) > len(r.own) for r in regions)
    truth = Truth(root)
    e_one, e_split = _evaluate(one, truth), _evaluate(split, truth)
    d_pos, d_mag, t_pos = [], [], []
    for k in sorted(e_one):
        ra1, de1, m1 = e_one[k]
        ra2, de2, m2 = e_split[k]
        d_pos.append(np.hypot((ra2 - ra1) * np.cos(np.radians(de1)), de2 - de1) * 3.6e6)
        d_mag.append((m2 - m1) * 1000)
        sip = SipModel.from_header(read_wcs_header(one[k][0]))
        t_pos.append(np.hypot(*truth.astrometric_error(*k, sip.pixel_to_sky, "star")))
    rms = lambda x: float(np.sqrt(np.mean(np.concatenate(x) ** 2)))
    print(f"split - one fit: {rms(d_pos):.3f} mas, {rms(d_mag):.3f} mmag; one fit - truth "
          f"{rms(t_pos):.3f} mas")
    # the split's departure from the one fit is well below the one fit's own error against
    # the truth (the noise of the 6-10 visits each star has), in position and in flux
    assert rms(d_pos) < 0.25 * rms(t_pos), (rms(d_pos), rms(t_pos))
    assert rms(d_mag) < 0.3, rms(d_mag)                 # mmag; the fit's noise is ~1 mmag


def test_held_ccd_terms_are_the_solutions():
    """solve(ccd_terms=...) holds the CCD placement and the flux CCD terms at the values given
    (the second pass of a region split); held at the values a free fit found, it finds that
    fit's solution again."""
    from test_mosaic import _errors, _exposures
    from mosaicfit.fit.solve import solve
    from mosaicfit.sim import make_tract
    sim = make_tract(visits=3, ccds=tuple(range(30, 74)), seed=5)
    exps = _exposures(sim)
    free = solve(exps, hsc(), MosaicConfig(), sim.refcat)
    got = CcdTerms.of(free)
    assert set(got.placement) <= set(range(30, 74)) and len(got.placement) > 40
    assert sum(got.placement_weights.values()) == int(np.sum(free.detections["astro_used"]))
    held = CcdTerms(placement={c: (0.5, -0.25, 1e-5) for c in got.placement},
                    flux={f: {c: 0.003 for c in fl} for f, fl in got.flux.items()})
    sol = solve(exps, hsc(), MosaicConfig(), sim.refcat, ccd_terms=held)
    for c in got.placement:
        assert sol.placement.offsets[c] == pytest.approx((0.5, -0.25, 1e-5), abs=1e-12)
    for f, model in sol.photometry.items():
        assert all(model.ccd_terms[c] == pytest.approx(0.003, abs=1e-12) for c in model.ccd_terms)
    # held at the free fit's own terms, the fit lands where the free one did
    ex, ey, em, _ = _errors(sim, solve(exps, hsc(), MosaicConfig(), sim.refcat, ccd_terms=got))
    fx, fy, fm, _ = _errors(sim, free)
    assert fx < 3 and fy < 3 and fm < 5
    assert ex == pytest.approx(fx, rel=0.05, abs=0.02)
    assert ey == pytest.approx(fy, rel=0.05, abs=0.02)
    assert em == pytest.approx(fm, rel=0.05, abs=0.02)
