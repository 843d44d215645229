"""hscPipe's reference match files (issue 6): icMatch (MATCH-*, normalized, pairs with ICSRC),
srcMatch (SRCMATCH-*, normalized, pairs with SRC) and srcMatchFull (SRCMATCHFULL-*,
denormalized) as a source of reference stars for mosaic.py.

The layouts are those of afw.table.packMatches (columns first, second, distance) with the
match metadata of meas_astrom (RA, DEC, RADIUS, SMATCHV, FILTER), and of hscPipe's
matchesToCatalog (ref*/src* columns, distance, + REFCAT): see mosaicfit/matchfile.py."""
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from mosaicfit.pipeline.inputs import resolve_refs
from mosaicfit import MosaicError, cli
from mosaicfit.model.camera import hsc
from mosaicfit.io.src import read_src, write_src
from mosaicfit.config import MosaicConfig
from mosaicfit.model.fluxcorr import read_fcr
from mosaicfit.pipeline.inputs import load_exposures
from mosaicfit.io.layout import Repository
from mosaicfit.io.matchfile import full_match_table, read_match_file, write_full_match_file
from mosaicfit.pipeline.references import load_match_references
from mosaicfit.io.refcat import read_refcat
from mosaicfit.sim import Truth
from mosaicfit.model.sip import pixel_area_ratio, sip_pixel_to_sky
from mosaicfit.io.wcsfile import read_wcs_header

IDS = ["--id", "visit=902798..902804:2", "ccd=30..70", "tract=0"]
OUT = os.path.join("rerun", "sim", "01201", "HSC-I", "output")
ARCSEC = np.pi / 648000


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("matchfile") / "repo")
    assert cli.main(["simulate", root, "--visits", "4", "--ccds", "30..70", "--seed", "5",
                     "--match-files", "all"]) == 0
    return root


def _file(root, kind, visit=902800, ccd=50):
    return os.path.join(root, OUT, f"{kind}-{visit:07d}-{ccd:03d}.fits")


# ------------------------------------------------------------------------------------------
# the files
# ------------------------------------------------------------------------------------------
def test_normalized_file_is_packmatches_with_metadata(repo):
    path = _file(repo, "SRCMATCH")
    h = fits.getheader(path, 1)
    assert [h["TTYPE1"], h["TTYPE2"], h["TTYPE3"]] == ["first", "second", "distance"]
    assert [h["TFORM1"], h["TFORM2"], h["TFORM3"]] == ["1K", "1K", "1D"]
    assert h["SMATCHV"] == 1 and h["FILTER"] == "HSC-I" and 0 < h["RADIUS"] < 0.2
    ml = read_match_file(path)
    assert ml.form == "normalized" and len(ml) > 10 and ml.ref is None
    src = read_src(_file(repo, "SRC"))
    ref = read_refcat(os.path.join(repo, "ref_cats", "ps1_pv3_3pi_sim"))
    assert np.isin(ml.src_id, src["id"]).all() and np.isin(ml.ref_id, ref["id"]).all()
    assert np.all(ml.distance < ARCSEC)          # meas_astrom matched within 1"
    # the query circle holds the CCD's sources
    ra, dec = np.degrees(src["coord_ra"]), np.degrees(src["coord_dec"])
    sep = np.degrees(np.arccos(np.sin(np.radians(dec)) * np.sin(np.radians(ml.meta["DEC"]))
                               + np.cos(np.radians(dec)) * np.cos(np.radians(ml.meta["DEC"]))
                               * np.cos(np.radians(ra - ml.meta["RA"]))))
    assert sep.max() <= ml.meta["RADIUS"] * 1.0001


