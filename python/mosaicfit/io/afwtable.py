"""Tables in the lsst.afw.table FITS layout (SRC catalogues, match lists, hscPipe's
diagnostics' catalog.fits), read into and written from astropy Tables.

File layout (what afw writes, e.g. ``tests/data/afw-src/SRC-849375-12.fits``):

- HDU 0: empty primary;
- HDU 1: a binary table. Every boolean (Flag) field is a bit of one ``nX`` column named ``flags``
  (column number in ``FLAGCOL``; bit k is named by ``TFLAG<k+1>`` and documented by
  ``TFDOC<k+1>``). Other columns carry ``TDOCn`` (documentation), ``TUNITn`` and ``TCCLSn``
  (afw field template: ``Scalar``, ``Angle``, ``Array``, ``Point``, ``Coord``, ``String``...).
  The ``TFLAG`` cards are interleaved with the column cards in schema order. The header ends
  with the table metadata, ``AFW_TABLE_VERSION`` and ``AFW_TYPE``;
- HDU 2...: an archive (footprints), not needed here and not written.
"""
import functools
import io
import os
import re
import threading
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from .. import MosaicError
from .fits import (STRUCTURAL_KEYS, astropy_card_image, card_entries, hdu_bytes, native,
                   open_fits, pad_block, read_bintable, truncated_card)

__all__ = ["read_afw_table", "Columns", "afw_table_hdu", "afw_table_parts", "afw_table_file_bytes"]

_COLKEY = re.compile(r"^(TTYPE|TFORM|TDOC|TUNIT|TCCLS|TFLAG|TFDOC|TDIM|TZERO|TSCAL|TNULL|TDISP)"
                     r"(\d+)$")


# CPython 3.11's ast.parse is not thread-safe (gh-106905: "AST constructor recursion depth
# mismatch"), and numpy parses array dtypes such as '2f8' with it while astropy builds table
# columns; warnings.catch_warnings is process-global too. The simulator writes catalogues from
# threads, so the astropy part of building a table runs under this lock.
_ASTROPY_LOCK = threading.RLock()

_TABLE_KEYS = re.compile(r"^(FLAGCOL|AFW_TABLE_VERSION|AFW_TYPE|AR_HDU|EXTTYPE|EXTNAME)$")


@functools.lru_cache(maxsize=4096)
def _unit(unit_str):
    # parsing a unit string costs ~100 us; a tract's catalogues repeat the same few
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return u.Unit(unit_str, parse_strict="silent")
        except Exception:
            return None


def _set_unit(col, unit_str):
    if not unit_str:
        return
    unit = _unit(unit_str)
    if unit is not None:
        col.unit = unit


class Columns:
    """The columns of an afw table as numpy arrays (schema order), without an astropy Table
    around them: building one costs ~25 us a column, which was most of the time a mosaic
    spent reading a CCD's catalogue. The read-only part of the Table interface that
    :func:`mosaicfit.io.src.standardize` uses: ``colnames``, ``[name]``, ``len()``, ``meta``."""
    __slots__ = ("colnames", "meta", "_cols", "_n")

    def __init__(self, names, cols, nrows, meta):
        self.colnames, self._cols, self._n, self.meta = list(names), cols, nrows, meta

    def __getitem__(self, name):
        return self._cols[name]

    def __contains__(self, name):
        return name in self._cols

    def __len__(self):
        return self._n


