"""mosaicfit benchmarks, side by side with the tools users would pick instead (issue 7).

    python bench/run.py            # full run (~30 min on 2 cores): writes bench/RESULTS.md
    python bench/run.py --quick    # small tracts, < 5 min: writes OUT/RESULTS-quick.md

Builds its data with the simulator (cached under --out, keyed by the simulation parameters)
and measures, in the same run:

1. SCAMP (Debian/Ubuntu package ``scamp``; not installed by this script) and mosaic.py on
   the same simulated tracts (10, 30, 100 visits x 104 CCDs): wall time, peak memory,
   true astrometric error (mas) and zero-point error (mmag) against the simulation truth.
2. mosaicfit's scaling: time and memory of each phase (read, match, astrometry, photometry,
   write) vs the number of visits (5..100) and detections, with the memory a dense,
   star-inclusive normal matrix (hscPipe's formulation) would need; solve time vs the number
   of detections at a fixed number of visits (star density varied in the simulator).
3. Matching: mosaicfit's kd-tree vs scipy.spatial.cKDTree and astropy on the same 1M
   detections (nearest neighbour, all pairs, friends-of-friends, within 1").
4. Per-pixel calibration: bench/bench_apply.py's figures, when that script exists.

Prints the tables and writes them, with the machine, date and SCAMP configuration, to the
results file. Timings are wall-clock on a machine that may be running other work: the load
average before and after each timed run is recorded next to it.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
PY = sys.executable

# 20 CCDs around the optical axis: the --quick tracts
CENTRAL_CCDS = (49, 50, 41, 57, 58, 42, 65, 33, 66, 34, 48, 25, 73, 56, 40, 74, 26, 51, 43, 59)

FULL = dict(scamp_visits=[10, 30, 100], phase_visits=[5, 10, 30, 100], ccds=None,
            dither_max_deg=None, density_visits=5, densities=[1000, 2000, 4000, 8000, 16000],
            match_n=1_000_000, scamp_timeout=1800.0, scamp_search=True, apply_args=[])
QUICK = dict(scamp_visits=[4], phase_visits=[2, 4], ccds=CENTRAL_CCDS, dither_max_deg=0.25,
             density_visits=2, densities=[1000, 4000, 16000], match_n=100_000,
             scamp_timeout=120.0, scamp_search=False, apply_args=["--ccds", "1", "--skip-command"])

# SCAMP configurations tried on the first (10-visit) tract: (name, overrides of
# scamp.DEFAULT_CONFIG, passes, initial WCS, time limit in s)
SCAMP_SEARCH = [
    ("as used (INSTRUMENT, DISTORT_DEGREES 3, FOCDISTORT_DEGREE 3, UNCHANGED)", {}, 1,
     "layout", None),
    ("as used, 2 passes", {}, 2, "layout", None),
    ("DISTORT_DEGREES 5", dict(DISTORT_DEGREES=5), 1, "layout", None),
    ("DISTORT_DEGREES 7", dict(DISTORT_DEGREES=7), 1, "layout", None),
    ("FOCDISTORT_DEGREE 5", dict(FOCDISTORT_DEGREE=5), 1, "layout", None),
    ("MOSAIC_TYPE FIX_FOCALPLANE", dict(MOSAIC_TYPE="FIX_FOCALPLANE"), 1, "layout", None),
    ("MOSAIC_TYPE SAME_CRVAL", dict(MOSAIC_TYPE="SAME_CRVAL"), 1, "layout", None),
    ("MOSAIC_TYPE LOOSE", dict(MOSAIC_TYPE="LOOSE"), 1, "layout", None),
    ("CORR single-frame WCS as they are (CRPIX at each CCD centre)", {}, 2, "single", None),
    ("CORR single-frame WCS, DISTORT_DEGREES 7", dict(DISTORT_DEGREES=7), 2, "single", None),
    ("STABILITY_TYPE EXPOSURE, DISTORT_DEGREES 3 (a polynomial per CCD and exposure)",
     dict(STABILITY_TYPE="EXPOSURE"), 1, "layout", 600.0),
]


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
def ensure_tract(out, visits, spec, jobs, fresh=False):
    """Simulate (once) a tract of `visits` visits; returns its root."""
    tag = f"tract{visits}" + ("-quick" if spec["ccds"] else "")
    root = os.path.join(out, tag)
    params = dict(visits=visits)
    if spec["ccds"]:
        params["ccds"] = list(spec["ccds"])
    if spec["dither_max_deg"]:
        params["dither_max_deg"] = spec["dither_max_deg"]
    stamp = os.path.join(root, "bench_params.json")
    if not fresh and os.path.exists(os.path.join(root, "truth", "model.json")) \
            and os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == params:
                return root, None
    if os.path.exists(root):
        import shutil
        shutil.rmtree(root)
    t = time.time()
    code = ("import json, sys; from mosaicfit.sim import simulate_repository; "
            "simulate_repository(sys.argv[1], jobs=int(sys.argv[2]), **json.loads(sys.argv[3]))")
    subprocess.run([PY, "-c", code, root, str(jobs), json.dumps(params)], check=True)
    with open(stamp, "w") as f:
        json.dump(params, f)
    return root, time.time() - t


def all_refs(root):
    from mosaicfit.io.dataid import parse_ids, resolve
    from mosaicfit.io.layout import Repository
    repo = Repository(root, "sim")
    vs = repo.registry.visits()
    refs, _ = resolve(parse_ids([[f"visit={'^'.join(map(str, vs))}", "ccd=0..103"]]),
                      repo.registry)
    return refs


# ------------------------------------------------------------------------------------------
# mosaic.py (bench_mosaic.run_mosaic, in a fresh interpreter so that its peak-memory figure,
# the largest RSS of its children, is mosaic.py's alone)
# ------------------------------------------------------------------------------------------
def run_mosaic(root, visits, jobs):
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import bench_mosaic; "
            "r = bench_mosaic.run_mosaic(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])); "
            "print('@@JSON ' + json.dumps(r))")
    la0 = loadavg()
    p = subprocess.run([PY, "-c", code, HERE, root, str(visits), str(jobs)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"mosaic.py failed on {root}:\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("@@JSON "))
    wall, peak, phases, stats, chi = json.loads(line[7:])
    return dict(wall_s=wall, peak_mb=peak, phases=phases, stats=stats, chi2_ndof=chi,
                load=(la0, loadavg()))


def mosaic_accuracy(root, keys=None):
    """Errors against the truth of mosaic.py's wcs-/fcr- files and of the single-frame inputs
    (CORR WCS and FLUXMAG0), over the (visit, CCD)s in `keys` (default: all with outputs).
    As mosaicfit.sim.evaluate_outputs / evaluate_inputs, with medians and percentiles."""
    from scamp import error_summary
    from mosaicfit.model.camera import hsc
    from mosaicfit.io.corr import read_corr_header
    from mosaicfit.model.fluxcorr import read_fcr
    from mosaicfit.io.layout import Repository
    from mosaicfit.sim import Truth
    from mosaicfit.model.sip import pixel_area_ratio, sip_pixel_to_sky
    from mosaicfit.io.wcsfile import read_wcs_header
    repo = Repository(root, "sim")
    truth = Truth(root)
    cam = hsc()
    mo, inp = ([], [], []), ([], [], [])
    n = 0
    for ref in all_refs(root):
        if keys is not None and (ref.visit, ref.ccd) not in keys:
            continue
        did = dict(ref.data_id, tract=0)
        wp, fp = repo.path("wcs", **did), repo.path("fcr", **did)
        corr = repo.find("calexp", **ref.data_id)
        if not (os.path.exists(wp) and os.path.exists(fp)) or corr is None:
            continue
        n += 1
        h = read_wcs_header(wp)
        fc = read_fcr(fp, cam[ref.ccd].nquarter)
        a, b = truth.astrometric_error(ref.visit, ref.ccd, lambda x, y: sip_pixel_to_sky(h, x, y))
        mo[0].append(a)
        mo[1].append(b)
        mo[2].append(truth.photometric_error(ref.visit, ref.ccd, lambda x, y, f: -2.5 * np.log10(
            f * fc.factor(x, y, pixel_area_ratio(h, x, y)) / fc.fluxmag0)))
        h0, wh = read_corr_header(corr)
        f0 = float(h0["FLUXMAG0"])
        a, b = truth.astrometric_error(ref.visit, ref.ccd, lambda x, y: sip_pixel_to_sky(wh, x, y))
        inp[0].append(a)
        inp[1].append(b)
        inp[2].append(truth.photometric_error(ref.visit, ref.ccd,
                                              lambda x, y, f: -2.5 * np.log10(f / f0)))
    m, i = error_summary(*mo), error_summary(*inp)
    m["n_ccds"] = i["n_ccds"] = n
    return m, i


# ------------------------------------------------------------------------------------------
# 1. SCAMP vs mosaic.py
# ------------------------------------------------------------------------------------------
def scamp_section(out, spec, jobs, fresh, results):
    import scamp
    rows = []
    version = scamp.scamp_version()
    results["scamp_version"] = version
    if version is None:
        log("SCAMP is not installed: skipping the SCAMP comparison "
            "(install it with: apt-get install scamp)")
        results["scamp_skipped"] = "SCAMP not installed (apt-get install scamp)"
    for nv in spec["scamp_visits"]:
        root, t_sim = ensure_tract(out, nv, spec, jobs, fresh)
        log(f"[{nv} visits] mosaic.py ...")
        mres = run_mosaic(root, nv, jobs)
        row = dict(visits=nv, root=root, simulate_s=t_sim, mosaic=mres)
        if version is not None:
            work = os.path.join(root, "scamp")
            meta = scamp.export_tract(root, "sim", work, jobs=jobs)
            log(f"[{nv} visits] SCAMP on {meta['n_det']} detections, {meta['n_ref']} references "
                f"(export {meta['t_export_s']:.0f} s) ...")
            la0 = loadavg()
            sres = scamp.run_scamp(work, meta, timeout=spec["scamp_timeout"])
            sres["load"] = (la0, loadavg())
            row["scamp"] = dict(wall_s=sres["wall_s"], peak_mb=sres["peak_mb"], ok=sres["ok"],
                                timed_out=sres["timed_out"], load=sres["load"],
                                pass_s=[p["wall_s"] for p in sres["passes"]],
                                n_det=meta["n_det"], n_ref=meta["n_ref"],
                                export_s=meta["t_export_s"],
                                stats=scamp.scamp_log_stats(sres["log"]))
            if sres["ok"]:
                acc = scamp.evaluate_scamp(root, work, meta)
                row["scamp"]["accuracy"] = {k: v for k, v in acc.items() if k != "keys"}
                keys = acc["keys"]
            else:
                keys = None
                log(f"  SCAMP did not finish: {'timed out after %.0f s' % sres['wall_s'] if sres['timed_out'] else 'failed, see ' + sres['log']}")
            if nv == spec["scamp_visits"][0]:
                row["scamp"]["initial_tpv_mas"] = scamp.evaluate_initial_tpv(root, work, meta)
                row["scamp"]["tpv_conversion_max_err_mas"] = meta["tpv_max_err_mas"]
        else:
            keys = None
        acc_m, acc_in = mosaic_accuracy(root, keys)
        row["mosaic"]["accuracy"] = acc_m
        row["input_accuracy"] = acc_in
        rows.append(row)
        log(format_scamp_row(row))
        results["scamp_rows"] = rows
        save(results, out)
    if version is not None and spec["scamp_search"]:
        log(f"SCAMP configurations on the {spec['scamp_visits'][0]}-visit tract")
        results["scamp_search"] = scamp_search(out, spec, jobs, fresh)
        save(results, out)
    return rows


def scamp_search(out, spec, jobs, fresh):
    """The SCAMP configurations of SCAMP_SEARCH, on the first SCAMP tract."""
    import scamp
    nv = spec["scamp_visits"][0]
    root, _ = ensure_tract(out, nv, spec, jobs, fresh)
    metas = {}
    rows = []
    for name, cfg, passes, initial, limit in SCAMP_SEARCH:
        work = os.path.join(root, "scamp" if initial == "layout" else f"scamp-{initial}")
        if initial not in metas:
            metas[initial] = scamp.export_tract(root, "sim", work, jobs=jobs, initial=initial)
        meta = metas[initial]
        la0 = loadavg()
        r = scamp.run_scamp(work, meta, cfg, passes=passes, timeout=limit or spec["scamp_timeout"],
                            tag="search")
        acc = scamp.evaluate_scamp(root, work, meta) if r["ok"] else None
        err = None
        if not r["ok"] and not r["timed_out"]:
            err = _scamp_error(r["log"])
        rows.append(dict(name=name, config=cfg, passes=passes, initial=initial,
                         wall_s=r["wall_s"], peak_mb=r["peak_mb"], ok=r["ok"],
                         timed_out=r["timed_out"], error=err, load=(la0, loadavg()),
                         accuracy=None if acc is None else {k: v for k, v in acc.items()
                                                            if k != "keys"}))
        log(f"  {name} ({passes} pass{'es' if passes > 1 else ''}): {r['wall_s']:.0f} s, "
            + (f"{acc['wcs_rms_mas'][0]:.1f}/{acc['wcs_rms_mas'][1]:.1f} mas rms, median "
               f"{acc['wcs_median_mas']:.1f} mas, {acc['zp_rms_mmag']:.1f} mmag" if acc else
               ("stopped" if r["timed_out"] else f"failed: {err}")))
    return rows


def _scamp_error(logpath):
    try:
        with open(logpath, errors="replace") as f:
            lines = [ln.strip() for ln in f.read().replace("\r", "\n").splitlines()
                     if "Error" in ln]
        return lines[-1].lstrip("> ").strip() if lines else "no output"
    except OSError:
        return "no log"


def format_scamp_row(r):
    m = r["mosaic"]
    ma = m["accuracy"]
    s = r.get("scamp")
    txt = (f"  {r['visits']} visits: mosaic.py {m['wall_s']:.1f} s, {m['peak_mb']:.0f} MB, "
           f"{ma['wcs_rms_mas'][0]:.2f}/{ma['wcs_rms_mas'][1]:.2f} mas, {ma['zp_rms_mmag']:.1f} mmag")
    if s:
        if s.get("accuracy"):
            a = s["accuracy"]
            txt += (f"; SCAMP {s['wall_s']:.1f} s, {s['peak_mb']:.0f} MB, "
                    f"{a['wcs_rms_mas'][0]:.2f}/{a['wcs_rms_mas'][1]:.2f} mas, "
                    f"{a['zp_rms_mmag']:.1f} mmag; ratio {s['wall_s'] / m['wall_s']:.1f}x")
        else:
            txt += f"; SCAMP did not finish ({s['wall_s']:.0f} s)"
    return txt


# ------------------------------------------------------------------------------------------
# 2a. Phases vs visits (an in-process driver with a memory sampler, in a fresh interpreter)
# ------------------------------------------------------------------------------------------
def phase_driver(root, jobs, out_json):
    """Run read / match / astrometry / photometry / write as mosaic.py does, sampling the
    resident memory of this process and its children (the reader processes) every 50 ms."""
    import threading
    import psutil
    from mosaicfit.model.camera import hsc
    from mosaicfit.config import MosaicConfig
    from mosaicfit.pipeline.inputs import load_exposures
    from mosaicfit.pipeline.references import refcat_folder
    from mosaicfit.io.layout import Repository
    from mosaicfit.io.refcat import read_refcat
    from mosaicfit.fit.solve import solve
    from mosaicfit.pipeline.mosaic import write_products
    samples = []
    done = threading.Event()
    me = psutil.Process()

    def sampler():
        while not done.is_set():
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss
                                                 for c in me.children(recursive=True))
                samples.append((time.time(), rss))
            except psutil.Error:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t0 = time.time()
    repo = Repository(root, "sim")
    refs = all_refs(root)
    exposures, _missing, _errors = load_exposures(repo, refs, jobs=jobs)
    refcat = read_refcat(refcat_folder(repo))
    t1 = time.time()
    sol = solve(exposures, hsc(), MosaicConfig(), refcat)
    t2 = time.time()
    keys = {(e.visit, e.ccd) for e in exposures}
    write_products(sol, repo, {0: [r for r in refs if (r.visit, r.ccd) in keys]})
    t3 = time.time()
    time.sleep(0.1)
    done.set()
    th.join()
    st = sol.stats
    tm = st.timing
    ta, tp = tm.get("astrometry", 0.0), tm.get("photometry", 0.0)
    t_match_end = t1 + tm["solve_total"] - ta - tp
    windows = dict(read=(t0, t1), match=(t1, t_match_end), astrometry=(t_match_end, t_match_end + ta),
                   photometry=(t_match_end + ta, t_match_end + ta + tp),
                   record=(t_match_end + ta + tp, t2), write=(t2, t3))
    ts = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples]) / 2 ** 20
    peak = {}
    for k, (a, b) in windows.items():
        m = (ts >= a) & (ts <= b + 0.05)
        peak[k] = float(rss[m].max()) if m.any() else None
    res = dict(time={k: b - a for k, (a, b) in windows.items()}, peak_mb=peak,
               total_s=t3 - t0, n_detections=st.n_detections, n_stars=st.n_stars,
               n_ref_stars=st.n_ref_stars, n_visits=st.n_visits, n_ccds=st.n_ccds,
               n_exposures=len(exposures), max_mb=float(rss.max()))
    with open(out_json, "w") as f:
        json.dump(res, f)


def phases_section(out, spec, jobs, fresh, results):
    import bench_mosaic
    rows = []
    for nv in spec["phase_visits"]:
        root, _ = ensure_tract(out, nv, spec, jobs, fresh)
        js = os.path.join(root, "phases.json")
        la0 = loadavg()
        subprocess.run([PY, os.path.abspath(__file__), "--_phases", root, js, "--jobs", str(jobs)],
                       check=True)
        with open(js) as f:
            r = json.load(f)
        r["load"] = (la0, loadavg())
        r["visits"] = nv
        gb, npar = bench_mosaic.dense_memory_gb({"stars": r["n_stars"]}, r["n_visits"],
                                                nccd=r["n_ccds"])
        r["dense_gb"], r["model_params"] = gb, npar
        rows.append(r)
        log(f"  {nv} visits: {r['n_detections']} detections, {r['n_stars']} stars; " + ", ".join(
            f"{k} {r['time'][k]:.1f} s / {r['peak_mb'][k] or 0:.0f} MB" for k in r["time"])
            + f"; dense matrix {gb:.1f} GB")
        results["phase_rows"] = rows
        save(results, out)
    return rows


# ------------------------------------------------------------------------------------------
# 2b. Solve time vs detections at a fixed number of visits (star density)
# ------------------------------------------------------------------------------------------
def density_driver(visits, density, ccds, dither, out_json):
    from mosaicfit.model.camera import hsc
    from mosaicfit.io.src import standardize
    from mosaicfit.config import MosaicConfig
    from mosaicfit.sim import make_tract
    from mosaicfit.fit.selection import ExposureData
    from mosaicfit.fit.solve import solve
    kw = dict(visits=visits, star_density=float(density))
    if ccds:
        kw["ccds"] = tuple(ccds)
    if dither:
        kw["dither_max_deg"] = dither
    t = time.time()
    sim = make_tract(**kw)
    t_sim = time.time() - t
    exps = []
    for (v, c), table in sorted(sim.catalogs.items()):
        if sim.missing.get((v, c)) is not None:
            continue
        exps.append(ExposureData(visit=v, ccd=c, catalog=standardize(table),
                                 wcs_header=sim.wcs_headers[(v, c)],
                                 fluxmag0=sim.fluxmag0[(v, c)][0],
                                 mjd=sim.truth.visits[v]["mjd"], filter=sim.config.filter))
    cfg = MosaicConfig()
    cfg.nStarPerCell = 10 ** 6        # no cap per cell: every star above minSnr is used
    t = time.time()
    sol = solve(exps, hsc(), cfg, sim.refcat)
    t_solve = time.time() - t
    st = sol.stats
    res = dict(density=density, simulate_s=t_sim, solve_s=t_solve, timing=st.timing,
               n_detections=st.n_detections, n_stars=st.n_stars,
               n_ref_stars=st.n_ref_stars)
    with open(out_json, "w") as f:
        json.dump(res, f)


def density_section(out, spec, jobs, results):
    rows = []
    os.makedirs(out, exist_ok=True)
    for d in spec["densities"]:
        js = os.path.join(out, f"density-{spec['density_visits']}-{d}.json")
        cmd = [PY, os.path.abspath(__file__), "--_density", str(spec["density_visits"]), str(d), js]
        if spec["ccds"]:
            cmd += ["--ccds", ",".join(map(str, spec["ccds"]))]
        if spec["dither_max_deg"]:
            cmd += ["--dither", str(spec["dither_max_deg"])]
        la0 = loadavg()
        subprocess.run(cmd, check=True)
        with open(js) as f:
            r = json.load(f)
        r["load"] = (la0, loadavg())
        rows.append(r)
        log(f"  star density {d}/deg^2: {r['n_detections']} detections, {r['n_stars']} stars, "
            f"solve {r['solve_s']:.2f} s ({1e6 * r['solve_s'] / r['n_detections']:.1f} us per "
            f"detection)")
        results["density_rows"] = rows
        save(results, out)
    n = np.array([r["n_detections"] for r in rows], float)
    t = np.array([r["solve_s"] for r in rows], float)
    slope = float(np.polyfit(np.log(n), np.log(t), 1)[0]) if len(rows) > 1 else float("nan")
    results["density_slope"] = slope
    return rows, slope


# ------------------------------------------------------------------------------------------
# 3. Matching
# ------------------------------------------------------------------------------------------
def _best(fn, repeat):
    best, out = None, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, out


def matching_section(n, results, seed=7, radius_arcsec=1.0, cap_deg=1.0, jitter_arcsec=0.2,
                     workers=2):
    """n random positions on a cap of radius cap_deg (catalogue A) and the same positions
    displaced by jitter_arcsec rms, shuffled (catalogue B, the "detections"); all three
    libraries match B against A within radius_arcsec."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky, search_around_sky
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    from mosaicfit.model.sky import tangent_to_sky
    from mosaicfit.fit.matching import group_sky, match_sky, pairs_within
    from mosaicfit.model.sky import radec_to_xyz
    rng = np.random.default_rng(seed)
    r = np.arccos(1 - rng.uniform(size=n) * (1 - np.cos(np.radians(cap_deg))))
    phi = rng.uniform(0, 2 * np.pi, n)
    ra1, dec1 = tangent_to_sky(np.tan(r) * np.cos(phi), np.tan(r) * np.sin(phi), 150.1, 2.2)
    j = np.radians(jitter_arcsec / 3600.0)
    perm = rng.permutation(n)
    ra2, dec2 = tangent_to_sky(rng.normal(0, j, n), rng.normal(0, j, n), ra1[perm], dec1[perm])
    chord = 2 * np.sin(0.5 * np.radians(radius_arcsec / 3600.0))
    rows = []

    # nearest neighbour of each B in A
    t_ours, (idx_o, _sep) = _best(lambda: match_sky(ra2, dec2, ra1, dec1, radius_arcsec), 3)

    def kd_nn():
        x1, x2 = radec_to_xyz(ra1, dec1), radec_to_xyz(ra2, dec2)
        d, i = cKDTree(x1).query(x2, k=1, distance_upper_bound=chord, workers=workers)
        return np.where(np.isfinite(d), i, -1)
    t_kd, idx_k = _best(kd_nn, 3)

    def astro_nn():
        c1 = SkyCoord(ra1 * u.deg, dec1 * u.deg)
        c2 = SkyCoord(ra2 * u.deg, dec2 * u.deg)
        i, sep, _ = match_coordinates_sky(c2, c1)
        return np.where(sep.arcsec <= radius_arcsec, i, -1)
    t_as, idx_a = _best(astro_nn, 1)
    rows.append(dict(op="nearest neighbour within 1\" (B -> A)", ours=t_ours, ckdtree=t_kd,
                     astropy=t_as, agree_ckdtree=float(np.mean(idx_o == idx_k)),
                     agree_astropy=float(np.mean(idx_o == idx_a)),
                     found=int(np.sum(idx_o >= 0)), truth_recovered=float(np.mean(idx_o == perm))))

    # all pairs within 1"
    def ours_pairs():
        q, t = pairs_within(radec_to_xyz(ra1, dec1), radec_to_xyz(ra2, dec2), chord)
        return np.sort(np.asarray(q, np.int64) * n + np.asarray(t, np.int64))
    t_ours, p_o = _best(ours_pairs, 3)

    def kd_pairs():
        x1, x2 = radec_to_xyz(ra1, dec1), radec_to_xyz(ra2, dec2)
        m = cKDTree(x2).sparse_distance_matrix(cKDTree(x1), chord, output_type="coo_matrix")
        return np.sort(m.row.astype(np.int64) * n + m.col.astype(np.int64))
    t_kd, p_k = _best(kd_pairs, 3)

    def astro_pairs():
        c1 = SkyCoord(ra1 * u.deg, dec1 * u.deg)
        c2 = SkyCoord(ra2 * u.deg, dec2 * u.deg)
        i2, i1, _, _ = search_around_sky(c2, c1, radius_arcsec * u.arcsec)
        return np.sort(i2.astype(np.int64) * n + i1.astype(np.int64))
    t_as, p_a = _best(astro_pairs, 1)
    rows.append(dict(op="all pairs within 1\" (B x A)", ours=t_ours, ckdtree=t_kd, astropy=t_as,
                     agree_ckdtree=float(np.array_equal(p_o, p_k)),
                     agree_astropy=float(np.array_equal(p_o, p_a)), found=int(len(p_o))))

    # friends-of-friends groups of A + B within 1"
    ra, dec = np.r_[ra1, ra2], np.r_[dec1, dec2]
    t_ours, lab_o = _best(lambda: group_sky(ra, dec, radius_arcsec), 3)

    def kd_fof():
        x = radec_to_xyz(ra, dec)
        pr = cKDTree(x).query_pairs(chord, output_type="ndarray")
        g = coo_matrix((np.ones(len(pr)), (pr[:, 0], pr[:, 1])), shape=(len(x), len(x)))
        return connected_components(g, directed=False)[1]
    t_kd, lab_k = _best(kd_fof, 3)
    rows.append(dict(op="friends-of-friends within 1\" (A + B)", ours=t_ours, ckdtree=t_kd,
                     astropy=None, agree_ckdtree=float(_same_partition(lab_o, lab_k)),
                     agree_astropy=None, found=int(len(np.unique(lab_o)))))
    results["matching"] = dict(n=n, rows=rows, radius_arcsec=radius_arcsec, cap_deg=cap_deg,
                               jitter_arcsec=jitter_arcsec, workers=workers)
    for r_ in rows:
        log(f"  {r_['op']}: ours {r_['ours']:.2f} s, cKDTree {r_['ckdtree']:.2f} s"
            + (f", astropy {r_['astropy']:.2f} s" if r_["astropy"] is not None else "")
            + f"; agreement with cKDTree {r_['agree_ckdtree']:.6f}")
    return rows


