"""Sky maps and tracts (mosaicfit.skymap), checked against what lsst.skymap and HSC data say.

Sources of the expected values:

* lsst/skymap ``tests/test_ringsSkyMap.py``: 26 tracts for 3 rings; the HSC configuration's
  tract 9813 (COSMOS) centred at (150.2479338842975, 2.2314049586776834) and, with
  ``version=0``, tract 9712 at (0, 0.7438016528925696); DM-14809 checks; wrap-around at RA=0;
  polar caps.
* lincc-frameworks/skymap-convert ``docs/A1 - Ring skymap assumptions.ipynb`` and
  ``docs/A2 - Tract boundaries.ipynb`` (outputs of the real lsst.skymap with 120 rings):
  18938 tracts; tract 2's inner region is RA 18..54, Dec -89.26..-87.77.
* lsst/jointcal ``tests/test_jointcal_hsc.py``: the testdata_jointcal HSC visits and CCDs in
  tests/data/hsc-visit-regions are processed as tract 9697 of ``hsc_rings_v1``.
* lsst-dm/legacy-meas_mosaic ``tests/data/8766``: tests/data/meas_mosaic-outputs are CCDs of
  HSC tract 8766.
* HSC tracts have 9 x 9 patches of 4000 pixels (patch names 0,0..8,8; Gen3 patch ids 0..80).
* lsst/ci_imsim ``configs/skymap.py``: a discrete tract of radius 6.4/9 deg at 0.2 arcsec/pixel
  has 7 x 7 patches of 4000 pixels (7/9 deg gives 8 x 8) and 13 x 13 patches of 2000 pixels.
"""
import csv
import json
import math
import os
from collections import defaultdict

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from mosaicfit import MosaicError
from mosaicfit.io.layout import Repository
from mosaicfit.io.skymap import DiscreteSkyMap, RingsSkyMap, load_skymap, make_discrete_skymap, save_skymap, skymap_from_dict

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def hsc():
    return RingsSkyMap()  # HSC-SSP configuration, version 1 (hsc_rings_v1)


@pytest.fixture(scope="module")
def hsc_v0():
    return RingsSkyMap(version=0)


def hsc_ccd_corners():
    """{(visit, detector): (ra[4], dec[4])} of the testdata_jointcal CCDs."""
    corners = defaultdict(list)
    with open(os.path.join(DATA, "hsc-visit-regions", "hsc_visit_detector_corners.csv")) as f:
        for row in csv.DictReader(f):
            corners[int(row["visit"]), int(row["detector"])].append(
                (int(row["corner"]), float(row["ra_deg"]), float(row["dec_deg"])))
    return {k: (np.array([c[1] for c in sorted(v)]), np.array([c[2] for c in sorted(v)]))
            for k, v in corners.items()}


def meas_mosaic_ccd(ccd):
    """Sky corners and centre of an HSC CCD (2048 x 4176 pixels) from a meas_mosaic wcs file."""
    header = fits.getheader(os.path.join(DATA, "meas_mosaic-outputs", f"wcs-0007358-{ccd:03d}.fits"), 1)
    wcs = WCS(header)
    pix = np.array([[-0.5, -0.5], [2047.5, -0.5], [2047.5, 4175.5], [-0.5, 4175.5], [1023.5, 2087.5]])
    sky = wcs.all_pix2world(pix, 0)
    return sky[:4, 0], sky[:4, 1], sky[4], (header["CRVAL1"], header["CRVAL2"])


def random_sky(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 360.0, n), np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))


# -- numbering ---------------------------------------------------------------------------------

def test_number_of_tracts(hsc):
    assert len(RingsSkyMap(num_rings=3)) == 26
    assert len(hsc) == 18938
    assert hsc.ring_nums[0] == 10
    assert len(list(RingsSkyMap(num_rings=3))) == 26


def test_inner_box_of_tract_2(hsc):
    ra_min, ra_max, dec_min, dec_max = hsc[2].inner_box
    assert (ra_min, ra_max) == pytest.approx((18.0, 54.0), abs=1e-9)
    assert (dec_min, dec_max) == pytest.approx((-89.26, -87.77), abs=0.005)


