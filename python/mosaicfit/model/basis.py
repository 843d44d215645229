"""The one 2-D polynomial basis of the package, shared with the C++ core (cpp/basis.hpp).

A basis of total order N holds the terms B_t(u, v) = f_i(u) f_j(v) with i + j <= N, ordered by
total degree d = i + j, then by decreasing power of u: t = d (d + 1) / 2 + (d - i). f_k is the
Legendre polynomial P_k, the Chebyshev polynomial T_k or the monomial x^k. Every polynomial of
the package is evaluated here: the camera's optics and the per-visit astrometric polynomials
(Legendre on scaled field angles), the photometric polynomials (Chebyshev or Legendre), the
SIP terms of a TAN-SIP header and the fcr polynomial (monomials, or Chebyshev as meas_mosaic's
CHEBYSHEV = T). The values come from the C++ kernel (``mosaicfit._core.basis``) that the fit
itself uses, so Python and C++ agree on one definition.
"""
import numpy as np

from .. import _core

__all__ = ["PolyBasis", "KINDS", "n_terms"]

#: basis kinds and their codes in the C++ core
KINDS = {"legendre": 0, "chebyshev": 1, "monomial": 2}


def n_terms(order):
    """Number of terms of total order <= `order`."""
    return (order + 1) * (order + 2) // 2