def _same_partition(a, b):
    """Whether two labelings define the same groups (compared through the smallest member)."""
    def canon(lab):
        lab = np.asarray(lab)
        first = np.full(lab.max() + 1, len(lab))
        np.minimum.at(first, lab, np.arange(len(lab)))
        return first[lab]
    return np.array_equal(canon(a), canon(b))


# ------------------------------------------------------------------------------------------
# 4. Per-pixel calibration
# ------------------------------------------------------------------------------------------
def apply_section(out, spec, jobs, results):
    path = os.path.join(HERE, "bench_apply.py")
    if not os.path.exists(path):
        results["apply"] = dict(status="not yet available (bench/bench_apply.py does not exist)")
        log("  not yet available: bench/bench_apply.py does not exist")
        return
    helptext = subprocess.run([PY, path, "--help"], capture_output=True, text=True).stdout
    args = []
    extra = list(spec["apply_args"]) + ["--jobs", str(jobs), "--out", os.path.join(out, "apply")]
    i = 0
    while i < len(extra):      # pass only the options bench_apply.py knows
        opt = extra[i]
        has_value = i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if opt in helptext:
            args += extra[i:i + 2] if has_value else [opt]
        i += 2 if has_value else 1
    la0 = loadavg()
    t = time.time()
    p = subprocess.run([PY, path] + args, capture_output=True, text=True)
    results["apply"] = dict(status="ok" if p.returncode == 0 else f"failed ({p.returncode})",
                            args=args, wall_s=time.time() - t, load=(la0, loadavg()),
                            output=p.stdout.strip(), stderr=p.stderr.strip()[-2000:])
    log(p.stdout.strip() if p.returncode == 0 else f"  bench_apply.py failed:\n{p.stderr[-2000:]}")


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(re.search(r"MemTotal:\s*(\d+)", f.read()).group(1)) / 2 ** 20
    except (OSError, AttributeError):
        pass
    import astropy
    import scipy
    return dict(cpu=cpu, cores=os.cpu_count(), mem_gb=mem, os=platform.platform(),
                python=platform.python_version(), numpy=np.__version__, scipy=scipy.__version__,
                astropy=astropy.__version__)


