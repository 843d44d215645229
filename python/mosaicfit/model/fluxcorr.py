"""The mosaic's photometric correction of one CCD, the content of an ``fcr-VVVVVVV-CCC.fits``
file (meas_mosaic's FluxFitParams; the file's layout: :mod:`mosaicfit.io.fcrfile`).

Header keys: ``ORDER``, ``NCOEFF`` = (ORDER+1)(ORDER+2)/2, ``CHEBYSHEV``, ``ABSOLUTE``,
``U_MAX``, ``V_MAX``, ``X0``, ``Y0``, ``C_i_j`` (i + j <= ORDER), ``FLUXMAG0``, ``FLUXMAG0ERR``
(and ``FILTER``, ``AR_HDU``).

Evaluation at a 0-based pixel (x, y) of a CCD turned by nq quarter turns (nq = round(yaw/90)
mod 4) in a W x H box (HSC: 2048 x 4176): first rotate into the frame meas_mosaic used,

    nq 0: (x, y);  1: (H-1 - y, x);  2: (W-1 - x, H-1 - y);  3: (y, W-1 - x)  -> (x', y'),

then, as FluxFitParams::eval, u = (x' + X0) / U_MAX, v = (y' + Y0) / V_MAX and

    P = sum C_i_j u^i v^j            (CHEBYSHEV = F)
    P = sum C_i_j T_i(u) T_j(v)      (CHEBYSHEV = T, T_n the Chebyshev polynomials)

in magnitudes. X0, Y0 are minus the optical axis in the rotated frame (checked against the
real files: tests/test_corrfiles.py). The flux correction factor is 10^(-0.4 P), times the
pixel-area Jacobian when that is applied too.
"""
import functools
import math
import os
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from .. import MosaicError
from ..io.atomic import write_bytes
from ..io.fcrfile import fcr_file_bytes, read_fcr_header
from ..io.fits import card_image, float_card, float_cards, truncated_card
from .basis import PolyBasis

__all__ = ["FluxCorrection", "read_fcr", "write_fcr", "fcr_bytes", "rotate_pixels", "nquarter_from_yaw",
           "HSC_CCD_WIDTH", "HSC_CCD_HEIGHT"]

HSC_CCD_WIDTH = 2048
HSC_CCD_HEIGHT = 4176


def nquarter_from_yaw(yaw_deg):
    """Quarter turns of a CCD: round(yaw / 90) mod 4."""
    return int(round(float(yaw_deg) / 90.0)) % 4


