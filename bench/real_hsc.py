"""mosaic.py on real HSC exposures: the sample of ``../shared/data/real-hsc`` (3 commissioning
visits x 104 CCDs, SDSS stars; see its README), scored as that README says.

    python bench/real_hsc.py [--data DIR] [--keep DIR] [-- CONFIG...]

Copies the repository to a temporary folder (the data folder is never written), runs
``mosaic.py COPY --rerun=real --id visit=... ccd=0..103 tract=0 --config doSolveFlux=False``
in a subprocess with any ``--config key=value`` after ``--``, and evaluates the written wcs-
files at the pixel positions of ``truth/matches.fits``:

1. per-visit residuals against SDSS in solvetansip's global pixels (one 2.5-sigma pass per
   axis), next to solvetansip's own per-visit fit (RMSSIPX/Y);
2. internal repeatability of the stars seen in all visits (per-star 5-sigma rejection; rms and
   robust sigma per axis in mas, scaled by sqrt(n / (n - 1))), next to the data's floor: the
   same per detection from each pair of visits, the pair least apart in refraction giving it;
3. the edge drift: the mean offset of the solution from SDSS (mas, RA cos Dec and Dec) in
   rings of focal-plane radius, the outer ring (|v| > 14000 px) being where the single-frame
   WCS is 1-1.5" off.

The data are internal test data (no licence): nothing derived from them is committed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "shared", "data", "real-hsc")
MAS = 3.6e6


def _tangent(ra, dec, ra0, dec0):
    """Gnomonic (xi, eta) in degrees of (ra, dec) about (ra0, dec0), all degrees."""
    ra, dec, ra0, dec0 = map(np.radians, (ra, dec, ra0, dec0))
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def solution_positions(root, rerun, matches):
    """(ra, dec) degrees of every match from the written wcs- files (NaN where none)."""
    from astropy.io import fits
    from astropy.wcs import WCS
    ra = np.full(len(matches), np.nan)
    dec = np.full(len(matches), np.nan)
    corr = os.path.join(root, "rerun", rerun, "00000", "HSC-I", "corr", "0000")
    keys = matches["visit"].astype(np.int64) * 1000 + matches["ccd"]
    for k in np.unique(keys):
        v, c = int(k // 1000), int(k % 1000)
        path = os.path.join(corr, f"wcs-{v:07d}-{c:03d}.fits")
        if not os.path.exists(path):
            continue
        with fits.open(path) as h:
            hdr = next(x.header for x in h if "CTYPE1" in x.header)
        m = keys == k
        r, d = WCS(hdr).all_pix2world(matches["x"][m], matches["y"][m], 0)
        ra[m], dec[m] = r, d
    return ra, dec


def per_visit_residuals(matches, ra, dec, summary):
    """{visit: (rms_x, rms_y, n_kept, n)} in solvetansip's global pixels (README measure 1)."""
    out = {}
    for v in np.unique(matches["visit"]):
        m = (matches["visit"] == v) & np.isfinite(ra)
        xi, eta = _tangent(ra[m], dec[m], matches["ra"][m], matches["dec"][m])
        cd = np.array(summary["solvetansip"][str(int(v))]["CD"])
        g = np.linalg.solve(cd, np.stack([xi, eta]))
        keep = np.ones(g.shape[1], bool)
        for a in range(2):
            mu, sd = np.mean(g[a]), np.std(g[a])
            keep &= np.abs(g[a] - mu) < 2.5 * sd
        out[int(v)] = (float(np.std(g[0, keep])), float(np.std(g[1, keep])), int(keep.sum()),
                       int(m.sum()))
    return out


def _focal_plane(matches):
    """(u, v) focal-plane pixels (15 um) of every match, from the camera model."""
    from mosaicfit.model.camera import hsc
    cam = hsc()
    u = np.full(len(matches), np.nan)
    v = np.full(len(matches), np.nan)
    for c in np.unique(matches["ccd"]):
        m = matches["ccd"] == c
        fx, fy = cam.pixel_to_focal_plane(int(c), matches["x"][m], matches["y"][m])
        u[m], v[m] = fx / cam.pixel_size_mm, fy / cam.pixel_size_mm
    return u, v


