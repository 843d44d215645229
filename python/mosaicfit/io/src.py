"""Source catalogues (``SRC-VVVVVVV-CCC.fits``) and the column schemas the fit reads from them.

An SRC is an afw table (:mod:`mosaicfit.io.afwtable`). hscPipe 3.x/4.x (afw table version 0)
wrote dotted field names with ``.`` replaced by ``_`` on disk (``flux_psf``, ``centroid_sdss``)
and 2-vector columns for points (``centroid.sdss``, TCCLS ``Point``), packed covariances
(``centroid.sdss.err``, TCCLS ``Covariance(Point)``, elements (xx, xy, yy)) and a 2-vector
``coord`` (ra, dec in radians); LSST's are ``base_*``. Both spellings are accepted here
(:data:`SCHEMAS`, :func:`standardize`).

Pixel positions are 0-based (afw convention: the centre of the first pixel is 0.0).
"""
import os
import re

import numpy as np
from astropy.table import Table

from .. import MosaicError
from .afwtable import afw_table_file_bytes, read_afw_table
from .atomic import write_bytes

__all__ = ["read_src", "fit_columns", "write_src", "SCHEMAS", "REQUIRED_FIELDS",
           "detect_schema", "resolve_columns", "standardize"]


def read_src(path, columns=None, as_table=True):
    """Read an SRC catalog (afw layout or plain FITS table) into an astropy Table (with
    ``as_table=False`` its :class:`~mosaicfit.io.afwtable.Columns`, what :func:`standardize`
    needs and ~2x faster to read).

    The first binary-table HDU is read; the packed ``flags`` bits become bool columns named by
    ``TFLAGn``; 'L' and 1-bit 'X' columns are bool columns too. An empty table gives 0 rows.
    `columns`: read only these columns (names; e.g. :func:`fit_columns`), else all.
    Errors (missing, not FITS, truncated, no table) raise MosaicError naming the file.
    """
    return read_afw_table(path, what="source catalog", columns=columns, as_table=as_table)


def fit_columns(column_map=None):
    """The names of every column :func:`standardize` may read with `column_map` (a set), or
    None (all) where a map entry is a function of the whole table."""
    names = {c.name for schema in SCHEMAS.values() for specs in schema.values() for c in specs}
    for spec in (column_map or {}).values():
        spec = _parse_user_spec(spec)
        if callable(spec) and not isinstance(spec, Col):
            return None
        names.add(spec.name)
    return names


def write_src(path, table, docs=None, units=None, afw_type="SOURCE"):
    """Write a source catalog in the afw layout (atomically and byte-reproducibly: an SRC, or
    the CALSRC of calibrateCatalog.py).

    Bool columns are packed into a first ``flags`` bit column (TFLAGn/TFDOCn, FLAGCOL=1); other
    columns get TDOCn, TUNITn ('rad' for coord_ra/dec, 'pixel' for centroids, 'count' for
    fluxes unless the column says otherwise), TCCLSn ('Angle' for coord_ra/dec, 'Scalar',
    'Array', 'String'); then the table metadata, AFW_TABLE_VERSION and AFW_TYPE.
    `docs` and `units` map column names to strings and override what the columns carry.
    """
    path = os.fspath(path)
    if not isinstance(table, Table):
        table = Table(table)
    write_bytes(afw_table_file_bytes(table, docs=docs, units=units, afw_type=afw_type,
                                     path=path), path)


# --------------------------------------------------------------------------------------------
# Schemas: logical fields -> column names
# --------------------------------------------------------------------------------------------

class Col:
    """A column spec: a column `name`, optionally one element `index` of a vector column, and
    optionally the square root of it (`sqrt`, for a variance stored in a packed covariance)."""

    def __init__(self, name, index=None, sqrt=False):
        self.name, self.index, self.sqrt = name, index, sqrt

    def present(self, table):
        """Whether `table` has this column (for a vector column: with element `index`)."""
        if self.name not in table.colnames:
            return False
        a = table[self.name]
        if self.index is None:
            return a.ndim == 1
        return a.ndim == 2 and a.shape[1] > self.index

    def get(self, table):
        """The column's values in `table`: element `index` if set, square-rooted if `sqrt`."""
        a = np.asarray(table[self.name])
        if self.index is not None:
            a = a[:, self.index]
        if self.sqrt:
            a = np.sqrt(a.astype(float))
        return a

    def __repr__(self):
        s = self.name if self.index is None else f"{self.name}[{self.index}]"
        return f"sqrt({s})" if self.sqrt else s

    def __eq__(self, other):
        return isinstance(other, Col) and (self.name, self.index, self.sqrt) == \
            (other.name, other.index, other.sqrt)

    def __hash__(self):
        return hash((self.name, self.index, self.sqrt))


