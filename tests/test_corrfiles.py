"""meas_mosaic outputs: wcs- (TAN-SIP) and fcr- (flux correction) files.

The real files are from lsst-dm/legacy-meas_mosaic tests/data/8766 (HSC tract 8766, visits
7358 and 11506, CCDs 49, 50, 101, 102; GPL-3.0). The CCD yaws come from the package's
hsc_detectors.csv (lsst/obs_subaru hsc/camera/camera.py @ d4a8abe0).
"""
import csv
import os

import numpy as np
import pytest
from astropy.io import fits

from mosaicfit import MosaicError
from mosaicfit.model.fluxcorr import FluxCorrection, nquarter_from_yaw, read_fcr, rotate_pixels, write_fcr
from mosaicfit.io.wcsfile import read_wcs_file, read_wcs_header, write_wcs_file

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data", "meas_mosaic-outputs")
DETECTORS = os.path.join(HERE, os.pardir, "python", "mosaicfit", "data", "hsc",
                         "hsc_detectors.csv")
CCDS = (49, 50, 101, 102)
VISITS = (7358, 11506)
W, H = 2048, 4176


def wcs_path(visit, ccd):
    return os.path.join(DATA, f"wcs-{visit:07d}-{ccd:03d}.fits")


def fcr_path(visit, ccd):
    return os.path.join(DATA, f"fcr-{visit:07d}-{ccd:03d}.fits")


@pytest.fixture(scope="module")
def yaw():
    with open(DETECTORS) as f:
        return {int(r["id"]): float(r["yawDeg"]) for r in csv.DictReader(f)}


# ------------------------------------------------------------------ TAN-SIP, independently

def _sip_terms(header, name):
    """{(p, q): value} of the SIP cards NAME_p_q in a header."""
    out = {}
    for key in header:
        parts = key.split("_")
        if len(parts) == 3 and parts[0] == name and parts[1].isdigit() and parts[2].isdigit():
            out[int(parts[1]), int(parts[2])] = header[key]
    return out


def tan_sip_pix2sky(header, x, y):
    """RA, Dec (deg) of 0-based pixels from the header values: the SIP distortion of the
    offsets from CRPIX, the CD matrix, then the inverse gnomonic projection about CRVAL."""
    u = np.asarray(x, float) + 1.0 - header["CRPIX1"]
    v = np.asarray(y, float) + 1.0 - header["CRPIX2"]
    f = sum(c * u**p * v**q for (p, q), c in _sip_terms(header, "A").items())
    g = sum(c * u**p * v**q for (p, q), c in _sip_terms(header, "B").items())
    uu, vv = u + f, v + g
    xi = np.radians(header["CD1_1"] * uu + header["CD1_2"] * vv)
    eta = np.radians(header["CD2_1"] * uu + header["CD2_2"] * vv)
    ra0, dec0 = np.radians(header["CRVAL1"]), np.radians(header["CRVAL2"])
    den = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, den)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def _grid():
    x, y = np.meshgrid(np.linspace(0, W - 1, 9), np.linspace(0, H - 1, 13))
    return x.ravel(), y.ravel()