def read_afw_table(path, hdu_index=None, what="catalog", columns=None, as_table=True):
    """Read an afw-layout table (see the module doc) into an astropy Table (or, with
    ``as_table=False``, its :class:`Columns`: the same arrays, without units and docs); with
    `columns` (a set of names) only those of its columns and flags (a real HSC SRC has ~200,
    of which the fit reads ~15: building the Table of all of them is most of the reading time).

    The packed flags become bool columns named by TFLAGn, placed at their schema positions.
    Column docs go to ``col.description`` and ``col.meta['TDOC']``, units to ``col.unit`` and
    ``col.meta['TUNIT']`` (the raw string), the afw template to ``col.meta['TCCLS']``.
    The table metadata (ALIAS cards etc.) goes to ``table.meta['afw_metadata']`` as a list of
    (key, value, comment); ``table.meta['afw_type']``/``['afw_table_version']`` are kept.
    """
    path = os.fspath(path)
    fast = read_bintable(path, hdu_index)     # well-formed files; astropy for the rest
    if fast is not None:
        return _build_table(path, *fast, keep=columns, as_table=as_table)
    with open_fits(path, what) as hdul:
        if hdu_index is None:
            hdu_index = next((i for i, h in enumerate(hdul) if isinstance(h, fits.BinTableHDU)),
                             None)
            if hdu_index is None:
                raise MosaicError(f"{path}: no binary table HDU in this {what}")
        elif hdu_index >= len(hdul) or not isinstance(hdul[hdu_index], fits.BinTableHDU):
            raise MosaicError(f"{path}: HDU {hdu_index} is not a binary table")
        hdu = hdul[hdu_index]
        header = hdu.header
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = hdu.data
                names = list(hdu.columns.names)
                formats = [str(c.format) for c in hdu.columns]
                cols = [data[name] if data is not None else None for name in names]
                nrows = 0 if data is None else len(data)
                cols = [np.array(c) if c is not None else None for c in cols]
        except MosaicError:
            raise
        except Exception as e:
            raise MosaicError(f"{path}: cannot read the table in HDU {hdu_index} ({e})") \
                from None
    return _build_table(path, header, names, formats, cols, nrows, keep=columns,
                        as_table=as_table)


@functools.lru_cache(maxsize=8192)
def _col_key(key):
    """(kind, column or bit number) of a column keyword (_COLKEY), else None (cached: every
    SRC of a run has the same keywords)."""
    m = _COLKEY.match(key)
    return (m.group(1), int(m.group(2))) if m else None


@functools.lru_cache(maxsize=8192)
def _table_structure_key(key):
    """Whether `key` is a structural or table keyword (not an extra card of the table)."""
    return bool(STRUCTURAL_KEYS.match(key) or _TABLE_KEYS.match(key) or key == "")


