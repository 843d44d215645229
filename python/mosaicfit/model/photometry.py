"""The photometric model of one filter: the magnitude a detection's calibration adds.

    m_true = m_inst - 2.5 log10 J(x, y) + P_v(u / scale, v / scale) + F_v(u, v) + dC[ccd]

J the pixel area of the visit's TAN-SIP product relative to the optical axis (the model's
astrometry, applied by the calibration step), P_v a polynomial of order M (fluxFitOrder, HSC:
7) per visit in the focal plane (Chebyshev or Legendre in the fit), dC a magnitude per CCD
summing to zero over the CCDs, F_v the visit's transparency field where it has one (a cloud's
edge, which no polynomial of the field follows: :class:`TransparencyField`, 0 elsewhere). The
zero point of a CCD is the visit's surface P_v + F_v at the optical axis plus dC:
FLUXMAG0 = 10^(0.4 (P_v(0, 0) + F_v(0, 0) + dC)). A run of several filters has one model per
filter.
"""
import numpy as np

from .basis import PolyBasis
from .grid import bilinear, grid_hdu, grid_of_hdu

__all__ = ["PhotometricModel", "TransparencyField"]


class TransparencyField:
    """The magnitudes a visit's transparency varies by across the focal plane beyond its flux
    polynomial (the posterior mean of a Gaussian process on the residuals,
    :mod:`mosaicfit.fit.transparency`), on a regular grid of focal-plane pixels: node (i, j) at
    (x0 + j step, y0 + i step); bilinear between nodes, 0 outside the grid. `params` records
    how it was fitted (kernel rms, length, significance)."""

    def __init__(self, x0, y0, step, mag, params=None):
        self.x0, self.y0, self.step = float(x0), float(y0), float(step)
        self.mag = np.ascontiguousarray(mag, float)
        if self.mag.ndim != 2:
            raise ValueError("the transparency grid must be a 2-D array")
        self.params = dict(params or {})

    def __call__(self, u, v):
        """Magnitudes at focal-plane positions (u, v) px."""
        return bilinear((self.mag,), self.x0, self.y0, self.step, u, v)[0]

    def to_hdu(self, filter, visit):
        """An ImageHDU TRANS_<visit> (mag, float64) with the grid's origin and step and the
        fit's parameters in its header (Solution.save)."""
        return grid_hdu(self.mag, f"TRANS_{int(visit)}", visit, self.x0, self.y0, self.step,
                        "px", ("focal-plane u", "focal-plane v"), self.params, filter=filter)

    @classmethod
    def from_hdu(cls, hdu):
        """The field of an ImageHDU :meth:`to_hdu` wrote."""
        x0, y0, step, mag, params = grid_of_hdu(hdu)
        return cls(x0, y0, step, mag, params)


class PhotometricModel:
    """P_v and dC of one filter: `coefficients` {visit: (1, n_terms)} magnitudes, `ccd_terms`
    {ccd: dC}; `absolute` when the zero points are tied to the reference catalogue; `fields`
    {visit: TransparencyField}."""

    def __init__(self, filter, order, kind, scale, coefficients=None, ccd_terms=None,
                 absolute=True, fields=None):
        self.filter = filter or ""
        self.order = int(order)
        self.kind = kind
        self.scale = float(scale)          # focal-plane pixels mapped to 1
        self.coefficients = {int(v): np.asarray(c, float) for v, c in (coefficients or {}).items()}
        self.ccd_terms = {int(c): float(x) for c, x in (ccd_terms or {}).items()}
        self.absolute = bool(absolute)
        self.fields = {int(v): f for v, f in (fields or {}).items()}

    @property
    def basis(self):
        """The PolyBasis of the visit polynomials (order and kind)."""
        return PolyBasis(self.order, self.kind)

    def has_visit(self, visit):
        """Whether the model has a polynomial for `visit`."""
        return int(visit) in self.coefficients

    def polynomial(self, visit, u, v):
        """P_v at focal-plane positions (u, v), magnitudes (:meth:`polynomials`)."""
        p = self.polynomials(np.full(np.size(u), int(visit)), u, v)
        return p.reshape(np.shape(u))

    def polynomials(self, visits, u, v):
        """P_v at focal-plane positions (u, v), each point of its own visit (arrays of one
        length), in one pass (model.basis.PolyBasis.evaluate_sets)."""
        visits = np.asarray(visits, np.int64).ravel()
        vs, group = np.unique(visits, return_inverse=True)
        coef = np.stack([self.coefficients[int(k)] for k in vs])
        (p,) = self.basis.evaluate_sets(coef, group, np.ravel(np.asarray(u, float)) / self.scale,
                                        np.ravel(np.asarray(v, float)) / self.scale)
        return p[0]

    def surfaces(self, visits, u, v):
        """P_v + F_v at focal-plane positions (u, v), each point of its own visit: the visit's
        calibration without the CCD term, magnitudes."""
        visits = np.asarray(visits, np.int64).ravel()
        p = self.polynomials(visits, u, v)
        if self.fields:
            u, v = np.ravel(np.asarray(u, float)), np.ravel(np.asarray(v, float))
            for vis, f in self.fields.items():
                m = visits == vis
                if m.any():
                    p[m] += f(u[m], v[m])
        return p

    def ccd_term(self, ccd):
        """dC of `ccd` (0 where it was not fitted)."""
        return self.ccd_terms.get(int(ccd), 0.0)

    def mag_offset(self, visit, ccd, u, v):
        """P_v(u, v) + F_v(u, v) + dC: the magnitude added to m_inst - 2.5 log10 J to
        calibrate."""
        p = self.surfaces(np.full(np.size(u), int(visit)), u, v).reshape(np.shape(u))
        return p + self.ccd_term(ccd)

    def axis_value(self, visit):
        """P_v + F_v at the optical axis (magnitudes)."""
        return float(self.surfaces([int(visit)], np.array([0.0]), np.array([0.0]))[0])

    def zero_point(self, visit, ccd):
        """P_v + F_v at the optical axis plus dC (magnitudes): 2.5 log10 FLUXMAG0."""
        return self.axis_value(visit) + self.ccd_term(ccd)