def test_full_file_carries_the_reference_records(repo):
    norm = read_match_file(_file(repo, "SRCMATCH"))
    ml = read_match_file(_file(repo, "SRCMATCHFULL"))
    assert ml.form == "full" and ml.meta["REFCAT"] == "ps1_pv3_3pi_sim"
    assert np.array_equal(ml.ref_id, norm.ref_id) and np.array_equal(ml.src_id, norm.src_id)
    ref = read_refcat(os.path.join(repo, "ref_cats", "ps1_pv3_3pi_sim"))
    row = {int(i): k for k, i in enumerate(ref["id"])}
    r = ref[[row[int(i)] for i in ml.ref_id]]
    for name in ("coord_ra", "coord_dec", "coord_raErr", "pm_ra", "epoch", "i_flux", "z_fluxErr"):
        np.testing.assert_array_equal(ml.ref[name], r[name], err_msg=name)
    src = read_src(_file(repo, "SRC"))
    srow = {int(i): k for k, i in enumerate(src["id"])}
    k = [srow[int(i)] for i in ml.src_id]
    np.testing.assert_array_equal(ml.src_xy[0], src["base_SdssCentroid_x"][k])
    np.testing.assert_array_equal(ml.src_xy[1], src["base_SdssCentroid_y"][k])


def test_hscpipe3_full_form_and_flux_units(tmp_path):
    """hscPipe 3.x (afw table version 0): ref.coord as a 2-vector, '_' for '.' on disk; flux
    units from TUNIT (Jy here, nJy in LSST files), maggies when a version-0 file says none."""
    n = 3
    mag = np.array([16.0, 18.0, 20.0])
    ref = Table()
    ref["id"] = np.arange(1, n + 1, dtype=np.int64)
    ref["coord"] = np.column_stack([np.full(n, 2.6), np.full(n, 0.04)])
    ref["i"] = 10 ** (-0.4 * mag)                             # maggies, no unit
    ref["i_err"] = 0.01 * ref["i"]
    ref["r_flux"] = 3631 * 10 ** (-0.4 * (mag + 0.3))         # Jy
    ref["r_flux"].meta["TUNIT"] = "Jy"
    src = Table()
    src["id"] = np.arange(10, 10 + n, dtype=np.int64)
    src["centroid_sdss"] = np.column_stack([np.arange(n) * 10.0, np.arange(n) * 20.0])
    src["flux_psf"] = np.ones(n)
    t = full_match_table(ref, src, np.zeros(n))
    path = str(tmp_path / "SRCMATCHFULL-0000001-001.fits")
    write_full_match_file(path, t, {"RA": 149.0, "DEC": 2.3, "RADIUS": 0.1, "SMATCHV": 1,
                                    "FILTER": "HSC-I", "REFCAT": "sdss-dr8"}, version=0)
    assert fits.getheader(path, 1)["AFW_TABLE_VERSION"] == 0
    ml = read_match_file(path)
    mag_i = -2.5 * np.log10(ml.ref["i_flux"]) + 31.4
    mag_r = -2.5 * np.log10(ml.ref["r_flux"]) + 31.4
    np.testing.assert_allclose(mag_i, mag, atol=1e-4)        # 31.4 = 2.5 log10(3631e9) to 1e-4
    np.testing.assert_allclose(mag_r, mag + 0.3, atol=1e-4)
    np.testing.assert_allclose(ml.ref["i_fluxErr"] / ml.ref["i_flux"], 0.01)
    np.testing.assert_array_equal(ml.ref["coord_ra"], 2.6)
    np.testing.assert_array_equal(ml.src_xy[1], [0.0, 20.0, 40.0])
    assert ml.ref.meta["name"] == "sdss-dr8"


def test_damaged_match_files_are_one_line_errors(repo, tmp_path):
    good = _file(repo, "SRCMATCH")
    cut = str(tmp_path / "SRCMATCH-cut.fits")
    with open(good, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:len(data) - 3000])
    other = str(tmp_path / "SRCMATCH-other.fits")
    write_src(other, Table({"id": np.arange(3), "x": np.zeros(3)}))
    for path in (cut, other, str(tmp_path / "nope.fits")):
        with pytest.raises(MosaicError) as e:
            read_match_file(path)
        assert path in str(e.value) and "\n" not in str(e.value)


