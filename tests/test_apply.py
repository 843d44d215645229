"""Applying the mosaic solution: the flux-correction kernel against an independent numpy
evaluation from the header keys, calibrate_exposure / calibrate_catalog, and the commands
calibrateExposure.py / calibrateCatalog.py on a simulated repository (serial, -j 2 and a real
dask.distributed LocalCluster; bad inputs; re-runs; the truth)."""
import filecmp
import io
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from mosaicfit import MosaicError, cli
from mosaicfit.pipeline.apply import CORR_COLUMN, calibrate_catalog, calibrate_exposure, correction_factor, correction_image, flux_columns
from mosaicfit.pipeline.calibrate import Progress
from mosaicfit.config import CatalogConfig, ExposureConfig
from mosaicfit.model.camera import hsc
from mosaicfit.io.src import read_src
from mosaicfit.io.corr import Exposure, read_corr, write_corr
from mosaicfit.model.fluxcorr import FluxCorrection, read_fcr
from mosaicfit.io.layout import Repository
from mosaicfit.io.wcsfile import read_wcs_header

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data", "meas_mosaic-outputs")
W, H = 2048, 4176
NQ = {49: 0, 50: 2, 101: 3, 102: 1}     # the reference's quarter turns of these CCDs


def wcs_path(ccd, visit=7358):
    return os.path.join(DATA, f"wcs-{visit:07d}-{ccd:03d}.fits")


def fcr_path(ccd, visit=7358):
    return os.path.join(DATA, f"fcr-{visit:07d}-{ccd:03d}.fits")


# ------------------------------------------------------------------ independent evaluation
# Straight from the header keys with astropy.io.fits and long doubles; shares no code with
# mosaicfit (no fluxcorr, sip or wcsfile functions).

def _wcs_keys(path):
    with fits.open(path) as hdul:
        for hdu in hdul[1:2] + hdul[:1]:
            if "CRPIX1" in hdu.header:
                return hdu.header.copy()
    raise AssertionError(f"{path}: no WCS")


def _fcr_keys(path):
    with fits.open(path) as hdul:
        return hdul[0].header.copy()


def _rotate(x, y, nq):
    return {0: (x, y), 1: (H - 1 - y, x), 2: (W - 1 - x, H - 1 - y), 3: (y, W - 1 - x)}[nq]


def independent_P(fh, x, y, nq, interpolate=False):
    x = np.asarray(x, np.longdouble)
    y = np.asarray(y, np.longdouble)
    xr, yr = _rotate(x, y, nq)
    order = int(fh["ORDER"])

    def P(xr, yr):
        u = (xr + np.longdouble(fh["X0"])) / np.longdouble(fh["U_MAX"])
        v = (yr + np.longdouble(fh["Y0"])) / np.longdouble(fh["V_MAX"])
        out = np.zeros(np.broadcast(u, v).shape, np.longdouble)
        for i in range(order + 1):
            for j in range(order + 1 - i):
                out += np.longdouble(fh[f"C_{i}_{j}"]) * u ** i * v ** j
        return out

    if not interpolate:
        return P(xr, yr)
    # meas_mosaic getFCorImg: along x' in segments of 100, val0 + (val1 - val0) / interval * i
    width = W if nq % 2 == 0 else H
    xi = np.rint(xr)
    x0 = np.floor(xi / 100) * 100
    xend = np.minimum(x0 + 99, width - 1)
    interval = xend - x0 + 1
    p0, p1 = P(x0, yr), P(xend, yr)
    return p0 + (p1 - p0) / interval * (xi - x0)


def independent_J(wh, x, y):
    u = np.asarray(x, np.longdouble) + 1 - np.longdouble(wh["CRPIX1"])
    v = np.asarray(y, np.longdouble) + 1 - np.longdouble(wh["CRPIX2"])
    fu, fv = np.ones_like(u), np.zeros_like(u)
    gu, gv = np.zeros_like(u), np.ones_like(u)
    for key in wh:
        parts = key.split("_")
        if len(parts) != 3 or parts[0] not in ("A", "B") or not parts[1].isdigit():
            continue
        p, q, c = int(parts[1]), int(parts[2]), np.longdouble(wh[key])
        du = c * p * u ** (p - 1) * v ** q if p else 0
        dv = c * q * u ** p * v ** (q - 1) if q else 0
        if parts[0] == "A":
            fu, fv = fu + du, fv + dv
        else:
            gu, gv = gu + du, gv + dv
    return np.abs(fu * gv - fv * gu)


def independent_f(wh, fh, x, y, nq, interpolate=False):
    P = independent_P(fh, x, y, nq, interpolate)
    return (np.power(np.longdouble(10), -0.4 * P) * independent_J(wh, x, y)).astype(float)


