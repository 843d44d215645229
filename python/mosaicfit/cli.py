"""Command-line tools: ``mosaicfit SUBCOMMAND ...``.

Errors in the user's input are reported in one line (``mosaicfit CMD: error: ...``) with a
non-zero exit status; ``--debug`` shows the Python traceback instead.
"""
import argparse
import logging
import os
import sys
import time

# BLAS threads buy nothing for mosaicfit's small dense products (the big solve is Eigen's with
# OpenMP) and stall badly when the cores are shared: one thread unless the user says otherwise.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY"):
    os.environ.setdefault(_var, "1" if _var == "OPENBLAS_NUM_THREADS" else "PASSIVE")
del _var

import numpy as np  # noqa: E402

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
    p.add_argument("--schema", choices=("lsst", "hsc3"), default="lsst",
                   help="SRC column names: lsst (base_*, default) or hsc3 (hscPipe 3.x dotted "
                   "names, afw table version 0)")
    p.add_argument("--match-files", type=_match_file_list, default=(), metavar="KINDS",
                   help="also write reference match files: comma-separated srcMatch "
                   "(SRCMATCH, normalized), srcMatchFull (SRCMATCHFULL), icMatch (MATCH, "
                   "normalized, with ICSRC), or all")
    p.add_argument("-j", "--jobs", type=int, default=2, help="writer threads (default: 2)")
    p.set_defaults(func=run_simulate)


def _match_file_list(text):
    from .simulate import MATCH_FILES
    kinds = MATCH_FILES if text.strip() == "all" else \
        tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in MATCH_FILES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown match file kind {bad[0]!r} (known: "
                                         f"{', '.join(MATCH_FILES)}, all)")
    return tuple(kinds)


def run_simulate(args):
    from .simulate import FILTER_BAND, simulate
    if args.filter not in FILTER_BAND:
        raise MosaicError(f"unknown HSC filter {args.filter!r}; known: {', '.join(FILTER_BAND)}")
    if args.visits < 1:
        raise MosaicError(f"--visits must be at least 1, not {args.visits}")
    sim = simulate(args.root, rerun=args.rerun, jobs=args.jobs, visits=args.visits,
                   ccds=args.ccds, filter=args.filter, seed=args.seed, ra=args.ra, dec=args.dec,
                   images=args.images, schema=getattr(args, "schema", "lsst"),
                   match_files=tuple(getattr(args, "match_files", ()) or ()))
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
# mosaic
# ------------------------------------------------------------------------------------------
def add_mosaic(sub):
    from .dataid import add_id_argument
    p = sub.add_parser("mosaic", help="solve the tract(s): write wcs-*/fcr-* (hscPipe's mosaic.py)",
                       description="Joint astrometric and photometric solution of every CCD of "
                       "every visit in a tract; writes wcs-VVVVVVV-CCC.fits and "
                       "fcr-VVVVVVV-CCC.fits under POINTING/FILTER/corr/TTTT/ of the rerun.")
    p.add_argument("root", metavar="ROOT", help="data repository")
    p.add_argument("--calib", metavar="CALIB", help="calibration repository (accepted, unused)")
    p.add_argument("--rerun", required=True, metavar="[INPUT:]OUTPUT")
    add_id_argument(p)
    p.add_argument("--config", "-c", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="configuration overrides (meas_mosaic names), e.g. fittingOrder=9")
    p.add_argument("--clobber-config", action="store_true",
                   help="run even if the rerun holds a different mosaic configuration")
    p.add_argument("-j", "--jobs", type=int, default=1, help="processes for reading (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler: read inputs and fit tracts on the cluster")
    p.add_argument("--diagnostics", action="store_true", help="write diagnostic plots and files")
    p.add_argument("--diagDir", metavar="DIR", help="where diagnostics go (default: ROOT/rerun/R/mosaic-diag)")
    p.set_defaults(func=run_mosaic)


def _config_from_args(args, repo, name):
    """The configuration of the run, checked against the one stored with the rerun. Returns
    (config, a function that stores it): called once the run has something to write, so that
    a run stopped by an error leaves the rerun as it was."""
    from .atomic import write_text
    from .config import MosaicConfig
    cfg = MosaicConfig().update(args.config)
    path = os.path.join(repo.rerun_dir, "config", f"{name}.py")
    text = "".join(f"config.{k}={v!r}\n" for k, v in cfg.to_dict().items())
    old = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise MosaicError(f"{path}: cannot read the stored configuration ({e})") from None
        if old != text and not args.clobber_config:
            raise MosaicError(f"{path}: the rerun was made with a different {name} configuration "
                              "(use --clobber-config to override)")

    def store():
        if old != text:
            write_text(text, path)
    return cfg, store


