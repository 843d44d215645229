"""afw exposures: hscPipe's calibrated exposures (``CORR-VVVVVVV-CCC.fits``), the calibrated
ones calibrateExposure.py writes (``CALEXP-VVVVVVV-CCC.fits``) and the header-only exposures
of meas_mosaic's ``wcs-``/``fcr-`` files.

- HDU 0: primary header with the exposure metadata (``FLUXMAG0``, ``FLUXMAG0ERR``, ``FILTER``,
  ``EXPTIME``... all passed through);
- HDU 1: the image (float32, ``EXTTYPE='IMAGE'``) whose header carries the single-frame
  TAN-SIP WCS, ``LTV1/2`` and afw's 'A' pixel WCS (``CTYPE1A='LINEAR'``...);
- HDU 2: the mask (int32, or uint16 stored as BITPIX 16 + BZERO 32768 by older afw;
  ``EXTTYPE='MASK'``) with the plane bits in ``MP_<NAME>`` keys;
- HDU 3: the variance (float32, ``EXTTYPE='VARIANCE'``).

afw also puts the WCS cards in the mask and variance headers; a 0x0 image (NAXIS1 = NAXIS2 = 0)
is how afw stores an exposure that has only metadata (e.g. meas_mosaic's ``wcs-``/``fcr-``
files). Arrays are indexed [y, x]; pixel (x, y) = (0, 0) is the first pixel (afw convention).
"""
import functools
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from .. import MosaicError
from .atomic import write_bytes, write_fits
from .fits import (BLOCK, STRUCTURAL_KEYS, astropy_card_image, astropy_image_of, card_image,
                   data_bytes, hdu_bytes, header_has_wcs, header_only_fits_bytes,
                   is_wcs_keyword, make_wcs, native, open_fits, read_headers, strip_wcs,
                   wcs_header)

__all__ = ["Exposure", "read_corr", "write_corr", "read_corr_header", "exposure_hdulist",
           "afw_header_only_exposure", "DEFAULT_MASK_PLANES"]

#: afw's default mask planes (the bits of hscPipe CORR masks)
DEFAULT_MASK_PLANES = {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5,
                       "DETECTED_NEGATIVE": 6, "SUSPECT": 7, "NO_DATA": 8}

_EXTTYPES = ("IMAGE", "MASK", "VARIANCE")


def _float_key(header, key, source):
    """A non-negative finite number from the header, None if the key is absent."""
    if key not in header:
        return None
    v = header[key]
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise MosaicError(f"{source}: {key} = {v!r} is not a number") from None
    if not math.isfinite(f) or f < 0:
        raise MosaicError(f"{source}: {key} = {v!r} is not a non-negative finite number")
    return f