def _build_table(path, header, names, formats, columns, nrows, keep=None, as_table=True):
    ncol = len(names)
    info = {}          # col number (1-based) -> dict
    flag_info = {}     # bit number (1-based) -> dict
    order = []         # schema order: ("col", n) / ("flag", m)
    extra = []
    seen_cols, seen_flags = set(), set()
    for key, value, comment in card_entries(header):
        kn = _col_key(key)
        if kn is not None:
            kind, n = kn
            if kind in ("TFLAG", "TFDOC"):
                d = flag_info.setdefault(n, {})
                if kind == "TFLAG":
                    d["name"] = str(value).strip()
                    d.setdefault("doc", comment or "")
                    if n not in seen_flags:
                        seen_flags.add(n)
                        order.append(("flag", n))
                else:
                    d["doc"] = str(value)
            else:
                d = info.setdefault(n, {})
                if kind == "TTYPE":
                    d.setdefault("doc", comment or "")
                    if n not in seen_cols:
                        seen_cols.add(n)
                        order.append(("col", n))
                elif kind == "TDOC":
                    d["doc"] = str(value)
                elif kind in ("TUNIT", "TCCLS"):
                    d[kind] = str(value).strip()
            continue
        if _table_structure_key(key):
            continue
        extra.append((key, value, comment))

    flagcol = header.get("FLAGCOL")
    if flagcol is not None:
        try:
            flagcol = int(flagcol)
        except (TypeError, ValueError):
            raise MosaicError(f"{path}: FLAGCOL = {flagcol!r} is not a column number") from None
        if not 1 <= flagcol <= ncol:
            raise MosaicError(f"{path}: FLAGCOL = {flagcol} but the table has {ncol} columns")
    elif flag_info and "flags" in names and formats[names.index("flags")].endswith("X"):
        flagcol = names.index("flags") + 1

    out = {}
    order_names = []
    flag_bits = None
    if flagcol is not None:
        fmt = formats[flagcol - 1].strip()
        m = re.match(r"^(\d*)([XL])$", fmt)
        if not m:
            raise MosaicError(f"{path}: the flags column (FLAGCOL = {flagcol}) has format "
                              f"{fmt!r}, not bits")
        nbits = int(m.group(1) or 1)
        flag_bits = columns[flagcol - 1]
        if flag_bits is None or nrows == 0:
            flag_bits = np.zeros((nrows, nbits), dtype=bool)
        flag_bits = np.asarray(flag_bits, dtype=bool).reshape(nrows, nbits)
        for m in flag_info:
            if "name" not in flag_info[m]:
                raise MosaicError(f"{path}: TFDOC{m} without TFLAG{m}")
            if m > nbits:
                raise MosaicError(f"{path}: TFLAG{m} ({flag_info[m]['name']}) but the flags "
                                  f"column has only {nbits} bits")
        # bits without a name (not written by afw) are kept under a made-up name
        for m in range(1, nbits + 1):
            if m not in flag_info:
                flag_info[m] = {"name": f"flag_bit{m}", "doc": ""}
                order.append(("flag", m))
    elif flag_info:
        raise MosaicError(f"{path}: TFLAG keys but no flags column (no FLAGCOL)")

    # columns missing from the header scan (cannot happen with a valid FITS, but be safe)
    for n in range(1, ncol + 1):
        if n not in seen_cols:
            order.append(("col", n))

    meta_cols = {}
    if keep is not None:
        order = [(kind, n) for kind, n in order
                 if (flag_info[n]["name"] if kind == "flag" else names[n - 1]) in keep]
    for kind, n in order:
        if kind == "flag":
            name = flag_info[n]["name"]
            arr = flag_bits[:, n - 1].copy()
            meta_cols[name] = {"TDOC": flag_info[n].get("doc", "")}
        else:
            if n == flagcol:
                continue
            name = names[n - 1]
            arr = columns[n - 1]
            if arr is None:
                arr = np.zeros(0)
            arr = native(arr)
            fmt = formats[n - 1]
            if arr.dtype.kind in "SU":       # trailing blanks are not significant in FITS
                width = arr.dtype.itemsize // (4 if arr.dtype.kind == "U" else 1)
                if arr.dtype.kind == "S":
                    arr = np.char.decode(arr, "ascii", errors="replace")
                arr = np.char.rstrip(arr).astype(f"U{max(width, 1)}")   # the declared width
            if fmt.endswith("X") and arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0].copy()       # a 1-bit column is a flag
            if arr.dtype.kind == "b":
                arr = arr.astype(bool)
            d = info.get(n, {})
            meta_cols[name] = {k: d[k] for k in ("TUNIT", "TCCLS") if k in d}
            meta_cols[name]["TDOC"] = d.get("doc", "")
        if name in out:
            raise MosaicError(f"{path}: the name {name!r} is used twice (column or flag)")
        if len(arr) != nrows:
            arr = arr[:nrows]
        out[name] = arr
        order_names.append(name)

    if not as_table:
        return Columns(order_names, out, nrows, {"source_file": path})
    table = Table([out[n] for n in order_names], names=order_names, copy=False)
    for name in order_names:
        col = table[name]
        m = meta_cols.get(name, {})
        col.meta.update(m)
        if m.get("TDOC"):
            col.description = m["TDOC"]
        _set_unit(col, m.get("TUNIT"))
    table.meta["afw_metadata"] = extra
    if "AFW_TYPE" in header:
        table.meta["afw_type"] = str(header["AFW_TYPE"]).strip()
    if "AFW_TABLE_VERSION" in header:
        table.meta["afw_table_version"] = int(header["AFW_TABLE_VERSION"])
    table.meta["source_file"] = path
    return table


_ANGLE_COLS = {"coord_ra", "coord_dec"}


def _default_unit(name, ncomp):
    """afw's unit for well-known columns: radians for coordinates, pixels for centroids,
    counts for instrumental fluxes."""
    if name in ("coord_ra", "coord_dec", "coord", "coord_raErr", "coord_decErr"):
        return "rad"
    base = name.replace(".", "_")
    low = base.lower()
    if "centroid" in low and not low.endswith(("flag", "flags")):
        if re.search(r"_[xy](Sigma|Err)?$", base) or (ncomp == 2 and low.count("_err") == 0):
            return "pixel"
    if re.search(r"_(flux|fluxSigma|fluxErr|instFlux|instFluxErr)$", base) or \
            re.match(r"^flux_[A-Za-z0-9]+(_err)?$", base):
        return "count"
    return None


