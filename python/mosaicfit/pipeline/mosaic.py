"""What ``mosaic.py`` does: read the inputs, fit every visit of the run once, write the
products into each tract folder.

The tracts of a run (``tract=`` values, or the sky map's tracts the selected CCDs overlap)
each want the products of the CCDs overlapping them. Rather than fitting each tract alone (as
meas_mosaic did: the same CCD then had a different solution in each tract folder), the tracts
sharing visits are fitted together (:func:`joint_runs`) and each (visit, CCD) gets one
product, written byte-identical into every tract folder that wants it.

:func:`run_mosaic` takes a :class:`MosaicRequest` (what the command line says) and returns the
exit status; :func:`fit_and_write` is the unit of work (one joint fit, its products in all its
tracts) that runs locally or as a Dask task; :func:`write_products` writes the wcs-/fcr- files
of a Solution into the rerun.
"""
import concurrent.futures
import copy
import logging
import os
import pickle
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from .. import MosaicError
from ..config import MosaicConfig
from ..fit.solve import solve
from ..fit.state import CcdTerms
from ..io.atomic import WRITER_THREADS, concurrent_writes, write_copies, write_text
from ..io.dataid import format_visit_ccds
from ..io.layout import Repository
from ..io.lock import rerun_lock
from ..io.refcat import read_refcat
from ..io.skymap import load_skymap
from ..io.wcsfile import wcs_file_bytes
from ..model.camera import hsc
from ..model.fluxcorr import fcr_bytes
from ..model.sip import SipModel
from .executor import dask_client, process_pool
from .progress import progress_bar
from .inputs import load_exposures, resolve_refs, sky_corners
from .references import match_references, refcat_folder, sky_circle
from .regions import sky_regions

log = logging.getLogger("mosaicfit")

__all__ = ["MosaicRequest", "run_mosaic", "joint_runs", "fit_and_write", "write_products",
           "tract_view"]


@dataclass
class MosaicRequest:
    """A run of mosaic.py, as its command line gives it."""
    root: str
    rerun: str                       # OUTPUT or INPUT:OUTPUT
    ids: list                        # the --id arguments (lists of KEY=VALUE tokens)
    config: list = field(default_factory=list)     # --config KEY=VALUE items
    clobber_config: bool = False
    jobs: int = 1
    scheduler: str = None            # dask.distributed scheduler address
    diagnostics: bool = False
    diag_dir: str = None


def stored_config(repo, cfg, name, clobber):
    """Check the configuration against the one stored with the rerun. Returns a function that
    stores it: called once the run has something to write, so that a run stopped by an error
    leaves the rerun as it was."""
    path = os.path.join(repo.rerun_dir, "config", f"{name}.py")
    text = cfg.to_text()
    old = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise MosaicError(f"{path}: cannot read the stored configuration ({e})") from None
        if old != text and not clobber:
            raise MosaicError(f"{path}: the rerun was made with a different {name} configuration "
                              "(use --clobber-config to override)")

    def store():
        if old != text:
            write_text(text, path)
    return store


def _tracts_of(repo, refs, corners, cfg):
    """{tract: [refs overlapping it]} from the sky map of the rerun."""
    path = repo.find("skymap", coaddName=cfg.coaddName)
    if path is None:
        raise MosaicError(f"no tract= in --id and no sky map in {repo.rerun_dir}: run "
                          "'mosaicfit make-skymap' first or give tract=")
    sm = load_skymap(path)
    out = {}
    by_visit = {}
    for ref in refs:
        if (ref.visit, ref.ccd) in corners:
            by_visit.setdefault(ref.visit, []).append(ref)
    for visit, mine in by_visit.items():       # a visit's CCDs at once (they are neighbours)
        found = sm.find_tracts_overlapping_many([corners[(r.visit, r.ccd)] for r in mine])
        for ref, tracts in zip(mine, found):
            for t in tracts:
                out.setdefault(int(t), []).append(ref)
    return out, sm