def _sky_circle(corners):
    """(ra, dec, radius) in degrees of a circle around CCD corners {key: (ra[4], dec[4])}."""
    from .matching import radec_to_xyz
    ra = np.concatenate([c[0] for c in corners])
    dec = np.concatenate([c[1] for c in corners])
    cen = radec_to_xyz(ra, dec).mean(0)
    cen /= np.linalg.norm(cen)
    cra, cdec = np.degrees(np.arctan2(cen[1], cen[0])) % 360, np.degrees(np.arcsin(cen[2]))
    rad = np.degrees(np.arccos(np.clip(radec_to_xyz(ra, dec) @ cen, -1, 1))).max() + 0.05
    return cra, cdec, rad


def _match_references(repo, refs, exposures, corners, cfg, rc_path):
    """Reference stars from hscPipe's match files (config matchDataset; by default when the
    repository has no ref_cats): a MatchReferences, or None when ref_cats is used. Missing
    match files are reported in one line, unreadable ones one line each (as errors)."""
    from .matchfile import dataset_present, load_match_references
    ds = cfg.matchDataset
    if ds == "refcat":
        if rc_path is None:
            raise MosaicError(f"matchDataset=refcat but no reference catalogue in "
                              f"{os.path.join(repo.root, 'ref_cats')}")
        return None
    data_ids = {(r.visit, r.ccd): {k: v for k, v in r.data_id.items() if k != "tract"}
                for r in refs}
    keys = [(e.visit, e.ccd) for e in exposures]
    if not ds:
        if rc_path is not None:
            return None
        ds = next((d for d in ("srcMatch", "icMatch")
                   if dataset_present(repo, (data_ids[k] for k in keys), d)), None)
        if ds is None:
            return None
    refcat = None
    if rc_path is not None:          # denormalizes normalized match files
        from .refcat import read_refcat
        refcat = read_refcat(rc_path, *_sky_circle([corners[k] for k in keys]), trim=True)
    t0 = time.time()
    mr = load_match_references(repo, exposures, data_ids, ds, refcat,
                               os.path.basename(rc_path) if rc_path else "", cfg.radXMatch)
    from .dataid import format_visit_ccds
    what = {"srcMatch": "SRCMATCH", "icMatch": "MATCH"}[ds]
    if mr.missing:
        print(f"Not opening files: {len(mr.missing)} of {len(exposures)} CCDs lack {what} "
              f"files (no reference matches from them): "
              f"{format_visit_ccds(k for k, _ in mr.missing)}", file=sys.stderr)
    for (v, c), msg in mr.errors:
        print(f"mosaic: no reference matches from visit={v} ccd={c}: {msg}", file=sys.stderr)
    for note in mr.notes:
        print(f"mosaic: {note}", file=sys.stderr)
    log.info("reference stars from the %s files of %d CCDs: %d stars, %d source associations "
             "(%.1f s)", what, mr.n_files, len(mr.refcat), mr.n_pairs, time.time() - t0)
    if mr.n_pairs == 0 and not cfg.relativeSolution:
        raise MosaicError(f"no reference matches in the {what} files of the {len(exposures)} "
                          "CCDs (use --config relativeSolution=True for a relative solution)")
    # the errors list of the run takes (ref, message) pairs
    by_key = {(r.visit, r.ccd): r for r in refs}
    mr.errors = [(by_key[k], msg) for k, msg in mr.errors]
    return mr


def _tracts_of(repo, refs, exposures_corners):
    """{tract: [refs overlapping it]} from the sky map of the rerun."""
    from .skymap import load_skymap
    path = repo.find("skymap")
    if path is None:
        raise MosaicError(f"no tract= in --id and no sky map in {repo.rerun_dir}: run "
                          "'mosaicfit make-skymap' first or give tract=")
    sm = load_skymap(path)
    out = {}
    for ref in refs:
        c = exposures_corners.get((ref.visit, ref.ccd))
        if c is None:
            continue
        for t in sm.find_tracts_overlapping(*c):
            out.setdefault(int(t), []).append(ref)
    return out, sm


def run_mosaic(args):
    from .layout import Repository
    from .lock import rerun_lock
    repo = Repository(args.root, args.rerun)
    with rerun_lock(repo.root, repo.rerun_dir, "mosaic.py"):
        return _run_mosaic(args)


