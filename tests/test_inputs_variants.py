"""Input variants of mosaic.py (issue 6): hscPipe 3.x SRC catalogues (dotted field names,
afw table version 0) and LSST-era ones (base_*) solve the same tract identically without any
configuration; hscPipe 3.x denormalized match files (SRCMATCHFULL) serve as the reference."""
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits

from mosaicfit.pipeline.inputs import resolve_refs
from mosaicfit import cli
from mosaicfit.model.camera import hsc
from mosaicfit.io.src import detect_schema, read_src
from mosaicfit.model.fluxcorr import read_fcr
from mosaicfit.io.layout import Repository
from mosaicfit.sim import Truth
from mosaicfit.model.sip import pixel_area_ratio, sip_pixel_to_sky
from mosaicfit.io.wcsfile import read_wcs_header

SIM = ["--visits", "4", "--ccds", "30..70", "--seed", "5"]
IDS = ["--id", "visit=902798..902804:2", "ccd=30..70", "tract=0"]


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    base = tmp_path_factory.mktemp("variants")
    out = {}
    for schema, extra in (("lsst", []), ("hsc3", ["--match-files", "srcMatchFull"])):
        root = str(base / schema)
        assert cli.main(["simulate", root, *SIM, "--schema", schema, *extra]) == 0
        out[schema] = root
    return out


def _products(root):
    """{(visit, ccd): (wcs header, FluxCorrection)} of a finished run."""
    r = Repository(root, "sim")
    out = {}
    for ref in resolve_refs(r, [IDS[1:]]):
        did = dict(ref.data_id, tract=0)
        wp, fp = r.path("wcs", **did), r.path("fcr", **did)
        if os.path.exists(wp):
            out[(ref.visit, ref.ccd)] = (read_wcs_header(wp), read_fcr(fp, hsc()[ref.ccd].nquarter))
    return out


def _errors(root, products):
    """Per-axis astrometric (mas) and photometric (mmag) rms of the products against the
    truth at the noise-free positions and fluxes of the clean star detections."""
    truth = Truth(root)
    dra, ddec, dmag = [], [], []
    for (v, c), (h, fc) in products.items():
        a, b = truth.astrometric_error(v, c, lambda x, y: sip_pixel_to_sky(h, x, y))
        dra.append(a)
        ddec.append(b)
        dmag.append(truth.photometric_error(v, c, lambda x, y, f: -2.5 * np.log10(
            f * fc.factor(x, y, pixel_area_ratio(h, x, y)) / fc.fluxmag0)))
    rms = lambda a: float(np.sqrt(np.mean(np.concatenate(a) ** 2)))   # noqa: E731
    return rms(dra), rms(ddec), rms(dmag), sum(len(a) for a in dra)


def test_hsc3_catalogues_are_written_as_hscpipe3_did(repos):
    path = os.path.join(repos["hsc3"], "rerun", "sim", "01201", "HSC-I", "output",
                        "SRC-0902800-050.fits")
    h = fits.getheader(path, 1)
    names = [h[k] for k in h if k.startswith("TTYPE")]
    flags = [h[k] for k in h if k.startswith("TFLAG")]
    assert h["AFW_TABLE_VERSION"] == 0
    assert {"coord", "centroid_sdss", "centroid_sdss_err", "flux_psf", "flux_psf_err",
            "classification_extendedness"} <= set(names)
    assert {"calib_psf_used", "flags_pixel_saturated_any", "flags_pixel_saturated_center",
            "centroid_sdss_flags", "flux_psf_flags"} <= set(flags)
    assert not any(n.startswith("base_") for n in names + flags)
    t = read_src(path)
    assert detect_schema(t) == "hsc3"
    assert t["centroid_sdss"].shape[1:] == (2,) and t["centroid_sdss_err"].shape[1:] == (3,)