@dataclass(eq=False)
class Exposure:
    """A calibrated CCD exposure: pixels (None for a 0x0 / metadata-only exposure), the primary
    header, the HDU-1 header with the WCS cards, and the mask plane bits."""

    image: np.ndarray = None
    mask: np.ndarray = None
    variance: np.ndarray = None
    header: fits.Header = field(default_factory=fits.Header)
    wcs_header: fits.Header = field(default_factory=fits.Header)
    mask_planes: dict = field(default_factory=lambda: dict(DEFAULT_MASK_PLANES))
    path: str = None

    @property
    def source(self):
        """Name for messages: the path of the file, or "exposure"."""
        return self.path or "exposure"

    @property
    def wcs(self):
        """The single-frame WCS (astropy.wcs.WCS, SIP included); pixel origin 0 in astropy's
        ``*_pix2world(x, y, 0)`` is afw's pixel 0."""
        return make_wcs(self.wcs_header, self.source)

    @property
    def fluxmag0(self):
        """Flux of a 0-mag source (counts); None if the exposure has no photometric
        calibration (no FLUXMAG0, or afw's unset value 0)."""
        v = _float_key(self.header, "FLUXMAG0", self.source)
        return v if v else None

    @property
    def fluxmag0err(self):
        """FLUXMAG0ERR of the primary header (counts of a 0-mag source); None if absent."""
        return _float_key(self.header, "FLUXMAG0ERR", self.source)

    @property
    def filter(self):
        """FILTER of the primary header without surrounding blanks; None if absent."""
        v = self.header.get("FILTER")
        return None if v is None else str(v).strip()

    @property
    def exptime(self):
        """EXPTIME of the primary header (seconds); None if absent."""
        return _float_key(self.header, "EXPTIME", self.source)

    @property
    def shape(self):
        """(height, width) of the pixel arrays: from the image, else from the HDU-1 header."""
        if self.image is not None:
            return tuple(self.image.shape)
        h = self.wcs_header
        if int(h.get("NAXIS", 0)) >= 2:
            return (int(h.get("NAXIS2", 0)), int(h.get("NAXIS1", 0)))
        return (0, 0)

    def set_wcs(self, header_or_wcs):
        """Replace the WCS cards of the HDU-1 header (a header's cards, or an astropy WCS)."""
        cards = wcs_header(header_or_wcs)
        make_wcs(cards, self.source)
        rest = strip_wcs(self.wcs_header)
        new = fits.Header()
        for card in cards.cards:
            new.append(card)
        for card in rest.cards:
            new.append(card)
        self.wcs_header = new


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _afw_pixel_cards():
    """afw's alternate 'A' WCS: the pixel coordinates of the parent image (xy0 = 0)."""
    return [fits.Card("CRVAL1A", 0, "Column pixel of Reference Pixel"),
            fits.Card("CRVAL2A", 0, "Row pixel of Reference Pixel"),
            fits.Card("CRPIX1A", 1, "Column Pixel Coordinate of Reference"),
            fits.Card("CRPIX2A", 1, "Row Pixel Coordinate of Reference"),
            fits.Card("CTYPE1A", "LINEAR", "Type of projection"),
            fits.Card("CTYPE2A", "LINEAR", "Type of projection"),
            fits.Card("CUNIT1A", "PIXEL", "Column unit"),
            fits.Card("CUNIT2A", "PIXEL", "Row unit")]


def _hdu_header(exttype, base=None, wcs_cards=None, mask_planes=None):
    """Header cards of an afw image/mask/variance HDU: `base` (non-structural cards passed
    through) or else the WCS cards, then LTV1/2, INHERIT, EXTTYPE, MP_* and the 'A' cards,
    each added only if missing."""
    h = fits.Header()
    src = base if base is not None else (wcs_cards if wcs_cards is not None else fits.Header())
    for card in src.cards:
        k = card.keyword
        if STRUCTURAL_KEYS.match(k) or k in ("EXTEND", "XTENSION", "SIMPLE") or \
                (exttype != "MASK" and k.startswith("MP_")):
            continue
        h.append(card)
    if base is not None and wcs_cards is not None:
        h = strip_wcs(h)
        new = fits.Header()
        for card in list(wcs_cards.cards) + list(h.cards):
            new.append(card)
        h = new
    for key, value in (("LTV1", 0.0), ("LTV2", 0.0), ("INHERIT", True)):
        if key not in h:
            h.append(fits.Card(key, value))
    if "EXTTYPE" in h:
        h["EXTTYPE"] = exttype
    else:
        h.append(fits.Card("EXTTYPE", exttype))
    if exttype == "MASK":
        for name, bit in sorted((mask_planes or DEFAULT_MASK_PLANES).items(), key=lambda x: x[1]):
            key = f"MP_{name}"
            full = key if len(key) <= 8 else f"HIERARCH {key}"
            if key not in h:
                h.append(fits.Card(full, int(bit)))
    for card in _afw_pixel_cards():
        if card.keyword not in h:
            h.append(card)
    return h


def _image_hdu(data, dtype, header):
    if data is None:
        data = np.zeros((0, 0), dtype=dtype)
    else:
        data = np.asarray(data)
        if data.ndim != 2:
            raise ValueError(f"pixel arrays must be 2-D, not {data.ndim}-D")
        if data.dtype != dtype:
            data = data.astype(dtype)
    hdu = fits.ImageHDU(data=data)
    for card in header.cards:
        hdu.header.append(card)
    return hdu


