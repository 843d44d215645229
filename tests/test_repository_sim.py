"""`mosaicfit simulate` and `make-skymap` end to end: a real hscPipe-layout repository whose
files read back with the project's readers and agree with the truth."""
import os

import numpy as np
import pytest

from mosaicfit import cli
from mosaicfit.io.src import read_src, standardize
from mosaicfit.io.corr import read_corr
from mosaicfit.io.layout import Repository
from mosaicfit.io.refcat import read_refcat
from mosaicfit.sim import REFCAT_NAME, Truth
from mosaicfit.io.skymap import load_skymap


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sim") / "repo")
    assert cli.main(["simulate", root, "--visits", "3", "--ccds", "8..10^49^50", "--seed", "4"]) == 0
    return root


def test_layout_and_registry(repo_root):
    repo = Repository(repo_root, "sim")
    reg = repo.registry
    assert reg.visits() == [902798, 902800, 902802]
    assert reg.ccds(902798) == [8, 9, 10, 49, 50]
    info = reg.visit_info(902800)
    assert info["filter"] == "HSC-I" and info["pointing"] == 1201
    p = repo.find("src", visit=902798, ccd=49, pointing=1201, filter="HSC-I")
    assert p == os.path.join(repo_root, "rerun", "sim", "01201", "HSC-I", "output", "SRC-0902798-049.fits")
    assert repo.find("calexp", visit=902798, ccd=9, pointing=1201, filter="HSC-I") is None  # dead CCD


def test_catalogs_and_headers_agree_with_truth(repo_root):
    repo = Repository(repo_root, "sim")
    truth = Truth(repo_root)
    did = dict(visit=902800, ccd=50, pointing=1201, filter="HSC-I")
    cat = standardize(read_src(repo.find("src", **did)))
    exp = read_corr(repo.find("calexp", **did), metadata_only=True)
    assert exp.filter == "HSC-I" and exp.exptime == 200.0 and exp.fluxmag0 > 1e11
    # the catalogue's sky coordinates come from the CORR WCS at the measured centroids
    ra, dec = exp.wcs.all_pix2world(cat["x"], cat["y"], 0)
    assert np.allclose(np.radians(ra), cat["coord_ra"], atol=1e-12)
    # the single-frame WCS is 0.1-1" off the truth
    dra, ddec = truth.astrometric_error(902800, 50, lambda x, y: exp.wcs.all_pix2world(x, y, 0))
    assert 50 < np.median(np.hypot(dra, ddec)) < 1500
    # noise-free fluxes calibrated with the true zero-point give the true magnitudes
    dm = truth.photometric_error(902800, 50, lambda x, y, f: -2.5 * np.log10(f)
                                 + truth.model.zeropoint(902800, 50, x, y))
    assert len(dm) > 10 and np.max(np.abs(dm)) < 1e-6


def test_reference_catalog_shards(repo_root):
    ref = read_refcat(os.path.join(repo_root, "ref_cats", REFCAT_NAME), 150.1, 2.2, 0.3)
    assert len(ref) > 100 and {"coord_ra", "pm_ra", "epoch", "i_flux", "i_fluxErr"} <= set(ref.colnames)


def test_make_skymap_covers_the_visits(repo_root, capsys):
    assert cli.main(["make-skymap", repo_root, "--rerun", "sim", "--id", "visit=902798..902802:2",
                     "ccd=8..10^49^50"]) == 0
    sm = load_skymap(os.path.join(repo_root, "rerun", "sim", "deepCoadd", "skyMap.json"))
    t = sm[0]
    assert t.contains(150.1, 2.2)
    err = capsys.readouterr().err
    assert "Not opening files" in err          # CCD 9 is dead
    # a second run refuses to overwrite
    assert cli.main(["make-skymap", repo_root, "--rerun", "sim", "--id", "visit=902798"]) == 1
    assert "exists already" in capsys.readouterr().err


def test_bad_input_is_one_line(tmp_path, capsys):
    assert cli.main(["simulate", str(tmp_path / "x"), "--filter", "HSC-Q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HSC-Q" in err
    assert cli.main(["make-skymap", str(tmp_path), "--rerun", "sim", "--id", "visit=1..x"]) == 1
    assert "1..x" in capsys.readouterr().err


def test_images_hold_the_stars(tmp_path):
    """--images: aperture sums around clean, isolated stars give the truth fluxes within noise."""
    root = str(tmp_path / "img")
    assert cli.main(["simulate", root, "--visits", "1", "--ccds", "49", "--images", "--seed", "2"]) == 0
    repo = Repository(root, "sim")
    exp = read_corr(repo.find("calexp", visit=902798, ccd=49, pointing=1201, filter="HSC-I"))
    assert exp.image.shape == (4176, 2048) and exp.variance.shape == exp.image.shape
    truth = Truth(root)
    s = truth.clean_stars(902798, 49)
    s = s[(s["instFlux_true"] > 2e4) & (s["instFlux_true"] < 3e5)]
    yy, xx = np.mgrid[-15:16, -15:16]
    ap = (xx ** 2 + yy ** 2) <= 15 ** 2
    pulls = []
    for x, y, f in zip(s["x_true"], s["y_true"], s["instFlux_true"]):
        ix, iy = int(round(x)), int(round(y))
        if not (20 < ix < 2027 and 20 < iy < 4155):
            continue
        cut = exp.image[iy - 15:iy + 16, ix - 15:ix + 16][ap]
        var = exp.variance[iy - 15:iy + 16, ix - 15:ix + 16][ap]
        pulls.append((cut.sum() - f) / np.sqrt(var.sum()))
    pulls = np.array(pulls)
    assert len(pulls) > 10
    # blends with faint neighbours inside the aperture can only add flux: use a robust centre
    assert abs(np.median(pulls)) < 1.0 and np.percentile(np.abs(pulls), 50) < 2.0