def save(results, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)


def _f(x, fmt="{:.1f}", none="-"):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return none
    return fmt.format(x)


def _load(la):
    return f"{_f(la[0], '{:.1f}')}/{_f(la[1], '{:.1f}')}" if la else "-"


def report(results, quick):
    L = []
    mc = results["machine"]
    L.append("# mosaicfit benchmarks" + (" (--quick: small tracts, figures not representative)"
                                          if quick else ""))
    L.append("")
    L.append(f"Measured by `python bench/run.py{' --quick' if quick else ''}` on "
             f"{results['date']}, {results['elapsed_s'] / 60:.0f} min in all. Machine: {mc['cpu']}, "
             f"{mc['cores']} cores, {_f(mc['mem_gb'], '{:.0f}')} GB; {mc['os']}; Python "
             f"{mc['python']}, numpy {mc['numpy']}, scipy {mc['scipy']}, astropy {mc['astropy']}; "
             f"{results.get('scamp_version') or 'SCAMP not installed'}. Every figure below comes "
             "from this one run. Wall-clock times; the machine was shared with other work: "
             "\"load\" is the 1-minute load average before/after each timed run (2 cores: a "
             "load above 2 means the run competed for the CPU).")
    if results.get("merged_note"):
        L[-1] = L[-1].replace("Every figure below comes from this one run. ", "")
        L.append("")
        L.append(f"This file merges two runs of the same script: {results['merged_note']}.")
    L.append("")
    # -- 1
    L.append("## 1. mosaic.py vs SCAMP on the same simulated tracts")
    L.append("")
    rows = results.get("scamp_rows", [])
    if results.get("scamp_skipped"):
        L.append(f"SCAMP comparison skipped: {results['scamp_skipped']}.")
        L.append("")
    nccd = len(CENTRAL_CCDS) if quick else 104
    if rows:
        L.append("| visits x CCDs | detections (mosaic.py fit / SCAMP input) | mosaic.py wall | "
                 "mosaic.py peak RSS | SCAMP wall (+ LDAC export) | SCAMP peak RSS | SCAMP time / "
                 "mosaic.py time | load (mosaic.py; SCAMP) |")
        L.append("|---|---|---|---|---|---|---|---|")
        for r in rows:
            m, s_ = r["mosaic"], r.get("scamp") or {}
            if s_.get("ok"):
                swall = f"{s_['wall_s']:.1f} s (+ {s_['export_s']:.0f} s)"
                ratio = f"**{s_['wall_s'] / m['wall_s']:.1f}x**"
            elif s_.get("timed_out"):
                swall = f"> {s_['wall_s']:.0f} s (stopped)"
                ratio = f"> {s_['wall_s'] / m['wall_s']:.0f}x"
            else:
                swall, ratio = ("failed" if s_ else "-"), "-"
            L.append(f"| {r['visits']} x {nccd} | {m['stats'].get('detections', '-')} / "
                     f"{s_.get('n_det', '-')} | {m['wall_s']:.1f} s | {m['peak_mb']:.0f} MB "
                     f"| {swall} | {_f(s_.get('peak_mb'), '{:.0f} MB')} | {ratio} "
                     f"| {_load(m.get('load'))}; {_load(s_.get('load'))} |")
        L.append("")
        L.append("Accuracy against the simulation truth (clean star detections, noise-free "
                 "positions and fluxes; the same (visit, CCD)s for all three):")
        L.append("")
        L.append("| visits | solution | astrometric error rms RA / Dec | median / 95th percentile "
                 "of the 2-d error | zero-point error rms / median | star detections |")
        L.append("|---|---|---|---|---|---|")
        for r in rows:
            s_ = r.get("scamp") or {}
            for name, a in (("single-frame input", r["input_accuracy"]),
                            ("mosaic.py", r["mosaic"]["accuracy"]),
                            ("SCAMP", s_.get("accuracy"))):
                if not a:
                    if name == "SCAMP":
                        L.append(f"| {r['visits']} | SCAMP | - | - | - | did not finish |")
                    continue
                L.append(f"| {r['visits']} | {name} | {a['wcs_rms_mas'][0]:.2f} / "
                         f"{a['wcs_rms_mas'][1]:.2f} mas | {a['wcs_median_mas']:.2f} / "
                         f"{a['wcs_p95_mas']:.2f} mas | {a['zp_rms_mmag']:.2f} / "
                         f"{a['zp_median_mmag']:.2f} mmag | {a['n_stars']} |")
        L.append("")
        L.append("mosaic.py's time is the whole command (reading the SRC and CORR files, star "
                 "selection, matching, both fits, writing the wcs-/fcr- files) and its peak RSS "
                 "the largest of its processes (`bench_mosaic.run_mosaic`). SCAMP's is its run on "
                 "the LDAC catalogues exported beforehand (export time in brackets), peak RSS "
                 "from wait4. The export (reading the SRC/CORR files, star selection, LDAC "
                 "writing, the consistent initial WCS) is what using SCAMP on an hscPipe rerun "
                 "adds. SCAMP is given every selected star; mosaic.py fits those seen twice or "
                 "matched to the reference catalogue.")
        L.append("")
        done = [r for r in rows if (r.get("scamp") or {}).get("ok")]
        if len(done) >= 2:
            v = np.array([r["visits"] for r in done], float)
            t = np.array([r["scamp"]["wall_s"] for r in done], float)
            k = np.polyfit(np.log(v), np.log(t), 1)[0]
            mv = np.array([r["visits"] for r in rows], float)
            mt = np.array([r["mosaic"]["wall_s"] for r in rows], float)
            km = np.polyfit(np.log(mv), np.log(mt), 1)[0]
            txt = (f"Time vs visits (least squares in log-log): SCAMP ~ visits^{k:.2f} over "
                   f"{', '.join(str(int(x)) for x in v)} visits, mosaic.py ~ visits^{km:.2f}.")
            if v[-1] < max(mv):
                txt += (f" SCAMP extrapolated to {int(max(mv))} visits: "
                        f"{t[-1] * (max(mv) / v[-1]) ** k / 60:.0f} min.")
            L.append(txt)
            L.append("")
        goal = [r for r in rows if r["visits"] == 30] or rows[:1]
        r = goal[0]
        s_ = r.get("scamp") or {}
        if s_.get("ok"):
            ma, sa = r["mosaic"]["accuracy"], s_["accuracy"]
            better_a = (max(ma["wcs_rms_mas"]) <= max(sa["wcs_rms_mas"])
                        and ma["wcs_median_mas"] <= sa["wcs_median_mas"])
            better_p = ma["zp_rms_mmag"] <= sa["zp_rms_mmag"]
            ratio = s_["wall_s"] / r["mosaic"]["wall_s"]
            L.append(f"**Goal: >= 10x faster than SCAMP at equal or better accuracy "
                     f"({r['visits']} visits):** measured ratio {ratio:.1f}x "
                     f"({'met' if ratio >= 10 else 'NOT met'}); accuracy: astrometric rms "
                     f"{max(ma['wcs_rms_mas']):.2f} vs {max(sa['wcs_rms_mas']):.2f} mas (worse "
                     f"axis), median {ma['wcs_median_mas']:.2f} vs {sa['wcs_median_mas']:.2f} mas; "
                     f"zero point {ma['zp_rms_mmag']:.2f} vs {sa['zp_rms_mmag']:.2f} mmag rms: "
                     + ("equal or better on both." if better_a and better_p else
                        "NOT better on " + " and ".join(
                            n for n, ok in (("astrometry", better_a), ("photometry", better_p))
                            if not ok) + "."))
            L.append("")
        s0 = rows[0].get("scamp") or {}
        if "initial_tpv_mas" in s0:
            L.append("Checks: the initial TPV headers given to SCAMP (each visit's single-frame "
                     "WCSs made consistent across its CCDs, `scamp.visit_model`) are "
                     f"{s0['initial_tpv_mas'][0]:.0f}/{s0['initial_tpv_mas'][1]:.0f} mas rms from "
                     f"the truth on the {rows[0]['visits']}-visit tract (the CORR WCSs: "
                     f"{rows[0]['input_accuracy']['wcs_rms_mas'][0]:.0f}/"
                     f"{rows[0]['input_accuracy']['wcs_rms_mas'][1]:.0f} mas) and represent "
                     f"that model to {s0['tpv_conversion_max_err_mas']:.1g} mas. SCAMP's "
                     "photometric convention, calibrated mag = -2.5 log10(flux FLXSCALE) + "
                     "MAGZEROP with PHOT_C = 2.5 log10 FLUXMAG0 and EXPTIME = 1, is verified on "
                     "every run: SCAMP's calibration minus the single-frame one is constant within "
                     "each visit (largest spread "
                     f"{_f((s0.get('accuracy') or {}).get('convention_check_mmag'), '{:.1g}')} "
                     "mmag), as its photometric model (one zero point per exposure) implies.")
            L.append("")
    search = results.get("scamp_search")
    if search:
        L.append(f"SCAMP configurations tried on the {results['scamp_rows'][0]['visits']}-visit "
                 "tract (same inputs):")
        L.append("")
        L.append("| configuration | passes | wall | peak RSS | astrometric rms RA / Dec | median / "
                 "95% of the 2-d error | zero point rms |")
        L.append("|---|---|---|---|---|---|---|")
        for r in search:
            a = r.get("accuracy")
            L.append(f"| {r['name']} | {r['passes']} | {r['wall_s']:.0f} s | {r['peak_mb']:.0f} MB | "
                     + (f"{a['wcs_rms_mas'][0]:.1f} / {a['wcs_rms_mas'][1]:.1f} mas | "
                        f"{a['wcs_median_mas']:.1f} / {a['wcs_p95_mas']:.0f} mas | "
                        f"{a['zp_rms_mmag']:.1f} mmag" if a else
                        ("stopped (time limit) | - | -" if r.get("timed_out") else
                         f"failed: {r.get('error') or 'see log'} | - | -")) + " |")
        L.append("")
    L += scamp_config_text(results)
    # -- 2
    L.append("## 2. mosaicfit's scaling")
    L.append("")
    prow = results.get("phase_rows", [])
    if prow:
        L.append("Time (s) / peak memory (MB, this process and its reader processes, sampled "
                 "every 50 ms) of each phase, as mosaic.py runs them (default HSC "
                 "configuration: order-9 astrometry, order-7 photometry per visit):")
        L.append("")
        L.append("| visits | CCDs | detections | stars | read | match | astrometry | photometry "
                 "| write | total | peak | dense star-inclusive matrix | load |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in prow:
            tt, pk = r["time"], r["peak_mb"]
            cell = lambda k: f"{tt[k]:.1f} s / {_f(pk.get(k), '{:.0f}')} MB"
            L.append(f"| {r['visits']} | {r['n_exposures']} | {r['n_detections']} | {r['n_stars']} "
                     f"| {cell('read')} | {cell('match')} | {cell('astrometry')} | "
                     f"{cell('photometry')} | {tt['write'] + tt['record']:.1f} s / "
                     f"{_f(pk.get('write'), '{:.0f}')} MB | {r['total_s']:.1f} s "
                     f"| {r['max_mb']:.0f} MB | {r['dense_gb']:.1f} GB ({r['dense_gb'] * 1024 / r['max_mb']:.0f}x) "
                     f"| {_load(r.get('load'))} |")
        L.append("")
        L.append("\"dense star-inclusive matrix\": the memory of the normal matrix of hscPipe's "
                 "formulation (the model parameters and 2 coordinates per star, dense, 8 bytes "
                 "per entry) for the same problem (`bench_mosaic.dense_memory_gb`), and its "
                 "ratio to our measured peak. \"write\" includes building the result tables.")
        L.append("")
    drow = results.get("density_rows", [])
    if drow:
        L.append(f"Solve time (in-process `solve()`, no per-cell cap on the stars) vs the number "
                 f"of detections at a fixed {results.get('density_visits')} visits x "
                 f"{len(CENTRAL_CCDS) if quick else 104} CCDs, the simulator's star density "
                 "varied:")
        L.append("")
        L.append("| stars / deg^2 | detections | stars | match | astrometry | photometry | solve "
                 "| per detection | load |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for r in drow:
            tm = r["timing"]
            L.append(f"| {r['density']:.0f} | {r['n_detections']} | {r['n_stars']} "
                     f"| {tm.get('match', 0):.2f} s | {tm.get('astrometry', 0):.2f} s "
                     f"| {tm.get('photometry', 0):.2f} s | {r['solve_s']:.2f} s "
                     f"| {1e6 * r['solve_s'] / r['n_detections']:.0f} us | {_load(r.get('load'))} |")
        L.append("")
        k = results.get("density_slope")
        L.append(f"**Goal: solve time growing no faster than linearly in detections:** "
                 f"measured time ~ detections^{_f(k, '{:.2f}')} (least squares in log-log over "
                 f"{len(drow)} densities): "
                 + ("met." if k is not None and np.isfinite(k) and k <= 1.05 else "NOT met."))
        L.append("")
    # -- 3
    L.append("## 3. Matching: mosaicfit's kd-tree vs scipy and astropy")
    L.append("")
    mt = results.get("matching")
    if mt:
        L.append(f"{mt['n']:,} positions uniform on a cap of radius {mt['cap_deg']} deg "
                 f"(catalogue A) and the same positions displaced by {mt['jitter_arcsec']}\" rms "
                 f"and shuffled (catalogue B); matching radius {mt['radius_arcsec']}\". Times "
                 f"include building the trees and the unit vectors (best of 3; astropy 1 run); "
                 f"cKDTree with workers={mt['workers']}. Agreement: fraction of identical "
                 "answers (nearest neighbour), identical pair sets, identical partitions.")
        L.append("")
        L.append("| operation | mosaicfit | scipy cKDTree | astropy | agreement with cKDTree "
                 "| agreement with astropy | result |")
        L.append("|---|---|---|---|---|---|---|")
        for r in mt["rows"]:
            L.append(f"| {r['op']} | {r['ours']:.2f} s | {r['ckdtree']:.2f} s "
                     f"({r['ckdtree'] / r['ours']:.1f}x) | "
                     + (f"{r['astropy']:.2f} s ({r['astropy'] / r['ours']:.0f}x)" if r["astropy"]
                        else "n/a") + f" | {r['agree_ckdtree']:.6f} | "
                     + (_f(r["agree_astropy"], "{:.6f}")) + f" | {r['found']:,}"
                     + (" matches" if "nearest" in r["op"] else " pairs" if "pairs" in r["op"]
                        else " groups") + " |")
        L.append("")
    # -- 4
    L.append("## 4. Per-pixel calibration (calibrateExposure)")
    L.append("")
    ap = results.get("apply") or {}
    if ap.get("status") == "ok":
        L.append(f"From `python bench/bench_apply.py {' '.join(ap['args'])}` run by this script "
                 f"({ap['wall_s']:.0f} s, load {_load(ap.get('load'))}):")
        L.append("")
        L.append("```")
        L.append(ap["output"])
        L.append("```")
    else:
        L.append(f"Not yet available: {ap.get('status', 'not run')}.")
    L.append("")
    L += notes(results, quick)
    return "\n".join(L) + "\n"


def notes(results, quick):
    L = ["## Notes", ""]
    L.append("* Both tools ran with 2 workers: mosaic.py `-j 2` (2 reader processes, OpenMP in "
             "the C++ solver), SCAMP `NTHREADS 2` (the Debian build warns that its ATLAS "
             "library is single-threaded). Timings are single runs, wall-clock, on a shared "
             "machine: compare them with the load column.")
    L.append("* Peak memory: in section 1 the largest resident set of any one process "
             "(mosaic.py's reader processes included); in section 2 the sum over the process "
             "and its reader processes, sampled every 50 ms.")
    rows = results.get("scamp_rows", [])
    late = [r["visits"] for r in rows if (r.get("scamp") or {}).get("timed_out")]
    if late:
        L.append(f"* SCAMP did not finish within the time limit ({results['spec']['scamp_timeout']:.0f} "
                 f"s) on {', '.join(map(str, late))} visits: the table gives the time it ran.")
    L.append("* The tracts are the simulator's (seed 1, HSC-I, star density 4000/deg^2, "
             "galaxies, blends, cosmic rays, moving objects, a dead CCD and failed CCDs); "
             "SCAMP's inputs are exported from the same repositories by `bench/scamp.py`.")
    if quick:
        L.append("* --quick: 20 central CCDs, small dithers, 100k points for the matching: a "
                 "check that everything runs, not a measurement to quote.")
    L.append("")
    return L


def scamp_config_text(results):
    import scamp
    if not results.get("scamp_rows") or results.get("scamp_skipped"):
        return []
    L = ["SCAMP configuration used (`bench/scamp.py`, DEFAULT_CONFIG; all other keys SCAMP "
         "2.10's defaults, e.g. ASTRCLIP_NSIGMA 3, PHOTCLIP_NSIGMA 3, SN_THRESHOLDS 10,100):", "",
         "```"]
    L += [f"{k:<20} {v}" for k, v in scamp.DEFAULT_CONFIG.items()]
    L += ["```", "", f"{scamp.DEFAULT_PASSES} pass" + ("es (each from the previous .head files as "
          ".ahead)." if scamp.DEFAULT_PASSES > 1 else "."), ""]
    L += scamp.CONFIG_RATIONALE
    L.append("")
    return L


# ------------------------------------------------------------------------------------------
def with_hand_sections(text, path):
    """`text` followed by the sections of the existing file at `path` that this script does
    not write (the measurements of other benchmarks, written by hand): rewriting the file
    must not lose them."""
    if not os.path.exists(path):
        return text
    ours = {line for line in text.splitlines() if line.startswith("## ")}
    with open(path) as f:
        old = f.read()
    kept = [part for part in ("\n" + old).split("\n## ")[1:]
            if "## " + part.splitlines()[0] not in ours]
    if not kept:
        return text
    return text.rstrip("\n") + "\n\n" + "\n".join("## " + p.rstrip("\n") + "\n" for p in kept)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small tracts, < 5 minutes")
    ap.add_argument("--out", default=None, help="data and results folder (default bench/out/run, "
                    "bench/out/quick with --quick)")
    ap.add_argument("--results", default=None, help="Markdown file to write (default "
                    "bench/RESULTS.md, OUT/RESULTS-quick.md with --quick)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="scamp,phases,density,matching,apply",
                    help="comma-separated sections to run")
    ap.add_argument("--fresh", action="store_true", help="re-simulate the tracts")
    ap.add_argument("--scamp-visits", type=int, nargs="+", default=None)
    ap.add_argument("--phase-visits", type=int, nargs="+", default=None)
    ap.add_argument("--scamp-timeout", type=float, default=None, help="seconds per SCAMP run")
    ap.add_argument("--no-scamp-search", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the results file from OUT/results.json (no measurement)")
    ap.add_argument("--_phases", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_density", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--ccds", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dither", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._phases:
        return phase_driver(args._phases[0], args.jobs, args._phases[1])
    if args._density:
        ccds = [int(c) for c in args.ccds.split(",")] if args.ccds else None
        return density_driver(int(args._density[0]), float(args._density[1]), ccds, args.dither,
                              args._density[2])
    spec = dict(QUICK if args.quick else FULL)
    if args.scamp_visits:
        spec["scamp_visits"] = args.scamp_visits
    if args.phase_visits:
        spec["phase_visits"] = args.phase_visits
    if args.scamp_timeout:
        spec["scamp_timeout"] = args.scamp_timeout
    if args.no_scamp_search:
        spec["scamp_search"] = False
    out = os.path.abspath(args.out or os.path.join(HERE, "out", "quick" if args.quick else "run"))
    res_path = args.results or (os.path.join(out, "RESULTS-quick.md") if args.quick
                                else os.path.join(HERE, "RESULTS.md"))
    if args.report_only:
        with open(os.path.join(out, "results.json")) as f:
            results = json.load(f)
        text = with_hand_sections(report(results, results.get("quick", args.quick)), res_path)
        print(text)
        with open(res_path, "w") as f:
            f.write(text)
        log(f"wrote {res_path} from {os.path.join(out, 'results.json')}")
        return 0
    only = set(args.only.split(","))
    t0 = time.time()
    results = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), quick=args.quick,
                   machine=machine(), spec={k: v for k, v in spec.items()},
                   density_visits=spec["density_visits"])
    log(f"mosaicfit benchmarks{' (quick)' if args.quick else ''}: data and results in {out}")
    if "scamp" in only:
        log("1. mosaic.py vs SCAMP")
        scamp_section(out, spec, args.jobs, args.fresh, results)
    if "phases" in only:
        log("2. phases vs visits")
        phases_section(out, spec, args.jobs, args.fresh, results)
    if "density" in only:
        log(f"2b. solve time vs detections ({spec['density_visits']} visits)")
        density_section(out, spec, args.jobs, results)
    if "matching" in only:
        log(f"3. matching, {spec['match_n']:,} detections")
        matching_section(spec["match_n"], results)
    if "apply" in only:
        log("4. per-pixel calibration")
        apply_section(out, spec, args.jobs, results)
    results["elapsed_s"] = time.time() - t0
    save(results, out)
    text = with_hand_sections(report(results, args.quick), res_path)
    print()
    print(text)
    with open(res_path, "w") as f:
        f.write(text)
    log(f"wrote {res_path} ({results['elapsed_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
