"""Command-line tools: ``mosaicfit SUBCOMMAND ...``.

Errors in the user's input are reported in one line (``mosaicfit CMD: error: ...``) with a
non-zero exit status; ``--debug`` shows the Python traceback instead.
"""
import argparse
import logging
import os
import sys
import time

import numpy as np

from . import MosaicError, __version__

log = logging.getLogger("mosaicfit")


# ------------------------------------------------------------------------------------------
# simulate
# ------------------------------------------------------------------------------------------
def _ccd_list(text):
    from .dataid import parse_id
    return tuple(sorted({d["ccd"] for d in parse_id([f"ccd={text}"])}))


def add_simulate(sub):
    p = sub.add_parser("simulate", help="write a simulated HSC data repository with its truth",
                       description="Simulate one field observed by Hyper Suprime-Cam and write "
                       "it as an hscPipe data repository (registry, CORR, SRC, reference "
                       "catalogue) with the truth under ROOT/truth/.")
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--rerun", default="sim", help="rerun to write CORR/SRC into (default: sim)")
    p.add_argument("--visits", type=int, default=10, help="number of visits (default: 10)")
    p.add_argument("--ccds", type=_ccd_list, default=tuple(range(104)), metavar="IDS",
                   help="CCDs in --id syntax, e.g. 0..103 or 0..8^10..103 (default: 0..103)")
    p.add_argument("--filter", default="HSC-I", help="HSC filter name (default: HSC-I)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--ra", type=float, default=150.1, help="field centre RA, deg (default: COSMOS)")
    p.add_argument("--dec", type=float, default=2.2, help="field centre Dec, deg")
    p.add_argument("--images", action="store_true",
                   help="also write CORR pixels (85 MB per CCD: use with a few CCDs)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="writer threads (default: 2)")
    p.set_defaults(func=run_simulate)


def run_simulate(args):
    from .simulate import FILTER_BAND, simulate
    if args.filter not in FILTER_BAND:
        raise MosaicError(f"unknown HSC filter {args.filter!r}; known: {', '.join(FILTER_BAND)}")
    if args.visits < 1:
        raise MosaicError(f"--visits must be at least 1, not {args.visits}")
    sim = simulate(args.root, rerun=args.rerun, jobs=args.jobs, visits=args.visits,
                   ccds=args.ccds, filter=args.filter, seed=args.seed, ra=args.ra, dec=args.dec,
                   images=args.images)
    n_src = len(sim.catalogs) - sum(1 for k, w in sim.missing.items() if w in ("src",) and k in sim.catalogs)
    print(f"simulated {len(sim.visits)} visits x {len(args.ccds)} CCDs "
          f"(visits {sim.visits[0]}..{sim.visits[-1]}:{sim.config.visit_step}, {args.filter}) "
          f"in {sim.timing['simulate']:.1f} s, wrote in {sim.timing['write']:.1f} s to "
          f"{os.path.abspath(args.root)}")
    print(f"  {len(sim.detections)} detections in {n_src} SRC catalogs; "
          f"{int(np.sum(sim.stars['is_star']))} stars, {int(np.sum(~sim.stars['is_star']))} galaxies; "
          f"{len(sim.refcat)} reference stars")
    gone = sorted(sim.missing)
    if gone:
        print(f"  missing on purpose (dead or failed CCDs): {len(gone)} (visit, ccd) inputs")
    return 0


# ------------------------------------------------------------------------------------------
# make-skymap
# ------------------------------------------------------------------------------------------
def add_make_skymap(sub):
    from .dataid import add_id_argument
    p = sub.add_parser("make-skymap", help="make the sky map (tracts) of a rerun",
                       description="Make a discrete sky map with one tract (0) covering the "
                       "given visits (hscPipe's makeDiscreteSkyMap.py), or the HSC-SSP rings "
                       "sky map (--rings), and store it in ROOT/rerun/RERUN/deepCoadd/skyMap.json.")
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--rerun", required=True)
    add_id_argument(p)
    p.add_argument("--rings", action="store_true",
                   help="the HSC-SSP rings sky map (120 rings, TAN, 1' overlap, 0.168\"/px)")
    p.add_argument("--border", type=float, default=None, metavar="DEG",
                   help="extra border of the discrete tract, degrees")
    p.add_argument("--clobber", action="store_true", help="replace an existing sky map")
    p.set_defaults(func=run_make_skymap)


def ccd_sky_corners(repo, refs, camera):
    """Sky corners (ra, dec) in degrees of each CCD from its CORR single-frame WCS.
    Returns (corners dict {(visit, ccd): (ra[4], dec[4])}, list of refs without a CORR)."""
    from .exposure import read_corr
    from .sip import sip_pixel_to_sky
    corners, missing = {}, []
    for ref in refs:
        path = repo.find("calexp", **ref.data_id)
        if path is None:
            missing.append(ref)
            continue
        exp = read_corr(path, metadata_only=True)
        x, y = camera.ccd_corners(ref.ccd)
        corners[(ref.visit, ref.ccd)] = sip_pixel_to_sky(exp.wcs_header, x, y)
    return corners, missing


def resolve_refs(repo, id_args):
    """The registry's (visit, ccd) refs for the --id arguments; ids absent from the registry
    are reported on stderr (one line), not dropped silently."""
    from .dataid import parse_ids, resolve
    refs, missing = resolve(parse_ids(id_args), repo.registry)
    if missing:
        shown = ", ".join(f"visit={v}" + ("" if c is None else f" ccd={c}") for v, c in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        print(f"not in the registry {repo.registry_path}: {shown}{more}", file=sys.stderr)
    return refs


def run_make_skymap(args):
    from .camera import hsc
    from .layout import Repository
    from .skymap import RingsSkyMap, make_discrete_skymap, save_skymap
    repo = Repository(args.root, args.rerun)
    out = repo.path("skymap")
    if os.path.exists(out) and not args.clobber:
        raise MosaicError(f"{out}: a sky map exists already (use --clobber to replace it)")
    if args.rings:
        skymap = RingsSkyMap()
        what = f"rings sky map ({len(skymap)} tracts)"
    else:
        refs = resolve_refs(repo, args.id)
        corners, no_corr = ccd_sky_corners(repo, refs, hsc())
        if no_corr:
            print(f"Not opening files: no CORR for {len(no_corr)} of {len(refs)} CCDs "
                  f"(e.g. {no_corr[0]})", file=sys.stderr)
        if not corners:
            raise MosaicError("no CORR files found for the given --id: cannot place a tract")
        ra = np.concatenate([c[0] for c in corners.values()])
        dec = np.concatenate([c[1] for c in corners.values()])
        kw = {} if args.border is None else {"border_deg": args.border}
        skymap = make_discrete_skymap(ra, dec, **kw)
        t = skymap[0]
        what = (f"discrete sky map: tract 0 at RA {t.ctr_ra:.4f}, Dec {t.ctr_dec:.4f} deg "
                f"covering {len(corners)} CCDs")
    save_skymap(skymap, out)
    print(f"wrote {what} to {out}")
    return 0


# ------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------
def add_demo(sub):
    p = sub.add_parser("demo", help="simulate a tract and run what mosaicfit can do on it",
                       description="Simulate an HSC-SSP-like 10-visit tract, make its sky map "
                       "and report the quality of the single-frame inputs against the truth.")
    p.add_argument("--dir", default="mosaicfit-demo", help="where to write (default: ./mosaicfit-demo)")
    p.add_argument("--visits", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=run_demo)


def run_demo(args):
    from .dataid import parse_ids, resolve
    from .layout import Repository
    from .simulate import evaluate_inputs
    root = args.dir
    if os.path.exists(os.path.join(root, "registry.sqlite3")):
        raise MosaicError(f"{root}: holds a data repository already; remove it or use --dir")
    t0 = time.time()
    print(f"[1/3] mosaicfit simulate {root} --visits {args.visits} --seed {args.seed}")
    ns = argparse.Namespace(root=root, rerun="sim", jobs=2, visits=args.visits,
                            ccds=tuple(range(104)), filter="HSC-I", seed=args.seed,
                            ra=150.1, dec=2.2, images=False)
    run_simulate(ns)
    repo = Repository(root, "sim")
    visits = repo.registry.visits()
    vid = f"visit={visits[0]}..{visits[-1]}:2" if len(visits) > 1 else f"visit={visits[0]}"
    print(f"[2/3] mosaicfit make-skymap {root} --rerun=sim --id {vid} ccd=0..103")
    run_make_skymap(argparse.Namespace(root=root, rerun="sim", id=[[vid, "ccd=0..103"]],
                                       rings=False, border=None, clobber=False))
    print("[3/3] quality of the single-frame inputs against the simulation truth")
    refs, _ = resolve(parse_ids([[vid, "ccd=0..103"]]), repo.registry)
    q = evaluate_inputs(root, "sim", refs)
    print(f"  single-frame WCS (CORR) error: {q['wcs_rms_mas'][0]:.0f} / {q['wcs_rms_mas'][1]:.0f} mas "
          f"rms in RA / Dec over {q['n_stars']} clean star detections")
    print(f"  single-frame FLUXMAG0 error: {q['zp_rms_mmag']:.1f} mmag rms "
          f"(truth includes per-position terms up to {q['zp_range_mmag']:.0f} mmag)")
    print(f"done in {time.time() - t0:.0f} s. The joint solution of this tract is the next step:")
    print(f"  mosaic.py {root} --rerun=sim --id {vid} ccd=0..103 tract=0")
    print("  (mosaic.py, calibrateExposure.py and calibrateCatalog.py are not part of this "
          f"version {__version__} yet)")
    return 0


# ------------------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(prog="mosaicfit", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"mosaicfit {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_simulate(sub)
    add_make_skymap(sub)
    add_demo(sub)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except MosaicError as e:
        if args.debug:
            raise
        print(f"mosaicfit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mosaicfit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