def run_mosaic(req):
    """Run mosaic.py; returns the exit status (1 if some CCD's inputs were unreadable or a
    visit was too damaged for products)."""
    repo = Repository(req.root, req.rerun)
    with rerun_lock(repo.root, repo.rerun_dir, "mosaic.py"):
        client = dask_client(req.scheduler)
        # the run's local processes (-j N), started once: they read the inputs, fit the
        # regions of a split run, and write the products (each process starting costs ~2 s
        # of imports)
        local = process_pool(req.jobs) if client is None and req.jobs > 1 else None
        try:
            return _run_mosaic(req, repo, client, local)
        finally:
            if local is not None:
                local.shutdown(cancel_futures=True)
            if client is not None:
                client.close()      # before the cluster may go: no reconnection attempts


def _run_mosaic(req, repo, client, local):
    t_all = time.time()
    logging.getLogger("mosaicfit").setLevel(logging.INFO)   # progress and iterations
    cfg = MosaicConfig().update(req.config)
    store_config = stored_config(repo, cfg, "mosaic", req.clobber_config)
    camera = hsc()
    refs = resolve_refs(repo, req.ids)
    t0 = time.time()
    exposures, missing, errors = load_exposures(repo, refs, jobs=req.jobs, client=client,
                                                column_map=cfg.column_map(), pool=local)
    t_read = time.time() - t0
    if missing:
        print(f"Not opening files: {len(missing)} of {len(refs)} CCDs lack SRC or CORR inputs: "
              f"{format_visit_ccds((r.visit, r.ccd) for r, _ in missing)}", file=sys.stderr)
    for ref, msg in errors:
        print(f"mosaic: skipping {ref}: {msg}", file=sys.stderr)
    if not exposures:
        raise MosaicError(f"none of the {len(refs)} CCDs selected by --id has readable inputs")
    # the SipModel read with the exposure, else parsed from its header (the same numbers)
    for e in exposures:
        if e.sip is None:
            e.sip = SipModel.from_header(e.wcs_header)
    corners = dict(zip([(e.visit, e.ccd) for e in exposures],
                       sky_corners([e.sip for e in exposures], [e.ccd for e in exposures],
                                   camera)))
    tracts_given = {r.tract for r in refs if r.tract is not None}
    skymap = None
    if tracts_given:
        groups = {t: [r for r in refs if r.tract == t] for t in sorted(tracts_given)}
        path = repo.find("skymap", coaddName=cfg.coaddName)
        if path is not None:
            skymap = load_skymap(path)
    else:
        groups, skymap = _tracts_of(repo, refs, corners, cfg)
    rc_path = refcat_folder(repo, cfg.refcat)
    matched = match_references(repo, refs, exposures, corners, cfg, rc_path)
    if matched is not None:
        errors = errors + matched.errors
    elif rc_path is None and not cfg.relativeSolution:
        raise MosaicError(f"no reference catalogue in {os.path.join(repo.root, 'ref_cats')} "
                          "and no SRCMATCH or MATCH files for the selected CCDs (use --config "
                          "relativeSolution=True for a relative solution)")
    outputs, tract_info = {}, {}
    for tract, trefs in sorted(groups.items()):
        tinfo = None
        if skymap is not None:
            try:
                tinfo = skymap[tract]
            except (KeyError, IndexError):
                raise MosaicError(f"tract {tract} is not in the sky map "
                                  f"{repo.find('skymap', coaddName=cfg.coaddName)}") from None
        out_refs = [r for r in trefs if (r.visit, r.ccd) in corners]
        if tinfo is not None and cfg.requireTractOverlap and tracts_given:
            # (tracts found from the sky map hold only the CCDs that overlap them)
            out_refs = [r for r in out_refs if tinfo.overlaps_polygon(*corners[(r.visit, r.ccd)])]
        if not out_refs:
            raise MosaicError(f"tract {tract} does not overlap any CCD selected by --id")
        outputs[tract], tract_info[tract] = out_refs, tinfo
    jobs = []
    for run, region in _fits_of(joint_runs({t: {r.visit for r in o} for t, o in outputs.items()}),
                                outputs, exposures, corners, cfg):
        visits = set().union(*({r.visit for r in outputs[t]} for t in run))
        if region is not None:
            visits = set(region.fitted)
        fit_exps = [e for e in exposures if e.visit in visits]
        circle = sky_circle([corners[(e.visit, e.ccd)] for e in fit_exps])
        tinfo = tract_info[run[0]]
        own = {t: [r for r in outputs[t] if region is None or r.visit in region.own]
               for t in run}
        own = {t: o for t, o in own.items() if o}
        if not own:
            continue                  # a region whose visits want no products
        if region is not None:
            tp = circle[:2]           # each region in a plane of its own (as below)
        elif len(run) > 1:
            # one plane for the whole run: the footprint's centre (any point of the field would
            # do, the visit polynomials absorb the projective change of plane; the centre keeps
            # it smallest)
            tp = circle[:2]
        else:
            tp = (tinfo.ctr_ra, tinfo.ctr_dec) if tinfo is not None else None
        refcat = None
        rc_name = os.path.basename(rc_path) if rc_path else ""
        if matched is not None:
            refcat, rc_name = matched.refcat, matched.name
        elif rc_path is not None:
            refcat = read_refcat(rc_path, *circle, trim=True)
        name = region.name if region is not None else _run_name(run)
        log.info("%s: fitting %d CCDs of %d visits (outputs for %d CCDs%s)", name,
                 len(fit_exps), len(visits), sum(len(o) for o in own.values()),
                 f" in {len(own)} tracts" if len(own) > 1 else "")
        ddir = None
        if req.diagnostics or cfg.outputDiag:
            ddir = req.diag_dir or cfg.outputDir or os.path.join(repo.rerun_dir, "mosaic-diag")
        if client is not None:
            # the inputs sent to the cluster once, for both passes of a region split
            fit_exps, refcat = client.scatter([fit_exps, refcat], hash=False)
        jobs.append(((repo.root, req.rerun, own, fit_exps, cfg, refcat, tp, rc_name, ddir),
                     dict(region=region), tuple(run)))
    split = [j for j in jobs if j[1]["region"] is not None]
    # independent regions in the local processes, each fit using its own threads
    pool = local if len(split) > 1 else None
    n_excluded = 0
    if split and cfg.regionCcdTerms:
        # the CCD terms are the camera's, shared by every region: each region fitted once
        # for them, then every region fitted again with them held at the regions'
        # consensus (otherwise each region's products would carry its own CCD fit across
        # its borders)
        terms = _execute(_fit_ccd_terms, [(t[3:8], {}) for t, _, _ in split], client, pool)
        by_run = {}
        for (_, kw, run), tm in zip(split, terms):
            by_run.setdefault(run, []).append(tm)
        for run, got in by_run.items():
            common = CcdTerms.consensus(got)
            log.info("%s: CCD terms held at the consensus of its %d regions' fits (%s)",
                     _run_name(list(run)), len(got), _spread(common, got))
            for _, kw, r in split:
                if r == run:
                    kw["ccd_terms"] = common
    if client is None and pool is None:
        # the fits one after the other here: each writes its products in the -j processes
        for _, kw, _ in jobs:
            kw["write_jobs"], kw["write_pool"] = req.jobs, local
    for lines, n, excl in _execute(fit_and_write, [(t, kw) for t, kw, _ in jobs], client,
                                   pool, lazy=True):
        n_excluded += excl
        store_config()
        print("\n".join(lines[:-1]))
        print(lines[-1].replace("time: ", f"time: read {t_read:.1f} s, "))
    log.info("mosaic done in %.1f s", time.time() - t_all)
    # exit 1 when the user must act: unreadable inputs, a visit too damaged for products, or a
    # fit that did not converge
    return 1 if errors or n_excluded else 0


