"""SRC catalogs: the real afw file, round trips, hscPipe 3.x layouts, schemas, errors.

The real file tests/data/afw-src/SRC-849375-12.fits comes from lsst/jointcal
tests/data/cfht_minimal @ 29ae962d (GPL-3.0); its values below were read off the file with
astropy directly.
"""
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from mosaicfit import MosaicError
from mosaicfit.io.src import (SCHEMAS, detect_schema, fit_columns, read_src, resolve_columns,
                              standardize, write_src)

DATA = os.path.join(os.path.dirname(__file__), "data")
SRC = os.path.join(DATA, "afw-src", "SRC-849375-12.fits")


@pytest.fixture(scope="module")
def real():
    return read_src(SRC)


def _assert_tables_equal(a, b):
    assert a.colnames == b.colnames
    assert len(a) == len(b)
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=name)   # NaN == NaN here
        else:
            assert np.array_equal(x, y), name


# ---------------------------------------------------------------- the real afw file

def test_real_file_values(real):
    assert len(real) == 2
    assert list(real["id"]) == [131329414033047692, 131329414033047693]
    assert real["coord_ra"][0] == pytest.approx(3.75315177, abs=1e-8)
    assert real["coord_dec"][0] == pytest.approx(0.92254375, abs=1e-8)
    assert real["base_SdssCentroid_x"][0] == pytest.approx(925.0922989, abs=1e-7)
    assert real["base_PsfFlux_flux"][1] == pytest.approx(2634.26931839, abs=1e-7)
    assert real["coord_ra"].meta["TUNIT"] == "rad"
    assert real["coord_ra"].meta["TCCLS"] == "Angle"
    assert real["base_SdssCentroid_x"].meta["TUNIT"] == "pixel"
    assert real["coord_ra"].description == "position in ra/dec"
    assert real.meta["afw_type"] == "SOURCE"
    assert real.meta["afw_table_version"] == 1


def test_reading_only_the_fit_columns_gives_the_same_catalogue(real):
    """The mosaic reads only the columns standardize may use (a real SRC has hundreds):
    the catalogue it makes is the same as from the whole table."""
    few = read_src(SRC, columns=fit_columns())
    assert set(few.colnames) < set(real.colnames) and len(few.colnames) < 0.5 * len(real.colnames)
    # and without the astropy Table around them (what mosaic.py reads)
    cols = read_src(SRC, columns=fit_columns(), as_table=False)
    assert not isinstance(cols, Table) and cols.colnames == few.colnames
    a = standardize(real)
    for b in (standardize(few), standardize(cols)):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # a column map names its own columns; a function of the whole table reads them all
    assert "base_GaussianFlux_flux" in fit_columns({"flux": "base_GaussianFlux_flux"})
    assert fit_columns({"flux": lambda t: t["base_PsfFlux_flux"]}) is None


def test_real_file_flags(real):
    with fits.open(SRC) as hdul:
        header = hdul[1].header
        bits = np.array(hdul[1].data["flags"])
    names = [header[f"TFLAG{k}"] for k in range(1, 79)]
    assert bits.shape == (2, 78)
    # every bit became a bool column named by its TFLAGn
    for k, name in enumerate(names):
        assert real[name].dtype == bool
        assert np.array_equal(real[name], bits[:, k]), name
    set0 = [n for n in names if real[n][0]]
    set1 = [n for n in names if real[n][1]]
    assert set0 == ["calib_detected", "calib_psfCandidate", "calib_psfUsed",
                    "base_Variance_flag", "base_Variance_flag_emptyFootprint"]
    assert set1 == ["base_SdssShape_flag", "base_SdssShape_flag_unweighted"]
    # 63 other columns + 78 flags; the flags sit at their afw schema positions
    assert len(real.colnames) == 63 + 78
    assert real.colnames[:10] == ["id", "coord_ra", "coord_dec", "parent", "calib_detected",
                                  "calib_psfCandidate", "calib_psfUsed", "calib_psfReserved",
                                  "flags_negative", "deblend_nChild"]


def test_real_file_round_trip(real, tmp_path):
    out = tmp_path / "SRC-copy.fits"
    write_src(out, real)
    again = read_src(out)
    _assert_tables_equal(real, again)
    # the header matches afw's card for card (but AR_HDU: no archive is written)
    skip = {"AR_HDU", "CHECKSUM", "DATASUM"}
    h0 = fits.getheader(SRC, 1)
    h1 = fits.getheader(out, 1)
    c0 = [(c.keyword, c.value) for c in h0.cards if c.keyword not in skip]
    c1 = [(c.keyword, c.value) for c in h1.cards if c.keyword not in skip]
    assert c0 == c1
    assert [c.comment for c in h0.cards if c.keyword.startswith("TTYPE")] == \
        [c.comment for c in h1.cards if c.keyword.startswith("TTYPE")]
    # and the packed bits are identical
    assert np.array_equal(fits.getdata(SRC, 1)["flags"], fits.getdata(out, 1)["flags"])