def _default_class(name, arr):
    if arr.dtype.kind in "SU":
        return "String"
    if arr.ndim == 1:
        return "Angle" if name in _ANGLE_COLS else "Scalar"
    if name == "coord" and arr.shape[1:] == (2,):
        return "Coord"
    base = name.replace(".", "_").lower()
    if "centroid" in base and arr.shape[1:] == (2,):
        return "Point"          # hscPipe 3.x/4.x 'centroid.sdss'
    if "centroid" in base and base.endswith("_err") and arr.shape[1:] == (3,):
        return "Covariance(Point)"
    return "Array"


def _pick_version(table):
    v = table.meta.get("afw_table_version")
    if v is not None:
        return int(v)
    if any("instFlux" in n for n in table.colnames):
        return 3
    return 1


# the comments cfitsio (hence afw) puts on the structural keywords of a binary table
_CFITSIO_COMMENTS = {
    "XTENSION": "binary table extension", "BITPIX": "8-bit bytes",
    "NAXIS": "2-dimensional binary table", "NAXIS1": "width of table in bytes",
    "NAXIS2": "number of rows in table", "PCOUNT": "size of special data area",
    "GCOUNT": "one data group (required keyword)", "TFIELDS": "number of fields in each row"}


def _afw_tform(tform):
    """afw writes an explicit repeat count: '1D', not 'D'."""
    tform = str(tform).strip()
    return "1" + tform if tform[:1].isalpha() else tform


def afw_table_hdu(table, docs=None, units=None, classes=None, afw_type=None, extra_cards=None,
                  version=None, path="table"):
    """Build a BinTableHDU in the afw layout from an astropy Table (see the module doc).

    1-D bool columns are packed into the ``flags`` bit column; docs/units/classes override the
    per-column ``meta['TDOC'|'TUNIT'|'TCCLS']`` (and ``description``/``unit``), which override
    defaults from the column names.
    """
    header, data = afw_table_parts(table, docs, units, classes, afw_type, extra_cards, version,
                                   path)
    with _ASTROPY_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fits.BinTableHDU.fromstring(header.tostring().encode("ascii") + pad_block(data))


