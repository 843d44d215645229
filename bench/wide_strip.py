"""A wide strip of visits in one fit (issue 16, region scale): time, memory, solver, accuracy.

    python bench/wide_strip.py [--root DIR] [--visits 50,100,200] [--dense-up-to 100]
                               [--seed 1] [--profile]

Simulates (or reuses, with --root on an existing simulation) an HSC-SSP-Wide-like strip of
max(--visits) pointings (``mosaicfit simulate --layout wide``: 0.2 deg apart, 104 CCDs each,
each sky position seen by ~5-8 visits), writes the rings sky map, then for each N of --visits
runs ``mosaic.py`` without ``tract=`` on the N central visits of the strip: one joint fit over
all of them (``pipeline.mosaic.fit_and_write``), products into every tract they overlap. The
smaller strips are the middle of the largest one (one simulation for all).

Each run is a subprocess of its own (so that its peak memory, ru_maxrss, is its own). Printed
per N: wall time per phase (read, match, astrometry, photometry, write; the fit = match +
astrometry + photometry, as ``fit.solve.solve``), the time spent in the C++ least squares
(assembly and factorisation, summed over all the fit's calls) and the rest of the fit (Python),
peak memory, tracts with products, the solver used, and the accuracy of the products against
the simulation's truth (rms per axis in mas, rms of the calibrated magnitudes in mmag, over all
CCDs of every k-th visit, k chosen for <= 25 visits).

Then the first astrometric and the first photometric least-squares problem of each run are
solved again, in a subprocess per solver (``sparse``: the block Cholesky; ``simplicial``:
Eigen's SimplicialLLT; ``dense``: the dense path, for N <= --dense-up-to), with their times,
peak memory and the largest difference from the sparse solution: the dense / sparse ratio of
the same problem.

``--profile`` adds a cProfile of each mosaic run (the 25 functions of mosaicfit with the most
own time).
"""
import argparse
import glob
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
FIRST_VISIT = 902798          # the simulator's visit numbers: FIRST_VISIT + 2 k


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def products(root, rerun):
    """{(visit, ccd): (wcs path, fcr path)} of one of the tract folders holding the CCD (they
    are byte-identical), and the tracts with products."""
    out, tracts = {}, set()
    for p in sorted(glob.glob(os.path.join(root, "rerun", rerun, "*", "*", "corr", "*",
                                           "wcs-*.fits"))):
        f = p.replace("wcs-", "fcr-")
        if os.path.exists(f):
            v, c = os.path.basename(p)[4:-5].split("-")
            tracts.add(int(os.path.basename(os.path.dirname(p))))
            out.setdefault((int(v), int(c)), (p, f))
    return out, tracts


