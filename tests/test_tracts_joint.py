"""One solution per run across tracts (issue 16): a field at the corner of rings tracts
9813/9814 and their neighbours is fitted once, and every (visit, CCD) gets the same products,
byte for byte, in each tract folder that wants them, as accurate against the truth as the
single-tract fit."""
import glob
import os
import shutil
from collections import defaultdict

import numpy as np
import pytest

from mosaicfit import cli
from mosaicfit.io.layout import Repository
from mosaicfit.io.skymap import load_skymap
from mosaicfit.io.wcsfile import read_wcs_header
from mosaicfit.model.camera import hsc
from mosaicfit.model.sip import sip_pixel_to_sky
from mosaicfit.pipeline import mosaic as mosaic_module
from mosaicfit.pipeline.mosaic import joint_runs
from mosaicfit.sim import evaluate_outputs, simulate_repository

VISITS = "visit=902798..902812:2"


def _central_ccds(n):
    cam = hsc()
    r = {c: np.hypot(*cam.pixel_to_focal_plane(c, 1023.5, 2087.5)) for c in cam.science_ccds}
    return tuple(sorted(sorted(r, key=r.get)[:n]))


# the 32 CCDs nearest the optical axis (0.35 deg about it): the test stays short and the
# visits, dithered by 0.05-0.3 deg about the corner, still overlap four tracts and more
CENTRAL = _central_ccds(32)
CCDS = "ccd=" + "^".join(map(str, CENTRAL))


@pytest.fixture(scope="module")
def corner(tmp_path_factory):
    """The issue's corner field (8 visits centred at RA 150.99, Dec 2.23, the corner of rings
    tracts 9813/9814 and their neighbours), the central CCDs, with the rings sky map."""
    root = str(tmp_path_factory.mktemp("corner") / "repo")
    simulate_repository(root, "sim", jobs=2, visits=8, ra=150.99, dec=2.23, seed=3,
                        galaxy_density=800.0, ccds=CENTRAL, dither_min_deg=0.05,
                        dither_max_deg=0.3)
    assert cli.main(["make-skymap", root, "--rerun=sim", "--rings"]) == 0
    return root


@pytest.fixture(scope="module")
def joint(corner, tmp_path_factory):
    """mosaic.py over the whole field without tract=: (root, number of fits, tracts)."""
    root = str(tmp_path_factory.mktemp("joint") / "repo")
    shutil.copytree(corner, root)
    calls = []
    real = mosaic_module.solve

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(mosaic_module, "solve", counting)
    try:
        assert cli.mosaic_main([root, "--rerun=sim", "--id", VISITS, CCDS]) == 0
    finally:
        mp.undo()
    tracts = sorted(int(os.path.basename(p)) for p in
                    glob.glob(os.path.join(root, "rerun", "sim", "*", "*", "corr", "[0-9]*")))
    return root, len(calls), tracts


def _products(root):
    """{(visit, ccd): {tract: (wcs bytes, fcr bytes)}} of the rerun."""
    out = defaultdict(dict)
    for p in glob.glob(os.path.join(root, "rerun", "sim", "*", "*", "corr", "*", "wcs-*.fits")):
        tract = int(os.path.basename(os.path.dirname(p)))
        v, c = os.path.basename(p)[4:-5].split("-")
        with open(p, "rb") as f, open(p.replace("wcs-", "fcr-"), "rb") as g:
            out[int(v), int(c)][tract] = (f.read(), g.read())
    return out


def test_joint_runs_are_the_connected_tracts():
    # tracts linked by shared visits form one run, a tract sharing none is a run of its own
    runs = joint_runs({9813: {1, 2}, 9814: {2, 3}, 9572: {3}, 100: {7}, 9571: {1}})
    assert runs == [[100], [9571, 9572, 9813, 9814]]
    assert joint_runs({5: {1}}) == [[5]]


def test_one_fit_identical_products_in_every_tract(joint, corner):
    root, nfit, tracts = joint
    assert nfit == 1
    assert len(tracts) >= 4 and {9813, 9814} <= set(tracts), tracts
    prods = _products(root)
    shared = {k: t for k, t in prods.items() if len(t) > 1}
    assert len(shared) >= 100, len(shared)
    for key, per_tract in shared.items():
        first = next(iter(per_tract.values()))
        assert all(p == first for p in per_tract.values()), key
    # each tract folder holds the products of exactly the CCDs overlapping that tract
    sm = load_skymap(Repository(root, "sim").find("skymap", coaddName="deep"))
    camera = hsc()
    for (v, c), per_tract in prods.items():
        h = read_wcs_header(next(iter(glob.glob(os.path.join(
            root, "rerun", "sim", "*", "*", "corr", f"CORR-{v:07d}-{c:03d}.fits")))))
        want = set(int(t) for t in sm.find_tracts_overlapping(
            *sip_pixel_to_sky(h, *camera.ccd_corners(c))))
        assert set(per_tract) == want, (v, c, sorted(per_tract), sorted(want))


