"""TAN-SIP fitting: exact for polynomial-about-CRPIX mappings, read the same by astropy."""
import numpy as np
from astropy.wcs import WCS

from mosaicfit.model.camera import hsc
from mosaicfit.model.sip import fit_tan_sip, sip_inverse, sip_pixel_to_sky

MAS = 1 / 3.6e6


def _raw(ccd, n=20):
    cam = hsc()
    gx, gy = np.meshgrid(np.linspace(0, 2047, n), np.linspace(0, 4175, 2 * n))
    gx, gy = gx.ravel(), gy.ravel()
    ra, dec = cam.pixel_to_sky(ccd, gx, gy, 35.7, -3.7, 270.0)
    ax, ay = cam.field_angle_to_pixel(ccd, 0.0, 0.0)   # the optical axis in CCD pixels
    return cam, gx, gy, ra, dec, (ax + 1, ay + 1)


def test_order9_sip_reproduces_hsc_optics_on_every_kind_of_ccd():
    # the raw HSC mapping is an order-9 polynomial about the optical axis + gnomonic: exact
    rng = np.random.default_rng(0)
    for ccd in (0, 49, 50, 101, 102):
        cam, gx, gy, ra, dec, crpix = _raw(ccd)
        h = fit_tan_sip(gx, gy, ra, dec, crpix, (35.7, -3.7), 9,
                        inverse_box=(-0.5, 2047.5, -0.5, 4175.5))
        x, y = rng.uniform(0, 2047, 3000), rng.uniform(0, 4175, 3000)
        rt, dt = cam.pixel_to_sky(ccd, x, y, 35.7, -3.7, 270.0)
        rw, dw = WCS(h).all_pix2world(x, y, 0)
        err = np.hypot((rw - rt) * np.cos(np.radians(dt)), dw - dt)
        assert err.max() < 1e-3 * MAS          # 1 micro-arcsec
        rs, ds = sip_pixel_to_sky(h, x, y)
        assert np.max(np.hypot((rs - rw) * np.cos(np.radians(dt)), ds - dw)) < 1e-4 * MAS
        ix, iy = sip_inverse(h, rt, dt)       # AP/BP alone, no iteration
        assert np.max(np.hypot(ix - x, iy - y)) < 1e-3


def test_low_order_fit_has_the_expected_residual():
    # order 3 about the CCD centre cannot follow the order-9 optics exactly, but gets close
    cam, gx, gy, ra, dec, _ = _raw(0)
    crpix = (1024.5, 2088.5)
    crval = cam.pixel_to_sky(0, crpix[0] - 1, crpix[1] - 1, 35.7, -3.7, 270.0)
    h = fit_tan_sip(gx, gy, ra, dec, crpix, crval, 3)
    rs, ds = sip_pixel_to_sky(h, gx, gy)
    err = np.hypot((rs - ra) * np.cos(np.radians(dec)), ds - dec) / MAS
    assert 1e-3 < err.max() < 50.0   # mas
    w = WCS(h)
    assert w.sip is not None and h["A_ORDER"] == 3 and h["AP_ORDER"] == 4
