"""TAN-SIP WCS headers: fitted to a pixel -> sky mapping, parsed once, evaluated fast.

The SIP convention (Shupe et al. 2005), as astropy.wcs reads it: with u = x_fits - CRPIX1,
v = y_fits - CRPIX2 (FITS pixels are 1-based, afw's 0-based x is x_fits - 1),

    (xi, eta) = CD . (u + A(u, v), v + B(u, v)),     A, B: terms 2 <= p+q <= order
    (u, v)    = (U + AP(U, V), V + BP(U, V)),         (U, V) = CD^-1 . (xi, eta)

and (xi, eta) the gnomonic-plane coordinates about CRVAL in degrees. A mapping that is a
polynomial of order N in pixels composed with a gnomonic projection about CRVAL (as the
meas_mosaic model is) is represented exactly by a SIP of order N.

:class:`SipModel` is the package's one reader of a header's TAN-SIP numbers.
"""
import functools
import math
import re
from typing import NamedTuple

import numpy as np
from astropy.io import fits

from .. import MosaicError, _core
from ..io.fits import Header, card_image, float_cards
from .basis import PolyBasis, n_terms
from .sky import sky_to_tangent, tangent_to_sky

__all__ = ["fit_tan_sip", "fit_tan_sip_many", "SipFit", "cards_text", "SipModel", "SipHeaderError",
           "sip_pixel_to_sky", "pixels_to_sky", "pixel_area_ratio", "area_from_gradients",
           "sip_inverse"]


