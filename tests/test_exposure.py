"""CORR calexps: the afw exposure layout, round trips, metadata-only reads, errors.

The TAN-SIP header used below is a real meas_mosaic output (tests/data/meas_mosaic-outputs,
from lsst-dm/legacy-meas_mosaic tests/data/8766, GPL-3.0); the real wcs- file is itself an
afw exposure with 0x0 pixels, read here as one.
"""
import os

import numpy as np
import pytest
from astropy.io import fits

from mosaicfit import MosaicError
from mosaicfit.io.corr import DEFAULT_MASK_PLANES, Exposure, read_corr, write_corr
from mosaicfit.io.wcsfile import read_wcs_file, read_wcs_header

DATA = os.path.join(os.path.dirname(__file__), "data", "meas_mosaic-outputs")
WCS_FILE = os.path.join(DATA, "wcs-0007358-049.fits")
FCR_FILE = os.path.join(DATA, "fcr-0007358-049.fits")


def _exposure(ny=41, nx=23, mask_dtype=np.int32, seed=0):
    rng = np.random.default_rng(seed)
    header = fits.Header()
    header["FLUXMAG0"] = 1.2345678901234e12
    header["HIERARCH FLUXMAG0ERR"] = 3.5e10
    header["FILTER"] = "HSC-I"
    header["EXPTIME"] = 270.0
    header["OBJECT"] = "SSP_WIDE"
    header["HIERARCH SOME_LONG_KEYWORD"] = 17
    wcs_header = read_wcs_header(WCS_FILE)
    return Exposure(image=rng.normal(100, 10, (ny, nx)).astype(np.float32),
                    mask=rng.integers(0, 512, (ny, nx)).astype(mask_dtype),
                    variance=rng.uniform(50, 150, (ny, nx)).astype(np.float32),
                    header=header, wcs_header=wcs_header)


def _same_wcs(a, b):
    assert np.array_equal(a.wcs.crpix, b.wcs.crpix)
    assert np.array_equal(a.wcs.crval, b.wcs.crval)
    assert np.array_equal(a.pixel_scale_matrix, b.pixel_scale_matrix)
    for k in ("a", "b", "ap", "bp"):
        assert np.array_equal(getattr(a.sip, k), getattr(b.sip, k))


@pytest.mark.parametrize("mask_dtype", [np.int32, np.uint16])
def test_round_trip(tmp_path, mask_dtype):
    exp = _exposure(mask_dtype=mask_dtype)
    path = tmp_path / "CORR-0001234-049.fits"
    write_corr(path, exp)
    got = read_corr(path)
    for k in ("image", "mask", "variance"):
        a, b = getattr(exp, k), getattr(got, k)
        assert b.dtype == a.dtype and b.dtype.isnative, k
        assert np.array_equal(a, b), k
    assert got.fluxmag0 == 1.2345678901234e12
    assert got.fluxmag0err == 3.5e10
    assert got.filter == "HSC-I"
    assert got.exptime == 270.0
    assert got.shape == (41, 23)
    assert got.header["OBJECT"] == "SSP_WIDE" and got.header["SOME_LONG_KEYWORD"] == 17
    assert got.mask_planes == DEFAULT_MASK_PLANES
    _same_wcs(exp.wcs, got.wcs)
    _same_wcs(got.wcs, read_wcs_file(WCS_FILE))
    assert got.wcs.wcs.ctype[0] == "RA---TAN-SIP"


def test_layout(tmp_path):
    path = tmp_path / "CORR.fits"
    write_corr(path, _exposure(mask_dtype=np.uint16))
    with fits.open(path) as hdul:
        assert len(hdul) == 4
        assert hdul[0].header["FLUXMAG0"] == 1.2345678901234e12
        assert [h.header.get("EXTTYPE") for h in hdul[1:]] == ["IMAGE", "MASK", "VARIANCE"]
        assert hdul[1].header["BITPIX"] == -32 and hdul[3].header["BITPIX"] == -32
        assert hdul[2].header["BITPIX"] == 16 and hdul[2].header["BZERO"] == 32768
        for h in hdul[1:]:
            assert h.header["CTYPE1"] == "RA---TAN-SIP" and h.header["A_ORDER"] == 9
            assert h.header["CTYPE1A"] == "LINEAR" and h.header["LTV1"] == 0
        assert hdul[2].header["MP_SAT"] == 1 and hdul[2].header["MP_NO_DATA"] == 8
        assert "MP_SAT" not in hdul[1].header


