"""hscPipe's reference match files: icMatch (``MATCH-*``), srcMatch (``SRCMATCH-*``) and
srcMatchFull (``SRCMATCHFULL-*``), read and written.

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

:func:`mosaicfit.pipeline.references.load_match_references` reads the files of the CCDs of a
run and associates them with the sources the fit uses.
"""
import os
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .. import MosaicError
from ..units import JY_AB, NJY_PER_JY
from .afwtable import afw_table_hdu, read_afw_table
from .atomic import write_fits
from .src import SCHEMAS

__all__ = ["MatchList", "read_match_file", "write_match_file", "write_full_match_file",
           "full_match_table", "find_match_files", "dataset_present", "MATCH_DATASETS",
           "SIBLINGS", "FILE_PREFIX"]

MATCH_DATASETS = ("srcMatch", "icMatch")
# dataset -> (its denormalized sibling, the catalogue its 'second' ids refer to)
SIBLINGS = {"srcMatch": ("srcMatchFull", "src"), "icMatch": (None, "icSrc")}
FILE_PREFIX = {"srcMatch": "SRCMATCH", "srcMatchFull": "SRCMATCHFULL", "icMatch": "MATCH"}
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
    units = {"distance": "rad"}
    for name in table.colnames:
        u = table[name].meta.get("TUNIT")
        if u is not None:
            units[name] = u
    hdu = afw_table_hdu(table, docs={"distance": "Distance between ref and src"}, units=units,
                        extra_cards=_meta_cards(meta), version=version, path=path)
    write_fits(fits.HDUList([fits.PrimaryHDU(), hdu]), path)


def find_match_files(repo, data_id, dataset):
    """(normalized path or None, Full path or None) of a CCD for 'srcMatch' or 'icMatch'."""
    full_ds = SIBLINGS[dataset][0]
    p = repo.find(dataset, **data_id)
    pf = repo.find(full_ds, **data_id) if full_ds else None
    return p, pf


def dataset_present(repo, data_ids, dataset):
    """Whether any of the CCDs has a match file of `dataset` (either form)."""
    return any(any(find_match_files(repo, d, dataset)) for d in data_ids)


