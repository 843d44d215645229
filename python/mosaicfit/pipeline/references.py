"""The reference stars of a run: the reference catalogue of the repository (ROOT/ref_cats),
read over the run's footprint, or hscPipe's match files (SRCMATCH, MATCH, SRCMATCHFULL)
associated with the sources the fit uses (``--config matchDataset``).
"""
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table, vstack

from .. import MosaicError
from ..fit.matching import nearest
from ..io.dataid import format_visit_ccds
from ..io.matchfile import (FILE_PREFIX, MATCH_DATASETS, SIBLINGS, dataset_present,
                            find_match_files, read_match_file)
from ..io.refcat import read_refcat
from ..io.src import read_src, standardize
from ..model.sky import radec_to_xyz, xyz_to_radec

log = logging.getLogger("mosaicfit")

__all__ = ["MatchReferences", "load_match_references", "match_references", "sky_circle",
           "refcat_folder"]


@dataclass
class MatchReferences:
    """What :func:`load_match_references` found."""
    refcat: Table                   # reference stars (LSST convention), one row per id
    name: str                       # catalogue name (REFCAT card or ref_cats folder), may be ""
    n_files: int = 0
    n_pairs: int = 0                # associations made (source row <-> reference row)
    missing: list = field(default_factory=list)     # (key, message)
    errors: list = field(default_factory=list)      # (key, one-line message)
    notes: list = field(default_factory=list)       # one-line warnings


def _source_positions(repo, data_id, ml, dataset):
    """(ids, x, y) of the sources the 'second' ids refer to when they are not SRC rows."""
    if ml.src_xy is not None:
        return ml.src_id, ml.src_xy[0], ml.src_xy[1]
    path = repo.find(SIBLINGS[dataset][1], **data_id)
    if path is None:
        raise FileNotFoundError(f"{ml.path}: its sources are in ICSRC, which is missing")
    s = standardize(read_src(path), source=path)
    return s["id"], s["x"], s["y"]


def _associate(repo, data_id, ml, dataset, cat, tol_pix):
    """Row of the SRC catalogue `cat` of each match (-1 if not found)."""
    rows = np.full(len(ml), -1, np.int64)
    if dataset == "srcMatch":
        ids = np.asarray(cat["id"], np.int64)
        order = np.argsort(ids, kind="stable")
        pos = np.clip(np.searchsorted(ids[order], ml.src_id), 0, max(len(ids) - 1, 0))
        if len(ids):
            hit = ids[order][pos] == ml.src_id
            rows[hit] = order[pos[hit]]
        return rows
    # icMatch: the ids are ICSRC's (a catalogue of its own, measured in the calibration step):
    # its sources are the SRC ones nearest on the same CCD
    sid, x, y = _source_positions(repo, data_id, ml, dataset)
    sid = np.asarray(sid, np.int64)
    order = np.argsort(sid, kind="stable")
    pos = np.clip(np.searchsorted(sid[order], ml.src_id), 0, max(len(sid) - 1, 0))
    ok = (sid[order][pos] == ml.src_id) if len(sid) else np.zeros(len(ml), bool)
    k = order[pos[ok]]
    qx, qy = np.asarray(x, float)[k], np.asarray(y, float)[k]
    good = np.isfinite(qx) & np.isfinite(qy)
    sx, sy = np.asarray(cat["x"], float), np.asarray(cat["y"], float)
    fin = np.nonzero(np.isfinite(sx) & np.isfinite(sy))[0]
    if len(fin) and good.any():
        idx, _ = nearest(np.column_stack([sx[fin], sy[fin]]),
                         np.column_stack([qx[good], qy[good]]), tol_pix)
        r = np.full(good.sum(), -1, np.int64)
        r[idx >= 0] = fin[idx[idx >= 0]]
        tmp = np.full(ok.sum(), -1, np.int64)
        tmp[good] = r
        rows[np.nonzero(ok)[0]] = tmp
    return rows


