"""Diagnostics (issue 5): hscPipe's plots and files, index.html, and `mosaicfit report`."""
import os
import re

import numpy as np
import pytest
from astropy.io import fits

import mosaicfit.diagnostics.files
import mosaicfit.diagnostics.plots
import mosaicfit.diagnostics.stats
from mosaicfit import MosaicError, cli, diagnostics
from mosaicfit.model.solution import Solution
from mosaicfit.model.camera import hsc
from mosaicfit.model.sky import tangent_to_sky
from mosaicfit.io.src import standardize
from mosaicfit.sim import make_tract
from mosaicfit.model.sip import sip_inverse, sip_pixel_to_sky
from mosaicfit.fit.selection import ExposureData
from mosaicfit.fit.solve import solve

PER_VISIT = ("ResPosArrow2D_{}.png", "fcont_{}.png", "jcont_{}.png")
GLOBAL_PNG = ("DFlux2D.png", "ResFlux.png", "MdM.png", "PosDPos.png", "ResPosScatter.png")
HSC_FILES = ("catalog.fits", "ccd.dat", "ccdScale.dat", "coeffs.dat", "dmag.dat", "dpos.dat")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small tract (3 visits x 40 CCDs) solved, and its diagnostics written where
    mosaic.py would put them (ROOT/rerun/R/mosaic-diag/0000)."""
    sim = make_tract(visits=3, ccds=tuple(range(30, 70)), seed=4)
    exps = [ExposureData(v, c, standardize(cat), sim.wcs_headers[(v, c)], sim.fluxmag0[(v, c)][0],
                         sim.truth.visits[v]["mjd"], "HSC-I")
            for (v, c), cat in sorted(sim.catalogs.items()) if not sim.missing.get((v, c))]
    sol = solve(exps, hsc(), None, sim.refcat, tangent_point=(150.1, 2.2))
    root = tmp_path_factory.mktemp("diag") / "repo"
    root.mkdir()
    outdir = os.path.join(root, "rerun", "r", "mosaic-diag", "0000")
    files = diagnostics.write_all(sol, outdir)
    return sol, str(root), outdir, files


def _visits(sol):
    return sorted(np.unique(np.asarray(sol.detections["visit"])).tolist())


def _read_dat(path, ncol):
    rows = [ln.split() for ln in open(path) if not ln.startswith("#")]
    assert rows and all(len(r) == ncol for r in rows)
    kind = np.array([r[0] for r in rows])
    vals = np.array([[float(x) for x in r[1:]] for r in rows])
    return kind, vals


def test_every_file_is_written_and_parses(run):
    sol, _, outdir, files = run
    names = [p.format(v) for v in _visits(sol) for p in PER_VISIT] + list(GLOBAL_PNG) + list(HSC_FILES)
    names += ["index.html", "summary.json", "solution.json", "detections.fits", "stars.fits"]
    for n in names:
        assert n in files and os.path.getsize(os.path.join(outdir, n)) > 0, n
    for n in names:
        if n.endswith(".png"):
            with open(os.path.join(outdir, n), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", n
    assert not [f for f in os.listdir(outdir) if f.endswith(".tmp")]   # atomic writes


def test_dpos_dat(run):
    sol, _, outdir, _ = run
    d = sol.detections
    kind, v = _read_dat(os.path.join(outdir, "dpos.dat"), 8)
    assert open(os.path.join(outdir, "dpos.dat")).readline().startswith("#m/s  xi_fit   eta_fit")
    assert len(kind) == len(d)
    ref = np.asarray(d["ref"])
    assert (kind == "m").sum() == ref.sum() and set(kind) <= {"m", "s"}
    assert np.all(kind[:ref.sum()] == "m")              # matched first, as hscPipe
    good = v[:, 6] == 1
    assert good.sum() == np.asarray(d["astro_used"]).sum()
    # residuals in arcsec as hscPipe users compute them; their rms is the fit's
    dx = (v[good, 0] - v[good, 2]) * 3.6e6
    dy = (v[good, 1] - v[good, 3]) * 3.6e6
    rms = np.sqrt(np.mean((dx ** 2 + dy ** 2) / 2))
    assert rms == pytest.approx(sol.stats.astrometry.rms_mas, rel=2e-3)
    assert rms == pytest.approx(diagnostics.summarize(sol)["astro_rms_all"], rel=1e-4)
    # u, v as in the detection table
    order = np.r_[np.nonzero(ref)[0], np.nonzero(~ref)[0]]
    assert np.allclose(v[:, 4], np.asarray(d["u"])[order], atol=1e-5)
    assert np.allclose(v[:, 0] * 3600, np.asarray(d["xi_fit"])[order], atol=1e-5)


def test_dmag_dat(run):
    sol, _, outdir, _ = run
    d = sol.detections
    kind, v = _read_dat(os.path.join(outdir, "dmag.dat"), 7)
    ref = np.asarray(d["ref"])
    order = np.r_[np.nonzero(ref)[0], np.nonzero(~ref)[0]]
    good = v[:, 5] == 1
    assert good.sum() == np.asarray(d["phot_used"]).sum()
    # mag_cor - mag0 is the fit's residual; its rms the fit's rms
    dm = (v[:, 0] - v[:, 1]) * 1000
    assert np.allclose(dm[good], np.asarray(d["dmag"])[order][good], atol=2e-3)
    assert np.sqrt(np.mean(dm[good] ** 2)) == pytest.approx(sol.stats.photometry["HSC-I"].rms_mmag, rel=1e-3)
    assert np.all(v[kind == "s", 2] == -9999)
    m = (kind == "m") & good
    assert np.allclose(v[m, 2], np.asarray(d["mag_ref"])[order][m], atol=1e-6)
    assert np.allclose(v[:, 0][good], np.asarray(d["mag_fit"])[order][good], atol=1e-6)


def test_ccd_files(run):
    sol, _, outdir, _ = run
    cam = sol.camera
    rows = [ln.split() for ln in open(os.path.join(outdir, "ccd.dat")) if not ln.startswith("#")]
    assert open(os.path.join(outdir, "ccd.dat")).readline() == "#chip   centerXFp    centerYFp   yaw (rad)\n"
    ccds = [int(r[0]) for r in rows]
    assert set(sol.placement.offsets) <= set(ccds)
    for r in rows:
        c, x, y, yaw = int(r[0]), float(r[1]), float(r[2]), float(r[3])
        d = cam[c]
        u, v = sol.focal_plane(c, np.array([(d.width - 1) / 2]), np.array([(d.height - 1) / 2]))
        assert abs(x - u[0]) < 1e-4 and abs(y - v[0]) < 1e-4
        assert abs(yaw) < 0.01          # the quarter turns are not part of hscPipe's yaw
        th = sol.placement.offsets.get(c, (0, 0, 0))[2]
        assert yaw == pytest.approx(np.radians(d.yaw_deg - 90 * d.nquarter) + th, abs=1e-7)
    rows = [ln.split() for ln in open(os.path.join(outdir, "ccdScale.dat")) if not ln.startswith("#")]
    for c, scale in rows:
        assert float(scale) == pytest.approx(10 ** (-0.4 * sol.photometry["HSC-I"].ccd_term(c)), abs=1e-5)


def _coeffs(path):
    out = {}
    lines = [ln.split() for ln in open(path) if not ln.startswith("#")]
    i = 0
    while i < len(lines):
        v = int(lines[i][0])
        A, D = map(float, lines[i][1:])
        x0, y0 = map(float, lines[i + 1][1:])
        k = i + 2
        rows = []
        while k < len(lines) and int(lines[k][0]) == v and len(lines[k]) == 5:
            rows.append([float(x) for x in lines[k][1:]])
            k += 1
        out[v] = (A, D, x0, y0, np.array(rows))
        i = k
    return out


def test_coeffs_dat_reproduces_the_model(run):
    """xi = sum a_k u^i v^j (degrees) in the visit's plane about (A, D), meas_mosaic's term
    order: the sky of a detection from coeffs.dat is the model's to a few mas at most, and
    ap/bp invert it."""
    sol, _, outdir, _ = run
    co = _coeffs(os.path.join(outdir, "coeffs.dat"))
    assert sorted(co) == sorted(sol.astrometry.coefficients)
    order = sol.sip_order
    terms = diagnostics.files.sip_terms(order)
    assert terms[:5] == [(1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    d = sol.detections
    for v, (A, D, x0, y0, c) in co.items():
        assert c.shape == (len(terms), 4) and x0 == 0 and y0 == 0
        m = np.nonzero(np.asarray(d["visit"]) == v)[0][::25]
        u, w = np.asarray(d["u"])[m], np.asarray(d["v"])[m]
        M = np.column_stack([u ** i * w ** j for i, j in terms])
        ra, dec = tangent_to_sky(np.radians(M @ c[:, 0]), np.radians(M @ c[:, 1]),
                                 np.degrees(A), np.degrees(D))
        x, y, ccd = np.asarray(d["x"])[m], np.asarray(d["y"])[m], np.asarray(d["ccd"])[m]
        err = []
        for k in range(len(m)):
            r1, d1 = sol.pixel_to_sky(v, int(ccd[k]), np.array([x[k]]), np.array([y[k]]))
            err.append(np.hypot((ra[k] - r1[0]) * np.cos(np.radians(d1[0])), dec[k] - d1[0]) * 3.6e6)
        assert np.sqrt(np.mean(np.square(err))) < 1.0 and np.max(err) < 5.0
        # the inverse: (U, V) = CD^-1 (xi, eta), u = U + sum ap_k U^i V^j
        cd = np.array([[c[0, 0], c[1, 0]], [c[0, 1], c[1, 1]]])
        U, V = np.linalg.solve(cd, np.stack([M @ c[:, 0], M @ c[:, 1]]))
        N = np.column_stack([U ** i * V ** j for i, j in terms])
        assert np.allclose(U + N @ c[:, 2], u, atol=0.1)
        assert np.allclose(V + N @ c[:, 3], w, atol=0.1)


def test_visit_sip_and_jacobian(run):
    """The visit-level TAN-SIP (coeffs.dat) follows the model; J from it, J of the model
    (jcont) agree, and J is 1 at the optical axis."""
    sol, _, _, _ = run
    v = sorted(sol.astrometry.coefficients)[0]
    fp = diagnostics.plots.FocalPlane(sol, sorted(sol.placement.offsets))
    h = diagnostics.plots.visit_sip(sol, v, fp)
    assert h["FITRMS"] < 1.0 and h["FITMAX"] < 5.0
    x, y = np.array([10.0, 1000.0, 2000.0]), np.array([20.0, 2000.0, 4100.0])
    for c in (30, 50, 69):
        u, w = sol.focal_plane(c, x, y)
        r1, d1 = sip_pixel_to_sky(h, u, w)
        r2, d2 = sol.pixel_to_sky(v, c, x, y)
        assert np.all(np.hypot((r1 - r2) * np.cos(np.radians(d2)), d1 - d2) * 3.6e6 < 5.0)
        uu, vv = sip_inverse(h, r1, d1)
        assert np.allclose(uu, u, atol=0.1) and np.allclose(vv, w, atol=0.1)
    d = sol.detections
    m = np.nonzero(np.asarray(d["visit"]) == v)[0][::50]
    u, w = np.asarray(d["u"])[m], np.asarray(d["v"])[m]
    Jm = diagnostics.plots.model_jacobian(sol, v, fp, u, w)
    assert np.allclose(diagnostics.plots.jacobian_map(h, u, w), Jm, atol=1e-4)
    assert diagnostics.plots.model_jacobian(sol, v, fp, [0.0], [0.0])[0] == pytest.approx(1.0, abs=1e-9)
    # the photometric fit's J (from the per-CCD products) is the same to within 1%
    assert np.allclose(np.asarray(d["jacobian"])[m], Jm, atol=1e-2)


def test_jacobian_is_concentric(run):
    """The J map is concentric about the optical axis (HSC's distortion: centre within ~50 px,
    non-concentric part below 1e-3)."""
    sol, _, _, _ = run
    fp = diagnostics.plots.FocalPlane(sol, sorted(sol.placement.offsets))
    gu, gv, on = fp.gu[::2, ::2], fp.gv[::2, ::2], fp.which[::2, ::2] >= 0
    for v in sol.astrometry.coefficients:
        J = diagnostics.plots.model_jacobian(sol, v, fp, gu[on], gv[on])
        u0, v0, rms = diagnostics.plots.concentric_centre(J, gu[on], gv[on])
        assert np.hypot(u0, v0) < 100 and rms < 1e-3
        assert 0.8 < J.min() < J.max() <= 1.0 + 1e-6


def test_catalog_fits(run):
    sol, _, outdir, _ = run
    with fits.open(os.path.join(outdir, "catalog.fits")) as f:
        f.verify("exception")
        t = f[1].data
        assert [c.name for c in f[1].columns] == ["id", "coord_ra", "coord_dec", "mag", "err", "num"]
    d = sol.detections
    used = np.asarray(d["phot_used"])
    assert t["num"].sum() == used.sum()
    assert len(t) == len(np.unique(np.asarray(d["star"])[used]))
    st = sol.stars
    idx = np.searchsorted(np.asarray(st["id"]), t["id"])
    assert np.allclose(np.degrees(t["coord_ra"]), np.asarray(st["ra"])[idx], atol=1e-9)
    assert np.allclose(t["mag"], np.asarray(st["mag"])[idx], atol=1e-5)
    assert np.all(t["err"][t["num"] > 1] > 0)


def test_index_html(run):
    sol, _, outdir, _ = run
    page = open(os.path.join(outdir, "index.html"), encoding="utf-8").read()
    s = diagnostics.summarize(sol)
    for key in ("n_detections", "n_stars", "n_ref_stars", "n_visits", "n_ccds"):
        assert f">{s[key]}<" in page, key
    for key in ("astro_rms_internal", "astro_rms_ref", "astro_rms_all", "phot_rms_all"):
        assert f"{s[key]:.2f}" in page, key
    for it in sol.stats.iterations:
        assert f"{it.chi2 / max(it.ndof, 1):.3f}" in page
    for k in ("match", "astrometry", "photometry"):
        assert f"{sol.stats.timing[k]:.2f}" in page
    names = [p.format(v) for v in _visits(sol) for p in PER_VISIT] + list(GLOBAL_PNG)
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert set(names) <= set(srcs)
    for src in srcs:                      # self-contained: local files only
        assert "/" not in src and os.path.exists(os.path.join(outdir, src))
    assert "http://" not in page and "https://" not in page


def test_solution_round_trip(run):
    sol, _, outdir, _ = run
    back = Solution.load(outdir)
    v = sorted(sol.astrometry.coefficients)[0]
    x, y = np.array([5.0, 2000.0]), np.array([7.0, 4000.0])
    for c in (30, 55):
        assert np.allclose(back.pixel_to_sky(v, c, x, y), sol.pixel_to_sky(v, c, x, y), atol=1e-12)
        assert back.fluxmag0(v, c) == pytest.approx(sol.fluxmag0(v, c), rel=1e-12)
    assert [i.line() for i in back.stats.iterations] == [i.line() for i in sol.stats.iterations]
    assert back.detections.colnames == sol.detections.colnames
    assert np.array_equal(np.asarray(back.detections["dxi"]), np.asarray(sol.detections["dxi"]))


def test_report_rebuilds(run, capsys):
    sol, root, outdir, _ = run
    before = {n: open(os.path.join(outdir, n), "rb").read() for n in ("dpos.dat", "dmag.dat", "coeffs.dat", "ccd.dat")}
    v = _visits(sol)[0]
    for n in ("index.html", "MdM.png", f"jcont_{v}.png", "dpos.dat"):
        os.remove(os.path.join(outdir, n))
    assert cli.main(["report", root, "--rerun=r", "--tract=0"]) == 0
    assert "index.html" in capsys.readouterr().out
    for n in ("index.html", "MdM.png", f"jcont_{v}.png"):
        assert os.path.exists(os.path.join(outdir, n))
    for n, b in before.items():
        assert open(os.path.join(outdir, n), "rb").read() == b, n
    # another diagDir: nothing there
    assert cli.main(["report", root, "--rerun=r", "--tract=0", "--diagDir", os.path.join(root, "no")]) == 1
    assert "solution.json" in capsys.readouterr().err


def test_helpers():
    rng = np.random.default_rng(1)
    a = np.r_[rng.normal(0, 2.0, 20000), [1e3, -1e3, np.nan]]
    s, m, n = diagnostics.stats.clipped_std(a)
    assert s == pytest.approx(2.0, rel=0.03) and abs(m) < 0.05 and n > 19000
    assert [diagnostics.stats.nice(x) for x in (0.7, 3, 12, 49, 51)] == [1, 5, 20, 50, 100]
    with pytest.raises(MosaicError):
        Solution.load("/nonexistent")


def test_helper_processes(run, tmp_path, monkeypatch):
    """Per-visit plots drawn by helper processes give the same files; a helper that fails
    leaves its visits to the main process."""
    sol, _, outdir, files = run
    out2 = str(tmp_path / "jobs2")
    f2 = diagnostics.write_all(sol, out2, save=False, jobs=2)
    assert sorted(f2) == sorted(f for f in files if f not in ("solution.json", "detections.fits", "stars.fits"))
    assert open(os.path.join(out2, "summary.json")).read().split('"jcont"')[1] == \
        open(os.path.join(outdir, "summary.json")).read().split('"jcont"')[1]
    assert not [f for f in os.listdir(out2) if f.startswith(".")]
    import sys
    monkeypatch.setattr(sys, "executable", "/bin/false")
    out3 = str(tmp_path / "fallback")
    f3 = diagnostics.write_all(sol, out3, save=False, jobs=3)
    assert sorted(f3) == sorted(f2)
    assert not [f for f in os.listdir(out3) if f.startswith(".")]


def test_mosaic_command_writes_diagnostics(tmp_path, capsys):
    """Both spellings: hscPipe 4.x --diagnostics --diagDir and 3.x --config outputDiag=True
    outputDir=...; then `mosaicfit report` with the default folder."""
    root = str(tmp_path / "repo")
    assert cli.main(["simulate", root, "--visits", "3", "--ccds", "30..69", "--seed", "4"]) == 0
    ids = ["--id", "visit=902798..902802:2", "ccd=30..69", "tract=0"]
    ddir = str(tmp_path / "diag4")
    assert cli.mosaic_main([root, "--rerun=sim", *ids, "--diagnostics", f"--diagDir={ddir}"]) == 0
    out = os.path.join(ddir, "0000")
    for n in ("index.html", "dpos.dat", "ResPosArrow2D_902800.png", "jcont_902802.png", "solution.json"):
        assert os.path.exists(os.path.join(out, n)), n
    assert cli.mosaic_main([root, "--rerun=sim", *ids, "--config", "outputDiag=True",
                            f"outputDir={tmp_path / 'diag3'}", "--clobber-config"]) == 0
    assert os.path.exists(tmp_path / "diag3" / "0000" / "MdM.png")
    capsys.readouterr()
    assert cli.main(["report", root, "--rerun=sim", "--tract=0", f"--diagDir={ddir}"]) == 0
    assert "rebuilt" in capsys.readouterr().out


def test_flux_correction_map_is_the_fcr_product(run):
    """fcont's factor is the written fcr polynomial with the CCD term: 10^(-0.4 (fcr.mag + dC))
    = FLUXMAG0(axis of the visit) / FLUXMAG0(CCD) x 10^(-0.4 fcr.mag)."""
    sol, _, _, _ = run
    fp = diagnostics.plots.FocalPlane(sol, sorted(sol.placement.offsets))
    d = sol.detections
    v = sorted(sol.photometry["HSC-I"].coefficients)[1]
    m = np.nonzero(np.asarray(d["visit"]) == v)[0][::40]
    u, w, ccd = np.asarray(d["u"])[m], np.asarray(d["v"])[m], np.asarray(d["ccd"])[m]
    F = diagnostics.plots.flux_correction_map(sol, v, fp, u, w, ccd)
    for k in range(len(m)):
        c = int(ccd[k])
        fc = sol.flux_correction(v, c)
        x, y = np.asarray(d["x"])[m[k]], np.asarray(d["y"])[m[k]]
        want = 10 ** (-0.4 * (float(np.ravel(fc.mag(np.array([x]), np.array([y])))[0])
                              + diagnostics.stats.ccd_term(sol, v, c)))
        assert F[k] == pytest.approx(want, abs=2e-5)