def afw_table_parts(table, docs=None, units=None, classes=None, afw_type=None,
                    extra_cards=None, version=None, path="table"):
    """The header and the raw (big-endian, unpadded) row bytes of afw_table_hdu(); rows are
    NAXIS1 bytes each, so any run of rows can be written as a table of its own."""
    docs = docs or {}
    units = units or {}
    classes = classes or {}
    nrows = len(table)
    flag_names, data_names = [], []
    arrays = {}
    for name in table.colnames:
        col = table[name]
        arr = col
        if getattr(col, "mask", None) is not None and np.any(col.mask):
            if col.dtype.kind == "f":
                arr = col.filled(np.nan)
            else:
                raise MosaicError(f"{path}: column {name!r} has masked values, which an afw "
                                  "table cannot store")
        arr = np.asarray(arr)
        if arr.dtype.kind == "O":
            raise MosaicError(f"{path}: column {name!r} holds Python objects; cannot write it")
        if arr.dtype.kind == "b" and arr.ndim == 1:
            flag_names.append(name)
        else:
            data_names.append(name)
        arrays[name] = arr

    with _ASTROPY_LOCK:
        # columns other than the flags: let astropy choose the FITS formats
        plain = Table([arrays[n] for n in data_names], names=data_names, copy=False) \
            if data_names else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coldefs = list(fits.table_to_hdu(plain).columns) if plain is not None else []
        flag_col = None
        if flag_names:
            bits = np.column_stack([arrays[n] for n in flag_names]) if nrows else \
                np.zeros((0, len(flag_names)), dtype=bool)
            flag_col = fits.Column(name="flags", format=f"{len(flag_names)}X", array=bits)
            coldefs = [flag_col] + coldefs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = fits.BinTableHDU.from_columns(coldefs, nrows=nrows)
            # astropy rewrites the column keywords of a new table HDU in its own order when it is
            # written; to keep afw's order (TFLAGn between the columns, TDOCn after TFORMn...) the
            # HDU is rebuilt from its serialised data with our header (astropy keeps the header of
            # an HDU read from bytes as it is).
            buf = io.BytesIO()
            fits.HDUList([fits.PrimaryHDU(), base]).writeto(buf)
            raw = buf.getvalue()
            with fits.open(io.BytesIO(raw)) as probe:
                loc = probe[1].fileinfo()["datLoc"]
                data_bytes = raw[loc:loc + probe[1].header["NAXIS1"] * nrows]
    bh = base.header

    def doc_of(name):
        if name in docs:
            return docs[name]
        col = table[name]
        return col.meta.get("TDOC") or (col.description or "")

    def unit_of(name):
        if name in units:
            return units[name]
        col = table[name]
        if col.meta.get("TUNIT"):
            return col.meta["TUNIT"]
        if col.unit is not None:
            return col.unit.to_string()
        a = arrays[name]
        return _default_unit(name, a.shape[1] if a.ndim > 1 else 1)

    def class_of(name):
        if name in classes:
            return classes[name]
        return table[name].meta.get("TCCLS") or _default_class(name, arrays[name])

    cards = [fits.Card(k, bh[k], _CFITSIO_COMMENTS[k]) for k in _CFITSIO_COMMENTS]
    col_number = {}
    n0 = 1
    if flag_col is not None:
        cards.append(fits.Card("TTYPE1", "flags", "bits for all Flag fields; see also TFLAGn"))
        cards.append(fits.Card("TFORM1", _afw_tform(bh["TFORM1"]), "format of field"))
        cards.append(fits.Card("FLAGCOL", 1, "Column number for the bitflags."))
        n0 = 2
    for k, name in enumerate(data_names):
        col_number[name] = n0 + k
    bit = 0
    for name in table.colnames:
        if name in col_number:
            n = col_number[name]
            doc = doc_of(name)
            cards.append(truncated_card(f"TTYPE{n}", name, doc))
            cards.append(fits.Card(f"TFORM{n}", _afw_tform(bh[f"TFORM{n}"]), "format of field"))
            for k in ("TDIM", "TZERO", "TSCAL", "TNULL"):
                if f"{k}{n}" in bh:
                    cards.append(bh.cards[f"{k}{n}"])
            if doc:
                cards.append(fits.Card(f"TDOC{n}", doc))
            unit = unit_of(name)
            if unit:
                cards.append(fits.Card(f"TUNIT{n}", unit))
            cards.append(fits.Card(f"TCCLS{n}", class_of(name),
                                   "Field template used by lsst.afw.table"))
        else:
            bit += 1
            cards.append(fits.Card(f"TFLAG{bit}", name))
            doc = doc_of(name)
            if doc:
                cards.append(fits.Card(f"TFDOC{bit}", doc))
    for key, value, comment in (extra_cards if extra_cards is not None
                                else table.meta.get("afw_metadata", [])):
        if key in ("AR_HDU", "AFW_TABLE_VERSION", "AFW_TYPE", "FLAGCOL") or _COLKEY.match(key) \
                or STRUCTURAL_KEYS.match(key):
            continue
        if len(key) > 8 and not key.startswith("HIERARCH"):
            key = "HIERARCH " + key
        cards.append(fits.Card(key, value, comment))
    cards.append(fits.Card("HIERARCH AFW_TABLE_VERSION",
                           int(version if version is not None else _pick_version(table))))
    atype = afw_type or table.meta.get("afw_type")
    if atype:
        cards.append(fits.Card("AFW_TYPE", atype, "Tells lsst::afw to load this as a "
                                                   f"{atype.capitalize()} table."))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = fits.Header(cards)
    return header, data_bytes


# ------------------------------------------------------------------------------------------
# Writing many tables of one schema (the simulator's ~1000 SRC files): the header is the same
# but for NAXIS2, and the rows are a numpy structured array. The layout of a schema is made
# once by afw_table_parts (astropy) and kept only if the structured array gives the same bytes
# as astropy for that first table; anything unusual (masked values, strings, unsigned or bool
# array columns) takes the astropy path every time. The file bytes are those astropy writes
# (tests/test_fastfits.py, and the simulated repository compared byte for byte).
# ------------------------------------------------------------------------------------------
_LAYOUTS = {}
_FAST_KINDS = {"i", "f"}


