"""What ``calibrateExposure.py`` and ``calibrateCatalog.py`` do: apply the mosaic solution to
every CCD of an ``--id``, one independent task per (visit, ccd, tract) (the work on one CCD:
:mod:`mosaicfit.pipeline.apply`).

- inputs (looked up in the rerun, its parents, then ROOT): the CORR (exposures) or SRC
  (catalogs) and the mosaic's ``wcs-``/``fcr-`` files of the tract; outputs (always in the
  named rerun): ``corr/TTTT/CALEXP-VVVVVVV-CCC.fits`` and ``output/TTTT/CALSRC-VVVVVVV-CCC.fits``.
  Without ``tract=`` in the --id, every tract that has a ``wcs-`` file for the CCD is done.
- a CCD whose inputs are missing, unreadable or damaged (including finite but absurd mosaic
  values: see :func:`mosaicfit.pipeline.apply.check_correction`) is reported by name and skipped; the
  exit status is 1 if any CCD failed. An output that cannot be written (full disk, read-only
  folder) stops the run with one error line. The arguments and the registry are checked
  before the rerun is touched; the mosaic outputs are looked up under the rerun's lock (a
  mosaic.py writing them holds it), and a tract without any is one error, not one per CCD.
- outputs are written atomically (temporary file, then rename): an interrupted run leaves no
  truncated file. A re-run skips the CCDs whose output is complete and newer than all its
  inputs (so it completes an interrupted run, and redoes the CCDs whose mosaic was re-run);
  ``--overwrite`` recomputes everything. Outputs are deterministic: recomputing gives the
  same bytes.
- ``-j N`` runs N CCDs at once in local processes (spawned, not forked: OpenMP and fork do
  not mix); ``--scheduler ADDRESS`` sends the same tasks to a dask.distributed cluster. A
  progress bar (CCDs done / total) is drawn on stderr when it is a terminal.
"""
import concurrent.futures
import glob
import os
import re
import sys
import time
from dataclasses import dataclass, field

from .. import MosaicError
from ..config import CatalogConfig, ExposureConfig
from ..io.atomic import OutputError
from ..io.corr import read_corr, write_corr
from ..io.dataid import parse_ids
from ..io.fits import make_wcs, open_fits
from ..io.layout import Repository
from ..io.lock import rerun_lock
from ..io.src import read_src, write_src
from ..io.wcsfile import read_wcs_header
from ..model.camera import hsc
from ..model.fluxcorr import read_fcr
from ..model.sip import SipModel
from .apply import calibrate_catalog, calibrate_exposure, check_correction
from .executor import dask_client, process_pool
from .inputs import resolve_refs

__all__ = ["CalibrateRequest", "make_tasks", "run_task", "run_tasks", "Progress",
           "run_calibrate"]

_KINDS = {
    "exposure": dict(command="calibrateExposure", input="calexp", output="calexp_calibrated",
                     input_name="CORR", config=ExposureConfig),
    "catalog": dict(command="calibrateCatalog", input="src", output="src_calibrated",
                    input_name="SRC", config=CatalogConfig),
}


@dataclass
class CalibrateRequest:
    """A run of calibrateExposure.py (kind 'exposure') or calibrateCatalog.py ('catalog')."""
    kind: str
    root: str
    rerun: str                       # OUTPUT or INPUT:OUTPUT
    ids: list                        # the --id arguments
    config: list = field(default_factory=list)     # --config KEY=VALUE items
    jobs: int = 1
    scheduler: str = None
    overwrite: bool = False


# ------------------------------------------------------------------------------------------
# tasks
# ------------------------------------------------------------------------------------------

def _tracts_with_wcs(repo, ref):
    """Tracts that have a wcs- file for this (visit, ccd), over the rerun's search path."""
    rel = repo.relative_path("wcs", **dict(ref.data_id, tract=0))
    parent, name = os.path.split(rel)            # .../corr/0000, wcs-...
    base = os.path.dirname(parent)
    tracts = set()
    for folder in repo.search_path:
        for path in glob.glob(os.path.join(glob.escape(os.path.join(folder, base)), "*", name)):
            t = os.path.basename(os.path.dirname(path))
            if re.fullmatch(r"\d+", t):
                tracts.add(int(t))
    return sorted(tracts)