@pytest.mark.parametrize("ccd", CCDS)
def test_real_wcs_reads_exactly(ccd):
    header = read_wcs_header(wcs_path(7358, ccd))
    w = read_wcs_file(wcs_path(7358, ccd))
    assert header["CTYPE1"] == "RA---TAN-SIP" and header["CTYPE2"] == "DEC--TAN-SIP"
    assert w.sip.a_order == w.sip.b_order == w.sip.ap_order == w.sip.bp_order == 9
    for name, arr in (("A", w.sip.a), ("B", w.sip.b), ("AP", w.sip.ap), ("BP", w.sip.bp)):
        terms = _sip_terms(header, name)
        assert len(terms) > 40
        for p in range(10):
            for q in range(10 - p):
                assert arr[p, q] == terms.get((p, q), 0.0), (name, p, q)
    assert list(w.wcs.crpix) == [header["CRPIX1"], header["CRPIX2"]]
    assert list(w.wcs.crval) == [header["CRVAL1"], header["CRVAL2"]]
    assert np.array_equal(w.pixel_scale_matrix,
                          [[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])


@pytest.mark.parametrize("ccd", CCDS)
def test_real_wcs_pixel_to_sky(ccd):
    header = read_wcs_header(wcs_path(7358, ccd))
    w = read_wcs_file(wcs_path(7358, ccd))
    x, y = _grid()
    ra, dec = tan_sip_pix2sky(header, x, y)
    ra2, dec2 = w.all_pix2world(x, y, 0)
    dra = (ra2 - ra + 180.0) % 360.0 - 180.0
    assert np.max(np.abs(dra * np.cos(np.radians(dec)))) * 3600 < 1e-7   # arcsec
    assert np.max(np.abs(dec2 - dec)) * 3600 < 1e-7


@pytest.mark.parametrize("ccd", CCDS)
def test_wcs_write_from_header_round_trip(tmp_path, ccd):
    header = read_wcs_header(wcs_path(7358, ccd))
    out = tmp_path / f"wcs-0007358-{ccd:03d}.fits"
    write_wcs_file(out, header, fluxmag0=1e12, fluxmag0err=1e10, filter_name="HSC-I")
    again = read_wcs_header(out)
    wcs_keys = [k for k in header if k[:2] in ("A_", "B_", "AP", "BP", "CD", "CR", "CT")]
    assert len(wcs_keys) > 200
    for k in wcs_keys:
        if k.endswith("A") and k[:5] in ("CRVAL", "CRPIX", "CTYPE"):
            continue    # afw's 'A' pixel WCS, written anew
        assert again[k] == header[k], k
    with fits.open(out) as hdul:
        assert len(hdul) == 4
        assert hdul[0].header["FLUXMAG0"] == 1e12 and hdul[0].header["FLUXMAG0ERR"] == 1e10
        assert hdul[0].header["FILTER"] == "HSC-I"
        for h in hdul[1:]:
            assert h.header["NAXIS1"] == 0 and h.header["NAXIS2"] == 0
            assert h.header["CTYPE1"] == "RA---TAN-SIP"
        assert [h.header["EXTTYPE"] for h in hdul[1:]] == ["IMAGE", "MASK", "VARIANCE"]


def test_wcs_write_from_astropy_wcs(tmp_path):
    w = read_wcs_file(wcs_path(7358, 101))
    out = tmp_path / "wcs.fits"
    write_wcs_file(out, w)
    w2 = read_wcs_file(out)
    for k in ("a", "b", "ap", "bp"):
        assert np.array_equal(getattr(w.sip, k), getattr(w2.sip, k))
    assert np.array_equal(w.wcs.crpix, w2.wcs.crpix)
    assert np.array_equal(w.wcs.crval, w2.wcs.crval)
    assert np.array_equal(w.pixel_scale_matrix, w2.pixel_scale_matrix)
    x, y = _grid()
    assert np.array_equal(np.array(w.all_pix2world(x, y, 0)), np.array(w2.all_pix2world(x, y, 0)))


def test_wcs_errors(tmp_path):
    with pytest.raises(MosaicError, match="wcs-0000001-001.fits.*no such file"):
        read_wcs_file(tmp_path / "wcs-0000001-001.fits")
    with pytest.raises(MosaicError, match="fcr-0007358-049.fits.*no WCS"):
        read_wcs_file(fcr_path(7358, 49))
    cut = tmp_path / "wcs-cut.fits"
    raw = open(wcs_path(7358, 49), "rb").read()
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MosaicError, match="wcs-cut.fits.*truncated"):
        read_wcs_file(cut)
    junk = tmp_path / "wcs-junk.fits"
    junk.write_bytes(b"nonsense" * 500)
    with pytest.raises(MosaicError, match="wcs-junk.fits.*not a valid"):
        read_wcs_file(junk)


# ------------------------------------------------------------------ fcr files

EXPECTED_NQ = {49: 0, 50: 2, 101: 3, 102: 1}


def test_nquarter_from_yaw(yaw):
    assert {c: nquarter_from_yaw(yaw[c]) for c in CCDS} == EXPECTED_NQ


def _rotate_by_hand(x, y, nq):
    return {0: (x, y), 1: (4175 - y, x), 2: (2047 - x, 4175 - y), 3: (y, 2047 - x)}[nq]


def test_rotate_pixels():
    x, y = np.array([0.0, 2047, 10.5, 2000]), np.array([0.0, 4175, 4000.25, 3])
    for nq in range(4):
        got = rotate_pixels(x, y, nq)
        exp = _rotate_by_hand(x, y, nq)
        assert np.array_equal(got[0], exp[0]) and np.array_equal(got[1], exp[1])