def tan_sip_radec(wh, x, y):
    """RA, Dec (radians) of 0-based pixels: SIP, CD, inverse gnomonic projection."""
    u = np.asarray(x, float) + 1.0 - wh["CRPIX1"]
    v = np.asarray(y, float) + 1.0 - wh["CRPIX2"]
    fa = u.copy()
    fb = v.copy()
    for key in wh:
        parts = key.split("_")
        if len(parts) == 3 and parts[0] in ("A", "B") and parts[1].isdigit():
            t = wh[key] * u ** int(parts[1]) * v ** int(parts[2])
            if parts[0] == "A":
                fa += t
            else:
                fb += t
    xi = np.radians(wh["CD1_1"] * fa + wh["CD1_2"] * fb)
    eta = np.radians(wh["CD2_1"] * fa + wh["CD2_2"] * fb)
    ra0, dec0 = np.radians(wh["CRVAL1"]), np.radians(wh["CRVAL2"])
    den = np.cos(dec0) - eta * np.sin(dec0)
    ra = (ra0 + np.arctan2(xi, den)) % (2 * np.pi)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, den))
    return ra, dec


def _sample(n=3000, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, W, n)
    y = rng.integers(0, H, n)
    x[:4], y[:4] = [0, W - 1, 0, W - 1], [0, 0, H - 1, H - 1]       # the corners too
    return x, y


def _real(ccd):
    return read_wcs_header(wcs_path(ccd)), read_fcr(fcr_path(ccd), hsc()[ccd].nquarter)


# ------------------------------------------------------------------ the kernel


def test_quarter_turns_of_the_real_ccds():
    assert {c: hsc()[c].nquarter for c in NQ} == NQ


@pytest.mark.parametrize("ccd", sorted(NQ))
def test_kernel_image_matches_independent_numpy(ccd):
    wh, fc = _real(ccd)
    f = correction_image(wh, fc, W, H)
    assert f.shape == (H, W) and f.dtype == np.float64
    x, y = _sample()
    ref = independent_f(_wcs_keys(wcs_path(ccd)), _fcr_keys(fcr_path(ccd)), x, y, NQ[ccd])
    assert np.max(np.abs(f[y, x] / ref - 1)) < 1e-12
    # at points (catalogs), off the pixel centres too
    xs, ys = x + 0.37, y - 0.21
    pts = correction_factor(wh, fc, xs, ys)
    ref = independent_f(_wcs_keys(wcs_path(ccd)), _fcr_keys(fcr_path(ccd)), xs, ys, NQ[ccd])
    assert np.max(np.abs(pts / ref - 1)) < 1e-12
    # a real correction: a few per cent, not 1
    assert 0.5 < f.min() < f.max() < 1.5 and f.max() - f.min() > 1e-3


@pytest.mark.parametrize("ccd", sorted(NQ))
def test_interpolation_reproduces_meas_mosaic(ccd):
    wh, fc = _real(ccd)
    f = correction_image(wh, fc, W, H, interpolate=True)
    x, y = _sample(seed=2)
    ref = independent_f(_wcs_keys(wcs_path(ccd)), _fcr_keys(fcr_path(ccd)), x, y, NQ[ccd],
                        interpolate=True)
    assert np.max(np.abs(f[y, x] / ref - 1)) < 1e-12
    exact = correction_image(wh, fc, W, H)
    assert 1e-7 < np.max(np.abs(f / exact - 1)) < 1e-3
    with pytest.raises(MosaicError, match="full 2048 x 4176"):
        correction_image(wh, fc, 100, 100, interpolate=True)


def test_kernel_chebyshev_threads_and_edge_cases():
    wh, _ = _real(101)
    fc = FluxCorrection(order=4, coeffs={(0, 0): 0.1, (1, 0): 0.05, (0, 1): -0.03, (2, 1): 0.02,
                                         (1, 3): -0.01, (4, 0): 0.004},
                        x0=-1000.0, y0=-2000.0, u_max=1100.0, v_max=2100.0, chebyshev=True, nq=1)
    x, y = _sample(500, seed=3)
    f1 = correction_image(wh, fc, W, H, threads=1)
    f2 = correction_image(wh, fc, W, H, threads=2)
    assert np.array_equal(f1, f2)
    ref = (np.power(10.0, -0.4 * fc.mag(x, y)) * independent_J(_wcs_keys(wcs_path(101)), x, y)).astype(float)
    assert np.max(np.abs(f1[y, x] / ref - 1)) < 1e-12
    # |P| beyond what the fast exp2 covers: the exact fallback
    big = FluxCorrection(order=1, coeffs={(0, 0): 700.0, (1, 0): 1e-3})
    g = correction_image(None, big, 50, 3)
    assert np.allclose(g[1], 10 ** (-0.4 * (700 + 1e-3 * np.arange(50))), rtol=1e-13, atol=0)
    # no SIP: J = 1; no fcr: P = 0
    assert np.all(correction_image(None, None, 5, 4) == 1.0)
    assert correction_image(wh, fc, 0, 0).shape == (0, 0)
    # NaN positions give NaN
    assert np.isnan(correction_factor(wh, fc, [np.nan, 1.0], [1.0, 1.0])[0])


# ------------------------------------------------------------------ calibrate_exposure