def test_icmatch_pairs_with_icsrc_not_src(repo):
    """MATCH's 'second' ids are ICSRC ids (its own numbering: the same numbers name other
    sources in SRC); the associations made through ICSRC's positions are those of SRCMATCH."""
    ic = read_src(_file(repo, "ICSRC"))
    src = read_src(_file(repo, "SRC"))
    ml = read_match_file(_file(repo, "MATCH"))
    assert np.isin(ml.src_id, ic["id"]).all()
    assert np.isin(ml.src_id, src["id"]).any()     # the trap: equal numbers, other sources
    r = Repository(repo, "sim")
    refs = [x for x in resolve_refs(r, [IDS[1:]]) if x.visit == 902800]
    dids = {(x.visit, x.ccd): {k: v for k, v in x.data_id.items() if k != "tract"} for x in refs}
    rc = read_refcat(os.path.join(repo, "ref_cats", "ps1_pv3_3pi_sim"))
    got = {}
    for ds in ("srcMatch", "icMatch"):
        exps, _, _ = load_exposures(r, refs)
        mr = load_match_references(r, exps, dids, ds, rc, "ps1_pv3_3pi_sim")
        assert not mr.errors and not mr.missing and mr.n_pairs > 500
        ids = np.asarray(mr.refcat["id"])
        got[ds] = {(e.ccd, int(i)): int(ids[k]) for e in exps
                   for i, k in zip(e.catalog["id"], e.catalog["ref_index"]) if k >= 0}
    assert got["icMatch"] == got["srcMatch"]


# ------------------------------------------------------------------------------------------
# mosaic.py
# ------------------------------------------------------------------------------------------
def _run(repo, tmp_path, name, *extra, drop_refcat=False):
    root = str(tmp_path / name)
    shutil.copytree(repo, root)
    if drop_refcat:
        shutil.rmtree(os.path.join(root, "ref_cats"))
    rc = cli.mosaic_main([root, "--rerun=sim", *IDS, *extra])
    return root, rc


def _product_errors(root):
    """Per clean star detection: (dRA, dDec) mas and dmag mmag of the products against the
    truth, in a fixed order."""
    truth = Truth(root)
    r = Repository(root, "sim")
    dra, ddec, dmag = [], [], []
    for ref in resolve_refs(r, [IDS[1:]]):
        did = dict(ref.data_id, tract=0)
        if not os.path.exists(r.path("wcs", **did)):
            continue
        h = read_wcs_header(r.path("wcs", **did))
        fc = read_fcr(r.path("fcr", **did), hsc()[ref.ccd].nquarter)
        a, b = truth.astrometric_error(ref.visit, ref.ccd, lambda x, y: sip_pixel_to_sky(h, x, y))
        dra.append(a)
        ddec.append(b)
        dmag.append(truth.photometric_error(ref.visit, ref.ccd, lambda x, y, f: -2.5 * np.log10(
            f * fc.factor(x, y, pixel_area_ratio(h, x, y)) / fc.fluxmag0)))
    return np.concatenate(dra), np.concatenate(ddec), np.concatenate(dmag)


def _orders(out):
    """(astrometric, photometric) polynomial orders from mosaic.py's summary lines."""
    line = lambda key: next(ln for ln in out.splitlines() if ln.strip().startswith(key))  # noqa
    return (int(line("astrometry:").rsplit("order", 1)[1]),
            int(line("photometry").rsplit("order", 1)[1].split()[0]))


def test_mosaic_from_srcmatchfull_without_ref_cats(repo, tmp_path, capsys):
    """No ROOT/ref_cats: mosaic.py takes the reference stars and their associations from the
    SRCMATCH(FULL) files by itself, and is as accurate as the run with ref_cats (positional
    matching). Both must meet test_mosaic's small-tract tolerances (3 mas per axis, 5 mmag),
    and the match-file run's rms error may exceed the ref_cats run's only by the scatter of
    such an rms: the error is made of K fitted parameters (per visit 2 x (n+1)(n+2)/2
    astrometric or (m+1)(m+2)/2 photometric terms, per CCD 3 or 1), and an rms over K
    independent error modes scatters by ~1/sqrt(2K) relatively between realisations; 3/sqrt(K)
    is allowed (the two runs share their detections, so they are much closer than that)."""
    base, rc = _run(repo, tmp_path, "refcat")
    out0 = capsys.readouterr().out
    assert rc == 0
    root, rc = _run(repo, tmp_path, "full", drop_refcat=True)
    out1, err1 = capsys.readouterr()
    assert rc == 0, err1
    n_visits, n_ccds = 4, 41
    (na, nm), (na1, nm1) = _orders(out0), _orders(out1)
    assert (na, nm) == (na1, nm1)
    k_astro = n_visits * (na + 1) * (na + 2) + 3 * n_ccds
    k_phot = n_visits * (nm + 1) * (nm + 2) // 2 + n_ccds
    e0, e1 = _product_errors(base), _product_errors(root)
    rms = lambda v: float(np.sqrt(np.mean(v ** 2)))     # noqa: E731
    for a0, a1, limit, k in zip(e0, e1, (3.0, 3.0, 5.0), (k_astro, k_astro, k_phot)):
        assert len(a0) > 5000 and rms(a0) < limit and rms(a1) < limit, (rms(a0), rms(a1))
        assert rms(a1) < rms(a0) * (1 + 3 / np.sqrt(k)), (rms(a1), rms(a0), k)