def test_joint_accuracy_as_good_as_a_single_tract_fit(joint, corner, tmp_path, capsys):
    """Against the truth, the joint products of tract 9813's CCDs are as accurate as those of
    that tract fitted alone."""
    root = joint[0]
    single = str(tmp_path / "single")
    shutil.copytree(corner, single)
    capsys.readouterr()
    assert cli.mosaic_main([single, "--rerun=sim", "--id", VISITS, CCDS, "tract=9813"]) == 0
    # every visit of the field overlaps tract 9813: its own fit has the joint fit's data
    assert "tract 9813: 8 visits" in capsys.readouterr().out
    from mosaicfit.pipeline.inputs import resolve_refs
    refs = resolve_refs(Repository(single, "sim"), [[VISITS, CCDS]])
    a = evaluate_outputs(root, "sim", refs, 9813)
    b = evaluate_outputs(single, "sim", refs, 9813)
    assert a["n_ccds"] == b["n_ccds"] > 150 and a["n_stars"] > 5000
    # the model is exact up to noise: both are at the simulation's ~1-2 mas, 2-3 mmag; the
    # joint fit may differ by its noise only (the same visits, a few more stars)
    for ja, sb in zip(a["wcs_rms_mas"], b["wcs_rms_mas"]):
        assert ja <= 2.0 and ja <= 1.1 * sb + 0.05, (a, b)
    assert a["zp_rms_mmag"] <= 3.0 and a["zp_rms_mmag"] <= 1.1 * b["zp_rms_mmag"] + 0.1, (a, b)
    # with the same data the two solutions differ only by their tangent planes (the tract's
    # centre, the run's centre), which the visit polynomials absorb: far below the noise
    x, y = np.meshgrid(np.linspace(0, 2047, 5), np.linspace(0, 4175, 5))
    r = Repository(root, "sim")
    s = Repository(single, "sim")
    diffs = []
    for ref in refs[::2]:
        did = dict(ref.data_id, tract=9813)
        if not (os.path.exists(r.path("wcs", **did)) and os.path.exists(s.path("wcs", **did))):
            continue
        ra, da = sip_pixel_to_sky(read_wcs_header(r.path("wcs", **did)), x.ravel(), y.ravel())
        rb, db = sip_pixel_to_sky(read_wcs_header(s.path("wcs", **did)), x.ravel(), y.ravel())
        diffs.append(np.hypot((ra - rb) * np.cos(np.radians(da)), da - db).max() * 3.6e6)
    assert len(diffs) > 60 and max(diffs) < 0.05, max(diffs)


def test_tract_diagnostics_show_the_tract_visits(tmp_path):
    """A tract's diagnostics of a joint run: the joint solution over the detections of the
    visits writing into the tract; the solution itself is left whole."""
    from astropy.table import Table
    from mosaicfit import diagnostics
    from mosaicfit.fit.selection import ExposureData
    from mosaicfit.fit.solve import solve
    from mosaicfit.io.src import standardize
    from mosaicfit.pipeline.mosaic import tract_view
    from mosaicfit.sim import make_tract
    sim = make_tract(visits=3, ccds=tuple(range(40, 60)), seed=4)
    exps = [ExposureData(v, c, standardize(cat), sim.wcs_headers[(v, c)], sim.fluxmag0[(v, c)][0],
                         sim.truth.visits[v]["mjd"], sim.config.filter)
            for (v, c), cat in sorted(sim.catalogs.items()) if not sim.missing.get((v, c))]
    sol = solve(exps, hsc(), None, sim.refcat)
    n = len(sol.detections)
    visits = sim.visits[:2]
    view = tract_view(sol, visits, no_products=[(visits[0], 40)])
    diagnostics.write_all(view, str(tmp_path))
    d = Table.read(str(tmp_path / "detections.fits"))
    assert sorted(set(np.asarray(d["visit"]).tolist())) == sorted(visits)
    assert len(d) == np.isin(np.asarray(sol.detections["visit"]), visits).sum() < n
    assert len(sol.detections) == n and sol.stats.no_products != view.stats.no_products
    for v in sim.visits:
        assert os.path.exists(tmp_path / f"ResPosArrow2D_{v}.png") == (v in visits)
    assert os.path.exists(tmp_path / "index.html")


