"""Region split on a local Dask cluster (issue 16): the seam at region borders.

    python bench/region_split.py [--root DIR] [--visits 48] [--nside 16] [--overlap 1.5,3.0]
                                 [--workers 2] [--seed 1]

Simulates (or reuses, with --root) an HSC-SSP-Wide-like strip of --visits pointings
(``mosaicfit simulate --layout wide``), writes the rings sky map, then runs ``mosaic.py``
without ``tract=`` over the whole strip twice or more:

- one fit of every visit (the reference: seamless by construction, each (visit, CCD) one
  solution);
- for each --overlap, the run split into the HEALPix cells of nside --nside
  (``--config regionNside=N regionOverlap=D``), each region a task on a
  ``dask.distributed.LocalCluster`` of --workers one-thread worker processes on the loopback
  interface (``--scheduler tcp://127.0.0.1:PORT``).

Each product of the split run is compared with the one-fit product of the same (visit, CCD) on
a 9 x 18 grid of pixels over the CCD (astropy alone, as bench/compare_products.py): the signed
position difference (RA cos Dec, Dec; mas) and magnitude difference (mmag). Printed:

- the rms and largest difference over all CCDs and over the *border* CCDs (of visits with a
  visit of another region within 1.5 deg, the HSC field diameter: they share stars across the
  border);
- the seam of each border between regions i and j: the mean difference of i's border visits
  less that of j's (per axis, mas; mmag). The one-fit products agree with each other across the
  border, so this is the offset between the two sides' products that the split introduces;
- the seam as the stars see it: for every clean star detected in visits of two different
  regions, the split's difference (position, magnitude at its true pixel) in the one visit
  less that in the other: what a catalogue built from both sides would see at the border
  beyond the one fit (rms, 99th percentile, mean);
- the accuracy of both runs against the simulation's truth and their wall times.
"""
import argparse
import glob
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, HERE)

from compare_products import W, H, fcr_mag, area_ratio, quarter_turns, wcs_of  # noqa: E402
from wide_strip import accuracy, products  # noqa: E402

GRID = 9


def evaluate(prods):
    """{(visit, ccd): (ra, dec, mag) on the pixel grid} of products {(visit, ccd): (wcs, fcr)}."""
    nq = quarter_turns()
    gx, gy = np.meshgrid(np.linspace(-0.5, W - 0.5, GRID), np.linspace(-0.5, H - 0.5, 2 * GRID))
    gx, gy = gx.ravel(), gy.ravel()
    out = {}
    for key, (wp, fp) in prods.items():
        w, hw = wcs_of(wp)
        ra, dec = w.all_pix2world(gx, gy, 0)
        p, f0 = fcr_mag(fp, gx, gy, nq.get(key[1], 0))
        mag = p - 2.5 * np.log10(area_ratio(hw, gx, gy)) + 2.5 * np.log10(f0) if f0 > 0 else \
            np.full(len(gx), np.nan)
        out[key] = (ra, dec, mag)
    return out


def at_stars(prods, truth):
    """{(visit, ccd): (truth ids, ra, dec, mag)} of products at the clean stars' true pixels."""
    from mosaicfit.io.wcsfile import read_wcs_header
    from mosaicfit.model.camera import hsc
    from mosaicfit.model.fluxcorr import read_fcr
    from mosaicfit.model.sip import SipModel
    cam = hsc()
    out = {}
    for (v, c), (wp, fp) in sorted(prods.items()):
        s = truth.clean_stars(v, c)
        if s is None or not len(s):
            continue
        x, y = np.asarray(s["x_true"], float), np.asarray(s["y_true"], float)
        sip = SipModel.from_header(read_wcs_header(wp), wp)
        fc = read_fcr(fp, cam[c].nquarter)
        ra, dec = sip.pixel_to_sky(x, y)
        mag = -2.5 * np.log10(fc.factor(x, y, sip.area_ratio(x, y)) / fc.fluxmag0)
        out[(v, c)] = (np.asarray(s["truth_id"]), ra, dec, mag)
    return out