def _run_mosaic(args):
    from .camera import hsc
    from .inputs import load_exposures, refcat_folder
    from .layout import Repository
    from .refcat import read_refcat
    t_all = time.time()
    logging.getLogger("mosaicfit").setLevel(logging.INFO)   # progress and iterations
    repo = Repository(args.root, args.rerun)
    cfg, store_config = _config_from_args(args, repo, "mosaic")
    camera = hsc()
    refs = resolve_refs(repo, args.id)
    client = _dask_client(args.scheduler)
    t0 = time.time()
    exposures, missing, errors = load_exposures(repo, refs, jobs=args.jobs, client=client)
    t_read = time.time() - t0
    if missing:
        from .dataid import format_visit_ccds
        print(f"Not opening files: {len(missing)} of {len(refs)} CCDs lack SRC or CORR inputs: "
              f"{format_visit_ccds((r.visit, r.ccd) for r, _ in missing)}", file=sys.stderr)
    for ref, msg in errors:
        print(f"mosaic: skipping {ref}: {msg}", file=sys.stderr)
    if not exposures:
        raise MosaicError(f"none of the {len(refs)} CCDs selected by --id has readable inputs")
    by_key = {(e.visit, e.ccd): e for e in exposures}
    from .sip import sip_pixel_to_sky
    corners = {k: sip_pixel_to_sky(e.wcs_header, *camera.ccd_corners(e.ccd)) for k, e in by_key.items()}
    tracts_given = {r.tract for r in refs if r.tract is not None}
    skymap = None
    if tracts_given:
        groups = {t: [r for r in refs if r.tract == t] for t in sorted(tracts_given)}
        path = repo.find("skymap")
        if path is not None:
            from .skymap import load_skymap
            skymap = load_skymap(path)
    else:
        groups, skymap = _tracts_of(repo, refs, corners)
    rc_path = refcat_folder(repo, cfg.refcat)
    matched = _match_references(repo, refs, exposures, corners, cfg, rc_path)
    if matched is not None:
        errors = errors + matched.errors
    elif rc_path is None and not cfg.relativeSolution:
        raise MosaicError(f"no reference catalogue in {os.path.join(repo.root, 'ref_cats')} "
                          "and no SRCMATCH or MATCH files for the selected CCDs (use --config "
                          "relativeSolution=True for a relative solution)")
    jobs = []
    for tract, trefs in sorted(groups.items()):
        tinfo = None
        if skymap is not None:
            try:
                tinfo = skymap[tract]
            except (KeyError, IndexError):
                raise MosaicError(f"tract {tract} is not in the sky map {repo.find('skymap')}") from None
        out_refs = [r for r in trefs if (r.visit, r.ccd) in by_key]
        if tinfo is not None and cfg.requireTractOverlap:
            out_refs = [r for r in out_refs if tinfo.overlaps_polygon(*corners[(r.visit, r.ccd)])]
        if not out_refs:
            raise MosaicError(f"tract {tract} does not overlap any CCD selected by --id")
        visits = {r.visit for r in out_refs}
        fit_exps = [e for e in exposures if e.visit in visits]
        tp = (tinfo.ctr_ra, tinfo.ctr_dec) if tinfo is not None else None
        refcat = None
        rc_name = os.path.basename(rc_path) if rc_path else ""
        if matched is not None:
            refcat, rc_name = matched.refcat, matched.name
        elif rc_path is not None:
            ra = np.concatenate([corners[(e.visit, e.ccd)][0] for e in fit_exps])
            dec = np.concatenate([corners[(e.visit, e.ccd)][1] for e in fit_exps])
            from .matching import radec_to_xyz
            cen = radec_to_xyz(ra, dec).mean(0)
            cen /= np.linalg.norm(cen)
            cra, cdec = np.degrees(np.arctan2(cen[1], cen[0])) % 360, np.degrees(np.arcsin(cen[2]))
            rad = np.degrees(np.arccos(np.clip(radec_to_xyz(ra, dec) @ cen, -1, 1))).max() + 0.05
            refcat = read_refcat(rc_path, cra, cdec, rad, trim=True)
        log.info("tract %d: fitting %d CCDs of %d visits (outputs for %d CCDs)", tract,
                 len(fit_exps), len(visits), len(out_refs))
        ddir = None
        if args.diagnostics or cfg.outputDiag:
            ddir = os.path.join(args.diagDir or cfg.outputDir or
                                os.path.join(repo.rerun_dir, "mosaic-diag"), f"{tract:04d}")
        task = (repo.root, args.rerun, tract, fit_exps, out_refs, cfg, refcat, tp, rc_name, ddir)
        # with a Dask scheduler, one task per tract fit (the inputs were read on the cluster too)
        jobs.append(client.submit(fit_and_write_tract, *task, pure=False) if client is not None
                    else task)
    for job in jobs:
        tract, lines, n = client.gather(job) if client is not None else fit_and_write_tract(*job)
        store_config()
        print("\n".join(lines[:-1]))
        print(lines[-1].replace("time: ", f"time: read {t_read:.1f} s, "))
    log.info("mosaic done in %.1f s", time.time() - t_all)
    return 1 if errors else 0


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def add_report(sub):
    p = sub.add_parser("report", help="rebuild the diagnostics and index.html of a finished run",
                       description="Rebuild the diagnostic plots, hscPipe's diagnostic files and "
                       "index.html of a tract from what 'mosaic.py --diagnostics' saved in "
                       "DIAGDIR/TTTT/ (solution.json, detections.fits, stars.fits).")
    p.add_argument("root", metavar="ROOT", help="data repository")
    p.add_argument("--rerun", required=True, metavar="[INPUT:]OUTPUT")
    p.add_argument("--tract", required=True, type=int, help="tract number")
    p.add_argument("--diagDir", metavar="DIR",
                   help="diagnostics folder given to mosaic.py (default: ROOT/rerun/R/mosaic-diag)")
    p.set_defaults(func=run_report)