def _execute(fn, calls, client, pool, lazy=False):
    """fn(*args, **kw) of each (args, kw) of `calls`: as Dask tasks, in the local process
    pool, or here one after the other; the results in order (with `lazy`, a generator that
    yields each as it is needed: the local fits then run one at a time)."""
    if client is not None:
        futures = [client.submit(fn, *a, pure=False, **kw) for a, kw in calls]
        out = (client.gather(f) for f in futures)
    elif pool is not None:
        futures = [pool.submit(fn, *a, **kw) for a, kw in calls]
        out = (f.result() for f in futures)
    else:
        out = (fn(*a, **kw) for a, kw in calls)
    return out if lazy else list(out)


def _fit_ccd_terms(exposures, cfg, refcat, tangent_point, refcat_name):
    """The CCD terms a region's own fit finds (the first pass of a region split). Its log is
    kept to errors: the second pass fits the same visits again and says what they need."""
    logger = logging.getLogger("mosaicfit")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return CcdTerms.of(solve(exposures, hsc(), cfg, refcat, tangent_point=tangent_point,
                                 refcat_name=refcat_name))
    finally:
        logger.setLevel(level)


def _spread(common, terms):
    """How far the regions' own CCD terms were from their consensus (rms over CCDs and
    regions): the seam each region's own CCD fit would have left."""
    dp, dm = [], []
    for t in terms:
        dp += [np.hypot(*np.subtract(x[:2], common.placement[c][:2]))
               for c, x in t.placement.items() if c in common.placement]
        dm += [x - common.flux[f][c] for f, fl in t.flux.items() for c, x in fl.items()
               if c in common.flux.get(f, {})]
    rms = lambda a: float(np.sqrt(np.mean(np.square(a)))) if len(a) else 0.0
    return f"the regions' own placements {rms(dp):.4f} px and flux terms " \
        f"{1000 * rms(dm):.3f} mmag rms from it"


