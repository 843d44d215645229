"""The HSC camera model against values computed by the LSST camera code (obs_subaru)."""
import csv
import os

import numpy as np
import pytest

from mosaicfit.model.camera import hsc

from mosaicfit.model.sky import sky_to_tangent, tangent_to_sky

DATA = os.path.join(os.path.dirname(__file__), "data")
MAS = 1e-3 / 3600.0  # degrees


def _rows(name):
    with open(os.path.join(DATA, name), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cam():
    return hsc()


def test_detector_table(cam):
    assert len(cam.detectors) == 112
    assert cam.science_ccds == list(range(104))
    assert cam[0].name == "1_53" and cam[0].width == 2048 and cam[0].height == 4176
    # quarter turns of the fcr frame (reference section 6)
    assert [cam[c].nquarter for c in (49, 50, 101, 102)] == [0, 2, 3, 1]
    assert sum(cam[c].nquarter == 2 for c in cam.science_ccds) == 50


def test_448_corners(cam):
    """pixel -> focal plane to 1e-9 mm, focal plane -> field angle to 1e-6 arcsec."""
    rows = _rows("hsc_distortion_corners.csv")
    assert len(rows) == 448
    ids = {d.name: d.id for d in cam.detectors.values()}
    col = lambda k: np.array([float(r[k]) for r in rows])
    ccd = np.array([ids[r["detector_name"]] for r in rows])
    fx, fy = np.empty(len(rows)), np.empty(len(rows))
    for c in np.unique(ccd):
        m = ccd == c
        fx[m], fy[m] = cam.pixel_to_focal_plane(c, col("pix_x")[m], col("pix_y")[m])
    assert np.max(np.abs(fx - col("fp_x_mm"))) < 1e-9
    assert np.max(np.abs(fy - col("fp_y_mm"))) < 1e-9
    X, Y = cam.focal_plane_to_field_angle(col("fp_x_mm"), col("fp_y_mm"))
    arcsec = np.degrees(1.0) * 3600.0
    assert np.max(np.abs(X - col("fieldangle_x_rad"))) * arcsec < 1e-6
    assert np.max(np.abs(Y - col("fieldangle_y_rad"))) * arcsec < 1e-6
    # Our inverse is exact (Newton to convergence); LSST's stops at 0.005 focal-plane pixel
    # (7.5e-5 mm), which its round-trip column shows.
    bx, by = cam.field_angle_to_focal_plane(col("fieldangle_x_rad"), col("fieldangle_y_rad"))
    assert np.max(np.hypot(bx - col("fp_x_mm"), by - col("fp_y_mm"))) < 1e-9
    assert np.max(np.hypot(bx - col("fp_roundtrip_x_mm"), by - col("fp_roundtrip_y_mm"))) < 7.5e-5
    for c in np.unique(ccd):
        m = ccd == c
        px, py = cam.field_angle_to_pixel(c, col("fieldangle_x_rad")[m], col("fieldangle_y_rad")[m])
        assert np.allclose(px, col("pix_x")[m], atol=1e-7) and np.allclose(py, col("pix_y")[m], atol=1e-7)


def test_raw_sky_wcs_reproduces_real_visit_corners(cam):
    """LSST's raw WCS (boresight + camera, x flipped, rotated by sky angle + 180 deg) of 30 real
    (visit, CCD) pairs, CCD box padded by 250 px: all 120 corners to < 1 mas."""
    exps = {int(r["id"]): r for r in _rows("hsc-visit-regions/hsc_exposures.csv")}
    rows = _rows("hsc-visit-regions/hsc_visit_detector_corners.csv")
    assert len(rows) == 120
    # the file lists corners as (maxX, minY), (minX, minY), (minX, maxY), (maxX, maxY)
    order = [1, 0, 3, 2]
    worst = 0.0
    for r in rows:
        e = exps[int(r["visit"])]
        xs, ys = cam.ccd_corners(int(r["detector"]), pad=250)
        k = order[int(r["corner"])]
        ra, dec = cam.pixel_to_sky(int(r["detector"]), xs[k], ys[k], float(e["tracking_ra"]),
                                   float(e["tracking_dec"]), float(e["sky_angle"]))
        d = np.hypot((ra - float(r["ra_deg"])) * np.cos(np.radians(dec)), dec - float(r["dec_deg"]))
        worst = max(worst, d / MAS)
    assert worst < 1.0


def test_sky_round_trip(cam):
    x = np.array([0.0, 1000.0, 2047.0])
    y = np.array([0.0, 3000.0, 4175.0])
    for ccd in (0, 50, 101):
        ra, dec = cam.pixel_to_sky(ccd, x, y, 150.1, 2.2, 33.0)
        bx, by = cam.sky_to_pixel(ccd, ra, dec, 150.1, 2.2, 33.0)
        assert np.allclose(bx, x, atol=1e-8) and np.allclose(by, y, atol=1e-8)


def test_gnomonic_round_trip():
    rng = np.random.default_rng(3)
    ra = 359.5 + rng.uniform(-1, 1, 1000)
    dec = -89.0 + rng.uniform(-0.5, 0.5, 1000)
    xi, eta = sky_to_tangent(ra, dec, 359.7, -89.1)
    ra2, dec2 = tangent_to_sky(xi, eta, 359.7, -89.1)
    dra = (ra2 - ra + 180) % 360 - 180
    assert np.max(np.abs(dra * np.cos(np.radians(dec)))) < 1e-9 and np.max(np.abs(dec2 - dec)) < 1e-9
    # xi points east, eta north
    xi, eta = sky_to_tangent([10.01, 10.0], [0.0, 0.01], 10.0, 0.0)
    assert xi[0] > 0 and abs(eta[0]) < 1e-12 and eta[1] > 0 and abs(xi[1]) < 1e-12


def test_second_camera_is_data(tmp_path):
    """A camera is a folder of data files: a one-CCD toy camera without distortion."""
    (tmp_path / "dets.csv").write_text(
        "id,name,serial,detectorType,offset_x,offset_y,yawDeg,pitchDeg,rollDeg,refpos_x,refpos_y,"
        "pixelSize_x,pixelSize_y,bbox_x0,bbox_y0,bbox_x1,bbox_y1\n"
        "0,A,0,0,10.0,-5.0,90.0,0,0,49.5,49.5,0.01,0.01,0,0,99,99\n")
    (tmp_path / "dist.json").write_text(
        '{"pixelSize_mm": 0.01, "plateScale_arcsec_per_mm": 20.0, "terms_nx_ny": [[1,0],[0,1]],'
        ' "xCoeffs": [1.0, 0.0], "yCoeffs": [0.0, 1.0]}')
    (tmp_path / "camera.json").write_text(
        '{"name": "TOY", "detectors": "dets.csv", "distortion": "dist.json"}')
    from mosaicfit.model.camera import Camera
    toy = Camera.from_folder(str(tmp_path))
    x, y = toy.pixel_to_focal_plane(0, 59.5, 49.5)   # +10 px along x, CCD turned 90 deg
    assert np.allclose([x, y], [10.0, -4.9])
    X, Y = toy.focal_plane_to_field_angle(x, y)
    assert np.allclose(np.degrees([X, Y]) * 3600, [200.0, -98.0])


def test_bad_camera_folder(tmp_path):
    from mosaicfit import MosaicError
    from mosaicfit.model.camera import Camera
    with pytest.raises(MosaicError, match="camera.json"):
        Camera.from_folder(str(tmp_path))
