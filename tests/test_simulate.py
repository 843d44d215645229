"""The simulator against its own physics: truth consistency, noise levels, realism."""
import numpy as np
import pytest

from mosaicfit.model.camera import hsc
from mosaicfit.sim import BLEND, CLEAN, COSMIC_RAY, REF_EPOCH_MJD, SATURATED, positions_at, make_tract
from mosaicfit.model.sip import sip_pixel_to_sky

CCDS = tuple(range(36, 62)) + (100, 101)


@pytest.fixture(scope="module")
def sim():
    return make_tract(visits=5, ccds=CCDS, seed=11)


def _star_rows(sim, sub):
    row = {int(t): i for i, t in enumerate(np.asarray(sim.stars["truth_id"]))}
    return np.array([row.get(int(t), -1) for t in sub["truth_id"]], dtype=int)


def _clean_star_mask(sim, sub):
    rows = _star_rows(sim, sub)
    is_star = np.zeros(len(sub), bool)
    ok = rows >= 0
    is_star[ok] = np.asarray(sim.stars["is_star"])[rows[ok]]
    return (np.asarray(sub["outlier"]) == CLEAN) & is_star, rows


def test_truth_model_round_trip(sim):
    tm = sim.truth
    v = sim.visits[1]
    x = np.array([0.0, 1023.5, 2047.0])
    y = np.array([0.0, 2087.5, 4175.0])
    for ccd in (40, 101):
        ra, dec = tm.pixel_to_sky(v, ccd, x, y)
        bx, by = tm.sky_to_pixel(v, ccd, ra, dec)
        assert np.allclose(bx, x, atol=1e-7) and np.allclose(by, y, atol=1e-7)


def test_detections_sit_on_their_stars(sim):
    """Noise-free detection positions map through the true WCS onto the stars' positions at
    the epoch of the visit (proper motion applied)."""
    d = sim.detections
    for (v, c) in list(sim.catalogs)[::9]:
        sub = d[(d["visit"] == v) & (d["ccd"] == c)]
        clean, rows = _clean_star_mask(sim, sub)
        if not clean.any():
            continue
        ra, dec = positions_at(sim.stars[rows[clean]], sim.truth.visits[v]["mjd"])
        r2, d2 = sim.truth.pixel_to_sky(v, c, sub["x_true"][clean], sub["y_true"][clean])
        err = np.hypot((r2 - ra) * np.cos(np.radians(dec)), d2 - dec) * 3.6e6
        assert err.max() < 1e-4   # mas


def test_noise_is_what_the_catalogue_says(sim):
    """Centroid and flux residuals of clean stars, in units of the catalogue's errors, are
    unit normal: chi2/ndof of a correct model is then 1."""
    d = sim.detections
    px, pf = [], []
    for key, cat in sim.catalogs.items():
        sub = d[(d["visit"] == key[0]) & (d["ccd"] == key[1])]
        assert np.array_equal(np.asarray(cat["id"]), np.asarray(sub["id"]))
        clean, _ = _clean_star_mask(sim, sub)
        px.append(((cat["base_SdssCentroid_x"] - sub["x_true"]) / cat["base_SdssCentroid_xSigma"])[clean])
        px.append(((cat["base_SdssCentroid_y"] - sub["y_true"]) / cat["base_SdssCentroid_ySigma"])[clean])
        pf.append(((cat["base_PsfFlux_flux"] - sub["instFlux_true"]) / cat["base_PsfFlux_fluxSigma"])[clean])
    px, pf = np.concatenate(px), np.concatenate(pf)
    n = len(pf)
    assert n > 3000
    assert abs(np.std(px) - 1) < 5 / np.sqrt(n) + 0.02
    assert abs(np.std(pf) - 1) < 5 / np.sqrt(n) + 0.02
    assert abs(np.mean(pf)) < 5 / np.sqrt(n)


def test_calibration_truth_is_consistent(sim):
    """m_true = -2.5 log10(instFlux_true) + zeropoint(visit, ccd, x, y), exactly; the
    zero-point varies by clouds (tenths), CCD gains (~1%), illumination and pixel area."""
    d = sim.detections
    sub = d[np.asarray(d["truth_id"]) > 0][:3000]
    rows = _star_rows(sim, sub)
    zp = np.concatenate([sim.truth.zeropoint(v, c, np.atleast_1d(x), np.atleast_1d(y))
                         for v, c, x, y in zip(sub["visit"], sub["ccd"], sub["x_true"], sub["y_true"])])
    m = -2.5 * np.log10(sub["instFlux_true"]) + zp
    assert np.max(np.abs(m - np.asarray(sim.stars["mag"])[rows])) < 1e-9
    zps = [v["zp"] for v in sim.truth.params["visits"]]
    assert 0.0 < np.ptp(zps) < 1.0
    # pixel area: 1 at the optical axis, ~0.88 at the field edge (the real HSC optics)
    v = sim.visits[0]
    ax, ay = hsc().focal_plane_to_pixel(49, 0.0, 0.0)
    assert abs(sim.truth.area_ratio(v, 49, ax, ay) - 1) < 1e-6
    assert 0.8 < sim.truth.area_ratio(v, 101, 2047.0, 4175.0) < 0.9