@pytest.mark.parametrize("version", [0, 1])
def test_known_tract_centres(version):
    skymap = RingsSkyMap(version=version)
    assert (skymap[9813].ctr_ra, skymap[9813].ctr_dec) == \
        pytest.approx((150.2479338842975, 2.2314049586776834), abs=1e-12)
    assert skymap.find_tract(150.1, 2.2) == 9813  # COSMOS
    assert skymap.find_tract(150.2479338842975, 2.2314049586776834) == 9813


def test_version_0_numbering(hsc, hsc_v0):
    n0 = hsc.ring_nums[0]
    assert (hsc_v0[9712].ctr_ra, hsc_v0[9712].ctr_dec) == pytest.approx((0.0, 0.7438016528925696), abs=1e-12)
    # version 0 repeats tract 1 and drops the first tract of the last ring
    assert (hsc_v0[1].ctr_ra, hsc_v0[1].ctr_dec) == (hsc_v0[n0 + 1].ctr_ra, hsc_v0[n0 + 1].ctr_dec)
    ra, dec = hsc_v0.tract_centres()
    expect = np.arange(len(hsc_v0))
    expect[n0 + 1] = 1
    np.testing.assert_array_equal(hsc_v0.find_tract(ra, dec), expect)
    ring_size = math.pi / 121
    dec_last = math.degrees((hsc.num_rings - 1) * ring_size + 0.5 * ring_size - 0.5 * math.pi)
    assert not hsc_v0[hsc_v0.find_tract(0.0, dec_last)].outer_contains(0.0, dec_last)
    assert hsc[hsc.find_tract(0.0, dec_last)].outer_contains(0.0, dec_last)
    # the numbering differs only for the tracts centred on RA = raStart of rings 1..119
    ra1, dec1 = hsc.tract_centres()
    differ = (ra != ra1) | (dec != dec1)
    assert np.all(ra1[differ] == 0.0) and differ.sum() == hsc.num_rings - 1


def test_dm14809(hsc):
    ra, dec = hsc.tract_centres()
    np.testing.assert_array_equal(hsc.find_tract(ra, dec), np.arange(len(hsc)))
    centres = set(zip((ra * 60).astype(int).tolist(), (dec * 60).astype(int).tolist()))
    assert len(centres) == len(hsc)


@pytest.mark.parametrize("version", [0, 1])
def test_wraparound(version):
    skymap = RingsSkyMap(version=version)
    tract = skymap[9712]
    for dra in (-10 / 3600.0, 10 / 3600.0):
        assert skymap.find_tract(tract.ctr_ra + dra, tract.ctr_dec) == 9712
        assert skymap.find_tract([tract.ctr_ra + dra], [tract.ctr_dec]).tolist() == [9712]


def test_poles(hsc):
    for ra in (0.0, 123.0, 321.0, 359.9):
        assert hsc.find_all_tracts(ra, 90.0) == [len(hsc) - 1]
        assert hsc.find_all_tracts(ra, -90.0) == [0]
        assert hsc.find_tract(ra, 90.0) == len(hsc) - 1 and hsc.find_tract(ra, -90.0) == 0


def test_find_tract_shapes(hsc):
    assert isinstance(hsc.find_tract(150.1, 2.2), int)
    assert hsc.find_tract(np.full((2, 3), 150.1), 2.2).shape == (2, 3)
    assert hsc.find_tract([np.nan, 150.1], [0.0, 2.2]).tolist() == [-1, 9813]
    with pytest.raises(IndexError):
        hsc[len(hsc)]
    with pytest.raises(IndexError):
        hsc[-1]
    with pytest.raises(TypeError):
        hsc["9813"]


# -- real HSC data -------------------------------------------------------------------------------

def test_meas_mosaic_ccds_are_in_tract_8766(hsc):
    for ccd in (49, 50, 101, 102):
        ra, dec, centre, crval = meas_mosaic_ccd(ccd)
        assert 8766 in hsc.find_tracts_overlapping(ra, dec)
        assert hsc.find_tract(*crval) == 8766  # the visit's pointing
        # CCD 102 sits on the eastern edge: its centre belongs to 8767, in 8766's overlap
        assert hsc.find_tract(*centre) == (8767 if ccd == 102 else 8766)
    assert hsc.find_tracts_overlapping(*meas_mosaic_ccd(102)[:2]) == [8766, 8767]


