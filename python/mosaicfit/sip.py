"""TAN-SIP WCS headers fitted to a pixel -> sky mapping.

The SIP convention (Shupe et al. 2005), as astropy.wcs reads it: with u = x_fits - CRPIX1,
v = y_fits - CRPIX2 (FITS pixels are 1-based, afw's 0-based x is x_fits - 1),

    (xi, eta) = CD . (u + A(u, v), v + B(u, v)),     A, B: terms 2 <= p+q <= order
    (u, v)    = (U + AP(U, V), V + BP(U, V)),         (U, V) = CD^-1 . (xi, eta)

and (xi, eta) the gnomonic-plane coordinates about CRVAL in degrees. A mapping that is a
polynomial of order N in pixels composed with a gnomonic projection about CRVAL (as the
meas_mosaic model is) is represented exactly by a SIP of order N.
"""
import numpy as np
from astropy.io import fits

from .camera import sky_to_tangent, tangent_to_sky


def _terms(order, min_order):
    return [(p, t - p) for t in range(min_order, order + 1) for p in range(t, -1, -1)]


def _monomials(u, v, terms):
    """Columns u^p v^q for `terms`, which must be _terms(order, min_order) (the C++ basis
    kernel's order: by total degree, then decreasing power of u)."""
    from . import _core
    order = max(p + q for p, q in terms)
    B = _core.basis(np.ascontiguousarray(u, float).ravel(), np.ascontiguousarray(v, float).ravel(),
                    order, 2)[0]
    return B[:, B.shape[1] - len(terms):]


def _fit_poly(u, v, values, order, min_order):
    """Least-squares polynomial sum c_pq u^p v^q, min_order <= p+q <= order.

    The mappings fitted here are natively polynomials about CRPIX (the optical axis for the
    mosaic model), so the fit is made in these monomials directly, only scaled by the largest
    |u|, |v| for conditioning: re-expanding a fit made about the data's centre loses all
    precision for CCDs far from CRPIX. Returns {(p, q): coefficient array}.
    """
    su = 1.0 / max(np.max(np.abs(u)), 1.0)
    sv = 1.0 / max(np.max(np.abs(v)), 1.0)
    terms = _terms(order, min_order)
    if len(u) < 2 * len(terms):
        raise ValueError(f"{len(u)} points are too few for a polynomial fit of order {order}")
    M = _monomials(u * su, v * sv, terms)
    norm = np.sqrt(np.sum(M * M, axis=0))
    coef, *_ = np.linalg.lstsq(M / norm, values, rcond=None)
    return {(p, q): c / n * su ** p * sv ** q for (p, q), c, n in zip(terms, coef, norm)}