def _fits_of(runs, outputs, exposures, corners, cfg):
    """(run, region) of each fit: one per joint run of tracts (region None), or with
    regionNside one per sky region of a run with visits in more than one region
    (pipeline.regions)."""
    for run in runs:
        regions = None
        if cfg.regionNside:
            visits = set().union(*({r.visit for r in outputs[t]} for t in run))
            # all the CCDs read of the visit: its centre does not depend on the tracts asked for
            of_visit = {}
            for e in exposures:
                if e.visit in visits:
                    of_visit.setdefault(e.visit, []).append(corners[(e.visit, e.ccd)])
            centres = {v: sky_circle(c)[:2] for v, c in sorted(of_visit.items())}
            regions = sky_regions(centres, cfg.regionNside, cfg.regionOverlap)
            log.info("%s: %d visits in %d regions of HEALPix nside %d (each fits its own and "
                     "those within %.2f deg: %s)", _run_name(run), len(visits), len(regions),
                     cfg.regionNside, cfg.regionOverlap,
                     ", ".join(f"{r.pixel}: {len(r.own)}+{len(r.fitted) - len(r.own)}"
                               for r in regions))
        if regions is None or len(regions) == 1:
            yield run, None
        else:
            for region in regions:
                yield run, region


def joint_runs(tract_visits):
    """The tracts whose visits are fitted together: the connected components of the graph
    whose nodes are the tracts of `tract_visits` ({tract: set of visits}), two tracts linked
    when a visit writes products into both. Returns a list of sorted lists of tracts.

    Every visit is fitted once, with all the visits it shares a tract with, so that each
    (visit, CCD) has one solution in every tract folder. Visits of different components
    share no tract, hence no sky and no star (the tracts tile the sky): fitting them jointly
    would tie them only through the CCD placements, in one tangent plane for fields that may be
    far apart and one dense reduced system, so each component is fitted on its own.
    """
    parent = {t: t for t in tract_visits}

    def root(t):
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    owner = {}
    for t in sorted(tract_visits):
        for v in tract_visits[t]:
            if v in owner:
                a, b = root(owner[v]), root(t)
                parent[max(a, b)] = min(a, b)
            else:
                owner[v] = t
    runs = {}
    for t in sorted(tract_visits):
        runs.setdefault(root(t), []).append(t)
    return [runs[k] for k in sorted(runs)]


