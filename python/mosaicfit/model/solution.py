"""The mosaic solution and its products.

Astrometry. Each visit v maps the field angle (X, Y) of the camera's optical model [applied to
focal-plane coordinates from each CCD's nominal placement corrected by its fitted offset
(dx, dy) and rotation] to the gnomonic plane of the *tract* (arcsec, about the tract's tangent
point) by a polynomial of total order N (fittingOrder, HSC: 9) in a Legendre basis of X/s, Y/s.
Fitting on top of the known optics (rather than meas_mosaic's polynomial of the raw focal
plane) leaves the polynomial only the visit's own changes (scale, rotation, refraction,
flexure): the fit stays exact when sparse fields (narrow bands) force a lower order. Using the tract's plane (rather than meas_mosaic's
per-visit plane) keeps each star's parameters the same in every visit, so that the star blocks
of the normal equations are w * I and their elimination reduces to one matrix product per pair
of visits; the projective change between two tangent planes 0.6 deg apart is represented by an
order-9 polynomial to far below a micro-arcsecond.

Photometry. m_true = m_inst - 2.5 log10 J(x, y) + P_v(u, v) + dC[ccd], with J the pixel area of
the fitted WCS relative to its optical axis, P_v of order 7 (Chebyshev or Legendre), dC summing
to zero.

Products (as hscPipe wrote them): per (visit, CCD) a TAN-SIP of order N about the optical axis
(CRVAL the sky at the optical axis, CRPIX its pixel position), and an fcr polynomial P_fcr =
P_v - P_v(axis) in the CCD frame turned to the focal plane, FLUXMAG0 = 10^(0.4 (P_v(axis) + dC)).
"""
import importlib
import json
import os
from dataclasses import asdict

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from .. import MosaicError, __version__
from ..io.atomic import write_table, write_text
from .camera import hsc
from ..units import ARCSEC_RAD
from .basis import PolyBasis
from .fluxcorr import FluxCorrection, rotate_pixels
from .sip import SipModel, cards_text, fit_tan_sip
from .sky import sky_to_tangent, tangent_to_sky


def poly_eval(coef, u, v, order, basis):
    """sum_t coef[..., t] B_t(u, v) for coef of shape (D, nterms) -> (D, n)."""
    return PolyBasis(order, basis).evaluate(coef, np.ravel(u), np.ravel(v))