def fit_tan_sip(x, y, ra_deg, dec_deg, crpix, crval, order, inverse_order=None,
                inverse_box=None, radesys="ICRS", as_cards=False, cd=None):
    """Fit a TAN-SIP header to sample points of a pixel -> sky mapping.

    x, y: 0-based pixel positions (afw convention); ra_deg, dec_deg: the sky there.
    crpix: (CRPIX1, CRPIX2), 1-based FITS convention; crval: (ra, dec) tangent point, deg.
    order: SIP order of A/B (>= 1; 1 means a plain TAN). inverse_order: order of AP/BP
    (default order + 1); they are fitted on a grid over `inverse_box` = (xmin, xmax, ymin, ymax)
    in 0-based pixels (default: the range of x, y).
    cd: the CD matrix (deg per pixel), when the mapping's derivative at CRPIX is known; only
    A and B are fitted then. Give it whenever CRPIX lies far from the points (the mosaic's
    products: CRPIX at the optical axis, up to 17000 px off an edge CCD): fitted there, CD is
    an extrapolation that is off by 0.1-1 %, and with it the pixel area ratio J =
    |det d(u + A, v + B)/d(u, v)|, which the calibration applies, though the positions are
    right.
    Returns an astropy Header with CTYPE, CRPIX, CRVAL, CD, CUNIT, A/B/AP/BP, RADESYS, EQUINOX;
    with `as_cards`, ([(key, value)], SipModel) instead (text by :func:`cards_text` when it is
    written): the mosaic fits thousands of CCDs and evaluates most of them before writing
    (:func:`fit_tan_sip_many` fits them all at once).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if inverse_box is None:
        inverse_box = (x.min(), x.max(), y.min(), y.max())
    if cd is not None:
        (out,) = fit_tan_sip_many(x[None], y[None], np.ravel(ra_deg)[None],
                                  np.ravel(dec_deg)[None], [crpix], [crval], [cd], order,
                                  inverse_order, [inverse_box], radesys)
        cards, model = out.cards(), out.model()
        return (cards, model) if as_cards else fits.Header.fromstring(cards_text(cards))
    xi, eta = sky_to_tangent(ra_deg, dec_deg, crval[0], crval[1])
    xi, eta = np.degrees(xi).ravel(), np.degrees(eta).ravel()
    u = x + 1.0 - crpix[0]
    v = y + 1.0 - crpix[1]
    higher = PolyBasis(order, "monomial", min_order=2)
    # No constant term: CRPIX maps to CRVAL by definition of the two.
    linear = PolyBasis(order, "monomial", min_order=1)
    fwd = linear.fit(u, v, np.stack([xi, eta], axis=-1))            # (n_terms, 2)
    cd = np.array([fwd[linear.index(1, 0)], fwd[linear.index(0, 1)]]).T
    hi = np.linalg.inv(cd) @ fwd[len(linear.terms) - len(higher.terms):].T   # (2, n): A, B
    inv = None
    iorder = inverse_order or order + 1
    if order >= 2:
        # Inverse: sample the forward SIP on a grid, fit u - U, v - V as polynomials of (U, V).
        gu, gv = _inverse_grid(inverse_box, crpix, iorder)
        M = higher.values(gu, gv)
        U, V = gu + M @ hi[0], gv + M @ hi[1]
        inv = PolyBasis(iorder, "monomial").fit(U, V, np.stack([gu - U, gv - V], axis=-1)).T
    cards, model = _sip_cards(crpix, crval, cd, order, hi, iorder, inv, radesys, model=as_cards)
    return (cards, model) if as_cards else fits.Header.fromstring(cards_text(cards))


def fit_tan_sip_many(x, y, ra_deg, dec_deg, crpix, crval, cd, order, inverse_order=None,
                     inverse_box=None, radesys="ICRS"):
    """:func:`fit_tan_sip` with `cd` given, for K mappings at once: x, y, ra_deg, dec_deg
    (K, n) samples; crpix, crval, cd, inverse_box one per mapping. The polynomials are fitted
    by one C++ call for all (cpp/sip.hpp, on the cores): the per-mapping work left here is
    the projection. Returns a :class:`SipFit` per mapping (its cards and SipModel made
    when asked: ~2 kB per CCD held instead of ~60 kB)."""
    x = np.ascontiguousarray(x, float)
    y = np.ascontiguousarray(y, float)
    if x.ndim != 2 or y.shape != x.shape or np.shape(ra_deg) != x.shape \
            or np.shape(dec_deg) != x.shape:
        raise ValueError("x, y, ra_deg and dec_deg must be (K, n) arrays of one shape")
    K, n = x.shape
    crpix = np.asarray(crpix, float).reshape(K, 2)
    crval = np.asarray(crval, float).reshape(K, 2)
    cd = np.asarray(cd, float).reshape(K, 2, 2)
    iorder = inverse_order or order + 1
    if order >= 2 and n < 2 * (n_terms(order) - 3):
        raise ValueError(f"{n} points are too few for a polynomial fit of order {order}")
    if inverse_box is None:
        inverse_box = [(r.min(), r.max(), s.min(), s.max()) for r, s in zip(x, y)]
    u = x + 1.0 - crpix[:, :1]
    v = y + 1.0 - crpix[:, 1:]
    xi, eta = sky_to_tangent(ra_deg, dec_deg, crval[:, :1], crval[:, 1:])
    UV = np.linalg.solve(cd, np.degrees(np.stack([xi, eta], axis=1)))      # (K, 2, n)
    U, V = UV[:, 0], UV[:, 1]
    if order >= 2:
        # one grid per box, offset by each mapping's CRPIX
        boxes = {tuple(map(float, b)) for b in inverse_box}
        if len(boxes) == 1:
            g0, h0 = _inverse_grid(boxes.pop(), (0.0, 0.0), iorder)
            gu = np.ascontiguousarray(g0[None, :] - crpix[:, :1])
            gv = np.ascontiguousarray(h0[None, :] - crpix[:, 1:])
        else:
            grids = [_inverse_grid(inverse_box[k], crpix[k], iorder) for k in range(K)]
            if len({len(g[0]) for g in grids}) != 1:
                raise ValueError("the inverse grids of the mappings differ in size")
            gu = np.ascontiguousarray([g[0] for g in grids])
            gv = np.ascontiguousarray([g[1] for g in grids])
        hi, inv = _core.fit_sip_batch(u, v, U - u, V - v, gu, gv, int(order), int(iorder))
    else:
        hi, inv = np.zeros((K, 2, 0)), [None] * K
    return [SipFit(crpix[k].copy(), crval[k].copy(), cd[k].copy(), int(order), hi[k].copy(),
                   int(iorder), None if inv[k] is None else inv[k].copy(), radesys)
            for k in range(K)]


class SipFit(NamedTuple):
    """A fitted TAN-SIP as its numbers: hi (2, terms of order 2..order) the A and B
    coefficients, inv (2, terms of order 0..iorder) the AP and BP ones (None below order
    2)."""
    crpix: np.ndarray
    crval: np.ndarray
    cd: np.ndarray
    order: int
    hi: np.ndarray
    iorder: int
    inv: np.ndarray
    radesys: str

    def cards(self):
        """The header cards [(key, value)] (text by :func:`cards_text`)."""
        return _sip_cards(*self)[0]

    def card_text(self):
        """``cards_text(self.cards())``, character for character, made from the card layout
        of its orders (cached) and one C++ call for all its numbers: what the mosaic writes
        ~20000 times on a wide run, where the cards as Python tuples cost ~0.7 ms each."""
        pieces, keys = _card_layout(self.order, self.iorder, self.radesys)
        parts = [self.crpix, self.crval, np.ravel(self.cd), [2000.0]]
        if self.order >= 2:
            parts += [self.hi[0], self.hi[1], self.inv[0], self.inv[1]]
        floats = float_cards(keys, np.concatenate(parts))
        out, at = [], 0
        for fixed, nfloat in pieces:
            out += [fixed, floats[at:at + 80 * nfloat]]
            at += 80 * nfloat
        return "".join(out)

    def model(self):
        """The :class:`SipModel`."""
        return _sip_cards(*self, model=True)[1]


def _inverse_grid(box, crpix, iorder):
    """The samples (offsets from CRPIX) of the inverse fit: a grid over `box` (0-based pixels)
    of iorder + 3 columns and as many rows as its aspect ratio asks (up to 4x): ~5 points per
    term (iorder + 7 columns gave the same inverse to 1e-8 px, with 1.8x the pivoted QRs' rows)."""
    nx = iorder + 3
    ny = int(np.clip(nx * (box[3] - box[2]) / max(box[1] - box[0], 1e-9), nx, 4 * nx))
    gx, gy = np.meshgrid(np.linspace(box[0], box[1], nx), np.linspace(box[2], box[3], ny))
    return gx.ravel() + 1.0 - crpix[0], gy.ravel() + 1.0 - crpix[1]


@functools.lru_cache(maxsize=64)
def _card_layout(order, iorder, radesys):
    """The cards of a TAN-SIP of these orders (SipFit.card_text) as ([(fixed card text, the
    number of float cards after it)], the keys of the float cards in order)."""
    nh, ni = n_terms(order) - 3, n_terms(iorder)
    cards = _sip_cards(np.zeros(2), np.zeros(2), np.zeros((2, 2)), order, np.zeros((2, nh)),
                       iorder, np.zeros((2, ni)), radesys)[0]
    pieces, keys, fixed = [], [], []
    for k, v in cards:
        if isinstance(v, float) and len(k) <= 8:
            keys.append(k)
            if fixed or not pieces:
                pieces.append(["".join(card_image(*c) for c in fixed), 0])
                fixed = []
            pieces[-1][1] += 1
        else:
            fixed.append((k, v))
    if fixed:
        pieces.append(["".join(card_image(*c) for c in fixed), 0])
    return tuple(map(tuple, pieces)), tuple(keys)


def _sip_cards(crpix, crval, cd, order, hi, iorder, inv, radesys, model=False):
    """([(key, value)], SipModel or None unless `model`) of a TAN-SIP: hi (2, terms of order
    2..order) the A and B coefficients, inv (2, terms of order 0..iorder) the AP and BP ones
    (None below order 2)."""
    hterms = PolyBasis(order, "monomial", min_order=2).terms
    cards = [("CTYPE1", "RA---TAN-SIP" if order >= 2 else "RA---TAN"),
             ("CTYPE2", "DEC--TAN-SIP" if order >= 2 else "DEC--TAN"),
             ("CRPIX1", float(crpix[0])), ("CRPIX2", float(crpix[1])),
             ("CRVAL1", float(crval[0])), ("CRVAL2", float(crval[1])),
             ("CUNIT1", "deg"), ("CUNIT2", "deg"),
             ("CD1_1", float(cd[0, 0])), ("CD1_2", float(cd[0, 1])),
             ("CD2_1", float(cd[1, 0])), ("CD2_2", float(cd[1, 1])),
             ("RADESYS", radesys), ("EQUINOX", 2000.0)]
    if order < 2:
        return cards, SipModel(crpix, crval, cd)
    a, b = hi[0].tolist(), hi[1].tolist()
    iterms = PolyBasis(iorder, "monomial").terms
    ap, bp = inv[0].tolist(), inv[1].tolist()
    cards.append(("A_ORDER", order))
    cards += [(f"A_{p}_{q}", c) for (p, q), c in zip(hterms, a)]
    cards.append(("B_ORDER", order))
    cards += [(f"B_{p}_{q}", c) for (p, q), c in zip(hterms, b)]
    cards.append(("AP_ORDER", iorder))
    cards += [(f"AP_{p}_{q}", c) for (p, q), c in zip(iterms, ap)]
    cards.append(("BP_ORDER", iorder))
    cards += [(f"BP_{p}_{q}", c) for (p, q), c in zip(iterms, bp)]
    if not model:
        return cards, None
    return cards, SipModel(crpix, crval, cd, dict(zip(hterms, a)), dict(zip(hterms, b)),
                           dict(zip(iterms, ap)), dict(zip(iterms, bp)))


def cards_text(cards):
    """Card images of [(key, value)] as one string (formatted directly: fits.Header(cards)
    costs ~10 ms for a SIP of order 9), or `cards` itself if it is already text."""
    if isinstance(cards, str):
        return cards
    out, keys, values = [], [], []
    for k, v in cards:
        if isinstance(v, (float, np.floating)) and len(k) <= 8:
            keys.append(k)          # runs of float cards (the coefficients) in one C++ call
            values.append(v)
            continue
        if keys:
            out.append(float_cards(keys, values))
            keys, values = [], []
        out.append(card_image(k, v))
    if keys:
        out.append(float_cards(keys, values))
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _is_key(keyword):
    """Whether SipModel.from_header reads `keyword` (_KEY; cached: every CCD has the same)."""
    return bool(_KEY.match(keyword))


@functools.lru_cache(maxsize=4096)
def _sip_term(keyword):
    """(polynomial name, (p, q)) of a SIP keyword, (name, None) of its *_ORDER, (name, False)
    of a malformed one, (None, None) of any other keyword (cached)."""
    name, _, rest = keyword.partition("_")
    if name not in ("A", "B", "AP", "BP"):
        return None, None
    if rest == "ORDER":
        return name, None
    try:
        p, q = (int(t) for t in rest.split("_"))
    except ValueError:
        return name, False
    return name, (p, q)


# the keywords SipModel.from_header reads: in card text (_CARD) or as parsed keywords (_KEY)
_KEYS = r"(CTYPE1|CRPIX[12]|CRVAL[12]|CD[12]_[12]|(?:A|B|AP|BP)_(?:ORDER|\d+_\d+))"
_CARD = re.compile(rf"^{_KEYS}\s*=\s*('[^']*'|[^/]+)")
_KEY = re.compile(rf"^{_KEYS}$")


def _number(value):
    """A parsed card value as a float, as float() of its text would give it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"could not convert {value!r} to float")
    return float(value)


def area_from_gradients(au, av, bu, bv):
    """J = |det d(u + A, v + B)/d(u, v)| from the SIP polynomials' gradients (the pixel area
    relative to CRPIX; SipModel.area_ratio, Solution.pixel_area_ratios)."""
    return np.abs((1.0 + au) * (1.0 + bv) - av * bu)


class SipHeaderError(MosaicError, ValueError):
    """A header without a usable TAN-SIP WCS (one line)."""


class SipModel:
    """A TAN(-SIP) header's numbers as arrays, parsed once, evaluated with the C++ monomial
    kernel: the fit and the calibration evaluate thousands of headers, and astropy's
    Header.get costs ~20 us a key (a SIP of order 9 has ~230)."""

    def __init__(self, crpix, crval, cd, a=None, b=None, ap=None, bp=None):
        self.crpix = np.asarray(crpix, float)
        self.crval = np.asarray(crval, float)
        self.cd = np.asarray(cd, float)
        self.a, self.b = a or {}, b or {}          # {(p, q): coefficient}, read-only
        self.ap, self.bp = ap or {}, bp or {}
        self._polys = {}                           # name -> (PolyBasis, coefficient vector)

    @classmethod
    def from_header(cls, header, source="TAN-SIP header"):
        """From an astropy Header, any header with ``tostring()`` or its card text
        (80-character cards), read as astropy.wcs does: the SIP terms only with a ``-SIP``
        CTYPE1, each polynomial up to its ``*_ORDER``. A header without a usable TAN-SIP WCS
        raises SipHeaderError (a MosaicError and a ValueError) naming `source` and the card."""
        vals = {}
        ctype = ""
        try:
            if isinstance(header, Header):
                # the fast reader's header (mosaicfit.io.fits): its values are parsed already
                for keyword, value, _ in header.entries():
                    if _is_key(keyword):
                        if keyword == "CTYPE1":
                            ctype = str(value).strip("' ")
                        else:
                            vals[keyword] = _number(value)
            else:
                text = header if isinstance(header, str) else header.tostring()
                for i in range(0, len(text) - 79, 80):
                    m = _CARD.match(text[i:i + 80])
                    if not m:
                        continue
                    if m.group(1) == "CTYPE1":
                        ctype = m.group(2).strip("' ")
                    else:
                        vals[m.group(1)] = float(m.group(2).replace("D", "E").replace("d", "e"))
            crpix = (vals["CRPIX1"], vals["CRPIX2"])
            crval = (vals["CRVAL1"], vals["CRVAL2"])
            cd = [[vals["CD1_1"], vals["CD1_2"]], [vals["CD2_1"], vals["CD2_2"]]]
        except KeyError as e:
            raise SipHeaderError(f"{source}: TAN header without {e.args[0]}") from None
        except ValueError as e:
            raise SipHeaderError(f"{source}: TAN-SIP header with an unreadable number ({e})") \
                from None
        if not np.all(np.isfinite(np.r_[crpix, crval, np.ravel(cd)])):
            raise SipHeaderError(f"{source}: TAN header with a non-finite CRPIX, CRVAL or CD "
                                 "value")
        poly = {n: {} for n in ("A", "B", "AP", "BP")}
        orders = {}
        terms = []
        for k, val in vals.items():
            name, pq = _sip_term(k)
            if name is None:
                continue
            if pq is None:
                if not (math.isfinite(val) and float(val).is_integer() and 0 <= val <= 30):
                    raise SipHeaderError(f"{source}: {k} = {val!r} is not an order 0..30")
                orders[name] = int(val)
            else:
                terms.append((name, pq, k, val))
        sip = "-SIP" in ctype.upper() or not ctype      # card text without CTYPE1: as given
        for name, pq, k, val in terms:
            if pq is False:
                raise SipHeaderError(f"{source}: SIP keyword {k!r} is not of the form "
                                     f"{name}_p_q")
            p, q = pq
            if not math.isfinite(val) or p < 0 or q < 0 or p + q > 30:
                raise SipHeaderError(f"{source}: SIP coefficient {k} = {val!r} is not usable")
            if sip and p + q <= orders.get(name, 30):
                poly[name][(p, q)] = val
        return cls(crpix, crval, cd, poly["A"], poly["B"], poly["AP"], poly["BP"])

    def arrays(self):
        """(a, b): the A and B coefficients as square arrays a[p, q] of the larger order + 1
        (1 x 1 zeros without SIP), as the C++ calibration kernel takes them."""
        order = max((p + q for p, q in list(self.a) + list(self.b)), default=0)
        out = []
        for coeffs in (self.a, self.b):
            m = np.zeros((order + 1, order + 1))
            for (p, q), c in coeffs.items():
                m[p, q] = c
            out.append(m)
        return tuple(out)

    def _poly(self, name, u, v, derivatives=False):
        """The polynomial `name` ('a', 'b', 'ap', 'bp') at (u, v), with its derivatives."""
        if name not in self._polys:
            coeffs = getattr(self, name)
            basis = PolyBasis(max(p + q for p, q in coeffs), "monomial") if coeffs else None
            self._polys[name] = (basis, basis.vector(coeffs) if coeffs else None)
        basis, c = self._polys[name]
        if basis is None:
            z = np.zeros_like(u)
            return (z, z, z) if derivatives else z
        if derivatives:
            return basis.evaluate_with_gradients(c, u, v)
        return basis.evaluate(c, u, v)

    def forward(self, u, v):
        """(u + A(u, v), v + B(u, v)) of pixel offsets (u, v) from CRPIX."""
        return u + self._poly("a", u, v), v + self._poly("b", u, v)

    def intermediate(self, x, y):
        """0-based pixels -> gnomonic-plane (xi, eta) in degrees."""
        u = np.ravel(x).astype(float) + 1.0 - self.crpix[0]
        v = np.ravel(y).astype(float) + 1.0 - self.crpix[1]
        fu, fv = self.forward(u, v)
        return self.cd[0, 0] * fu + self.cd[0, 1] * fv, self.cd[1, 0] * fu + self.cd[1, 1] * fv

    def pixel_to_sky(self, x, y):
        """0-based pixels -> (ra, dec) degrees (astropy.wcs's all_pix2world, origin 0)."""
        xi, eta = self.intermediate(x, y)
        ra, dec = tangent_to_sky(np.radians(xi), np.radians(eta), *self.crval)
        return ra.reshape(np.shape(x)), dec.reshape(np.shape(x))

    def area_ratio(self, x, y):
        """J: pixel area at (x, y) over the area at CRPIX, in the gnomonic plane (meas_mosaic's
        Jacobian |det d(xi, eta)/d(x, y)| / |det CD|)."""
        u = np.ravel(x).astype(float) + 1.0 - self.crpix[0]
        v = np.ravel(y).astype(float) + 1.0 - self.crpix[1]
        _, au, av = self._poly("a", u, v, True)
        _, bu, bv = self._poly("b", u, v, True)
        return area_from_gradients(au, av, bu, bv).reshape(np.shape(x))

    def sky_to_pixel(self, ra_deg, dec_deg):
        """Sky -> 0-based pixels with the AP/BP polynomials (no iteration)."""
        xi, eta = sky_to_tangent(ra_deg, dec_deg, *self.crval)
        U, V = np.linalg.solve(self.cd, np.stack([np.degrees(np.ravel(xi)), np.degrees(np.ravel(eta))]))
        u = U + self._poly("ap", U, V)
        v = V + self._poly("bp", U, V)
        shape = np.shape(ra_deg)
        return (u + self.crpix[0] - 1.0).reshape(shape), (v + self.crpix[1] - 1.0).reshape(shape)


def pixels_to_sky(models, k, x, y):
    """(ra, dec) degrees of the 0-based pixels (x, y), point i through the SipModel
    models[k[i]]: each model's :meth:`SipModel.pixel_to_sky`, the same numbers, in one pass
    (one C++ evaluation of all the SIPs, their coefficients padded to the largest order with
    zeros, which add nothing): the fit's selection reads ~20000 single-frame WCSs at 200
    visits, where a call per CCD cost ~80 us."""
    k = np.asarray(k, np.int64).ravel()
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    crpix = np.array([m.crpix for m in models], float).reshape(-1, 2)
    crval = np.array([m.crval for m in models], float).reshape(-1, 2)
    cd = np.array([m.cd for m in models], float).reshape(-1, 2, 2)
    u = x + 1.0 - crpix[k, 0]
    v = y + 1.0 - crpix[k, 1]
    order = max((p + q for m in models for p, q in list(m.a) + list(m.b)), default=0)
    if order > 0 and len(k):
        basis = PolyBasis(order, "monomial")
        coef = np.zeros((len(models), 2, basis.n_terms))
        for i, m in enumerate(models):
            for d, poly in enumerate((m.a, m.b)):
                if poly:
                    coef[i, d] = basis.vector(poly)
        (duv,) = basis.evaluate_sets(coef, k, u, v)
        u, v = u + duv[0], v + duv[1]
    c = cd[k]
    xi = c[:, 0, 0] * u + c[:, 0, 1] * v
    eta = c[:, 1, 0] * u + c[:, 1, 1] * v
    return tangent_to_sky(np.radians(xi), np.radians(eta), crval[k, 0], crval[k, 1])


def sip_pixel_to_sky(header, x, y):
    """0-based pixel -> (ra, dec) degrees with a TAN(-SIP) header (as astropy.wcs)."""
    return SipModel.from_header(header).pixel_to_sky(x, y)


def pixel_area_ratio(header, x, y):
    """J(x, y) of a TAN-SIP header: see :meth:`SipModel.area_ratio`."""
    return SipModel.from_header(header).area_ratio(x, y)


def sip_inverse(header, ra_deg, dec_deg):
    """Sky -> 0-based pixel with the header's AP/BP polynomials (no iteration)."""
    return SipModel.from_header(header).sky_to_pixel(ra_deg, dec_deg)
