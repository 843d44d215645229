"""The astrometric model as a chain of named maps (the gbdes way), each with its derivatives:

    pixel (x, y) of CCD c  --CcdPlacement-->  focal plane (u, v)  [15 micron pixels]
                           --Optics-------->  (a, b) = field angle / scale  [the camera's optics]
                           --polynomial P_v->  (xi, eta) in the tract plane  [arcsec]
                           --turbulence T_v->  (xi, eta) - T_v(xi, eta)  [arcsec]
                           --TractPlane---->  (ra, dec)  [degrees]

* CcdPlacement: the camera's nominal placement of each CCD (centre offset and yaw) corrected
  by a fitted offset (dx, dy) and rotation theta about the CCD's reference position, shared by
  all visits: (u, v) = o + (dx, dy) + R(theta) ((u0, v0) - o), (u0, v0) the nominal position,
  o the CCD's reference position.
* Optics: the camera's focal plane -> field angle polynomial (HSC: order 9), scaled to about
  [-1, 1]. Fitting on top of the known optics (rather than meas_mosaic's polynomial of the raw
  focal plane) leaves the visit polynomial only the visit's own changes (scale, rotation,
  refraction, flexure): the fit stays exact when sparse fields (narrow bands) force a lower
  order.
* P_v: per visit, a polynomial of total order N (fittingOrder, HSC: 9) in the Legendre basis
  (:class:`~mosaicfit.model.basis.PolyBasis`), both coordinates.
* T_v: the visit's turbulent displacement field (:class:`~mosaicfit.model.turbulence.
  TurbulenceField`, from a Gaussian process on the residuals), where it was fitted.
* TractPlane: the gnomonic projection about the tract's tangent point. Using the tract's plane
  (rather than meas_mosaic's per-visit plane) keeps each star's parameters the same in every
  visit, so that the star blocks of the normal equations are w * I and their elimination
  reduces to one matrix product per pair of visits; the projective change between two tangent
  planes 0.6 deg apart is represented by an order-9 polynomial to far below a micro-arcsecond.
"""
import numpy as np

from ..units import ARCSEC_RAD
from .basis import PolyBasis
from .groups import index_groups
from .sky import sky_to_tangent, tangent_to_sky

__all__ = ["CcdPlacement", "Optics", "TractPlane", "AstrometricModel"]


class CcdPlacement:
    """Where each CCD lies on the focal plane: nominal placement plus fitted offsets.

    `offsets` maps a CCD to its (dx, dy, theta): focal-plane pixels and radians (0 for a CCD
    not in it).
    """

    def __init__(self, camera, offsets=None):
        self.camera = camera
        self.offsets = {int(c): tuple(float(x) for x in o) for c, o in (offsets or {}).items()}
        self._ps = camera.pixel_size_mm

    def origin(self, ccd):
        """(ox, oy): the CCD's reference position (its rotation centre), focal-plane pixels."""
        return tuple(o / self._ps for o in self.camera[ccd].offset_mm)

    def nominal(self, ccd, x, y):
        """The nominal focal-plane position (u0, v0) of 0-based pixels of `ccd`."""
        fx, fy = self.camera.pixel_to_focal_plane(ccd, x, y)
        return fx / self._ps, fy / self._ps

    @staticmethod
    def place(ox, oy, dx, dy, theta, u0, v0):
        """(u, v, ru, rv): nominal positions (u0, v0) of CCDs at origins (ox, oy) moved by
        (dx, dy) and turned by theta about the origin; (ru, rv) the turned offset from the
        origin (what the rotation derivative needs). All arguments broadcast."""
        c, s = np.cos(theta), np.sin(theta)
        ru0, rv0 = u0 - ox, v0 - oy
        ru, rv = c * ru0 - s * rv0, s * ru0 + c * rv0
        return ox + dx + ru, oy + dy + rv, ru, rv

    @staticmethod
    def derivatives(ru, rv, rotation=True):
        """d(u, v)/d(dx, dy, theta) at turned offsets (ru, rv): an (n, 2, 3) array."""
        G = np.zeros((len(ru), 2, 3))
        G[:, 0, 0] = 1.0
        G[:, 1, 1] = 1.0
        if rotation:
            G[:, 0, 2] = -rv
            G[:, 1, 2] = ru
        return G

    def to_focal_plane(self, ccd, x, y):
        """Fitted focal-plane position (u, v) of 0-based pixels of `ccd`."""
        u0, v0 = self.nominal(ccd, x, y)
        ox, oy = self.origin(ccd)
        dx, dy, th = self.offsets.get(int(ccd), (0.0, 0.0, 0.0))
        u, v, _, _ = self.place(ox, oy, dx, dy, th, u0, v0)
        return u, v

    def to_pixel(self, ccd, u, v):
        """0-based pixel of `ccd` at focal-plane position (u, v) (may lie outside the CCD)."""
        ox, oy = self.origin(ccd)
        dx, dy, th = self.offsets.get(int(ccd), (0.0, 0.0, 0.0))
        c, s = np.cos(th), np.sin(th)
        ru, rv = np.asarray(u) - ox - dx, np.asarray(v) - oy - dy
        return self.camera.focal_plane_to_pixel(ccd, (ox + c * ru + s * rv) * self._ps,
                                                (oy - s * ru + c * rv) * self._ps)

    def optical_axis_pixel(self, ccd):
        """0-based pixel of `ccd` at the focal-plane origin (the optical axis)."""
        return tuple(float(a) for a in self.to_pixel(ccd, 0.0, 0.0))


