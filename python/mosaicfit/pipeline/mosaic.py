"""What ``mosaic.py`` does: read the tract's inputs, fit each tract, write its products.

:func:`run_mosaic` takes a :class:`MosaicRequest` (what the command line says) and returns the
exit status; :func:`fit_and_write_tract` is the unit of work that runs locally or as a Dask
task; :func:`write_products` writes the wcs-/fcr- files of a Solution into the rerun.
"""
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import MosaicError
from ..config import MosaicConfig
from ..fit.solve import solve
from ..io.atomic import write_text
from ..io.dataid import format_visit_ccds
from ..io.layout import Repository
from ..io.lock import rerun_lock
from ..io.refcat import read_refcat
from ..io.skymap import load_skymap
from ..io.wcsfile import write_wcs_file
from ..model.camera import hsc
from ..model.fluxcorr import write_fcr
from ..model.sip import SipModel, cards_text
from .executor import dask_client
from .progress import progress_bar
from .inputs import load_exposures, resolve_refs
from .references import match_references, refcat_folder, sky_circle

log = logging.getLogger("mosaicfit")

__all__ = ["MosaicRequest", "run_mosaic", "fit_and_write_tract", "write_products"]


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
    for ref in refs:
        c = corners.get((ref.visit, ref.ccd))
        if c is None:
            continue
        for t in sm.find_tracts_overlapping(*c):
            out.setdefault(int(t), []).append(ref)
    return out, sm


def run_mosaic(req):
    """Run mosaic.py; returns the exit status (1 if some CCD's inputs were unreadable or a
    visit was too damaged for products)."""
    repo = Repository(req.root, req.rerun)
    with rerun_lock(repo.root, repo.rerun_dir, "mosaic.py"):
        return _run_mosaic(req, repo)


def _run_mosaic(req, repo):
    t_all = time.time()
    logging.getLogger("mosaicfit").setLevel(logging.INFO)   # progress and iterations
    cfg = MosaicConfig().update(req.config)
    store_config = stored_config(repo, cfg, "mosaic", req.clobber_config)
    camera = hsc()
    refs = resolve_refs(repo, req.ids)
    client = dask_client(req.scheduler)
    t0 = time.time()
    exposures, missing, errors = load_exposures(repo, refs, jobs=req.jobs, client=client,
                                                column_map=cfg.column_map())
    t_read = time.time() - t0
    if missing:
        print(f"Not opening files: {len(missing)} of {len(refs)} CCDs lack SRC or CORR inputs: "
              f"{format_visit_ccds((r.visit, r.ccd) for r, _ in missing)}", file=sys.stderr)
    for ref, msg in errors:
        print(f"mosaic: skipping {ref}: {msg}", file=sys.stderr)
    if not exposures:
        raise MosaicError(f"none of the {len(refs)} CCDs selected by --id has readable inputs")
    by_key = {(e.visit, e.ccd): e for e in exposures}
    # the SipModel read with the exposure, else parsed from its header (the same numbers)
    corners = {k: (e.sip if e.sip is not None else SipModel.from_header(e.wcs_header))
               .pixel_to_sky(*camera.ccd_corners(e.ccd)) for k, e in by_key.items()}
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
    jobs = []
    for tract, trefs in sorted(groups.items()):
        tinfo = None
        if skymap is not None:
            try:
                tinfo = skymap[tract]
            except (KeyError, IndexError):
                raise MosaicError(f"tract {tract} is not in the sky map "
                                  f"{repo.find('skymap', coaddName=cfg.coaddName)}") from None
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
            refcat = read_refcat(rc_path, *sky_circle([corners[(e.visit, e.ccd)] for e in fit_exps]),
                                 trim=True)
        log.info("tract %d: fitting %d CCDs of %d visits (outputs for %d CCDs)", tract,
                 len(fit_exps), len(visits), len(out_refs))
        ddir = None
        if req.diagnostics or cfg.outputDiag:
            ddir = os.path.join(req.diag_dir or cfg.outputDir or
                                os.path.join(repo.rerun_dir, "mosaic-diag"), f"{tract:04d}")
        task = (repo.root, req.rerun, tract, fit_exps, out_refs, cfg, refcat, tp, rc_name, ddir)
        # with a Dask scheduler, one task per tract fit (the inputs were read on the cluster too)
        jobs.append(client.submit(fit_and_write_tract, *task, pure=False) if client is not None
                    else task)
    n_excluded = 0
    for job in jobs:
        tract, lines, n, excl = client.gather(job) if client is not None else \
            fit_and_write_tract(*job)
        n_excluded += excl
        store_config()
        print("\n".join(lines[:-1]))
        print(lines[-1].replace("time: ", f"time: read {t_read:.1f} s, "))
    log.info("mosaic done in %.1f s", time.time() - t_all)
    # exit 1 when the user must act: unreadable inputs, a visit too damaged for products, or a
    # fit that did not converge
    return 1 if errors or n_excluded else 0


