"""Sky maps: the tracts a coadd (and a mosaic fit) is organised in, as lsst.skymap defines them.

Two kinds are supported, each a port of the LSST/HSC software so that tract numbers and tract
geometry are the ones users of hscPipe and the LSST Science Pipelines know:

``RingsSkyMap``
    lsst.skymap.RingsSkyMap, the all-sky map of the HSC Subaru Strategic Program (obs_subaru
    ``config/hsc/makeSkyMap.py``: 120 rings, TAN projection, 1 arcmin tract overlap, 0.168
    arcsec pixels; patches of 4000x4000 pixels with a 100 pixel border, the "legacy" tract
    builder).  The sphere is cut into ``numRings`` declination rings plus two polar caps; each
    ring is cut in RA into as many tracts as are needed for a tract to be no wider than a ring is
    high.  Tract 0 is the south cap, tract 1 the tract at ``raStart`` in the southernmost ring,
    numbering continues eastwards around each ring and then northwards; the north cap is the last
    tract.  ``version=1`` (the default, lsst.skymap after DM-14809 and the Gen3 ``hsc_rings_v1``
    sky map) or ``version=0`` (the numbering before DM-14809, which only differs for the tracts
    centred on ``raStart``).

``DiscreteSkyMap``
    lsst.skymap.DiscreteSkyMap, one square tract per given centre and radius, as written by
    hscPipe's ``makeDiscreteSkyMap.py`` (see `make_discrete_skymap`).

Every tract is an ``lsst.skymap.ExplicitTractInfo``: a square of half-size ``radius`` around
its centre, grown by the tract overlap, projected with a WCS whose reference point is the tract
centre, and padded to a whole number of patches.  `TractInfo` reproduces that WCS (an
`astropy.wcs.WCS`) and bounding box pixel for pixel.

Regions of a tract
    *inner region*
        The part of the sky the sky map assigns to the tract (`SkyMap.find_tract`).  For a rings
        map these are the ring/RA cells, which tile the sphere: every point is in exactly one.
        For a discrete map it is lsst's inner polygon, the tract's bounding box shrunk by 0.001
        pixel (tracts of a discrete map may overlap or leave gaps).
    *outer region*
        The tract's pixel bounding box (lsst ``TractInfo.contains``,
        ``getOuterSkyPolygon``).  It contains the inner region plus about the tract overlap;
        neighbouring tracts' outer regions overlap.

Angles are in degrees in the public interface (RA in [0, 360)), radians inside.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
from astropy.wcs import WCS

from .. import MosaicError
from ..units import ARCSEC_RAD
from .atomic import write_text

__all__ = ["TractInfo", "RingsSkyMap", "DiscreteSkyMap",
           "make_discrete_skymap", "skymap_from_dict", "save_skymap", "load_skymap"]

# A rerun keeps its sky map in ROOT/rerun/RERUN/deepCoadd/skyMap.json (mosaicfit.io.layout;
# hscPipe keeps a pickle, deepCoadd/skyMap.pickle, in the same folder).
FORMAT_VERSION = 1

_TWOPI = 2.0 * math.pi
_DEG = math.pi / 180.0
# lsst.sphgeom: maximum error of a squared chord length between two unit vectors
_MAX_SQUARED_CHORD_LENGTH_ERROR = 2.5e-15
# largest polygon (bounding-circle radius) accepted by the overlap tests
_MAX_POLYGON_RADIUS = math.radians(30.0)
_PROJECTIONS = ("TAN", "STG")
# tracts kept in memory per sky map (a rings map builds its ~19000 tracts only when asked)
_CACHE_SIZE = 2048


# -- spherical geometry helpers (radians, unit vectors) ---------------------------------------

def _vectors(ra, dec):
    """Unit vectors (..., 3) of RA, Dec in radians."""
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def _lonlat(v):
    """RA in [0, 2 pi) and Dec (radians) of vectors (..., 3), which need not be normalised."""
    v = np.asarray(v, dtype=float)
    ra = np.arctan2(v[..., 1], v[..., 0]) % _TWOPI
    ra = np.where(ra >= _TWOPI, 0.0, ra)
    dec = np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1]))
    return ra, dec


def _wrap(angle):
    """lsst.geom.Angle.wrap(): the angle reduced to [0, 2 pi)."""
    w = math.fmod(angle, _TWOPI)
    if w < 0.0:
        w += _TWOPI
    if w >= _TWOPI:
        w = 0.0
    return w


def _wrap_deg(angle):
    """An angle in degrees reduced to [0, 360)."""
    w = math.fmod(float(angle), 360.0)
    if w < 0.0:
        w += 360.0
    return 0.0 if w >= 360.0 else w


def _east_north(ra, dec):
    """lsst.geom's local basis at (ra, dec): the east and north unit vectors (well defined at the
    poles, where 'east' is the direction of RA + 90 deg)."""
    east = np.array([-math.sin(ra), math.cos(ra), 0.0])
    north = np.array([-math.sin(dec) * math.cos(ra), -math.sin(dec) * math.sin(ra), math.cos(dec)])
    return east, north


def _offset(ra, dec, bearing, amount):
    """lsst.geom.SpherePoint.offset: move (ra, dec) by `amount` along the great circle leaving it
    at `bearing` (measured from east towards north).  All radians; returns (ra, dec)."""
    east, north = _east_north(ra, dec)
    direction = math.cos(bearing) * east + math.sin(bearing) * north
    v = math.cos(amount) * _vectors(ra, dec) + math.sin(amount) * direction
    r, d = _lonlat(v)
    return float(r), float(d)


def _angle_between(u, v):
    """Angle (radians) between vectors u (..., 3) and v (3,)."""
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), u @ v)


def _hull_2d(points):
    """Indices of the convex hull of 2-d points, counter-clockwise, collinear points dropped
    (Andrew's monotone chain)."""
    pts = np.asarray(points, dtype=float)
    order = sorted(range(len(pts)), key=lambda i: (pts[i, 0], pts[i, 1]))
    if len(order) < 3:
        return order

    def cross(o, a, b):
        return ((pts[a, 0] - pts[o, 0]) * (pts[b, 1] - pts[o, 1])
                - (pts[a, 1] - pts[o, 1]) * (pts[b, 0] - pts[o, 0]))

    lower, upper = [], []
    for i in order:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], i) <= 0:
            lower.pop()
        lower.append(i)
    for i in reversed(order):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], i) <= 0:
            upper.pop()
        upper.append(i)
    return lower[:-1] + upper[:-1]


