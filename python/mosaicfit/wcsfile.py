"""TAN-SIP WCS headers and the mosaic's ``wcs-VVVVVVV-CCC.fits`` output files.

Layout of a meas_mosaic ``wcs-`` file (``tests/data/meas_mosaic-outputs/wcs-*.fits``): an afw
exposure with 0x0 pixels. The primary header has ``FILTER``, ``FLUXMAG0`` and ``FLUXMAG0ERR``;
HDU 1 (IMAGE), 2 (MASK) and 3 (VARIANCE) carry the WCS cards ``EQUINOX``, ``RADESYS``,
``CRPIX1/2`` (1-based), ``CD1_1..CD2_2``, ``CRVAL1/2`` (deg), ``CUNIT1/2``, ``A_ORDER``,
``A_p_q``, ``B_ORDER``, ``B_p_q`` (2 <= p+q <= N), ``AP_ORDER``, ``AP_p_q``, ``BP_ORDER``,
``BP_p_q`` (the inverse), ``CTYPE1='RA---TAN-SIP'``, ``CTYPE2='DEC--TAN-SIP'``. meas_mosaic
also wrote an afw archive copy of the WCS (HDUs 4-6), which readers do not need and which is
not written here. hscPipe reads the metadata of HDU 1 merged with the primary, so it finds the
WCS in HDU 1.
"""
import math
import os
import re
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from . import MosaicError
from .atomic import write_fits
from .catalog import open_fits

__all__ = ["read_wcs_file", "read_wcs_header", "write_wcs_file", "wcs_header",
           "header_has_wcs", "missing_wcs_keys", "strip_wcs", "make_wcs", "is_wcs_keyword",
           "float_card"]

_WCS_KEY = re.compile(r"^(WCSAXES|CTYPE[12]|CRPIX[12]|CRVAL[12]|CDELT[12]|CUNIT[12]|CD[12]_[12]|"
                      r"PC[12]_[12]|CROTA[12]|LONPOLE|LATPOLE|EQUINOX|EPOCH|RADESYS|RADECSYS|"
                      r"PV[12]_\d+|(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+))$")


def float_card(key, value, comment=None):
    """A header card holding `value` exactly (shortest repr; astropy's own formatting keeps
    only 20 characters, which loses the last digit of many doubles). Long keys become
    HIERARCH cards."""
    return fits.Card.fromstring(card_image(key, float(value), comment))


def is_wcs_keyword(key):
    """True for the keywords of the primary celestial WCS and its SIP terms."""
    return bool(_WCS_KEY.match(key))


def header_has_wcs(header):
    """True if `header` has a celestial WCS (CTYPE, CRVAL, CRPIX and a scale/matrix)."""
    return not missing_wcs_keys(header)


def missing_wcs_keys(header):
    """The cards a celestial WCS needs that `header` lacks (empty if it has them all; a scale
    or matrix is named 'CD1_1..CD2_2')."""
    need = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2")
    missing = [k for k in need if k not in header]
    if not any(k in header for k in ("CD1_1", "CD2_2", "CDELT1", "PC1_1")):
        missing.append("CD1_1..CD2_2")
    return missing


def strip_wcs(header):
    """A copy of `header` without the primary WCS and SIP cards."""
    out = fits.Header()
    for card in header.cards:
        if not is_wcs_keyword(card.keyword):
            out.append(card.copy() if hasattr(card, "copy") else card)
    return out


def _sip_cards(name, coeffs, order, min_total):
    cards = [fits.Card(f"{name}_ORDER", int(order))]
    for p in range(order + 1):
        for q in range(order + 1 - p):
            c = float(coeffs[p, q]) if p < coeffs.shape[0] and q < coeffs.shape[1] else 0.0
            if p + q >= min_total or c != 0.0:
                cards.append(float_card(f"{name}_{p}_{q}", c))
    return cards


