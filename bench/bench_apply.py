"""Benchmark of applying the mosaic solution (issue 4): calibrateExposure.py.

    python bench/bench_apply.py [--ccds 10] [--jobs 2] [--out bench/out/apply]

1. The per-pixel kernel f = 10^(-0.4 P) J on a full 2048 x 4176 HSC CCD with a real
   meas_mosaic solution (tests/data/meas_mosaic-outputs, CCD 101: 7th-order P, 9th-order SIP):
   Mpixel/s of the C++ kernel (in place on float32 image + variance, 1 thread and all threads;
   f as a float64 image) and of a plain numpy evaluation of the same f (fluxcorr.mag +
   sip.pixel_area_ratio), in the same run, with their largest relative difference.
2. `calibrateExposure.py -j JOBS` over CCDS full-size simulated CCDs (with pixels; the mosaic
   solution from mosaic.py on a 3-visit simulation), run as the console command in a
   subprocess: wall time, and the per-CCD time split into FITS reading, calibration (kernel
   plus header work) and FITS writing, as the command reports it. Goal: kernel < 10% of the
   wall time.

Prints the figures; no assertions on speed.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, os.pardir, "tests", "data", "meas_mosaic-outputs")
W, H = 2048, 4176


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def bench_kernel(repeat=7, numpy_rows=H // 8):
    from mosaicfit import _core
    from mosaicfit.pipeline.apply import _kernel_params, correction_image, reference_factor
    from mosaicfit.model.camera import hsc
    from mosaicfit.model.fluxcorr import read_fcr
    from mosaicfit.io.wcsfile import read_wcs_header
    ccd = 101
    wh = read_wcs_header(os.path.join(DATA, f"wcs-0007358-{ccd:03d}.fits"))
    fc = read_fcr(os.path.join(DATA, f"fcr-0007358-{ccd:03d}.fits"), hsc()[ccd].nquarter)
    poly, sip = _kernel_params(wh, fc)
    rng = np.random.default_rng(1)
    image = rng.normal(100, 10, (H, W)).astype(np.float32)
    variance = rng.uniform(50, 150, (H, W)).astype(np.float32)
    npix = W * H
    ncpu = os.cpu_count() or 1
    out = {}
    for threads in sorted({1, ncpu}):
        t, med = best_of(lambda: _core.apply_flux_correction(poly, sip, image, variance, False,
                                                             100, threads), repeat)
        out[f"apply_t{threads}"] = (t, med)
    t, med = best_of(lambda: correction_image(wh, fc, W, H, threads=ncpu), repeat)
    out["image_f64"] = (t, med)
    t, med = best_of(lambda: correction_image(wh, fc, W, H, interpolate=True, threads=ncpu), 3)
    out["image_interp"] = (t, med)
    # plain numpy on a band of rows (the whole CCD takes long), scaled per pixel
    y, x = np.mgrid[0:numpy_rows, 0:W].astype(float)
    t0 = time.perf_counter()
    f_np = reference_factor(wh, fc, x, y)
    t_np = time.perf_counter() - t0
    f_cpp = correction_image(wh, fc, W, H)[:numpy_rows]
    diff = float(np.max(np.abs(f_cpp / f_np - 1)))
    # memory bandwidth for reference: read + write 2 float32 planes
    a = np.empty_like(image)
    t_copy, _ = best_of(lambda: (np.copyto(a, image), np.copyto(a, variance)), repeat)
    print(f"kernel, one 2048 x 4176 CCD (real meas_mosaic solution, CCD {ccd}), {ncpu} cores:")
    for threads in sorted({1, ncpu}):
        t, med = out[f"apply_t{threads}"]
        print(f"  C++ in place (image + variance), {threads} thread(s): {t * 1e3:7.1f} ms "
              f"(median {med * 1e3:.1f})  {npix / t / 1e6:7.0f} Mpixel/s")
    t, med = out["image_f64"]
    print(f"  C++ f as a float64 image, {ncpu} threads:          {t * 1e3:7.1f} ms  "
          f"{npix / t / 1e6:7.0f} Mpixel/s")
    t, med = out["image_interp"]
    print(f"  C++ f, interpolate=True (meas_mosaic), {ncpu} thr.: {t * 1e3:7.1f} ms  "
          f"{npix / t / 1e6:7.0f} Mpixel/s")
    print(f"  numpy (fluxcorr.mag + sip.pixel_area_ratio), {numpy_rows} rows: {t_np:.2f} s  "
          f"{numpy_rows * W / t_np / 1e6:7.2f} Mpixel/s")
    best = min(out[f"apply_t{t}"][0] for t in sorted({1, ncpu}))
    speedup = (t_np / (numpy_rows * W)) / (best / npix)
    print(f"  speed-up C++ (best) / numpy: {speedup:.0f}x; max |f_C++ / f_numpy - 1| = {diff:.1e}")
    print(f"  (numpy copy of the same 2 float32 planes: {t_copy * 1e3:.1f} ms, "
          f"{npix / t_copy / 1e6:.0f} Mpixel/s)")
    return out


def make_repo(root, nccd, jobs):
    """3 visits x 22 CCDs without pixels, mosaic.py for tract 0, then full-size pixels for
    `nccd` (visit, ccd) that have a solution. Cached: reused if complete."""
    from mosaicfit import cli
    from mosaicfit.io.layout import Repository
    from mosaicfit.sim.repository import _write_one
    from mosaicfit.sim import make_tract, write_repository
    stamp = os.path.join(root, f"images-{nccd}.done")
    ccds = tuple(range(40, 61)) + (101,)
    if os.path.exists(stamp):
        keys = [tuple(map(int, line.split())) for line in open(stamp)]
        return keys
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.time()
    sim = make_tract(visits=3, ccds=ccds, seed=1)
    write_repository(sim, root, "sim", jobs=jobs)
    rc = cli.main(["mosaic", root, "--rerun=sim", "--id", "visit=902798..902802:2",
                   "ccd=40..60^101", "tract=0", "--config", "fittingOrder=5", "fluxFitOrder=3"])
    if rc != 0:
        raise SystemExit("mosaic.py failed")
    repo = Repository(root, "sim")
    keys = []
    for key in sorted(sim.catalogs):
        did = dict(visit=key[0], ccd=key[1], pointing=sim.config.pointing,
                   filter=sim.config.filter, tract=0)
        if key in sim.missing or repo.find("fcr", **did) is None:
            continue
        _write_one(sim, repo, key, True, 1000 + key[1])
        keys.append(key)
        if len(keys) == nccd:
            break
    with open(stamp, "w") as f:
        f.write("".join(f"{v} {c}\n" for v, c in keys))
    print(f"(made the repository with {len(keys)} full-size CCDs in {time.time() - t0:.0f} s)")
    return keys


def bench_command(root, keys, jobs):
    ids = []
    for v, c in keys:
        ids += ["--id", f"visit={v}", f"ccd={c}", "tract=0"]
    out_rerun = "sim:bench"
    cmd = [sys.executable, "-c",
           "import sys; from mosaicfit.cli import calibrate_exposure_main as m; sys.exit(m())",
           root, f"--rerun={out_rerun}", "-j", str(jobs), "--overwrite"] + ids
    # drop the page cache? not possible unprivileged: the inputs were just written (warm)
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    sys.stderr.write(proc.stderr)
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    m = re.search(r"read ([\d.]+) s, calibrate ([\d.]+) s \(pixel kernel ([\d.]+) s\), "
                  r"write ([\d.]+) s", line)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"calibrateExposure.py failed ({proc.returncode}): {proc.stdout}")
    read, cal, kern, write = (float(g) for g in m.groups())
    n = len(keys)
    size = os.path.getsize(os.path.join(root, "rerun", "bench", "01201", "HSC-I", "corr",
                                        "0000", f"CALEXP-{keys[0][0]:07d}-{keys[0][1]:03d}.fits"))
    print(f"calibrateExposure.py -j {jobs} over {n} full-size CCDs ({size / 1e6:.0f} MB each in "
          f"and out):")
    print(f"  wall time {wall:.1f} s ({wall / n:.2f} s per CCD; includes interpreter and "
          f"{jobs} worker start-up)")
    print(f"  per CCD: read {read:.3f} s, calibrate {cal:.3f} s (of which the pixel kernel "
          f"{kern:.3f} s, the rest header/WCS work), write {write:.3f} s")
    print(f"  pixel kernel share of the per-CCD work: {100 * kern / (read + cal + write):.1f}%; "
          f"of the wall time x {jobs} processes: {100 * n * kern / (wall * jobs):.1f}%")
    print(f"  calibration (kernel + headers) share of the per-CCD work: "
          f"{100 * cal / (read + cal + write):.1f}%")
    print(f"  FITS I/O share of the per-CCD work: {100 * (read + write) / (read + cal + write):.1f}%")
    print(f"  command output: {line}")
    return wall, read, cal, kern, write


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ccds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "apply"))
    ap.add_argument("--skip-command", action="store_true", help="only the kernel figures")
    args = ap.parse_args()
    import platform
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}")
    bench_kernel()
    if not args.skip_command:
        keys = make_repo(os.path.abspath(args.out), args.ccds, args.jobs)
        bench_command(os.path.abspath(args.out), keys, args.jobs)


if __name__ == "__main__":
    main()