def accuracy(root, prods, visits, max_visits=25):
    """rms against the truth over all the CCDs of every k-th visit."""
    from mosaicfit.io.wcsfile import read_wcs_header
    from mosaicfit.model.camera import hsc
    from mosaicfit.model.fluxcorr import read_fcr
    from mosaicfit.model.sip import SipModel
    from mosaicfit.sim import Truth
    cam = hsc()
    truth = Truth(root)
    k = max(1, -(-len(visits) // max_visits))
    sample = set(sorted(visits)[k // 2::k])
    pos, mag, n = [], [], 0
    for (v, c), (wp, fp) in sorted(prods.items()):
        if v not in sample:
            continue
        n += 1
        sip = SipModel.from_header(read_wcs_header(wp), wp)
        fc = read_fcr(fp, cam[c].nquarter)
        a, b = truth.astrometric_error(v, c, sip.pixel_to_sky, "star")
        pos.append(np.stack([a, b], axis=1))
        mag.append(truth.photometric_error(v, c, lambda x, y, f: -2.5 * np.log10(
            f * fc.factor(x, y, sip.area_ratio(x, y)) / fc.fluxmag0)))
    d = np.concatenate(pos) if pos else np.zeros((0, 2))
    m = np.concatenate(mag) if mag else np.zeros(0)
    rms = lambda a: float(np.sqrt(np.mean(a ** 2))) if len(a) else float("nan")
    return dict(ra=rms(d[:, 0]), dec=rms(d[:, 1]), mag=rms(m),  # photometric_error: mmag
                mag_mean=float(np.mean(m)) if m.size else float("nan"),
                ccds=n, visits=len(sample), every=k, stars=int(len(d)))


def one_run(a):
    """Child: mosaic.py on the N central visits; prints one JSON line."""
    from mosaicfit import cli
    from mosaicfit.fit import astrometry as fa, photometry as fp, core
    from mosaicfit.pipeline import mosaic as pm
    n, total = a.one, a.total
    k0 = (total - n) // 2
    visits = [FIRST_VISIT + 2 * (k0 + i) for i in range(n)]
    rerun = f"w{n}"
    calls = []
    kept = set()          # the kinds whose first problem is pickled (not held: its memory)

    def wrap(kind, real):
        def f(p, **kw):
            t = time.time()
            r = real(p, **kw)
            calls.append(dict(kind=kind, t=time.time() - t, asm=r.t_assemble, solve=r.t_solve,
                              solver=r.solver, fill=r.fill, npairs=r.npairs))
            if kind not in kept:
                kept.add(kind)
                with open(os.path.join(a.work, f"{rerun}-{kind}.pkl"), "wb") as fh:
                    pickle.dump(p, fh, protocol=4)
            return r
        return f

    fa.solve_least_squares = wrap("astrometry", core.solve_least_squares)
    fp.solve_least_squares = wrap("photometry", core.solve_least_squares)
    timing = {}
    real_solve, real_load, real_write = pm.solve, pm.load_exposures, pm.write_products

    def solve(*x, **kw):
        t = time.time()
        sol = real_solve(*x, **kw)
        timing["fit"] = time.time() - t
        timing.update({k: float(v) for k, v in sol.stats.timing.items()})
        timing["detections"], timing["stars"] = sol.stats.n_detections, sol.stats.n_stars
        return sol

    def load(*x, **kw):
        t = time.time()
        out = real_load(*x, **kw)
        timing["read"] = time.time() - t
        return out

    def write(*x, **kw):
        t = time.time()
        out = real_write(*x, **kw)
        timing["write"] = time.time() - t
        return out

    pm.solve, pm.load_exposures, pm.write_products = solve, load, write
    args = [a.root, f"--rerun=sim:{rerun}", "--id", f"visit={visits[0]}..{visits[-1]}:2",
            "ccd=0..103", "-j", "2"]
    prof = None
    if a.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t = time.time()
    rc = cli.mosaic_main(args)
    wall = time.time() - t
    if prof is not None:
        prof.disable()
    mem = peak_mb()
    prods, tracts = products(a.root, rerun)
    acc = accuracy(a.root, prods, visits)
    out = dict(n=n, rc=rc, wall=wall, peak_mb=mem, tracts=len(tracts), ccds=len(prods),
               timing=timing, calls=calls, acc=acc, visits=[visits[0], visits[-1]])
    if prof is not None:
        import io
        import pstats
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats("mosaicfit", 25)
        out["profile"] = s.getvalue()
    print("RESULT " + json.dumps(out))


def resolve(a):
    """Child: one captured problem solved with one solver; prints one JSON line."""
    from mosaicfit.fit.core import solve_least_squares
    with open(a.resolve, "rb") as fh:
        p = pickle.load(fh)
    p.solver = a.solver
    base = peak_mb()
    t = time.time()
    r = solve_least_squares(p)
    wall = time.time() - t
    np.savez(a.resolve + f".{a.solver}.npz", coef=r.coef, dccd=r.dccd)
    print("RESULT " + json.dumps(dict(solver=r.solver, status=r.status, wall=wall,
                                      asm=r.t_assemble, solve=r.t_solve, fill=r.fill,
                                      npairs=r.npairs, nvisit=int(p.nvisit),
                                      extra_mb=peak_mb() - base, peak_mb=peak_mb())))


def child(args):
    p = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, capture_output=True,
                       text=True)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    sys.exit(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", help="simulation folder (made if absent; default: a temporary one)")
    ap.add_argument("--visits", default="50,100,200")
    ap.add_argument("--dense-up-to", type=int, default=100,
                    help="solve the captured problems densely up to this many visits")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    # internal: the children
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--total", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--resolve", help=argparse.SUPPRESS)
    ap.add_argument("--solver", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return one_run(a)
    if a.resolve:
        return resolve(a)

    from mosaicfit import cli
    from mosaicfit.sim import simulate_repository
    counts = sorted(int(x) for x in a.visits.split(","))
    total = counts[-1]
    root = a.root or os.path.join(tempfile.mkdtemp(prefix="wide_strip-"), "sim")
    if not os.path.exists(os.path.join(root, "registry.sqlite3")):
        t = time.time()
        simulate_repository(root, "sim", jobs=2, visits=total, layout="wide", seed=a.seed)
        print(f"simulated a {total}-visit wide strip x 104 CCDs in {time.time() - t:.0f} s")
    if not glob.glob(os.path.join(root, "rerun", "sim", "*Coadd", "skyMap*")):
        assert cli.main(["make-skymap", root, "--rerun=sim", "--rings"]) == 0
    work = tempfile.mkdtemp(prefix="wide_strip-problems-")
    print(f"simulation: {root} (wide layout, 104 CCDs per visit, seed {a.seed}); "
          f"each run fits the N central visits of the {total}-visit strip")
    runs = []
    for n in counts:
        # products of earlier runs of the same rerun would be counted: a fresh output rerun
        shutil.rmtree(os.path.join(root, "rerun", f"w{n}"), ignore_errors=True)
        r = child(["--root", root, "--one", str(n), "--total", str(total), "--work", work]
                  + (["--profile"] if a.profile else []))
        runs.append(r)
        tm = r["timing"]
        cpp = sum(c["asm"] + c["solve"] for c in r["calls"])
        fit = tm.get("fit", float("nan"))
        print(f"\n{n} visits ({r['visits'][0]}..{r['visits'][1]}), {tm.get('detections')} "
              f"detections of {tm.get('stars')} stars, {r['tracts']} tracts with products "
              f"({r['ccds']} CCDs), exit {r['rc']}")
        print(f"  wall {r['wall']:.1f} s: read {tm.get('read', 0):.1f}, match "
              f"{tm.get('match', 0):.1f}, astrometry {tm.get('astrometry', 0):.1f}, photometry "
              f"{tm.get('photometry', 0):.1f}, write {tm.get('write', 0):.1f} s; fit {fit:.1f} s "
              f"of which the C++ least squares {cpp:.1f} s ({len(r['calls'])} calls: assembly "
              f"{sum(c['asm'] for c in r['calls']):.1f} s, factor + solve "
              f"{sum(c['solve'] for c in r['calls']):.1f} s), the rest (Python) "
              f"{fit - cpp:.1f} s; peak memory {r['peak_mb'] / 1024:.2f} GB")
        solvers = sorted({c["solver"] for c in r["calls"]})
        fills = {c["kind"]: (c["fill"], c["npairs"]) for c in r["calls"]}
        print(f"  solver {'/'.join(solvers)}; factor fill " + ", ".join(
            f"{k} {f:.3f} ({p} visit pairs share stars)" for k, (f, p) in fills.items()))
        ac = r["acc"]
        print(f"  accuracy vs truth ({ac['ccds']} CCDs of {ac['visits']} visits, every "
              f"{ac['every']}th): {ac['ra']:.3f} / {ac['dec']:.3f} mas rms per axis, "
              f"{ac['mag']:.3f} mmag rms (mean {ac['mag_mean']:+.3f})")
        if "profile" in r:
            print("  profile (own time):\n" + "\n".join("    " + x for x in
                                                       r["profile"].splitlines()[-32:]))
        # the same problems with each solver
        for kind in ("astrometry", "photometry"):
            pk = os.path.join(work, f"w{n}-{kind}.pkl")
            if not os.path.exists(pk):
                continue
            res = {}
            for s in ("sparse", "simplicial") + (("dense",) if n <= a.dense_up_to else ()):
                res[s] = child(["--resolve", pk, "--solver", s])
            ref = np.load(pk + ".sparse.npz")
            parts = []
            for s, x in res.items():
                o = np.load(pk + f".{s}.npz")
                dc = np.abs(o["coef"] - ref["coef"]).max() / max(np.abs(ref["coef"]).max(), 1e-300)
                parts.append(f"{s} {x['solve']:.2f} s (+{x['extra_mb'] / 1024:.2f} GB, "
                             f"assembly {x['asm']:.2f} s, max rel. diff {dc:.1e})")
            line = f"  first {kind} problem solved again: " + "; ".join(parts)
            if "dense" in res:
                line += f"; dense / sparse {res['dense']['solve'] / res['sparse']['solve']:.1f}x"
            print(line)
            run_key = "solve_" + kind
            r[run_key] = res
    if len(runs) > 1:
        t = [x["timing"]["fit"] for x in runs]
        nv = [x["n"] for x in runs]
        slope = np.polyfit(np.log(nv), np.log(t), 1)[0]
        print("\nfit time vs visits: " + ", ".join(f"{n}: {x:.1f} s" for n, x in zip(nv, t))
              + f" (grows as visits^{slope:.2f})")
        wall = [x["wall"] for x in runs]
        slope = np.polyfit(np.log(nv), np.log(wall), 1)[0]
        print("mosaic.py wall time vs visits: " + ", ".join(f"{n}: {x:.1f} s" for n, x in
                                                           zip(nv, wall))
              + f" (grows as visits^{slope:.2f})")
    with open(os.path.join(work, "results.json"), "w") as fh:
        json.dump(runs, fh)
    print(f"\n(results: {os.path.join(work, 'results.json')})")


if __name__ == "__main__":
    main()