def _convex_overlap_2d(a, b):
    """Whether two convex polygons (vertex arrays (n, 2), any order, possibly degenerate) share
    at least one point (separating-axis test; touching counts as overlapping)."""
    polys = []
    for p in (a, b):
        p = np.asarray(p, dtype=float)
        polys.append(p[_hull_2d(p)] if len(p) >= 3 else p)
    axes = [(0.0, 1.0), (1.0, 0.0)]
    for p in polys:
        n = len(p)
        if n >= 3:
            axes += [(p[i, 1] - p[(i + 1) % n, 1], p[(i + 1) % n, 0] - p[i, 0]) for i in range(n)]
        elif n == 2:
            axes += [(p[0, 1] - p[1, 1], p[1, 0] - p[0, 0])]
    for ax in axes:
        pa = polys[0] @ np.asarray(ax)
        pb = polys[1] @ np.asarray(ax)
        slack = 1e-12 * max(np.abs(pa).max(), np.abs(pb).max(), 1e-300)
        if pa.max() < pb.min() - slack or pb.max() < pa.min() - slack:
            return False
    return True


def _gnomonic(vectors, centre):
    """Gnomonic (great circles -> straight lines) coordinates of `vectors` about the unit vector
    `centre`; rows behind the tangent plane (dot <= 0) are NaN."""
    ra, dec = _lonlat(centre)
    east, north = _east_north(float(ra), float(dec))
    d = vectors @ centre
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = np.stack([vectors @ east / d, vectors @ north / d], axis=-1)
    xy[d <= 0] = np.nan
    return xy


def _polygon_vectors(ra_corners, dec_corners):
    """Unit vectors (n, 3) of a polygon's corners given in degrees, validated."""
    ra = np.atleast_1d(np.asarray(ra_corners, dtype=float)).ravel()
    dec = np.atleast_1d(np.asarray(dec_corners, dtype=float)).ravel()
    if ra.shape != dec.shape:
        raise ValueError(f"ra_corners and dec_corners differ in length ({ra.size} != {dec.size})")
    if ra.size == 0:
        raise ValueError("a polygon needs at least one corner")
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError("polygon corners must be finite")
    return _vectors(np.radians(ra), np.radians(dec))


def _caps(vectors):
    """(centres (N, 3), radii (N,), norms (N,)) of the caps around N polygons of as many
    corners each (vectors (N, n, 3)): the corners' normalised mean and the largest angle from
    it; `norms` the mean's length before normalising (~0: no hemisphere holds the corners)."""
    s = vectors.sum(axis=1)
    norms = np.linalg.norm(s, axis=1)
    centres = s / np.where(norms > 0, norms, 1.0)[:, None]
    cross = np.cross(vectors, centres[:, None, :])
    radii = np.max(np.arctan2(np.linalg.norm(cross, axis=-1),
                              np.einsum("ncd,nd->nc", vectors, centres)), axis=1)
    return centres, radii, norms


def _bounding_circle(vectors):
    """A cap (unit centre, radius in radians) containing a small polygon given by its corners."""
    centres, radii, norms = _caps(vectors[None])
    if norms[0] < 1e-12:
        raise ValueError("polygon corners are not within a hemisphere")
    c, radius = centres[0], float(radii[0])
    if radius > _MAX_POLYGON_RADIUS:
        raise ValueError(f"polygon too large for an overlap test: its corners reach "
                         f"{math.degrees(radius):.1f} deg from their mean (at most "
                         f"{math.degrees(_MAX_POLYGON_RADIUS):.0f} deg)")
    return c, radius


def _as_radians(ra, dec):
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    return np.radians(ra), np.radians(dec), ra.ndim == 0 and dec.ndim == 0


def _radius_for_pixels(rho, scale, projection):
    """Angle from the reference point of a pixel distance `rho` (zenithal projection, radians)."""
    if projection == "TAN":
        return math.atan(rho * scale)
    return 2.0 * math.atan(0.5 * rho * scale)  # STG


# -- tracts ------------------------------------------------------------------------------------