def run_report(args):
    from . import diagnostics
    from .layout import Repository
    t0 = time.time()
    repo = Repository(args.root, args.rerun)
    ddir = args.diagDir or os.path.join(repo.rerun_dir, "mosaic-diag")
    outdir = os.path.join(ddir, f"{args.tract:04d}")
    sol = diagnostics.load_solution(outdir)
    files = diagnostics.write_all(sol, outdir, save=False)
    print(f"tract {args.tract}: rebuilt {len(files)} diagnostic files in {time.time() - t0:.1f} s: "
          f"{os.path.join(outdir, 'index.html')}")
    return 0


def fit_and_write_tract(root, rerun, tract, exposures, out_refs, cfg, refcat, tangent_point,
                        refcat_name, diag_dir=None):
    """Fit one tract and write its wcs-/fcr- files (and diagnostics): the unit of work that
    runs locally or as a Dask task. Returns (tract, summary lines, number of files)."""
    from .camera import hsc
    from .layout import Repository
    from .solve import solve
    logging.getLogger("mosaicfit").setLevel(logging.INFO)
    repo = Repository(root, rerun)
    sol = solve(exposures, hsc(), cfg, refcat, tangent_point=tangent_point, refcat_name=refcat_name)
    t2 = time.time()
    n = sol.write(repo, tract, out_refs)
    t_write = time.time() - t2
    if st_skip := sol.stats.get("no_products"):
        from .dataid import format_visit_ccds
        print(f"tract {tract}: no wcs-/fcr- for {len(st_skip)} CCDs without usable stars: "
              f"{format_visit_ccds(st_skip)}", file=sys.stderr)
    st = sol.stats
    tm = st["timing"]
    lines = [f"tract {tract}: {st['n_visits']} visits, {st['n_ccds']} CCDs, {st['n_stars']} stars "
             f"({st['n_ref_stars']} reference), {st['n_detections']} detections"]
    if "astro_ndof" in st:
        lines.append(f"  astrometry: chi2/ndof {st['astro_chi2'] / max(st['astro_ndof'], 1):.3f}, "
                     f"{st['astro_clipped']} clipped, order {st.get('astro_order')}")
    for filt, p in st.get("phot_by_filter", {}).items():
        lines.append(f"  photometry {filt}: chi2/ndof {p['chi2'] / max(p['ndof'], 1):.3f}, "
                     f"order {p['order']}" + (" (absolute)" if p["absolute"] else " (relative)"))
    if diag_dir:
        from . import diagnostics
        diagnostics.write_all(sol, diag_dir)
        lines.append(f"  diagnostics: {os.path.join(diag_dir, 'index.html')}")
    lines.append(f"  time: match {tm.get('match', 0):.1f} s, astrometry {tm.get('astrometry', 0):.1f} s, "
                 f"photometry {tm.get('photometry', 0):.1f} s, write {t_write:.1f} s; wrote "
                 f"{len(out_refs) - len(sol.stats.get('no_products', []))} CCDs to {os.path.join(repo.rerun_dir, '*', '*', 'corr', f'{tract:04d}')}")
    return tract, lines, n