def _exposure(shape=(H, W), seed=5):
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 30, shape).astype(np.float32)
    var = rng.uniform(50, 200, shape).astype(np.float32)
    mask = rng.integers(0, 64, shape).astype(np.int32)
    wcs_single = _wcs_keys(wcs_path(49))
    # a single-frame WCS: shifted a little, no SIP beyond order 2
    single = fits.Header()
    for k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2",
              "CD2_1", "CD2_2"):
        single[k] = wcs_single[k]
    single["CRVAL1"] += 1e-4
    single["A_ORDER"], single["B_ORDER"], single["A_2_0"], single["B_0_2"] = 2, 2, 1e-7, -1e-7
    single["LTV1"], single["LTV2"] = 0.0, 0.0
    single["MYKEY"] = ("kept", "an HDU-1 card that is not WCS")
    primary = fits.Header()
    primary["FLUXMAG0"] = 1.0e11
    primary["HIERARCH FLUXMAG0ERR"] = 1.0e9
    primary["EXPTIME"] = 200.0
    primary["FILTER"] = "HSC-I"
    primary["OBJECT"] = "SSP_WIDE"
    return Exposure(image=img, mask=mask, variance=var, header=primary, wcs_header=single)


@pytest.mark.parametrize("ccd", [50, 101])
def test_calibrate_exposure_pixels_headers(tmp_path, ccd):
    exp = _exposure(shape=(1200, W))           # the lower part of the CCD: any size works
    wh, fc = _real(ccd)
    img0, var0, mask0 = exp.image.copy(), exp.variance.copy(), exp.mask.copy()
    cal = calibrate_exposure(exp, wh, fc)
    assert np.array_equal(exp.image, img0)           # not in place by default
    x, y = _sample(seed=7)
    y = y % 1200
    f = independent_f(_wcs_keys(wcs_path(ccd)), _fcr_keys(fcr_path(ccd)), x, y, NQ[ccd])
    assert np.max(np.abs(cal.image[y, x] / (img0[y, x].astype(float) * f) - 1)) < 1e-6
    assert np.max(np.abs(cal.variance[y, x] / (var0[y, x].astype(float) * f * f) - 1)) < 1e-6
    assert np.array_equal(cal.mask, mask0)
    assert cal.header["FLUXMAG0"] == fc.fluxmag0 and cal.header["FLUXMAG0ERR"] == fc.fluxmag0err
    assert cal.header["OBJECT"] == "SSP_WIDE" and cal.header["EXPTIME"] == 200.0
    # written and read back: the mosaic WCS (SIP order 9) in the HDU-1 header, other cards kept
    out = tmp_path / "CALEXP.fits"
    write_corr(out, cal)
    back = read_corr(out)
    mosaic = _wcs_keys(wcs_path(ccd))
    for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD2_2", "A_ORDER", "A_3_4",
                "B_2_5", "AP_5_1"):
        assert back.wcs_header[key] == mosaic[key], key
    assert "A_2_0" not in back.wcs_header or back.wcs_header["A_2_0"] == mosaic.get("A_2_0", 0.0)
    assert back.wcs_header["MYKEY"] == "kept"
    assert np.array_equal(back.image, cal.image) and np.array_equal(back.mask, mask0)
    # in place: the arrays are reused
    exp2 = _exposure(shape=(1200, W))
    cal2 = calibrate_exposure(exp2, wh, fc, inplace=True)
    assert cal2.image is exp2.image and np.array_equal(cal2.image, cal.image)


def test_real_files_on_a_0x0_exposure(tmp_path):
    """The meas_mosaic files themselves (afw exposures with 0x0 pixels) as the exposure."""
    for ccd in NQ:
        exp = read_corr(wcs_path(ccd))              # 0x0 pixels, the mosaic WCS inside
        wh, fc = _real(ccd)
        cal = calibrate_exposure(exp, wh, fc)
        assert cal.image is None and cal.shape == (0, 0)
        assert cal.header["FLUXMAG0"] == fc.fluxmag0
        write_corr(tmp_path / f"CALEXP-{ccd}.fits", cal, archive_from=wcs_path(ccd))
        back = read_corr(tmp_path / f"CALEXP-{ccd}.fits")
        with fits.open(tmp_path / f"CALEXP-{ccd}.fits") as out, fits.open(wcs_path(ccd)) as src:
            assert len(out) == len(src) == 7 and out[0].header["AR_HDU"] == 5
            for k in (4, 5, 6):                   # the afw archive, carried over
                assert out[k].header["EXTTYPE"] == src[k].header["EXTTYPE"]
        raw_out = open(tmp_path / f"CALEXP-{ccd}.fits", "rb").read()
        raw_src = open(wcs_path(ccd), "rb").read()
        with fits.open(wcs_path(ccd)) as src:
            start = src[4].fileinfo()["hdrLoc"]
        assert raw_out.endswith(raw_src[start:])      # byte for byte
        write_corr(tmp_path / "bare.fits", cal)            # no archive: no dangling AR_HDU
        assert "AR_HDU" not in read_corr(tmp_path / "bare.fits").header
        assert back.fluxmag0 == pytest.approx(fc.fluxmag0, rel=1e-15)
        assert back.wcs_header["A_ORDER"] == 9
    # a small exposure (corner of the CCD) works in exact mode
    small = _exposure(shape=(40, 30))
    wh, fc = _real(102)
    cal = calibrate_exposure(small, wh, fc)
    yy, xx = np.mgrid[0:40, 0:30]
    f = independent_f(_wcs_keys(wcs_path(102)), _fcr_keys(fcr_path(102)), xx, yy, 1)
    assert np.allclose(cal.image, small.image * f, rtol=1e-6, atol=0)
    with pytest.raises(MosaicError, match="full 2048 x 4176"):
        calibrate_exposure(small, wh, fc, interpolate=True)