def star_seams(one, split, owner):
    """The seam as a star sees it: for each star seen by visits of different regions, the
    position (and magnitude) the products of a visit of one region give it less what those of
    a visit of the other give, beyond the same difference in the one fit. Returns the
    (n, 3) differences (mas, mas, mmag) over all such pairs of detections."""
    per = {}
    for k in sorted(set(one) & set(split)):
        ids, ra1, de1, m1 = one[k]
        _, ra2, de2, m2 = split[k]
        d = np.stack([((ra2 - ra1 + 180) % 360 - 180) * np.cos(np.radians(de1)) * 3.6e6,
                      (de2 - de1) * 3.6e6, (m2 - m1) * 1000.0], axis=1)
        for i, t in enumerate(ids.tolist()):
            per.setdefault(t, []).append((owner[k[0]], d[i]))
    out = []
    for obs in per.values():
        for i in range(len(obs)):
            for j in range(i + 1, len(obs)):
                if obs[i][0] != obs[j][0]:
                    out.append(obs[i][1] - obs[j][1])
    return np.array(out).reshape(-1, 3)


def differences(a, b):
    """{(visit, ccd): (dx, dy, dmag)} of b - a: mas (RA cos Dec, Dec) and mmag."""
    out = {}
    for key in sorted(set(a) & set(b)):
        ra1, de1, m1 = a[key]
        ra2, de2, m2 = b[key]
        dra = (ra2 - ra1 + 180.0) % 360.0 - 180.0
        out[key] = (dra * np.cos(np.radians(de1)) * 3.6e6, (de2 - de1) * 3.6e6,
                    (m2 - m1) * 1000.0)
    return out


def visit_centres(evaluated):
    """{visit: (ra, dec)}: the centre of the sky its CCDs cover (as pipeline.mosaic takes it)."""
    from mosaicfit.model.sky import radec_to_xyz, xyz_to_radec
    acc = {}
    for (v, _), (ra, dec, _) in evaluated.items():
        acc.setdefault(v, []).append(radec_to_xyz(ra, dec))
    out = {}
    for v, xs in acc.items():
        c = np.concatenate(xs).mean(0)
        ra, dec = xyz_to_radec(c / np.linalg.norm(c))
        out[v] = (float(ra), float(dec))
    return out


