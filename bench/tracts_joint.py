"""One fit per run across tracts (issue 16), against the old one fit per tract, in one run.

    python bench/tracts_joint.py [--root DIR] [--visits 8] [--ra 150.99] [--dec 2.23] [--seed 1]

Simulates (or reuses, with --root on an existing simulation) the corner field of rings tracts
9813/9814 and their neighbours, writes the rings sky map, then runs in this process:

- old: one mosaic.py run per tract with ``tract=T``, each fitting the visits overlapping T
  and writing the CCDs overlapping T: exactly what mosaic.py without ``tract=`` did before
  issue 16 (one fit per tract; the inputs are re-read for each, which the old code did not do,
  so only the fit times are compared);
- new: one mosaic.py run without ``tract=`` (one fit of all the visits, products written
  into every tract folder).

Printed: the time of each fit (``solve``) and of the whole runs; the largest WCS difference
(per CCD, max over a 9 x 17 pixel grid, mas) and photometric difference (mmag) between the
tract folders holding the same (visit, CCD), median and max over those CCDs; the accuracy of
each tract's products against the truth (mas per axis, mmag); the ratio new fit / slowest old
tract fit.
"""
import argparse
import glob
import os
import shutil
import sys
import time
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))


def products(root, rerun):
    """{(visit, ccd): {tract: (wcs path, fcr path)}}."""
    out = defaultdict(dict)
    for p in glob.glob(os.path.join(root, "rerun", rerun, "*", "*", "corr", "*", "wcs-*.fits")):
        f = p.replace("wcs-", "fcr-")
        if os.path.exists(f):
            v, c = os.path.basename(p)[4:-5].split("-")
            out[int(v), int(c)][int(os.path.basename(os.path.dirname(p)))] = (p, f)
    return out


def seams(prods):
    """Per (visit, CCD) in several folders: the largest position (mas) and magnitude (mmag)
    difference between any two of its folders over a pixel grid."""
    from mosaicfit.io.wcsfile import read_wcs_header
    from mosaicfit.model.camera import hsc
    from mosaicfit.model.fluxcorr import read_fcr
    from mosaicfit.model.sip import SipModel
    cam = hsc()
    x, y = np.meshgrid(np.linspace(0, 2047, 9), np.linspace(0, 4175, 17))
    x, y = x.ravel(), y.ravel()
    dpos, dmag, identical = [], [], 0
    for (v, c), per in sorted(prods.items()):
        if len(per) < 2:
            continue
        raw = {open(w, "rb").read() + open(f, "rb").read() for w, f in per.values()}
        identical += len(raw) == 1
        pos, mag = [], []
        for w, f in per.values():
            sip = SipModel.from_header(read_wcs_header(w), w)
            fc = read_fcr(f, cam[c].nquarter)
            pos.append(sip.pixel_to_sky(x, y))
            mag.append(-2.5 * np.log10(fc.factor(x, y, sip.area_ratio(x, y)) / fc.fluxmag0))
        ra = np.array([p[0] for p in pos])
        dec = np.array([p[1] for p in pos])
        m = np.array(mag)
        cosd = np.cos(np.radians(dec[0]))
        dpos.append(np.hypot(np.ptp(ra, 0) * cosd, np.ptp(dec, 0)).max() * 3.6e6)
        dmag.append(np.ptp(m, 0).max() * 1000.0)
    return np.array(dpos), np.array(dmag), identical


def accuracy(root, rerun, refs, tracts):
    from mosaicfit.sim import evaluate_outputs
    return {t: evaluate_outputs(root, rerun, refs, t) for t in tracts}


