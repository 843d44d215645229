"""Reading a run's inputs from the data repository: the data ids of --id, SRC catalogues and
CORR headers.

Thousands of small FITS files per tract: each is read by a worker that only needs the
repository path and the data id, so the reading runs in local processes (-j N) or on a Dask
cluster. CCDs whose inputs are missing are skipped with a message (hscPipe's "Not opening
files" at the edge of the field); unreadable ones are reported by name.
"""
import sys
from contextlib import nullcontext

import numpy as np
from astropy.time import Time

from .. import MosaicError
from ..fit.selection import ExposureData
from ..io.corr import read_corr, read_corr_header
from ..io.dataid import parse_ids, resolve
from ..io.layout import Repository
from ..io.src import fit_columns, read_src, standardize
from ..model.sip import SipModel, pixels_to_sky
from .executor import process_pool
from .progress import progress_bar

__all__ = ["resolve_refs", "load_exposure", "load_exposures", "ccd_sky_corners", "sky_corners"]


def resolve_refs(repo, id_args):
    """The registry's (visit, ccd) refs for the --id arguments; ids absent from the registry
    are reported on stderr (one line), not dropped silently."""
    refs, missing = resolve(parse_ids(id_args), repo.registry)
    if missing:
        shown = ", ".join(f"visit={v}" + ("" if c is None else f" ccd={c}") for v, c in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        print(f"not in the registry {repo.registry_path}: {shown}{more}", file=sys.stderr)
    return refs


def ccd_sky_corners(repo, refs, camera):
    """Sky corners (ra, dec) in degrees of each CCD from its CORR single-frame WCS.
    Returns (corners dict {(visit, ccd): (ra[4], dec[4])}, list of refs without a CORR)."""
    found, missing = [], []
    for ref in refs:
        path = repo.find("calexp", **ref.data_id)
        if path is None:
            missing.append(ref)
            continue
        found.append((ref, SipModel.from_header(read_corr(path, metadata_only=True).wcs_header)))
    corners = sky_corners([m for _, m in found], [r.ccd for r, _ in found], camera)
    return {(r.visit, r.ccd): c for (r, _), c in zip(found, corners)}, missing


def sky_corners(sips, ccds, camera):
    """[(ra[4], dec[4])] in degrees of the corners of CCD ccds[i] through the SipModel
    sips[i], every CCD in one pass (model.sip.pixels_to_sky: the numbers of each
    SipModel.pixel_to_sky; a call per CCD in the readers was ~0.5 ms under cProfile)."""
    if not sips:
        return []
    xy = [camera.ccd_corners(c) for c in ccds]
    ra, dec = pixels_to_sky(sips, np.repeat(np.arange(len(sips)), 4),
                            np.concatenate([x for x, _ in xy]), np.concatenate([y for _, y in xy]))
    return [(ra[4 * i:4 * i + 4], dec[4 * i:4 * i + 4]) for i in range(len(sips))]


def _mjd(h0, ref):
    for key in ("MJD-AVG", "MJD", "MJD-OBS"):
        v = h0.get(key)
        if isinstance(v, (int, float)) and np.isfinite(v):
            return float(v)
    for key in ("DATE-AVG", "DATE-OBS"):
        v = h0.get(key)
        if isinstance(v, str) and v.strip():
            try:
                return float(Time(v.strip(), scale="utc").mjd)
            except ValueError:
                pass
    if ref.dateObs:
        try:
            return float(Time(str(ref.dateObs), scale="utc").mjd)
        except ValueError:
            pass
    return None


def load_exposure(repo, ref, column_map=None):
    """ExposureData of one DataRef of the Repository `repo`; raises FileNotFoundError (input
    absent) or MosaicError (input unreadable or inconsistent)."""
    src = repo.find("src", **ref.data_id)
    corr = repo.find("calexp", **ref.data_id)
    if src is None or corr is None:
        what = " and ".join(n for n, p in (("SRC", src), ("CORR", corr)) if p is None)
        raise FileNotFoundError(f"no {what} for {ref}")
    h0, wh = read_corr_header(corr, lean=True)
    keep = fit_columns(column_map)
    # a column map's functions get the astropy Table; the columns suffice otherwise
    table = read_src(src, columns=keep, as_table=keep is None)
    try:
        cat = standardize(table, column_map=column_map, source=src)
    except ValueError as e:
        raise MosaicError(f"{src}: {e}") from None
    if len(cat["x"]) and not np.any(np.isfinite(cat["x"])):
        raise MosaicError(f"{src}: no finite centroid in the catalogue")
    f0 = h0.get("FLUXMAG0")
    sip = SipModel.from_header(wh)
    return ExposureData(visit=ref.visit, ccd=ref.ccd, catalog=cat, wcs_header=wh, sip=sip,
                        fluxmag0=float(f0) if f0 else None, mjd=_mjd(h0, ref),
                        filter=str(h0.get("FILTER", ref.filter) or ref.filter).strip(),
                        observing=_observing(h0))


def _observing(h0):
    """The observing conditions a CORR primary header gives (fit.chromatic reads them)."""
    out = {}
    for key in ("AIRMASS", "ZD", "ALTITUDE", "PARANG", "HA"):
        v = h0.get(key)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            if np.isfinite(v):
                out[key] = float(v)
        elif key == "HA" and isinstance(v, str) and v.strip():
            out[key] = v.strip()
    return out or None


def _load_many(args):
    root, rerun, refs, column_map = args
    repo = Repository(root, rerun).hold_search_path()
    out = []
    for ref in refs:
        try:
            out.append(("ok", ref, load_exposure(repo, ref, column_map)))
        except FileNotFoundError as e:
            out.append(("missing", ref, str(e)))
        except MosaicError as e:
            out.append(("error", ref, str(e)))
    return out


def load_exposures(repo, refs, jobs=1, column_map=None, client=None, pool=None):
    """Read the inputs of `refs`. Returns (exposures, missing, errors): missing and errors are
    lists of (ref, message). jobs > 1 reads in that many local processes (spawned: the C++
    core uses OpenMP, after which forked children can hang): those of `pool`
    (pipeline.executor.process_pool(jobs): the run's, kept for its writes) if given, else
    started here; `client` (dask.distributed) reads on a cluster instead."""
    refs = list(refs)
    chunks = max(1, min(len(refs), 4 * max(jobs, 1) if client is None else 64))
    parts = [refs[i::chunks] for i in range(chunks)]
    spec = f"{repo.input_rerun}:{repo.rerun}" if getattr(repo, "input_rerun", None) else repo.rerun
    tasks = [(repo.root, spec, p, column_map) for p in parts if p]
    results = []
    with progress_bar(len(refs), "reading") as bar:
        if client is not None:
            from distributed import as_completed
            futures = client.map(_load_many, tasks, pure=False)
            for fut in as_completed(futures):
                bar.update(len(fut.result()))
            results = client.gather(futures)
        elif jobs > 1 and len(refs) > 50:
            with nullcontext(pool) if pool is not None else process_pool(jobs) as ex:
                for part in ex.map(_load_many, tasks):
                    results.append(part)
                    bar.update(len(part))
        else:
            for t in tasks:
                results.append(_load_many(t))
                bar.update(len(results[-1]))
    exposures, missing, errors = [], [], []
    for part in results:
        for status, ref, value in part:
            if status == "ok":
                exposures.append(value)
            elif status == "missing":
                missing.append((ref, value))
            else:
                errors.append((ref, value))
    exposures.sort(key=lambda e: (e.visit, e.ccd))
    return exposures, missing, errors