class Solution:
    """The fitted model of one tract: astrometric and photometric, per visit and CCD.

    Built by :func:`mosaicfit.fit.solve.solve`; its products are :meth:`wcs_header` /
    :meth:`wcs` and :meth:`flux_correction`, written by :meth:`write`.
    """

    def __init__(self, camera, tangent_point, scale, order, phot_order, phot_basis,
                 fa_scale=None, sip_order=None):
        self.camera = camera
        self.tangent_point = tuple(map(float, tangent_point))   # tract plane (deg)
        self.scale = float(scale)            # focal-plane units mapped to 1 (photometry)
        self.fa_scale = float(fa_scale or 0.0131)   # field angle (rad) mapped to 1 (astrometry)
        self.order = int(order)              # astrometric polynomial order (of the fit)
        self.sip_order = int(sip_order or order)   # order of the written TAN-SIP
        self.phot_order = int(phot_order)
        self.phot_basis = phot_basis
        self.astro = {}       # visit -> (2, nterms) coefficients, arcsec in the tract plane
        self.phot = {}        # visit -> (1, nterms_phot) coefficients, magnitudes
        self.ccd_geom = {}    # ccd -> (dx, dy, theta): focal-plane pixels and radians
        self.ccd_mag_by_filter = {}   # filter -> {ccd: dC (mag)}
        self.frozen = {}      # (visit, ccd) -> initial WCS header, where astrometry was frozen
        self.fluxmag0err = {}  # (visit, ccd) -> FLUXMAG0ERR
        self.visit_info = {}  # visit -> dict(mjd, filter)
        self.stats = {}       # run summary (iterations, rms, timings, counts)
        self.detections = None  # astropy Table of the detections used (mosaicfit.fit.solve)
        self.stars = None       # astropy Table of the stars
        self._wcs_cache = {}

    # -- geometry --------------------------------------------------------------------------------
    def focal_plane(self, ccd, x, y):
        """Fitted focal-plane position (u, v) in 15 micron pixels of 0-based CCD pixels."""
        cam = self.camera
        fx, fy = cam.pixel_to_focal_plane(ccd, x, y)
        ps = cam.pixel_size_mm
        u0, v0 = fx / ps, fy / ps
        dx, dy, th = self.ccd_geom.get(int(ccd), (0.0, 0.0, 0.0))
        ox, oy = (o / ps for o in cam[ccd].offset_mm)
        c, s = np.cos(th), np.sin(th)
        ru, rv = u0 - ox, v0 - oy
        return ox + dx + c * ru - s * rv, oy + dy + s * ru + c * rv

    def focal_plane_to_pixel(self, ccd, u, v):
        cam = self.camera
        ps = cam.pixel_size_mm
        dx, dy, th = self.ccd_geom.get(int(ccd), (0.0, 0.0, 0.0))
        ox, oy = (o / ps for o in cam[ccd].offset_mm)
        c, s = np.cos(th), np.sin(th)
        ru, rv = np.asarray(u) - ox - dx, np.asarray(v) - oy - dy
        return cam.focal_plane_to_pixel(ccd, (ox + c * ru + s * rv) * ps, (oy - s * ru + c * rv) * ps)

    def optical_axis_pixel(self, ccd):
        """0-based pixel of CCD `ccd` at the focal-plane origin (the optical axis)."""
        return tuple(float(a) for a in self.focal_plane_to_pixel(ccd, 0.0, 0.0))

    def astro_basis(self):
        """The basis of the astrometric polynomials (Legendre, of the fitted order)."""
        return PolyBasis(self.order, "legendre")

    def has_astrometry(self, visit):
        return int(visit) in self.astro

    def astro_coords(self, ccd, x, y):
        """The astrometric polynomial's coordinates: field angle / fa_scale."""
        u, v = self.focal_plane(ccd, x, y)
        return self.field_coords(u, v)

    def field_coords(self, u, v):
        ps = self.camera.pixel_size_mm
        X, Y = self.camera.focal_plane_to_field_angle(np.asarray(u) * ps, np.asarray(v) * ps)
        return X / self.fa_scale, Y / self.fa_scale

    def pixel_to_tract(self, visit, ccd, x, y):
        """Tract-plane (xi, eta) in arcsec."""
        a, b = self.astro_coords(ccd, np.ravel(x), np.ravel(y))
        xy = poly_eval(self.astro[int(visit)], a, b, self.order, "legendre")
        return xy[0].reshape(np.shape(x)), xy[1].reshape(np.shape(x))

    def tract_to_sky(self, xi, eta):
        return tangent_to_sky(np.asarray(xi) * ARCSEC_RAD, np.asarray(eta) * ARCSEC_RAD,
                              *self.tangent_point)

    def sky_to_tract(self, ra, dec):
        xi, eta = sky_to_tangent(ra, dec, *self.tangent_point)
        return xi / ARCSEC_RAD, eta / ARCSEC_RAD

    def pixel_to_sky(self, visit, ccd, x, y):
        """(ra, dec) in degrees of 0-based pixels, from the model itself."""
        if (int(visit), int(ccd)) in self.frozen or not self.has_astrometry(visit):
            return self.sip_model(visit, ccd).pixel_to_sky(x, y)
        return self.tract_to_sky(*self.pixel_to_tract(visit, ccd, x, y))

    # -- WCS products ----------------------------------------------------------------------------
    def wcs_header(self, visit, ccd):
        """TAN-SIP header of order N about the optical axis, fitted to the model over the CCD
        (exact to < 1e-3 mas: the model is an order-N polynomial in pixels, up to the tiny
        projective change between the tract's and the visit's tangent planes)."""
        key = (int(visit), int(ccd))
        if isinstance(self.frozen.get(key), fits.Header):
            return self.frozen[key]                 # the single-frame WCS, as given
        return fits.Header.fromstring(cards_text(self._wcs(visit, ccd)[0]))

    def _wcs(self, visit, ccd):
        """(cards, SipModel) of the product WCS, cached (frozen: the single-frame header's
        text); the cards become text (sip.cards_text) only when written."""
        key = (int(visit), int(ccd))
        if key in self._wcs_cache:
            return self._wcs_cache[key]
        if key in self.frozen:
            hdr = self.frozen[key]
            text = hdr if isinstance(hdr, str) else hdr.tostring()
            out = (text, SipModel.from_header(text))
        elif not self.has_astrometry(visit):
            raise MosaicError(f"no astrometric solution for visit {visit}")
        else:
            d = self.camera[ccd]
            ax, ay = self.optical_axis_pixel(ccd)
            a0, b0 = self.field_coords(np.array([0.0]), np.array([0.0]))
            crval = self.tract_to_sky(*poly_eval(self.astro[key[0]], a0, b0, self.order, "legendre"))
            n = self.sip_order + 7
            gx, gy = np.meshgrid(np.linspace(-0.5, d.width - 0.5, n),
                                 np.linspace(-0.5, d.height - 0.5, 2 * n))
            ra, dec = self.pixel_to_sky(visit, ccd, gx.ravel(), gy.ravel())
            out = fit_tan_sip(gx.ravel(), gy.ravel(), ra, dec, (ax + 1.0, ay + 1.0),
                              (float(crval[0][0]), float(crval[1][0])), self.sip_order,
                              inverse_order=self.sip_order,
                              inverse_box=(-0.5, d.width - 0.5, -0.5, d.height - 0.5),
                              as_cards=True)
        self._wcs_cache[key] = out
        return out

    def wcs_cards(self, visit, ccd):
        """The product WCS of (visit, ccd) as [(key, value)] cards (header text for a CCD kept
        at its single-frame WCS): what is written into its wcs- file."""
        return self._wcs(visit, ccd)[0]

    def forget_wcs(self, visit, ccd):
        """Drop the cached product WCS of (visit, ccd) (once written: keeps memory flat)."""
        self._wcs_cache.pop((int(visit), int(ccd)), None)

    def sip_model(self, visit, ccd):
        """The product WCS as a :class:`mosaicfit.model.sip.SipModel` (fast evaluation)."""
        return self._wcs(visit, ccd)[1]

    def wcs(self, visit, ccd):
        """astropy.wcs.WCS of (visit, ccd); astropy's origin-0 pixels are afw's."""
        return WCS(self.wcs_header(visit, ccd))

    # -- photometry ------------------------------------------------------------------------------
    def has_photometry(self, visit):
        return int(visit) in self.phot

    def mag_offset(self, visit, ccd, x, y):
        """P_v(u, v) + dC: the magnitude added to m_inst - 2.5 log10 J to calibrate."""
        u, v = self.focal_plane(ccd, x, y)
        p = poly_eval(self.phot[int(visit)], u / self.scale, v / self.scale, self.phot_order,
                      self.phot_basis)[0]
        return p.reshape(np.shape(x)) + self._dc(visit, ccd)

    def _dc(self, visit, ccd):
        filt = self.visit_info.get(int(visit), {}).get("filter") or ""
        per = self.ccd_mag_by_filter.get(filt)
        if per is None and len(self.ccd_mag_by_filter) == 1:
            per = next(iter(self.ccd_mag_by_filter.values()))
        return (per or {}).get(int(ccd), 0.0)

    @property
    def ccd_mag(self):
        """{ccd: dC} of a single-filter solution (see ccd_mag_by_filter for several)."""
        if len(self.ccd_mag_by_filter) > 1:
            raise MosaicError("the solution has several filters: use ccd_mag_by_filter")
        return next(iter(self.ccd_mag_by_filter.values()), {})

    @ccd_mag.setter
    def ccd_mag(self, value):
        self.ccd_mag_by_filter = {"": dict(value)}

    def fluxmag0(self, visit, ccd):
        """Flux of a 0-mag star at the optical axis: 10^(0.4 (P_v(axis) + dC))."""
        p0 = poly_eval(self.phot[int(visit)], np.array([0.0]), np.array([0.0]), self.phot_order,
                       self.phot_basis)[0][0]
        return 10.0 ** (0.4 * (p0 + self._dc(visit, ccd)))

    def flux_correction(self, visit, ccd):
        """The fcr product: an order-M monomial polynomial in the CCD frame turned to the focal
        plane, about the optical axis, fitted exactly to P_v - P_v(axis)."""
        d = self.camera[ccd]
        nq = d.nquarter
        ax, ay = self.optical_axis_pixel(ccd)
        axr, ayr = rotate_pixels(ax, ay, nq, d.width, d.height)
        x0, y0 = -float(axr), -float(ayr)
        n = self.phot_order + 5
        gx, gy = np.meshgrid(np.linspace(-0.5, d.width - 0.5, n),
                             np.linspace(-0.5, d.height - 0.5, 2 * n))
        gx, gy = gx.ravel(), gy.ravel()
        u, v = self.focal_plane(ccd, gx, gy)
        p = poly_eval(self.phot[int(visit)], u / self.scale, v / self.scale, self.phot_order,
                      self.phot_basis)[0]
        p0 = poly_eval(self.phot[int(visit)], np.array([0.0]), np.array([0.0]), self.phot_order,
                       self.phot_basis)[0][0]
        xr, yr = rotate_pixels(gx, gy, nq, d.width, d.height)
        basis = PolyBasis(self.phot_order, "monomial")
        coeffs = {k: float(c) for k, c in zip(basis.terms, basis.fit(xr + x0, yr + y0, p - p0))}
        coeffs[(0, 0)] = 0.0     # exactly: the constant is FLUXMAG0's
        f0 = self.fluxmag0(visit, ccd)
        return FluxCorrection(order=self.phot_order, coeffs=coeffs, x0=x0, y0=y0, u_max=1.0,
                              v_max=1.0, chebyshev=False, absolute=bool(self.stats.get("absolute", True)),
                              fluxmag0=f0,
                              fluxmag0err=float(self.fluxmag0err.get((int(visit), int(ccd)), 0.0)),
                              nq=nq, width=d.width, height=d.height,
                              filter=self.visit_info.get(int(visit), {}).get("filter") or "_unknown_")