def test_jointcal_ccds_are_in_tract_9697(hsc):
    corners = hsc_ccd_corners()
    assert len(corners) == 30
    for ra, dec in corners.values():
        assert 9697 in hsc.find_tracts_overlapping(ra, dec)
        assert 9697 in hsc.find_tract_ids_overlapping(ra, dec)
    with open(os.path.join(DATA, "hsc-visit-regions", "hsc_exposures.csv")) as f:
        rows = list(csv.DictReader(f))
    pointing = hsc.find_tract([float(r["tracking_ra"]) for r in rows],
                              [float(r["tracking_dec"]) for r in rows])
    assert pointing.tolist() == [9697] * len(rows)


@pytest.mark.parametrize("tract_id", [9813, 9697, 9615, 8766])
def test_hsc_tract_geometry(hsc, tract_id):
    tract = hsc[tract_id]
    assert tract.num_patches == (9, 9)
    assert tract.bbox == (36000, 36000)
    assert list(tract.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    np.testing.assert_allclose(tract.wcs.wcs.crval, [tract.ctr_ra, tract.ctr_dec], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(tract.wcs.wcs.crpix, [18000.0, 18000.0])
    np.testing.assert_allclose(tract.wcs.wcs.cd, [[-0.168 / 3600, 0.0], [0.0, 0.168 / 3600]], rtol=1e-15)
    assert tract.contains(tract.ctr_ra, tract.ctr_dec)
    assert hsc.find_tract(tract.ctr_ra, tract.ctr_dec) == tract_id


# -- geometry invariants --------------------------------------------------------------------------

def test_inner_regions_tile_the_sphere(hsc):
    ra, dec = random_sky(300, seed=3)
    ids = hsc.find_tract(ra, dec)
    for r, d, t in zip(ra, dec, ids):
        holders = hsc.find_all_tracts(r, d)
        assert t in holders
        assert [h for h in holders if hsc[h].contains(r, d)] == [t]
    # vectorised contains agrees with find_tract
    tract = hsc[9813]
    r = tract.ctr_ra + np.linspace(-1.5, 1.5, 61)
    d = tract.ctr_dec + np.linspace(-1.5, 1.5, 61)[:, None]
    np.testing.assert_array_equal(tract.contains(r, d), hsc.find_tract(r, d) == 9813)


def test_inner_region_areas_add_up_to_the_sphere(hsc):
    area = 0.0
    for ring in range(-1, hsc.num_rings + 1):
        first_of_ring = 0 if ring == -1 else len(hsc) - 1 if ring == hsc.num_rings \
            else 1 + sum(hsc.ring_nums[:ring])
        count = 1 if ring in (-1, hsc.num_rings) else hsc.ring_nums[ring]
        ra_min, ra_max, dec_min, dec_max = hsc[first_of_ring].inner_box
        area += count * math.radians(ra_max - ra_min) * \
            (math.sin(math.radians(dec_max)) - math.sin(math.radians(dec_min)))
    assert area == pytest.approx(4 * math.pi, rel=1e-12)


def test_outer_region_holds_inner_region_plus_overlap(hsc):
    s = np.linspace(0.0, 1.0, 21)
    for tract_id in list(range(0, len(hsc), 379)) + [1, 9813, len(hsc) - 1]:
        tract = hsc[tract_id]
        ra_min, ra_max, dec_min, dec_max = tract.inner_box
        if tract_id in (0, len(hsc) - 1):
            ras = np.linspace(0.0, 360.0, 73)
            decs = np.full(ras.shape, dec_max if tract_id == 0 else dec_min)
        else:
            ras = np.concatenate([ra_min + (ra_max - ra_min) * s, np.full(21, ra_max),
                                  ra_min + (ra_max - ra_min) * s, np.full(21, ra_min)])
            decs = np.concatenate([np.full(21, dec_min), dec_min + (dec_max - dec_min) * s,
                                   np.full(21, dec_max), dec_min + (dec_max - dec_min) * s])
        x, y = tract.sky_to_pixel(ras % 360.0, decs)
        w, h = tract.bbox
        margin = np.minimum.reduce([x + 0.5, w - 0.5 - x, y + 0.5, h - 0.5 - y]) * 0.168 / 3600
        assert margin.min() > tract.tract_overlap
        # lsst testCorners: the vertex list lies in the tract's outer region
        for ra, dec in tract.lsst_vertices:
            assert tract_id in hsc.find_all_tracts(ra, dec)


def test_polygon_overlap_edges(hsc):
    tract = hsc[9813]
    w, h = tract.bbox

    def triangle(x, y, size=5.0):
        ra, dec = tract.wcs.wcs_pix2world([x - size, x + size, x], [y - size, y - size, y + size], 0)
        return ra, dec

    assert tract.overlaps_polygon(*triangle(w - 0.5 - 20, h / 2))
    assert not tract.overlaps_polygon(*triangle(w - 0.5 + 20, h / 2))
    assert not tract.overlaps_polygon(*triangle(h / 2, -0.5 - 20))
    # a polygon that swallows the whole tract overlaps it without any corner inside
    ra, dec = tract.ctr_ra, tract.ctr_dec
    big = hsc.find_tracts_overlapping([ra - 2, ra + 2, ra + 2, ra - 2], [dec - 2, dec - 2, dec + 2, dec + 2])
    assert 9813 in big and len(big) >= 9
    with pytest.raises(ValueError, match="too large"):
        hsc.find_tracts_overlapping([0, 120, 240], [50, 50, 50])


# -- discrete sky maps ----------------------------------------------------------------------------

def test_discrete_patch_counts():
    centre = dict(ra_list=[56.64971166122064], dec_list=[-36.4462532139527947602893], pixel_scale=0.2)
    assert DiscreteSkyMap(radius_list=[6.4 / 9], **centre)[0].num_patches == (7, 7)
    assert DiscreteSkyMap(radius_list=[7 / 9], **centre)[0].num_patches == (8, 8)
    small_patches = DiscreteSkyMap(radius_list=[6.4 / 9], patch_inner_dimensions=(2000, 2000), **centre)
    assert small_patches[0].num_patches == (13, 13)


def test_make_discrete_skymap_covers_the_visits():
    corners = hsc_ccd_corners()
    ra = np.concatenate([c[0] for c in corners.values()])
    dec = np.concatenate([c[1] for c in corners.values()])
    skymap = make_discrete_skymap(ra, dec)
    assert len(skymap) == 1 and skymap.tract_overlap == 0.0 and skymap.pixel_scale == 0.168
    tract = skymap[0]
    assert tract.wcs.wcs.ctype[0] == "RA---TAN"
    assert np.all(tract.contains(ra, dec)) and np.all(tract.outer_contains(ra, dec))
    np.testing.assert_array_equal(skymap.find_tract(ra, dec), 0)
    assert skymap.find_tract(tract.ctr_ra + 5.0, tract.ctr_dec) == -1
    for ra_c, dec_c in corners.values():
        assert skymap.find_tracts_overlapping(ra_c, dec_c) == [0]
    # bounding circle: every corner within the radius, the farthest one on it
    v = np.stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                  np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))], -1)
    c = np.array([math.cos(math.radians(tract.ctr_dec)) * math.cos(math.radians(tract.ctr_ra)),
                  math.cos(math.radians(tract.ctr_dec)) * math.sin(math.radians(tract.ctr_ra)),
                  math.sin(math.radians(tract.ctr_dec))])
    dist = np.degrees(np.arccos(np.clip(v @ c, -1, 1)))
    assert dist.max() == pytest.approx(tract.radius, abs=1e-7)
    bordered = make_discrete_skymap(ra, dec, border_deg=0.1)
    assert bordered[0].radius == pytest.approx(tract.radius + 0.1)