def rotate_pixels(x, y, nq, width=HSC_CCD_WIDTH, height=HSC_CCD_HEIGHT):
    """0-based CCD pixels (x, y) -> (x', y') in the frame turned by `nq` quarter turns."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    nq = int(nq) % 4
    if nq == 0:
        return x, y
    if nq == 1:
        return (height - 1) - y, x
    if nq == 2:
        return (width - 1) - x, (height - 1) - y
    return y, (width - 1) - x


def _coeff_array(coeffs, order):
    if isinstance(coeffs, dict):
        if order is None:
            order = max((i + j for i, j in coeffs), default=0)
        c = np.zeros((order + 1, order + 1))
        for (i, j), v in coeffs.items():
            if i < 0 or j < 0 or i + j > order:
                raise ValueError(f"coefficient C_{i}_{j} has i + j > order {order}")
            c[i, j] = float(v)
        return c, order
    c = np.array(coeffs, dtype=float)
    if c.ndim != 2:
        raise ValueError("coeffs must be a dict {(i, j): c} or a 2-D array C[i, j]")
    if order is None:
        order = max(c.shape) - 1
    n = order + 1
    out = np.zeros((n, n))
    ii, jj = np.nonzero(c)
    if np.any(ii + jj > order):
        raise ValueError(f"coeffs has non-zero terms with i + j > order {order}")
    m0, m1 = min(n, c.shape[0]), min(n, c.shape[1])
    out[:m0, :m1] = c[:m0, :m1]
    return out, order


@dataclass(eq=False)
class FluxCorrection:
    """meas_mosaic's per-CCD photometric correction P(x, y) in magnitudes (module doc)."""

    order: int = None
    coeffs: np.ndarray = None    # C[i, j] multiplies u^i v^j (or T_i(u) T_j(v)); 0 for i+j>order
    x0: float = 0.0
    y0: float = 0.0
    u_max: float = 1.0
    v_max: float = 1.0
    chebyshev: bool = False
    absolute: bool = False
    fluxmag0: float = 0.0
    fluxmag0err: float = 0.0
    nq: int = 0
    width: int = HSC_CCD_WIDTH
    height: int = HSC_CCD_HEIGHT
    filter: str = "_unknown_"

    def __post_init__(self):
        if self.coeffs is None:
            self.coeffs = np.zeros((1, 1)) if self.order is None else \
                np.zeros((self.order + 1, self.order + 1))
        self.coeffs, self.order = _coeff_array(self.coeffs, self.order)
        self.order = int(self.order)
        if int(self.nq) not in (0, 1, 2, 3):
            raise ValueError(f"nq must be 0, 1, 2 or 3 quarter turns, not {self.nq}")
        self.nq = int(self.nq)
        if not (self.u_max and self.v_max):
            raise ValueError("u_max and v_max must be non-zero")

    @property
    def ncoeff(self):
        """Number of coefficients of total order <= `order`: (order + 1)(order + 2) / 2."""
        return (self.order + 1) * (self.order + 2) // 2

    def terms(self):
        """(i, j) in meas_mosaic's order: by total degree, then decreasing power of x."""
        return _terms(self.order)

    def rotate(self, x, y):
        """0-based CCD pixels -> the rotated frame (x', y') the polynomial lives in."""
        return rotate_pixels(x, y, self.nq, self.width, self.height)

    def mag(self, x, y):
        """P(x, y) in magnitudes at 0-based CCD pixels (vectorised)."""
        xr, yr = self.rotate(x, y)
        u = (xr + self.x0) / self.u_max
        v = (yr + self.y0) / self.v_max
        basis = PolyBasis(self.order, "chebyshev" if self.chebyshev else "monomial")
        return basis.evaluate(basis.vector(self.coeffs), u, v)

    def factor(self, x, y, jacobian=None):
        """Flux correction factor 10^(-0.4 P(x, y)), times `jacobian` if given."""
        f = np.power(10.0, -0.4 * self.mag(x, y))
        if jacobian is not None:
            f = f * np.asarray(jacobian)
        return f

    def header(self):
        """The primary-header cards of an fcr file."""
        h = fits.Header()
        h.append(fits.Card("ORDER", self.order))
        h.append(fits.Card("NCOEFF", self.ncoeff))
        h.append(fits.Card("HIERARCH CHEBYSHEV", bool(self.chebyshev)))
        h.append(fits.Card("ABSOLUTE", bool(self.absolute)))
        h.append(float_card("U_MAX", self.u_max))
        h.append(float_card("V_MAX", self.v_max))
        h.append(float_card("X0", self.x0))
        h.append(float_card("Y0", self.y0))
        for i, j in self.terms():
            h.append(float_card(f"C_{i}_{j}", self.coeffs[i, j]))
        h.append(truncated_card("AR_HDU", 5, "HDU (1-indexed) containing the archive used to "
                                              "store ancillary objects"))
        h.append(fits.Card("FILTER", self.filter))
        h.append(float_card("FLUXMAG0", self.fluxmag0))
        h.append(float_card("FLUXMAG0ERR", self.fluxmag0err))
        return h