def _run_name(tracts):
    return f"tract {tracts[0]}" if len(tracts) == 1 else \
        f"tracts {'^'.join(str(t) for t in tracts)}"


def write_products(sol, repo, tract_refs, jobs=1, pool=None):
    """Write the wcs-/fcr- files of the refs of each tract (`tract_refs`: {tract: DataRefs
    with visit, ccd, pointing, filter}) into the rerun, each atomically. A (visit, CCD) in
    several tracts gets the same product, byte for byte, in each of their folders. With
    `jobs` > 1 and many products, they are made and written in that many local processes
    (PARALLEL_WRITE_MIN): those of `pool` (pipeline.executor.process_pool(jobs), the run's)
    if given, else started here. Returns (number of files written, {tract: (visit, ccd) of
    its refs left without products})."""
    # a CCD outside what its visit's stars constrain (fit.uncertainty: its uncertainty beyond
    # maxCcdPosError / maxCcdMagError) would only get an extrapolation of the visit's
    # polynomials: it is excluded, and reported by the caller; a CCD without stars of its own
    # whose placement other visits fix is written. (A solution without these figures, an
    # older file: the CCDs with stars used by the fit.)
    used = None
    if not sol.stats.ccd_errors and sol.detections is not None and len(sol.detections):
        d = sol.detections
        ok = np.asarray(d["astro_used"]) | np.asarray(d["phot_used"])
        used = set(zip(np.asarray(d["visit"])[ok].tolist(), np.asarray(d["ccd"])[ok].tolist()))
    skipped = {t: [] for t in tract_refs}
    # a visit the fit found too damaged to trust (fit.quality) gets no products
    damaged = sol.stats.astrometry.damaged_visits(("excluded",)) if sol.stats.astrometry else {}
    where = {}           # (visit, ccd) -> [(tract, ref)]: each product made once, written to all
    for tract, refs in sorted(tract_refs.items()):
        for ref in refs:
            where.setdefault((ref.visit, ref.ccd), []).append((tract, ref))
    keys = sorted(where)
    parallel = jobs > 1 and len(keys) >= PARALLEL_WRITE_MIN
    # the same chunks whatever -j: a CCD's fcr polynomials of the visits in one chunk share a
    # least-squares solve, whose rounding (amplified ~1e7 by the monomials' conditioning, to
    # ~1e-9 of a coefficient) depends on how many share it; with -j the same bytes
    tasks = [(c, {k: where[k] for k in c}, used, damaged)
             for c in (keys[i:i + WRITE_CHUNK] for i in range(0, len(keys), WRITE_CHUNK))]
    n = 0
    with progress_bar(len(keys), "writing") as bar:
        if parallel:
            results = _write_in_processes(sol, repo, tasks, jobs, pool, bar)
        else:
            results = []
            with concurrent_writes():
                for t in tasks:
                    results.append(_write_keys(sol, repo, *t))
                    bar.update(len(t[0]))
    for n_files, left in results:
        n += n_files
        for tract, key in left:
            skipped[tract].append(key)
    for t in skipped:
        skipped[t].sort()
    return n, skipped


#: (visit, ccd) products prepared at once by the writer: ~10 visits of 104 CCDs, so that each
#: CCD's fcr polynomial design is factored once for ~10 visits (Solution.flux_corrections);
#: also the unit of work of the writing processes (10 of them at 100 visits)
WRITE_CHUNK = 1024

#: from this many products on, -j N writes them in N local processes: formatting the header
#: cards and creating the files is Python work of ~2 ms per CCD, which one process does alone
#: otherwise (20 s of a 100-visit strip's 120 s under cProfile); starting fresh processes
#: costs ~2 s, a quarter of the writing of 4000 CCDs (the run's pool is started already)
PARALLEL_WRITE_MIN = 4000