# ------------------------------------------------------------------ calibrate_catalog


def _lsst_table(n=40, seed=3):
    rng = np.random.default_rng(seed)
    t = Table()
    t["id"] = np.arange(1, n + 1, dtype=np.int64)
    t["coord_ra"] = np.zeros(n)
    t["coord_dec"] = np.zeros(n)
    t["coord_ra"].unit = "rad"
    t["base_SdssCentroid_x"] = rng.uniform(0, W - 1, n)
    t["base_SdssCentroid_y"] = rng.uniform(0, H - 1, n)
    t["base_SdssCentroid_x"][3] = np.nan
    t["base_PsfFlux_instFlux"] = rng.uniform(100, 1e5, n)
    t["base_PsfFlux_instFlux"][5] = -20.0
    t["base_PsfFlux_instFluxErr"] = rng.uniform(5, 50, n).astype(np.float32)
    t["base_CircularApertureFlux_12_0_instFlux"] = rng.uniform(100, 1e5, n)
    t["base_CircularApertureFlux_12_0_instFluxErr"] = rng.uniform(5, 50, n)
    t["base_GaussianFlux_flux"] = rng.uniform(100, 1e5, n)          # old spelling
    t["base_GaussianFlux_fluxSigma"] = rng.uniform(5, 50, n)
    t["base_SdssShape_instFlux_xx_Cov"] = rng.uniform(-1, 1, n).astype(np.float32)
    t["deblend_psfFlux"] = rng.uniform(100, 1e5, n)
    t["base_PsfFlux_apCorr"] = rng.uniform(0.9, 1.1, n)                # not a flux
    t["base_PsfFlux_flag"] = np.zeros(n, bool)
    t["base_ClassificationExtendedness_value"] = rng.uniform(0, 1, n)
    t["base_PsfFlux_instFlux"].unit = "ct"
    t["base_PsfFlux_instFlux"].description = "PSF flux"
    return t


def test_flux_columns_by_name():
    fluxes, others = flux_columns(_lsst_table())
    got = {f.flux: (f.err, f.mag, f.mag_err) for f in fluxes}
    assert got == {
        "base_PsfFlux_instFlux": ("base_PsfFlux_instFluxErr", "base_PsfFlux_mag", "base_PsfFlux_magErr"),
        "base_CircularApertureFlux_12_0_instFlux": ("base_CircularApertureFlux_12_0_instFluxErr",
                                                    "base_CircularApertureFlux_12_0_mag",
                                                    "base_CircularApertureFlux_12_0_magErr"),
        "base_GaussianFlux_flux": ("base_GaussianFlux_fluxSigma", "base_GaussianFlux_mag",
                                   "base_GaussianFlux_magErr")}
    assert sorted(others) == ["base_SdssShape_instFlux_xx_Cov", "deblend_psfFlux"]
    hsc3 = Table({"flux.psf": [1.0], "flux.psf.err": [0.1], "flux.psf.flags": [False],
                  "cmodel.flux": [2.0], "cmodel.flux.err": [0.2], "cmodel.exp.flux": [3.0],
                  "flux.psf.apcorr": [1.0], "flux_kron": [1.0], "flux_kron_err": [0.3],
                  "flux.aperture": [[1.0, 2.0, 3.0]], "flux.aperture.err": [[0.1, 0.2, 0.3]]})
    fluxes, _ = flux_columns(hsc3)
    got = {f.flux: (f.err, f.mag, f.mag_err) for f in fluxes}
    assert got == {"flux.psf": ("flux.psf.err", "mag.psf", "mag.psf.err"),
                   "cmodel.flux": ("cmodel.flux.err", "cmodel.mag", "cmodel.mag.err"),
                   "flux_kron": ("flux_kron_err", "mag_kron", "mag_kron_err"),
                   "flux.aperture": ("flux.aperture.err", "mag.aperture", "mag.aperture.err")}