def _dask_client(address):
    if not address:
        return None
    try:
        from dask.distributed import Client
    except ImportError:
        raise MosaicError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError) as e:
        raise MosaicError(f"cannot reach the Dask scheduler {address}: {e}") from None


def mosaic_main(argv=None):
    """Console script ``mosaic.py``: hscPipe's command line."""
    return main(["mosaic"] + list(sys.argv[1:] if argv is None else argv))


# ------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------
def add_demo(sub):
    p = sub.add_parser("demo", help="simulate a tract, solve it and check it against the truth",
                       description="Simulate an HSC-SSP-like 10-visit tract, make its sky map, "
                       "run mosaic.py and compare the single-frame inputs and the mosaic "
                       "outputs with the simulation truth.")
    p.add_argument("--dir", default="mosaicfit-demo", help="where to write (default: ./mosaicfit-demo)")
    p.add_argument("--visits", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=run_demo)


def run_demo(args):
    from .layout import Repository
    from .simulate import evaluate_inputs, evaluate_outputs
    root = args.dir
    if os.path.exists(os.path.join(root, "registry.sqlite3")):
        raise MosaicError(f"{root}: holds a data repository already; remove it or use --dir")
    t0 = time.time()
    print(f"[1/4] mosaicfit simulate {root} --visits {args.visits} --seed {args.seed}")
    ns = argparse.Namespace(root=root, rerun="sim", jobs=2, visits=args.visits,
                            ccds=tuple(range(104)), filter="HSC-I", seed=args.seed,
                            ra=150.1, dec=2.2, images=False)
    run_simulate(ns)
    repo = Repository(root, "sim")
    visits = repo.registry.visits()
    vid = f"visit={visits[0]}..{visits[-1]}:2" if len(visits) > 1 else f"visit={visits[0]}"
    print(f"[2/4] mosaicfit make-skymap {root} --rerun=sim --id {vid} ccd=0..103")
    run_make_skymap(argparse.Namespace(root=root, rerun="sim", id=[[vid, "ccd=0..103"]],
                                       rings=False, border=None, clobber=False))
    print(f"[3/4] mosaic.py {root} --rerun=sim --id {vid} ccd=0..103 tract=0 -j 2")
    rc = main(["mosaic", root, "--rerun=sim", "--id", vid, "ccd=0..103", "tract=0", "-j", "2"])
    if rc not in (0, None):
        raise MosaicError("mosaic.py failed on the simulated tract")
    print("[4/4] accuracy against the simulation truth (clean star detections, noise-free "
          "positions and fluxes)")
    refs = resolve_refs(repo, [[vid, "ccd=0..103"]])
    q_in = evaluate_inputs(root, "sim", refs)
    q_out = evaluate_outputs(root, "sim", refs, 0)
    print(f"  single-frame inputs (CORR): WCS {q_in['wcs_rms_mas'][0]:.1f} / "
          f"{q_in['wcs_rms_mas'][1]:.1f} mas rms in RA / Dec, FLUXMAG0 {q_in['zp_rms_mmag']:.1f} mmag rms")
    print(f"  mosaic outputs (wcs-/fcr-): WCS {q_out['wcs_rms_mas'][0]:.2f} / "
          f"{q_out['wcs_rms_mas'][1]:.2f} mas rms, calibrated magnitudes "
          f"{q_out['zp_rms_mmag']:.2f} mmag rms, over {q_out['n_stars']} detections on "
          f"{q_out['n_ccds']} CCDs")
    print(f"done in {time.time() - t0:.0f} s")
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
    add_mosaic(sub)
    from .calibrate import add_calibrate_catalog, add_calibrate_exposure
    add_calibrate_exposure(sub)
    add_calibrate_catalog(sub)
    add_demo(sub)
    add_report(sub)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
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


def calibrate_exposure_main(argv=None):
    """Console script ``calibrateExposure.py``: hscPipe's command line."""
    return main(["calibrate-exposure"] + list(sys.argv[1:] if argv is None else argv))


def calibrate_catalog_main(argv=None):
    """Console script ``calibrateCatalog.py``: hscPipe's command line."""
    return main(["calibrate-catalog"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