@pytest.mark.parametrize("visit", VISITS)
@pytest.mark.parametrize("ccd", CCDS)
def test_real_fcr_reads_exactly(visit, ccd):
    fc = read_fcr(fcr_path(visit, ccd), EXPECTED_NQ[ccd])
    h = fits.getheader(fcr_path(visit, ccd))
    assert fc.order == h["ORDER"] == 7 and fc.ncoeff == h["NCOEFF"] == 36
    assert fc.chebyshev is False and h["CHEBYSHEV"] is False
    assert fc.absolute is False
    assert (fc.x0, fc.y0, fc.u_max, fc.v_max) == (h["X0"], h["Y0"], h["U_MAX"], h["V_MAX"])
    assert (fc.fluxmag0, fc.fluxmag0err) == (h["FLUXMAG0"], h["FLUXMAG0ERR"])
    for i in range(8):
        for j in range(8 - i):
            assert fc.coeffs[i, j] == h[f"C_{i}_{j}"]
    assert not fc.coeffs[np.add.outer(np.arange(8), np.arange(8)) > 7].any()


@pytest.mark.parametrize("ccd", CCDS)
def test_fcr_origin_is_the_optical_axis_in_the_rotated_frame(yaw, ccd):
    """X0, Y0 = minus the optical axis (CRPIX - 1 of the same CCD's wcs- file) turned by the
    CCD's quarter turns: the only reading of the files consistent for all 4 orientations."""
    nq = nquarter_from_yaw(yaw[ccd])
    fc = read_fcr(fcr_path(7358, ccd), nq)
    h = read_wcs_header(wcs_path(7358, ccd))
    ax, ay = _rotate_by_hand(h["CRPIX1"] - 1.0, h["CRPIX2"] - 1.0, nq)
    assert abs(fc.x0 + ax) < 1e-9 and abs(fc.y0 + ay) < 1e-9
    # so P at the optical axis is the constant term
    assert fc.mag(h["CRPIX1"] - 1.0, h["CRPIX2"] - 1.0) == pytest.approx(fc.coeffs[0, 0],
                                                                          abs=1e-15)
    if nq:
        # without the quarter turn the origin would be far off the axis
        ax0, ay0 = h["CRPIX1"] - 1.0, h["CRPIX2"] - 1.0
        assert abs(fc.x0 + ax0) + abs(fc.y0 + ay0) > 100


def _poly_by_hand(fc, x, y):
    xr, yr = _rotate_by_hand(np.asarray(x, float), np.asarray(y, float), fc.nq)
    u, v = (xr + fc.x0) / fc.u_max, (yr + fc.y0) / fc.v_max
    total = np.zeros_like(u)
    for i in range(fc.order + 1):
        for j in range(fc.order + 1 - i):
            total += fc.coeffs[i, j] * u**i * v**j
    return total


@pytest.mark.parametrize("ccd", CCDS)
def test_fcr_mag_and_factor(ccd):
    fc = read_fcr(fcr_path(11506, ccd), EXPECTED_NQ[ccd])
    x, y = _grid()
    p = fc.mag(x, y)
    np.testing.assert_allclose(p, _poly_by_hand(fc, x, y), rtol=1e-12, atol=1e-15)
    assert np.all(np.abs(p) < 0.2)          # a photometric correction, not garbage
    np.testing.assert_allclose(fc.factor(x, y), 10 ** (-0.4 * p), rtol=1e-15)
    jac = np.linspace(0.99, 1.01, len(x))
    np.testing.assert_allclose(fc.factor(x, y, jacobian=jac), 10 ** (-0.4 * p) * jac,
                               rtol=1e-15)
    assert np.ndim(fc.mag(10.0, 20.0)) == 0


def test_fcr_rotation_matters():
    fc = read_fcr(fcr_path(7358, 101), 3)
    unrotated = FluxCorrection(order=fc.order, coeffs=fc.coeffs, x0=fc.x0, y0=fc.y0, nq=0)
    x, y = np.array([0.0, 2047, 0, 2047]), np.array([0.0, 0, 4175, 4175])
    assert np.max(np.abs(fc.mag(x, y) - unrotated.mag(x, y))) > 0.05