def _header_from_wcs(w):
    if not isinstance(w, WCS):
        raise TypeError(f"expected an astropy.wcs.WCS or a FITS header, not {type(w).__name__}")
    if w.naxis != 2:
        raise ValueError(f"expected a 2-axis celestial WCS, not {w.naxis} axes")
    ctype = [c.split("-")[0] for c in w.wcs.ctype]
    proj = w.wcs.ctype[0][5:8]
    if proj != "TAN":
        raise ValueError(f"only TAN (or TAN-SIP) WCS can be written, not {w.wcs.ctype[0]!r}")
    sip = w.sip
    suffix = "-SIP" if sip is not None else ""
    cd = np.asarray(w.pixel_scale_matrix, dtype=float)
    h = fits.Header()
    radesys = (w.wcs.radesys or "").strip() or "ICRS"
    equinox = w.wcs.equinox
    if np.isfinite(equinox):
        h.append(float_card("EQUINOX", equinox, "Equinox of coordinates"))
    elif radesys in ("FK5", "FK4"):
        h.append(fits.Card("EQUINOX", 2000.0 if radesys == "FK5" else 1950.0,
                           "Equinox of coordinates"))
    h.append(fits.Card("RADESYS", radesys, "Coordinate system for equinox"))
    h.append(float_card("CRPIX1", w.wcs.crpix[0], "WCS Coordinate reference pixel"))
    h.append(float_card("CRPIX2", w.wcs.crpix[1], "WCS Coordinate reference pixel"))
    for i in range(2):
        for j in range(2):
            h.append(float_card(f"CD{i + 1}_{j + 1}", cd[i, j], "WCS Coordinate scale matrix"))
    h.append(float_card("CRVAL1", w.wcs.crval[0], "WCS Ref value (RA in decimal degrees)"))
    h.append(float_card("CRVAL2", w.wcs.crval[1], "WCS Ref value (DEC in decimal degrees)"))
    h.append(fits.Card("CUNIT1", "deg"))
    h.append(fits.Card("CUNIT2", "deg"))
    if sip is not None:
        for name, coeffs, order, min_total in (("A", sip.a, sip.a_order, 2),
                                               ("B", sip.b, sip.b_order, 2),
                                               ("AP", sip.ap, sip.ap_order, 1),
                                               ("BP", sip.bp, sip.bp_order, 1)):
            if coeffs is not None:
                for card in _sip_cards(name, np.asarray(coeffs), int(order), min_total):
                    h.append(card)
    lon = ctype[0][:4].ljust(5, "-")
    lat = ctype[1][:4].ljust(5, "-")
    h.append(fits.Card("CTYPE1", f"{lon}TAN{suffix}", "WCS Coordinate type"))
    h.append(fits.Card("CTYPE2", f"{lat}TAN{suffix}", "WCS Coordinate type"))
    return h


def wcs_header(header_or_wcs):
    """Only the WCS cards: copied in their order from a header, or built from an astropy WCS
    (CD matrix, CRPIX 1-based, SIP A/B for 2 <= p+q <= N and AP/BP for 1 <= p+q <= N, plus any
    other non-zero term)."""
    if isinstance(header_or_wcs, fits.Header):
        out = fits.Header()
        for card in header_or_wcs.cards:
            if is_wcs_keyword(card.keyword):
                out.append(card)
        return out
    return _header_from_wcs(header_or_wcs)


_NUMERIC_WCS = ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
                "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2")


_SIP_CARD = re.compile(r"^(A|B|AP|BP)_(ORDER|\d+_\d+)$")