def test_normalized_srcmatch_and_icmatch_give_the_same_products(repo, tmp_path, capsys):
    """SRCMATCH (normalized, denormalized with ref_cats), MATCH + ICSRC, and SRCMATCHFULL
    without ref_cats record the same associations and the same reference records: the
    products are identical, byte for byte."""
    roots = {}
    for name, extra, drop in (("srcmatch", ["--config", "matchDataset=srcMatch"], False),
                              ("icmatch", ["--config", "matchDataset=icMatch"], False),
                              ("full", [], True)):
        roots[name], rc = _run(repo, tmp_path, name, *extra, drop_refcat=drop)
        assert rc == 0, capsys.readouterr().err
    did = dict(visit=902802, ccd=50, pointing=1201, filter="HSC-I", tract=0)
    for ds in ("wcs", "fcr"):
        data = {}
        for name, root in roots.items():
            with open(Repository(root, "sim").path(ds, **did), "rb") as f:
                data[name] = f.read()
        assert data["srcmatch"] == data["icmatch"] == data["full"], ds


def test_missing_and_corrupt_match_files_are_reported(repo, tmp_path, capsys):
    root = str(tmp_path / "damaged")
    shutil.copytree(repo, root)
    shutil.rmtree(os.path.join(root, "ref_cats"))
    for kind in ("SRCMATCH", "SRCMATCHFULL"):
        os.remove(_file(root, kind, 902800, 40))
    os.remove(_file(root, "SRCMATCH", 902802, 41))
    bad = _file(root, "SRCMATCHFULL", 902802, 41)
    with open(bad, "r+b") as f:
        f.truncate(5000)
    rc = cli.mosaic_main([root, "--rerun=sim", *IDS])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    missing = [ln for ln in lines if "lack SRCMATCH files" in ln]
    assert len(missing) == 1 and "visit=902800 ccd=40" in missing[0]
    corrupt = [ln for ln in lines if bad in ln]
    assert len(corrupt) == 1 and "visit=902802 ccd=41" in corrupt[0]
    # the run goes on with the other CCDs' matches, and says that something was wrong
    assert rc == 1 and "astrometry: chi2/ndof" in out
    assert os.path.exists(Repository(root, "sim").path(
        "wcs", visit=902802, ccd=41, pointing=1201, filter="HSC-I", tract=0))


def test_match_dataset_config():
    with pytest.raises(MosaicError) as e:
        MosaicConfig().update(["matchDataSet=srcMatch"])
    assert "matchDataset" in str(e.value)                  # named among the valid keys
    with pytest.raises(MosaicError, match="matchDataset must be one of"):
        MosaicConfig().update(["matchDataset=srcmatches"])
    assert MosaicConfig().update(["matchDataset=icMatch"]).matchDataset == "icMatch"


def test_no_reference_at_all_is_one_line(repo, tmp_path, capsys):
    root = str(tmp_path / "bare")
    shutil.copytree(repo, root)
    shutil.rmtree(os.path.join(root, "ref_cats"))
    for name in os.listdir(os.path.join(root, OUT)):
        if "MATCH" in name:
            os.remove(os.path.join(root, OUT, name))
    rc = cli.mosaic_main([root, "--rerun=sim", *IDS])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "SRCMATCH" in err[-1] and "relativeSolution" in err[-1]
    rc = cli.mosaic_main([root, "--rerun=sim", "--clobber-config", *IDS,
                          "--config", "matchDataset=srcMatch"])
    err = capsys.readouterr().err
    assert rc == 1 and "lack SRCMATCH files" in err