def test_chebyshev_evaluation():
    rng = np.random.default_rng(5)
    order = 5
    coeffs = {(i, j): rng.normal() * 1e-2 for i in range(order + 1) for j in range(order + 1 - i)}
    fc = FluxCorrection(order=order, coeffs=coeffs, x0=-1000.0, y0=-2000.0, u_max=9000.0,
                        v_max=9500.0, chebyshev=True, nq=2)
    x, y = _grid()
    xr, yr = _rotate_by_hand(x, y, 2)
    u, v = (xr - 1000.0) / 9000.0, (yr - 2000.0) / 9500.0

    def t(n, z):        # Chebyshev T_n by the recurrence (meas_mosaic chebyshev.h)
        a, b = np.ones_like(z), z
        if n == 0:
            return a
        for _ in range(n - 1):
            a, b = b, 2 * z * b - a
        return b

    expected = sum(c * t(i, u) * t(j, v) for (i, j), c in coeffs.items())
    np.testing.assert_allclose(fc.mag(x, y), expected, rtol=1e-12, atol=1e-15)


def test_fcr_write_round_trip_and_layout(tmp_path):
    real = fcr_path(7358, 102)
    fc = read_fcr(real, 1)
    out = tmp_path / "fcr-0007358-102.fits"
    write_fcr(out, fc)
    again = read_fcr(out, 1)
    assert np.array_equal(again.coeffs, fc.coeffs)
    for k in ("order", "x0", "y0", "u_max", "v_max", "chebyshev", "absolute", "fluxmag0",
              "fluxmag0err", "nq"):
        assert getattr(again, k) == getattr(fc, k), k
    skip = {"CHECKSUM", "DATASUM", "COMMENT", "SIMPLE", "BITPIX", "NAXIS", "EXTEND"}
    h0, h1 = fits.getheader(real), fits.getheader(out)
    assert {k for k in h0 if k not in skip} == {k for k in h1 if k not in skip}
    for k in h0:
        if k not in skip:
            assert h1[k] == h0[k], k
    with fits.open(real) as a, fits.open(out) as b:
        assert [type(h) for h in a] == [type(h) for h in b]
        assert [h.header.get("EXTTYPE") for h in a] == [h.header.get("EXTTYPE") for h in b]
        assert [h.header.get("NAXIS1") for h in a] == [h.header.get("NAXIS1") for h in b]
        assert a[4].columns.names == b[4].columns.names
        assert len(b[4].data) == 0


def test_fcr_write_random_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    c = rng.normal(size=(8, 8)) * 10.0 ** -rng.integers(0, 30, (8, 8))
    c[np.add.outer(np.arange(8), np.arange(8)) > 7] = 0
    fc = FluxCorrection(order=7, coeffs=c, x0=-1023.9517503611, y0=rng.normal() * 1e4,
                        absolute=True, fluxmag0=rng.uniform(1e12, 2e12), nq=3)
    write_fcr(tmp_path / "f.fits", fc)
    again = read_fcr(tmp_path / "f.fits", 3)
    assert np.array_equal(again.coeffs, fc.coeffs)       # exact, every digit
    assert (again.x0, again.y0, again.fluxmag0, again.absolute) == \
        (fc.x0, fc.y0, fc.fluxmag0, True)


def test_fcr_errors(tmp_path):
    with pytest.raises(MosaicError, match="fcr-0000001-001.fits.*no such file"):
        read_fcr(tmp_path / "fcr-0000001-001.fits", 0)
    raw = open(fcr_path(7358, 49), "rb").read()
    cut = tmp_path / "fcr-cut.fits"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MosaicError, match="fcr-cut.fits.*truncated"):
        read_fcr(cut, 0)
    junk = tmp_path / "fcr-junk.fits"
    junk.write_bytes(b"SIMPLE? no." * 400)
    with pytest.raises(MosaicError, match="fcr-junk.fits.*not a valid"):
        read_fcr(junk, 0)
    with fits.open(fcr_path(7358, 49)) as hdul:
        del hdul[0].header["C_3_2"]
        hdul.writeto(tmp_path / "fcr-nokey.fits")
    with pytest.raises(MosaicError, match="fcr-nokey.fits.*C_3_2"):
        read_fcr(tmp_path / "fcr-nokey.fits", 0)
    with fits.open(fcr_path(7358, 49)) as hdul:
        hdul[0].header["X0"] = "nan"
        hdul.writeto(tmp_path / "fcr-nan.fits")
    with pytest.raises(MosaicError, match="fcr-nan.fits.*X0"):
        read_fcr(tmp_path / "fcr-nan.fits", 0)
    with pytest.raises(MosaicError, match="wcs-0007358-049.fits.*ORDER"):
        read_fcr(wcs_path(7358, 49), 0)