def fit_tan_sip(x, y, ra_deg, dec_deg, crpix, crval, order, inverse_order=None,
                inverse_box=None, radesys="ICRS", with_text=False):
    """Fit a TAN-SIP header to sample points of a pixel -> sky mapping.

    x, y: 0-based pixel positions (afw convention); ra_deg, dec_deg: the sky there.
    crpix: (CRPIX1, CRPIX2), 1-based FITS convention; crval: (ra, dec) tangent point, deg.
    order: SIP order of A/B (>= 1; 1 means a plain TAN). inverse_order: order of AP/BP
    (default order + 1); they are fitted on a grid over `inverse_box` = (xmin, xmax, ymin, ymax)
    in 0-based pixels (default: the range of x, y).
    Returns an astropy Header with CTYPE, CRPIX, CRVAL, CD, CUNIT, A/B/AP/BP, RADESYS, EQUINOX
    (and its card images as one string if `with_text`, for writing without re-formatting).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    xi, eta = sky_to_tangent(ra_deg, dec_deg, crval[0], crval[1])
    xi, eta = np.degrees(xi).ravel(), np.degrees(eta).ravel()
    u = x + 1.0 - crpix[0]
    v = y + 1.0 - crpix[1]
    # No constant term: CRPIX maps to CRVAL by definition of the two.
    fwd = _fit_poly(u, v, np.stack([xi, eta], axis=-1), order, 1)
    cd = np.array([fwd[(1, 0)], fwd[(0, 1)]]).T
    cdinv = np.linalg.inv(cd)
    hterms = _terms(order, 2)
    hi = cdinv @ np.array([fwd[t] for t in hterms]).T    # (2, n): A and B coefficients

    cards = [("CTYPE1", "RA---TAN-SIP" if order >= 2 else "RA---TAN"),
             ("CTYPE2", "DEC--TAN-SIP" if order >= 2 else "DEC--TAN"),
             ("CRPIX1", float(crpix[0])), ("CRPIX2", float(crpix[1])),
             ("CRVAL1", float(crval[0])), ("CRVAL2", float(crval[1])),
             ("CUNIT1", "deg"), ("CUNIT2", "deg"),
             ("CD1_1", float(cd[0, 0])), ("CD1_2", float(cd[0, 1])),
             ("CD2_1", float(cd[1, 0])), ("CD2_2", float(cd[1, 1])),
             ("RADESYS", radesys), ("EQUINOX", 2000.0)]
    if order >= 2:
        cards.append(("A_ORDER", order))
        cards += [(f"A_{p}_{q}", float(c)) for (p, q), c in zip(hterms, hi[0])]
        cards.append(("B_ORDER", order))
        cards += [(f"B_{p}_{q}", float(c)) for (p, q), c in zip(hterms, hi[1])]

        # Inverse: sample the forward SIP on a grid, fit u - U, v - V as polynomials of (U, V).
        iorder = inverse_order or order + 1
        if inverse_box is None:
            inverse_box = (x.min(), x.max(), y.min(), y.max())
        nx = iorder + 7
        ny = int(np.clip(nx * (inverse_box[3] - inverse_box[2]) / max(inverse_box[1] - inverse_box[0], 1e-9),
                         nx, 4 * nx))
        gx, gy = np.meshgrid(np.linspace(inverse_box[0], inverse_box[1], nx),
                             np.linspace(inverse_box[2], inverse_box[3], ny))
        gu = gx.ravel() + 1.0 - crpix[0]
        gv = gy.ravel() + 1.0 - crpix[1]
        M = _monomials(gu, gv, hterms)
        U, V = gu + M @ hi[0], gv + M @ hi[1]
        inv = _fit_poly(U, V, np.stack([gu - U, gv - V], axis=-1), iorder, 0)
        cards.append(("AP_ORDER", iorder))
        cards += [(f"AP_{p}_{q}", float(c[0])) for (p, q), c in inv.items()]
        cards.append(("BP_ORDER", iorder))
        cards += [(f"BP_{p}_{q}", float(c[1])) for (p, q), c in inv.items()]
    # card images formatted directly and parsed lazily: fits.Header(cards) costs ~10 ms
    from .wcsfile import card_image
    text = "".join(card_image(k, v) for k, v in cards)
    hdr = fits.Header.fromstring(text)
    return (hdr, text) if with_text else hdr


def sip_pixel_to_sky(header, x, y):
    """0-based pixel -> (ra, dec) degrees with a TAN(-SIP) header, evaluated directly
    (the same numbers as astropy.wcs, without building a WCS object)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    u = x + 1.0 - header["CRPIX1"]
    v = y + 1.0 - header["CRPIX2"]
    fu, fv = u.copy(), v.copy()
    order = header.get("A_ORDER", 0)
    for p in range(order + 1):
        for q in range(order + 1 - p):
            if p + q >= 2:
                t = u ** p * v ** q
                fu += header.get(f"A_{p}_{q}", 0.0) * t
                fv += header.get(f"B_{p}_{q}", 0.0) * t
    xi = header["CD1_1"] * fu + header["CD1_2"] * fv
    eta = header["CD2_1"] * fu + header["CD2_2"] * fv
    return tangent_to_sky(np.radians(xi), np.radians(eta), header["CRVAL1"], header["CRVAL2"])


def sip_inverse(header, ra_deg, dec_deg):
    """Sky -> 0-based pixel with the header's AP/BP polynomials (no iteration)."""
    crval = (header["CRVAL1"], header["CRVAL2"])
    xi, eta = sky_to_tangent(ra_deg, dec_deg, crval[0], crval[1])
    cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
    U, V = np.linalg.solve(cd, np.stack([np.degrees(xi).ravel(), np.degrees(eta).ravel()]))
    u, v = U.copy(), V.copy()
    order = header.get("AP_ORDER", 0)
    for p in range(order + 1):
        for q in range(order + 1 - p):
            u += header.get(f"AP_{p}_{q}", 0.0) * U ** p * V ** q
            v += header.get(f"BP_{p}_{q}", 0.0) * U ** p * V ** q
    shape = np.shape(ra_deg)
    return (u + header["CRPIX1"] - 1.0).reshape(shape), (v + header["CRPIX2"] - 1.0).reshape(shape)


def pixel_area_ratio(header, x, y):
    """J(x, y): the TAN-SIP pixel area at 0-based (x, y) over the area at CRPIX, in the
    gnomonic plane (meas_mosaic's Jacobian: |det d(xi, eta)/d(x, y)| / |det CD|)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    u = x + 1.0 - header["CRPIX1"]
    v = y + 1.0 - header["CRPIX2"]
    a_u, a_v = np.ones_like(u), np.zeros_like(u)     # d(u + A)/du, d(u + A)/dv
    b_u, b_v = np.zeros_like(u), np.ones_like(u)     # d(v + B)/du, d(v + B)/dv
    order = header.get("A_ORDER", 0)
    for p in range(order + 1):
        for q in range(order + 1 - p):
            if p + q < 2:
                continue
            A = header.get(f"A_{p}_{q}", 0.0)
            B = header.get(f"B_{p}_{q}", 0.0)
            if p:
                t = p * u ** (p - 1) * v ** q
                a_u += A * t
                b_u += B * t
            if q:
                t = q * u ** p * v ** (q - 1)
                a_v += A * t
                b_v += B * t
    return np.abs(a_u * b_v - a_v * b_u)