@pytest.mark.parametrize("algorithm", ["sphgeom", "geom"])
def test_discrete_centre_of_a_symmetric_field(algorithm):
    # a field symmetric about RA = 200: the centre is on the symmetry axis, and points inside
    # the convex hull change nothing
    ra = 200.0 + np.array([-1, 1, 1, -1, 0.2, -0.3]) / math.cos(math.radians(30.0))
    dec = 30.0 + np.array([-1, -1, 1, 1, 0.1, 0.4])
    skymap = make_discrete_skymap(ra[:4], dec[:4], algorithm=algorithm)
    tract = skymap[0]
    assert tract.ctr_ra == pytest.approx(200.0, abs=1e-9)
    with_interior = make_discrete_skymap(ra, dec, algorithm=algorithm)[0]
    assert (with_interior.ctr_ra, with_interior.ctr_dec, with_interior.radius) == \
        pytest.approx((tract.ctr_ra, tract.ctr_dec, tract.radius), abs=1e-12)


def test_discrete_tract_contains():
    skymap = DiscreteSkyMap([10.6750, 36.2074], [41.2667, -4.5833], [2, 2], tract_overlap=1.0,
                            projection="STG", pixel_scale=0.333)
    for tract in skymap:
        assert tract.contains(tract.ctr_ra, tract.ctr_dec)
        assert not tract.contains(np.nan, 0.0) and not tract.contains(0.0, np.nan)
        assert not tract.contains(tract.ctr_ra + 180.0, -tract.ctr_dec)
    assert skymap.find_tract([10.6750, 36.2074, 200.0], [41.2667, -4.5833, 0.0]).tolist() == [0, 1, -1]