def test_single_frame_wcs_is_off_by_a_typical_amount(sim):
    d = sim.detections
    errs = []
    for key in list(sim.catalogs)[::3]:
        sub = d[(d["visit"] == key[0]) & (d["ccd"] == key[1])]
        clean, rows = _clean_star_mask(sim, sub)
        if clean.sum() < 3:
            continue
        ra, dec = positions_at(sim.stars[rows[clean]], sim.truth.visits[key[0]]["mjd"])
        r2, d2 = sip_pixel_to_sky(sim.wcs_headers[key], sub["x_true"][clean], sub["y_true"][clean])
        errs.append(np.median(np.hypot((r2 - ra) * np.cos(np.radians(dec)), d2 - dec)) * 3600)
    assert 0.1 < np.median(errs) < 1.0 and max(errs) < 1.5


def test_realism_of_the_field(sim):
    mag = np.asarray(sim.stars["mag"])
    star = np.asarray(sim.stars["is_star"])
    h, _ = np.histogram(mag[star], bins=np.arange(15, 26))
    assert np.all(np.diff(h) > 0)                    # star counts rise with magnitude
    g, _ = np.histogram(mag[~star], bins=np.arange(19, 25))
    assert np.all(g[1:] > 1.5 * g[:-1])             # galaxy counts rise faster
    codes = np.bincount(np.asarray(sim.detections["outlier"]), minlength=6)
    assert codes[SATURATED] > 0 and codes[BLEND] > 0 and codes[COSMIC_RAY] > 0
    # galaxies are mostly extended, stars mostly not (bright end)
    d = sim.detections
    ext, is_gal, m = [], [], []
    for key, cat in sim.catalogs.items():
        sub = d[(d["visit"] == key[0]) & (d["ccd"] == key[1])]
        rows = _star_rows(sim, sub)
        ok = rows >= 0
        ext.append(np.asarray(cat["base_ClassificationExtendedness_value"])[ok])
        is_gal.append(~star[rows[ok]])
        m.append(mag[rows[ok]])
    ext, is_gal, m = map(np.concatenate, (ext, is_gal, m))
    bright = m < 22
    assert np.mean(ext[bright & is_gal]) > 0.95 and np.mean(ext[bright & ~is_gal]) < 0.03
    # saturated stars are flagged
    sat = np.concatenate([np.asarray(c["base_PixelFlags_flag_saturated"]) for c in sim.catalogs.values()])
    assert sat.sum() == codes[SATURATED]


def test_dead_and_failed_ccds():
    sim = make_tract(visits=3, ccds=(8, 9, 10), seed=3, failed_fraction=0.5)
    assert all(sim.missing.get((v, 9)) == "both" for v in sim.visits)
    assert all(k[1] != 9 for k in sim.catalogs)
    assert sum(1 for k, w in sim.missing.items() if w in ("src", "calexp")) == 3


def test_reference_catalog_is_gaia_like(sim):
    ref = sim.refcat
    assert np.all(ref["epoch"] == REF_EPOCH_MJD)
    row = {int(t): i for i, t in enumerate(np.asarray(sim.stars["truth_id"]))}
    st = sim.stars[[row[int(i)] for i in ref["id"]]]
    ra_t, dec_t = positions_at(st, REF_EPOCH_MJD)
    mas = 180 / np.pi * 3.6e6
    pull = (np.degrees(ref["coord_dec"]) - dec_t) * 3.6e6 / (ref["coord_decErr"] * mas)
    assert abs(np.std(pull) - 1) < 0.1
    # not propagating the proper motions to the visits would cost several mas
    dt = (sim.truth.visits[sim.visits[0]]["mjd"] - REF_EPOCH_MJD) / 365.25
    shift = np.hypot(ref["pm_ra"], ref["pm_dec"]) * mas * abs(dt)
    assert np.median(shift) > 2.0
    # the PS1-like bands through the HSC colour term give the true magnitude
    from mosaicfit.model.colorterms import reference_magnitudes
    from mosaicfit.sim import REFCAT_NAME
    mag, _, how = reference_magnitudes(ref, REFCAT_NAME, "HSC-I")
    assert "colour term" in how
    dm = mag - st["mag"]
    assert abs(np.median(dm)) < 0.003 and np.std(dm) < 0.05
