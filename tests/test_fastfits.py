"""The astropy-identical FITS writing of io.fits (astropy_card_image, hdu_bytes) against
astropy itself."""
import io

import numpy as np
import pytest
from astropy.io import fits

from mosaicfit.io.fits import astropy_card_image, astropy_image_of, hdu_bytes

VALUES = [0, 1, -7, 2 ** 40, np.int64(5), np.int32(-3), True, False, 0.0, -0.0, 1.5, 200.0,
          1e-5, -1.2345678901234567e-300, 1.0000000000000002e22, 123456789012345.678,
          np.float64(2.5e-17), np.float32(0.1), np.float32(3e38), "", "a", "HSC-I",
          "it's", "x" * 30, "x" * 70, "trailing  ", " lead", np.bool_(True), 12.0 ** 30]
COMMENTS = [None, "", "a comment", "[deg] telescope boresight RA (commanded)", "c" * 60]


@pytest.mark.parametrize("key", ["A", "CRVAL1", "FLUXMAG0", "MP_BAD", "HIERARCH LONGKEYNAME",
                                 "FLUXMAG0ERR", "COMMENT"])
def test_card_images_equal_astropy(key):
    for v in VALUES:
        for c in COMMENTS:
            if key == "COMMENT" and not isinstance(v, str):
                continue
            want = fits.Card(key, v, c).image
            assert astropy_card_image(key, v, c) == want, (key, v, c)
            assert astropy_image_of(fits.Card(key, v, c)) == want, (key, v, c)
            h = fits.Header()
            h[key] = (v, c)
            assert astropy_image_of(h.cards[0]) == h.cards[0].image


def test_random_floats():
    rng = np.random.default_rng(1)
    for x in np.concatenate([rng.normal(0, 1, 300) * 10.0 ** rng.integers(-300, 300, 300),
                             rng.normal(0, 1, 300)]):
        assert astropy_card_image("A_1_2", float(x)) == fits.Card("A_1_2", float(x)).image


def test_hdu_bytes_equal_astropy_checksums():
    rng = np.random.default_rng(2)
    for data in (None, rng.normal(size=(3, 5)).astype(np.float32),
                 rng.integers(0, 1000, (7, 3)).astype(np.int32)):
        hdu = fits.ImageHDU(data=data)
        hdu.header["CRVAL1"] = (150.2, "x")
        hdu.header["OBJECT"] = "SSP"
        images = [c.image for c in hdu.header.cards]
        raw = b"" if data is None else np.asarray(data).astype(data.dtype.newbyteorder(">")) \
            .tobytes()
        hdu.add_checksum(when="HDU checksum")
        primary = fits.PrimaryHDU()
        primary.add_checksum(when="HDU checksum")
        buf = io.BytesIO()
        fits.HDUList([primary, hdu]).writeto(buf, checksum=False)
        prim = hdu_bytes([c.image for c in primary.header.cards
                          if c.keyword not in ("CHECKSUM", "DATASUM")])
        assert prim + hdu_bytes(images, raw) == buf.getvalue()


def _astropy_src_bytes(table, tmp_path, name):
    from mosaicfit.io.afwtable import afw_table_hdu
    from mosaicfit.io.atomic import write_fits
    p = tmp_path / name
    write_fits(fits.HDUList([fits.PrimaryHDU(), afw_table_hdu(table, afw_type="SOURCE")]), p)
    return p.read_bytes()


