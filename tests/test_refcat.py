"""LSST-style indexed reference catalogs: HTM ids, shard selection, files, errors."""
import os

import numpy as np
import pytest
from astropy.table import Table

from mosaicfit import MosaicError
import mosaicfit.io.refcat as refcat
from mosaicfit.io.refcat import flux_to_mag, htm_id, htm_trixel_vertices, htm_trixels_in_circle, mag_to_flux, read_refcat, write_refcat

# 29 stars with their depth-20 HTM ids, from the "fatboy" database (SQL Server's HTM library):
# lsst-sims/legacy_sims_utils tests/testData/htmid_test_data.txt (GPL-3.0)
FATBOY = """\
10259322830548 145.47257 -55.7813218
11454167830929 212.031586 -60.6917234
11583061106094 268.567406 -18.4670922
11701670181575 269.795956 -27.5301901
11712234031412 267.850193 -29.8953235
11755037475608 246.680093 -23.3172772
11701716537785 269.880871 -26.9208128
11854622733210 230.433277 -53.9530174
11880656901630 253.836968 -38.275125
11834419710621 258.771156 -46.3228586
11835623180367 259.577254 -42.5360793
11836360478363 257.370228 -43.2023765
11870593437914 238.754731 -49.3753396
12123050923567 273.034517 -11.9576305
12146869251623 279.667909 -10.5783964
12109658195534 274.758658 -1.9363427
12115017423483 271.09387 -17.6903603
12144583139723 286.976561 -2.3519368
12339161165176 273.822237 -21.8802146
12339328962075 274.288699 -20.5813478
12204068697077 274.815826 -29.2889291
13756849185355 274.380954 5.5497478
13280518702556 336.053043 24.8484789
13952706672539 295.194051 20.9445359
12522842720888 274.10484 -51.1451609
13806239407591 276.16663 5.4265443
13976893355898 282.032553 22.8078649
14000716552161 289.360322 7.0508553
14051260575551 296.94269 34.605562
"""


def test_htm_fatboy_depth20():
    rows = np.array([line.split() for line in FATBOY.splitlines()], dtype=float)
    expected = np.array([int(line.split()[0]) for line in FATBOY.splitlines()])
    assert np.array_equal(htm_id(rows[:, 1], rows[:, 2], 20), expected)


def test_htm_lsst_test_refcat_shard():
    """lsst/meas_algorithms tests/data/make_test_refcat_repo.py draws 100 stars with
    np.random.seed(123); ra = 10 + random(100); dec = 20 + random(100) and ingests them at HTM
    depth 4: the repository (tests/data/version1/ref_cats/cal_ref_cat) has the one shard
    4022.fits."""
    rs = np.random.RandomState(123)
    ra = 10 + rs.random_sample(100)
    dec = 20 + rs.random_sample(100)
    assert set(htm_id(ra, dec, 4).tolist()) == {4022}
    # another trixel starts just inside the lower left corner of that square
    assert htm_id(10.04, 20.005, 4) == 4023


def test_htm_near_octahedron_corners():
    """Points next to the corners of the root trixels, with their depth-2 ids (binary
    strings from lsst-sims/legacy_sims_utils tests/test_trixel.py, test_trixel_finding)."""
    e = 1e-6
    x, y, z = np.eye(3)
    cases = [(x + e * y + e * z, "11111000"), (x - e * y + e * z, "11000000"),
             (x - e * y - e * z, "10111000"), (y + e * x + e * z, "11110000"),
             (y - e * x + e * z, "11101000"), (y - e * x - e * z, "10010000"),
             (z + e * y + e * x, "11110100"), (z - e * y + e * x, "11000100"),
             (z - e * y - e * x, "11010100"), (-x + e * z + e * y, "11100000"),
             (-x - e * z + e * y, "10011000"), (-x - e * z - e * y, "10100000"),
             (-y + e * x + e * z, "11001000"), (-y - e * x + e * z, "11010000"),
             (-y - e * x - e * z, "10101000"), (-z + e * x + e * y, "10000100"),
             (-z - e * x + e * y, "10010100"), (-z - e * x - e * y, "10100100"),
             (x + y + z, "11111111")]
    for p, binary in cases:
        ra = np.degrees(np.arctan2(p[1], p[0])) % 360
        dec = np.degrees(np.arcsin(p[2] / np.linalg.norm(p)))
        assert format(int(htm_id(ra, dec, 2)), "b") == binary, binary


