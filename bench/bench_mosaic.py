"""Benchmark of mosaic.py on simulated HSC tracts (issue 3).

    python bench/bench_mosaic.py [--visits 30 100] [--jobs 2] [--out bench/out]

For each number of visits: simulate the tract once (cached under --out), then time a whole
`mosaic.py` run (read, match, fit, write) in a subprocess, with its peak memory, the time of
each phase, the accuracy of the written products against the truth, and the memory the dense,
star-inclusive normal matrix of hscPipe's formulation would need for the same problem. Targets
(HSC production settings, 2 cores): 30 visits x 104 CCDs under 60 s and 2 GB.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def simulate(root, visits, jobs):
    if os.path.exists(os.path.join(root, "truth", "model.json")):
        return None
    t = time.time()
    subprocess.run([sys.executable, "-m", "mosaicfit.cli", "simulate", root, "--visits",
                    str(visits), "-j", str(jobs)], check=True)
    return time.time() - t


def run_mosaic(root, visits, jobs):
    from mosaicfit.io.layout import Repository
    reg = Repository(root, "sim").registry
    vs = reg.visits()
    step = vs[1] - vs[0] if len(vs) > 1 else 2
    vid = f"visit={vs[0]}..{vs[-1]}:{step}"
    cmd = [sys.executable, "-c", "import sys; from mosaicfit.cli import mosaic_main; sys.exit(mosaic_main())",
           root, "--rerun=sim", "--clobber-config", "--id", vid, "ccd=0..103", "tract=0", "-j", str(jobs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss   # KiB, max over children
    if p.returncode != 0:
        raise SystemExit(f"mosaic.py failed:\n{p.stderr[-3000:]}")
    out = p.stdout + p.stderr
    phases = dict(re.findall(r"(read|match|astrometry|photometry|write) ([0-9.]+) s", out))
    stats = {}
    m = re.search(r"(\d+) stars \((\d+) reference\), (\d+) detections", out)
    if m:
        stats = dict(stars=int(m.group(1)), ref=int(m.group(2)), detections=int(m.group(3)))
    chi = re.findall(r"(astrometry|photometry)[^:\n]*: chi2/ndof ([0-9.]+)", out)
    return wall, max(peak, before) / 1024.0, {k: float(v) for k, v in phases.items()}, stats, dict(chi)


def accuracy(root, visits_sample=5):
    """rms errors of the written wcs-/fcr- files against the truth (clean stars)."""
    from mosaicfit.model.camera import hsc
    from mosaicfit.model.fluxcorr import read_fcr
    from mosaicfit.io.layout import Repository
    from mosaicfit.sim import Truth
    from mosaicfit.model.sip import pixel_area_ratio, sip_pixel_to_sky
    from mosaicfit.io.wcsfile import read_wcs_header
    repo = Repository(root, "sim")
    truth = Truth(root)
    reg = repo.registry
    dra, ddec, dmag = [], [], []
    for v in reg.visits()[:visits_sample]:
        info = reg.visit_info(v)
        for c in range(0, 104, 2):
            did = dict(visit=v, ccd=c, pointing=info["pointing"], filter=info["filter"], tract=0)
            wp, fp = repo.path("wcs", **did), repo.path("fcr", **did)
            if not (os.path.exists(wp) and os.path.exists(fp)):
                continue
            h = read_wcs_header(wp)
            fc = read_fcr(fp, hsc()[c].nquarter)
            a, b = truth.astrometric_error(v, c, lambda x, y: sip_pixel_to_sky(h, x, y))
            dra.append(a)
            ddec.append(b)
            dmag.append(truth.photometric_error(v, c, lambda x, y, f: -2.5 * np.log10(
                f * fc.factor(x, y, pixel_area_ratio(h, x, y)) / fc.fluxmag0)))
    rms = lambda xs: float(np.sqrt(np.mean(np.concatenate(xs) ** 2)))
    return rms(dra), rms(ddec), rms(dmag)


def dense_memory_gb(stats, visits, order=9, nccd=104):
    """hscPipe's formulation: one dense normal matrix over the star positions and the model."""
    npar = visits * 2 * ((order + 1) * (order + 2) // 2 - 1 + 2) + 3 * nccd
    n = npar + 2 * stats.get("stars", 0)
    return 8.0 * n * n / 1e9, npar


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visits", type=int, nargs="+", default=[30, 100])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args(argv)
    rows = []
    for nv in args.visits:
        root = os.path.join(args.out, f"tract{nv}")
        t_sim = simulate(root, nv, args.jobs)
        wall, peak_mb, phases, stats, chi = run_mosaic(root, nv, args.jobs)
        ex, ey, em = accuracy(root)
        dense_gb, npar = dense_memory_gb(stats, nv)
        rows.append(dict(visits=nv, wall_s=wall, peak_mb=peak_mb, phases=phases, stats=stats,
                         chi2_ndof=chi, err_ra_mas=ex, err_dec_mas=ey, err_mmag=em,
                         dense_gb=dense_gb, reduced_params=npar, simulate_s=t_sim))
        print(f"{nv} visits x 104 CCDs: {stats.get('detections', 0)} detections used, "
              f"{stats.get('stars', 0)} stars; mosaic.py {wall:.1f} s wall "
              f"(read {phases.get('read', 0):.1f}, match {phases.get('match', 0):.1f}, "
              f"astrometry {phases.get('astrometry', 0):.1f}, photometry "
              f"{phases.get('photometry', 0):.1f}, write {phases.get('write', 0):.1f}), "
              f"peak {peak_mb:.0f} MB; errors vs truth {ex:.2f}/{ey:.2f} mas, {em:.2f} mmag; "
              f"chi2/ndof {chi}; dense star-inclusive matrix would need {dense_gb:.1f} GB "
              f"({dense_gb * 1000 / max(peak_mb, 1):.0f}x our peak)", flush=True)
        if nv == 30:
            print(f"  targets: 60 s -> {wall / 60:.2f} of budget; 2 GB -> "
                  f"{peak_mb / 2048:.2f} of budget", flush=True)
    with open(os.path.join(args.out, "bench_mosaic.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