def exposure_hdulist(primary_header, image, mask, variance, image_header=None, wcs_cards=None,
                     mask_planes=None):
    """The HDUList of an afw exposure: primary (cards of `primary_header`), IMAGE (float32),
    MASK (int32, or uint16 if given so) and VARIANCE (float32). `image_header` is passed
    through to HDU 1; `wcs_cards` (default: the WCS cards of `image_header`) go to all three
    image HDUs, as afw writes them. None arrays are written 0x0."""
    primary = fits.PrimaryHDU()
    for card in (primary_header or fits.Header()).cards:
        if STRUCTURAL_KEYS.match(card.keyword) or card.keyword in ("EXTEND",):
            continue
        primary.header.append(card)
    if wcs_cards is None and image_header is not None:
        wcs_cards = wcs_header(image_header)
    img_h = _hdu_header("IMAGE", base=image_header, wcs_cards=wcs_cards)
    msk_h = _hdu_header("MASK", wcs_cards=wcs_cards, mask_planes=mask_planes)
    var_h = _hdu_header("VARIANCE", wcs_cards=wcs_cards)
    mask_dtype = np.uint16 if (mask is not None and np.asarray(mask).dtype == np.uint16) \
        else np.int32
    shapes = {np.shape(a) for a in (image, mask, variance) if a is not None}
    if len(shapes) > 1:
        raise ValueError(f"image, mask and variance shapes differ: {sorted(shapes)}")
    return fits.HDUList([primary,
                         _image_hdu(image, np.float32, img_h),
                         _image_hdu(mask, mask_dtype, msk_h),
                         _image_hdu(variance, np.float32, var_h)])


def write_corr(path, exposure, archive_from=None):
    """Write an Exposure in the CORR layout (atomically, byte-reproducibly): image and variance
    as float32, mask as int32 (uint16 masks stay uint16), the WCS in all three image headers.

    `archive_from`: a CORR file whose afw archive HDUs (PSF, aperture corrections...) follow,
    copied byte for byte, as hscPipe's CALEXP keeps the CORR's; the ``AR_HDU`` pointer is kept
    valid, or removed when no archive is written.
    """
    path = os.fspath(path)
    header = exposure.header.copy()
    raw, first = _archive_bytes(archive_from) if archive_from is not None else (b"", 0)
    ar = header.get("AR_HDU")
    if raw and isinstance(ar, int) and not isinstance(ar, bool):
        header["AR_HDU"] = ar - first + 4             # HDU numbers are 1-based
    else:
        header.remove("AR_HDU", ignore_missing=True)  # no archive written: it would dangle
    fast = _exposure_bytes(header, exposure)
    if fast is not None:
        write_bytes(fast + raw, path)
        return
    hdul = exposure_hdulist(header, exposure.image, exposure.mask, exposure.variance,
                            image_header=exposure.wcs_header,
                            wcs_cards=wcs_header(exposure.wcs_header)
                            if header_has_wcs(exposure.wcs_header) else None,
                            mask_planes=exposure.mask_planes)
    write_fits(hdul, path, tail=raw)


# The bytes write_fits(exposure_hdulist(...)) writes, built card by card (io.fits.hdu_bytes):
# the simulator writes ~1000 CORR files of ~300 cards each, ~40 ms each through astropy. Only
# the common case is built here: value cards only (no blank or commentary cards, whose
# placement astropy's Header.append decides), float32/int32 pixels; anything else goes through
# astropy, as before.
_FAST_DTYPES = {np.dtype(np.float32): -32, np.dtype(np.int32): 32}
_NO_FAST_KEYS = ("", "COMMENT", "HISTORY", "CONTINUE")
_CONSTANT_IMAGES = {}


def _constant_images(name, make):
    out = _CONSTANT_IMAGES.get(name)
    if out is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = _CONSTANT_IMAGES[name] = make()
    return out


