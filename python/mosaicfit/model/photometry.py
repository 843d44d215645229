"""The photometric model of one filter: the magnitude a detection's calibration adds.

    m_true = m_inst - 2.5 log10 J(x, y) + P_v(u / scale, v / scale) + dC[ccd]

J the pixel area of the visit's TAN-SIP product relative to the optical axis (the model's
astrometry, applied by the calibration step), P_v a polynomial of order M (fluxFitOrder, HSC:
7) per visit in the focal plane (Chebyshev or Legendre in the fit), dC a magnitude per CCD
summing to zero over the CCDs. The zero point of a CCD is P_v at the optical axis plus dC:
FLUXMAG0 = 10^(0.4 (P_v(0, 0) + dC)). A run of several filters has one model per filter.
"""
import numpy as np

from .basis import PolyBasis

__all__ = ["PhotometricModel"]


class PhotometricModel:
    """P_v and dC of one filter: `coefficients` {visit: (1, n_terms)} magnitudes, `ccd_terms`
    {ccd: dC}; `absolute` when the zero points are tied to the reference catalogue."""

    def __init__(self, filter, order, kind, scale, coefficients=None, ccd_terms=None,
                 absolute=True):
        self.filter = filter or ""
        self.order = int(order)
        self.kind = kind
        self.scale = float(scale)          # focal-plane pixels mapped to 1
        self.coefficients = {int(v): np.asarray(c, float) for v, c in (coefficients or {}).items()}
        self.ccd_terms = {int(c): float(x) for c, x in (ccd_terms or {}).items()}
        self.absolute = bool(absolute)

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

    def ccd_term(self, ccd):
        """dC of `ccd` (0 where it was not fitted)."""
        return self.ccd_terms.get(int(ccd), 0.0)

    def mag_offset(self, visit, ccd, u, v):
        """P_v(u, v) + dC: the magnitude added to m_inst - 2.5 log10 J to calibrate."""
        return self.polynomial(visit, u, v) + self.ccd_term(ccd)

    def zero_point(self, visit, ccd):
        """P_v at the optical axis plus dC (magnitudes): 2.5 log10 FLUXMAG0."""
        return float(self.polynomial(visit, np.array([0.0]), np.array([0.0]))[0]) + \
            self.ccd_term(ccd)