def run(root, rerun, extra, scheduler=None, reuse=False):
    from mosaicfit import cli
    if reuse and glob.glob(os.path.join(root, "rerun", rerun, "*", "*", "corr", "*", "wcs-*")):
        return "reused", float("nan")
    shutil.rmtree(os.path.join(root, "rerun", rerun), ignore_errors=True)
    args = [root, f"--rerun=sim:{rerun}", "--id", "ccd=0..103", "-j", "2"]
    if extra:
        args += ["--config"] + extra
    if scheduler:
        args += ["--scheduler", scheduler]
    t = time.time()
    rc = cli.mosaic_main(args)
    return rc, time.time() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", help="simulation folder (made if absent)")
    ap.add_argument("--visits", type=int, default=48)
    ap.add_argument("--nside", type=int, default=16)
    ap.add_argument("--overlap", default="1.5,3.0")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reuse", action="store_true",
                    help="evaluate the products of earlier runs (reruns one, splitD) again")
    a = ap.parse_args()

    from dask.distributed import Client, LocalCluster
    from mosaicfit import cli
    from mosaicfit.pipeline.regions import sky_regions
    from mosaicfit.sim import simulate_repository
    root = a.root or os.path.join(tempfile.mkdtemp(prefix="region_split-"), "sim")
    if not os.path.exists(os.path.join(root, "registry.sqlite3")):
        t = time.time()
        simulate_repository(root, "sim", jobs=2, visits=a.visits, layout="wide", seed=a.seed)
        print(f"simulated a {a.visits}-visit wide strip x 104 CCDs in {time.time() - t:.0f} s")
    if not glob.glob(os.path.join(root, "rerun", "sim", "*Coadd", "skyMap*")):
        assert cli.main(["make-skymap", root, "--rerun=sim", "--rings"]) == 0
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")

    rc, t_one = run(root, "one", [], reuse=a.reuse)
    one_prods, one_tracts = products(root, "one")
    visits = sorted({v for v, _ in one_prods})
    print(f"\none fit: {len(visits)} visits, {len(one_prods)} CCDs with products in "
          f"{len(one_tracts)} tracts, exit {rc}, wall {t_one:.1f} s")
    acc = accuracy(root, one_prods, visits)
    print(f"  accuracy vs truth: {acc['ra']:.3f} / {acc['dec']:.3f} mas, {acc['mag']:.3f} mmag")
    one = evaluate(one_prods)

    centres = visit_centres(one)
    from mosaicfit.sim import Truth
    truth = Truth(root)
    one_stars = at_stars(one_prods, truth)
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        del client             # mosaic.py connects to the scheduler itself (--scheduler)
        for ov in (float(x) for x in a.overlap.split(",")):
            regions = sky_regions(centres, a.nside, ov)
            owner = {v: r.pixel for r in regions for v in r.own}
            rerun = f"split{ov:g}"
            rc, t_split = run(root, rerun, [f"regionNside={a.nside}", f"regionOverlap={ov}"],
                              cluster.scheduler_address, reuse=a.reuse)
            prods, tracts = products(root, rerun)
            print(f"\n{len(regions)} regions of nside {a.nside}, overlap {ov:g} deg (own + "
                  f"margin visits: " + ", ".join(f"{r.pixel}: {len(r.own)}+"
                                                  f"{len(r.fitted) - len(r.own)}"
                                                  for r in regions)
                  + f"), {a.workers} Dask workers on {cluster.scheduler_address}: exit {rc}, "
                  f"wall {t_split:.1f} s, {len(prods)} CCDs with products in {len(tracts)} "
                  f"tracts (one fit: {len(one_prods)})")
            ac = accuracy(root, prods, visits)
            ss = star_seams(one_stars, at_stars(prods, truth), owner)
            if len(ss):
                p = np.hypot(ss[:, 0], ss[:, 1])
                m = ss[:, 2][np.isfinite(ss[:, 2])]
                print(f"  seam as the stars see it ({len(ss)} pairs of detections of one star "
                      f"in visits of two regions): position rms {np.sqrt(np.mean(p ** 2)):.4f}"
                      f" mas (per axis {np.sqrt(np.mean(ss[:, 0] ** 2)):.4f} / "
                      f"{np.sqrt(np.mean(ss[:, 1] ** 2)):.4f}), 99% {np.percentile(p, 99):.4f}"
                      f" mas; magnitude rms {np.sqrt(np.mean(m ** 2)):.4f} mmag, 99% "
                      f"{np.percentile(np.abs(m), 99):.4f} mmag; mean {np.mean(ss[:, 0]):+.4f}"
                      f" / {np.mean(ss[:, 1]):+.4f} mas, {np.mean(m):+.4f} mmag")
            print(f"  accuracy vs truth: {ac['ra']:.3f} / {ac['dec']:.3f} mas, "
                  f"{ac['mag']:.3f} mmag")
            d = differences(one, evaluate(prods))
            from mosaicfit.model.sky import radec_to_xyz
            u = {v: radec_to_xyz(*centres[v]) for v in visits}
            border = {v for v in visits for w in visits
                      if owner[v] != owner[w] and u[v] @ u[w] >= np.cos(np.radians(1.5))}

            def stats(keys, label):
                if not keys:
                    return
                pos = np.concatenate([np.hypot(d[k][0], d[k][1]) for k in keys])
                mag = np.concatenate([d[k][2] for k in keys])
                mag = mag[np.isfinite(mag)]
                print(f"  split - one fit, {label} ({len(keys)} CCDs): position rms "
                      f"{np.sqrt(np.mean(pos ** 2)):.4f} mas, max {pos.max():.4f} mas; "
                      f"magnitude rms {np.sqrt(np.mean(mag ** 2)):.4f} mmag, max "
                      f"{np.abs(mag).max():.4f} mmag")
            stats(sorted(d), "all CCDs")
            stats([k for k in sorted(d) if k[0] in border], "border visits' CCDs")
            pix = [r.pixel for r in regions]
            for i, p in enumerate(pix):
                for q in pix[i + 1:]:
                    side = {}
                    for s, other in ((p, q), (q, p)):
                        vs = {v for v in border if owner[v] == s and any(
                            owner[w] == other and u[v] @ u[w] >= np.cos(np.radians(1.5))
                            for w in visits)}
                        ks = [k for k in d if k[0] in vs]
                        if ks:
                            side[s] = [np.nanmean(np.concatenate([d[k][j] for k in ks]))
                                       for j in range(3)]
                    if len(side) == 2:
                        s = np.subtract(side[p], side[q])
                        print(f"  seam {p} | {q}: {s[0]:+.4f} / {s[1]:+.4f} mas "
                              f"(|{np.hypot(s[0], s[1]):.4f}|), {s[2]:+.4f} mmag")


if __name__ == "__main__":
    main()