_WRITER = {}              # a writing process's Solution and Repository, and their file


def _write_task(path, threads, keys, where, used, damaged, fitted):
    """_write_keys in a writing process, on the Solution of the file `path` (read once per
    process), with the product TAN-SIPs of `keys` the main process has already fitted."""
    if _WRITER.get("path") != path:
        _WRITER.clear()
        with open(path, "rb") as f:
            _WRITER["sol"], _WRITER["repo"] = pickle.load(f)
        _WRITER["path"] = path
    _WRITER["sol"].adopt_wcs(fitted)
    with concurrent_writes(threads):
        return _write_keys(_WRITER["sol"], _WRITER["repo"], keys, where, used, damaged)


def _write_in_processes(sol, repo, tasks, jobs, pool, bar):
    """The results of _write_keys of each of `tasks` ((keys, where, used, damaged)), run in
    the `jobs` processes of `pool` (or of one started here). Each reads the Solution from one
    temporary file (Solution.lean: without the detections, the bulk of its bytes, nor its
    fitted product TAN-SIPs, which go with the tasks of their CCDs). (Given to each process
    in its start arguments, the Solution went down a pipe the process reads only once it has
    imported the package: 4.5 s of the main process at 100 visits, one process after the
    other.)"""
    lean = sol.lean()
    own = pool is None
    if own:
        pool = process_pool(min(jobs, len(tasks)))
    futures = {}
    try:
        with tempfile.TemporaryDirectory(prefix="mosaicfit-") as tmp:
            # (a name of its own: a process keeps the Solution of the last file it read)
            path = os.path.join(tmp, f"solution-{uuid.uuid4().hex}.pickle")
            try:
                with open(path, "wb") as f:
                    pickle.dump((lean, repo), f, protocol=pickle.HIGHEST_PROTOCOL)
            except OSError as e:
                raise MosaicError(f"cannot write the solution for the writing processes to "
                                  f"{path}: {e.strerror or e}") from None
            # as many file-writing threads in all as one process has (io.atomic.
            # WRITER_THREADS): no more concurrent file creation than before (with 4 in each,
            # 8 in all, two 200-visit runs spent 21 and 55 s in the kernel, one process 27 s:
            # not a gain to count on)
            threads = max(1, WRITER_THREADS // jobs)
            futures = {pool.submit(_write_task, path, threads, *t, sol.prepared_wcs(t[0])):
                       len(t[0]) for t in tasks}
            try:
                for f in concurrent.futures.as_completed(futures):
                    if f.exception() is not None:
                        raise f.exception()   # the first error (an OutputError)
                    bar.update(futures[f])
            finally:
                # the rest cancelled; those running finish (their files whole) before the
                # file they read goes
                for f in futures:
                    f.cancel()
                concurrent.futures.wait(futures)
            return [f.result() for f in futures]
    finally:
        if own:
            pool.shutdown(cancel_futures=True)


def _write_keys(sol, repo, keys, where, used, damaged):
    """The products of the (visit, ccd) `keys` (at most WRITE_CHUNK): (the number of files
    written, [(tract, key)] of the refs left without products)."""
    n, left = 0, []
    visit_cards = {}          # the product cards of each visit alone, formatted once
    # the CCDs' TAN-SIP and flux polynomials fitted at once (model.solution.Solution.
    # prepare_wcs, flux_corrections)
    sol.prepare_wcs(keys)
    chunk = [k for k in keys if sol.has_photometry(k[0])]
    fcrs = dict(zip(chunk, sol.flux_corrections(chunk)))
    for key in keys:
        places = where[key]
        visit, ccd = key
        if (used is not None and key not in used and key not in sol.frozen) \
                or (sol.stats.ccd_errors and not sol.constrained(*key)) or visit in damaged:
            left += [(tract, key) for tract, _ in places]
            continue
        paths = [(repo.path("wcs", **dict(ref.data_id, tract=tract)),
                  repo.path("fcr", **dict(ref.data_id, tract=tract)), ref) for tract, ref in places]
        # each file's bytes made once, written into every tract folder that wants it
        extra, extra_fcr = sol.product_card_images(visit, ccd, visit_cards)
        if sol.has_astrometry(visit) or key in sol.frozen:
            f0 = fcrs[key].fluxmag0 if sol.has_photometry(visit) else 0.0
            cards = sol.wcs_card_text(visit, ccd)
            by_filter = {}
            for wcs_path, _, ref in paths:
                by_filter.setdefault(ref.filter or "_unknown_", []).append(wcs_path)
            for filt, wcs_paths in by_filter.items():
                write_copies(wcs_file_bytes(cards, fluxmag0=f0, filter_name=filt, extra=extra,
                                            path=wcs_paths[0], checked=key not in sol.frozen),
                             wcs_paths)
                n += len(wcs_paths)
            sol.forget_wcs(visit, ccd)       # keep memory flat
        if sol.has_photometry(visit):
            fc = fcrs.pop(key)
            write_copies(fcr_bytes(fc, extra=extra_fcr, path=paths[0][1]),
                         [fcr_path for _, fcr_path, _ in paths])
            n += len(paths)
    return n, left


def tract_view(sol, visits, no_products=()):
    """The joint solution `sol` seen from one tract: its detections of `visits` (the visits
    writing products into the tract), for the tract's diagnostics. The model, the stars and
    the fit statistics are the joint fit's; `no_products`: the tract's CCDs left without."""
    view = copy.copy(sol)
    view.stats = copy.copy(sol.stats)
    view.stats.no_products = list(no_products)
    if sol.detections is not None:
        view.detections = sol.detections[np.isin(np.asarray(sol.detections["visit"]),
                                                 sorted(visits))]
    return view


def fit_and_write(root, rerun, tract_refs, exposures, cfg, refcat, tangent_point, refcat_name,
                  diag_dir=None, region=None, ccd_terms=None, write_jobs=1, write_pool=None):
    """Fit `exposures` once and write the wcs-/fcr- files of the refs of each tract
    (`tract_refs`: {tract: DataRefs}) and the diagnostics (under `diag_dir`: one folder per
    tract, and with several tracts one for the whole run, ``run-TTTT`` after its first
    tract; for a `region` (pipeline.regions.Region), whose `tract_refs` are its own visits',
    one folder ``region-PPPPP`` of its own visits): the unit of work that runs locally or as
    a Dask task. Returns (summary lines, number of files, number of visits too damaged for
    products and of fits that did not converge)."""
    logging.getLogger("mosaicfit").setLevel(logging.INFO)
    repo = Repository(root, rerun)
    tracts = sorted(tract_refs)
    name = region.name if region is not None else _run_name(tracts)
    sol = solve(exposures, hsc(), cfg, refcat, tangent_point=tangent_point, refcat_name=refcat_name,
                ccd_terms=ccd_terms)
    t2 = time.time()
    n, skipped = write_products(sol, repo, tract_refs, jobs=write_jobs, pool=write_pool)
    sol.stats.no_products = sorted(set().union(*(set(k) for k in skipped.values())))
    t_write = time.time() - t2
    damaged = st_a.damaged_visits() if (st_a := sol.stats.astrometry) is not None else {}
    if region is not None:            # the margin's visits are their own regions' to report
        damaged = {v: q for v, q in damaged.items() if v in region.own}
    for v, q in sorted(damaged.items()):
        print(f"{name}: visit {v} is damaged ({q['flag']}): {q['note']}"
              + ("; no wcs-/fcr- written for it" if q["flag"] == "excluded" else ""),
              file=sys.stderr)
    for tract in tracts:
        skipped_plain = [k for k in skipped[tract]
                         if damaged.get(k[0], {}).get("flag") != "excluded"]
        if skipped_plain:
            print(f"tract {tract}: no wcs-/fcr- for {len(skipped_plain)} CCDs outside what the "
                  f"solution constrains (no usable stars, or uncertainties beyond "
                  f"maxCcdPosError/maxCcdMagError: diagnostics ccd_errors.csv): "
                  f"{format_visit_ccds(skipped_plain)}", file=sys.stderr)
    st = sol.stats
    tm = st.timing
    lines = [f"{name}: {st.n_visits} visits, {st.n_ccds} CCDs, {st.n_stars} stars "
             f"({st.n_ref_stars} reference), {st.n_detections} detections"
             + (f" (products of its own {len(region.own)} visits)" if region is not None
                else " (one fit)" if len(tracts) > 1 else "")]
    if st.astrometry is not None:
        a = st.astrometry
        lines.append(f"  astrometry: chi2/ndof {a.chi2_ndof:.3f}, {a.clipped} clipped, "
                     f"order {a.order}")
    for filt, p in st.photometry.items():
        lines.append(f"  photometry {filt}: chi2/ndof {p.chi2_ndof:.3f}, order {p.order}"
                     + (" (absolute)" if p.absolute else " (relative)"))
    t3 = time.time()
    if diag_dir:
        from .. import diagnostics   # matplotlib (0.5 s to import): only when asked for
    if diag_dir and region is not None:
        rdir = os.path.join(diag_dir, f"region-{region.pixel:05d}")
        diagnostics.write_all(tract_view(sol, set(region.own), sol.stats.no_products), rdir)
        lines.append(f"  diagnostics of the region's own visits: "
                     f"{os.path.join(rdir, 'index.html')}")
    elif diag_dir:
        if len(tracts) > 1:
            run_dir = os.path.join(diag_dir, f"run-{tracts[0]:04d}")
            diagnostics.write_all(sol, run_dir)
            lines.append(f"  diagnostics of the run: {os.path.join(run_dir, 'index.html')}")
        for tract in tracts:
            tdir = os.path.join(diag_dir, f"{tract:04d}")
            view = sol if len(tracts) == 1 else \
                tract_view(sol, {r.visit for r in tract_refs[tract]}, skipped[tract])
            diagnostics.write_all(view, tdir)
            lines.append(f"  diagnostics{'' if len(tracts) == 1 else f' of tract {tract}'}: "
                         f"{os.path.join(tdir, 'index.html')}")
    t_diag = time.time() - t3
    where = lambda t: os.path.join(repo.rerun_dir, '*', '*', 'corr', f'{t:04d}')
    if len(tracts) == 1:
        wrote = f"wrote {len(tract_refs[tracts[0]]) - len(skipped[tracts[0]])} CCDs to " \
            f"{where(tracts[0])}"
    else:
        for t in tracts:
            lines.append(f"  tract {t}: wrote {len(tract_refs[t]) - len(skipped[t])} CCDs to "
                         f"{where(t)}")
        wrote = f"wrote {len({(r.visit, r.ccd) for t in tracts for r in tract_refs[t]})} " \
            f"CCDs to {len(tracts)} tracts"
    lines.append(f"  time: match {tm.get('match', 0):.1f} s, astrometry {tm.get('astrometry', 0):.1f} s, "
                 f"photometry {tm.get('photometry', 0):.1f} s, write {t_write:.1f} s"
                 + (f", diagnostics {t_diag:.1f} s" if diag_dir else "") + f"; {wrote}")
    # a fit whose iterations stopped at maxIter: said, and the run exits 1 (the user must look)
    unconverged = ([] if st_a is None or st_a.converged else ["astrometric"]) + \
        [f"photometric ({f})" for f, p in st.photometry.items() if not p.converged]
    for what in unconverged:
        print(f"{name}: the {what} fit did not converge within maxIter={cfg.maxIter} "
              "iterations: check its diagnostics before using the products", file=sys.stderr)
    return lines, n, sum(q["flag"] == "excluded" for q in damaged.values()) + len(unconverged)