def _get(header, key, path, kind=float):
    if key not in header:
        raise MosaicError(f"{path}: no {key} in the header")
    v = header[key]
    if kind is bool:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer)) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().upper() in ("T", "F", "TRUE", "FALSE"):
            return v.strip().upper() in ("T", "TRUE")
        raise MosaicError(f"{path}: {key} = {v!r} is not a boolean")
    if kind is int:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            if not (isinstance(v, float) and v.is_integer()):
                raise MosaicError(f"{path}: {key} = {v!r} is not an integer")
        return int(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise MosaicError(f"{path}: {key} = {v!r} is not a number") from None
    if not math.isfinite(f):
        raise MosaicError(f"{path}: {key} = {v!r} is not finite")
    return f


def read_fcr(path, nq, width=HSC_CCD_WIDTH, height=HSC_CCD_HEIGHT):
    """Read an fcr file; `nq` (quarter turns of the CCD, see nquarter_from_yaw) and the CCD
    box are not in the file and must be given. Errors raise MosaicError naming the file."""
    path = os.fspath(path)
    h = read_fcr_header(path)
    order = _get(h, "ORDER", path, int)
    if not 0 <= order <= 30:
        raise MosaicError(f"{path}: ORDER = {order} is out of range")
    ncoeff = (order + 1) * (order + 2) // 2
    if "NCOEFF" in h and _get(h, "NCOEFF", path, int) != ncoeff:
        raise MosaicError(f"{path}: NCOEFF = {h['NCOEFF']} but ORDER = {order} needs {ncoeff}")
    coeffs = np.zeros((order + 1, order + 1))
    for n in range(order + 1):
        for j in range(n + 1):
            i = n - j
            coeffs[i, j] = _get(h, f"C_{i}_{j}", path)
    u_max = _get(h, "U_MAX", path)
    v_max = _get(h, "V_MAX", path)
    if u_max == 0 or v_max == 0:
        raise MosaicError(f"{path}: U_MAX/V_MAX must be non-zero (got {u_max}, {v_max})")
    if int(nq) not in (0, 1, 2, 3):
        raise ValueError(f"nq must be 0, 1, 2 or 3 quarter turns, not {nq}")
    fluxmag0 = _get(h, "FLUXMAG0", path)
    if fluxmag0 < 0:
        raise MosaicError(f"{path}: FLUXMAG0 = {fluxmag0} is negative")
    fluxmag0err = _get(h, "FLUXMAG0ERR", path) if "FLUXMAG0ERR" in h else 0.0
    return FluxCorrection(order=order, coeffs=coeffs, x0=_get(h, "X0", path),
                          y0=_get(h, "Y0", path), u_max=u_max, v_max=v_max,
                          chebyshev=_get(h, "CHEBYSHEV", path, bool),
                          absolute=_get(h, "ABSOLUTE", path, bool),
                          fluxmag0=fluxmag0, fluxmag0err=fluxmag0err, nq=int(nq),
                          width=width, height=height,
                          filter=str(h.get("FILTER", "_unknown_")).strip())


def write_fcr(path, fc, extra=()):
    """Write a FluxCorrection as an fcr file (atomically, as the real files are laid out);
    `extra`: further primary cards [(key, value, comment)] or their card images
    (mosaicfit's own)."""
    path = os.fspath(path)
    write_bytes(fcr_bytes(fc, extra, path), path)


def fcr_bytes(fc, extra=(), path="fcr file"):
    """The bytes :func:`write_fcr` writes (made once for a product written into several
    tract folders); `path` names the file in the errors."""
    if not np.all(np.isfinite(fc.coeffs)) or not all(
            math.isfinite(float(v)) for v in (fc.x0, fc.y0, fc.u_max, fc.v_max,
                                              fc.fluxmag0, fc.fluxmag0err)):
        raise ValueError(f"{path}: non-finite flux correction values")
    return fcr_file_bytes(_fcr_card_images(fc) + [c if isinstance(c, str) else card_image(*c)
                                                  for c in extra])


def _fcr_card_images(fc):
    """The primary cards of an fcr file, as :meth:`FluxCorrection.header` has them."""
    head, keys, ii, jj, tail = _fcr_layout(int(fc.order), bool(fc.chebyshev), bool(fc.absolute))
    values = np.concatenate([[float(fc.u_max), float(fc.v_max), float(fc.x0), float(fc.y0)],
                             np.asarray(fc.coeffs, float)[ii, jj]])
    return [head, float_cards(keys, values), tail, card_image("FILTER", fc.filter),
            card_image("FLUXMAG0", float(fc.fluxmag0)),
            card_image("FLUXMAG0ERR", float(fc.fluxmag0err))]


def _terms(order):
    """The (i, j) of an order's coefficients in meas_mosaic's order (FluxCorrection.terms)."""
    return [(n - k, k) for n in range(order + 1) for k in range(n + 1)]


@functools.lru_cache(maxsize=64)
def _fcr_layout(order, chebyshev, absolute):
    """The fixed cards of an fcr file of this kind (ORDER .. ABSOLUTE, then AR_HDU) as text,
    the keys of its float cards U_MAX .. C_i_j and the (i, j) of its coefficients."""
    terms = _terms(order)
    head = "".join([card_image("ORDER", order),
                    card_image("NCOEFF", (order + 1) * (order + 2) // 2),
                    card_image("HIERARCH CHEBYSHEV", chebyshev),
                    card_image("ABSOLUTE", absolute)])
    keys = ("U_MAX", "V_MAX", "X0", "Y0") + tuple(f"C_{i}_{j}" for i, j in terms)
    tail = card_image("AR_HDU", 5, "HDU (1-indexed) containing the archive used to store "
                      "ancillary objects")
    return (head, keys, np.array([i for i, _ in terms]), np.array([j for _, j in terms]), tail)