# ---------------------------------------------------------------- synthetic round trips

def _synthetic(n, seed=1):
    rng = np.random.default_rng(seed)
    t = Table()
    t["id"] = np.arange(n, dtype=np.int64) + 10**15
    t["coord_ra"] = rng.uniform(0, 2 * np.pi, n)
    t["coord_dec"] = rng.uniform(-1, 1, n)
    t["calib_psf_used"] = rng.random(n) < 0.5
    t["base_SdssCentroid_x"] = rng.uniform(0, 2047, n)
    t["base_SdssCentroid_xErr"] = rng.uniform(0, 1, n).astype(np.float32)
    t["base_SdssCentroid_flag"] = rng.random(n) < 0.1
    t["base_PsfFlux_instFlux"] = rng.uniform(1e2, 1e6, n)
    t["nchild"] = rng.integers(0, 5, n).astype(np.int32)
    t["small"] = rng.integers(-100, 100, n).astype(np.int16)
    t["shape"] = rng.normal(size=(n, 3))
    t["bits"] = rng.random((n, 4)) < 0.5         # a 2-D bool column stays an array
    t["label"] = np.array([f"s{i}" for i in range(n)], dtype="U8")
    t["base_PixelFlags_flag_saturated"] = rng.random(n) < 0.2
    t["nan_col"] = np.full(n, np.nan)
    return t


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_synthetic_round_trip(tmp_path, n):
    t = _synthetic(n)
    path = tmp_path / "SRC.fits"
    write_src(path, t)
    _assert_tables_equal(t, read_src(path))


def test_written_layout(tmp_path):
    t = _synthetic(5)
    path = tmp_path / "SRC.fits"
    write_src(path, t, docs={"nchild": "number of children"}, units={"nchild": "count"})
    with fits.open(path) as hdul:
        assert hdul[0].header["NAXIS"] == 0
        h = hdul[1].header
    flags = [n for n in t.colnames if t[n].dtype == bool and t[n].ndim == 1]
    assert h["TTYPE1"] == "flags" and h["TFORM1"] == f"{len(flags)}X" and h["FLAGCOL"] == 1
    assert [h[f"TFLAG{k + 1}"] for k in range(len(flags))] == flags
    cols = {h[k]: int(k[5:]) for k in h if k.startswith("TTYPE")}
    n = cols["coord_ra"]
    assert h[f"TUNIT{n}"] == "rad" and h[f"TCCLS{n}"] == "Angle" and h[f"TFORM{n}"] == "1D"
    assert h[f"TUNIT{cols['base_SdssCentroid_x']}"] == "pixel"
    assert h[f"TUNIT{cols['base_SdssCentroid_xErr']}"] == "pixel"
    assert h[f"TUNIT{cols['base_PsfFlux_instFlux']}"] == "count"
    assert h[f"TDOC{cols['nchild']}"] == "number of children"
    assert h[f"TUNIT{cols['nchild']}"] == "count"
    assert h[f"TCCLS{cols['shape']}"] == "Array"
    assert h[f"TCCLS{cols['label']}"] == "String"
    assert h["AFW_TYPE"] == "SOURCE"
    assert h["AFW_TABLE_VERSION"] == 3      # instFlux names: a current afw table
    # TFLAGn cards sit between the column cards in schema order (as afw writes them)
    keys = [c.keyword for c in h.cards]
    assert keys.index("TFLAG1") > keys.index(f"TCCLS{cols['coord_dec']}")
    assert keys.index("TFLAG1") < keys.index(f"TTYPE{cols['base_SdssCentroid_x']}")


def test_read_plain_bool_columns(tmp_path):
    """hscPipe 3.x-style tables without a packed flags column: 'L' and 1-bit 'X' columns."""
    n = 4
    path = tmp_path / "plain.fits"
    cols = [fits.Column(name="id", format="K", array=np.arange(n)),
            fits.Column(name="calib.psf.used", format="L", array=np.array([1, 0, 1, 0], bool)),
            fits.Column(name="flags.pixel.saturated.center", format="1X",
                        array=np.array([[0], [1], [0], [0]], bool)),
            fits.Column(name="flux.psf", format="D", array=np.arange(n) * 2.0)]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    t = read_src(path)
    assert t.colnames == ["id", "calib.psf.used", "flags.pixel.saturated.center", "flux.psf"]
    assert t["calib.psf.used"].dtype == bool and list(t["calib.psf.used"]) == [1, 0, 1, 0]
    assert t["flags.pixel.saturated.center"].dtype == bool
    assert t["flags.pixel.saturated.center"].shape == (n,)
    assert list(t["flags.pixel.saturated.center"]) == [0, 1, 0, 0]