def test_hsc3_and_lsst_names_give_the_same_solution(repos, tmp_path, capsys):
    """The same simulated tract written with hscPipe 3.x and with LSST column names: mosaic.py
    reads both without configuration. The catalogues give the fit the same numbers but for
    the centroid errors (LSST: xSigma as float32; hscPipe 3.x: its square as float32 in the
    packed covariance), a ~3e-8 relative change of the weights; that moves where the solver's
    iterations stop (chi2 steady to 1e-6) by ~0.01 mas, so the products agree to a tenth of
    their own error against the truth, and both are as accurate as test_mosaic's small tract
    asks (3 mas per axis, 5 mmag)."""
    from mosaicfit.io.src import standardize
    rel = os.path.join("rerun", "sim", "01201", "HSC-I", "output", "SRC-0902802-044.fits")
    sa, sb = (standardize(read_src(os.path.join(repos[s], rel))) for s in ("lsst", "hsc3"))
    for f in sa:
        if f in ("x_err", "y_err"):
            np.testing.assert_allclose(sb[f], sa[f], rtol=1e-7, err_msg=f)
        else:
            np.testing.assert_array_equal(sb[f], sa[f], err_msg=f)
    prods = {}
    for schema, root in repos.items():
        run = str(tmp_path / schema)
        shutil.copytree(root, run)
        assert cli.mosaic_main([run, "--rerun=sim", *IDS]) == 0, capsys.readouterr().err
        prods[schema] = _products(run)
    a, b = prods["lsst"], prods["hsc3"]
    assert set(a) == set(b) and len(a) > 150
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-0.5, 2047.5, 200), rng.uniform(-0.5, 4175.5, 200)
    dpos, dmag = [], []
    for key in a:
        (ha, fa), (hb, fb) = a[key], b[key]
        ra1, de1 = sip_pixel_to_sky(ha, x, y)
        ra2, de2 = sip_pixel_to_sky(hb, x, y)
        dpos.append(np.hypot((ra1 - ra2) * np.cos(np.radians(de1)), de1 - de2) * 3.6e6)
        ma = -2.5 * np.log10(fa.factor(x, y, pixel_area_ratio(ha, x, y)) / fa.fluxmag0)
        mb = -2.5 * np.log10(fb.factor(x, y, pixel_area_ratio(hb, x, y)) / fb.fluxmag0)
        dmag.append((ma - mb) * 1000)
    rms = lambda v: float(np.sqrt(np.mean(np.concatenate(v) ** 2)))   # noqa: E731
    ex, ey, em, n = _errors(repos["hsc3"], b)
    ex0, ey0, em0, _ = _errors(repos["lsst"], a)
    assert n > 5000 and ex < 3 and ey < 3 and em < 5, (ex, ey, em)
    assert rms(dpos) < 0.1 * min(ex0, ey0) and rms(dmag) < 0.1 * em0, (rms(dpos), rms(dmag))
    assert abs(ex - ex0) < 0.01 * ex0 and abs(ey - ey0) < 0.01 * ey0 and abs(em - em0) < 0.01 * em0


def test_hsc3_full_match_files_as_the_reference(repos, tmp_path, capsys):
    """No ref_cats: the reference stars come from hscPipe 3.x SRCMATCHFULL files (ref.coord,
    <band>_flux in Jy, no position errors nor proper motions, as astrometry.net catalogues
    were). The fit then assumes hscPipe's catRMS (40 mas) for every reference star and the
    unmodelled proper motions (~6 mas/yr over ~1 yr) add to it: the tract's frame is known to
    ~40 mas x sqrt(T / N_ref) for T = 55 terms of the order-9 polynomial and N_ref reference
    stars (~8 mas here), which bounds the error; the photometry is untouched (5 mmag)."""
    run = str(tmp_path / "hsc3-full")
    shutil.copytree(repos["hsc3"], run)
    shutil.rmtree(os.path.join(run, "ref_cats"))
    rc = cli.mosaic_main([run, "--rerun=sim", *IDS])
    out, err = capsys.readouterr()
    assert rc == 0, err
    n_ref = int(out.split(" stars (")[1].split(" reference")[0])
    assert n_ref > 800
    ex, ey, em, n = _errors(run, _products(run))
    bound = 40.0 * np.sqrt(55 / n_ref)
    assert ex < bound and ey < bound and em < 5, (ex, ey, em, bound)