class Optics:
    """The camera's focal plane -> field angle, divided by `scale` (radians) for the visit
    polynomials: (a, b) = field angle / scale."""

    def __init__(self, camera, scale):
        self.camera = camera
        self.scale = float(scale)
        self._ps = camera.pixel_size_mm

    def __call__(self, u, v):
        X, Y = self.camera.focal_plane_to_field_angle(np.asarray(u) * self._ps,
                                                      np.asarray(v) * self._ps)
        return X / self.scale, Y / self.scale

    def jacobian(self, u, v):
        """(da/du, da/dv, db/du, db/dv) per focal-plane pixel."""
        ps = self._ps
        return tuple(j * ps / self.scale
                     for j in self.camera.field_angle_jacobian(np.asarray(u) * ps,
                                                               np.asarray(v) * ps))

    def values_and_jacobian(self, u, v):
        """(a, b, (da/du, da/dv, db/du, db/dv)): the numbers of __call__ and :meth:`jacobian`
        from one evaluation of the camera's distortion (the fit needs both every iteration)."""
        ps = self._ps
        X, Y, J = self.camera.field_angle_and_jacobian(np.asarray(u) * ps, np.asarray(v) * ps)
        return X / self.scale, Y / self.scale, tuple(j * ps / self.scale for j in J)


class TractPlane:
    """The gnomonic plane of a tract about `tangent_point` (ra, dec degrees), in arcsec."""

    def __init__(self, tangent_point):
        self.tangent_point = tuple(float(a) for a in tangent_point)

    def to_sky(self, xi, eta):
        """Tract-plane (xi, eta) in arcsec -> (ra, dec) in degrees."""
        return tangent_to_sky(np.asarray(xi) * ARCSEC_RAD, np.asarray(eta) * ARCSEC_RAD,
                              *self.tangent_point)

    def from_sky(self, ra, dec):
        """(ra, dec) in degrees -> tract-plane (xi, eta) in arcsec."""
        xi, eta = sky_to_tangent(ra, dec, *self.tangent_point)
        return xi / ARCSEC_RAD, eta / ARCSEC_RAD


