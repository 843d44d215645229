"""How well can a turbulent field be recovered at all? The fit against an oracle (issue 13).

    python bench/turbulence_floor.py [--visits 10] [--rms 8] [--seed 1] [--ccds central|all|A..B] [--radius RT,RE] [key=value ...]

Simulates a tract with the ``turbulence`` effect at a fixed rms per axis (`--rms` mas, the
issue's 8 mas) and measures, per visit, on the clean star detections (the points where
bench/accuracy_sim.py and the tests evaluate the written WCS):

1. mosaicfit: the written TAN-SIP products (fitTurbulence on, and off) against the truth
   "reference-colour" (turbulence counts as an error of the WCS), rms per axis;
2. the oracle: the Bayes-optimal estimate of every visit's field at the same points from the
   same detections, all visits jointly, given what the fit must estimate besides the stars:
   the exact covariance of the simulator's field (its E/B von Karman spectrum, the visit's
   outer scale and rms, cross-covariance of the two axes included) and each detection's true
   centroid error. The stars' positions are unknown, as in the fit (a catalogue star's tied
   to the catalogue within its error). It is the posterior mean of a Gaussian process with
   that covariance, and its error is a lower bound for any method that does not know the
   stars' positions beforehand. Each detection's own measurement is used, as in the fit.

What separates the two is the price of estimating the kernel and the errors from the same
data and of the fit's approximations; what separates the oracle from 0 is the star density
and the centroid noise, which no method can beat.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))


def field_covariance(outer_arcmin, b_fraction, step, n):
    """(Cxx, Cyy, Cxy) n x n periodic covariance grids (lag (j, i) = (dy, dx) steps, index 0
    = no lag) of the simulator's von Karman displacement field (sim.effects.von_karman_field),
    normalised to a variance of 1 per axis at lag 0."""
    from mosaicfit.sim.effects import von_karman_spectrum
    P, ux, uy = von_karman_spectrum(outer_arcmin, step, n)
    e, b = 1.0 - b_fraction, b_fraction
    # dx ~ ux E - uy B, dy ~ uy E + ux B: their spectra and cross-spectrum
    sxx, syy, sxy = (e * ux ** 2 + b * uy ** 2) * P, (e * uy ** 2 + b * ux ** 2) * P, \
        (e - b) * ux * uy * P
    cxx, cyy, cxy = (np.fft.ifft2(s).real for s in (sxx, syy, sxy))
    norm = 0.5 * (cxx[0, 0] + cyy[0, 0])
    return cxx / norm, cyy / norm, cxy / norm


def lag_lookup(grid, step, du, dv):
    """Bilinear interpolation of a periodic lag grid at lags (du, dv) arcmin."""
    n = grid.shape[0]
    gu, gv = du / step, dv / step
    i0, j0 = np.floor(gu).astype(int), np.floor(gv).astype(int)
    a, c = gu - i0, gv - j0
    i0, j0 = i0 % n, j0 % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    return ((1 - a) * (1 - c) * grid[j0, i0] + a * (1 - c) * grid[j0, i1]
            + (1 - a) * c * grid[j1, i0] + a * c * grid[j1, i1])


def _block(cov, step, ua, va, ub, vb):
    """(2 na, 2 nb) covariance of the field's two axes between points a and b (arcmin)."""
    cxx, cyy, cxy = cov
    du, dv = ua[:, None] - ub[None, :], va[:, None] - vb[None, :]
    return np.block([[lag_lookup(cxx, step, du, dv), lag_lookup(cxy, step, du, dv)],
                     [lag_lookup(cxy, step, du, dv), lag_lookup(cyy, step, du, dv)]])