def sdss_explains(matches, ra, dec, summary, order=9, rounds=5):
    """{visit: ((x, y) px, (x, y) px)}: measure 1 of the solution after the best correction that
    SDSS itself asks for, fitted to the residuals against SDSS with the measure's own clip:
    (a) a Legendre polynomial of `order` over the focal plane (what any smooth per-visit map,
    solvetansip's included, can add), (b) the same plus an offset per CCD per visit.

    (a) close to measure 1 says the per-visit map is as close to SDSS as a smooth map gets. A
    further drop in (b) is a pattern of SDSS against the solution at CCD scale; whether it is
    SDSS's or the solution's is told by `ccd_pattern` and by the repeatability."""
    from numpy.polynomial import legendre
    u, v = _focal_plane(matches)
    su, sv = np.nanmax(np.abs(u)), np.nanmax(np.abs(v))
    out = {}
    for vis in np.unique(matches["visit"]):
        m = (matches["visit"] == vis) & np.isfinite(ra)
        xi, eta = _tangent(ra[m], dec[m], matches["ra"][m], matches["dec"][m])
        g = np.linalg.solve(np.array(summary["solvetansip"][str(int(vis))]["CD"]),
                            np.stack([xi, eta]))
        eye = np.eye(order + 1)
        la = [legendre.legval(u[m] / su, eye[i]) for i in range(order + 1)]
        lb = [legendre.legval(v[m] / sv, eye[j]) for j in range(order + 1)]
        P = np.stack([la[i] * lb[j] for i in range(order + 1) for j in range(order + 1 - i)], 1)
        ccd = np.asarray(matches["ccd"][m])
        C = (ccd[:, None] == np.unique(ccd)[None, 1:]).astype(float)
        res = []
        for M in (P, np.hstack([P, C])):
            keep = np.ones(g.shape[1], bool)
            h = g.copy()
            for _ in range(rounds):
                for a in range(2):
                    c = np.linalg.lstsq(M[keep], g[a, keep], rcond=None)[0]
                    h[a] = g[a] - M @ c
                keep = np.all([np.abs(h[a] - h[a].mean()) < 2.5 * h[a].std() for a in range(2)],
                              axis=0)
            res.append((float(np.std(h[0, keep])), float(np.std(h[1, keep]))))
        out[int(vis)] = tuple(res)
    return out


def ccd_pattern(matches, ra, dec, clip_mas=250.0):
    """((ra, dec) rms mas of the per-CCD mean offsets from SDSS, (ra, dec) rms their noise
    predicts, (ra, dec) correlation of the per-CCD means of two disjoint halves of the stars
    seen in different visits): a pattern common to the visits at CCD scale correlates between
    halves that share no SDSS star, noise does not."""
    xi, eta = _tangent(ra, dec, matches["ra"], matches["dec"])
    d = np.stack([xi, eta], 1) * MAS
    ok = np.isfinite(ra) & np.all(np.abs(d) < clip_mas, axis=1)
    half = (np.asarray(matches["ref_id"], np.int64) * 2654435761 % 1000) < 500
    vis, ccd = np.asarray(matches["visit"]), np.asarray(matches["ccd"])
    visits = np.unique(vis)

    def means(sel):
        o = np.full((104, 2), np.nan)
        e = np.full(104, np.nan)
        for c in range(104):
            q = sel & (ccd == c)
            if q.sum() > 10:
                o[c] = d[q].mean(0)
                e[c] = np.mean(d[q].std(0)) / np.sqrt(q.sum())
        return o, e
    rms, noise, corr = [], [], []
    for k, va in enumerate(visits):
        o, e = means(ok & (vis == va))
        rms.append(np.sqrt(np.nanmean(o ** 2, axis=0)))
        noise.append(np.sqrt(np.nanmean(e ** 2)))
        for vb in visits[k + 1:]:
            a, _ = means(ok & (vis == va) & half)
            b, _ = means(ok & (vis == vb) & ~half)
            g = np.all(np.isfinite(a) & np.isfinite(b), axis=1)
            corr.append([np.corrcoef(a[g, i], b[g, i])[0, 1] for i in range(2)])
    return (tuple(np.mean(rms, axis=0)), float(np.mean(noise)),
            tuple(np.mean(corr, axis=0)) if corr else (np.nan, np.nan))