def test_joint_run_on_a_dask_cluster(joint, corner, tmp_path):
    """--scheduler: the joint fit and its products for every tract are one Dask task; the
    products are those of the local run (to 0.01 mas: one-thread workers change the order of
    the sums, test_mosaic) and identical across the tract folders."""
    distributed = pytest.importorskip("dask.distributed", reason="dask[distributed] not installed")
    root = str(tmp_path / "dask")
    shutil.copytree(corner, root)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cli.mosaic_main([root, "--rerun=sim", "--id", VISITS, CCDS,
                                "--scheduler", cluster.scheduler_address]) == 0
    local, remote = _products(joint[0]), _products(root)
    assert local.keys() == remote.keys()
    x, y = np.meshgrid(np.linspace(0, 2047, 5), np.linspace(0, 4175, 5))
    for key, per_tract in list(remote.items())[::5]:
        assert per_tract.keys() == local[key].keys()
        first = next(iter(per_tract.values()))
        assert all(p == first for p in per_tract.values()), key
        tract = next(iter(per_tract))
        ha, hb = (read_wcs_header(os.path.join(r, "rerun", "sim", "01201", "HSC-I", "corr",
                                               f"{tract:04d}", f"wcs-{key[0]:07d}-{key[1]:03d}.fits"))
                  for r in (joint[0], root))
        ra, da = sip_pixel_to_sky(ha, x.ravel(), y.ravel())
        rb, db = sip_pixel_to_sky(hb, x.ravel(), y.ravel())
        assert np.hypot((ra - rb) * np.cos(np.radians(da)), da - db).max() * 3.6e6 < 0.01, key


def test_products_written_in_processes_are_the_same_bytes(corner, tmp_path, monkeypatch):
    """-j 2 on a run of many products (here: from the first product on, in chunks of 64)
    makes and writes them in two spawned processes, each from its copy of the Solution: the
    same files, byte for byte, as one process writes them, linked across the tract folders
    alike, and the same CCDs left without. The processes are those that read the inputs (one
    pool for the run)."""
    monkeypatch.setattr(mosaic_module, "WRITE_CHUNK", 64)
    spawned, pools = [], []
    real = mosaic_module._write_in_processes
    monkeypatch.setattr(mosaic_module, "_write_in_processes",
                        lambda *a: spawned.append((len(a[2]), a[4] is not None)) or real(*a))
    real_pool = mosaic_module.process_pool
    monkeypatch.setattr(mosaic_module, "process_pool", lambda n: pools.append(n) or real_pool(n))
    roots = {}
    for jobs, least in ((1, 10 ** 9), (2, 1)):
        roots[jobs] = root = str(tmp_path / f"j{jobs}")
        shutil.copytree(corner, root)
        monkeypatch.setattr(mosaic_module, "PARALLEL_WRITE_MIN", least)
        assert cli.mosaic_main([root, "--rerun=sim", "--id", VISITS, CCDS, "-j", str(jobs)]) == 0
    assert spawned == [(4, True)]           # 256 products in 4 chunks, in the run's pool
    assert pools == [2]
    assert _products(roots[2]) == _products(roots[1])
    # one inode per product across its tract folders
    for p in glob.glob(os.path.join(roots[2], "rerun", "sim", "*", "*", "corr", "*", "*.fits")):
        assert os.stat(p).st_nlink == len(glob.glob(os.path.join(
            roots[2], "rerun", "sim", "*", "*", "corr", "*", os.path.basename(p))))


def test_a_write_error_in_a_writing_process_is_one_line(corner, tmp_path, monkeypatch, capsys):
    """A product the writing processes cannot write (here a folder in its place: root may
    write anywhere) stops the run with the one-line error naming the file, and no temporary
    is left behind."""
    monkeypatch.setattr(mosaic_module, "WRITE_CHUNK", 64)
    monkeypatch.setattr(mosaic_module, "PARALLEL_WRITE_MIN", 1)
    root = str(tmp_path / "bad")
    shutil.copytree(corner, root)
    v, c = 902806, CENTRAL[5]
    blocker = os.path.join(root, "rerun", "sim", "01201", "HSC-I", "corr", "9813",
                           f"wcs-{v:07d}-{c:03d}.fits")
    os.makedirs(os.path.join(blocker, "inside"))
    capsys.readouterr()
    assert cli.mosaic_main([root, "--rerun=sim", "--id", VISITS, CCDS, "-j", "2"]) != 0
    err = capsys.readouterr().err
    assert os.path.basename(blocker) in err and "cannot write" in err, err[-2000:]
    assert not glob.glob(os.path.join(root, "rerun", "sim", "*", "*", "corr", "*", ".*.tmp"))