def make_tasks(kind, repo, refs, config, overwrite=False, threads=None):
    """One task spec (a picklable dict) per (visit, ccd, tract). Refs without tract= get one
    task per tract that has a wcs- file for them (or one failing task if there is none)."""
    tasks = []
    for ref in refs:
        tracts = [ref.tract] if ref.tract is not None else _tracts_with_wcs(repo, ref)
        for tract in tracts or [None]:
            did = dict(ref.data_id)
            did["tract"] = tract
            tasks.append({"kind": kind, "root": repo.root,
                          "rerun": (f"{repo.input_rerun}:{repo.rerun}" if repo.input_rerun
                                    else repo.rerun),
                          "data_id": did, "config": dict(config), "overwrite": bool(overwrite),
                          "threads": threads})
    return tasks


def _label(did):
    s = f"visit={did['visit']} ccd={did['ccd']}"
    return s if did.get("tract") is None else f"{s} tract={did['tract']}"


def _up_to_date(out, inputs):
    """The output exists, is a complete FITS file, and is newer than every input."""
    try:
        t_out = os.path.getmtime(out)
    except OSError:
        return False
    try:
        if any(os.path.getmtime(p) > t_out for p in inputs):
            return False
    except OSError:
        return False
    try:
        open_fits(out, "output").close()
    except MosaicError:
        return False
    return True


def _default_threads(spec):
    t = spec.get("threads")
    if t is not None:
        return int(t)
    try:                                    # on a dask worker: one thread per task
        from distributed import get_worker
        get_worker()
        return 1
    except (ImportError, ValueError):
        return 0


def run_task(spec):
    """Calibrate one CCD; never raises for bad data. Returns a dict: label, status ('written',
    'uptodate' or 'failed'), message, ``fatal`` (True if the output could not be written: full
    disk, read-only folder; the run should stop), output path and the times (s) t_read
    (inputs), t_kernel (calibration, headers included), t_pixels (of which the C++ pixel
    kernel) and t_write."""
    did = spec["data_id"]
    res = {"label": _label(did), "status": "failed", "message": "", "path": None,
           "t_read": 0.0, "t_kernel": 0.0, "t_pixels": 0.0, "t_write": 0.0}
    try:
        _run(spec, res)
    except OutputError as e:        # full disk, read-only folder: the run stops
        res["status"], res["message"], res["fatal"] = "failed", str(e), True
    except MosaicError as e:
        res["status"], res["message"] = "failed", str(e)
    except MemoryError:
        res["status"], res["message"] = "failed", "out of memory"
    except Exception as e:  # a bug or an unforeseen file problem: report it, go on
        res["status"] = "failed"
        res["message"] = f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return res


def _read_mosaic_wcs(path):
    """The TAN-SIP header of a wcs- file, checked (a valid celestial WCS, finite SIP terms)
    with errors naming the file."""
    header = read_wcs_header(path)
    make_wcs(header, path)
    SipModel.from_header(header, path)
    return header


def _run(spec, res):
    kind = _KINDS[spec["kind"]]
    did = spec["data_id"]
    cfg = spec["config"]
    if did.get("tract") is None:
        raise MosaicError("no wcs- file in any tract (mosaic.py has not been run for this "
                          "CCD, or give tract=)")
    repo = Repository(spec["root"], spec["rerun"])
    try:
        det = hsc()[did["ccd"]]
    except (KeyError, IndexError):
        raise MosaicError(f"no CCD {did['ccd']} in the HSC camera") from None
    out = repo.path(kind["output"], **did)
    res["path"] = out
    inputs = {}
    for name, dataset in ((kind["input_name"], kind["input"]), ("wcs", "wcs"), ("fcr", "fcr")):
        path = repo.find(dataset, **did)
        if path is None:
            raise MosaicError(f"no {name} file {repo.relative_path(dataset, **did)} under "
                              + " or ".join(repo.search_path))
        inputs[name] = path
    if not spec.get("overwrite") and _up_to_date(out, inputs.values()):
        res["status"] = "uptodate"
        return
    threads = cfg.get("threads") or _default_threads(spec)
    t0 = time.perf_counter()
    wcs_header = _read_mosaic_wcs(inputs["wcs"])
    fcr = read_fcr(inputs["fcr"], det.nquarter, det.width, det.height)
    if (spec["kind"] == "exposure" or cfg.get("doApplyCalib")) and not fcr.fluxmag0 > 0:
        raise MosaicError(f"{inputs['fcr']}: FLUXMAG0 = {fcr.fluxmag0:g}: the mosaic gave this "
                          "CCD no zero point" + ("" if spec["kind"] == "exposure" else
                                                 " (--config doApplyCalib=False skips the "
                                                 "magnitudes)"))
    check_correction(wcs_header, fcr, det.width, det.height, wcs_source=inputs["wcs"],
                     fcr_source=inputs["fcr"])
    if spec["kind"] == "exposure":
        exp = read_corr(inputs["CORR"])
        t1 = time.perf_counter()
        timing = {}
        cal = calibrate_exposure(exp, wcs_header, fcr, interpolate=cfg["interpolate"],
                                 threads=threads, inplace=True, timing=timing)
        res["t_pixels"] = timing.get("kernel", 0.0)
        t2 = time.perf_counter()
        write_corr(out, cal, archive_from=inputs["CORR"])
    else:
        table = read_src(inputs["SRC"])
        t1 = time.perf_counter()
        cal = calibrate_catalog(table, wcs_header, fcr, apply_calib=cfg["doApplyCalib"],
                                threads=threads, source=inputs["SRC"])
        t2 = time.perf_counter()
        write_src(out, cal, afw_type=table.meta.get("afw_type") or "SOURCE")
    t3 = time.perf_counter()
    res.update(status="written", t_read=t1 - t0, t_kernel=t2 - t1, t_write=t3 - t2)