def _pixel_part(data, dtype):
    """(BITPIX, NAXIS1, NAXIS2, big-endian bytes) of an image plane, None if not fast."""
    if data is None:
        return _FAST_DTYPES[np.dtype(dtype)], 0, 0, b""
    data = np.asarray(data)
    if data.ndim != 2:
        return None
    if data.dtype != dtype:
        if dtype == np.int32 and data.dtype == np.uint16:
            return None
        data = data.astype(dtype)
    return (_FAST_DTYPES[np.dtype(dtype)], data.shape[1], data.shape[0],
            data.astype(data.dtype.newbyteorder(">"), copy=False).tobytes())


def _exposure_bytes(header, exposure):
    image_header = exposure.wcs_header
    cards = list(header.cards)
    base = list(image_header.cards) if image_header is not None else []
    if any(c.keyword in _NO_FAST_KEYS for c in cards) or \
            any(c.keyword in _NO_FAST_KEYS for c in base):
        return None
    planes = (exposure.image, exposure.mask, exposure.variance)
    if exposure.mask is not None and np.asarray(exposure.mask).dtype == np.uint16:
        return None
    shapes = {np.shape(a) for a in planes if a is not None}
    if len(shapes) > 1:
        return None                     # the astropy path raises the error
    parts = [_pixel_part(a, t) for a, t in zip(planes, (np.float32, np.int32, np.float32))]
    if any(p is None for p in parts):
        return None
    memo = {}

    def image_of(card):
        k = id(card)
        if k not in memo:
            memo[k] = astropy_image_of(card)
        return memo[k]

    primary = list(_constant_images("primary", lambda: [
        c.image for c in fits.PrimaryHDU().header.cards]))
    for card in cards:
        if STRUCTURAL_KEYS.match(card.keyword) or card.keyword == "EXTEND":
            continue
        primary.append(image_of(card))
    # exposure_hdulist puts the WCS cards of the image header (all of them, even an incomplete
    # WCS) first in the image header and in the mask and variance headers
    wcs_cards = [c for c in base if is_wcs_keyword(c.keyword)]
    out = [hdu_bytes(primary)]
    for (bitpix, nx, ny, raw), exttype in zip(parts, _EXTTYPES):
        src = base if exttype == "IMAGE" else wcs_cards
        h = []
        for card in src:
            k = card.keyword
            if STRUCTURAL_KEYS.match(k) or k in ("EXTEND", "XTENSION", "SIMPLE") or \
                    (exttype != "MASK" and k.startswith("MP_")):
                continue
            h.append((k, card))
        if exttype == "IMAGE":
            h = [(c.keyword, c) for c in wcs_cards] + \
                [(k, c) for k, c in h if not is_wcs_keyword(k)]
        keys = {k for k, _ in h}
        h = [(k, image_of(c)) for k, c in h]
        for key, value in (("LTV1", 0.0), ("LTV2", 0.0), ("INHERIT", True)):
            if key not in keys:
                h.append((key, astropy_card_image(key, value)))
        if "EXTTYPE" in keys:
            i = next(i for i, (k, _) in enumerate(h) if k == "EXTTYPE")
            old = next(c for c in src if c.keyword == "EXTTYPE")
            h[i] = ("EXTTYPE", astropy_card_image("EXTTYPE", exttype, old.comment))
        else:
            h.append(("EXTTYPE", astropy_card_image("EXTTYPE", exttype)))
        keys = {k for k, _ in h}
        if exttype == "MASK":
            for name, bit in sorted((exposure.mask_planes or DEFAULT_MASK_PLANES).items(),
                                    key=lambda x: x[1]):
                key = f"MP_{name}"
                full = key if len(key) <= 8 else f"HIERARCH {key}"
                if key not in keys:
                    h.append((key, astropy_card_image(full, int(bit))))
        for card, image in _constant_images("A", lambda: [(c, c.image)
                                                          for c in _afw_pixel_cards()]):
            if card.keyword not in keys:
                h.append((card.keyword, image))
        struct = [astropy_card_image("XTENSION", "IMAGE", "Image extension"),
                  astropy_card_image("BITPIX", bitpix, "array data type"),
                  astropy_card_image("NAXIS", 2, "number of array dimensions"),
                  astropy_card_image("NAXIS1", nx), astropy_card_image("NAXIS2", ny),
                  astropy_card_image("PCOUNT", 0, "number of parameters"),
                  astropy_card_image("GCOUNT", 1, "number of groups")]
        out.append(hdu_bytes(struct + [im for _, im in h], raw))
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _find_hdus(hdul):
    """Indices of the IMAGE, MASK and VARIANCE HDUs: by EXTTYPE, else HDUs 1, 2, 3."""
    found = {}
    for i, hdu in enumerate(hdul):
        t = str(hdu.header.get("EXTTYPE", "")).strip().upper()
        if t in _EXTTYPES and t not in found:
            found[t] = i
    for k, t in enumerate(_EXTTYPES):
        if t not in found and k + 1 < len(hdul) and \
                str(hdul[k + 1].header.get("EXTTYPE", "")).strip().upper() in ("", t):
            found[t] = k + 1
    return found