def load_match_references(repo, exposures, data_ids, dataset, refcat=None, refcat_name="",
                          radius_arcsec=1.0, pixel_scale_arcsec=0.168):
    """Reference stars and associations from the match files of `exposures`.

    data_ids: {(visit, ccd): data id dict} (for the file paths). dataset: 'srcMatch' (SRCMATCH,
    pairs with SRC; SRCMATCHFULL where SRCMATCH is missing or normalized without a reference
    catalogue) or 'icMatch' (MATCH, pairs with ICSRC, whose sources are associated with the
    nearest SRC source within `radius_arcsec`). refcat: the reference catalogue (LSST
    convention) that denormalizes normalized files, or None.

    Sets ``e.catalog['ref_index']`` (row of the returned table per source, -1 if none) on each
    exposure with matches and returns a :class:`MatchReferences`.
    """
    if dataset not in MATCH_DATASETS:
        raise ValueError(f"unknown match dataset {dataset!r}")
    tol_pix = radius_arcsec / pixel_scale_arcsec
    out = MatchReferences(Table(), refcat_name or "")
    ref_pos = {}
    if refcat is not None and len(refcat):
        rid = np.asarray(refcat["id"], np.int64)
        ref_pos = {int(i): k for k, i in enumerate(rid)}
    full_rows = []             # Tables of reference rows from Full files
    per_exp = []               # (exposure, rows into cat, reference ids)
    unknown = unassociated = 0
    for e in exposures:
        key = (e.visit, e.ccd)
        did = data_ids[key]
        p, pf = find_match_files(repo, did, dataset)
        if p is None and pf is None:
            out.missing.append((key, f"no {FILE_PREFIX[dataset]} file"))
            continue
        try:
            ml = read_match_file(p) if p is not None else read_match_file(pf)
            if ml.form == "normalized" and not ref_pos:
                if pf is not None and pf != ml.path:
                    ml = read_match_file(pf)
                else:
                    raise MosaicError(f"{ml.path}: a normalized match file needs the reference "
                                      "catalogue (ROOT/ref_cats) to be denormalized")
            if ml.meta.get("SMATCHV") not in (None, 1):
                raise MosaicError(f"{ml.path}: SMATCHV = {ml.meta['SMATCHV']}, not 1")
            rows = _associate(repo, did, ml, dataset, e.catalog, tol_pix)
        except FileNotFoundError as err:
            out.missing.append((key, str(err)))
            continue
        except MosaicError as err:
            out.errors.append((key, " ".join(str(err).split())))
            continue
        out.n_files += 1
        unassociated += int((rows < 0).sum())
        if ml.form == "full":
            full_rows.append(ml.ref)
            if not out.name and ml.meta.get("REFCAT"):
                out.name = str(ml.meta["REFCAT"])
        elif ref_pos:
            known = np.array([int(i) in ref_pos for i in ml.ref_id], bool)
            unknown += int((~known).sum())
            rows = np.where(known, rows, -1)
        per_exp.append((e, rows, ml.ref_id))
    # the reference table: rows of the catalogue where it has them, else those of Full files
    ids = np.unique(np.concatenate([r[2][r[1] >= 0] for r in per_exp])) if per_exp else \
        np.zeros(0, np.int64)
    parts = []
    if ref_pos:
        have = np.array([int(i) in ref_pos for i in ids], bool)
        if have.any():
            parts.append(refcat[[ref_pos[int(i)] for i in ids[have]]])
        rest = ids[~have]
    else:
        rest = ids
    if len(rest) and full_rows:
        fr = vstack(full_rows, join_type="outer", metadata_conflicts="silent") \
            if len(full_rows) > 1 else full_rows[0]
        fid = np.asarray(fr["id"], np.int64)
        first = np.unique(fid, return_index=True)[1]
        fr = fr[first]
        fid = fid[first]
        sel = np.isin(fid, rest)
        parts.append(fr[sel])
    table = _stack(parts)
    if unknown:
        out.notes.append(f"{unknown} reference ids of the match files are not in the reference "
                         f"catalogue{' ' + refcat_name if refcat_name else ''}: not used")
    if unassociated:
        what = "SRC" if dataset == "srcMatch" else "SRC (through ICSRC)"
        out.notes.append(f"{unassociated} matches of the {FILE_PREFIX[dataset]} files name "
                         f"sources not found in {what}: not used")
    tid = np.asarray(table["id"], np.int64) if len(table) else np.zeros(0, np.int64)
    where = {int(i): k for k, i in enumerate(tid)}
    for e, rows, rid in per_exp:
        n = len(e.catalog["x"])
        ref_index = np.full(n, -1, np.int64)
        ok = (rows >= 0) & np.array([int(i) in where for i in rid], bool) if len(rid) else \
            np.zeros(0, bool)
        ref_index[rows[ok]] = [where[int(i)] for i in rid[ok]]
        e.catalog["ref_index"] = ref_index
        out.n_pairs += int(ok.sum())
    table.meta["name"] = out.name
    out.refcat = table
    return out


def _stack(parts):
    """Concatenate reference tables with possibly different columns (missing values NaN)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Table({"id": np.zeros(0, np.int64), "coord_ra": np.zeros(0),
                      "coord_dec": np.zeros(0)})
    if len(parts) == 1:
        t = Table(parts[0], copy=True)
    else:
        t = vstack(parts, join_type="outer", metadata_conflicts="silent")
    for name in t.colnames:
        col = t[name]
        if getattr(col, "mask", None) is not None:
            if col.dtype.kind == "f":
                t[name] = np.ma.filled(col, np.nan)
            elif col.dtype.kind == "b":
                t[name] = np.ma.filled(col, False)
            else:
                t[name] = np.ma.filled(col, 0)
    t.meta.clear()
    return t


def sky_circle(corners):
    """(ra, dec, radius) in degrees of a circle around CCD corners, a list of (ra[4], dec[4]),
    with a 0.05 degree margin."""
    ra = np.concatenate([c[0] for c in corners])
    dec = np.concatenate([c[1] for c in corners])
    xyz = radec_to_xyz(ra, dec)
    cen = xyz.mean(0)
    cen /= np.linalg.norm(cen)
    cra, cdec = xyz_to_radec(cen)
    rad = np.degrees(np.arccos(np.clip(xyz @ cen, -1, 1))).max() + 0.05
    return float(cra), float(cdec), float(rad)


def match_references(repo, refs, exposures, corners, cfg, rc_path):
    """Reference stars from hscPipe's match files (config matchDataset; by default when the
    repository has no ref_cats): a MatchReferences, or None when ref_cats is used. Missing
    match files are reported in one line, unreadable ones one line each (as errors)."""
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
        refcat = read_refcat(rc_path, *sky_circle([corners[k] for k in keys]), trim=True)
    t0 = time.time()
    mr = load_match_references(repo, exposures, data_ids, ds, refcat,
                               os.path.basename(rc_path) if rc_path else "", cfg.radXMatch)
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


def refcat_folder(repo, name=""):
    """The reference catalogue folder: ROOT/ref_cats/NAME, or the only one there."""
    base = os.path.join(repo.root, "ref_cats")
    if name:
        path = repo.refcat_dir(name)
        if not os.path.isdir(path):
            raise MosaicError(f"{path}: no such reference catalogue folder")
        return path
    names = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))) \
        if os.path.isdir(base) else []
    if not names:
        return None
    if len(names) > 1:
        raise MosaicError(f"{base}: several reference catalogues ({', '.join(names)}); "
                          "choose one with --config refcat=NAME")
    return os.path.join(base, names[0])
