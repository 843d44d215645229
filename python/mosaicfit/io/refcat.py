"""Reference catalogs in the LSST "indexed reference catalog" convention.

A catalog is a folder ``ROOT/ref_cats/NAME/`` holding

- ``<htmId>.fits``: the stars of one HTM trixel (depth 7 by default: ~0.3 deg^2 each), as an
  afw table (``id``, ``coord_ra``/``coord_dec`` in radians, ``<band>_flux``/``<band>_fluxErr``
  in nJy, optionally ``coord_raErr``/``coord_decErr`` (rad), ``pm_ra``/``pm_dec`` (rad/yr),
  ``pm_raErr``/``pm_decErr``, ``epoch`` (MJD), bool flags packed as in SRC catalogs);
- ``master_schema.fits``: the same table layout with no rows;
- ``config.py``: the DatasetConfig of LSST's IngestIndexedReferenceTask (format version 1, the
  dataset name and the HTM depth).

HTM ids follow the Hierarchical Triangular Mesh of Kunszt, Szalay & Thakar (the esutil /
lsst.sphgeom numbering used by LSST's HtmIndexer): the 8 root trixels S0..S3, N0..N3 have ids
8..15 and each level appends two bits (child 0..3), so an id at depth d has 4 + 2d bits
(depth 7: 131072 .. 262143).
"""
import glob
import os
import re

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .. import MosaicError
from ..units import AB_NJY_ZEROPOINT
from .atomic import atomic_path, write_text
from .afwtable import afw_table_parts, read_afw_table
from .fits import pad_block

__all__ = ["htm_id", "htm_trixels_in_circle", "htm_trixel_vertices", "write_refcat",
           "read_refcat", "refcat_shards", "flux_to_mag", "mag_to_flux"]



def flux_to_mag(flux_njy):
    """AB magnitude of a flux in nJy."""
    return -2.5 * np.log10(np.asarray(flux_njy, dtype=float)) + AB_NJY_ZEROPOINT


def mag_to_flux(mag):
    """Flux in nJy of an AB magnitude."""
    return np.power(10.0, -0.4 * (np.asarray(mag, dtype=float) - AB_NJY_ZEROPOINT))


# --------------------------------------------------------------------------------------------
# HTM
# --------------------------------------------------------------------------------------------