class TractInfo:
    """One tract: an lsst.skymap.ExplicitTractInfo built with the "legacy" tract builder.

    Attributes
    ----------
    id : int
        Tract number.
    ctr_ra, ctr_dec : float
        Tract centre (deg), also the WCS reference point (CRVAL).
    wcs : astropy.wcs.WCS
        The tract's WCS: CTYPE ``RA---TAN``/``DEC--TAN`` (or the configured projection), CD
        matrix ``diag(-scale, scale)``, CRPIX such that the bounding box starts at pixel 0
        (LSST pixel convention: pixel (0, 0) is centred on FITS pixel (1, 1)).
    bbox : tuple of int
        (width, height) in pixels; the box covers pixels 0..width-1, 0..height-1.
    num_patches : tuple of int
        (nx, ny) patches; width = nx * patch_inner_dimensions[0], same for y.
    patch_inner_dimensions : tuple of int
    patch_border : int
    tract_overlap : float
        Minimum overlap between neighbouring tracts (deg).
    radius : float
        Half-size of the tract's square before the overlap is added (deg).
    vertices : list of (ra, dec)
        Corners (deg) of the inner region.  For a rings tract, the corners of its RA/Dec box
        (whose top and bottom edges are parallels of declination, not great circles; for a
        polar cap, four points on the cap's rim); for a discrete tract, lsst's vertex list,
        the corners of the bounding box shrunk by 0.001 pixel.
    inner_box : tuple of float or None
        For a rings tract, (ra_min, ra_max, dec_min, dec_max) in deg of the inner region, with
        ra_min in [0, 360) and ra_max = ra_min + RA width (so ra_max may exceed 360); the polar
        caps have (0, 360, -90, dec) and (0, 360, dec, 90).  None for a discrete tract.
    lsst_vertices : list of (ra, dec)
        lsst's ``getVertexList()``: the corners (deg) of the bounding box shrunk by 0.001 pixel
        (for a discrete tract the same as `vertices`).
    outer_vertices : list of (ra, dec)
        Sky positions (deg) of the corners of the bounding box (lsst ``getOuterSkyPolygon``).
    """

    def __init__(self, tract_id, ctr_ra, ctr_dec, radius, tract_overlap, pixel_scale,
                 projection="TAN", patch_inner_dimensions=(4000, 4000), patch_border=100,
                 inner_test=None, inner_box=None, inner_vertices=None):
        """Build a tract as lsst.skymap.ExplicitTractInfo does.

        Parameters
        ----------
        tract_id : int
        ctr_ra, ctr_dec : float
            Centre (deg).
        radius, tract_overlap : float
            Half-size of the square and the overlap (deg).
        pixel_scale : float
            arcsec per pixel.
        projection : str
            FITS projection code, "TAN" or "STG".
        patch_inner_dimensions : (int, int)
        patch_border : int
        inner_test : callable, optional
            ``inner_test(ra_rad, dec_rad) -> bool array`` defining the inner region (rings maps);
            by default the inner region is the polygon of `vertices`.
        inner_box, inner_vertices : optional
            What `inner_box` and `vertices` report when `inner_test` is given.
        """
        projection = str(projection).upper()
        if projection not in _PROJECTIONS:
            raise ValueError(f"projection {projection!r} is not supported (use one of {_PROJECTIONS})")
        self.id = int(tract_id)
        self.ctr_ra = float(ctr_ra)
        self.ctr_dec = float(ctr_dec)
        self.radius = float(radius)
        self.tract_overlap = float(tract_overlap)
        self.pixel_scale = float(pixel_scale)
        self.projection = projection
        self.patch_inner_dimensions = (int(patch_inner_dimensions[0]), int(patch_inner_dimensions[1]))
        self.patch_border = int(patch_border)
        self._ctr_vec = _vectors(math.radians(self.ctr_ra), math.radians(self.ctr_dec))

        # ExplicitTractInfo._minimumBoundingBox: the centre offset by radius + overlap towards
        # E, N, W, S, in the frame of a WCS with its reference pixel at (0, 0).
        initial = self._make_wcs((0.0, 0.0))
        ra0, dec0 = math.radians(self.ctr_ra), math.radians(self.ctr_dec)
        dist = math.radians(self.radius + self.tract_overlap)
        pts = [_offset(ra0, dec0, i * 0.5 * math.pi, dist) for i in range(4)]
        px, py = initial.wcs_world2pix(np.degrees([p[0] for p in pts]),
                                       np.degrees([p[1] for p in pts]), 0)
        # lsst.geom.Box2I(Box2D, EXPAND): pixels whose centres lie in the box, grown outwards
        bbox_min, bbox_dim = [], []
        for lo, hi in ((px.min(), px.max()), (py.min(), py.max())):
            imin = int(math.floor(lo + 0.5))
            bbox_min.append(imin)
            bbox_dim.append(int(math.ceil(hi - 0.5)) + 1 - imin)
        # LegacyTractBuilder.setupPatches: grow to whole patches, keeping the centre
        num_patches = []
        for i, inner in enumerate(self.patch_inner_dimensions):
            num = (bbox_dim[i] + inner - 1) // inner
            delta = inner * num - bbox_dim[i]
            if delta > 0:
                bbox_dim[i] = inner * num
                bbox_min[i] -= delta // 2
            num_patches.append(num)
        self.num_patches = tuple(num_patches)
        self.bbox = (bbox_dim[0], bbox_dim[1])
        # TractInfo._finalOrientation: shift so the box starts at (0, 0)
        self.wcs = self._make_wcs((-bbox_min[0], -bbox_min[1]))

        w, h = self.bbox
        self.outer_vertices = self._pixels_to_sky([-0.5, w - 0.5, w - 0.5, -0.5],
                                                  [-0.5, -0.5, h - 0.5, h - 0.5])
        # ExplicitTractInfo: the vertex list is the bbox shrunk by 0.001 pixel
        self.lsst_vertices = self._pixels_to_sky([-0.499, w - 0.501, w - 0.501, -0.499],
                                                 [-0.499, -0.499, h - 0.501, h - 0.501])
        outer_vecs = _vectors(*np.radians(np.array(self.outer_vertices).T))
        self._outer_vecs = outer_vecs
        self._outer_xy = None            # its gnomonic hull (_outer_hull), when first asked
        self._outer_radius = float(_angle_between(outer_vecs, self._ctr_vec).max())
        self._inner_test = inner_test
        self.inner_box = None if inner_box is None else tuple(float(x) for x in inner_box)
        if inner_test is None:
            self.vertices = list(self.lsst_vertices)
            vecs = _vectors(*np.radians(np.array(self.vertices).T))
            normals = np.cross(vecs, np.roll(vecs, -1, axis=0))
            if np.all(normals @ self._ctr_vec < 0):  # make the edge normals point inwards
                normals = -normals
            self._inner_normals = normals
        else:
            self.vertices = list(inner_vertices)

    def _make_wcs(self, crpix_lsst):
        scale = self.pixel_scale / 3600.0
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = [f"RA---{self.projection}", f"DEC--{self.projection}"]
        wcs.wcs.cunit = ["deg", "deg"]
        wcs.wcs.crval = [self.ctr_ra, self.ctr_dec]
        wcs.wcs.crpix = [crpix_lsst[0] + 1.0, crpix_lsst[1] + 1.0]  # LSST -> FITS convention
        wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
        wcs.wcs.radesys = "ICRS"
        wcs.wcs.set()
        return wcs

    def _pixels_to_sky(self, x, y):
        ra, dec = self.wcs.wcs_pix2world(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 0)
        return [(_wrap_deg(r), float(d)) for r, d in zip(ra, dec)]

    def __repr__(self):
        return (f"TractInfo(id={self.id}, ctr=({self.ctr_ra:.6f}, {self.ctr_dec:.6f}), "
                f"bbox={self.bbox[0]}x{self.bbox[1]}, patches={self.num_patches[0]}x{self.num_patches[1]})")

    def sky_to_pixel(self, ra, dec):
        """Tract pixel coordinates (LSST convention, 0-based) of RA, Dec (deg); NaN for points
        the projection cannot map (90 deg or more from the centre)."""
        ra = np.asarray(ra, dtype=float)
        dec = np.asarray(dec, dtype=float)
        shape = np.broadcast(ra, dec).shape
        ra_f, dec_f = np.broadcast_to(ra, shape).ravel(), np.broadcast_to(dec, shape).ravel()
        ok = np.isfinite(ra_f) & np.isfinite(dec_f)
        ok[ok] = _vectors(np.radians(ra_f[ok]), np.radians(dec_f[ok])) @ self._ctr_vec > 1e-9
        x = np.full(ra_f.shape, np.nan)
        y = np.full(ra_f.shape, np.nan)
        if np.any(ok):
            x[ok], y[ok] = self.wcs.wcs_world2pix(ra_f[ok], dec_f[ok], 0)
        return x.reshape(shape), y.reshape(shape)

    def contains(self, ra, dec):
        """Whether RA, Dec (deg; scalars or arrays) lie in the tract's inner region."""
        r, d, scalar = _as_radians(ra, dec)
        r, d = np.broadcast_arrays(r, d)
        ok = np.isfinite(r) & np.isfinite(d)
        result = np.zeros(r.shape, dtype=bool)
        if self._inner_test is not None:
            result[ok] = self._inner_test(r[ok], d[ok])
        else:
            v = _vectors(r[ok], d[ok])
            result[ok] = np.all(v @ self._inner_normals.T >= 0.0, axis=-1) & (v @ self._ctr_vec > 0)
        return bool(result) if scalar else result

    def outer_contains(self, ra, dec):
        """Whether RA, Dec (deg) fall on a pixel of the tract's bounding box (lsst
        ``TractInfo.contains``: the nearest pixel, floor(x + 0.5), is inside the box)."""
        scalar = np.ndim(ra) == 0 and np.ndim(dec) == 0
        x, y = self.sky_to_pixel(ra, dec)
        with np.errstate(invalid="ignore"):
            ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
            result = (ix >= 0) & (ix < self.bbox[0]) & (iy >= 0) & (iy < self.bbox[1])
        return bool(result) if scalar else result

    def overlaps_polygon(self, ra_corners, dec_corners):
        """Whether the convex polygon with great-circle edges through the given corners (deg;
        e.g. the four corners of a CCD, in any order) overlaps the tract's outer region, the
        great-circle polygon through the corners of its bounding box (lsst
        ``getOuterSkyPolygon``).  Touching counts as overlapping."""
        vecs = _polygon_vectors(ra_corners, dec_corners)
        centre, radius = _bounding_circle(vecs)
        return self._overlaps(vecs, centre, radius)

    def _overlaps(self, vecs, centre, radius):
        if float(_angle_between(centre[None, :], self._ctr_vec)[0]) > self._outer_radius + radius + 1e-12:
            return False
        xy = _gnomonic(vecs, self._ctr_vec)
        if not np.all(np.isfinite(xy)):  # cannot happen within the size limits
            raise ValueError(f"polygon reaches beyond 90 deg from the centre of tract {self.id}")
        outer = self._outer_hull()
        # most CCDs of a tract lie inside it: every corner on the inner side of every edge
        # of the (counter-clockwise) outer polygon; the others get the full overlap test
        edge = np.roll(outer, -1, axis=0) - outer
        rel = xy[:, None, :] - outer[None, :, :]
        if np.all(edge[None, :, 0] * rel[..., 1] - edge[None, :, 1] * rel[..., 0] >= 0):
            return True
        return _convex_overlap_2d(outer, xy)

    def _overlaps_many(self, vecs, centres, radii):
        """:meth:`_overlaps` of each polygon (vecs: a list of (n_i, 3); centres (N, 3), radii
        (N,)), as a bool array: the distance and inside tests on all at once, the full test
        on the few left."""
        result = np.zeros(len(vecs), bool)
        near = ~(_angle_between(centres, self._ctr_vec) > self._outer_radius + radii + 1e-12)
        idx = np.nonzero(near)[0]
        if not len(idx):
            return result
        outer = self._outer_hull()
        edge = np.roll(outer, -1, axis=0) - outer
        sizes = {len(vecs[i]) for i in idx}
        if len(sizes) != 1:
            for i in idx:
                result[i] = self._overlaps(vecs[i], centres[i], radii[i])
            return result
        xy = _gnomonic(np.stack([vecs[i] for i in idx]), self._ctr_vec)     # (m, n, 2)
        if not np.all(np.isfinite(xy)):  # cannot happen within the size limits
            raise ValueError(f"polygon reaches beyond 90 deg from the centre of tract {self.id}")
        rel = xy[:, :, None, :] - outer[None, None, :, :]
        cross = edge[None, None, :, 0] * rel[..., 1] - edge[None, None, :, 1] * rel[..., 0]
        # a corner inside the tract (on the inner side of every edge: most CCDs of a tract
        # have all four there): they share a point
        inside = np.any(np.all(cross >= 0, axis=2), axis=1)
        result[idx[inside]] = True
        # every corner beyond one edge of the tract, by far more than the separating-axis
        # test's rounding slack (1e-12 relative): that edge separates them, so the full test
        # would say no; the rest get it
        tol = 1e-9 * float(np.abs(outer).max()) * float(np.hypot(*edge.T).max())
        apart = np.any(np.all(cross < -tol, axis=1), axis=1)
        for k in np.nonzero(~inside & ~apart)[0]:
            result[idx[k]] = _convex_overlap_2d(outer, xy[k])
        return result

    def _outer_hull(self):
        """The outer polygon in the gnomonic plane about the tract centre, as its convex hull
        (counter-clockwise), computed once per tract."""
        if self._outer_xy is None:
            xy = _gnomonic(self._outer_vecs, self._ctr_vec)
            self._outer_xy = xy[_hull_2d(xy)]
        return self._outer_xy