def test_metadata_only(tmp_path):
    path = tmp_path / "CORR.fits"
    write_corr(path, _exposure())
    exp = read_corr(path, metadata_only=True)
    assert exp.image is None and exp.mask is None and exp.variance is None
    assert exp.shape == (41, 23)
    assert exp.fluxmag0 == 1.2345678901234e12 and exp.filter == "HSC-I"
    _same_wcs(exp.wcs, read_wcs_file(WCS_FILE))


def test_real_afw_exposure_with_0x0_pixels():
    exp = read_corr(WCS_FILE)
    assert exp.image is None and exp.mask is None and exp.variance is None
    assert exp.shape == (0, 0)
    assert exp.fluxmag0 is None            # FLUXMAG0 = 0: afw's "no calibration"
    assert exp.filter == "_unknown_"
    assert exp.mask_planes["DETECTED_NEGATIVE"] == 6
    _same_wcs(exp.wcs, read_wcs_file(WCS_FILE))


def test_0x0_round_trip(tmp_path):
    exp = _exposure()
    exp.image = exp.mask = exp.variance = None
    path = tmp_path / "CORR-meta.fits"
    write_corr(path, exp)
    got = read_corr(path)
    assert got.image is None and got.shape == (0, 0)
    _same_wcs(got.wcs, exp.wcs)


def test_set_wcs(tmp_path):
    exp = _exposure()
    other = read_wcs_file(os.path.join(DATA, "wcs-0007358-101.fits"))
    exp.set_wcs(other)
    path = tmp_path / "CORR.fits"
    write_corr(path, exp)
    _same_wcs(read_corr(path).wcs, other)


# ---------------------------------------------------------------- errors

def _check_error(path, *words, metadata_only=False):
    with pytest.raises(MosaicError) as e:
        read_corr(path, metadata_only=metadata_only)
    msg = str(e.value)
    assert os.path.basename(str(path)) in msg
    for w in words:
        assert w in msg
    assert "\n" not in msg


def test_error_missing(tmp_path):
    _check_error(tmp_path / "CORR-0000001-001.fits", "no such file")


def test_error_truncated(tmp_path):
    path = tmp_path / "CORR-cut.fits"
    write_corr(path, _exposure(ny=200, nx=100))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _check_error(path, "truncated")
    _check_error(path, "truncated", metadata_only=True)


def test_error_not_fits(tmp_path):
    path = tmp_path / "CORR-junk.fits"
    path.write_bytes(b"\x00\x01garbage" * 1000)
    _check_error(path, "not a valid")


def test_error_no_wcs(tmp_path):
    path = tmp_path / "CORR-nowcs.fits"
    exp = _exposure()
    exp.wcs_header = fits.Header()
    write_corr(path, exp)
    _check_error(path, "no WCS")
    _check_error(FCR_FILE, "no WCS")      # a real afw exposure without a WCS


@pytest.mark.parametrize("value", ["nan", -5.0, "abc"])
def test_error_bad_fluxmag0(tmp_path, value):
    path = tmp_path / "CORR-badzp.fits"
    exp = _exposure()
    exp.header["FLUXMAG0"] = value
    write_corr(path, exp)
    _check_error(path, "FLUXMAG0")


def test_error_no_image_hdu(tmp_path):
    path = tmp_path / "CORR-primary.fits"
    fits.PrimaryHDU().writeto(path)
    _check_error(path, "no image HDU")


def test_error_inconsistent_sizes(tmp_path):
    path = tmp_path / "CORR-sizes.fits"
    write_corr(path, _exposure(ny=10, nx=10))
    with fits.open(path) as hdul:
        hdul[3].data = np.zeros((5, 10), np.float32)
        hdul.writeto(tmp_path / "CORR-sizes2.fits")
    _check_error(tmp_path / "CORR-sizes2.fits", "sizes differ")