class AstrometricModel:
    """pixel -> sky through the chain of maps above; `coefficients` maps a visit to its
    (2, n_terms) polynomial coefficients (arcsec in the tract plane)."""

    def __init__(self, placement, optics, plane, order, coefficients=None, turbulence=None,
                 chromatic=None):
        self.placement = placement
        self.optics = optics
        self.plane = plane
        self.order = int(order)
        self.coefficients = {int(v): np.asarray(c, float) for v, c in (coefficients or {}).items()}
        # visit -> TurbulenceField: the apparent displacement the polynomial's output carries
        self.turbulence = dict(turbulence or {})
        # the chromatic term (model.chromatic.ChromaticTerm): the polynomials are the mapping
        # of a star of its reference colour
        self.chromatic = chromatic

    @property
    def basis(self):
        """The basis of the visit polynomials (Legendre, of the fitted order)."""
        return PolyBasis(self.order, "legendre")

    def has_visit(self, visit):
        """Whether the model has polynomial coefficients for `visit`."""
        return int(visit) in self.coefficients

    def placement_derivatives(self, coef, vidx, a, b, u, v, ru, rv, rotation, jac=None):
        """G (n, 2, 3): d(xi, eta)/d(dx, dy, theta) of each detection, the chain rule through
        the maps: polynomial gradient x optics Jacobian x placement derivative. `coef` (nv, 2,
        T) the polynomials, `vidx` (n,) each detection's row of it, (a, b) its optics
        coordinates at focal-plane (u, v), (ru, rv) its turned offset from its CCD's origin
        (CcdPlacement.place); `jac` the optics' Jacobian at (u, v) if known
        (Optics.values_and_jacobian)."""
        n = len(a)
        G = np.zeros((n, 2, 3))
        if not n:
            return G
        ja, jb, jc, jd = self.optics.jacobian(u, v) if jac is None else jac   # d(a, b)/d(u, v)
        _, dpa, dpb = self.basis.evaluate_sets(coef, vidx, a, b, gradients=True)   # (2, n)
        dpu = dpa * ja + dpb * jc                         # dP/du, dP/dv
        dpv = dpa * jb + dpb * jd
        G[:, :, 0] = dpu.T
        G[:, :, 1] = dpv.T
        if rotation:                                      # du/dtheta = -rv, dv/dtheta = ru
            G[:, :, 2] = (dpu * -rv + dpv * ru).T
        return G

    def pixel_to_tract(self, visit, ccd, x, y):
        """Tract-plane (xi, eta) in arcsec of 0-based pixels (:meth:`pixels_to_tract`)."""
        n = np.size(x)
        xi, eta = self.pixels_to_tract(np.full(n, int(visit)), np.full(n, int(ccd)), x, y)
        return xi.reshape(np.shape(x)), eta.reshape(np.shape(x))

    def pixel_to_sky(self, visit, ccd, x, y):
        """(ra, dec) in degrees of 0-based pixels."""
        return self.plane.to_sky(*self.pixel_to_tract(visit, ccd, x, y))

    def pixels_to_tract(self, visits, ccds, x, y):
        """Tract-plane (xi, eta) in arcsec of 0-based pixels, each of its own visit and CCD
        (arrays of one length): what :meth:`pixel_to_tract` gives point by point, with the
        placement per CCD and the visit polynomials in one pass (the products and the
        association evaluate the model on ~1000 CCDs at once)."""
        visits = np.asarray(visits, np.int64).ravel()
        ccds = np.asarray(ccds, np.int64).ravel()
        x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
        u, v = np.empty(len(x)), np.empty(len(x))
        for c, m in index_groups(ccds):
            u[m], v[m] = self.placement.to_focal_plane(int(c), x[m], y[m])
        a, b = self.optics(u, v)
        vs, group = np.unique(visits, return_inverse=True)
        coef = np.stack([self.coefficients[int(k)] for k in vs]) if len(vs) else \
            np.zeros((0, 2, self.basis.n_terms))
        (val,) = self.basis.evaluate_sets(coef, group, a, b)
        xi, eta = val[0].copy(), val[1].copy()
        for k, vv in enumerate(vs):
            f = self.turbulence.get(int(vv))
            if f is not None:
                m = group == k
                dxi, deta = f(xi[m], eta[m])
                xi[m], eta[m] = xi[m] - dxi, eta[m] - deta
        return xi, eta

    def pixels_to_sky(self, visits, ccds, x, y):
        """(ra, dec) in degrees of 0-based pixels, each of its own visit and CCD
        (:meth:`pixels_to_tract`)."""
        return self.plane.to_sky(*self.pixels_to_tract(visits, ccds, x, y))

    def axes_to_sky(self, visits):
        """(ra, dec) in degrees of the optical axes of `visits` (arrays; :meth:`axis_to_sky`)."""
        visits = np.asarray(visits, np.int64).ravel()
        vs, group = np.unique(visits, return_inverse=True)
        a0, b0 = self.optics(np.zeros(len(visits)), np.zeros(len(visits)))
        coef = np.stack([self.coefficients[int(k)] for k in vs])
        (val,) = self.basis.evaluate_sets(coef, group, a0, b0)
        xi, eta = val
        return self.plane.to_sky(xi, eta)

    def axis_jacobians(self, visits, ccds, crvals, step=1.0):
        """:meth:`axis_jacobian` of each (visit, ccd, crval): (K, 2, 2)."""
        visits = np.asarray(visits, np.int64).ravel()
        ccds = np.asarray(ccds, np.int64).ravel()
        crvals = np.asarray(crvals, float).reshape(len(visits), 2)
        axis = np.array([self.placement.optical_axis_pixel(int(c)) for c in ccds]).reshape(-1, 2)
        ax, ay = axis[:, :1], axis[:, 1:]
        x = np.hstack([ax + step, ax - step, ax, ax])
        y = np.hstack([ay, ay, ay + step, ay - step])
        ra, dec = self.pixels_to_sky(np.repeat(visits, 4), np.repeat(ccds, 4), x, y)
        xi, eta = (np.degrees(t) for t in sky_to_tangent(ra.reshape(-1, 4), dec.reshape(-1, 4),
                                                         crvals[:, :1], crvals[:, 1:]))
        return np.stack([np.stack([xi[:, 0] - xi[:, 1], xi[:, 2] - xi[:, 3]], axis=-1),
                         np.stack([eta[:, 0] - eta[:, 1], eta[:, 2] - eta[:, 3]], axis=-1)],
                        axis=1) / (2.0 * step)

    def axis_jacobian(self, visit, ccd, crval, step=1.0):
        """d(xi, eta)/d(x, y) in degrees per pixel at the optical-axis pixel of `ccd`, in the
        gnomonic plane about `crval` (ra, dec degrees): the CD matrix of a TAN-SIP product
        about the axis (central differences of `step` pixels; the model's third derivatives
        make that exact to ~1e-9). :meth:`axis_jacobians` of one."""
        return self.axis_jacobians([visit], [ccd], [crval], step)[0]

    def axis_to_sky(self, visit):
        """(ra, dec) in degrees of the visit's optical axis (the focal-plane origin)."""
        ra, dec = self.axes_to_sky([visit])
        return float(ra[0]), float(dec[0])