def repeatability(matches, ra, dec):
    """(rms_ra, rms_dec, sigma_ra, sigma_dec) mas and the fraction of stars rejected, over the
    stars detected in every visit (README measure 2)."""
    visits = np.unique(matches["visit"])
    nv = len(visits)
    ok = np.isfinite(ra)
    ids, inv, cnt = np.unique(matches["ref_id"][ok], return_inverse=True, return_counts=True)
    full = cnt[inv] == nv
    rr, dd, sid = ra[ok][full], dec[ok][full], inv[full]
    order = np.argsort(sid, kind="stable")
    rr, dd, sid = rr[order], dd[order], sid[order]
    ns = len(rr) // nv
    rr, dd = rr.reshape(ns, nv), dd.reshape(ns, nv)
    ra0, dec0 = np.mean(rr, axis=1), np.mean(dd, axis=1)
    xi, eta = _tangent(rr, dd, ra0[:, None], dec0[:, None])
    p = np.stack([xi, eta]) * MAS                          # (2, star, visit)
    sig = []
    for a in range(2):
        diffs = np.concatenate([p[a][:, i] - p[a][:, j] for i in range(nv)
                                for j in range(i + 1, nv)])
        sig.append(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / np.sqrt(2))
    med = np.median(p, axis=2)
    bad = np.any(np.abs(p - med[:, :, None]) > 5 * np.array(sig)[:, None, None], axis=(0, 2))
    q = p[:, ~bad]
    r = (q - q.mean(axis=2, keepdims=True)) * np.sqrt(nv / (nv - 1))
    rms = np.sqrt(np.mean(r ** 2, axis=(1, 2)))
    rob = [1.4826 * np.median(np.abs(r[a] - np.median(r[a]))) for a in range(2)]
    return float(rms[0]), float(rms[1]), float(rob[0]), float(rob[1]), float(bad.mean())


def pair_floor(matches, ra, dec):
    """{(visit_a, visit_b): (sigma_ra, sigma_dec, rms_ra, rms_dec, n)} mas per detection from
    the position differences of the stars seen in both visits (robust sigma = 1.4826 MAD /
    sqrt 2; rms after a 5-sigma clip, / sqrt 2): the data's floor, from the pair the least
    apart in refraction (star-specific DCR grows with it: larger along RA in the pairs with
    the late visit)."""
    visits = np.unique(matches["visit"])
    pos = {}
    for v in visits:
        k = (matches["visit"] == v) & np.isfinite(ra)
        pos[int(v)] = {int(r): (a, b) for r, a, b in zip(matches["ref_id"][k], ra[k], dec[k])}
    out = {}
    for i, va in enumerate(visits):
        for vb in visits[i + 1:]:
            a, b = pos[int(va)], pos[int(vb)]
            common = sorted(set(a) & set(b))
            if len(common) < 10:
                continue
            A, B = np.array([a[s] for s in common]), np.array([b[s] for s in common])
            d = np.stack(_tangent(A[:, 0], A[:, 1], B[:, 0], B[:, 1])) * MAS
            rob = np.array([1.4826 * np.median(np.abs(x - np.median(x))) for x in d])
            keep = np.all(np.abs(d - np.median(d, axis=1, keepdims=True)) < 5 * rob[:, None],
                          axis=0)
            q = d[:, keep]
            rms = np.sqrt(np.mean((q - q.mean(axis=1, keepdims=True)) ** 2, axis=1))
            r2 = np.sqrt(2.0)
            out[(int(va), int(vb))] = (float(rob[0] / r2), float(rob[1] / r2),
                                       float(rms[0] / r2), float(rms[1] / r2), len(common))
    return out


def edge_drift(matches, ra, dec, edges=(0, 6000, 10000, 14000, 20000)):
    """[(v_lo, v_hi, mean dRA cos Dec, mean dDec, n)] mas of solution - SDSS in bands of
    focal-plane |v| (15-um pixels), the offsets 3-sigma clipped per band."""
    v_fp = _focal_plane(matches)[1]
    ok = np.isfinite(ra)
    xi, eta = _tangent(ra[ok], dec[ok], matches["ra"][ok], matches["dec"][ok])
    d = np.stack([xi, eta], 1) * MAS
    av = np.abs(v_fp[ok])
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (av >= lo) & (av < hi)
        x = d[m]
        for _ in range(3):
            if len(x) < 3:
                break
            mu, sd = x.mean(axis=0), x.std(axis=0)
            x = x[np.all(np.abs(x - mu) < 3 * sd, axis=1)]
        mu = x.mean(axis=0) if len(x) else (np.nan, np.nan)
        out.append((lo, hi, float(mu[0]), float(mu[1]), int(m.sum())))
    return out


def evaluate(root, data, rerun="real"):
    from astropy.table import Table
    matches = Table.read(os.path.join(data, "truth", "matches.fits"))
    with open(os.path.join(data, "truth", "summary.json")) as f:
        summary = json.load(f)
    ra, dec = solution_positions(root, rerun, matches)
    return dict(per_visit=per_visit_residuals(matches, ra, dec, summary),
                repeatability=repeatability(matches, ra, dec),
                edge=edge_drift(matches, ra, dec), summary=summary,
                explains=sdss_explains(matches, ra, dec, summary),
                pattern=ccd_pattern(matches, ra, dec),
                pairs=pair_floor(matches, ra, dec),
                written=int(np.isfinite(ra).sum()), n=len(matches))