def test_htm_ids_and_vertices_consistent():
    rng = np.random.default_rng(7)
    n = 2000
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    ids = htm_id(ra, dec, 7)
    assert ids.min() >= 8 * 4**7 and ids.max() < 16 * 4**7
    # the parent at depth 6 is the id without its last two bits
    assert np.array_equal(htm_id(ra, dec, 6), ids >> 2)
    v = htm_trixel_vertices(ids)
    p = np.stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                  np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))], 1)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        assert np.all(np.einsum("ij,ij->i", np.cross(v[:, a], v[:, b]), p) >= -1e-15)


def _min_distance_to_trixel(c, v, n=400):
    """Brute force: smallest angle (rad) from c to points densely sampled on the trixel's
    edges, or 0 if c is inside."""
    a, b, d = v
    if all(np.dot(np.cross(p, q), c) >= 0 for p, q in ((a, b), (b, d), (d, a))):
        return 0.0
    t = np.linspace(0, 1, n)[:, None]
    pts = np.concatenate([(1 - t) * p + t * q for p, q in ((a, b), (b, d), (d, a))])
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    return np.arccos(np.clip(pts @ c, -1, 1)).min()


@pytest.mark.parametrize("ra,dec,radius", [(15.0, 0.3, 2.0), (200.0, -70.0, 5.0),
                                           (45.0, 35.26, 3.0), (0.0, 89.9, 4.0)])
def test_trixels_in_circle_brute_force(ra, dec, radius):
    depth = 4
    got = set(htm_trixels_in_circle(ra, dec, radius, depth).tolist())
    all_ids = np.arange(8 * 4**depth, 16 * 4**depth)
    verts = htm_trixel_vertices(all_ids)
    c = np.array([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                  np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))])
    r = np.radians(radius)
    margin = 2e-5          # sampling resolution of the brute force (rad)
    for i, v in zip(all_ids, verts):
        d = _min_distance_to_trixel(c, v)
        if d < r - margin:
            assert i in got, i
        elif d > r + margin:
            assert i not in got, i


def _stars(n, seed=2, half_width=2.5):
    rng = np.random.default_rng(seed)
    t = Table()
    t["id"] = np.arange(n, dtype=np.int64) + 1
    t["coord_ra"] = np.radians(rng.uniform(15 - half_width, 15 + half_width, n))
    t["coord_dec"] = np.radians(rng.uniform(-half_width, half_width, n))
    t["g_flux"] = mag_to_flux(rng.uniform(15, 22, n))
    t["g_fluxErr"] = t["g_flux"] * 0.01
    t["coord_raErr"] = np.full(n, np.radians(0.01 / 3600))
    t["pm_ra"] = rng.normal(0, 1e-8, n)
    t["epoch"] = np.full(n, 57000.0)
    t["resolved"] = rng.random(n) < 0.1
    return t


def _sorted(t):
    return t[np.argsort(np.asarray(t["id"]))]


def test_write_read_all(tmp_path):
    t = _stars(3000)
    folder = tmp_path / "ref_cats" / "ps1_pv3"
    shards = write_refcat(folder, t, depth=7)
    files = sorted(f for f in os.listdir(folder) if f[0].isdigit())
    assert files == sorted(f"{s}.fits" for s in shards)
    assert len(shards) > 50
    expected = set(htm_id(np.degrees(t["coord_ra"]), np.degrees(t["coord_dec"]), 7).tolist())
    assert set(shards) == expected
    assert (folder / "master_schema.fits").exists()
    cfg = (folder / "config.py").read_text()
    assert "config.indexer['HTM'].depth=7" in cfg and "ref_dataset_name='ps1_pv3'" in cfg
    assert len(read_refcat(folder)) == 3000
    back = _sorted(read_refcat(folder))
    assert back.colnames == t.colnames
    for name in t.colnames:
        assert np.array_equal(np.asarray(back[name]), np.asarray(t[name])), name
    assert back["coord_ra"].meta["TUNIT"] == "rad" and back["g_flux"].meta["TUNIT"] == "nJy"
    # every star is in the shard of its own trixel
    one = refcat._read_shard(folder / files[0])
    ids = htm_id(np.degrees(one["coord_ra"]), np.degrees(one["coord_dec"]), 7)
    assert set(ids.tolist()) == {int(files[0][:-5])}


