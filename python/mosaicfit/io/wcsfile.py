"""The mosaic's ``wcs-VVVVVVV-CCC.fits`` files (and the WCS of any afw exposure).

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

from astropy.io import fits

from .. import MosaicError
from .atomic import write_bytes
from .corr import afw_header_only_exposure
from .fits import (card_image, header_has_wcs, is_wcs_keyword, make_wcs, missing_wcs_keys,
                   open_fits, wcs_header)

__all__ = ["read_wcs_file", "read_wcs_header", "write_wcs_file", "wcs_file_bytes"]

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


_REQUIRED_WCS = ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)(E[+-]?\d+)?$")


def _wcs_images_of_text(text):
    """The WCS cards of card text written by model.sip.cards_text, in order, as a list of
    card-image strings, without astropy (Header.fromstring + wcs_header cost ~25 ms for a
    SIP of order 12; this ~0.1 ms); None unless every card is a plain one-line card and the
    required numbers are finite plain numbers (then the astropy path decides, and names what
    is wrong)."""
    if len(text) % 80 or not text.isascii():
        return None
    images = [text[i:i + 80] for i in range(0, len(text), 80)]
    keep, values = [], {}
    for image in images:
        if image[8:10] != "= ":
            return None
        key = image[:8].rstrip()
        if not is_wcs_keyword(key):
            continue
        keep.append(image)
        if key in _REQUIRED_WCS:
            values[key] = image[10:].partition(" /")[0].strip()
    for key in _REQUIRED_WCS:
        v = values.get(key)
        if v is None or not _PLAIN_NUMBER.match(v) or not math.isfinite(float(v)):
            return None
    return [text] if len(keep) == len(images) else keep


def write_wcs_file(path, header_or_wcs, fluxmag0=0.0, fluxmag0err=0.0, filter_name="_unknown_",
                   extra=()):
    """Write a ``wcs-`` file (atomically): primary with FILTER/FLUXMAG0/FLUXMAG0ERR (and the
    `extra` (key, value, comment) cards, or their card images: mosaicfit's own, documented
    in the README), then 0x0
    IMAGE/MASK/VARIANCE HDUs carrying the TAN-SIP cards (as meas_mosaic's files do, without
    the afw archive copy of the WCS)."""
    path = os.fspath(path)
    write_bytes(wcs_file_bytes(header_or_wcs, fluxmag0, fluxmag0err, filter_name, extra, path),
                path)


def wcs_file_bytes(header_or_wcs, fluxmag0=0.0, fluxmag0err=0.0, filter_name="_unknown_",
                   extra=(), path="wcs- file", checked=False):
    """The bytes :func:`write_wcs_file` writes (made once for a product written into several
    tract folders); `path` names the file in the errors. `checked`: `header_or_wcs` is card
    text of WCS cards only, with finite numbers (model.sip.SipFit.card_text, whose C++
    formatter refuses non-finite values), written as it is."""
    if checked and isinstance(header_or_wcs, str):
        wcs_images = [header_or_wcs]
    else:
        wcs_images = _wcs_images_of_text(header_or_wcs) if isinstance(header_or_wcs, str) \
            else None
    if wcs_images is None:
        if isinstance(header_or_wcs, str):  # card images, as model.sip.cards_text gives them
            header_or_wcs = fits.Header.fromstring(header_or_wcs)
        cards = list(wcs_header(header_or_wcs).cards)
        values = {c.keyword: c for c in cards}
        for key in _REQUIRED_WCS:       # refuse to write something unreadable
            v = values[key].value if key in values else None
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise MosaicError(f"{path}: refusing to write a WCS whose {key} is {v!r}")
        wcs_images = [c._image if getattr(c, "_image", None) and not c._modified else c.image
                      for c in cards]          # as read or formatted: no re-parsing
    data = afw_header_only_exposure(
        [card_image("FILTER", filter_name), card_image("FLUXMAG0", float(fluxmag0)),
         card_image("FLUXMAG0ERR", float(fluxmag0err))]
        + [c if isinstance(c, str) else card_image(*c) for c in extra], wcs_images)
    return data