def test_empty_table_is_zero_rows(tmp_path):
    path = tmp_path / "empty.fits"
    write_src(path, _synthetic(0))
    t = read_src(path)
    assert len(t) == 0 and "coord_ra" in t.colnames and t["calib_psf_used"].dtype == bool


# ---------------------------------------------------------------- errors

def _check_error(path, *words):
    with pytest.raises(MosaicError) as e:
        read_src(path)
    msg = str(e.value)
    assert os.path.basename(str(path)) in msg
    for w in words:
        assert w in msg
    assert "\n" not in msg


def test_error_missing(tmp_path):
    _check_error(tmp_path / "SRC-0000001-001.fits", "no such file")


def test_error_truncated(tmp_path):
    path = tmp_path / "SRC-cut.fits"
    write_src(path, _synthetic(2000))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _check_error(path, "truncated")


def test_error_not_fits(tmp_path):
    path = tmp_path / "SRC-junk.fits"
    path.write_bytes(b"this is not a FITS file at all\n" * 200)
    _check_error(path, "not a valid")


def test_error_no_table(tmp_path):
    path = tmp_path / "SRC-image.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((3, 3)))]).writeto(path)
    _check_error(path, "no binary table")


# ---------------------------------------------------------------- schemas

def test_schema_lsst_real(real):
    assert detect_schema(real) == "lsst"
    s = standardize(real)
    assert set(s) == set(SCHEMAS["lsst"])
    assert s["id"].dtype == np.int64
    np.testing.assert_array_equal(s["coord_ra"], real["coord_ra"])
    np.testing.assert_array_equal(s["x"], real["base_SdssCentroid_x"])
    np.testing.assert_array_equal(s["y"], real["base_SdssCentroid_y"])
    np.testing.assert_array_equal(s["x_err"], real["base_SdssCentroid_xSigma"])
    np.testing.assert_array_equal(s["flux"], real["base_PsfFlux_flux"])
    np.testing.assert_array_equal(s["flux_err"], real["base_PsfFlux_fluxSigma"])
    np.testing.assert_array_equal(s["extendedness"], [0.0, 1.0])
    assert list(s["psf_used"]) == [True, False]
    assert list(s["saturated"]) == [False, False]
    assert s["psf_used"].dtype == bool


def test_schema_lsst_newer_names(tmp_path):
    t = _synthetic(6)
    t["base_SdssCentroid_y"] = t["base_SdssCentroid_x"] + 1
    t["base_SdssCentroid_yErr"] = t["base_SdssCentroid_xErr"]
    t["base_PsfFlux_instFluxErr"] = np.sqrt(t["base_PsfFlux_instFlux"])
    write_src(tmp_path / "s.fits", t)
    t = read_src(tmp_path / "s.fits")
    assert detect_schema(t) == "lsst"
    s = standardize(t)
    np.testing.assert_array_equal(s["flux"], t["base_PsfFlux_instFlux"])
    np.testing.assert_array_equal(s["flux_err"], t["base_PsfFlux_instFluxErr"])
    np.testing.assert_array_equal(s["psf_used"], t["calib_psf_used"])
    np.testing.assert_array_equal(s["x_err"], t["base_SdssCentroid_xErr"].astype(float))
    # fields the catalog lacks get defaults
    assert np.all(np.isnan(s["extendedness"])) and not s["flux_flag"].any()


def _hsc3(n, sep=".", split=False, seed=3):
    rng = np.random.default_rng(seed)
    t = Table()
    k = lambda name: name.replace(".", sep)   # noqa: E731
    t["id"] = np.arange(n, dtype=np.int64)
    t["coord"] = np.column_stack([rng.uniform(0, 6, n), rng.uniform(-1, 1, n)])
    xy = rng.uniform(0, 2000, (n, 2))
    if split:
        t[k("centroid.sdss.x")] = xy[:, 0]
        t[k("centroid.sdss.y")] = xy[:, 1]
    else:
        t[k("centroid.sdss")] = xy
    cov = np.column_stack([rng.uniform(0.01, 1, n), rng.uniform(-0.01, 0.01, n),
                           rng.uniform(0.01, 1, n)]).astype(np.float32)
    t[k("centroid.sdss.err")] = cov
    t[k("centroid.sdss.flags")] = rng.random(n) < 0.1
    t[k("flux.psf")] = rng.uniform(1e3, 1e5, n)
    t[k("flux.psf.err")] = rng.uniform(10, 100, n)
    t[k("flux.psf.flags")] = rng.random(n) < 0.1
    t[k("classification.extendedness")] = (rng.random(n) < 0.5).astype(float)
    t[k("flags.pixel.saturated.any")] = rng.random(n) < 0.3
    t[k("flags.pixel.saturated.center")] = rng.random(n) < 0.1
    t[k("calib.psf.used")] = rng.random(n) < 0.3
    return t, xy, cov