def test_read_circle_loads_only_overlapping_shards(tmp_path, monkeypatch):
    t = _stars(3000)
    folder = tmp_path / "cat"
    write_refcat(folder, t, depth=6)
    opened = []
    real_read = refcat._read_shard
    monkeypatch.setattr(refcat, "_read_shard", lambda p: opened.append(p) or real_read(p))
    ra0, dec0, radius = 15.0, 0.0, 1.0
    got = read_refcat(folder, ra0, dec0, radius)
    n_files = len([f for f in os.listdir(folder) if f[0].isdigit()])
    wanted = set(htm_trixels_in_circle(ra0, dec0, radius, 6).tolist())
    read_ids = {int(os.path.basename(p)[:-5]) for p in opened}
    assert read_ids <= wanted and 0 < len(read_ids) < n_files
    assert got.meta["shards"] == sorted(read_ids)
    # all the stars inside the circle are there, and only stars of the loaded shards
    ra, dec = np.radians(ra0), np.radians(dec0)
    cosd = (np.sin(dec) * np.sin(t["coord_dec"])
            + np.cos(dec) * np.cos(t["coord_dec"]) * np.cos(t["coord_ra"] - ra))
    inside = set(np.asarray(t["id"])[cosd >= np.cos(np.radians(radius))].tolist())
    assert inside <= set(np.asarray(got["id"]).tolist())
    shard_of = htm_id(np.degrees(got["coord_ra"]), np.degrees(got["coord_dec"]), 6)
    assert set(shard_of.tolist()) <= read_ids
    trimmed = read_refcat(folder, ra0, dec0, radius, trim=True)
    assert set(np.asarray(trimmed["id"]).tolist()) == inside


def test_read_circle_with_no_shards(tmp_path):
    folder = tmp_path / "cat"
    write_refcat(folder, _stars(50), depth=7)
    got = read_refcat(folder, 180.0, 60.0, 0.5)
    assert len(got) == 0 and "g_flux" in got.colnames


def test_magnitudes():
    assert flux_to_mag(1.0) == pytest.approx(31.4)
    assert flux_to_mag(3631e9) == pytest.approx(0.0, abs=1e-3)      # 3631 Jy = AB 0
    m = np.array([12.0, 18.5, 24.0])
    np.testing.assert_allclose(flux_to_mag(mag_to_flux(m)), m, rtol=1e-14)
    np.testing.assert_allclose(mag_to_flux(31.4 - 2.5), 10.0)


def test_errors(tmp_path):
    with pytest.raises(MosaicError, match="no_such_cat.*no such reference catalog"):
        read_refcat(tmp_path / "no_such_cat")
    folder = tmp_path / "cat"
    shards = write_refcat(folder, _stars(200), depth=5)
    bad = folder / f"{shards[0]}.fits"
    bad.write_bytes(b"not a fits file" * 300)
    with pytest.raises(MosaicError, match=f"{shards[0]}.fits.*not a valid"):
        read_refcat(folder)
    raw = (folder / f"{shards[1]}.fits").read_bytes()
    write_refcat(folder, _stars(200), depth=5)
    (folder / f"{shards[1]}.fits").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MosaicError, match=f"{shards[1]}.fits.*truncated"):
        read_refcat(folder)
    (folder / f"{shards[1]}.fits").write_bytes(raw)
    (folder / "123.fits").write_bytes(raw)          # 7 bits: not an HTM id
    with pytest.raises(MosaicError, match="123.fits.*not an HTM trixel id"):
        read_refcat(folder)
    (folder / "123.fits").unlink()
    (folder / "524288.fits").write_bytes(raw)       # depth 8, but config.py says 5
    with pytest.raises(MosaicError, match="524288.fits.*depth 5"):
        read_refcat(folder)
    with pytest.raises(MosaicError, match="lacks column"):
        write_refcat(tmp_path / "x", Table({"id": [1], "ra": [0.0]}))
