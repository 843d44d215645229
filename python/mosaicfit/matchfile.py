"""hscPipe's reference match files: icMatch (``MATCH-*``), srcMatch (``SRCMATCH-*``) and
srcMatchFull (``SRCMATCHFULL-*``), as a source of reference stars for the mosaic fit.

What hscPipe wrote (obs_subaru's ``SubaruProcessCcdTask.write``, hscPipe 3.x/4.x):

- **normalized** (``icMatch``, ``srcMatch``): ``afw.table.packMatches(matches)``, a BaseCatalog
  with three columns ``first`` (int64: id of the reference object), ``second`` (int64: id of
  the source in ICSRC for icMatch, in SRC for srcMatch) and ``distance`` (double, the
  separation, radians), and the match metadata of the astrometry step as header cards:
  ``RA``, ``DEC`` (centre of the reference query, degrees), ``RADIUS`` (degrees), ``SMATCHV``
  (1, the match-vector version) and ``FILTER``. The reference objects are not in the file:
  meas_astrom's ``joinMatchListWithCatalog`` reloads the reference catalogue in that circle
  and joins by id (``afw.table.unpackMatches``);
- **denormalized** ("Full": ``srcMatchFull``, and ``icMatchFull`` when asked): every field of
  the reference record with a ``ref`` prefix, every field of the source record with a ``src``
  prefix, and ``distance`` (``hsc.pipe.base.matches.matchesToCatalog``; later
  ``lsst.meas.astrom.denormalizeMatches``), the same metadata plus ``REFCAT`` (the reference
  catalogue's name). hscPipe 3.x (afw table version 0) named them ``ref.coord`` (2-vector,
  radians), ``src.centroid.sdss``..., written with ``_`` for ``.`` on disk; later versions
  ``ref_coord_ra``, ``ref_<band>_flux``, ``src_base_SdssCentroid_x``...

Reference fluxes are converted to the LSST reference-catalogue convention of the fit (nJy,
``<band>_flux``/``<band>_fluxErr``): by the column's TUNIT when it says (``Jy``, ``nJy``,
``maggie``), else Jy in afw table version >= 1 files (astrometry.net catalogues loaded by
meas_astrom were in Jy; meas_mosaic divided them by 3631) and maggies (10^(-0.4 m)) in
version 0 ones, unless the values are nJy-sized (median above 1).

:func:`load_match_references` reads the files of the CCDs of a run and returns the reference
table and, per CCD, the reference row of each SRC source (``ref_index``).
"""
import os
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from . import MosaicError
from .catalog import SCHEMAS, afw_table_hdu, read_afw_table
from .atomic import write_fits

__all__ = ["MatchList", "read_match_file", "write_match_file", "write_full_match_file",
           "full_match_table", "load_match_references", "MATCH_DATASETS", "NJY_PER_JY"]

NJY_PER_JY = 1e9
JY_AB = 3631.0               # AB zero point in Jy: 1 maggie
MATCH_DATASETS = ("srcMatch", "icMatch")
# dataset -> (its denormalized sibling, the catalogue its 'second' ids refer to)
_SIBLINGS = {"srcMatch": ("srcMatchFull", "src"), "icMatch": (None, "icSrc")}
_FILE_PREFIX = {"srcMatch": "SRCMATCH", "srcMatchFull": "SRCMATCHFULL", "icMatch": "MATCH"}
_META_KEYS = ("RA", "DEC", "RADIUS", "SMATCHV", "FILTER", "REFCAT")


@dataclass
class MatchList:
    """One match file: ids, separations and metadata; for the Full form the reference records
    (converted to the LSST reference-catalogue convention) and the source centroids."""
    path: str
    form: str                       # "normalized" or "full"
    ref_id: np.ndarray              # int64
    src_id: np.ndarray              # int64
    distance: np.ndarray            # radians
    meta: dict = field(default_factory=dict)
    ref: Table = None               # Full: one row per match (id, coord_ra/dec rad, fluxes nJy...)
    src_xy: tuple = None            # Full: (x, y) pixel centroids of the sources, if present

    def __len__(self):
        return len(self.ref_id)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _meta(table):
    out = {}
    for key, value, _ in table.meta.get("afw_metadata", []):
        k = str(key).upper()
        if k.startswith("HIERARCH "):
            k = k[9:]
        out.setdefault(k, value.strip() if isinstance(value, str) else value)
    return out


def _split_prefix(table, prefix):
    """{field name without the prefix: column name} for the columns named prefix.X / prefix_X."""
    out = {}
    for name in table.colnames:
        for sep in (".", "_"):
            if name.startswith(prefix + sep):
                out.setdefault(name[len(prefix) + 1:], name)
    return out