@pytest.mark.parametrize("sep,split", [(".", False), ("_", False), (".", True)])
def test_schema_hsc3(tmp_path, sep, split):
    t, xy, cov = _hsc3(9, sep, split)
    write_src(tmp_path / "hsc.fits", t)
    t = read_src(tmp_path / "hsc.fits")
    assert detect_schema(t) == "hsc3"
    cols = read_src(tmp_path / "hsc.fits", columns=fit_columns(), as_table=False)
    assert detect_schema(cols) == "hsc3"
    for k, a in standardize(cols).items():
        np.testing.assert_array_equal(a, standardize(t)[k], err_msg=k)
    # afw's field templates for the 2-vector columns
    assert t["coord"].meta["TCCLS"] == "Coord" and t["coord"].meta["TUNIT"] == "rad"
    assert t["centroid.sdss.err".replace(".", sep)].meta["TCCLS"] == "Covariance(Point)"
    if not split:
        assert t["centroid.sdss".replace(".", sep)].meta["TCCLS"] == "Point"
        assert t["centroid.sdss".replace(".", sep)].meta["TUNIT"] == "pixel"
    assert t["flux.psf".replace(".", sep)].meta["TUNIT"] == "count"
    s = standardize(t)
    np.testing.assert_array_equal(s["coord_ra"], t["coord"][:, 0])
    np.testing.assert_array_equal(s["coord_dec"], t["coord"][:, 1])
    np.testing.assert_array_equal(s["x"], xy[:, 0])
    np.testing.assert_array_equal(s["y"], xy[:, 1])
    # Covariance(Point) is packed (xx, xy, yy): errors are the square roots of the variances
    np.testing.assert_allclose(s["x_err"], np.sqrt(cov[:, 0].astype(float)), rtol=1e-15)
    np.testing.assert_allclose(s["y_err"], np.sqrt(cov[:, 2].astype(float)), rtol=1e-15)
    f = lambda name: np.asarray(t[name.replace(".", sep)])   # noqa: E731
    np.testing.assert_array_equal(s["flux"], f("flux.psf"))
    np.testing.assert_array_equal(s["flux_err"], f("flux.psf.err"))
    np.testing.assert_array_equal(s["extendedness"], f("classification.extendedness"))
    np.testing.assert_array_equal(s["psf_used"], f("calib.psf.used"))
    np.testing.assert_array_equal(s["saturated"], f("flags.pixel.saturated.any"))
    np.testing.assert_array_equal(s["saturated_center"], f("flags.pixel.saturated.center"))
    np.testing.assert_array_equal(s["centroid_flag"], f("centroid.sdss.flags"))
    np.testing.assert_array_equal(s["flux_flag"], f("flux.psf.flags"))


def test_schema_unknown_lists_missing():
    t = Table({"id": [1, 2], "ra": [0.1, 0.2]})
    t.meta["source_file"] = "SRC-0000007-012.fits"
    with pytest.raises(MosaicError) as e:
        detect_schema(t)
    msg = str(e.value)
    assert "SRC-0000007-012.fits" in msg
    assert "lsst:" in msg and "hsc3:" in msg and "coord_ra" in msg and "flux" in msg


def test_column_map_overrides(real):
    s = standardize(real, column_map={"flux": "base_GaussianFlux_flux",
                                      "flux_err": "base_GaussianFlux_fluxSigma"})
    np.testing.assert_array_equal(s["flux"], real["base_GaussianFlux_flux"])
    np.testing.assert_array_equal(s["x"], real["base_SdssCentroid_x"])
    cols = resolve_columns(real, {"x": "base_NaiveCentroid_x"})
    assert cols["x"].name == "base_NaiveCentroid_x"
    with pytest.raises(MosaicError, match="SRC-849375-12.fits.*no_such_column"):
        standardize(real, column_map={"flux": "no_such_column"})
    with pytest.raises(MosaicError, match="unknown field"):
        standardize(real, column_map={"magnitude": "base_PsfFlux_flux"})


def test_column_map_vector_element():
    t, xy, _ = _hsc3(5)
    t["my_pos"] = xy[:, ::-1]
    s = standardize(t, column_map={"x": "my_pos[1]", "y": "my_pos[0]"})
    np.testing.assert_array_equal(s["x"], xy[:, 0])
    np.testing.assert_array_equal(s["y"], xy[:, 1])