def timed_mosaic(args, fits):
    """Run mosaic.py with `args`; the time of each solve call goes to `fits`."""
    from mosaicfit import cli
    from mosaicfit.pipeline import mosaic as m
    real = m.solve

    def timed(*a, **k):
        t = time.time()
        sol = real(*a, **k)
        fits.append(time.time() - t)
        return sol

    m.solve = timed
    try:
        t = time.time()
        rc = cli.mosaic_main(args)
        return rc, time.time() - t
    finally:
        m.solve = real


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", help="simulation folder (made if absent; default: a temporary one)")
    ap.add_argument("--visits", type=int, default=8)
    ap.add_argument("--ra", type=float, default=150.99)
    ap.add_argument("--dec", type=float, default=2.23)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    import tempfile
    from mosaicfit import cli
    from mosaicfit.io.layout import Repository
    from mosaicfit.pipeline.inputs import resolve_refs
    from mosaicfit.sim import simulate_repository
    tmp = tempfile.mkdtemp(prefix="tracts_joint-")
    base = a.root or os.path.join(tmp, "sim")
    if not os.path.exists(os.path.join(base, "registry.sqlite3")):
        t = time.time()
        simulate_repository(base, "sim", jobs=2, visits=a.visits, ra=a.ra, dec=a.dec,
                            seed=a.seed)
        print(f"simulated {a.visits} visits at ({a.ra}, {a.dec}) in {time.time() - t:.0f} s")
    ids = ["--id", f"visit={902798}..{902798 + 2 * (a.visits - 1)}:2", "ccd=0..103"]
    runs = {}
    for name in ("old", "new"):
        root = os.path.join(tmp, name)
        shutil.copytree(base, root, ignore=shutil.ignore_patterns("wcs-*", "fcr-*"))
        if not glob.glob(os.path.join(root, "rerun", "sim", "*Coadd", "skyMap*")):
            assert cli.main(["make-skymap", root, "--rerun=sim", "--rings"]) == 0
        runs[name] = root

    # new: one run without tract=
    new_fits = []
    rc, t_new = timed_mosaic([runs["new"], "--rerun=sim", *ids], new_fits)
    assert rc == 0, rc
    new_prods = products(runs["new"], "sim")
    tracts = sorted({t for per in new_prods.values() for t in per} |
                    {int(os.path.basename(p)) for p in glob.glob(os.path.join(
                        runs["new"], "rerun", "sim", "*", "*", "corr", "[0-9]*"))})
    # old: one run per tract (the old code's per-tract fits)
    old_fits, t_old = [], 0.0
    for t in tracts:
        f = []
        rc, dt = timed_mosaic([runs["old"], "--rerun=sim", *ids[:2], ids[2], f"tract={t}"], f)
        assert rc in (0, 1), rc
        old_fits += f
        t_old += dt
    old_prods = products(runs["old"], "sim")

    refs = resolve_refs(Repository(runs["new"], "sim"), [ids[1:]])
    print(f"\ntracts: {' '.join(map(str, tracts))}")
    print(f"old: {len(old_fits)} fits, {sum(old_fits):.1f} s in all, slowest {max(old_fits):.1f} s "
          f"({' '.join(f'{x:.1f}' for x in old_fits)}); runs {t_old:.1f} s")
    print(f"new: {len(new_fits)} fit, {sum(new_fits):.1f} s; run {t_new:.1f} s")
    print(f"ratio new fit / slowest old tract fit: {sum(new_fits) / max(old_fits):.2f}; "
          f"new fit / all old fits: {sum(new_fits) / sum(old_fits):.2f}")
    for name, prods in (("old", old_prods), ("new", new_prods)):
        dp, dm, same = seams(prods)
        n = len(dp)
        print(f"{name}: {n} (visit, CCD) in several tract folders, {same} byte-identical; "
              f"position difference median {np.median(dp) if n else 0:.3f} max "
              f"{dp.max() if n else 0:.3f} mas; photometry median {np.median(dm) if n else 0:.3f} "
              f"max {dm.max() if n else 0:.3f} mmag")
    for name in ("old", "new"):
        acc = accuracy(runs[name], "sim", refs, tracts)
        for t, r in acc.items():
            print(f"{name} tract {t}: {r['n_ccds']} CCDs, rms vs truth {r['wcs_rms_mas'][0]:.3f} / "
                  f"{r['wcs_rms_mas'][1]:.3f} mas, {r['zp_rms_mmag']:.3f} mmag")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