def test_src_bytes_equal_astropy_path(tmp_path):
    """write_src (template per schema + numpy rows) writes the bytes of the astropy path, for
    the first table of a schema, the next ones, an empty one and a schema it cannot template."""
    from astropy.table import Table
    from mosaicfit.io.src import write_src
    rng = np.random.default_rng(3)

    def table(n, extra=None):
        t = Table()
        t["id"] = np.arange(n, dtype=np.int64)
        t["coord_ra"] = rng.normal(size=n)
        t["base_SdssCentroid_xSigma"] = rng.normal(size=n).astype(np.float32)
        t["coord"] = rng.normal(size=(n, 2))
        t["nchild"] = rng.integers(0, 5, n).astype(np.int32)
        for k in range(11):
            t[f"flag_{k}"] = rng.random(n) < 0.3
        if extra is not None:
            t["name"] = np.array(["a", "bcd"] * (n // 2) + ["e"] * (n % 2))
        return t

    for i, t in enumerate([table(17), table(40), table(0), table(1), table(9, extra=True),
                           table(9, extra=True)]):
        write_src(tmp_path / f"new{i}.fits", t)
        assert (tmp_path / f"new{i}.fits").read_bytes() == \
            _astropy_src_bytes(t, tmp_path, f"old{i}.fits"), i


@pytest.mark.parametrize("pixels", [None, "int32", "uint16"])
def test_corr_bytes_equal_astropy_path(tmp_path, pixels):
    from mosaicfit.io.atomic import write_fits
    from mosaicfit.io.corr import Exposure, exposure_hdulist, write_corr
    from mosaicfit.io.fits import header_has_wcs, wcs_header
    rng = np.random.default_rng(4)
    h = fits.Header()
    h["FLUXMAG0"] = 1.2e13
    h["HIERARCH FLUXMAG0ERR"] = 1.3e11
    h["FILTER"] = "HSC-I"
    h["BORE-RA"] = (149.9696421824901, "[deg] telescope boresight RA (commanded)")
    h["EXTEND"] = True
    w = fits.Header()
    for k, v in (("CTYPE1", "RA---TAN-SIP"), ("CTYPE2", "DEC--TAN-SIP"), ("CRPIX1", 1024.5),
                 ("CRPIX2", 2088.5), ("CRVAL1", 150.46538331605063), ("CRVAL2", 2.52610217),
                 ("CD1_1", -2.1e-05), ("CD1_2", -3.9e-05), ("CD2_1", -3.96e-05),
                 ("CD2_2", 2.28e-05), ("A_ORDER", 2), ("A_2_0", 4.0e-06), ("EXTTYPE", "X"),
                 ("OTHER", 3)):
        w[k] = v
    img = mask = var = None
    if pixels:
        img = rng.normal(size=(6, 4)).astype(np.float32)
        mask = rng.integers(0, 9, (6, 4)).astype(pixels)
        var = rng.random((6, 4))
    exp = Exposure(image=img, mask=mask, variance=var, header=h, wcs_header=w)
    write_corr(tmp_path / "new.fits", exp)
    hdul = exposure_hdulist(h, img, mask, var, image_header=w,
                            wcs_cards=wcs_header(w) if header_has_wcs(w) else None)
    write_fits(hdul, tmp_path / "old.fits")
    assert (tmp_path / "new.fits").read_bytes() == (tmp_path / "old.fits").read_bytes()


def test_wcs_file_from_text_equals_astropy_path(tmp_path):
    """write_wcs_file given card text (the mosaic's products) takes the WCS cards from the text
    itself; the bytes are those of the astropy path (the same text as a parsed Header)."""
    from mosaicfit.io.wcsfile import write_wcs_file
    from mosaicfit.model.sip import cards_text, fit_tan_sip
    x, y = np.meshgrid(np.linspace(0, 2047, 9), np.linspace(0, 4175, 17))
    ra = 150.0 + 4.7e-5 * (x - 1024) + 1e-12 * (x - 1024) ** 2 * (y - 2000)
    dec = 2.0 + 4.7e-5 * (y - 2088) - 3e-13 * (y - 2088) ** 3
    cards, _ = fit_tan_sip(x, y, ra, dec, (1024.5, 2088.5), (150.0, 2.0), 5, as_cards=True)
    text = cards_text(cards)
    extra = [("MFTURB", False, "turbulence field removed (mosaicfit)")]
    write_wcs_file(tmp_path / "a.fits", text, fluxmag0=1.5e13, filter_name="HSC-I", extra=extra)
    write_wcs_file(tmp_path / "b.fits", fits.Header.fromstring(text), fluxmag0=1.5e13,
                   filter_name="HSC-I", extra=extra)
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "b.fits").read_bytes()
    bad = text.replace(text[text.index("CRVAL1"):][:80],
                       "CRVAL1  = 'x'".ljust(80))
    with pytest.raises(Exception, match="CRVAL1"):
        write_wcs_file(tmp_path / "c.fits", bad)


def test_float_cards_are_card_images_of_the_exact_values():
    """The C++ batch formatter (cpp/cards.cpp) against card_image (Python's repr): random bit
    patterns (every exponent, subnormals), integers, the repr's fixed/exponent switch points;
    every card reads back to the exact double."""
    from mosaicfit.io.fits import card_image, float_cards
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2 ** 63, 20000, dtype=np.uint64).view(np.float64)
    special = [0.0, -0.0, 1.0, 1e15, 1e16, 9999999999999998.0, 1e-4, 1e-5, 9.999e-5, 0.1,
               5e-324, 1.7976931348623157e308, 0.30000000000000004, 123456789012345678.0]
    values = np.concatenate([bits[np.isfinite(bits)], -bits[np.isfinite(bits)],
                             rng.integers(-10 ** 9, 10 ** 9, 2000).astype(float), special])
    keys = [f"A_{i % 97}_{i % 13}" for i in range(len(values))]
    text = float_cards(keys, values)
    assert text == "".join(card_image(k, float(v)) for k, v in zip(keys, values))
    back = [float(text[80 * i + 10:80 * i + 80]) for i in range(len(values))]
    assert np.array_equal(np.array(back).view(np.uint64), values.view(np.uint64))
    with pytest.raises(ValueError, match="A_1_1"):
        float_cards(["A_1_1"], [np.nan])
    with pytest.raises(ValueError):
        float_cards(["A", "B"], [1.0])


def test_header_pickles_as_its_text_and_reads_the_same():
    # the -j readers send headers as their text; the cards are parsed again when asked for
    import pickle
    from mosaicfit.io.fits import parse_header
    h = fits.Header([("SIMPLE", True), ("NAXIS", 0), ("CRVAL1", 150.25), ("CTYPE1", "RA---TAN-SIP"),
                     ("A_2_0", 1.5e-9, "a SIP term"), ("HISTORY", "made here"), ("UNDEF", None)])
    ours = parse_header(h.tostring())
    back = pickle.loads(pickle.dumps(ours))
    assert back._cards is None and back.text == ours.text
    assert [(c.keyword, c.value, c.comment) for c in back.cards] == \
        [(c.keyword, c.value, c.comment) for c in ours.cards]
    assert back["CRVAL1"] == 150.25 and back.get("A_2_0") == 1.5e-9 and "CTYPE1" in back
    assert back.get("UNDEF") is None and back.get("NOPE", 3) == 3
