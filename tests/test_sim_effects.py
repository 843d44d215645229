"""The simulator's effects of the real sky (mosaicfit.sim.effects) against their analytic truth;
and without effects, the simulation is the one before they existed, number for number."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mosaicfit import cli
from mosaicfit.model.sip import sip_pixel_to_sky
from mosaicfit.model.sky import sky_to_tangent
from mosaicfit.sim import CLEAN, DOUBLED, EFFECTS, Truth, make_tract, positions_at
from mosaicfit.sim.config import PIXEL_ARCSEC
from mosaicfit.sim.effects import (SUBARU_LATITUDE_DEG, dcr_coefficient_mas,
                                   local_sidereal_time_deg, von_karman_correlation,
                                   von_karman_field)
from mosaicfit.sim.repository import _corr_primary
from mosaicfit.sim.sky import colour_gi
from mosaicfit.units import RAD_MAS

CENTRE = (41, 49, 50, 58)                      # field radius < 0.25 of the edge
EDGE = (0, 3, 95, 99, 100, 101, 102, 103)      # at the field edge
SEED = 5


@pytest.fixture(scope="module")
def base():
    return make_tract(visits=3, ccds=CENTRE + EDGE, seed=SEED)


def _star_rows(sim, sub):
    row = {int(t): i for i, t in enumerate(np.asarray(sim.stars["truth_id"]))}
    return sim.stars[[row[int(t)] for t in sub["truth_id"]]]


def _detections(sim, visit, ccd):
    d = sim.detections
    return d[(np.asarray(d["visit"]) == visit) & (np.asarray(d["ccd"]) == ccd)]


# ------------------------------------------------------------------------------------------
# No effects: the starting simulation
# ------------------------------------------------------------------------------------------
DIGEST = r'''
import hashlib, json, sys
import numpy as np
from mosaicfit.sim import make_tract
from mosaicfit.sim.repository import _corr_primary, _registry_rows

def h(x):
    return hashlib.sha256(x if isinstance(x, bytes) else str(x).encode()).hexdigest()

def table(t):
    return {c: h(np.ascontiguousarray(np.asarray(t[c])).tobytes()) for c in t.colnames}

sim = make_tract(visits=2, ccds=(0, 9, 49, 101), seed=7, failed_fraction=0.2)
out = dict(detections=table(sim.detections), stars=table(sim.stars), refcat=table(sim.refcat),
           truth=h(sim.truth.to_json()), missing=h(sorted(sim.missing.items())),
           fluxmag0=h(sorted(sim.fluxmag0.items())), registry=h(_registry_rows(sim)))
for k in sorted(sim.catalogs):
    out[f"src{k}"] = table(sim.catalogs[k])
    out[f"wcs{k}"] = h(repr(sim.wcs_headers[k]))
    out[f"corr{k}"] = h(_corr_primary(sim, *k).tostring())
print(json.dumps(out, sort_keys=True))
'''
START = "fc0fe0d"     # the commit before the effects


def test_no_effects_is_the_starting_simulation(tmp_path):
    """Bitwise: every table, header and the truth of a small simulation without effects equal
    those of the simulator at the starting commit (its sim/ in today's package)."""
    import mosaicfit
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        files = subprocess.run(["git", "-C", here, "ls-tree", "--full-tree", "--name-only",
                                START, "python/mosaicfit/sim/"], capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = []
    if "python/mosaicfit/sim/__init__.py" not in files:
        pytest.skip(f"no git history with commit {START}")
    pkg = tmp_path / "old" / "mosaicfit"
    shutil.copytree(os.path.dirname(mosaicfit.__file__), pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(pkg / "sim")
    (pkg / "sim").mkdir()
    for f in files:
        text = subprocess.run(["git", "-C", here, "show", f"{START}:{f}"], capture_output=True,
                              check=True).stdout
        (pkg / "sim" / os.path.basename(f)).write_bytes(text)

    def digest(path):
        env = dict(os.environ, PYTHONPATH=str(path))
        run = subprocess.run([sys.executable, "-c", DIGEST], env=env, capture_output=True,
                             text=True, cwd=str(tmp_path))
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    old = digest(tmp_path / "old")
    new = digest(os.path.dirname(os.path.dirname(mosaicfit.__file__)))
    assert new.keys() == old.keys()
    assert [k for k in old if old[k] != new[k]] == []


# ------------------------------------------------------------------------------------------
# edge-wcs
# ------------------------------------------------------------------------------------------
def test_edge_wcs_error_grows_to_the_field_edge(base):
    sim = make_tract(visits=3, ccds=CENTRE + EDGE, seed=SEED, effects=("edge-wcs",))
    # the truth and the measurements are unchanged: only the input WCS is worse
    for c in base.detections.colnames:
        assert np.array_equal(sim.detections[c], base.detections[c]), c
    for k in base.catalogs:
        assert np.array_equal(sim.catalogs[k]["base_SdssCentroid_x"],
                              base.catalogs[k]["base_SdssCentroid_x"])
    tm = sim.truth
    centre, edge = [], []
    for (v, c), wh in sim.wcs_headers.items():
        d = tm.camera[c]
        gx, gy = np.meshgrid(np.linspace(0, d.width - 1, 5), np.linspace(0, d.height - 1, 9))
        gx, gy = gx.ravel(), gy.ravel()
        ra, dec = tm.pixel_to_sky(v, c, gx, gy)
        r2, d2 = sip_pixel_to_sky(wh, gx, gy)
        dx, dy = (r2 - ra) * np.cos(np.radians(dec)) * 3.6e6, (d2 - dec) * 3.6e6
        # the written WCS carries the designed error (TAN-SIP fit, CCD rotation and scale
        # noise: a few mas)
        ex, ey = tm.single_frame_wcs_error(v, c, gx, gy)
        assert np.max(np.hypot(dx - ex, dy - ey)) < 30.0
        xi, eta = tm.pixel_to_tangent(v, c, gx, gy)
        rho = np.hypot(xi, eta) / np.radians(0.75)
        (centre if c in CENTRE else edge).append(np.hypot(dx, dy))
        assert (rho.max() < 0.4) if c in CENTRE else (rho.min() > 0.85)
    centre, edge = np.concatenate(centre), np.concatenate(edge)
    assert np.median(centre) < 150.0                       # ~0.05" at the centre
    assert 900.0 < np.sqrt(np.mean(edge ** 2)) < 2200.0   # ~1.5" at the edge
    assert np.median(edge) > 5 * np.median(centre)


# ------------------------------------------------------------------------------------------
# dcr
# ------------------------------------------------------------------------------------------
def test_dcr_coefficients_follow_the_dispersion_of_air():
    k = {f: dcr_coefficient_mas(f, 616.0, 275.0) for f in ("HSC-G", "HSC-R", "HSC-I", "HSC-Z",
                                                            "HSC-Y", "NB0921")}
    assert all(x < 0 for x in k.values())                 # red sources are refracted less
    # g: 10-40 mas per magnitude of colour at airmass 1.5; much less in i, z, y
    tan_z = np.tan(np.arccos(1 / 1.5))
    assert 10.0 < -k["HSC-G"] * tan_z < 40.0
    assert -k["HSC-G"] > 1.5 * -k["HSC-R"] > 1.5 * -k["HSC-I"] > 3 * -k["HSC-Z"]
    assert -k["HSC-Y"] < 2.0 and -k["NB0921"] < 0.1
    # thinner air refracts less
    assert dcr_coefficient_mas("HSC-G", 1013.25, 288.15) < 1.5 * k["HSC-G"]


def test_dcr_points_to_the_zenith_and_scales_with_tan_z_and_colour():
    sim = make_tract(visits=4, ccds=CENTRE, seed=SEED, effects=("dcr",), filter="HSC-G")
    tm = sim.truth
    k = tm.effects["dcr"]["k_mas_per_mag"]
    assert k == dcr_coefficient_mas("HSC-G", 616.0, 275.0)
    airmass = []
    for v in sim.visits:
        V, o = tm.visits[v], tm.visits[v]["observing"]
        airmass.append(o["airmass"])
        # the parallactic angle points at the zenith (RA = LST, Dec = latitude) in the
        # visit's tangent plane; the LST is the visit's time (mid-exposure)
        mid = V["mjd"] + 0.5 * V["exptime"] / 86400
        assert abs((local_sidereal_time_deg(mid) - o["lst_deg"] + 180) % 360 - 180) < 1e-9
        zx, zy = sky_to_tangent(o["lst_deg"], SUBARU_LATITUDE_DEG, V["ra"], V["dec"])
        q = np.radians(o["parallactic_deg"])
        assert abs(np.arctan2(zx, zy) - q) < 1e-3
        assert abs(np.degrees(np.arctan(np.hypot(zx, zy))) - o["zenith_distance_deg"]) < 0.01
        assert 1.0 <= o["airmass"] <= 1.8
        h = _corr_primary(sim, v, CENTRE[0])
        assert h["AIRMASS"] == pytest.approx(1 / np.cos(np.radians(h["ZD"])), rel=1e-6)
        assert h["ALTITUDE"] == pytest.approx(90 - h["ZD"])
        assert h["PARANG"] == o["parallactic_deg"] and h["HA"] == o["hour_angle_deg"]
        for c in CENTRE:
            sub = _detections(sim, v, c)
            sub = sub[np.asarray(sub["truth_id"]) > 0]
            st = _star_rows(sim, sub)
            # true image position minus the star's position, in the tangent plane
            ra0, dec0 = positions_at(st, V["mjd"])
            ra1, dec1 = tm.pixel_to_sky(v, c, sub["x_true"], sub["y_true"])
            x0, y0 = sky_to_tangent(ra0, dec0, V["ra"], V["dec"])
            x1, y1 = sky_to_tangent(ra1, dec1, V["ra"], V["dec"])
            dx, dy = (x1 - x0) * RAD_MAS, (y1 - y0) * RAD_MAS
            clean = np.asarray(sub["outlier"]) == CLEAN      # blends sit between their stars
            assert np.allclose(dx[clean], sub["dcr_dxi"][clean], atol=1e-3)
            assert np.allclose(dy[clean], sub["dcr_deta"][clean], atol=1e-3)
            # k tan(z) (colour - 1.0) along the zenith; blue sources towards it
            col = colour_gi(st)
            expect = k * np.tan(np.radians(o["zenith_distance_deg"])) * (col - 1.0)
            along = dx * np.sin(q) + dy * np.cos(q)
            across = dx * np.cos(q) - dy * np.sin(q)
            assert np.allclose(along[clean], expect[clean], atol=1e-3)
            assert np.max(np.abs(across[clean])) < 1e-3
            assert np.all(along[clean & (col < 0.9)] > 0) and np.all(along[clean & (col > 1.1)] < 0)
            # the truth's inverse: the star's position from its image and colour
            r2, d2 = tm.star_pixel_to_sky(v, c, sub["x_true"], sub["y_true"], col)
            assert np.max(np.hypot((r2 - ra0) * np.cos(np.radians(dec0)),
                                   d2 - dec0)[clean]) * 3.6e6 < 1e-3
    assert np.ptp(airmass) > 0.02


def test_dcr_visits_sit_at_their_sidereal_time():
    """Independently of the simulator's sidereal-time formula: astropy's (IERS-B)."""
    from astropy.utils import iers
    import astropy.units as u
    from astropy.time import Time
    sim = make_tract(visits=2, ccds=(49,), seed=2, effects=("dcr",))
    old = iers.conf.auto_download
    iers.conf.auto_download = False
    try:
        for v in sim.visits:
            V = sim.truth.visits[v]
            t = Time(V["mjd"] + 0.5 * V["exptime"] / 86400, format="mjd", scale="tai")
            try:
                lst = t.sidereal_time("mean", longitude=-155.4761 * u.deg, model="IAU1982").deg
            except Exception as e:       # no IERS table for that date here
                pytest.skip(f"astropy sidereal time unavailable: {e}")
            assert abs((lst - V["observing"]["lst_deg"] + 180) % 360 - 180) < 0.01  # UT1-UTC
    finally:
        iers.conf.auto_download = old


# ------------------------------------------------------------------------------------------
# turbulence
# ------------------------------------------------------------------------------------------
def test_von_karman_field_has_its_rms_correlation_and_e_mode():
    n, step, L, rms = 512, 0.25, 5.0, 10.0
    dx, dy = (a.astype(float) for a in von_karman_field(3, rms, L, 0.1, step, n))
    g = (np.arange(n) - n // 2) * step
    gx, gy = np.meshgrid(g, g)
    fov = gx ** 2 + gy ** 2 < 45.0 ** 2
    assert np.sqrt(0.5 * np.mean(dx[fov] ** 2 + dy[fov] ** 2)) == pytest.approx(rms, rel=1e-4)
    assert 0.8 * rms < np.sqrt(np.mean(dx[fov] ** 2)) < 1.2 * rms
    # xi_+(r) = <dx dx> + <dy dy>, from the periodic autocorrelation of the grid, against the
    # von Karman correlation function (treegp's kernel)

    def autocorrelation(a):
        f = np.fft.fft2(a - a.mean())
        return np.fft.ifft2(f * np.conj(f)).real / a.size
    xi = autocorrelation(dx) + autocorrelation(dy)
    lag = np.fft.fftfreq(n) * n * step
    r = np.hypot(*np.meshgrid(lag, lag))
    for rr in (0.5, 1.0, 2.0, 4.0):
        ring = np.abs(r - rr) < step / 2
        assert abs(xi[ring].mean() / xi[0, 0] - von_karman_correlation(rr, L)) < 0.04
    # per axis at 1': ~sigma^2 C(1'/L), tens of mas^2 as Leget et al. (2021) found on HSC-SSP
    assert 30.0 < xi[np.abs(r - 1.0) < step / 2].mean() / 2 < 60.0
    # E and B modes: 10% of the power in B (curl)
    f = np.fft.fftfreq(n, d=step)
    fx, fy = np.meshgrid(f, f)
    fr = np.hypot(fx, fy)
    fr[0, 0] = 1.0
    X, Y = np.fft.fft2(dx), np.fft.fft2(dy)
    pe = np.sum(np.abs((fx * X + fy * Y) / fr) ** 2)
    pb = np.sum(np.abs((-fy * X + fx * Y) / fr) ** 2)
    assert 0.08 < pb / (pe + pb) < 0.12


def test_turbulence_moves_images_and_changes_every_visit():
    sim = make_tract(visits=3, ccds=CENTRE, seed=SEED, effects=("turbulence",))
    tm = sim.truth
    rng = np.random.default_rng(1)
    r = np.radians(0.7) * np.sqrt(rng.uniform(size=4000))
    phi = rng.uniform(0, 2 * np.pi, 4000)
    px, py = r * np.cos(phi), r * np.sin(phi)
    fields = []
    for v in sim.visits:
        t = tm.visits[v]["turbulence"]
        assert 5.0 <= t["rms_mas"] <= 15.0 and 3.0 <= t["outer_scale_arcmin"] <= 10.0
        a, b = tm.turbulence_tangent(v, px, py)
        assert np.sqrt(0.5 * np.mean(a * a + b * b)) == pytest.approx(t["rms_mas"], rel=0.1)
        fields.append(a)
        V = tm.visits[v]
        for c in CENTRE:
            sub = _detections(sim, v, c)
            sub = sub[np.asarray(sub["outlier"]) == CLEAN]
            sub = sub[np.asarray(sub["truth_id"]) > 0]
            st = _star_rows(sim, sub)
            ra0, dec0 = positions_at(st, V["mjd"])
            ra1, dec1 = tm.pixel_to_sky(v, c, sub["x_true"], sub["y_true"])
            x0, y0 = sky_to_tangent(ra0, dec0, V["ra"], V["dec"])
            x1, y1 = sky_to_tangent(ra1, dec1, V["ra"], V["dec"])
            # each image is displaced by the field at its star; the truth columns say so
            tx, ty = tm.turbulence_offset(v, ra0, dec0)
            assert np.allclose((x1 - x0) * RAD_MAS, tx, atol=1e-3)
            assert np.allclose((y1 - y0) * RAD_MAS, ty, atol=1e-3)
            assert np.allclose(sub["turb_dxi"], tx) and np.allclose(sub["turb_deta"], ty)
            assert np.all(sub["dcr_dxi"] == 0)
            r2, d2 = tm.star_pixel_to_sky(v, c, sub["x_true"], sub["y_true"])
            assert np.max(np.hypot((r2 - ra0) * np.cos(np.radians(dec0)),
                                   d2 - dec0)) * 3.6e6 < 1e-3
    # a new field every visit
    assert abs(np.corrcoef(fields[0], fields[1])[0, 1]) < 0.3


# ------------------------------------------------------------------------------------------
# doubled
# ------------------------------------------------------------------------------------------
def test_doubled_images_in_one_visit():
    sim = make_tract(visits=3, ccds=CENTRE, seed=SEED, effects=("doubled",),
                     doubled_visit=902798)
    tm = sim.truth
    e = tm.effects["doubled"]
    assert e["visit"] == 902798
    pa = np.radians(e["direction_deg"])
    d = sim.detections
    shifted = np.asarray(d["doubled_mas"]) > 0
    assert set(np.asarray(d["visit"])[shifted]) == {902798}
    assert set(np.asarray(d["visit"])[np.asarray(d["outlier"]) == DOUBLED]) == {902798}
    real = (np.asarray(d["visit"]) == 902798) & (np.asarray(d["truth_id"]) > 0)
    assert 0.38 < np.mean(shifted[real]) < 0.52
    assert np.all((d["doubled_mas"][shifted] >= 50) & (d["doubled_mas"][shifted] <= 300))
    pulls_along, pulls_across = [], []
    for c in CENTRE:
        sub = _detections(sim, 902798, c)
        cat = sim.catalogs[(902798, c)]
        m = np.asarray(sub["outlier"]) == DOUBLED         # otherwise clean detections
        r1, d1 = tm.pixel_to_sky(902798, c, cat["base_SdssCentroid_x"][m],
                                 cat["base_SdssCentroid_y"][m])
        r0, d0 = tm.pixel_to_sky(902798, c, sub["x_true"][m], sub["y_true"][m])
        dx, dy = (r1 - r0) * np.cos(np.radians(d0)) * 3.6e6, (d1 - d0) * 3.6e6
        sigma = np.asarray(cat["base_SdssCentroid_xSigma"])[m] * PIXEL_ARCSEC * 1000
        pulls_along.append((dx * np.sin(pa) + dy * np.cos(pa) - sub["doubled_mas"][m]) / sigma)
        pulls_across.append((dx * np.cos(pa) - dy * np.sin(pa)) / sigma)
    pulls_along, pulls_across = np.concatenate(pulls_along), np.concatenate(pulls_across)
    assert len(pulls_along) > 100
    # displaced as stated along the direction, nothing across it: what remains is noise
    for p in (pulls_along, pulls_across):
        assert abs(np.std(p) - 1) < 0.15 and abs(np.mean(p)) < 0.2


# ------------------------------------------------------------------------------------------
# centroid-errors
# ------------------------------------------------------------------------------------------
def test_centroid_errors_are_misestimated(base):
    sim = make_tract(visits=3, ccds=CENTRE + EDGE, seed=SEED, effects=("centroid-errors",))
    tm = sim.truth
    floor = tm.effects["centroid-errors"]["floor_mas"] / 1000 / PIXEL_ARCSEC     # px
    # the true positions are unchanged; only the noise and the reported errors are not
    assert np.array_equal(sim.detections["x_true"], base.detections["x_true"])
    for v in sim.visits:
        pull_true, ratio, pull_bright = [], [], []
        for c in CENTRE + EDGE:
            if (v, c) not in sim.catalogs:
                continue
            sub, cat = _detections(sim, v, c), sim.catalogs[(v, c)]
            clean = (np.asarray(sub["outlier"]) == CLEAN) & (np.asarray(sub["truth_id"]) > 0)
            res = np.r_[cat["base_SdssCentroid_x"] - sub["x_true"],
                        cat["base_SdssCentroid_y"] - sub["y_true"]]
            true = np.r_[sub["x_err_true"], sub["x_err_true"]]
            rep = np.r_[cat["base_SdssCentroid_xSigma"], cat["base_SdssCentroid_ySigma"]]
            ok = np.r_[clean, clean]
            pull_true.append((res / true)[ok])
            faint = ok & (true > 5 * floor)               # photon noise dominates
            ratio.append((rep / true)[faint])
            bright = ok & (true < 1.2 * floor)            # the floor dominates
            pull_bright.append((res / rep)[bright])
        pull_true, ratio, pull_bright = map(np.concatenate, (pull_true, ratio, pull_bright))
        scale = tm.visits[v]["centroid_err_scale"]
        assert 0.7 <= scale <= 1.5
        assert abs(np.std(pull_true) - 1) < 0.08                 # the truth's sigma is right
        assert np.median(ratio) == pytest.approx(scale, rel=0.04)  # reported: scaled
        assert 0.12 < np.std(np.log(ratio)) < 0.3                 # and scattered
        assert np.std(pull_bright) > 1.5                          # bright stars: the floor


# ------------------------------------------------------------------------------------------
# All effects through the command line, and the truth's three references
# ------------------------------------------------------------------------------------------
def test_simulate_with_all_effects(tmp_path, capsys):
    root = str(tmp_path / "repo")
    assert cli.main(["simulate", root, "--visits", "2", "--ccds", "49^50", "--seed", "3",
                     "--effects", "all"]) == 0
    assert "effects: edge-wcs" in capsys.readouterr().out
    from mosaicfit.io.corr import read_corr
    from mosaicfit.io.layout import Repository
    repo = Repository(root, "sim")
    p = repo.find("calexp", visit=902798, ccd=49, pointing=1201, filter="HSC-I")
    h = read_corr(p, metadata_only=True).header
    for key in ("AIRMASS", "ZD", "ALTITUDE", "AZIMUTH", "LST", "HA", "PARANG", "OUT-PRS"):
        assert key in h
    truth = Truth(root)
    assert sorted(truth.model.effects) == sorted(EFFECTS)
    d = truth.detections
    for col in ("dcr_dxi", "dcr_deta", "turb_dxi", "turb_deta", "doubled_mas", "x_err_true"):
        assert col in d.colnames
    # a perfect smooth WCS, measured against the three references of the truth
    for v in (902798, 902800):
        for c in (49, 50):
            s = truth.clean_stars(v, c)
            sub = d[(np.asarray(d["visit"]) == v) & (np.asarray(d["ccd"]) == c)]
            sub = sub[np.isin(sub["id"], s["id"])]
            wcs = lambda x, y: truth.model.pixel_to_sky(v, c, x, y)  # noqa: E731
            smooth = truth.astrometric_error(v, c, wcs, against="smooth")
            assert np.max(np.abs(np.r_[smooth])) < 1e-6
            ref = truth.astrometric_error(v, c, wcs, against="reference-colour")
            assert np.allclose(ref[0], sub["turb_dxi"], atol=0.05)
            assert np.allclose(ref[1], sub["turb_deta"], atol=0.05)
            star = truth.astrometric_error(v, c, wcs)
            assert np.allclose(star[0], sub["turb_dxi"] + sub["dcr_dxi"], atol=0.05)
            assert np.allclose(star[1], sub["turb_deta"] + sub["dcr_deta"], atol=0.05)
    with pytest.raises(SystemExit):
        cli.main(["simulate", str(tmp_path / "x"), "--effects", "dcr,fog"])
    assert "fog" in capsys.readouterr().err
    assert cli.main(["simulate", str(tmp_path / "y"), "--visits", "2", "--ccds", "49",
                     "--effects", "doubled", "--doubled-visit", "5"]) == 1
    assert "--doubled-visit 5" in capsys.readouterr().err


def test_effects_are_recorded_and_switched_on_alone():
    sim = make_tract(visits=1, ccds=(49,), seed=1, effects="turbulence")
    assert sim.config.effects == ("turbulence",)
    assert list(sim.truth.effects) == ["turbulence"]
    assert "observing" not in sim.truth.visits[sim.visits[0]]
    assert json.loads(sim.truth.to_json())["effects"]["turbulence"]["grid"] == 512