def test_make_discrete_skymap_errors_and_append():
    with pytest.raises(MosaicError, match="no image corners"):
        make_discrete_skymap([], [])
    with pytest.raises(MosaicError, match="do not enclose"):
        make_discrete_skymap([10.0, 10.5, 11.0], [0.0, 0.0, 0.0])
    first = make_discrete_skymap([10, 11, 11, 10], [0, 0, 1, 1])
    both = make_discrete_skymap([50, 51, 51, 50], [0, 0, 1, 1], append_to=first)
    assert len(both) == 2 and both.ra_list[0] == first.ra_list[0]
    assert both.find_tract([10.5, 50.5], [0.5, 0.5]).tolist() == [0, 1]
    with pytest.raises(MosaicError, match="configurations differ"):
        make_discrete_skymap([50, 51, 51, 50], [0, 0, 1, 1], pixel_scale_arcsec=0.2, append_to=first)


# -- persistence -------------------------------------------------------------------------------

def test_skymap_file_round_trip(tmp_path, hsc, hsc_v0):
    discrete = make_discrete_skymap([10, 11, 11, 10], [0, 0, 1, 1], border_deg=0.05)
    SKYMAP_RELPATH = Repository.relative_path("skymap")
    assert SKYMAP_RELPATH == "deepCoadd/skyMap.json"
    for i, skymap in enumerate([hsc, hsc_v0, discrete]):
        path = tmp_path / "rerun" / f"R{i}" / SKYMAP_RELPATH
        save_skymap(skymap, path)
        d = json.loads(path.read_text())
        assert d["kind"] == skymap.kind and d["num_tracts"] == len(skymap)
        loaded = load_skymap(path)
        assert type(loaded) is type(skymap) and loaded == skymap and len(loaded) == len(skymap)
        tract_id = 9813 if skymap.kind == "rings" else 0
        a, b = skymap[tract_id], loaded[tract_id]
        assert (a.bbox, a.vertices, a.outer_vertices) == (b.bbox, b.vertices, b.outer_vertices)
        np.testing.assert_array_equal(a.wcs.wcs.crpix, b.wcs.wcs.crpix)
        assert skymap_from_dict(skymap.to_dict()) == skymap
    d = json.loads((tmp_path / "rerun" / "R2" / SKYMAP_RELPATH).read_text())
    assert d["config"]["raList"] == discrete.ra_list and d["config"]["radiusList"] == discrete.radius_list
    assert json.loads((tmp_path / "rerun" / "R0" / SKYMAP_RELPATH).read_text())["config"]["numRings"] == 120
    assert not [p for p in os.listdir(tmp_path / "rerun" / "R0" / "deepCoadd") if p.endswith(".tmp")]