# -- sky maps ----------------------------------------------------------------------------------

class _SkyMapBase:
    """What both kinds of sky map share: tracts built on demand (the most recently used ones
    kept) and searches by point and polygon."""

    kind = None

    def __init__(self, num_tracts, projection, tract_overlap, pixel_scale,
                 patch_inner_dimensions, patch_border):
        projection = str(projection).upper()
        if projection not in _PROJECTIONS:
            raise ValueError(f"projection {projection!r} is not supported (use one of {_PROJECTIONS})")
        if not pixel_scale > 0:
            raise ValueError(f"pixel_scale must be positive, not {pixel_scale!r}")
        if not tract_overlap >= 0:
            raise ValueError(f"tract_overlap must be >= 0, not {tract_overlap!r}")
        dims = tuple(int(d) for d in patch_inner_dimensions)
        if len(dims) != 2 or min(dims) <= 0:
            raise ValueError(f"patch_inner_dimensions must be two positive ints, "
                             f"not {patch_inner_dimensions!r}")
        if int(patch_border) < 0:
            raise ValueError(f"patch_border must be >= 0, not {patch_border!r}")
        self.projection = projection
        self.tract_overlap = float(tract_overlap)
        self.pixel_scale = float(pixel_scale)
        self.patch_inner_dimensions = dims
        self.patch_border = int(patch_border)
        self._num_tracts = int(num_tracts)
        self._cache = {}

    def _common_config(self):
        return {"projection": self.projection, "tractOverlap": self.tract_overlap,
                "pixelScale": self.pixel_scale, "rotation": 0.0, "tractBuilder": "legacy",
                "patchInnerDimensions": list(self.patch_inner_dimensions),
                "patchBorder": self.patch_border}

    @staticmethod
    def _common_kwargs(config):
        if float(config.get("rotation", 0.0)) != 0.0:
            raise ValueError("rotated tracts (rotation != 0) are not supported")
        if config.get("tractBuilder", "legacy") != "legacy":
            raise ValueError(f"tractBuilder {config['tractBuilder']!r} is not supported (only 'legacy')")
        return dict(projection=config["projection"], tract_overlap=float(config["tractOverlap"]),
                    pixel_scale=float(config["pixelScale"]),
                    patch_inner_dimensions=tuple(config["patchInnerDimensions"]),
                    patch_border=int(config["patchBorder"]))

    def __len__(self):
        return self._num_tracts

    def __iter__(self):
        for i in range(self._num_tracts):
            yield self[i]

    def __getitem__(self, tract_id):
        if isinstance(tract_id, (bool, np.bool_)) or not isinstance(tract_id, (int, np.integer)):
            raise TypeError(f"tract ids are integers, not {tract_id!r}")
        tract_id = int(tract_id)
        if not 0 <= tract_id < self._num_tracts:
            raise IndexError(f"tract {tract_id} is not in this sky map (tracts 0..{self._num_tracts - 1})")
        tract = self._cache.pop(tract_id, None)
        if tract is None:
            tract = self._make_tract(tract_id)
            if len(self._cache) >= _CACHE_SIZE:  # forget the least recently used tract
                self._cache.pop(next(iter(self._cache)))
        self._cache[tract_id] = tract
        return tract

    def __eq__(self, other):
        if not isinstance(other, _SkyMapBase):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None

    def _candidates(self, centre, radius):
        """Ids of the tracts that might reach within `radius` of `centre` (unit vector)."""
        raise NotImplementedError

    def find_tracts_overlapping(self, ra_corners, dec_corners):
        """Ids (sorted) of all tracts whose outer region overlaps the convex polygon with the
        given corners (deg; e.g. a CCD's four corners).  Polygons may be up to 30 deg across."""
        vecs = _polygon_vectors(ra_corners, dec_corners)
        centre, radius = _bounding_circle(vecs)
        return sorted(int(t) for t in self._candidates(centre, radius)
                      if self[int(t)]._overlaps(vecs, centre, radius))

    find_tract_ids_overlapping = find_tracts_overlapping

    def find_tracts_overlapping_many(self, polygons):
        """:meth:`find_tracts_overlapping` of each (ra_corners, dec_corners) of `polygons` (a
        visit's CCDs: neighbours on the sky), the same answers: the tracts that might reach
        any of them found once (the cap around all, when small), then each tract's overlap
        test made for all polygons at once. (A 200-visit run has 20000 CCDs; one by one this
        was ~0.5 ms each.)"""
        polygons = list(polygons)
        if len(polygons) < 2:
            return [self.find_tracts_overlapping(*p) for p in polygons]
        ras = [np.atleast_1d(np.asarray(r, float)).ravel() for r, _ in polygons]
        decs = [np.atleast_1d(np.asarray(d, float)).ravel() for _, d in polygons]
        sizes = {len(r) for r in ras} | {len(d) for d in decs}
        if len(sizes) != 1 or 0 in sizes:
            return [self.find_tracts_overlapping(*p) for p in polygons]
        ra, dec = np.array(ras), np.array(decs)                  # (N, corners)
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            return [self.find_tracts_overlapping(*p) for p in polygons]
        V = _vectors(np.radians(ra), np.radians(dec))             # (N, corners, 3)
        centres, radii, norms = _caps(V)          # each polygon's _bounding_circle
        if np.any(norms < 1e-12) or np.any(radii > _MAX_POLYGON_RADIUS):
            # (one by one, which says which polygon is wrong)
            return [self.find_tracts_overlapping(*p) for p in polygons]
        vecs = list(V)
        c = centres.sum(axis=0)
        norm = np.linalg.norm(c)
        if norm < 1e-12:
            return [self.find_tracts_overlapping(*p) for p in polygons]
        c = c / norm
        # every polygon's cap lies within this one (triangle inequality), so its candidates
        # include each polygon's
        reach = float(np.max(_angle_between(centres, c) + radii))
        if reach > _MAX_POLYGON_RADIUS:
            return [self.find_tracts_overlapping(*p) for p in polygons]
        out = [[] for _ in polygons]
        for t in sorted(int(t) for t in self._candidates(c, reach)):
            for i in np.nonzero(self[t]._overlaps_many(vecs, centres, radii))[0]:
                out[i].append(t)
        return out

    def find_all_tracts(self, ra, dec):
        """Ids (sorted) of all tracts whose outer region (bounding box) contains the point
        RA, Dec (deg) (lsst ``findAllTracts``)."""
        v = _polygon_vectors(ra, dec)[0]
        return sorted(int(t) for t in self._candidates(v, 0.0) if self[int(t)].outer_contains(ra, dec))

    def to_json(self):
        """The sky map as human-readable JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


class RingsSkyMap(_SkyMapBase):
    """lsst.skymap.RingsSkyMap (defaults: the HSC-SSP sky map, Gen3 name ``hsc_rings_v1``).

    Parameters
    ----------
    num_rings : int
        Number of declination rings (besides the two polar caps).
    ra_start : float
        RA (deg) of the centre of the first tract of every ring.
    projection : str
        "TAN" or "STG".
    tract_overlap : float
        Minimum overlap between neighbouring tracts (deg).
    pixel_scale : float
        arcsec per pixel.
    patch_inner_dimensions : (int, int)
    patch_border : int
    version : int
        1 (lsst.skymap since DM-14809) or 0 (before: tract 1 + ring 0's size repeats tract 1,
        the first tract of the last ring is missing, and every other tract at ``ra_start``
        takes the number of the one in the ring below).
    """

    kind = "rings"

    def __init__(self, num_rings=120, ra_start=0.0, projection="TAN", tract_overlap=1.0 / 60,
                 pixel_scale=0.168, patch_inner_dimensions=(4000, 4000), patch_border=100, version=1):
        num_rings = int(num_rings)
        if num_rings <= 0:
            raise ValueError(f"num_rings must be positive, not {num_rings}")
        if not 0.0 <= float(ra_start) < 360.0:
            raise ValueError(f"ra_start must be in [0, 360), not {ra_start!r}")
        if version not in (0, 1):
            raise ValueError(f"version must be 0 or 1, not {version!r}")
        self.num_rings = num_rings
        self.ra_start = float(ra_start)
        self.version = int(version)
        # the two caps together count as one more ring
        self.ring_size = math.pi / (num_rings + 1)
        ring_nums = []
        for i in range(num_rings):
            start = self.ring_size * (i + 0.5) - 0.5 * math.pi
            stop = start + self.ring_size
            dec = min(math.fabs(start), math.fabs(stop))  # the edge nearer the equator
            ring_nums.append(int(2 * math.pi * math.cos(dec) / self.ring_size) + 1)
        self.ring_nums = ring_nums
        self._ring_nums = np.array(ring_nums)
        self._ring_starts = np.concatenate([[0], np.cumsum(ring_nums)])  # tracts before each ring
        self._first_ring_start = self.ring_size * 0.5 - 0.5 * math.pi
        self._ra_start_rad = self.ra_start * _DEG
        super().__init__(sum(ring_nums) + 2, projection, tract_overlap, pixel_scale,
                         patch_inner_dimensions, patch_border)
        self._centres = None
        # every tract is the same square: bound its outer region's radius for candidate searches
        scale = self.pixel_scale * ARCSEC_RAD
        half = math.radians(math.degrees(0.5 * self.ring_size) + self.tract_overlap)
        rho = (math.tan(half) if self.projection == "TAN" else 2 * math.tan(0.5 * half)) / scale
        rho = math.sqrt(2.0) * (rho + 0.5 * max(self.patch_inner_dimensions) + 2.0)
        self._outer_bound = _radius_for_pixels(rho, scale, self.projection) + 1e-9

    def __repr__(self):
        return (f"RingsSkyMap(num_rings={self.num_rings}, ra_start={self.ra_start}, "
                f"projection={self.projection!r}, tract_overlap={self.tract_overlap!r}, "
                f"pixel_scale={self.pixel_scale!r}, version={self.version}; {len(self)} tracts)")

    # numbering

    def ring_indices(self, tract_id):
        """(ring, number within the ring) of a tract (lsst ``getRingIndices``): ring -1 is the
        south cap, ``num_rings`` the north cap (both with number 0)."""
        tract_id = int(tract_id)
        if tract_id == 0:
            return -1, 0
        if tract_id == self._num_tracts - 1:
            return self.num_rings, 0
        if not 0 <= tract_id < self._num_tracts:
            raise IndexError(f"tract {tract_id} is not in this sky map (tracts 0..{self._num_tracts - 1})")
        n = tract_id - 1
        side = "right" if self.version == 1 else "left"
        ring = int(np.searchsorted(self._ring_starts[1:], n, side=side))
        return ring, n - int(self._ring_starts[ring])

    def _centre(self, ring, num):
        if ring == -1:
            return 0.0, -0.5 * math.pi
        if ring == self.num_rings:
            return 0.0, 0.5 * math.pi
        dec = self.ring_size * (ring + 1) - 0.5 * math.pi
        ra = _wrap(2 * math.pi * num / self.ring_nums[ring] + self._ra_start_rad)
        return ra, dec

    def tract_centres(self):
        """(ra, dec) arrays (deg) of the centres of all tracts, indexed by tract id."""
        if self._centres is None:
            ra = np.empty(self._num_tracts)
            dec = np.empty(self._num_tracts)
            for t in range(self._num_tracts):
                r, d = self._centre(*self.ring_indices(t))
                ra[t], dec[t] = math.degrees(r), math.degrees(d)
            self._centres = (ra, dec)
            self._centre_vecs = _vectors(np.radians(ra), np.radians(dec))
        return self._centres

    # the inner regions (ring/RA cells)

    def _rings_and_numbers(self, ra, dec):
        """Ring (-1 and num_rings for the caps) and number within the ring of the cell holding
        each point (radians), as lsst ``findTractIdArray`` computes them."""
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        first = self._first_ring_start
        ring = np.zeros(dec.shape, dtype=np.int64)
        ring[dec < first] = -1
        ring[dec > -first] = self.num_rings
        mid = (dec >= first) & (dec <= -first)
        ring[mid] = np.minimum(((dec[mid] - first) / self.ring_size).astype(np.int64), self.num_rings - 1)
        num = np.zeros(dec.shape, dtype=np.int64)
        in_ring = (ring >= 0) & (ring < self.num_rings)
        n = self._ring_nums[ring[in_ring]]
        delta = (ra[in_ring] - self._ra_start_rad) % _TWOPI
        t = (delta / (_TWOPI / n) + 0.5).astype(np.int64)
        t[t == n] = 0  # wrap around
        num[in_ring] = t
        return ring, num

    def find_tract(self, ra, dec):
        """The tract whose inner region holds each point (lsst ``findTract`` /
        ``findTractIdArray``).  RA, Dec in deg, scalars (-> int) or arrays (-> int array);
        -1 for non-finite input."""
        r, d, scalar = _as_radians(ra, dec)
        r, d = np.broadcast_arrays(r, d)
        shape = r.shape
        r, d = r.ravel(), d.ravel()
        ok = np.isfinite(r) & np.isfinite(d)
        ids = np.full(r.shape, -1, dtype=np.int64)
        ring, num = self._rings_and_numbers(r[ok], d[ok])
        out = np.empty(ring.shape, dtype=np.int64)
        south, north = ring == -1, ring == self.num_rings
        out[south] = 0
        out[north] = self._num_tracts - 1
        mid = ~(south | north)
        ring_m, num_m = ring[mid], num[mid]
        if self.version == 0:
            # the numbering bug of DM-14809, kept for version 0
            ring_m = ring_m + ((num_m == 0) & (ring_m != 0))
        out[mid] = self._ring_starts[ring_m] + num_m + 1
        ids[ok] = out
        ids = ids.reshape(shape)
        return int(ids) if scalar else ids

    def _cell_test(self, ring, num):
        n_ring = self.ring_nums[ring] if 0 <= ring < self.num_rings else 1

        def test(ra, dec):
            rings, nums = self._rings_and_numbers(ra, dec)
            if ring in (-1, self.num_rings):
                return rings == ring
            return (rings == ring) & (nums == num % n_ring)
        return test

    def _make_tract(self, tract_id):
        ring, num = self.ring_indices(tract_id)
        ra, dec = self._centre(ring, num)
        ra_deg, dec_deg = math.degrees(ra), math.degrees(dec)
        edge = math.degrees(self._first_ring_start)
        if ring == -1:
            box = (0.0, 360.0, -90.0, edge)
        elif ring == self.num_rings:
            box = (0.0, 360.0, -edge, 90.0)
        else:
            half_ra = 180.0 / self.ring_nums[ring]
            lo = (ra_deg - half_ra) % 360.0
            box = (lo, lo + 2 * half_ra, dec_deg - 0.5 * math.degrees(self.ring_size),
                   dec_deg + 0.5 * math.degrees(self.ring_size))
        if ring in (-1, self.num_rings):
            rim = box[3] if ring == -1 else box[2]
            vertices = [(a, rim) for a in (0.0, 90.0, 180.0, 270.0)]
        else:
            vertices = [(_wrap_deg(box[0]), box[2]), (_wrap_deg(box[1]), box[2]),
                        (_wrap_deg(box[1]), box[3]), (_wrap_deg(box[0]), box[3])]
        return TractInfo(tract_id, ra_deg, dec_deg, 0.5 * math.degrees(self.ring_size),
                         self.tract_overlap, self.pixel_scale, self.projection,
                         self.patch_inner_dimensions, self.patch_border,
                         inner_test=self._cell_test(ring, num), inner_box=box, inner_vertices=vertices)

    def _candidates(self, centre, radius):
        self.tract_centres()
        reach = self._outer_bound + radius
        return np.nonzero(self._centre_vecs @ centre >= math.cos(min(reach, math.pi)))[0]

    # persistence

    @property
    def config(self):
        """The lsst.skymap configuration (lsst field names)."""
        return {"numRings": self.num_rings, "raStart": self.ra_start, **self._common_config()}

    def to_dict(self):
        """The sky map as a JSON-able dict (kind, format version, lsst.skymap configuration)."""
        return {"kind": self.kind, "format_version": FORMAT_VERSION,
                "description": "lsst.skymap.RingsSkyMap",
                "version": self.version, "num_tracts": len(self), "config": self.config}

    @classmethod
    def from_dict(cls, d):
        """The sky map of a :meth:`to_dict` dict; ValueError if its num_tracts disagrees with its config."""
        config = d["config"]
        skymap = cls(num_rings=int(config["numRings"]), ra_start=float(config.get("raStart", 0.0)),
                     version=int(d.get("version", 1)), **cls._common_kwargs(config))
        if "num_tracts" in d and int(d["num_tracts"]) != len(skymap):
            raise ValueError(f"num_tracts is {d['num_tracts']} but the configuration gives "
                             f"{len(skymap)} tracts")
        return skymap


class DiscreteSkyMap(_SkyMapBase):
    """lsst.skymap.DiscreteSkyMap: tract i is a square around (ra_list[i], dec_list[i]) of
    half-size radius_list[i] (deg), plus the tract overlap.

    The defaults are those of hscPipe's ``makeDiscreteSkyMap.py`` for HSC: TAN projection
    (obs_subaru ``config/makeDiscreteSkyMap.py``), 0.168 arcsec pixels
    (``config/hsc/makeDiscreteSkyMap.py``), no tract overlap (``MakeDiscreteSkyMapConfig``).
    """

    kind = "discrete"

    def __init__(self, ra_list, dec_list, radius_list, projection="TAN", tract_overlap=0.0,
                 pixel_scale=0.168, patch_inner_dimensions=(4000, 4000), patch_border=100):
        ra_list = [float(x) for x in ra_list]
        dec_list = [float(x) for x in dec_list]
        radius_list = [float(x) for x in radius_list]
        if not len(ra_list) == len(dec_list) == len(radius_list):
            raise ValueError(f"ra_list, dec_list and radius_list differ in length "
                             f"({len(ra_list)}, {len(dec_list)}, {len(radius_list)})")
        for ra, dec, radius in zip(ra_list, dec_list, radius_list):
            if not (math.isfinite(ra) and -90.0 <= dec <= 90.0 and 0.0 <= radius <= 20.0):
                raise ValueError(f"bad tract centre or radius: ({ra!r}, {dec!r}), {radius!r}")
        self.ra_list = ra_list
        self.dec_list = dec_list
        self.radius_list = radius_list
        super().__init__(len(ra_list), projection, tract_overlap, pixel_scale,
                         patch_inner_dimensions, patch_border)

    def __repr__(self):
        return (f"DiscreteSkyMap({len(self)} tracts, projection={self.projection!r}, "
                f"tract_overlap={self.tract_overlap!r}, pixel_scale={self.pixel_scale!r})")

    def _make_tract(self, tract_id):
        return TractInfo(tract_id, self.ra_list[tract_id], self.dec_list[tract_id],
                         self.radius_list[tract_id], self.tract_overlap, self.pixel_scale,
                         self.projection, self.patch_inner_dimensions, self.patch_border)

    def tract_centres(self):
        """(ra, dec) arrays (deg) of the tract centres."""
        return np.array(self.ra_list), np.array(self.dec_list)

    def find_tract(self, ra, dec):
        """For each point, the tract whose inner region holds it, the one with the nearest
        centre if several do, -1 if none does (lsst's ``findTract`` returns the nearest tract
        even when it does not contain the point).  RA, Dec in deg; scalars -> int, arrays ->
        int array."""
        r, d, scalar = _as_radians(ra, dec)
        r, d = np.broadcast_arrays(r, d)
        shape = r.shape
        r, d = r.ravel(), d.ravel()
        ids = np.full(r.shape, -1, dtype=np.int64)
        best = np.full(r.shape, -np.inf)
        ok = np.isfinite(r) & np.isfinite(d)
        v = _vectors(r[ok], d[ok])
        for tract in self:
            inside = tract.contains(np.degrees(r[ok]), np.degrees(d[ok]))
            closeness = v @ tract._ctr_vec
            better = inside & (closeness > best[ok])
            idx = np.nonzero(ok)[0][better]
            ids[idx] = tract.id
            best[idx] = closeness[better]
        ids = ids.reshape(shape)
        return int(ids) if scalar else ids

    def _candidates(self, centre, radius):
        return [t.id for t in self
                if float(_angle_between(centre[None, :], t._ctr_vec)[0]) <= t._outer_radius + radius + 1e-9]

    @property
    def config(self):
        """The lsst.skymap configuration (lsst field names)."""
        return {"raList": list(self.ra_list), "decList": list(self.dec_list),
                "radiusList": list(self.radius_list), **self._common_config()}

    def to_dict(self):
        """The sky map as a JSON-able dict (kind, format version, lsst.skymap configuration)."""
        return {"kind": self.kind, "format_version": FORMAT_VERSION,
                "description": "lsst.skymap.DiscreteSkyMap", "num_tracts": len(self),
                "config": self.config}

    @classmethod
    def from_dict(cls, d):
        """The sky map of a :meth:`to_dict` dict; ValueError if its num_tracts disagrees with raList."""
        config = d["config"]
        skymap = cls(config["raList"], config["decList"], config["radiusList"],
                     **cls._common_kwargs(config))
        if "num_tracts" in d and int(d["num_tracts"]) != len(skymap):
            raise ValueError(f"num_tracts is {d['num_tracts']} but raList has {len(skymap)} entries")
        return skymap


# -- making a discrete sky map from the corners of the input images ---------------------------

def _hull_vectors(vecs):
    """Vertices (unit vectors, counter-clockwise seen from outside the sphere) of the spherical
    convex hull of `vecs`, which must lie within 80 deg of their mean."""
    mean = vecs.sum(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-9 or np.any(vecs @ (mean / norm) < math.cos(math.radians(80.0))):
        raise MosaicError("the image corners spread over too much of the sky for one tract "
                          "(more than 80 deg from their mean)")
    xy = _gnomonic(vecs, mean / norm)
    hull = _hull_2d(xy)
    if len(hull) < 3:
        raise MosaicError("the image corners do not enclose an area (fewer than 3 distinct, "
                          "non-collinear corners)")
    return vecs[hull]


def _sphgeom_bounding_circle(hull):
    """lsst.sphgeom ConvexPolygon.getBoundingCircle: the centroid of the polygon's area and
    the largest distance from it to a vertex (plus sphgeom's rounding allowance)."""
    cm = np.zeros(3)
    for i in range(len(hull)):
        a, b = hull[i - 1], hull[i]
        v = np.cross(b + a, b - a)  # robustCross
        n = np.linalg.norm(v)
        s = 0.5 * n
        c = float(a @ b)
        angle = 0.0 if (s == 0.0 and c == 0.0) else math.atan2(s, c)
        if n > 0:
            cm += v / n * angle
    centre = cm / np.linalg.norm(cm)
    cl2 = float(np.max(np.sum((hull - centre) ** 2, axis=1))) + 2.0 * _MAX_SQUARED_CHORD_LENGTH_ERROR
    return centre, 2.0 * math.asin(min(1.0, 0.5 * math.sqrt(cl2)))


def _geom_bounding_circle(hull):
    """The old lsst.geom SphericalConvexPolygon.getBoundingCircle (hscPipe <= 4): the
    normalised sum of the hull vertices and the largest angle from it to a vertex."""
    c = hull.sum(axis=0)
    centre = c / np.linalg.norm(c)
    return centre, float(_angle_between(hull, centre).max())


def make_discrete_skymap(ra_deg, dec_deg, pixel_scale_arcsec=0.168, border_deg=0.0,
                         projection="TAN", tract_overlap_deg=0.0,
                         patch_inner_dimensions=(4000, 4000), patch_border=100,
                         append_to=None, algorithm="sphgeom"):
    """A one-tract DiscreteSkyMap covering the given image corners, as hscPipe's
    ``makeDiscreteSkyMap.py`` makes it.

    The tract is the bounding circle of the spherical convex hull of all corners: centred on
    the hull's centroid, with radius the largest distance from there to a hull vertex, plus
    `border_deg` (``borderSize``, default 0).  Pixel scale, projection and tract overlap default
    to the HSC configuration (0.168 arcsec, TAN, 0).

    Parameters
    ----------
    ra_deg, dec_deg : array_like
        Corners (deg) of all input images (e.g. the four sky corners of every CCD).
    append_to : DiscreteSkyMap, optional
        Append the new tract to this sky map (``doAppend``); its configuration must match.
    algorithm : str
        "sphgeom" (pipe_tasks since 2017: the centroid of the hull's area) or "geom" (older
        pipe_tasks: the normalised sum of the hull's vertices).

    Returns
    -------
    DiscreteSkyMap
    """
    ra = np.asarray(ra_deg, dtype=float).ravel()
    dec = np.asarray(dec_deg, dtype=float).ravel()
    if ra.shape != dec.shape:
        raise ValueError(f"ra_deg and dec_deg differ in length ({ra.size} != {dec.size})")
    if ra.size == 0:
        raise MosaicError("no image corners to make a sky map from")
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError("image corners must be finite")
    if algorithm not in ("sphgeom", "geom"):
        raise ValueError(f"algorithm must be 'sphgeom' or 'geom', not {algorithm!r}")
    hull = _hull_vectors(_vectors(np.radians(ra), np.radians(dec)))
    centre, radius = (_sphgeom_bounding_circle if algorithm == "sphgeom" else _geom_bounding_circle)(hull)
    c_ra, c_dec = _lonlat(centre)
    tract_radius = math.degrees(radius) + float(border_deg)
    if not 0.0 <= tract_radius <= 20.0:
        raise MosaicError(f"the image corners need a tract of radius {tract_radius:.2f} deg; "
                          f"at most 20 deg is supported")
    kwargs = dict(projection=projection, tract_overlap=tract_overlap_deg,
                  pixel_scale=pixel_scale_arcsec, patch_inner_dimensions=patch_inner_dimensions,
                  patch_border=patch_border)
    ra_list, dec_list, radius_list = [], [], []
    if append_to is not None:
        if not isinstance(append_to, DiscreteSkyMap):
            raise MosaicError("cannot append a tract to a sky map that is not a discrete sky map")
        new = DiscreteSkyMap([], [], [], **kwargs)._common_config()
        old = append_to._common_config()
        if new != old:
            diff = ", ".join(f"{k} {old[k]!r} != {new[k]!r}" for k in old if old[k] != new[k])
            raise MosaicError(f"cannot append to the existing sky map: configurations differ ({diff})")
        ra_list, dec_list, radius_list = (list(append_to.ra_list), list(append_to.dec_list),
                                          list(append_to.radius_list))
    ra_list.append(math.degrees(float(c_ra)))
    dec_list.append(math.degrees(float(c_dec)))
    radius_list.append(tract_radius)
    return DiscreteSkyMap(ra_list, dec_list, radius_list, **kwargs)


# -- persistence --------------------------------------------------------------------------------

_KINDS = {"rings": RingsSkyMap, "discrete": DiscreteSkyMap}


def skymap_from_dict(d):
    """A sky map from its `to_dict` form (raises KeyError, TypeError or ValueError if bad)."""
    if not isinstance(d, dict):
        raise TypeError(f"expected a JSON object, not {type(d).__name__}")
    kind = d["kind"]
    if kind not in _KINDS:
        raise ValueError(f"unknown sky map kind {kind!r} (expected 'rings' or 'discrete')")
    if int(d.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise ValueError(f"format_version {d['format_version']} is newer than this mosaicfit understands")
    if not isinstance(d["config"], dict):
        raise TypeError("'config' must be a JSON object")
    return _KINDS[kind].from_dict(d)


def save_skymap(skymap, path):
    """Write `skymap` to `path` as human-readable JSON, atomically."""
    write_text(skymap.to_json(), path)


def load_skymap(path):
    """Read a sky map written by `save_skymap`; raises MosaicError naming the file and the
    problem if it is missing or not a valid sky map."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise MosaicError(f"sky map {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MosaicError(f"cannot read sky map {path}: {e}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise MosaicError(f"sky map {path} is not valid JSON: {e}") from None
    try:
        return skymap_from_dict(d)
    except KeyError as e:
        raise MosaicError(f"sky map {path} is missing {e}") from None
    except (TypeError, ValueError) as e:
        raise MosaicError(f"sky map {path} is invalid: {e}") from None