def _pixels(hdul, index, path, what):
    hdu = hdul[index]
    if not isinstance(hdu, (fits.ImageHDU, fits.PrimaryHDU, fits.CompImageHDU)):
        raise MosaicError(f"{path}: HDU {index} ({what}) is not an image")
    try:
        data = hdu.data
    except Exception as e:
        raise MosaicError(f"{path}: cannot read the {what} pixels ({e})") from None
    if data is None or data.size == 0:
        return None
    if data.ndim != 2:
        raise MosaicError(f"{path}: the {what} is {data.ndim}-D, expected 2-D")
    return native(data)


def read_corr(path, metadata_only=False):
    """Read a CORR file into an Exposure. With `metadata_only` only the headers are read.

    Errors (missing, not FITS, truncated, no image HDU, no WCS, FLUXMAG0/FLUXMAG0ERR/EXPTIME
    not non-negative finite numbers, inconsistent pixel arrays) raise MosaicError naming the
    file.
    """
    path = os.fspath(path)
    with open_fits(path, "calexp (CORR) file") as hdul:
        idx = _find_hdus(hdul)
        if "IMAGE" not in idx:
            raise MosaicError(f"{path}: no image HDU (the file has only a primary header)")
        primary = hdul[0].header.copy()
        img_header = hdul[idx["IMAGE"]].header.copy()
        mask_header = hdul[idx["MASK"]].header if "MASK" in idx else fits.Header()
        planes = {k[3:]: int(v) for k, v in mask_header.items() if k.startswith("MP_")}
        _float_key(primary, "FLUXMAG0", path)
        _float_key(primary, "FLUXMAG0ERR", path)
        _float_key(primary, "EXPTIME", path)
        if not header_has_wcs(img_header):
            if header_has_wcs(primary):
                merged = wcs_header(primary)
                for card in img_header.cards:
                    merged.append(card)
                img_header = merged
            else:
                raise MosaicError(f"{path}: no WCS in the image header (HDU {idx['IMAGE']}) "
                                  "nor in the primary header")
        make_wcs(img_header, path)
        exp = Exposure(header=primary, wcs_header=img_header,
                       mask_planes=planes or dict(DEFAULT_MASK_PLANES), path=path)
        if metadata_only:
            return exp
        for t in ("MASK", "VARIANCE"):
            if t not in idx:
                raise MosaicError(f"{path}: no {t} HDU")
        exp.image = _pixels(hdul, idx["IMAGE"], path, "image")
        exp.mask = _pixels(hdul, idx["MASK"], path, "mask")
        exp.variance = _pixels(hdul, idx["VARIANCE"], path, "variance")
    shapes = {a.shape for a in (exp.image, exp.mask, exp.variance) if a is not None}
    nonnull = sum(a is not None for a in (exp.image, exp.mask, exp.variance))
    if len(shapes) > 1 or nonnull not in (0, 3):
        got = ", ".join(f"{n} {'0x0' if a is None else 'x'.join(map(str, a.shape[::-1]))}"
                        for n, a in (("image", exp.image), ("mask", exp.mask),
                                     ("variance", exp.variance)))
        raise MosaicError(f"{path}: image, mask and variance sizes differ ({got})")
    if exp.mask is not None and exp.mask.dtype.kind not in "iu":
        raise MosaicError(f"{path}: the mask is {exp.mask.dtype}, expected integers")
    return exp