def test_calibrate_catalog_lsst():
    t = _lsst_table()
    wh, fc = _real(50)
    out = calibrate_catalog(t, wh, fc)
    x, y = np.asarray(t["base_SdssCentroid_x"]), np.asarray(t["base_SdssCentroid_y"])
    ok = np.isfinite(x)
    f = np.full(len(t), np.nan)
    f[ok] = independent_f(_wcs_keys(wcs_path(50)), _fcr_keys(fcr_path(50)), x[ok], y[ok], 2)
    assert np.allclose(out[CORR_COLUMN][ok], f[ok], rtol=1e-12, atol=0)
    assert np.isnan(out[CORR_COLUMN][3])
    for name in ("base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr",
                 "base_CircularApertureFlux_12_0_instFlux", "base_GaussianFlux_fluxSigma",
                 "base_SdssShape_instFlux_xx_Cov", "deblend_psfFlux"):
        assert out[name].dtype == t[name].dtype, name
        rtol = 1e-6 if t[name].dtype == np.float32 else 1e-12
        assert np.allclose(out[name][ok], t[name][ok] * f[ok], rtol=rtol, atol=0), name
    assert np.array_equal(out["base_PsfFlux_apCorr"], t["base_PsfFlux_apCorr"])
    assert out["base_PsfFlux_instFlux"].unit == "ct"
    assert out["base_PsfFlux_instFlux"].description == "PSF flux"
    assert out.colnames[:len(t.colnames)] == t.colnames
    # coordinates from the mosaic WCS, radians
    ra, dec = tan_sip_radec(_wcs_keys(wcs_path(50)), x[ok], y[ok])
    assert np.max(np.abs(out["coord_ra"][ok] - ra)) < 1e-12
    assert np.max(np.abs(out["coord_dec"][ok] - dec)) < 1e-12
    assert np.isnan(out["coord_ra"][3])
    # magnitudes from FLUXMAG0 (afw Calib.getMagnitude), NaN for negative fluxes
    flux = t["base_PsfFlux_instFlux"] * f
    good = ok & (flux > 0)
    mag = np.full(len(t), np.nan)
    mag[good] = -2.5 * np.log10(flux[good] / fc.fluxmag0)
    assert np.allclose(out["base_PsfFlux_mag"][good], mag[good], rtol=0, atol=1e-12)
    err = 2.5 / np.log(10) * np.hypot(t["base_PsfFlux_instFluxErr"] / t["base_PsfFlux_instFlux"],
                                      fc.fluxmag0err / fc.fluxmag0)
    assert np.allclose(out["base_PsfFlux_magErr"][good], err[good], rtol=1e-6, atol=0)
    assert np.isnan(out["base_PsfFlux_mag"][5])
    assert str(out["base_PsfFlux_mag"].unit) == "mag"
    assert "base_GaussianFlux_mag" in out.colnames and "deblend_psfFlux_mag" not in out.colnames
    # without doApplyCalib: fluxes only
    plain = calibrate_catalog(t, wh, fc, apply_calib=False)
    assert plain.colnames == t.colnames + [CORR_COLUMN]
    assert np.array_equal(plain["base_PsfFlux_instFlux"], out["base_PsfFlux_instFlux"], equal_nan=True)
    # the input is untouched
    assert np.array_equal(t["base_PsfFlux_instFlux"], _lsst_table()["base_PsfFlux_instFlux"])


def test_calibrate_catalog_hsc3_vectors():
    n = 5
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, W, n), rng.uniform(0, H, n)
    t = Table()
    t["id"] = np.arange(n, dtype=np.int64)
    t["coord"] = np.zeros((n, 2))
    t["centroid.sdss"] = np.stack([x, y], axis=1)
    t["flux.psf"] = rng.uniform(1e3, 1e4, n)
    t["flux.psf.err"] = rng.uniform(10, 20, n)
    t["flux.aperture"] = rng.uniform(1e3, 1e4, (n, 3))
    t["flux.aperture.err"] = rng.uniform(10, 20, (n, 3))
    wh, fc = _real(101)
    out = calibrate_catalog(t, wh, fc)
    f = independent_f(_wcs_keys(wcs_path(101)), _fcr_keys(fcr_path(101)), x, y, 3)
    assert np.allclose(out["flux.aperture"], t["flux.aperture"] * f[:, None], rtol=1e-12)
    assert np.allclose(out["flux.psf.err"], t["flux.psf.err"] * f, rtol=1e-12)
    assert out["mag.aperture"].shape == (n, 3) and out["mag.aperture.err"].shape == (n, 3)
    assert np.allclose(out["mag.psf"], -2.5 * np.log10(t["flux.psf"] * f / fc.fluxmag0))
    ra, dec = tan_sip_radec(_wcs_keys(wcs_path(101)), x, y)
    assert np.allclose(out["coord"][:, 0], ra, atol=1e-12, rtol=0)
    assert np.allclose(out["coord"][:, 1], dec, atol=1e-12, rtol=0)
    # a catalog that is calibrated already
    with pytest.raises(MosaicError, match="mosaic.corr"):
        calibrate_catalog(out, wh, fc)
    # an fcr without FLUXMAG0: fluxes can be calibrated, magnitudes cannot
    fc0 = read_fcr(fcr_path(101), 3)
    fc0.fluxmag0 = 0.0
    with pytest.raises(MosaicError, match="doApplyCalib=False"):
        calibrate_catalog(t, wh, fc0)
    calibrate_catalog(t, wh, fc0, apply_calib=False)


# ------------------------------------------------------------------ configuration, progress


