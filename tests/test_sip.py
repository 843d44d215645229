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


def test_many_mappings_sharing_samples_fit_as_each_alone():
    # fit_tan_sip_many factors the forward design once for the mappings with the same samples
    # (one CCD in several visits); each must be the fit it gets alone, on the sky and in AP/BP
    from mosaicfit.model.sip import fit_tan_sip_many
    cam = hsc()
    gx, gy = np.meshgrid(np.linspace(-0.5, 2047.5, 16), np.linspace(-0.5, 4175.5, 32))
    gx, gy = gx.ravel(), gy.ravel()
    rows = []
    for ccd in (0, 49, 101):
        ax, ay = cam.field_angle_to_pixel(ccd, 0.0, 0.0)
        for ra0, dec0, rot in ((35.7, -3.7, 270.0), (35.9, -3.5, 271.0), (150.1, 2.2, 90.0)):
            ra, dec = cam.pixel_to_sky(ccd, gx, gy, ra0, dec0, rot)
            # CD: the mapping's derivative at the axis, by finite differences
            ru, du = cam.pixel_to_sky(ccd, np.array([ax + 1.0]), np.array([ay]), ra0, dec0, rot)
            rv, dv = cam.pixel_to_sky(ccd, np.array([ax]), np.array([ay + 1.0]), ra0, dec0, rot)
            c = np.cos(np.radians(dec0))
            cd = np.array([[(ru[0] - ra0) * c, (rv[0] - ra0) * c], [du[0] - dec0, dv[0] - dec0]])
            rows.append((ra, dec, (ax + 1, ay + 1), (ra0, dec0), cd))
    order = [4, 0, 8, 1, 5, 2, 6, 3, 7]       # the CCDs' mappings interleaved
    rows = [rows[i] for i in order]
    box = (-0.5, 2047.5, -0.5, 4175.5)
    stack = lambda i: np.array([r[i] for r in rows])
    many = fit_tan_sip_many(np.tile(gx, (9, 1)), np.tile(gy, (9, 1)), stack(0), stack(1),
                            stack(2), stack(3), stack(4), 9, inverse_order=9,
                            inverse_box=[box] * 9)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 2047, 500), rng.uniform(0, 4175, 500)
    for k, r in enumerate(rows):
        alone = fit_tan_sip_many(gx[None], gy[None], r[0][None], r[1][None], [r[2]], [r[3]],
                                 [r[4]], 9, inverse_order=9, inverse_box=[box])[0]
        a, b = many[k].model(), alone.model()
        ra1, dec1 = a.pixel_to_sky(x, y)
        ra2, dec2 = b.pixel_to_sky(x, y)
        err = np.hypot((ra1 - ra2) * np.cos(np.radians(dec2)), dec1 - dec2)
        assert err.max() < 1e-4 * MAS
        ix1, iy1 = a.sky_to_pixel(ra2, dec2)
        ix2, iy2 = b.sky_to_pixel(ra2, dec2)
        assert np.max(np.hypot(ix1 - ix2, iy1 - iy2)) < 1e-6       # px


def test_sip_fit_card_text_is_the_cards_formatted():
    # SipFit.card_text (the writer's fast path) is cards_text(cards()), character for character
    from mosaicfit.model.basis import n_terms
    from mosaicfit.model.sip import SipFit, cards_text
    rng = np.random.default_rng(2)
    for order, iorder in ((9, 9), (9, 10), (12, 12), (2, 3), (1, 2)):
        nh, ni = n_terms(order) - 3, n_terms(iorder)
        hi = rng.normal(size=(2, nh)) * 10.0 ** -rng.integers(3, 40, size=(2, nh))
        f = SipFit(rng.normal(size=2) * 1e4, rng.normal(size=2) * 100,
                   rng.normal(size=(2, 2)) * 1e-5, order, hi, iorder,
                   rng.normal(size=(2, ni)) * 1e-9 if order >= 2 else None, "ICRS")
        assert f.card_text() == cards_text(f.cards())


def test_many_models_at_once_are_each_models_own_numbers():
    # pixels_to_sky (the fit's selection: every CCD's single-frame WCS in one pass) gives each
    # point exactly what its own SipModel gives: SIPs of several orders, one TAN without SIP,
    # CRVALs on both sides of RA 0
    from mosaicfit.model.sip import SipModel, pixels_to_sky
    rng = np.random.default_rng(1)
    models, ks, xs, ys = [], [], [], []
    for i, (ccd, order, crval) in enumerate([(0, 9, (35.7, -3.7)), (49, 3, (0.01, 2.0)),
                                             (101, 5, (359.99, 2.0)), (50, 0, (150.0, 60.0))]):
        cam, gx, gy, ra, dec, crpix = _raw(ccd)
        if order:
            h = fit_tan_sip(gx, gy, ra, dec, crpix, (35.7, -3.7), order)
            h["CRVAL1"], h["CRVAL2"] = crval
        else:
            h = WCS(naxis=2)
            h.wcs.ctype = ["RA---TAN", "DEC--TAN"]
            h.wcs.crpix, h.wcs.crval = [1024.5, 2088.5], crval
            h.wcs.cd = [[-4.7e-5, 1e-7], [2e-7, 4.7e-5]]
            h = h.to_header()
            h.rename_keyword("PC1_1", "CD1_1"), h.rename_keyword("PC2_2", "CD2_2")
            h["CD1_2"], h["CD2_1"] = 1e-7, 2e-7
        models.append(SipModel.from_header(h))
        n = 500
        ks.append(np.full(n, i))
        xs.append(rng.uniform(0, 2047, n))
        ys.append(rng.uniform(0, 4175, n))
    perm = rng.permutation(2000)
    k, x, y = (np.concatenate(a)[perm] for a in (ks, xs, ys))
    ra, dec = pixels_to_sky(models, k, x, y)
    for i, m in enumerate(models):
        on = k == i
        r1, d1 = m.pixel_to_sky(x[on], y[on])
        np.testing.assert_array_equal(ra[on], r1)
        np.testing.assert_array_equal(dec[on], d1)
    assert len(models[0].a) > 0 and not models[3].a