def _primary_images():
    with _ASTROPY_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c.image for c in fits.PrimaryHDU().header.cards]


_PRIMARY = None


def _layout_key(table, docs, units, classes, afw_type, extra_cards, version):
    cols = []
    for name in table.colnames:
        col = table[name]
        mask = getattr(col, "mask", None)
        if mask is not None and np.any(mask):
            return None
        dt = col.dtype
        if not (dt.kind in _FAST_KINDS and not (dt.kind == "i" and dt.itemsize == 1)
                or (dt.kind == "b" and col.ndim == 1) or (dt.kind == "u" and dt.itemsize == 1)):
            return None
        cols.append((name, dt.str, col.shape[1:], repr(sorted(col.meta.items())),
                     col.description, None if col.unit is None else str(col.unit)))
    meta = table.meta
    return (tuple(cols), repr(sorted((docs or {}).items())), repr(sorted((units or {}).items())),
            repr(sorted((classes or {}).items())), afw_type, meta.get("afw_type"),
            meta.get("afw_table_version"), version,
            repr(extra_cards if extra_cards is not None else meta.get("afw_metadata", [])))


def _rows(table, layout):
    dtype, flag_names, data_names, nbytes = layout["dtype"], layout["flags"], layout["data"], \
        layout["nbytes"]
    n = len(table)
    rows = np.zeros(n, dtype=dtype)
    if flag_names:
        bits = np.zeros((n, nbytes * 8), dtype=bool)
        for k, name in enumerate(flag_names):
            bits[:, k] = np.asarray(table[name])
        rows["f0"] = np.packbits(bits, axis=1).reshape(n, nbytes) if n else 0
    for k, name in enumerate(data_names):
        rows[f"f{k + 1}"] = np.asarray(table[name])
    return rows.tobytes()


def _make_layout(table, header, data):
    flag_names = [n for n in table.colnames if table[n].dtype.kind == "b"]
    data_names = [n for n in table.colnames if table[n].dtype.kind != "b"]
    nbytes = (len(flag_names) + 7) // 8
    fields = [("f0", "u1", (nbytes,))] if flag_names else [("f0", "u1", (0,))]
    for k, name in enumerate(data_names):
        col = table[name]
        fields.append((f"f{k + 1}", col.dtype.newbyteorder(">"), col.shape[1:]))
    layout = dict(dtype=np.dtype(fields), flags=flag_names, data=data_names, nbytes=nbytes)
    if _rows(table, layout) != data or layout["dtype"].itemsize != header["NAXIS1"]:
        return None
    images = [c.image for c in header.cards]
    keys = [c.keyword for c in header.cards]
    layout["images"] = images
    layout["naxis2"] = keys.index("NAXIS2")
    return layout


def afw_table_file_bytes(table, docs=None, units=None, classes=None, afw_type=None,
                         extra_cards=None, version=None, path="table"):
    """The bytes of the FITS file write_fits(HDUList([PrimaryHDU(), afw_table_hdu(...)]))
    writes (checksums included), built from a per-schema template when possible."""
    global _PRIMARY
    if _PRIMARY is None:
        _PRIMARY = hdu_bytes(_primary_images())
    key = _layout_key(table, docs, units, classes, afw_type, extra_cards, version)
    layout = _LAYOUTS.get(key) if key is not None else None
    if layout is None:
        header, data = afw_table_parts(table, docs, units, classes, afw_type, extra_cards,
                                       version, path)
        with _ASTROPY_LOCK:
            if key is not None and key not in _LAYOUTS and len(table):
                _LAYOUTS[key] = _make_layout(table, header, data) or False
            images = [c.image for c in header.cards]
        return _PRIMARY + hdu_bytes(images, data)
    if layout is False:
        header, data = afw_table_parts(table, docs, units, classes, afw_type, extra_cards,
                                       version, path)
        with _ASTROPY_LOCK:
            images = [c.image for c in header.cards]
        return _PRIMARY + hdu_bytes(images, data)
    images = list(layout["images"])
    images[layout["naxis2"]] = astropy_card_image("NAXIS2", len(table), "number of rows in table")
    return _PRIMARY + hdu_bytes(images, _rows(table, layout))