def make_wcs(header, source="header"):
    """astropy WCS (SIP included) from a header; MosaicError naming `source` if there is no
    valid celestial WCS in it."""
    if not header_has_wcs(header):
        raise MosaicError(f"{source}: no WCS (CTYPE/CRVAL/CRPIX/CD cards) in the header")
    for key in _NUMERIC_WCS:          # name the card, rather than wcslib's error
        if key in header:
            v = header[key]
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
                raise MosaicError(f"{source}: WCS keyword {key} = {v!r} is not a number")
            if not math.isfinite(float(v)):
                raise MosaicError(f"{source}: WCS keyword {key} = {v!r} is not finite")
    for key in header.keys():         # SIP orders and coefficients
        m = _SIP_CARD.match(key)
        if not m:
            continue
        v = header[key]
        if m.group(2) == "ORDER":
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or \
                    not 0 <= v <= 30:
                raise MosaicError(f"{source}: WCS keyword {key} = {v!r} is not an order 0..30")
        elif isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
            raise MosaicError(f"{source}: WCS keyword {key} = {v!r} is not a number")
        elif not math.isfinite(float(v)):
            raise MosaicError(f"{source}: WCS keyword {key} = {v!r} is not finite")
    if all(k in header for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")) and \
            header["CD1_1"] * header["CD2_2"] - header["CD1_2"] * header["CD2_1"] == 0:
        raise MosaicError(f"{source}: the WCS's CD matrix is singular (determinant 0)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(wcs_header(header), relax=True)
    except Exception as e:
        raise MosaicError(f"{source}: invalid WCS ({str(e).splitlines()[0]})") from None
    if not w.has_celestial:
        raise MosaicError(f"{source}: the WCS is not celestial (CTYPE {w.wcs.ctype[0]!r})")
    m = np.asarray(w.pixel_scale_matrix)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(w.wcs.crval))
            and np.all(np.isfinite(w.wcs.crpix)) and abs(np.linalg.det(m)) > 0):
        raise MosaicError(f"{source}: the WCS has non-finite or singular values")
    return w


def read_wcs_header(path):
    """The raw header that carries the WCS: the first image HDU's, else the primary's."""
    path = os.fspath(path)
    with open_fits(path, "WCS file") as hdul:
        candidates = [h for h in hdul[1:] if isinstance(h, (fits.ImageHDU, fits.CompImageHDU))]
        candidates = candidates[:1] + [hdul[0]]
        for hdu in candidates:
            if header_has_wcs(hdu.header):
                return hdu.header.copy()
        # name what is missing in the header that has the most of a WCS
        lacking = min((missing_wcs_keys(h.header) for h in candidates), key=len)
    if len(lacking) == 7:
        raise MosaicError(f"{path}: no WCS in the first image HDU nor in the primary header")
    raise MosaicError(f"{path}: no complete WCS in the first image HDU nor in the primary "
                      f"header (missing {', '.join(lacking)})")


def read_wcs_file(path):
    """The TAN-SIP WCS of a ``wcs-`` file (or of any afw exposure) as an astropy WCS."""
    path = os.fspath(path)
    return make_wcs(read_wcs_header(path), path)


def card_image(key, value, comment=None):
    """The 80-character image of a header card, formatted here rather than by astropy (whose
    Card costs ~40 us in configuration look-ups; a wcs- file has ~700 cards). Floats are exact
    (shortest repr, as :func:`float_card`); keys longer than 8 become HIERARCH cards."""
    if isinstance(value, (bool, np.bool_)):
        v, right = ("T" if value else "F"), True
    elif isinstance(value, (int, np.integer)):
        v, right = str(int(value)), True
    elif isinstance(value, (float, np.floating)):
        x = float(value)
        if not math.isfinite(x):
            raise ValueError(f"{key} = {value!r} is not finite")
        v = repr(x).upper()
        if "." not in v and "E" not in v:
            v += "."
        right = True
    else:
        s = str(value).replace("'", "''")
        if len(s) > 68:
            raise ValueError(f"{key}: string value too long for one card")
        v, right = "'" + s.ljust(8) + "'", False
    if len(key) > 8 or key.upper().startswith("HIERARCH "):
        k = key if key.upper().startswith("HIERARCH ") else "HIERARCH " + key
        image = f"{k} = {v}"
    else:
        image = f"{key:<8}= " + (f"{v:>20}" if right else f"{v:<20}")
    if comment:
        image += f" / {comment}"
    return image[:80].ljust(80)


def header_only_fits_bytes(hdus, tail=b""):
    """Bytes of a FITS file made of header-only HDUs (lists of card images; the first is the
    primary) followed by `tail` (complete, already padded HDUs). The mosaic writes thousands
    of such files; building them with astropy costs ~15 ms each, this ~1 ms."""
    out = []
    for cards in hdus:
        text = "".join(cards) + "END".ljust(80)
        text += " " * (-len(text) % 2880)
        out.append(text.encode("ascii"))
    return b"".join(out) + tail