def test_config_and_arguments():
    assert CatalogConfig().update(["doApplyCalib=False"]).doApplyCalib is False
    assert ExposureConfig().update(["config.interpolate=true"]).interpolate is True
    with pytest.raises(MosaicError, match="did you mean doApplyCalib"):
        CatalogConfig().update(["doApplyCalb=False"])
    with pytest.raises(MosaicError, match="not a boolean"):
        ExposureConfig().update(["interpolate=maybe"])
    args = cli.build_parser().parse_args(
        ["calibrate-catalog", "ROOT", "--rerun=R", "--id", "visit=1", "ccd=2", "tract=0",
         "--config", "doApplyCalib=False", "-j", "8", "--clobber-config"])
    assert args.jobs == 8 and args.config == ["doApplyCalib=False"] and args.kind == "catalog"
    args = cli.build_parser().parse_args(["calibrate-exposure", "ROOT", "--rerun=R",
                                          "--processes", "3", "--scheduler", "tcp://h:1"])
    assert args.jobs == 3 and args.scheduler == "tcp://h:1"


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal():
    quiet = io.StringIO()
    p = Progress(3, "calibrateExposure", stream=quiet)
    p.update()
    p.write("calibrateExposure: skipping visit=1 ccd=2: no fcr")
    p.update(failed=True)
    p.close()
    assert quiet.getvalue() == "calibrateExposure: skipping visit=1 ccd=2: no fcr\n"
    tty = _Tty()
    p = Progress(4, "calibrateExposure", stream=tty)
    p.update()
    p.update(failed=True)
    p.close()
    text = tty.getvalue()
    assert "\r" in text and "2/4 CCDs, 1 failed" in text and text.endswith("\n")


# ------------------------------------------------------------------ the commands, end to end

IMAGE_KEYS = [(902798, 49), (902800, 101)]       # CCDs with pixels (nq 0 and 3)
CCDS = "40..60^101"
VISITS = "visit=902798..902802:2"


@pytest.fixture(scope="module")
def sim_repo(tmp_path_factory):
    """3 visits x 22 CCDs without pixels (enough stars for the fit), then full-size images
    for two (visit, ccd), then mosaic.py for tract 0."""
    from mosaicfit.sim.repository import _write_one
    from mosaicfit.sim import simulate_repository
    root = str(tmp_path_factory.mktemp("apply") / "repo")
    ccds = tuple(range(40, 61)) + (101,)
    sim = simulate_repository(root, rerun="sim", jobs=2, visits=3, ccds=ccds, seed=1)
    repo = Repository(root, "sim")
    for key in IMAGE_KEYS:
        assert key in sim.catalogs and key not in sim.missing
        _write_one(sim, repo, key, True, 1000 + key[1])
    rc = cli.main(["mosaic", root, "--rerun=sim", "--id", VISITS, f"ccd={CCDS}", "tract=0",
                   "--config", "fittingOrder=5", "fluxFitOrder=3",
                   # every CCD written, also (902800, 101) with its 4 stars (20 mas uncertain):
                   # these tests are about applying products (the rule: test_partial_runs)
                   "maxCcdPosError=50", "maxCcdMagError=50"])
    assert rc == 0
    return root


def _did(visit, ccd):
    return dict(visit=visit, ccd=ccd, pointing=1201, filter="HSC-I", tract=0)


def _ids(keys):
    out = []
    for v, c in keys:
        out += ["--id", f"visit={v}", f"ccd={c}", "tract=0"]
    return out


@pytest.fixture(scope="module")
def serial_run(sim_repo):
    rc1 = cli.main(["calibrate-exposure", sim_repo, "--rerun=sim"] + _ids(IMAGE_KEYS))
    rc2 = cli.main(["calibrate-catalog", sim_repo, "--rerun=sim", "--id", VISITS,
                    "ccd=48..50^101", "tract=0"])
    return rc1, rc2


def test_calexp_is_corr_times_f(sim_repo, serial_run):
    assert serial_run[0] == 0
    repo = Repository(sim_repo, "sim")
    for visit, ccd in IMAGE_KEYS:
        did = _did(visit, ccd)
        corr = read_corr(repo.find("calexp", **did))
        cal = read_corr(repo.path("calexp_calibrated", **did))
        assert repo.path("calexp_calibrated", **did).endswith(
            f"01201/HSC-I/corr/0000/CALEXP-{visit:07d}-{ccd:03d}.fits")
        wh, fh = _wcs_keys(repo.find("wcs", **did)), _fcr_keys(repo.find("fcr", **did))
        x, y = _sample(seed=ccd)
        f = independent_f(wh, fh, x, y, hsc()[ccd].nquarter)
        assert np.max(np.abs(cal.image[y, x] - corr.image[y, x] * f)
                      / np.abs(corr.image[y, x] * f)) < 1e-6
        assert np.max(np.abs(cal.variance[y, x] / (corr.variance[y, x] * f * f) - 1)) < 1e-6
        assert np.array_equal(cal.mask, corr.mask)
        assert cal.fluxmag0 == fh["FLUXMAG0"] and cal.fluxmag0err == fh["FLUXMAG0ERR"]
        assert cal.wcs_header["CRPIX1"] == wh["CRPIX1"] and cal.wcs_header["A_ORDER"] == wh["A_ORDER"]
        assert cal.header["EXPTIME"] == corr.header["EXPTIME"]
        assert cal.header["BORE-RA"] == corr.header["BORE-RA"]