def run(data, workdir, config=()):
    """Copy the data to `workdir`, run mosaic.py; returns (seconds, exit code, log)."""
    root = os.path.join(workdir, "repo")
    shutil.copytree(data, root)
    for dirpath, dirnames, filenames in os.walk(root):      # the data folder is read-only
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    visits = "^".join(str(v) for v in json.load(open(os.path.join(data, "truth",
                                                                  "summary.json")))["visits"])
    cmd = [sys.executable, "-m", "mosaicfit.cli", "mosaic", root, "--rerun=real", "--id",
           f"visit={visits}", "ccd=0..103", "tract=0", "--config", "doSolveFlux=False",
           *config]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    return time.time() - t, p.returncode, p.stdout + p.stderr, root


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT)
    ap.add_argument("--keep", help="work in DIR (kept) instead of a temporary folder")
    ap.add_argument("config", nargs="*", help="key=value for mosaic.py --config")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.data):
        sys.exit(f"{a.data}: no real HSC sample here (see ../shared/data/real-hsc/README.md)")
    work = a.keep or tempfile.mkdtemp(prefix="mf-real-")
    if a.keep:
        shutil.rmtree(os.path.join(work, "repo"), ignore_errors=True)
        os.makedirs(work, exist_ok=True)
    try:
        dt, rc, log, root = run(a.data, work, a.config)
        with open(os.path.join(work, "mosaic.log"), "w") as f:
            f.write(log)
        if rc != 0:
            print(log[-3000:])
            sys.exit(f"mosaic.py exited {rc}")
        res = evaluate(root, a.data)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    st = res["summary"]["solvetansip"]
    print(f"real HSC sample: mosaic.py {dt:.1f} s, {res['written']} of {res['n']} matches on "
          f"written CCDs; config: {' '.join(a.config) or 'default'}; load "
          f"{os.getloadavg()[0]:.2f}")
    print("per-visit residuals against SDSS (px, 2.5-sigma pass), ours vs solvetansip:")
    for v, (x, y, k, n) in sorted(res["per_visit"].items()):
        s = st[str(v)]
        print(f"  {v}: {x:.4f} / {y:.4f}  vs  {s['RMSSIPX']:.4f} / {s['RMSSIPY']:.4f}   "
              f"({k} of {n} kept; {'better' if x <= s['RMSSIPX'] and y <= s['RMSSIPY'] else 'WORSE'})")
    print("  after the best correction SDSS asks for (px; measure 1 with an order-9 focal-plane "
          "polynomial fitted to the residuals / and an offset per CCD and visit as well):")
    for v, ((px, py), (cx, cy)) in sorted(res["explains"].items()):
        print(f"  {v}: {px:.4f} / {py:.4f}   {cx:.4f} / {cy:.4f}")
    (pr, pd), pn, (cr, cd) = res["pattern"]
    print(f"  per-CCD mean offsets from SDSS: {pr:.1f} / {pd:.1f} mas rms (noise {pn:.1f}); "
          f"disjoint star halves in different visits correlate {cr:.2f} / {cd:.2f}")
    rx, ry, sx, sy, fr = res["repeatability"]
    print(f"repeatability (stars in all visits): rms {rx:.2f} / {ry:.2f} mas, robust sigma "
          f"{sx:.2f} / {sy:.2f} mas, {100 * fr:.1f}% of stars rejected")
    pairs = res["pairs"]
    for (va, vb), (pa, pd, qa, qd, n) in sorted(pairs.items()):
        print(f"  pair {va}-{vb}: robust sigma {pa:.2f} / {pd:.2f}, rms {qa:.2f} / {qd:.2f} mas "
              f"per detection ({n} stars)")
    if pairs:
        best = min(pairs, key=lambda k: pairs[k][0] + pairs[k][1])
        pa, pd, qa, qd, _ = pairs[best]
        print(f"  against the floor (pair {best[0]}-{best[1]}): robust sigma {sx / pa:.2f} / "
              f"{sy / pd:.2f} x, rms {rx / qa:.2f} / {ry / qd:.2f} x")
    print("mean offset from SDSS by focal-plane |v| (mas, RA cos Dec / Dec):")
    for lo, hi, dx, dy, n in res["edge"]:
        print(f"  {lo:5d}-{hi:5d} px: {dx:+7.1f} / {dy:+7.1f}  ({n} matches)")


if __name__ == "__main__":
    main()