def _afw_image_hdu_cards(exttype, bitpix, wcs_images, extra=()):
    cards = [card_image("XTENSION", "IMAGE", "IMAGE extension"),
             card_image("BITPIX", bitpix, "number of bits per data pixel"),
             card_image("NAXIS", 2, "number of data axes"),
             card_image("NAXIS1", 0, "length of data axis 1"),
             card_image("NAXIS2", 0, "length of data axis 2"),
             card_image("PCOUNT", 0, "required keyword; must = 0"),
             card_image("GCOUNT", 1, "required keyword; must = 1")]
    cards += list(wcs_images)
    cards += [card_image("LTV1", 0.0), card_image("LTV2", 0.0), card_image("INHERIT", True),
              card_image("EXTTYPE", exttype)]
    cards += list(extra)
    cards += [card_image("CRVAL1A", 0, "Column pixel of Reference Pixel"),
              card_image("CRVAL2A", 0, "Row pixel of Reference Pixel"),
              card_image("CRPIX1A", 1, "Column Pixel Coordinate of Reference"),
              card_image("CRPIX2A", 1, "Row Pixel Coordinate of Reference"),
              card_image("CTYPE1A", "LINEAR", "Type of projection"),
              card_image("CTYPE2A", "LINEAR", "Type of projection"),
              card_image("CUNIT1A", "PIXEL", "Column unit"),
              card_image("CUNIT2A", "PIXEL", "Row unit")]
    return cards


def afw_header_only_exposure(primary_cards, wcs_images=(), mask_planes=None, tail=b""):
    """Bytes of an afw exposure with 0x0 pixels (primary, IMAGE, MASK, VARIANCE), the WCS
    card images in all three image headers, as meas_mosaic's wcs-/fcr- files."""
    from .exposure import DEFAULT_MASK_PLANES
    primary = [card_image("SIMPLE", True, "conforms to FITS standard"),
               card_image("BITPIX", 8, "array data type"),
               card_image("NAXIS", 0, "number of array dimensions"),
               card_image("EXTEND", True)] + list(primary_cards)
    planes = [card_image(f"MP_{name}", int(bit)) for name, bit in
              sorted((mask_planes or DEFAULT_MASK_PLANES).items(), key=lambda x: x[1])]
    return header_only_fits_bytes([
        primary,
        _afw_image_hdu_cards("IMAGE", -32, wcs_images),
        _afw_image_hdu_cards("MASK", 32, wcs_images, planes),
        _afw_image_hdu_cards("VARIANCE", -32, wcs_images)], tail)


_REQUIRED_WCS = ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")


def write_wcs_file(path, header_or_wcs, fluxmag0=0.0, fluxmag0err=0.0, filter_name="_unknown_"):
    """Write a ``wcs-`` file (atomically): primary with FILTER/FLUXMAG0/FLUXMAG0ERR, then 0x0
    IMAGE/MASK/VARIANCE HDUs carrying the TAN-SIP cards (as meas_mosaic's files do, without
    the afw archive copy of the WCS)."""
    from .atomic import atomic_path
    path = os.fspath(path)
    if isinstance(header_or_wcs, str):      # card images, as sip.fit_tan_sip(with_text=True)
        header_or_wcs = fits.Header.fromstring(header_or_wcs)
    if isinstance(header_or_wcs, fits.Header):
        cards = [c for c in header_or_wcs.cards if is_wcs_keyword(c.keyword)]
    else:
        cards = list(_header_from_wcs(header_or_wcs).cards)
    values = {c.keyword: c for c in cards}
    for key in _REQUIRED_WCS:       # refuse to write something unreadable
        v = values[key].value if key in values else None
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MosaicError(f"{path}: refusing to write a WCS whose {key} is {v!r}")
    wcs_images = [c._image if getattr(c, "_image", None) and not c._modified else c.image
                  for c in cards]          # as read or formatted: no re-parsing
    data = afw_header_only_exposure(
        [card_image("FILTER", filter_name), card_image("FLUXMAG0", float(fluxmag0)),
         card_image("FLUXMAG0ERR", float(fluxmag0err))], wcs_images)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