@pytest.mark.parametrize("text, message", [
    (None, "does not exist"),
    ("{not json", "is not valid JSON"),
    ('{"kind": "rings"}', "is missing 'config'"),
    ('{"kind": "healpix", "config": {}}', "unknown sky map kind 'healpix'"),
    ('{"kind": "rings", "config": {"numRings": 120}}', "is missing 'projection'"),
    ('{"kind": "rings", "num_tracts": 5, "config": {"numRings": 120, "projection": "TAN", '
     '"tractOverlap": 0.0166, "pixelScale": 0.168, "patchInnerDimensions": [4000, 4000], '
     '"patchBorder": 100}}', "num_tracts is 5"),
    ('{"kind": "discrete", "config": {"raList": [1, 2], "decList": [1], "radiusList": [1], '
     '"projection": "TAN", "tractOverlap": 0, "pixelScale": 0.168, '
     '"patchInnerDimensions": [4000, 4000], "patchBorder": 100}}', "differ in length"),
    ('[1, 2]', "invalid: expected a JSON object"),
])
def test_bad_skymap_files(tmp_path, text, message):
    path = tmp_path / "skyMap.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(MosaicError, match=message) as info:
        load_skymap(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_polygon_overlap_fast_path_agrees_with_the_separating_axis_test():
    """overlaps_polygon answers 'inside' polygons without the full test: the same answer as
    the separating-axis test for CCD-sized polygons in, across and outside a tract."""
    from mosaicfit.io import skymap as S
    t = S.RingsSkyMap()[9813]
    rng = np.random.default_rng(5)
    answers = []
    for _ in range(1500):
        ra0, dec0 = t.ctr_ra + rng.uniform(-1.0, 1.0), t.ctr_dec + rng.uniform(-1.0, 1.0)
        w, h, th = rng.uniform(0.001, 0.2), rng.uniform(0.001, 0.3), rng.uniform(0, np.pi)
        c = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) @ np.array(
            [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        ra, dec = ra0 + c[:, 0] / np.cos(np.radians(dec0)), dec0 + c[:, 1]
        vecs = S._polygon_vectors(ra, dec)
        ctr, rad = S._bounding_circle(vecs)
        far = float(S._angle_between(ctr[None, :], t._ctr_vec)[0]) > t._outer_radius + rad + 1e-12
        full = not far and S._convex_overlap_2d(S._gnomonic(t._outer_vecs, t._ctr_vec),
                                                S._gnomonic(vecs, t._ctr_vec))
        assert t.overlaps_polygon(ra, dec) == full
        answers.append(full)
    assert 100 < sum(answers) < len(answers)       # both answers were tested


def test_many_polygons_find_what_each_finds_alone(hsc):
    # find_tracts_overlapping_many (a visit's CCDs at once) gives each polygon the tracts
    # find_tracts_overlapping gives it: CCD-sized quadrilaterals of fields at a tract corner
    # (9813/9814 and neighbours), at RA 0, near a pole; and on a discrete sky map
    rng = np.random.default_rng(5)
    fields = [(150.99, 2.23), (0.05, -0.4), (33.0, 84.0)]
    discrete = DiscreteSkyMap([150.6, 151.4, 0.2, 33.0], [2.23, 2.0, -0.4, 84.0],
                              [0.6, 0.6, 0.7, 0.8])
    for sm in (hsc, discrete):
        straddling = 0
        for ra0, dec0 in fields:
            polys = []
            for _ in range(120):
                r, d = ra0 + rng.uniform(-0.8, 0.8) / max(np.cos(np.radians(dec0)), 0.1), \
                    dec0 + rng.uniform(-0.8, 0.8)
                h, w = 0.095, 0.047 * rng.uniform(0.8, 1.2)
                polys.append((np.array([r - w, r + w, r + w, r - w]) % 360.0,
                              np.array([d - h, d - h, d + h, d + h]).clip(-89.9, 89.9)))
            many = sm.find_tracts_overlapping_many(polys)
            alone = [sm.find_tracts_overlapping(*p) for p in polys]
            assert many == alone
            straddling += sum(len(a) > 1 for a in alone)
        assert straddling > 0                               # some straddle tract borders