def _ids(table, name, path):
    a = np.asarray(table[name])
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise MosaicError(f"{path}: column {name!r} of the match file is not an integer id")
    return a.astype(np.int64)


def read_match_file(path):
    """Read a match file in either form (see the module doc). Errors (missing, truncated, not
    a match table) are one-line MosaicErrors naming the file."""
    path = os.fspath(path)
    t = read_afw_table(path, what="match file")
    meta = _meta(t)
    n = len(t)
    dist = np.asarray(t["distance"], float) if "distance" in t.colnames else np.full(n, np.nan)
    if "first" in t.colnames and "second" in t.colnames:
        return MatchList(path, "normalized", _ids(t, "first", path), _ids(t, "second", path),
                         dist, meta)
    ref_cols, src_cols = _split_prefix(t, "ref"), _split_prefix(t, "src")
    if "id" not in ref_cols or "id" not in src_cols:
        raise MosaicError(f"{path}: not a match file (no first/second columns, nor ref/src "
                          f"id columns; columns: {', '.join(t.colnames[:8])}"
                          f"{'...' if len(t.colnames) > 8 else ''})")
    ref = _reference_table(t, ref_cols, path)
    src = Table([t[c] for c in src_cols.values()], names=list(src_cols), copy=False)
    xy = None                    # the source centroids (for icMatch; srcMatch needs the ids)
    for spec in SCHEMAS.values():
        cx = next((c for c in spec["x"] if c.present(src)), None)
        cy = next((c for c in spec["y"] if c.present(src)), None)
        if cx is not None and cy is not None:
            xy = (cx.get(src).astype(float), cy.get(src).astype(float))
            break
    return MatchList(path, "full", ref["id"].astype(np.int64), _ids(t, src_cols["id"], path),
                     dist, meta, ref, xy)


def _flux_scale(col, values, version):
    """Factor taking a reference flux column to nJy."""
    unit = str(col.meta.get("TUNIT") or (col.unit.to_string() if col.unit is not None else ""))
    u = unit.strip().lower()
    if u == "njy":
        return 1.0
    if u == "jy":
        return NJY_PER_JY
    if u.startswith("maggie") or u in ("dn", "mgy"):
        return JY_AB * NJY_PER_JY
    pos = values[np.isfinite(values) & (values > 0)]
    if len(pos) and np.median(pos) > 1.0:
        return 1.0               # nJy-sized (stars brighter than 31.4 mag)
    return NJY_PER_JY if (version or 0) >= 1 else JY_AB * NJY_PER_JY


_NOT_FLUX = {"id", "parent", "photometric", "resolved", "variable", "stargal", "hasCentroid",
             "epoch", "distance"}


def _reference_table(t, ref_cols, path):
    """The ref* columns of a Full match table in the LSST reference-catalogue convention."""
    n = len(t)
    out = Table()
    out["id"] = _ids(t, ref_cols["id"], path)
    if "coord_ra" in ref_cols and "coord_dec" in ref_cols:
        ra, dec = t[ref_cols["coord_ra"]], t[ref_cols["coord_dec"]]
    elif "coord" in ref_cols and np.asarray(t[ref_cols["coord"]]).ndim == 2:
        c = np.asarray(t[ref_cols["coord"]], float)
        ra, dec = c[:, 0], c[:, 1]
    else:
        raise MosaicError(f"{path}: the match file has no reference coordinates "
                          "(ref_coord_ra/ref_coord_dec or ref_coord)")
    out["coord_ra"] = np.asarray(ra, float)          # radians (afw Angle)
    out["coord_dec"] = np.asarray(dec, float)
    for name in ("coord_raErr", "coord_decErr", "pm_ra", "pm_dec", "pm_raErr", "pm_decErr",
                 "epoch"):
        if name in ref_cols:
            out[name] = np.asarray(t[ref_cols[name]], float)
    version = t.meta.get("afw_table_version")
    for name, col in ref_cols.items():
        a = np.asarray(t[col])
        if a.ndim != 1 or a.dtype.kind != "f" or name in _NOT_FLUX:
            continue
        band = None
        for suffix in ("_flux", ".flux", "_instFlux"):
            if name.endswith(suffix):
                band = name[:-len(suffix)]
        if band is None and name.isalpha() and len(name) <= 2:
            band = name                       # hscPipe 3.x: the band's name is the flux field
        if not band or not band.replace("_", "").isalnum() or band.startswith("coord"):
            continue
        scale = _flux_scale(t[col], a, version)
        out[f"{band}_flux"] = a.astype(float) * scale
        for err in (f"{band}_fluxErr", f"{band}_fluxSigma", f"{band}_flux_err",
                    f"{band}.flux.err", f"{band}_err", f"{band}.err"):
            if err in ref_cols:
                out[f"{band}_fluxErr"] = np.asarray(t[ref_cols[err]], float) * scale
                break
    if len(out) != n:
        raise MosaicError(f"{path}: inconsistent match table")
    refcat = _meta(t).get("REFCAT")
    if refcat:
        out.meta["name"] = str(refcat)
    return out