def test_calsrc_is_src_times_f(sim_repo, serial_run):
    repo = Repository(sim_repo, "sim")
    n = lacking = 0
    for visit in (902798, 902800, 902802):
        for ccd in (48, 49, 50, 101):
            did = _did(visit, ccd)
            out = repo.path("src_calibrated", **did)
            if repo.find("src", **did) is None or repo.find("fcr", **did) is None:
                assert not os.path.exists(out)
                lacking += 1
                continue
            n += 1
            src, cal = read_src(repo.find("src", **did)), read_src(out)
            assert out.endswith(f"01201/HSC-I/output/0000/CALSRC-{visit:07d}-{ccd:03d}.fits")
            wh, fh = _wcs_keys(repo.find("wcs", **did)), _fcr_keys(repo.find("fcr", **did))
            x, y = np.asarray(src["base_SdssCentroid_x"]), np.asarray(src["base_SdssCentroid_y"])
            f = independent_f(wh, fh, x, y, hsc()[ccd].nquarter)
            assert np.allclose(cal[CORR_COLUMN], f, rtol=1e-12, atol=0)
            assert np.allclose(cal["base_PsfFlux_flux"], src["base_PsfFlux_flux"] * f, rtol=1e-12)
            assert np.allclose(cal["base_PsfFlux_fluxSigma"], src["base_PsfFlux_fluxSigma"] * f,
                               rtol=1e-6)
            ra, dec = tan_sip_radec(wh, x, y)
            assert np.max(np.abs(cal["coord_ra"] - ra)) < 1e-11
            good = cal["base_PsfFlux_flux"] > 0
            assert np.allclose(cal["base_PsfFlux_mag"][good],
                               -2.5 * np.log10(cal["base_PsfFlux_flux"][good] / fh["FLUXMAG0"]))
            assert cal.meta.get("afw_type") == "SOURCE"
    assert n >= 10 and serial_run[1] == (1 if lacking else 0)


def test_serial_catalog_run_reported_what_it_skipped(sim_repo, serial_run, capsys):
    # the same run again: all written CCDs are up to date, the missing ones are reported again
    rc = cli.main(["calibrate-catalog", sim_repo, "--rerun=sim", "--id", VISITS,
                   "ccd=48..50^101", "tract=0"])
    out, err = capsys.readouterr()
    assert rc == serial_run[1]
    assert "0 written" in out and "up to date" in out
    if rc:
        assert "calibrateCatalog: skipping visit=" in err and "no " in err


def test_aperture_photometry_gives_true_magnitudes(sim_repo, serial_run):
    from mosaicfit.sim import Truth
    truth = Truth(sim_repo)
    repo = Repository(sim_repo, "sim")
    R = 12
    yy, xx = np.mgrid[-R - 1:R + 2, -R - 1:R + 2]
    dm, err = [], []
    for visit, ccd in IMAGE_KEYS:
        cal = read_corr(repo.path("calexp_calibrated", **_did(visit, ccd)))
        s = truth.clean_stars(visit, ccd)
        d = truth.detections
        d = d[(np.asarray(d["visit"]) == visit) & (np.asarray(d["ccd"]) == ccd)]
        x, y, m = np.asarray(s["x_true"]), np.asarray(s["y_true"]), np.asarray(s["mag"])
        near = np.sum(np.hypot(x[:, None] - np.asarray(d["x_true"])[None],
                               y[:, None] - np.asarray(d["y_true"])[None]) < 25, axis=1)
        sel = (m > 17.5) & (m < 21) & (near == 1) & (x > R + 2) & (x < W - R - 3) & \
              (y > R + 2) & (y < H - R - 3)
        for xs, ys, ms in zip(x[sel], y[sel], m[sel]):
            xi, yi = int(round(xs)), int(round(ys))
            inside = (xx + xi - xs) ** 2 + (yy + yi - ys) ** 2 <= R * R
            win = np.s_[yi - R - 1:yi + R + 2, xi - R - 1:xi + R + 2]
            flux = cal.image[win][inside].sum(dtype=float)
            var = cal.variance[win][inside].sum(dtype=float)
            dm.append(-2.5 * np.log10(flux / cal.fluxmag0) - ms)
            err.append(2.5 / np.log(10) * np.sqrt(var) / flux)
    dm, err = np.array(dm), np.array(err)
    assert len(dm) >= 8
    # within the noise (plus 5 mmag for the mosaic's own photometric error)
    chi2 = np.mean(dm ** 2 / (err ** 2 + 0.005 ** 2))
    assert chi2 < 3.0, (dm, err)
    assert abs(np.median(dm)) < 0.01


def _compare_outputs(root, rerun_a, rerun_b, datasets_keys):
    a, b = Repository(root, rerun_a), Repository(root, rerun_b)
    n = 0
    for dataset, keys in datasets_keys:
        for visit, ccd in keys:
            pa, pb = a.path(dataset, **_did(visit, ccd)), b.path(dataset, **_did(visit, ccd))
            assert os.path.exists(pa) == os.path.exists(pb), pb
            if os.path.exists(pa):
                assert filecmp.cmp(pa, pb, shallow=False), pb
                n += 1
    return n