# ------------------------------------------------------------------------------------------
# the solution's state (for `mosaicfit report`)
# ------------------------------------------------------------------------------------------
STATE_FORMAT = "mosaicfit-solution"
STATE_VERSION = 1


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if hasattr(x, "__dataclass_fields__"):
        return jsonable(asdict(x))
    return x


_SKIP = ("camera", "detections", "stars")


def _encode(x):
    """Tagged JSON of the solution's attributes: numbers, strings, lists, arrays, dicts with
    any keys, tuples, FITS headers and objects of mosaicfit's own classes (by their
    attributes). Nothing is pickled: reading a state file runs no code."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return {"__nd__": _encode(x.tolist()), "dtype": str(x.dtype), "shape": list(x.shape)}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v) for v in x]}
    if isinstance(x, list):
        return [_encode(v) for v in x]
    if isinstance(x, dict):
        if all(isinstance(k, str) for k in x):
            return {"__map__": {k: _encode(v) for k, v in x.items()}}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in x.items()]}
    if isinstance(x, fits.Header):
        return {"__header__": x.tostring()}
    cls = type(x)
    if cls.__module__.startswith("mosaicfit.") and hasattr(x, "__dict__"):
        return {"__obj__": f"{cls.__module__}:{cls.__qualname__}",
                "state": {k: _encode(v) for k, v in vars(x).items()}}
    if hasattr(x, "keys") and hasattr(x, "__getitem__"):        # header-like mappings
        return {"__header__": _header_text(x)}
    raise TypeError(f"cannot save a {cls.__name__} in the solution state")


def _decode(x):
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__nd__" in x:
        return np.array(x["__nd__"], dtype=x["dtype"]).reshape(x["shape"])
    if "__tuple__" in x:
        return tuple(_decode(v) for v in x["__tuple__"])
    if "__map__" in x:
        return {k: _decode(v) for k, v in x["__map__"].items()}
    if "__items__" in x:
        return {_decode(k): _decode(v) for k, v in x["__items__"]}
    if "__header__" in x:
        return fits.Header.fromstring(x["__header__"])
    if "__obj__" in x:
        mod, name = x["__obj__"].split(":")
        if not mod.startswith("mosaicfit."):
            raise MosaicError(f"solution state: refusing to build a {x['__obj__']}")
        cls = importlib.import_module(mod)
        for part in name.split("."):
            cls = getattr(cls, part)
        obj = cls.__new__(cls)
        obj.__dict__.update({k: _decode(v) for k, v in x["state"].items()})
        return obj
    return {k: _decode(v) for k, v in x.items()}


def _header_text(h):
    if isinstance(h, fits.Header):
        return h.tostring()
    hh = fits.Header()
    for k in h.keys():
        hh[k] = h[k]
    return hh.tostring()


def save_solution(sol, outdir):
    """Write solution.json (every attribute of the Solution but its camera, tables and
    caches), detections.fits and stars.fits into `outdir`."""
    attrs = {k: _encode(v) for k, v in vars(sol).items()
             if k not in _SKIP and not k.startswith("_")}
    state = dict(format=STATE_FORMAT, version=STATE_VERSION, mosaicfit=__version__,
                 camera=sol.camera.name, solution=f"{type(sol).__module__}:{type(sol).__qualname__}",
                 attributes=attrs)
    write_text(json.dumps(state, indent=1, allow_nan=True) + "\n", os.path.join(outdir, "solution.json"))
    if sol.detections is not None:
        write_table(sol.detections, os.path.join(outdir, "detections.fits"), "DETECTIONS")
    if sol.stars is not None:
        write_table(sol.stars, os.path.join(outdir, "stars.fits"), "STARS")


def load_solution(outdir, camera=None):
    """The Solution saved by :func:`save_solution` in `outdir` (model, stats and tables)."""
    path = os.path.join(outdir, "solution.json")
    try:
        with open(path) as f:
            st = json.load(f)
    except FileNotFoundError:
        raise MosaicError(f"{path}: not found: the diagnostics of a run are rebuilt from the "
                          "files that 'mosaic.py --diagnostics' leaves there (solution.json, "
                          "detections.fits, stars.fits)") from None
    except ValueError as e:
        raise MosaicError(f"{path}: not a mosaicfit solution file: {e}") from None
    if st.get("format") != STATE_FORMAT or int(st.get("version", 0)) > STATE_VERSION:
        raise MosaicError(f"{path}: not a mosaicfit solution file of version <= {STATE_VERSION}")
    if camera is None:
        camera = hsc()
        if st["camera"] != camera.name:
            raise MosaicError(f"{path}: made with camera {st['camera']!r}; give that camera")
    try:
        attrs = {k: _decode(v) for k, v in st["attributes"].items()}
    except (KeyError, TypeError, ValueError, AttributeError, ImportError) as e:
        raise MosaicError(f"{path}: unreadable solution state: {e}") from None
    try:      # a fresh Solution for its private attributes (caches), then the saved state
        sol = Solution(camera, attrs["tangent_point"], attrs["scale"], attrs["order"],
                       attrs["phot_order"], attrs["phot_basis"])
    except (KeyError, TypeError):
        sol = Solution.__new__(Solution)
        sol._wcs_cache = {}
    sol.__dict__.update(attrs)
    sol.camera = camera
    for name, attr in (("detections.fits", "detections"), ("stars.fits", "stars")):
        p = os.path.join(outdir, name)
        if not os.path.exists(p):
            raise MosaicError(f"{p}: not found (needed with solution.json)")
        setattr(sol, attr, Table.read(p, hdu=1))
    return sol