# --------------------------------------------------------------------------------------------
# Fast metadata reading (the mosaic fit reads thousands of CORR headers)
# --------------------------------------------------------------------------------------------

def _raw_header_bytes(f, path):
    blocks = []
    while True:
        block = f.read(BLOCK)
        if len(block) < BLOCK:
            raise MosaicError(f"{path}: truncated FITS header")
        blocks.append(block)
        for i in range(0, BLOCK, 80):
            if block[i:i + 3] == b"END" and block[i + 3:i + 80].strip() == b"":
                return b"".join(blocks)
        if len(blocks) > 2000:
            raise MosaicError(f"{path}: no END card in the FITS header")


def read_corr_header(path, lean=False):
    """(primary header, WCS header) of a CORR file, reading only its first two headers: ~20
    times faster than :func:`read_corr` with metadata_only, for the mosaic fit's thousands of
    CCDs. The WCS cards (in HDU 1, else the primary) are checked to be present and finite.
    With `lean`, a well-formed file's headers come as :class:`mosaicfit.io.fits.Header`
    (get, [], in, tostring), which costs a tenth of building astropy Headers."""
    path = os.fspath(path)
    fast = read_headers(path, max_hdus=2)     # well-formed files; astropy judges the rest
    if fast is not None and len(fast) == 2:
        h0, h1 = (h if lean else fits.Header.fromstring(h.text) for h, _, _ in fast)
    else:
        h0, h1 = _read_corr_header_astropy(path)
    return _check_corr_header(path, h0, h1)


def _read_corr_header_astropy(path):
    try:
        with open(path, "rb") as f:
            raw0 = _raw_header_bytes(f, path)
            if not raw0.startswith(b"SIMPLE  ="):
                raise MosaicError(f"{path}: not a FITS file")
            h0 = fits.Header.fromstring(raw0.decode("ascii", "replace"))
            f.seek(data_bytes(h0, padded=True) or 0, os.SEEK_CUR)
            raw1 = _raw_header_bytes(f, path)
            h1 = fits.Header.fromstring(raw1.decode("ascii", "replace"))
        for h in (h0, h1):      # astropy parses card values lazily: parse them all here
            for card in h.cards:
                try:
                    card.value
                except (ValueError, fits.VerifyError):
                    key = card.image[:8].strip()
                    raise MosaicError(f"{path}: unreadable FITS header: unparsable card "
                                      f"{key!r}") from None
    except FileNotFoundError:
        raise MosaicError(f"{path}: no such file") from None
    except (OSError, ValueError, fits.VerifyError) as e:
        msg = " ".join(str(e).split())          # one line
        raise MosaicError(f"{path}: unreadable FITS header: {msg}") from None
    return h0, h1