_V = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
               [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
# root trixels in id order 8..15: S0 S1 S2 S3 N0 N1 N2 N3, vertices counter-clockwise
_ROOTS = np.array([[1, 5, 2], [2, 5, 3], [3, 5, 4], [4, 5, 1],
                   [1, 0, 4], [4, 0, 3], [3, 0, 2], [2, 0, 1]])


def _unit(ra_deg, dec_deg):
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def _normalize(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _inside(p, a, b, c, eps=0.0):
    """Point(s) p inside the spherical triangle(s) (a, b, c) (counter-clockwise)."""
    return ((np.einsum("...i,...i->...", np.cross(a, b), p) >= -eps)
            & (np.einsum("...i,...i->...", np.cross(b, c), p) >= -eps)
            & (np.einsum("...i,...i->...", np.cross(c, a), p) >= -eps))


def _children(v0, v1, v2):
    """The 4 children (in HTM order) of trixels (v0, v1, v2): list of (a, b, c) arrays."""
    w0 = _normalize(v1 + v2)
    w1 = _normalize(v0 + v2)
    w2 = _normalize(v0 + v1)
    return [(v0, w2, w1), (v1, w0, w2), (v2, w1, w0), (w0, w1, w2)]


def htm_id(ra_deg, dec_deg, depth=7):
    """HTM trixel ids (int64) at `depth` of points given in degrees (vectorised)."""
    depth = int(depth)
    if not 0 <= depth <= 29:
        raise ValueError(f"HTM depth must be in 0..29, not {depth}")
    p = _unit(ra_deg, dec_deg)
    scalar = p.ndim == 1
    p = np.atleast_2d(p)
    if not np.all(np.isfinite(p)):
        raise ValueError("HTM ids need finite coordinates")
    n = len(p)
    ids = np.full(n, -1, dtype=np.int64)
    v0 = np.empty((n, 3))
    v1 = np.empty((n, 3))
    v2 = np.empty((n, 3))
    for k in range(8):
        a, b, c = (_V[_ROOTS[k, i]] for i in range(3))
        m = (ids < 0) & _inside(p, a, b, c)
        ids[m] = 8 + k
        v0[m], v1[m], v2[m] = a, b, c
    if np.any(ids < 0):   # cannot happen for unit vectors; be robust to rounding
        m = ids < 0
        best = np.argmax([np.einsum("ij,j->i", p[m], _normalize(_V[r].sum(axis=0)))
                          for r in _ROOTS], axis=0)
        ids[m] = 8 + best
        v0[m], v1[m], v2[m] = (_V[_ROOTS[best, i]] for i in range(3))
    for _ in range(depth):
        kids = _children(v0, v1, v2)
        child = np.full(n, 3, dtype=np.int64)
        for k in (2, 1, 0):       # the lowest-numbered child that contains the point wins
            a, b, c = kids[k]
            child[_inside(p, a, b, c)] = k
        ids = ids * 4 + child
        new = [np.empty((n, 3)) for _ in range(3)]
        for k in range(4):
            m = child == k
            for i in range(3):
                new[i][m] = kids[k][i][m]
        v0, v1, v2 = new
    return ids[0] if scalar else ids


def htm_trixel_vertices(ids):
    """Vertices (n, 3, 3) (unit vectors, counter-clockwise) of trixels given by their ids."""
    ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
    if np.any(ids < 8):
        raise ValueError("HTM ids are >= 8")
    nbits = np.array([int(i).bit_length() for i in ids])
    if np.any(nbits % 2):
        raise ValueError("an HTM id has an even number of bits (4 + 2 depth)")
    depth = (nbits - 4) // 2
    if np.any(depth != depth[0]):
        return np.concatenate([htm_trixel_vertices([i]) for i in ids])
    d = int(depth[0])
    root = (ids >> (2 * d)) - 8
    v = [_V[_ROOTS[root, i]] for i in range(3)]
    for level in range(d - 1, -1, -1):
        c = (ids >> (2 * level)) & 3
        kids = _children(*v)
        v = [np.where((c == 0)[:, None], kids[0][i],
                      np.where((c == 1)[:, None], kids[1][i],
                               np.where((c == 2)[:, None], kids[2][i], kids[3][i])))
             for i in range(3)]
    return np.stack(v, axis=1)


def _intersects_cap(v0, v1, v2, c, cosr, eps=1e-12):
    """Whether trixels (v0, v1, v2) intersect the cap of centre c (unit) and cos(radius).

    Exact test: a vertex is in the cap, or the centre is in the trixel, or the point of an
    edge's great circle closest to the centre lies on the edge and in the cap."""
    hit = np.zeros(len(v0), dtype=bool)
    for v in (v0, v1, v2):
        hit |= v @ c >= cosr - eps
    hit |= _inside(c[None, :], v0, v1, v2, eps)
    for a, b in ((v0, v1), (v1, v2), (v2, v0)):
        nrm = np.cross(a, b)
        nn = np.linalg.norm(nrm, axis=1)
        nhat = nrm / nn[:, None]
        proj = c[None, :] - (nhat @ c)[:, None] * nhat
        pn = np.linalg.norm(proj, axis=1)
        ok = pn > 1e-15
        q = np.zeros_like(proj)
        q[ok] = proj[ok] / pn[ok, None]
        on_arc = (np.einsum("ij,ij->i", np.cross(a, q), nrm) >= -eps) & \
                 (np.einsum("ij,ij->i", np.cross(q, b), nrm) >= -eps)
        hit |= ok & on_arc & (q @ c >= cosr - eps)
    return hit


def htm_trixels_in_circle(ra_deg, dec_deg, radius_deg, depth=7):
    """Sorted ids of the trixels at `depth` that intersect the circle (all points within
    `radius_deg` of (ra_deg, dec_deg))."""
    if not (np.isfinite(ra_deg) and np.isfinite(dec_deg) and np.isfinite(radius_deg)) \
            or radius_deg < 0:
        raise ValueError("the circle needs finite ra, dec and a radius >= 0")
    c = _unit(ra_deg, dec_deg)
    cosr = np.cos(np.radians(min(float(radius_deg), 180.0)))
    ids = np.arange(8, 16, dtype=np.int64)
    v0, v1, v2 = (_V[_ROOTS[:, i]] for i in range(3))
    for level in range(depth + 1):
        keep = _intersects_cap(v0, v1, v2, c, cosr)
        ids, v0, v1, v2 = ids[keep], v0[keep], v1[keep], v2[keep]
        if level == depth:
            break
        kids = _children(v0, v1, v2)
        ids = (ids[:, None] * 4 + np.arange(4)[None, :]).ravel()
        v0, v1, v2 = (np.stack([kids[k][i] for k in range(4)], axis=1).reshape(-1, 3)
                      for i in range(3))
    return np.sort(ids)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

_CONFIG = """import lsst.meas.algorithms.ingestIndexReferenceTask
assert type(config)==lsst.meas.algorithms.ingestIndexReferenceTask.DatasetConfig, \
'config is of type %s.%s instead of lsst.meas.algorithms.ingestIndexReferenceTask.DatasetConfig' \
% (type(config).__module__, type(config).__name__)
# Version number of the persisted on-disk storage format.
# Version 0 had Jy as flux units (default 0 for unversioned catalogs).
# Version 1 had nJy as flux units.
config.format_version=1

# String to pass to the butler to retrieve persisted files.
config.ref_dataset_name={name!r}

# Depth of the HTM tree to make.  Default is depth=7 which gives ~ 0.3 sq. deg. per trixel.
config.indexer['HTM'].depth={depth}

config.indexer.name='HTM'
"""

_REQUIRED = ("id", "coord_ra", "coord_dec")


def _refcat_units(table):
    units = {}
    for name in table.colnames:
        if name in ("coord_ra", "coord_dec", "coord_raErr", "coord_decErr"):
            units[name] = "rad"
        elif name in ("pm_ra", "pm_dec", "pm_raErr", "pm_decErr"):
            units[name] = "rad / yr"
        elif name.endswith("_flux") or name.endswith("_fluxErr"):
            units[name] = "nJy"
        elif name == "epoch":
            units[name] = "d"
        elif name in ("parallax", "parallaxErr"):
            units[name] = "rad"
    return units


def write_refcat(folder, table, depth=7, name=None):
    """Shard `table` by HTM trixel at `depth` into ``folder/<htmId>.fits`` (each written
    atomically), plus ``master_schema.fits`` and ``config.py``. Returns the shard ids."""
    folder = os.fspath(folder)
    if not isinstance(table, Table):
        table = Table(table)
    missing = [c for c in _REQUIRED if c not in table.colnames]
    if missing:
        raise MosaicError(f"{folder}: the reference catalog lacks column(s) "
                          f"{', '.join(missing)}")
    ra = np.degrees(np.asarray(table["coord_ra"], dtype=float))
    dec = np.degrees(np.asarray(table["coord_dec"], dtype=float))
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise MosaicError(f"{folder}: the reference catalog has non-finite coordinates")
    name = name or os.path.basename(os.path.normpath(folder))
    os.makedirs(folder, exist_ok=True)
    units = _refcat_units(table)
    ids = htm_id(ra, dec, depth) if len(table) else np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    uniq, start = np.unique(ids[order], return_index=True)
    bounds = list(start) + [len(order)]
    # one afw table for all rows, cut into runs of rows: every shard has the same header
    # (but NAXIS2) and its rows are a slice of the table's row bytes
    header, data = afw_table_parts(table[order], units=units, afw_type="SIMPLE", path=folder)
    width = header["NAXIS1"]
    primary = fits.PrimaryHDU().header.tostring().encode("ascii")
    for k, shard in enumerate(uniq):
        lo, hi = bounds[k], bounds[k + 1]
        h = header.copy()
        h["NAXIS2"] = hi - lo
        raw = primary + h.tostring().encode("ascii") + pad_block(data[lo * width:hi * width])
        with atomic_path(os.path.join(folder, f"{int(shard)}.fits")) as tmp:
            with open(tmp, "wb") as f:
                f.write(raw)
    h = header.copy()
    h["NAXIS2"] = 0
    with atomic_path(os.path.join(folder, "master_schema.fits")) as tmp:
        with open(tmp, "wb") as f:
            f.write(primary + h.tostring().encode("ascii"))
    write_text(_CONFIG.format(name=name, depth=int(depth)), os.path.join(folder, "config.py"))
    return [int(s) for s in uniq]


def _config_depth(folder):
    path = os.path.join(folder, "config.py")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise MosaicError(f"{path}: cannot read ({e.strerror})") from None
    m = re.search(r"""indexer\[['"]HTM['"]\]\.depth\s*=\s*(\d+)""", text)
    if m:
        return int(m.group(1))
    m = re.search(r"""indexer\.name\s*=\s*['"](\w+)['"]""", text)
    if m and m.group(1) != "HTM":
        raise MosaicError(f"{path}: indexer {m.group(1)!r} is not supported (only HTM)")
    return 7      # LSST's default


def refcat_shards(folder):
    """{htm id: path} of the shard files in a reference catalog folder, and the HTM depth
    (from config.py, else from the ids)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise MosaicError(f"{folder}: no such reference catalog folder")
    shards = {}
    for path in glob.glob(os.path.join(folder, "*.fits")):
        base = os.path.basename(path)[:-5]
        if base.isdigit():
            shards[int(base)] = path
    depth = _config_depth(folder)
    bad = [i for i in shards if i.bit_length() % 2 or i < 8]
    if bad:
        raise MosaicError(f"{shards[bad[0]]}: {bad[0]} is not an HTM trixel id")
    depths = {(i.bit_length() - 4) // 2 for i in shards}
    if depth is None:
        if len(depths) > 1:
            raise MosaicError(f"{folder}: shards of several HTM depths ({sorted(depths)}) and "
                              "no config.py")
        depth = depths.pop() if depths else 7
    elif depths - {depth}:
        other = next(i for i in shards if (i.bit_length() - 4) // 2 != depth)
        raise MosaicError(f"{shards[other]}: not an HTM id of depth {depth} (config.py)")
    return shards, depth


def _read_shard(path):
    return read_afw_table(path, what="reference catalog shard")


def _stack(tables):
    """The rows of `tables` (shards: the same columns) in one Table, the columns' units,
    descriptions and meta those of the first: astropy's vstack checks and merges every
    column's attributes per table, ~2 ms a shard (a 200-visit strip reads ~500 shards)."""
    first = tables[0]
    out = Table(meta=dict(first.meta))
    for name in first.colnames:
        col = first[name]
        data = np.concatenate([np.asarray(t[name]) for t in tables])
        out[name] = data
        out[name].unit, out[name].description = col.unit, col.description
        out[name].meta.update(col.meta)
        if col.format is not None:
            out[name].format = col.format
    return out


def read_refcat(folder, ra_deg=None, dec_deg=None, radius_deg=None, trim=False):
    """Read the shards of a reference catalog that overlap the circle (all shards if no circle
    is given), concatenated into one Table. With `trim`, keep only the stars in the circle.

    A circle with no shard on disk gives an empty table with the master schema's columns.
    """
    folder = os.fspath(folder)
    circle = (ra_deg, dec_deg, radius_deg)
    if any(v is None for v in circle) and not all(v is None for v in circle):
        raise ValueError("give all of ra_deg, dec_deg and radius_deg, or none")
    shards, depth = refcat_shards(folder)
    if ra_deg is None:
        wanted = sorted(shards)
    else:
        ids = htm_trixels_in_circle(ra_deg, dec_deg, radius_deg, depth)
        wanted = [int(i) for i in ids if int(i) in shards]
    tables = [_read_shard(shards[i]) for i in wanted]
    if not tables:
        master = os.path.join(folder, "master_schema.fits")
        if os.path.exists(master):
            t = read_afw_table(master, what="reference catalog schema")[:0]
        else:
            t = Table({c: np.zeros(0) for c in _REQUIRED})
        t.meta["shards"] = []
        return t
    for t in tables:
        missing = [c for c in _REQUIRED if c not in t.colnames]
        if missing:
            raise MosaicError(f"{t.meta.get('source_file')}: no column(s) {', '.join(missing)}")
    names = tables[0].colnames
    for t in tables[1:]:
        if t.colnames != names:
            raise MosaicError(f"{t.meta.get('source_file')}: columns differ from those of "
                              f"{tables[0].meta.get('source_file')}")
    meta = dict(tables[0].meta)
    out = _stack(tables) if len(tables) > 1 else tables[0]
    out.meta.clear()
    out.meta.update({k: v for k, v in meta.items() if k != "source_file"})
    out.meta["shards"] = wanted
    if trim and ra_deg is not None and len(out):
        c = _unit(ra_deg, dec_deg)
        p = _unit(np.degrees(np.asarray(out["coord_ra"], dtype=float)),
                  np.degrees(np.asarray(out["coord_dec"], dtype=float)))
        out = out[p @ c >= np.cos(np.radians(radius_deg))]
    return out