def test_dask_cluster_and_local_processes_give_identical_files(sim_repo, serial_run):
    distributed = pytest.importorskip("distributed")
    cat_keys = [(v, c) for v in (902798, 902800, 902802) for c in (48, 49, 50, 101)]
    with distributed.LocalCluster(n_workers=2, processes=True, host="127.0.0.1",
                                  threads_per_worker=1, dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        rc1 = cli.main(["calibrate-exposure", sim_repo, "--rerun=sim:dask", "--scheduler", addr]
                       + _ids(IMAGE_KEYS))
        rc2 = cli.main(["calibrate-catalog", sim_repo, "--rerun=sim:dask", "--scheduler", addr,
                        "--id", VISITS, "ccd=48..50^101", "tract=0"])
    assert (rc1, rc2) == serial_run
    assert _compare_outputs(sim_repo, "sim", "dask", [("calexp_calibrated", IMAGE_KEYS),
                                                      ("src_calibrated", cat_keys)]) >= 12
    rc = cli.main(["calibrate-catalog", sim_repo, "--rerun=sim:jobs", "-j", "2", "--id", VISITS,
                   "ccd=48..50^101", "tract=0"])
    assert rc == serial_run[1]
    assert _compare_outputs(sim_repo, "sim", "jobs", [("src_calibrated", cat_keys)]) >= 10


def test_bad_inputs_are_reported_and_skipped_then_completed(sim_repo, serial_run, capsys):
    repo = Repository(sim_repo, "sim:bad")
    repo.make_rerun_dir()
    # in the output rerun (searched first): an unreadable fcr for ccd 49 of visit 902798
    bad = repo.path("fcr", **_did(902798, 49))
    os.makedirs(os.path.dirname(bad), exist_ok=True)
    with open(Repository(sim_repo, "sim").find("fcr", **_did(902798, 49)), "rb") as f:
        raw = f.read()
    with open(bad, "wb") as f:
        f.write(raw[:len(raw) // 2])
    args = ["calibrate-catalog", sim_repo, "--rerun=sim:bad", "--id", "visit=902798",
            "ccd=48..50", "tract=0", "--id", "visit=902798", "ccd=50", "tract=7"]
    rc = cli.main(args)
    out, err = capsys.readouterr()
    assert rc == 1
    assert "skipping visit=902798 ccd=49 tract=0" in err and "fcr-0902798-049.fits" in err \
        and "truncated" in err
    assert "skipping visit=902798 ccd=50 tract=7: no wcs file" in err
    assert "4 CCDs: 2 written" in out and "2 failed" in out
    assert os.path.exists(repo.path("src_calibrated", **_did(902798, 48)))
    assert not os.path.exists(repo.path("src_calibrated", **_did(902798, 49)))
    # the fcr is repaired: a re-run completes the rest and keeps what was done
    os.unlink(bad)
    done = repo.path("src_calibrated", **_did(902798, 48))
    mtime = os.stat(done).st_mtime_ns
    rc = cli.main(args[:-4])
    out, _ = capsys.readouterr()
    assert rc == 0 and "1 written, 2 up to date" in out
    assert os.stat(done).st_mtime_ns == mtime
    # --overwrite recomputes, with identical bytes
    before = open(done, "rb").read()
    assert cli.main(args[:-4] + ["--overwrite"]) == 0
    assert open(done, "rb").read() == before
    # an input newer than the output makes it stale
    src = Repository(sim_repo, "sim").find("wcs", **_did(902798, 48))
    old = os.stat(src).st_mtime_ns - 10**9
    os.utime(done, ns=(old, old))
    assert cli.main(args[:-4]) == 0
    assert "1 written, 2 up to date" in capsys.readouterr()[0]


def test_interrupted_write_leaves_no_output(sim_repo, serial_run, monkeypatch):
    import mosaicfit.io.corr as corr_mod
    from mosaicfit.io.atomic import atomic_path
    from mosaicfit.pipeline.calibrate import make_tasks, run_task
    from mosaicfit.io.dataid import parse_ids, resolve

    def dying_write(hdul, path, tail=b""):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"SIMPLE  =                    T" + b" " * 1000)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(corr_mod, "write_fits", dying_write)       # the CALEXP writers:
    monkeypatch.setattr(corr_mod, "write_bytes", lambda data, path: dying_write(None, path))
    repo = Repository(sim_repo, "sim:interrupted")
    refs, _ = resolve(parse_ids([["visit=902798", "ccd=49", "tract=0"]]), repo.registry)
    res = run_task(make_tasks("exposure", repo, refs, ExposureConfig().to_dict())[0])
    assert res["status"] == "failed" and "No space left" in res["message"]
    folder = os.path.dirname(repo.path("calexp_calibrated", **_did(902798, 49)))
    assert os.listdir(folder) == []


def test_without_tract_every_tract_with_a_wcs_file(sim_repo, serial_run, capsys):
    repo = Repository(sim_repo, "sim")
    # a copy of tract 0's files as tract 3 in another rerun
    other = Repository(sim_repo, "sim:tracts")
    for ds in ("wcs", "fcr"):
        src = repo.find(ds, **_did(902798, 50))
        dst = other.path(ds, **dict(_did(902798, 50), tract=3))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(src, dst)
    rc = cli.main(["calibrate-catalog", sim_repo, "--rerun=sim:tracts", "--id", "visit=902798",
                   "ccd=50", "--config", "doApplyCalib=False"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "2 CCDs: 2 written" in out
    for tract in (0, 3):
        t = read_src(other.path("src_calibrated", **dict(_did(902798, 50), tract=tract)))
        assert CORR_COLUMN in t.colnames and "base_PsfFlux_mag" not in t.colnames