class PolyBasis:
    """The polynomials sum_t c_t B_t(u, v) of total order `order` (terms of degree
    >= `min_order` only: a SIP polynomial starts at 2, a fit without constant at 1).

    Coefficient arrays have the terms on their last axis, ``(..., n_terms)``; values come as
    ``(..., n)`` for n points.
    """

    def __init__(self, order, kind="monomial", min_order=0):
        if kind not in KINDS:
            raise ValueError(f"unknown polynomial basis {kind!r}; known: {', '.join(KINDS)}")
        if not 0 <= min_order <= order + 1 or not 0 <= order <= 30:
            raise ValueError(f"polynomial order {order} (from {min_order}) is out of range")
        self.order, self.kind, self.min_order = int(order), kind, int(min_order)
        self._first = n_terms(self.min_order - 1) if self.min_order > 0 else 0

    def __repr__(self):
        return f"PolyBasis({self.order}, {self.kind!r}, min_order={self.min_order})"

    @property
    def n_terms(self):
        """Number of terms: those of total order <= order, less those below min_order."""
        return n_terms(self.order) - self._first

    @property
    def terms(self):
        """The (i, j) of each term, in the basis order."""
        return [(i, d - i) for d in range(self.min_order, self.order + 1) for i in range(d, -1, -1)]

    def index(self, i, j):
        """Position of the term f_i(u) f_j(v)."""
        d = i + j
        if not self.min_order <= d <= self.order or i < 0 or j < 0:
            raise KeyError((i, j))
        return n_terms(d - 1) + (d - i) - self._first if d > 0 else 0

    def vector(self, coeffs):
        """Coefficients {(i, j): c} (or an (order+1)^2 array C[i, j]) as a vector in the basis
        order; terms outside the basis must be zero."""
        out = np.zeros(self.n_terms)
        if isinstance(coeffs, dict):
            items = list(coeffs.items())
        else:
            arr = np.asarray(coeffs, float)
            items = [((int(i), int(j)), arr[i, j]) for i, j in zip(*np.nonzero(arr))]
        for (i, j), value in items:
            try:
                out[self.index(i, j)] = value
            except KeyError:
                if value != 0:
                    raise ValueError(f"term ({i}, {j}) is not in {self!r}") from None
        return out

    def values(self, u, v):
        """Basis values at the points: (n, n_terms)."""
        u, v = _points(u, v)
        return _core.basis(u, v, self.order, KINDS[self.kind])[0][:, self._first:]

    def values_and_gradients(self, u, v):
        """(B, dB/du, dB/dv), each (n, n_terms)."""
        u, v = _points(u, v)
        return tuple(b[:, self._first:] for b in
                     _core.basis(u, v, self.order, KINDS[self.kind], True))

    def evaluate(self, coef, u, v):
        """sum_t coef[..., t] B_t(u, v) at points of any shape: (...,) + shape of u."""
        (val,) = self._evaluate(coef, u, v, False)
        return val

    def evaluate_with_gradients(self, coef, u, v):
        """(P, dP/du, dP/dv) of the polynomials `coef` at the points."""
        return self._evaluate(coef, u, v, True)

    def evaluate_sets(self, coef, group, u, v, gradients=False):
        """The polynomials of coefficient sets `coef` (G, D, n_terms) at points (u, v), each
        point with the set `group` (its visit, say): (D, n) values, with `gradients` also
        d/du and d/dv. One C++ pass that does not materialise the basis matrices."""
        coef = np.asarray(coef, float)
        if coef.ndim != 3 or coef.shape[2] != self.n_terms:
            raise ValueError(f"coefficients of shape {coef.shape}, not (sets, D, {self.n_terms})")
        u, v = _points(u, v)
        group = np.ascontiguousarray(group, dtype=np.int64).ravel()
        if len(group) != len(u) or (len(group) and (group.min() < 0
                                                    or group.max() >= coef.shape[0])):
            raise ValueError("group must give each point a coefficient set 0..G-1")
        full = np.zeros(coef.shape[:2] + (n_terms(self.order),))
        full[:, :, self._first:] = coef
        return _core.evaluate_sets(full, group, u, v, self.order, KINDS[self.kind], gradients)

    def _evaluate(self, coef, u, v, gradients):
        coef = np.asarray(coef, float)
        shape = np.shape(u)
        u, v = _points(u, v)
        lead = coef.shape[:-1]
        c = coef.reshape(1, -1, coef.shape[-1])           # one set of all the polynomials
        out = self.evaluate_sets(c, np.zeros(len(u), np.int64), u, v, gradients)
        return tuple(o.reshape(lead + shape) for o in out)

    def fit(self, u, v, values, scale=True):
        """Least-squares coefficients of the polynomial(s) through `values` (n,) or (n, k) at the
        points: returns (n_terms,) or (n_terms, k).

        With `scale` the fit is made in u / max|u|, v / max|v| for conditioning (monomials only:
        the coefficients returned are those of the unscaled u, v). The polynomials fitted here
        are natively polynomials about the origin (the optical axis for the mosaic's products),
        so they are fitted in these monomials directly: re-expanding a fit made about the data's
        centre loses all precision for CCDs far from the origin.
        """
        u, v = _points(u, v)
        vals = np.asarray(values, float)
        coef = self.fit_many(u[None], v[None], vals.reshape(1, len(u), -1), scale)[0]
        return coef[:, 0] if vals.ndim == 1 else coef

    def fit_many(self, u, v, values, scale=True):
        """:meth:`fit` of K sets of points at once (one C++ call, on the cores): u, v (K, n),
        values (K, n, k); returns (K, n_terms, k). Each set is scaled by its own max|u|,
        max|v|."""
        u = np.asarray(u, float)
        v = np.asarray(v, float)
        if u.ndim != 2 or v.shape != u.shape:
            raise ValueError(f"u and v must be (K, n) arrays of one shape, not {u.shape} and "
                             f"{v.shape}")
        K, n = u.shape
        vals = np.asarray(values, float).reshape(K, n, -1)
        if n < 2 * self.n_terms:
            raise ValueError(f"{n} points are too few for a polynomial fit of order "
                             f"{self.order}")
        su = sv = np.ones(K)
        if scale:
            if self.kind != "monomial":
                raise ValueError("only a monomial fit can be rescaled")
            su = 1.0 / np.maximum(np.max(np.abs(u), axis=1, initial=0.0), 1.0)
            sv = 1.0 / np.maximum(np.max(np.abs(v), axis=1, initial=0.0), 1.0)
        M = self.values((u * su[:, None]).ravel(), (v * sv[:, None]).ravel())
        coef = _core.lstsq(np.ascontiguousarray(M.reshape(K, n, -1)),
                           np.ascontiguousarray(vals))
        if scale:
            ij = np.array(self.terms)
            coef = coef * (su[:, None] ** ij[:, 0] * sv[:, None] ** ij[:, 1])[:, :, None]
        return coef


def _points(u, v):
    """u, v as flat contiguous float arrays of the same length (as _core.basis takes them)."""
    u = np.ascontiguousarray(u, dtype=float).ravel()
    v = np.ascontiguousarray(v, dtype=float).ravel()
    if len(u) != len(v):
        raise ValueError(f"u and v differ in length: {len(u)} and {len(v)}")
    return u, v