# ------------------------------------------------------------------------------------------
# running: serial, local processes, dask.distributed
# ------------------------------------------------------------------------------------------

class Progress:
    """CCDs done / total on `stream` (stderr), drawn only if it is a terminal."""

    def __init__(self, total, label, stream=None, enabled=None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = (hasattr(self.stream, "isatty") and self.stream.isatty()) \
            if enabled is None else enabled
        self.total, self.label = total, label
        self.done = self.failed = 0
        self.t0 = time.time()
        self._drawn = False
        self._draw()

    def _draw(self):
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        fail = f", {self.failed} failed" if self.failed else ""
        elapsed = time.time() - self.t0
        eta = ""
        if 0 < self.done < self.total:
            eta = f", {elapsed / self.done * (self.total - self.done):.0f} s left"
        self.stream.write(f"\r{self.label}: [{bar}] {self.done}/{self.total} CCDs{fail}{eta}\033[K")
        self.stream.flush()
        self._drawn = True

    def update(self, failed=False):
        """Count one more CCD done (and failed if `failed`) and redraw the bar."""
        self.done += 1
        self.failed += bool(failed)
        self._draw()

    def write(self, message):
        """Print a line (e.g. a failure) above the bar."""
        if self.enabled and self._drawn:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        self.stream.flush()
        self._draw()

    def close(self):
        """End the bar's line, if a bar was drawn."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _failed_result(spec, message):
    return {"label": _label(spec["data_id"]), "status": "failed", "message": message,
            "path": None, "t_read": 0.0, "t_kernel": 0.0, "t_pixels": 0.0, "t_write": 0.0}


def run_tasks(tasks, jobs=1, client=None, on_result=None):
    """Run the tasks serially, in `jobs` spawned local processes, or on a dask.distributed
    `client`; `on_result(result)` is called as each finishes. Returns the results in the
    order of `tasks`."""
    results = [None] * len(tasks)

    def done(i, res):
        results[i] = res
        if on_result is not None:
            on_result(res)

    if client is not None:
        from distributed import as_completed
        specs = [dict(t, threads=t.get("threads") if t.get("threads") is not None else 1)
                 for t in tasks]
        futures = client.map(run_task, specs, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures):
                i = index[fut.key]
                try:
                    res = fut.result()
                except Exception as e:   # the worker died, or the task could not run there
                    res = _failed_result(tasks[i], f"dask task failed: {type(e).__name__}: {e}")
                done(i, res)
        except BaseException:            # Ctrl-C: do not leave the cluster working
            client.cancel(futures)
            raise
    elif jobs > 1 and len(tasks) > 1:
        nproc = min(jobs, len(tasks))
        per = max(1, (os.cpu_count() or 1) // nproc)
        specs = [dict(t, threads=t.get("threads") if t.get("threads") is not None else per)
                 for t in tasks]
        ex = process_pool(nproc)
        try:
            futures = {ex.submit(run_task, s): i for i, s in enumerate(specs)}
            for fut in concurrent.futures.as_completed(futures):
                i = futures[fut]
                try:
                    res = fut.result()
                except Exception as e:   # BrokenProcessPool: a worker was killed
                    res = _failed_result(tasks[i], f"worker process failed: {type(e).__name__}")
                done(i, res)
        except MosaicError:              # on_result stops the run: drop the queued CCDs,
            ex.shutdown(wait=True, cancel_futures=True)     # let the running ones finish
            raise
        except BaseException:            # Ctrl-C: drop the queued CCDs, do not wait for them
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
    else:
        for i, t in enumerate(tasks):
            done(i, run_task(t))
    return results


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def run_calibrate(req):
    """Run calibrateExposure.py / calibrateCatalog.py; returns the exit status (1 if some CCD
    failed). The arguments and the registry are checked first (an error there leaves the
    rerun as it was, not even created), then, under the rerun's lock (a mosaic.py writing the
    tract's outputs holds it), the mosaic outputs are looked up and the CCDs done."""
    kind = _KINDS[req.kind]
    t0 = time.time()
    cfg = kind["config"]().update(req.config)
    if req.jobs < 1:
        raise MosaicError(f"-j must be at least 1, not {req.jobs}")
    repo = Repository(req.root, req.rerun)
    parse_ids(req.ids)                   # --id syntax before the registry is opened
    refs = resolve_refs(repo, req.ids)
    with rerun_lock(repo.root, repo.rerun_dir, kind["command"]):
        return _run_calibrate(req, repo, refs, cfg, t0)


def _check_mosaic_outputs(repo, refs):
    """MosaicError unless at least one selected CCD has a wcs- file (in its tract=, or in any
    tract): a tract without mosaic outputs is one error, not one failure per CCD."""
    tracts = sorted({r.tract for r in refs if r.tract is not None})
    for ref in refs:
        if ref.tract is None:
            if _tracts_with_wcs(repo, ref):
                return
        elif repo.find("wcs", **ref.data_id) is not None:
            return
    where = " or ".join(repo.search_path)
    ccds = "the CCD" if len(refs) == 1 else f"any of the {len(refs)} CCDs"
    if tracts:
        what = (f"tract {tracts[0]}" if len(tracts) == 1 else
                "tracts " + ", ".join(map(str, tracts)) if len(tracts) < 4 else
                f"tracts {tracts[0]}..{tracts[-1]}")
        raise MosaicError(f"{what}: no mosaic outputs (wcs- files) for {ccds} selected by --id "
                          f"under {where}: run mosaic.py for it first")
    raise MosaicError(f"no mosaic outputs (wcs- files) in any tract for {ccds} selected by "
                      f"--id under {where}: run mosaic.py first")


def _run_calibrate(req, repo, refs, cfg, t0):
    kind = _KINDS[req.kind]
    name = kind["command"]
    _check_mosaic_outputs(repo, refs)
    tasks = make_tasks(req.kind, repo, refs, cfg.to_dict(), overwrite=req.overwrite,
                       threads=cfg.threads or None)
    repo.make_rerun_dir()
    client = dask_client(req.scheduler)
    progress = Progress(len(tasks), name)

    def report(res):
        if res.get("fatal"):        # an output cannot be written: stop (one error line)
            raise MosaicError(res["message"])
        if res["status"] == "failed":
            progress.write(f"{name}: skipping {res['label']}: {res['message']}")
        progress.update(failed=res["status"] == "failed")

    try:
        results = run_tasks(tasks, jobs=req.jobs, client=client, on_result=report)
    finally:
        progress.close()
        if client is not None:
            client.close()
    written = [r for r in results if r["status"] == "written"]
    fresh = sum(r["status"] == "uptodate" for r in results)
    failed = sum(r["status"] == "failed" for r in results)
    parts = [f"{len(written)} written"]
    if fresh:
        parts.append(f"{fresh} up to date (--overwrite recomputes them)")
    if failed:
        parts.append(f"{failed} failed")
    line = f"{name}: {len(tasks)} CCDs: " + ", ".join(parts) + f" in {time.time() - t0:.1f} s"
    if written:
        tr, tk, tp, tw = (sum(r[k] for r in written) / len(written)
                          for k in ("t_read", "t_kernel", "t_pixels", "t_write"))
        pix = f" (pixel kernel {tp:.3f} s)" if req.kind == "exposure" else ""
        line += f" (per CCD: read {tr:.2f} s, calibrate {tk:.3f} s{pix}, write {tw:.2f} s)"
    print(line)
    return 1 if failed else 0