def _check_corr_header(path, h0, h1):
    for key in ("FLUXMAG0", "FLUXMAG0ERR", "EXPTIME"):
        _float_key(h0, key, path)
    wh = h1 if header_has_wcs(h1) else (h0 if header_has_wcs(h0) else None)
    if wh is None:
        raise MosaicError(f"{path}: no WCS in the image header (HDU 1) nor in the primary header")
    for key in ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2"):
        v = wh.get(key)
        if not isinstance(v, (int, float)) or not np.isfinite(v):
            raise MosaicError(f"{path}: WCS keyword {key} is missing or not a finite number")
    if not all(k in wh for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")):
        raise MosaicError(f"{path}: the WCS has no CD matrix (CD1_1..CD2_2)")
    return h0, wh


def _afw_image_hdu_cards(exttype, bitpix, wcs_images, extra=()):
    head, tail = _afw_image_hdu_fixed(exttype, bitpix)
    return [head, *wcs_images, tail[0], *extra, tail[1]]


@functools.lru_cache(maxsize=None)
def _afw_image_hdu_fixed(exttype, bitpix):
    """The fixed cards of an afw image HDU without pixels, as text: (those before the WCS,
    (those between it and `extra`, those after `extra`)); made once (a mosaic writes
    thousands of these headers)."""
    head = [card_image("XTENSION", "IMAGE", "IMAGE extension"),
            card_image("BITPIX", bitpix, "number of bits per data pixel"),
            card_image("NAXIS", 2, "number of data axes"),
            card_image("NAXIS1", 0, "length of data axis 1"),
            card_image("NAXIS2", 0, "length of data axis 2"),
            card_image("PCOUNT", 0, "required keyword; must = 0"),
            card_image("GCOUNT", 1, "required keyword; must = 1")]
    mid = [card_image("LTV1", 0.0), card_image("LTV2", 0.0), card_image("INHERIT", True),
           card_image("EXTTYPE", exttype)]
    end = [card_image("CRVAL1A", 0, "Column pixel of Reference Pixel"),
           card_image("CRVAL2A", 0, "Row pixel of Reference Pixel"),
           card_image("CRPIX1A", 1, "Column Pixel Coordinate of Reference"),
           card_image("CRPIX2A", 1, "Row Pixel Coordinate of Reference"),
           card_image("CTYPE1A", "LINEAR", "Type of projection"),
           card_image("CTYPE2A", "LINEAR", "Type of projection"),
           card_image("CUNIT1A", "PIXEL", "Column unit"),
           card_image("CUNIT2A", "PIXEL", "Row unit")]
    return "".join(head), ("".join(mid), "".join(end))


@functools.lru_cache(maxsize=None)
def _mask_plane_cards(planes):
    return "".join(card_image(f"MP_{name}", int(bit))
                   for name, bit in sorted(planes, key=lambda x: x[1]))


_PRIMARY_HEAD = "".join([card_image("SIMPLE", True, "conforms to FITS standard"),
                         card_image("BITPIX", 8, "array data type"),
                         card_image("NAXIS", 0, "number of array dimensions"),
                         card_image("EXTEND", True)])


def afw_header_only_exposure(primary_cards, wcs_images=(), mask_planes=None, tail=b""):
    """Bytes of an afw exposure with 0x0 pixels (primary, IMAGE, MASK, VARIANCE), the WCS
    card images in all three image headers, as meas_mosaic's wcs-/fcr- files."""
    primary = [_PRIMARY_HEAD, *primary_cards]
    planes = [_mask_plane_cards(tuple((mask_planes or DEFAULT_MASK_PLANES).items()))]
    return header_only_fits_bytes([
        primary,
        _afw_image_hdu_cards("IMAGE", -32, wcs_images),
        _afw_image_hdu_cards("MASK", 32, wcs_images, planes),
        _afw_image_hdu_cards("VARIANCE", -32, wcs_images)], tail)


def _archive_bytes(path):
    """The raw bytes of the HDUs after the image, mask and variance of an afw exposure file
    (its archive: PSF, aperture corrections...) and the 0-based index of the first of them."""
    with open_fits(path, "calexp (CORR) file") as hdul:
        idx = _find_hdus(hdul)
        first = max(idx.values()) + 1 if idx else len(hdul)
        if first >= len(hdul):
            return b"", first
        start = hdul[first].fileinfo()["hdrLoc"]
        last = hdul[-1]
        end = last.fileinfo()["datLoc"] + data_bytes(last.header, padded=True)
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(end - start)
    if len(raw) != end - start:
        raise MosaicError(f"{path}: truncated calexp (CORR) file (its archive HDUs)")
    return raw, first
