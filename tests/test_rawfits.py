"""The fast FITS reader (mosaicfit.rawfits) gives exactly what astropy gives, or declines."""
import glob
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import mosaicfit.io.fits as rawfits
from mosaicfit.io.afwtable import read_afw_table
from mosaicfit.io.src import write_src
from mosaicfit.io.corr import read_corr_header

HERE = os.path.dirname(os.path.abspath(__file__))
REAL = sorted(glob.glob(os.path.join(HERE, "data", "**", "*.fits"), recursive=True))


def _same_value(a, b):
    return type(a) is type(b) and (a == b or (isinstance(a, float) and np.isnan(a) and np.isnan(b)))


@pytest.mark.parametrize("path", REAL, ids=os.path.basename)
def test_headers_equal_astropy_on_real_files(path):
    ours = rawfits.read_headers(path)
    assert ours is not None
    with fits.open(path) as hl:
        assert len(ours) == len(hl)
        for (h, start, nbytes), hdu in zip(ours, hl):
            assert [c.keyword for c in h.cards] == [c.keyword for c in hdu.header.cards]
            for c, ac in zip(h.cards, hdu.header.cards):
                assert _same_value(c.value, ac.value), (c.keyword, c.value, ac.value)
                assert c.comment == ac.comment
            assert start == hdu.fileinfo()["datLoc"]


def _read_both(path, monkeypatch):
    fast = read_afw_table(path)
    with monkeypatch.context() as m:
        m.setattr(rawfits, "read_bintable", lambda *a, **k: None)
        slow = read_afw_table(path)
    return fast, slow


def _assert_same_table(a, b):
    assert a.colnames == b.colnames and len(a) == len(b)
    for n in a.colnames:
        x, y = np.asarray(a[n]), np.asarray(b[n])
        assert x.dtype == y.dtype, n
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), n
        assert a[n].unit == b[n].unit and a[n].meta == b[n].meta, n
    assert a.meta == b.meta


@pytest.mark.parametrize("path", [p for p in REAL if "SRC" in p or "fcr" in p or "wcs" in p],
                         ids=os.path.basename)
def test_tables_equal_astropy_on_real_files(path, monkeypatch):
    assert rawfits.read_bintable(path) is not None
    _assert_same_table(*_read_both(path, monkeypatch))


def test_all_column_types_and_special_cards(tmp_path, monkeypatch):
    """Every fixed-width TFORM, multi-element and TDIM columns, HIERARCH and CONTINUE cards,
    complex and undefined values."""
    n = 5
    rng = np.random.default_rng(1)
    cols = [fits.Column("b", "B", array=np.arange(n, dtype=np.uint8)),
            fits.Column("i", "I", array=np.arange(n, dtype=np.int16) - 2),
            fits.Column("j", "J", array=np.arange(n, dtype=np.int32) * 100000),
            fits.Column("k", "K", array=np.arange(n, dtype=np.int64) << 40),
            fits.Column("e", "E", array=rng.normal(size=n).astype(np.float32)),
            fits.Column("d", "D", array=np.r_[rng.normal(size=n - 1), np.nan]),
            fits.Column("c", "C", array=rng.normal(size=n) + 1j),
            fits.Column("m", "M", array=rng.normal(size=n) - 2j),
            fits.Column("l", "L", array=np.array([True, False, True, True, False])),
            fits.Column("l3", "3L", array=rng.random((n, 3)) > 0.5),
            fits.Column("s", "12A", array=np.array(["a", "bb  ", "", "with 'q'", "x" * 12])),
            fits.Column("v", "6D", array=rng.normal(size=(n, 6)), dim="(3,2)"),
            fits.Column("bits", "11X", array=rng.random((n, 11)) > 0.5)]
    hdu = fits.BinTableHDU.from_columns(cols)
    hdu.header["HIERARCH very long key name"] = 3.5
    hdu.header["LONGSTR"] = "x" * 150 + " end"
    hdu.header["CPLX"] = (1.5 + 2j)
    hdu.header["UNDEF"] = None
    hdu.header["DEXP"] = 1.0
    path = str(tmp_path / "t.fits")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    raw = open(path, "rb").read().replace(b"DEXP    =                  1.0",
                                          b"DEXP    =               1.0D+3")
    open(path, "wb").write(raw)
    h, names, formats, columns, nrows = rawfits.read_bintable(path)
    with fits.open(path) as hl:
        ref = hl[1]
        assert names == list(ref.columns.names) and nrows == n
        for name, col in zip(names, columns):
            want = np.array(ref.data[name])
            if col.dtype.kind == "S":
                col, want = np.char.decode(col), np.char.rstrip(want)
            assert col.shape == want.shape and np.array_equal(col, want, equal_nan=col.dtype.kind in "fc"), name
        for key in ("very long key name", "LONGSTR", "CPLX", "UNDEF", "DEXP"):
            assert _same_value(h.get(key), ref.header.get(key)), key
    assert h.get("DEXP") == 1000.0
    _assert_same_table(*_read_both(path, monkeypatch))


@pytest.mark.parametrize("n", [0, 1, 300])
def test_afw_round_trip_through_the_fast_path(tmp_path, monkeypatch, n):
    t = Table({"id": np.arange(n, dtype=np.int64), "coord_ra": np.zeros(n),
               "base_PixelFlags_flag_saturated": np.zeros(n, bool),
               "label": np.array(["ab"] * n, dtype="U8")})
    path = tmp_path / "SRC.fits"
    write_src(path, t)
    assert rawfits.read_bintable(str(path)) is not None
    fast, slow = _read_both(str(path), monkeypatch)
    _assert_same_table(fast, slow)
    assert fast["label"].dtype == np.dtype("U8")


@pytest.mark.parametrize("damage", ["truncate_data", "truncate_header", "garble_value",
                                    "no_end", "lowercase_key", "scaled_column", "varlen"])
def test_declines_what_it_does_not_read_exactly(tmp_path, damage):
    """Damaged or unusual files are left to astropy (None), never half-read."""
    path = str(tmp_path / "t.fits")
    cols = [fits.Column("x", "D", array=np.arange(100.0))]
    if damage == "scaled_column":
        cols = [fits.Column("u", "J", array=np.arange(100, dtype=np.uint32), bzero=2 ** 31)]
    if damage == "varlen":
        cols = [fits.Column("p", "PD()", array=[np.arange(3.0)] * 100)]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    raw = bytearray(open(path, "rb").read())
    if damage == "truncate_data":
        raw = raw[:2 * 2880 + 400]           # the 800 bytes of rows cut in half
    elif damage == "truncate_header":
        raw = raw[:2880 + 1000]
    elif damage == "garble_value":
        i = raw.index(b"NAXIS1  =")
        raw[i + 10:i + 30] = b"  12x4 garbage      "
    elif damage == "no_end":
        i = raw.index(b"END" + b" " * 77, 2880)
        raw[i:i + 3] = b"   "
    elif damage == "lowercase_key":
        i = raw.index(b"TTYPE1  =")
        raw[i:i + 5] = b"ttype"
    open(path, "wb").write(bytes(raw))
    assert rawfits.read_bintable(path) is None


def test_corr_header_lean_and_astropy_agree():
    path = next(p for p in REAL if "wcs-" in p)
    h0, wh = read_corr_header(path)
    l0, lw = read_corr_header(path, lean=True)
    assert isinstance(wh, fits.Header) and isinstance(lw, rawfits.Header)
    for key in wh:
        if key not in ("COMMENT", "HISTORY", ""):
            assert _same_value(lw[key], wh[key]), key
    assert lw.tostring().rstrip() == wh.tostring().rstrip()