def oracle(visits, step, n, flat_mas=1000.0):
    """The Bayes-optimal fields of all visits jointly, the stars' positions unknown.

    `visits`: per visit a dict with the training detections (u, v arcmin; d (k, 2) the true
    field, mas; sig (k,) centroid errors, mas; star (k,) ids) and the evaluation points (eu,
    ev, ed). Each star's position is a free parameter (a Gaussian prior of `flat_mas`: flat
    for the data) or, for stars in `ref` {star: sigma mas}, tied to the catalogue within its
    error; the data are d + noise + the position's error. Returns per visit the estimate at
    the evaluation points (m, 2), the posterior mean: K_e C^-1 r, C = K + N + A S A^T.
    """
    from scipy.linalg import cho_factor, cho_solve
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    sizes = [len(v["u"]) for v in visits]
    N = sum(sizes)
    off = np.r_[0, np.cumsum(sizes)]
    C = np.zeros((2 * N, 2 * N))
    covs = []
    for k, v in enumerate(visits):
        cov = field_covariance(v["outer"], v["b_fraction"], step, n)
        covs.append(cov)
        Kv = v["rms"] ** 2 * _block(cov, step, v["u"], v["v"], v["u"], v["v"])
        a, b, m = off[k], off[k + 1], sizes[k]
        for i in range(2):
            for j in range(2):
                C[i * N + a:i * N + b, j * N + a:j * N + b] = Kv[i * m:(i + 1) * m,
                                                                j * m:(j + 1) * m]
    star = np.concatenate([v["star"] for v in visits])
    sig = np.concatenate([v["sig"] for v in visits])
    d = np.concatenate([v["d"] for v in visits])
    ref = visits[0]["ref"]
    # the stars' positions: the same unknown in every detection of a star
    s_var = np.array([ref.get(int(s), flat_mas) ** 2 for s in star])
    same = star[:, None] == star[None, :]
    S = np.where(same, s_var[:, None], 0.0)
    for i in range(2):
        C[i * N:(i + 1) * N, i * N:(i + 1) * N] += S
    del S, same
    C[np.diag_indices(2 * N)] += np.r_[sig, sig] ** 2
    # the data relative to the truth: the field, the noise, the catalogue's error of the
    # reference stars' positions (0 for the others: the prior's centre, which a flat prior
    # does not see)
    uniq = np.unique(star)
    e_ref = {int(s): rng.normal(0, ref[int(s)], 2) for s in uniq if int(s) in ref}
    pos_err = np.array([e_ref.get(int(s), (0.0, 0.0)) for s in star])
    r = d + rng.normal(size=d.shape) * sig[:, None] + pos_err
    rhs = np.r_[r[:, 0], r[:, 1]]
    # (one BLAS thread: OpenBLAS's threaded Cholesky crashed on these ~20000^2 systems)
    with threadpool_limits(limits=1, user_api="blas"):
        alpha = cho_solve(cho_factor(C, lower=True, overwrite_a=True), rhs)
    out = []
    for k, v in enumerate(visits):
        a, b = off[k], off[k + 1]
        Ke = v["rms"] ** 2 * _block(covs[k], step, v["eu"], v["ev"], v["u"], v["v"])
        est = Ke @ np.r_[alpha[a:b], alpha[N + a:N + b]]
        me = len(v["eu"])
        out.append(np.stack([est[:me], est[me:]], 1))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--visits", type=int, default=10)
    ap.add_argument("--rms", type=float, default=8.0, help="mas per axis of every visit's field")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ccds", default="central", help="all, central (30..69) or A..B "
                    "(the oracle's dense system grows as (detections)^2: ~10^4 is a minute)")
    ap.add_argument("--radius", type=lambda t: tuple(float(x) for x in t.split(",")),
                    help="RT,RE arcmin: the oracle sees the detections within RT of the "
                    "visits' mean centre, and both are evaluated within RE (< RT: away from "
                    "the edge of the oracle's data, on the whole focal plane's fit)")
    ap.add_argument("--max-oracle", type=int, default=12000,
                    help="largest number of detections for the oracle's dense system")
    ap.add_argument("config", nargs="*", help="key=value configuration of the fit")
    args = ap.parse_args(argv)

    from mosaicfit.config import MosaicConfig
    from mosaicfit.fit.selection import ExposureData
    from mosaicfit.fit.solve import solve
    from mosaicfit.io.src import standardize
    from mosaicfit.model.camera import hsc
    from mosaicfit.model.sky import sky_to_tangent
    from mosaicfit.sim import Truth, make_tract

    if args.ccds in ("all", "central"):
        ccds = tuple(range(104)) if args.ccds == "all" else tuple(range(30, 70))
    else:
        lo, hi = (int(x) for x in args.ccds.split(".."))
        ccds = tuple(range(lo, hi + 1))
    t0 = time.time()
    sim = make_tract(visits=args.visits, ccds=ccds, seed=args.seed, effects=("turbulence",),
                     turbulence_rms_mas=(args.rms, args.rms))
    exps = [ExposureData(v, c, standardize(cat), sim.wcs_headers[(v, c)],
                         sim.fluxmag0[(v, c)][0], sim.truth.visits[v]["mjd"], sim.config.filter)
            for (v, c), cat in sorted(sim.catalogs.items()) if not sim.missing.get((v, c))]
    print(f"simulated {args.visits} visits x {len(ccds)} CCDs, turbulence {args.rms:g} mas "
          f"per axis, seed {args.seed} ({time.time() - t0:.0f} s)", flush=True)
    truth = Truth.from_tract(sim)
    sols = {}
    for name, extra in (("fit", []), ("no field", ["fitTurbulence=False"])):
        t1 = time.time()
        cfg = MosaicConfig().update(["doSolveFlux=False"] + list(args.config) + extra)
        sols[name] = solve(exps, hsc(), cfg, sim.refcat, tangent_point=(150.1, 2.2))
        print(f"  mosaicfit ({name}): {time.time() - t1:.0f} s", flush=True)

    tm = sim.truth
    turb = tm.effects["turbulence"]
    step, n = turb["step_arcmin"], turb["grid"]
    pixscale_mas = 168.0                  # HSC's 0.168" pixels; the simulated errors are in px
    # the reference stars' position errors at the visits' epoch (catalogue epoch 2016.0)
    ref = sim.refcat
    dt = abs(np.mean([tm.visits[v]["mjd"] for v in tm.visits]) - 57388.5) / 365.25
    rad_mas = 180.0 / np.pi * 3.6e6
    ref_sig = {int(i): float(np.hypot(e * rad_mas, pe * rad_mas * dt))
               for i, e, pe in zip(ref["id"], ref["coord_raErr"], ref["pm_raErr"])}
    per_visit, errs = [], {}
    centre = (float(np.mean([tm.visits[v]["ra"] for v in tm.visits])),
              float(np.mean([tm.visits[v]["dec"] for v in tm.visits])))
    for v in sorted(tm.visits):
        vp = tm.visits[v]
        tv = vp["turbulence"]
        parts = []
        errs[v] = {k: [] for k in sols}
        for c in ccds:
            cs = truth.clean_stars(v, c)
            if cs is None or not len(cs):
                continue
            # each detection's centroid error: the catalogue's (the true one without the
            # centroid-errors effect)
            cat = standardize(sim.catalogs[(v, c)])
            order = np.argsort(cat["id"])
            k = order[np.searchsorted(cat["id"], np.asarray(cs["id"]), sorter=order)]
            cs["sig_mas"] = cat["x_err"][k] * pixscale_mas
            parts.append(cs)
            for name, sol in sols.items():
                e = np.full((len(cs), 2), np.nan)        # (no product: not counted)
                if sol.has_astrometry(v) and (v, c) not in sol.frozen:
                    a, b = truth.astrometric_error(v, c, sol.sip_model(v, c).pixel_to_sky,
                                                   "reference-colour")
                    e = np.stack([a, b], 1)
                errs[v][name].append(e)
        col = lambda name: np.concatenate([np.asarray(p[name]) for p in parts])
        xi, eta = sky_to_tangent(col("ra"), col("dec"), vp["ra"], vp["dec"])
        cx, cy = sky_to_tangent(col("ra"), col("dec"), *centre)
        per_visit.append(dict(visit=v, u=np.degrees(xi) * 60.0, v=np.degrees(eta) * 60.0,
                              d=np.stack([col("turb_dxi"), col("turb_deta")], 1),
                              sig=col("sig_mas"), star=col("truth_id").astype(np.int64),
                              rms=tv["rms_mas"], outer=tv["outer_scale_arcmin"],
                              b_fraction=tv["b_fraction"], ref=ref_sig,
                              r=np.degrees(np.hypot(cx, cy)) * 60.0,
                              errs={k: np.concatenate(x) for k, x in errs[v].items()}))
    # the oracle's data: the detections of stars seen twice or more, or in the catalogue
    # (a star seen once and not in it says nothing about the field: its position is free)
    allstars = np.concatenate([p["star"] for p in per_visit])
    ids, cnt = np.unique(allstars, return_counts=True)
    useful = set(ids[cnt >= 2].tolist()) | (set(ids.tolist()) & set(ref_sig))
    r_train, r_eval = args.radius if args.radius else (np.inf, np.inf)
    for p in per_visit:
        ev = p["r"] < r_eval
        p["eu"], p["ev"], p["ed"] = p["u"][ev], p["v"][ev], p["d"][ev]
        p["errs"] = {k: e[ev] for k, e in p["errs"].items()}
        keep = np.array([int(s) in useful for s in p["star"]]) & (p["r"] < r_train)
        for key in ("u", "v", "d", "sig", "star"):
            p[key] = p[key][keep]
    t1 = time.time()
    n_train = sum(len(p["u"]) for p in per_visit)
    if n_train <= args.max_oracle:
        ests = oracle(per_visit, step, n)
        print(f"  oracle: {n_train} detections of {len(useful)} stars "
              f"({sum(int(s) in ref_sig for s in useful)} in the catalogue), "
              f"{time.time() - t1:.0f} s", flush=True)
    else:
        ests = [np.full_like(p["ed"], np.nan) for p in per_visit]
        print(f"  oracle: not computed ({n_train} detections > --max-oracle {args.max_oracle}: "
              f"its dense system would take {(2 * n_train) ** 2 * 8 / 2 ** 30:.0f} GB)")
    rows = []
    print(f"{'visit':>7} {'stars':>6} {'outer':>6} {'field':>11} {'oracle':>11} "
          f"{'mosaicfit':>11} {'no field':>11}   (rms RA / Dec mas on the clean stars)")
    for p, est in zip(per_visit, ests):
        row = dict(visit=p["visit"], n=len(p["eu"]), outer=p["outer"],
                   field=np.sqrt(np.mean(p["ed"] ** 2, axis=0)),
                   oracle=np.sqrt(np.mean((est - p["ed"]) ** 2, axis=0)))
        for name in sols:
            row[name] = np.sqrt(np.nanmean(p["errs"][name] ** 2, axis=0))
        rows.append(row)
        print(f"{row['visit']:>7} {row['n']:>6} {row['outer']:>5.1f}' "
              + " ".join(f"{row[k][0]:>5.2f}/{row[k][1]:<5.2f}"
                         for k in ("field", "oracle", "fit", "no field")), flush=True)
    tot = {k: np.sqrt(np.mean([r[k] ** 2 for r in rows], axis=0))
           for k in ("field", "oracle", "fit", "no field")}
    print(f"{'all':>7} {sum(r['n'] for r in rows):>6} {'':>6} "
          + " ".join(f"{tot[k][0]:>5.2f}/{tot[k][1]:<5.2f}"
                     for k in ("field", "oracle", "fit", "no field")))
    print(f"mosaicfit / oracle: {tot['fit'][0] / tot['oracle'][0]:.2f} / "
          f"{tot['fit'][1] / tot['oracle'][1]:.2f}; oracle / field: "
          f"{tot['oracle'][0] / tot['field'][0]:.2f} / {tot['oracle'][1] / tot['field'][1]:.2f}"
          f"  ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