# --------------------------------------------------------------------------------------------
# writing (what hscPipe's processCcd wrote; used by the simulator and the tests)
# --------------------------------------------------------------------------------------------
def _meta_cards(meta):
    cards = []
    comments = {"RA": "field center in degrees", "DEC": "field center in degrees",
                "RADIUS": "field radius in degrees, approximate",
                "SMATCHV": "SourceMatchVector version number",
                "FILTER": "filter name for photometric data", "REFCAT": ""}
    for key, value in meta.items():
        cards.append((key, value, comments.get(key, "")))
    return cards


def write_match_file(path, ref_id, src_id, distance, meta, version=1):
    """A normalized match file (afw.table.packMatches + the match metadata)."""
    t = Table()
    t["first"] = np.asarray(ref_id, np.int64)
    t["second"] = np.asarray(src_id, np.int64)
    t["distance"] = np.asarray(distance, float)
    docs = {"first": "ID for first source record in match.",
            "second": "ID for second source record in match.",
            "distance": "Distance between matches sources."}
    hdu = afw_table_hdu(t, docs=docs, units={"distance": ""}, extra_cards=_meta_cards(meta),
                        version=version, path=path)
    from astropy.io import fits
    write_fits(fits.HDUList([fits.PrimaryHDU(), hdu]), path)


def full_match_table(ref_rows, src_rows, distance, sep="_"):
    """The denormalized match table: ref<sep>X for every reference column, src<sep>X for every
    source column (bool flags included), then distance."""
    t = Table()
    for name in ref_rows.colnames:
        t[f"ref{sep}{name}"] = ref_rows[name]
        t[f"ref{sep}{name}"].meta.update(ref_rows[name].meta)
        t[f"ref{sep}{name}"].unit = ref_rows[name].unit
    for name in src_rows.colnames:
        t[f"src{sep}{name}"] = src_rows[name]
        t[f"src{sep}{name}"].meta.update(src_rows[name].meta)
    t["distance"] = np.asarray(distance, float)
    return t


def write_full_match_file(path, table, meta, version=1):
    """A denormalized match file from :func:`full_match_table`'s table."""
    from astropy.io import fits
    units = {"distance": "rad"}
    for name in table.colnames:
        u = table[name].meta.get("TUNIT")
        if u is not None:
            units[name] = u
    hdu = afw_table_hdu(table, docs={"distance": "Distance between ref and src"}, units=units,
                        extra_cards=_meta_cards(meta), version=version, path=path)
    write_fits(fits.HDUList([fits.PrimaryHDU(), hdu]), path)


# --------------------------------------------------------------------------------------------
# the reference stars of a run
# --------------------------------------------------------------------------------------------
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


def find_match_files(repo, data_id, dataset):
    """(normalized path or None, Full path or None) of a CCD for 'srcMatch' or 'icMatch'."""
    full_ds = _SIBLINGS[dataset][0]
    p = repo.find(dataset, **data_id)
    pf = repo.find(full_ds, **data_id) if full_ds else None
    return p, pf


def dataset_present(repo, data_ids, dataset):
    """Whether any of the CCDs has a match file of `dataset` (either form)."""
    return any(any(find_match_files(repo, d, dataset)) for d in data_ids)


def _source_positions(repo, data_id, ml, dataset):
    """(ids, x, y) of the sources the 'second' ids refer to when they are not SRC rows."""
    if ml.src_xy is not None:
        return ml.src_id, ml.src_xy[0], ml.src_xy[1]
    from .catalog import read_src, standardize
    path = repo.find(_SIBLINGS[dataset][1], **data_id)
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
    from .matching import nearest
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
            out.missing.append((key, f"no {_FILE_PREFIX[dataset]} file"))
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
        from astropy.table import vstack
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
        out.notes.append(f"{unassociated} matches of the {_FILE_PREFIX[dataset]} files name "
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
        from astropy.table import vstack
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