def write_products(sol, repo, tract, refs):
    """Write the wcs-/fcr- files of `refs` (DataRefs with visit, ccd, pointing, filter) into
    the rerun, each atomically. Returns (number of files written, (visit, ccd) of the refs left
    without products)."""
    n = 0
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
    skipped = []
    # a visit the fit found too damaged to trust (fit.quality) gets no products
    damaged = sol.stats.astrometry.damaged_visits(("excluded",)) if sol.stats.astrometry else {}
    bar = progress_bar(len(refs), f"writing tract {tract}")
    for ref in refs:
        bar.update()
        key = (ref.visit, ref.ccd)
        if (used is not None and key not in used and key not in sol.frozen) \
                or (sol.stats.ccd_errors and not sol.constrained(*key)) or ref.visit in damaged:
            skipped.append(key)
            continue
        did = dict(ref.data_id, tract=tract)
        if sol.has_astrometry(ref.visit) or key in sol.frozen:
            f0 = sol.fluxmag0(ref.visit, ref.ccd) if sol.has_photometry(ref.visit) else 0.0
            write_wcs_file(repo.path("wcs", **did), cards_text(sol.wcs_cards(ref.visit, ref.ccd)),
                           fluxmag0=f0, filter_name=ref.filter or "_unknown_",
                           extra=sol.product_cards(ref.visit, ref.ccd))
            sol.forget_wcs(ref.visit, ref.ccd)       # keep memory flat
            n += 1
        if sol.has_photometry(ref.visit):
            write_fcr(repo.path("fcr", **did), sol.flux_correction(ref.visit, ref.ccd),
                      extra=sol.uncertainty_cards(ref.visit, ref.ccd))
            n += 1
    bar.close()
    return n, skipped


def fit_and_write_tract(root, rerun, tract, exposures, out_refs, cfg, refcat, tangent_point,
                        refcat_name, diag_dir=None):
    """Fit one tract and write its wcs-/fcr- files (and diagnostics): the unit of work that
    runs locally or as a Dask task. Returns (tract, summary lines, number of files, number of
    visits too damaged for products and of fits that did not converge)."""
    from .. import diagnostics       # matplotlib: only when diagnostics are asked for
    logging.getLogger("mosaicfit").setLevel(logging.INFO)
    repo = Repository(root, rerun)
    sol = solve(exposures, hsc(), cfg, refcat, tangent_point=tangent_point, refcat_name=refcat_name)
    t2 = time.time()
    n, skipped = write_products(sol, repo, tract, out_refs)
    sol.stats.no_products = skipped
    t_write = time.time() - t2
    damaged = st_a.damaged_visits() if (st_a := sol.stats.astrometry) is not None else {}
    for v, q in sorted(damaged.items()):
        print(f"tract {tract}: visit {v} is damaged ({q['flag']}): {q['note']}"
              + ("; no wcs-/fcr- written for it" if q["flag"] == "excluded" else ""),
              file=sys.stderr)
    skipped_plain = [k for k in skipped if damaged.get(k[0], {}).get("flag") != "excluded"]
    if skipped_plain:
        print(f"tract {tract}: no wcs-/fcr- for {len(skipped_plain)} CCDs outside what the "
              f"solution constrains (no usable stars, or uncertainties beyond maxCcdPosError/"
              f"maxCcdMagError: diagnostics ccd_errors.csv): "
              f"{format_visit_ccds(skipped_plain)}", file=sys.stderr)
    st = sol.stats
    tm = st.timing
    lines = [f"tract {tract}: {st.n_visits} visits, {st.n_ccds} CCDs, {st.n_stars} stars "
             f"({st.n_ref_stars} reference), {st.n_detections} detections"]
    if st.astrometry is not None:
        a = st.astrometry
        lines.append(f"  astrometry: chi2/ndof {a.chi2_ndof:.3f}, {a.clipped} clipped, "
                     f"order {a.order}")
    for filt, p in st.photometry.items():
        lines.append(f"  photometry {filt}: chi2/ndof {p.chi2_ndof:.3f}, order {p.order}"
                     + (" (absolute)" if p.absolute else " (relative)"))
    if diag_dir:
        diagnostics.write_all(sol, diag_dir)
        lines.append(f"  diagnostics: {os.path.join(diag_dir, 'index.html')}")
    lines.append(f"  time: match {tm.get('match', 0):.1f} s, astrometry {tm.get('astrometry', 0):.1f} s, "
                 f"photometry {tm.get('photometry', 0):.1f} s, write {t_write:.1f} s; wrote "
                 f"{len(out_refs) - len(skipped)} CCDs to "
                 f"{os.path.join(repo.rerun_dir, '*', '*', 'corr', f'{tract:04d}')}")
    # a fit whose iterations stopped at maxIter: said, and the run exits 1 (the user must look)
    unconverged = ([] if st_a is None or st_a.converged else ["astrometric"]) + \
        [f"photometric ({f})" for f, p in st.photometry.items() if not p.converged]
    for what in unconverged:
        print(f"tract {tract}: the {what} fit did not converge within maxIter={cfg.maxIter} "
              "iterations: check its diagnostics before using the products", file=sys.stderr)
    return tract, lines, n, sum(q["flag"] == "excluded" for q in damaged.values()) \
        + len(unconverged)