def _hsc(*specs):
    """hscPipe 3.x/4.x alternatives: each dotted name also in its on-disk '_' spelling."""
    out = []
    for s in specs:
        c = s if isinstance(s, Col) else Col(s)
        out.append(c)
        if "." in c.name:
            out.append(Col(c.name.replace(".", "_"), c.index, c.sqrt))
    return tuple(out)


def _lsst(*names):
    return tuple(Col(n) for n in names)


#: Logical fields used by the fitter and, per schema, the columns that can hold them
#: (first present wins). Coordinates are radians, centroids 0-based pixels, fluxes counts.
SCHEMAS = {
    "lsst": {
        "id": _lsst("id"),
        "coord_ra": _lsst("coord_ra"),
        "coord_dec": _lsst("coord_dec"),
        "x": _lsst("base_SdssCentroid_x", "slot_Centroid_x"),
        "y": _lsst("base_SdssCentroid_y", "slot_Centroid_y"),
        "x_err": _lsst("base_SdssCentroid_xErr", "base_SdssCentroid_xSigma",
                       "slot_Centroid_xErr", "slot_Centroid_xSigma"),
        "y_err": _lsst("base_SdssCentroid_yErr", "base_SdssCentroid_ySigma",
                       "slot_Centroid_yErr", "slot_Centroid_ySigma"),
        "flux": _lsst("base_PsfFlux_instFlux", "base_PsfFlux_flux",
                      "slot_PsfFlux_instFlux", "slot_PsfFlux_flux"),
        "flux_err": _lsst("base_PsfFlux_instFluxErr", "base_PsfFlux_fluxSigma",
                          "base_PsfFlux_fluxErr", "slot_PsfFlux_instFluxErr",
                          "slot_PsfFlux_fluxSigma"),
        "extendedness": _lsst("base_ClassificationExtendedness_value"),
        "psf_used": _lsst("calib_psf_used", "calib_psfUsed"),
        "saturated": _lsst("base_PixelFlags_flag_saturated"),
        "saturated_center": _lsst("base_PixelFlags_flag_saturatedCenter"),
        "centroid_flag": _lsst("base_SdssCentroid_flag", "slot_Centroid_flag"),
        "flux_flag": _lsst("base_PsfFlux_flag", "slot_PsfFlux_flag"),
    },
    "hsc3": {
        "id": _hsc("id"),
        "coord_ra": _hsc("coord_ra", Col("coord", 0)),
        "coord_dec": _hsc("coord_dec", Col("coord", 1)),
        "x": _hsc(Col("centroid.sdss", 0), "centroid.sdss.x"),
        "y": _hsc(Col("centroid.sdss", 1), "centroid.sdss.y"),
        "x_err": _hsc(Col("centroid.sdss.err", 0, sqrt=True), "centroid.sdss.xSigma",
                      "centroid.sdss.x.err"),
        "y_err": _hsc(Col("centroid.sdss.err", 2, sqrt=True), "centroid.sdss.ySigma",
                      "centroid.sdss.y.err"),
        "flux": _hsc("flux.psf"),
        "flux_err": _hsc("flux.psf.err"),
        "extendedness": _hsc("classification.extendedness"),
        "psf_used": _hsc("calib.psf.used"),
        "saturated": _hsc("flags.pixel.saturated.any"),
        "saturated_center": _hsc("flags.pixel.saturated.center"),
        "centroid_flag": _hsc("centroid.sdss.flags"),
        "flux_flag": _hsc("flux.psf.flags"),
    },
}

#: Fields without which a catalog cannot be used; the others get defaults in standardize().
REQUIRED_FIELDS = ("id", "coord_ra", "coord_dec", "x", "y", "flux", "flux_err")

_DEFAULTS = {"x_err": np.nan, "y_err": np.nan, "extendedness": np.nan, "psf_used": False,
             "saturated": False, "saturated_center": False, "centroid_flag": False,
             "flux_flag": False}
_DTYPES = {"id": np.int64, "psf_used": bool, "saturated": bool, "saturated_center": bool,
           "centroid_flag": bool, "flux_flag": bool}


def _source_name(table, source):
    return source or table.meta.get("source_file") or "catalog"


def _first_present(table, specs):
    for spec in specs:
        if spec.present(table):
            return spec
    return None


def _missing(table, schema):
    return [f for f in REQUIRED_FIELDS if _first_present(table, SCHEMAS[schema][f]) is None]


def detect_schema(table, source=None):
    """Name of the schema ('lsst' or 'hsc3') whose required fields are all in `table`.

    Raises MosaicError listing, per schema, the columns that are missing.
    """
    report = []
    for name in SCHEMAS:
        missing = _missing(table, name)
        if not missing:
            return name
        report.append(f"{name}: " + ", ".join(
            f"{f} ({' or '.join(map(repr, SCHEMAS[name][f][:2]))})" for f in missing))
    raise MosaicError(f"{_source_name(table, source)}: unknown catalog schema; missing "
                      + "; ".join(report))


def _parse_user_spec(spec):
    if callable(spec) or isinstance(spec, Col):
        return spec
    m = re.match(r"^(.*)\[(\d+)\]$", str(spec))
    if m:
        return Col(m.group(1), int(m.group(2)))
    return Col(str(spec))


def resolve_columns(table, column_map=None, schema=None, source=None):
    """Map each logical field to the column spec it is read from (None if absent).

    `column_map` ({field: column name, 'name[i]' for element i of a vector column, a Col or a
    callable(table) -> array}) overrides the schema. `schema` defaults to detect_schema(),
    which is only consulted for the fields `column_map` does not give.
    """
    column_map = dict(column_map or {})
    src = _source_name(table, source)
    for field in column_map:
        if field not in SCHEMAS["lsst"]:
            raise MosaicError(f"{src}: unknown field {field!r} in the column map (known: "
                              + ", ".join(SCHEMAS["lsst"]) + ")")
    user = {f: _parse_user_spec(s) for f, s in column_map.items()}
    for f, spec in user.items():
        if isinstance(spec, Col) and not spec.present(table):
            raise MosaicError(f"{src}: column {spec!r} (for {f}) is not in the catalog")
    if schema is None:
        if all(f in user for f in REQUIRED_FIELDS):
            schema = next((s for s in SCHEMAS if not _missing(table, s)), "lsst")
        else:
            # a schema must supply the required fields the user did not map
            candidates = [s for s in SCHEMAS
                          if all(f in user or _first_present(table, SCHEMAS[s][f]) is not None
                                 for f in REQUIRED_FIELDS)]
            if not candidates:
                detect_schema(table, source)      # raises with the full report
            schema = candidates[0]
    elif schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; known: {', '.join(SCHEMAS)}")
    out = {}
    for f, specs in SCHEMAS[schema].items():
        out[f] = user[f] if f in user else _first_present(table, specs)
    missing = [f for f in REQUIRED_FIELDS if out[f] is None]
    if missing:
        raise MosaicError(f"{src}: catalog lacks {', '.join(missing)} for schema {schema!r}")
    return out


def standardize(table, column_map=None, schema=None, source=None):
    """The fitter's view of a catalog: {logical field: numpy array}, one entry per field of
    SCHEMAS (id int64; coord_ra/coord_dec radians; x, y 0-based pixels; x_err, y_err, flux,
    flux_err, extendedness float64; psf_used, saturated, saturated_center, centroid_flag,
    flux_flag bool). Optional fields missing from the catalog get NaN (floats) or False.
    """
    cols = resolve_columns(table, column_map, schema, source)
    n = len(table)
    out = {}
    for f, spec in cols.items():
        dtype = _DTYPES.get(f, np.float64)
        if spec is None:
            out[f] = np.full(n, _DEFAULTS[f], dtype=dtype)
            continue
        a = spec(table) if callable(spec) and not isinstance(spec, Col) else spec.get(table)
        a = np.asarray(a)
        if getattr(a, "mask", None) is not None:
            a = np.ma.filled(a, np.nan if dtype is np.float64 else 0)
        if a.shape != (n,):
            raise MosaicError(f"{_source_name(table, source)}: {f} from {spec!r} has shape "
                              f"{a.shape}, expected ({n},)")
        out[f] = a.astype(dtype, copy=True)
    return out
