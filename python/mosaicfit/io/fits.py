"""FITS helpers shared by every file format of the package (mosaicfit.io).

- Opening a file with one-line errors (:func:`open_fits`): a truncated or corrupt file is
  named with what is wrong, never read as garbage.
- A fast reader of well-formed files (:func:`read_headers`, :func:`read_bintable`).
  astropy.io.fits parses every card value through several layers of its configuration and
  verification machinery (~40 us a card); a mosaic reads thousands of CCDs whose SRC and CORR
  headers have hundreds of cards (a real HSC SRC table ~1000), which made reading the largest
  phase of a run. Here the card images are parsed directly, in C++ (cpp/cards.hpp; FITS 4.0,
  section 4.2: fixed and free format values, CONTINUE long strings, HIERARCH keywords) and a
  binary table's rows are mapped with numpy. The reader is strict: anything unusual (a card it cannot parse, a
  truncated file, variable-length arrays, scaled columns) makes it return None, and the
  callers fall back to astropy, which also gives the error messages. So a file is either read
  here exactly as astropy would read it, or by astropy.
- Card images formatted directly (:func:`card_image`, exact floats) and header-only files
  (:func:`header_only_fits_bytes`): the mosaic writes thousands of small files.
- The cards of a celestial TAN(-SIP) WCS: which they are, what a header lacks, an astropy WCS
  from them with errors that name the card (:func:`make_wcs`).
"""
import functools
import math
import os
import re
import warnings

import numpy as np
from astropy.io import fits
from astropy.io.fits.card import UNDEFINED
from astropy.wcs import WCS

from .. import MosaicError, _core

#: bytes of a FITS block
BLOCK = 2880

__all__ = ["BLOCK", "STRUCTURAL_KEYS", "open_fits", "data_bytes", "native", "pad_block",
           "Card", "Header", "card_entries", "parse_header", "read_headers", "read_bintable",
           "card_image", "float_cards", "float_card", "truncated_card", "header_only_fits_bytes",
           "is_wcs_keyword", "header_has_wcs", "missing_wcs_keys", "strip_wcs", "wcs_header",
           "make_wcs"]


# --------------------------------------------------------------------------------------------
# opening with one-line errors
# --------------------------------------------------------------------------------------------

STRUCTURAL_KEYS = re.compile(r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|TFIELDS|"
                         r"CHECKSUM|DATASUM|BZERO|BSCALE)$")


def data_bytes(header, padded=False):
    """Bytes of the data section of the HDU that `header` describes, without the padding to
    2880 unless `padded`; None if its structural keywords are not valid."""
    naxis = header.get("NAXIS", 0)
    if isinstance(naxis, bool) or not isinstance(naxis, (int, np.integer)) or naxis < 0:
        return None
    if naxis == 0:
        return 0
    bitpix = header.get("BITPIX")
    if bitpix not in (8, 16, 32, 64, -32, -64):
        return None
    count = 1
    for k in range(1, naxis + 1):
        d = header.get(f"NAXIS{k}")
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            return None
        count *= int(d)
    pcount, gcount = header.get("PCOUNT", 0), header.get("GCOUNT", 1)
    if not isinstance(pcount, (int, np.integer)) or not isinstance(gcount, (int, np.integer)):
        return None
    n = abs(bitpix) // 8 * int(gcount) * (int(pcount) + count)
    return (n + BLOCK - 1) // BLOCK * BLOCK if padded else n


def open_fits(path, what="FITS file"):
    """Open a FITS file for reading, turning every failure into a one-line MosaicError.

    All headers are read at once; the data sections must lie inside the file, the last header
    must be complete and an afw archive pointer (AR_HDU) must point to an existing HDU, so that
    a truncated file is reported, not read as garbage. Data are read on access
    (``memmap=False``); close the returned HDUList when done.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MosaicError(f"{path}: no such file ({what})")
    if os.path.isdir(path):
        raise MosaicError(f"{path}: is a folder, not a {what}")
    size = os.path.getsize(path)
    if size == 0:
        raise MosaicError(f"{path}: empty file, not a {what}")
    try:
        with open(path, "rb") as f:
            looks_fits = f.read(9) == b"SIMPLE  ="
    except OSError as e:
        raise MosaicError(f"{path}: cannot read ({e.strerror})") from None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    except Exception as e:  # astropy raises OSError, ValueError, VerifyError...
        msg = str(e).strip().split("\n")[0]
        if looks_fits:
            raise MosaicError(f"{path}: truncated or corrupt {what} ({msg})") from None
        raise MosaicError(f"{path}: not a valid {what} ({msg})") from None
    try:
        for w in caught:
            text = str(w.message)
            if "Header size is not multiple" in text or "truncated" in text:
                raise MosaicError(f"{path}: truncated {what} (the last header is incomplete)")
        for i, hdu in enumerate(hdul):
            nbytes = data_bytes(hdu.header)
            if nbytes is None:
                raise MosaicError(f"{path}: corrupt {what} (HDU {i}: invalid NAXIS, BITPIX, "
                                  "PCOUNT or GCOUNT)")
            end = hdu.fileinfo()["datLoc"] + nbytes
            if end > size:
                raise MosaicError(f"{path}: truncated {what} (HDU {i} needs {end} bytes, "
                                  f"the file has {size})")
            for card in hdu.header.cards:    # astropy parses values lazily: all of them now
                try:
                    card.value
                except (ValueError, fits.VerifyError):
                    raise MosaicError(f"{path}: corrupt {what} (HDU {i}: unparsable header card "
                                      f"{card.image[:8].strip()!r})") from None
            ar = hdu.header.get("AR_HDU")
            if isinstance(ar, int) and not isinstance(ar, bool) and ar > len(hdul):
                raise MosaicError(f"{path}: truncated {what} (AR_HDU = {ar} but the file has "
                                  f"{len(hdul)} HDUs)")
    except MosaicError:
        hdul.close()
        raise
    except Exception as e:
        hdul.close()
        msg = " ".join(str(e).split())
        raise MosaicError(f"{path}: not a valid {what} ({msg})") from None
    return hdul


def native(a):
    """A native-byte-order copy/view of an array (FITS data are big-endian)."""
    a = np.asarray(a)
    if a.dtype.byteorder not in ("=", "|") and a.dtype.kind != "b":
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def truncated_card(key, value, comment):
    """A card with `comment` cut to what fits in 80 characters (as cfitsio does)."""
    if not comment:
        return fits.Card(key, value)
    probe = fits.Card(key, value, "x")
    img = probe.image
    if len(img) > 80:            # a long string value (CONTINUE cards): no comment
        return fits.Card(key, value)
    pos = img.rstrip().rfind(" / x")
    room = 80 - pos - 3
    if room <= 0:
        return fits.Card(key, value)
    return fits.Card(key, value, comment[:room])


def pad_block(b, fill=b"\0"):
    """`b` padded to a whole number of FITS blocks."""
    return b + fill * (-len(b) % BLOCK)


# --------------------------------------------------------------------------------------------
# the fast reader of well-formed files
# --------------------------------------------------------------------------------------------

_COMMENTARY = ("COMMENT", "HISTORY", "")


class Card:
    """One header card: keyword, value (str, bool, int, float, complex, astropy's UNDEFINED)
    and comment, as astropy's Card gives them."""
    __slots__ = ("keyword", "value", "comment")

    def __init__(self, keyword, value, comment=""):
        self.keyword, self.value, self.comment = keyword, value, comment


class Header:
    """The cards of one HDU: the read-only mapping part of astropy's Header interface (get,
    [], in, keys, cards) plus the raw card images (`text`). Pickled as its text, and parsed
    again only when its cards are asked for: the -j readers send ~20000 single-frame WCS
    headers to the fit, which reads them as its own SipModel. The parsed cards are kept as
    (keyword, value, comment) tuples (:meth:`entries`); the Card objects are made only when
    asked for (a reader's ~50000 cards a second had spent a fifth of its time on them)."""

    def __init__(self, entries, text):
        self._entries = entries
        self._cards = None
        self.text = text
        self._index_map = None

    def entries(self):
        """The cards as (keyword, value, comment) tuples, in order."""
        if self._entries is None:
            self._entries = parse_header(self.text)._entries
        return self._entries

    @property
    def cards(self):
        if self._cards is None:
            self._cards = [Card(*c) for c in self.entries()]
        return self._cards

    @property
    def _index(self):
        index = self._index_map
        if index is None:
            index = {}
            for keyword, value, _ in self.entries():
                if keyword not in _COMMENTARY:
                    # as astropy: the card's value is UNDEFINED, the header's None
                    index.setdefault(keyword.upper(), None if value is UNDEFINED else value)
            self._index_map = index
        return index

    def __reduce__(self):
        return Header, (None, self.text)

    def __contains__(self, key):
        return key.upper() in (self._index_map or self._index)

    def __getitem__(self, key):
        return (self._index_map or self._index)[key.upper()]

    def get(self, key, default=None):
        """Value of `key` (case-insensitive; first card of a repeated keyword), else `default`."""
        return (self._index_map or self._index).get(key.upper(), default)

    def keys(self):
        """Keywords of all cards in order, commentary and repeated ones included."""
        return [c[0] for c in self.entries()]

    def __len__(self):
        return len(self.entries())

    def tostring(self):
        """The raw card images, as read."""
        return self.text

    def to_astropy(self):
        """The header as an astropy.io.fits.Header, parsed from the card images."""
        return fits.Header.fromstring(self.text)


def card_entries(header):
    """(keyword, value, comment) of each card of `header`: a :class:`Header`'s own tuples, or
    an astropy Header's cards."""
    if isinstance(header, Header):
        return header.entries()
    return [(c.keyword, c.value, c.comment) for c in header.cards]


def parse_header(text):
    """Cards of header text (80-character card images up to END): a Header, or None if a card
    is not standard FITS (the caller then lets astropy judge the file). The card images are
    parsed in C++ (cpp/cards.hpp: the grammar of FITS 4.0 section 4.2, ~0.1 us a card where a
    regular expression per card took ~3 us; a real HSC SRC header has ~1000 cards)."""
    parsed = _core.parse_cards(text, UNDEFINED)
    if parsed is None:
        return None
    cards, n = parsed
    return Header(cards, text[:80 * n])


def _ends_header(block):
    """Whether a 2880-byte header block holds the END card: END as a card's first 3
    characters, the rest of the card blank (found with bytes.find: a test of each of the
    block's 36 cards in Python was ~40 us a file of a thousand-card SRC header)."""
    i = block.find(b"END")
    while i >= 0:
        if i % 80 == 0 and not block[i + 3:i + 80].strip():
            return True
        i = block.find(b"END", i + 1)
    return False


def read_headers(path, max_hdus=None):
    """[(Header, data offset, data bytes)] of the HDUs of a well-formed FITS file (the first
    `max_hdus` of them), or None when anything is off (the caller falls back to astropy)."""
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError:
        return None
    out = []
    with f:
        pos = 0
        while pos < size and (max_hdus is None or len(out) < max_hdus):
            chunks = []
            while True:
                block = f.read(BLOCK)
                if len(block) < BLOCK:
                    return None
                chunks.append(block)
                if _ends_header(block):
                    break
                if len(chunks) > 4000:
                    return None
            raw = b"".join(chunks)
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                return None
            h = parse_header(text)
            if h is None or not h.entries():
                return None
            if not out and h.entries()[0][0] != "SIMPLE":
                return None
            nbytes = data_bytes(h)
            if nbytes is None:
                return None
            start = pos + len(raw)
            if start + nbytes > size:
                return None
            out.append((h, start, nbytes))
            pos = start + (nbytes + BLOCK - 1) // BLOCK * BLOCK
            f.seek(pos)
    return out


_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCM])\s*$")
_WIDTH = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16}
_DTYPE = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8", "C": ">c8",
          "M": ">c16"}


def read_bintable(path, hdu_index=None):
    """(header, names, formats, columns, nrows) of the binary table in HDU `hdu_index` (default:
    the first binary table) of a well-formed FITS file, with the columns as astropy's
    ``np.array(hdu.data[name])`` gives them in native byte order (bits as (nrows, nbits) bool,
    logicals as bool, TDIM shapes applied); or None (the caller falls back to astropy) for
    anything else, including every kind of damage and an AR_HDU pointing beyond the file."""
    hdus = read_headers(path)
    if not hdus:
        return None
    n_hdu = len(hdus)
    for h, _, _ in hdus:
        ar = h.get("AR_HDU")
        if isinstance(ar, int) and not isinstance(ar, bool) and ar > n_hdu:
            return None
    if hdu_index is None:
        hdu_index = next((i for i, (h, _, _) in enumerate(hdus)
                          if i > 0 and h.get("XTENSION") == "BINTABLE"), None)
        if hdu_index is None:
            return None
    if hdu_index >= n_hdu:
        return None
    h, start, nbytes = hdus[hdu_index]
    if h.get("XTENSION") != "BINTABLE" or h.get("BITPIX") != 8 or h.get("NAXIS") != 2:
        return None
    rowlen, nrows, nf = h.get("NAXIS1"), h.get("NAXIS2"), h.get("TFIELDS")
    if not all(isinstance(v, int) and v >= 0 for v in (rowlen, nrows, nf)):
        return None
    names, formats, fields = [], [], []
    offset = 0
    for k in range(1, nf + 1):
        if f"TSCAL{k}" in h or f"TZERO{k}" in h:
            return None                  # scaled columns (e.g. unsigned integers): astropy
        form = h.get(f"TFORM{k}")
        m = _TFORM.match(form) if isinstance(form, str) else None
        if m is None:
            return None                  # variable-length arrays (P, Q) or malformed
        r = int(m.group(1)) if m.group(1) else 1
        t = m.group(2)
        if r == 0:
            return None
        width = (r + 7) // 8 if t == "X" else r * _WIDTH[t]
        name = h.get(f"TTYPE{k}", "")
        names.append(name.strip() if isinstance(name, str) else str(name))
        formats.append(form.strip())
        fields.append((k, r, t, offset, width))
        offset += width
    if offset != rowlen or nbytes < rowlen * nrows:
        return None
    with open(path, "rb") as f:
        f.seek(start)
        buf = f.read(rowlen * nrows)
    if len(buf) != rowlen * nrows:
        return None
    rows = np.frombuffer(buf, dtype=np.uint8).reshape(nrows, rowlen)
    columns = []
    for k, r, t, off, width in fields:
        raw = rows[:, off:off + width]
        if t == "X":
            col = np.unpackbits(raw, axis=1)[:, :r].astype(bool)
        elif t == "L":
            col = raw == ord("T")
            col = col.reshape(nrows) if r == 1 else col
        elif t == "A":
            col = np.ascontiguousarray(raw).view(f"S{r}").reshape(nrows)
        else:
            col = np.ascontiguousarray(raw).view(_DTYPE[t])
            col = col.astype(col.dtype.newbyteorder("="))
            col = col.reshape(nrows) if r == 1 else col
        tdim = h.get(f"TDIM{k}")
        if isinstance(tdim, str) and t not in ("A", "X"):
            try:
                dims = tuple(int(d) for d in tdim.strip().strip("()").split(","))
            except ValueError:
                return None
            if int(np.prod(dims)) != r:
                return None
            col = col.reshape((nrows,) + dims[::-1])
        columns.append(col)
    return h, names, formats, columns, nrows


# --------------------------------------------------------------------------------------------
# card images and header-only files
# --------------------------------------------------------------------------------------------

def float_card(key, value, comment=None):
    """A header card holding `value` exactly (shortest repr; astropy's own formatting keeps
    only 20 characters, which loses the last digit of many doubles). Long keys become
    HIERARCH cards."""
    return fits.Card.fromstring(card_image(key, float(value), comment))


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


def float_cards(keys, values):
    """The card images of keys[i] = values[i] (floats; keys of 1-8 characters) as one string,
    each exactly as :func:`card_image` makes it, formatted in C++ (cpp/cards.hpp: a TAN-SIP or
    fcr product has ~250 such cards, ~1.5 us each in Python, ~0.05 us there)."""
    keys = list(keys)
    values = np.ascontiguousarray(values, dtype=float).ravel()
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys for {len(values)} values")
    try:
        return _core.float_card_images(keys, values)
    except ValueError as e:
        raise ValueError(str(e)) from None


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


# --------------------------------------------------------------------------------------------
# the cards of a celestial WCS
# --------------------------------------------------------------------------------------------

_WCS_KEY = re.compile(r"^(WCSAXES|CTYPE[12]|CRPIX[12]|CRVAL[12]|CDELT[12]|CUNIT[12]|CD[12]_[12]|"
                      r"PC[12]_[12]|CROTA[12]|LONPOLE|LATPOLE|EQUINOX|EPOCH|RADESYS|RADECSYS|"
                      r"PV[12]_\d+|(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+))$")


@functools.lru_cache(maxsize=8192)
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


# --------------------------------------------------------------------------------------------
# astropy-identical card images and HDU bytes without astropy's per-card machinery
# --------------------------------------------------------------------------------------------
# Files written through astropy (SRC, CORR, match files) are built here card by card and byte
# for byte as astropy.io.fits would write them (Card.image, add_checksum(when="HDU checksum"),
# HDUList.writeto): an astropy Card costs 25-50 us in configuration look-ups and a Header
# append 10-40 us, i.e. ~40 ms per simulated CORR/SRC file; this costs ~1 ms. Anything outside
# the common cases (long strings, HIERARCH, commentary cards, non-standard keys) is formatted
# by astropy itself, so the bytes stay those of astropy (tests/test_fastfits.py).

_STD_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
_PRINTABLE = re.compile(r"^[ -~]*$")
_NOT_FAST = ("COMMENT", "HISTORY", "CONTINUE", "END")


def _astropy_float(value):
    # astropy.io.fits.card._format_float
    s = str(value).replace("e", "E")
    if len(s) > 20:
        idx = s.find("E")
        s = s[:20] if idx < 0 else s[:20 - (len(s) - idx)] + s[idx:]
    return s


@functools.lru_cache(maxsize=8192)
def _astropy_image_cached(key, vtype, vrepr, comment, value):
    # vtype and vrepr in the key: 1 == 1.0 == True and 0.0 == -0.0 as dict keys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fits.Card(key, value, comment).image


def astropy_card_image(key, value, comment=None):
    """fits.Card(key, value, comment).image, formatted here for the common cases."""
    t = type(value)
    if _STD_KEY.match(key) and key not in _NOT_FAST and \
            (comment is None or (type(comment) is str and _PRINTABLE.match(comment))):
        if t is bool:
            v = f"{'T' if value else 'F':>20}"
        elif t is int or (isinstance(value, np.integer) and t is not np.bool_):
            v = f"{value:>20d}"
        elif t is float or t is np.float64 or t is np.float32:
            if math.isfinite(value):
                v = f"{_astropy_float(value):>20}"
            else:
                v = None
        elif t is str and _PRINTABLE.match(value):
            if value == "":
                v = "''"
            else:
                s = value.replace("'", "''")
                v = f"{f'{chr(39)}{s:8}{chr(39)}':20}"
        else:
            v = None
        if v is not None:
            out = f"{key:8}= {v}" + (f" / {comment}" if comment else "")
            if len(out) <= 80:
                return f"{out:80}"
    try:
        hash(value)
        return _astropy_image_cached(key, t, repr(value), comment, value)
    except TypeError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.Card(key, value, comment).image


def astropy_image_of(card):
    """card.image of an astropy Card; cards made from values and never formatted (no image
    yet, nothing parsed) are formatted by :func:`astropy_card_image`."""
    d = card.__dict__
    if d.get("_image") is None and not d.get("_valuestring") and not d.get("_rawvalue") \
            and not d.get("_field_specifier") and "_value" in d and "_comment" in d \
            and not d.get("_hierarch") and not d.get("_invalid") and not d.get("_modified"):
        key = d.get("_keyword")
        if isinstance(key, str):
            return astropy_card_image(key, d["_value"], d["_comment"])
    return card.image


def ones_complement_sum(buf, s=0):
    """The FITS 32-bit ones' complement sum of `buf` (a multiple of 4 bytes) added to `s`."""
    a = np.frombuffer(buf, dtype=">u4")
    s = int(s) + int(a.sum(dtype=np.uint64))
    while s >> 32:
        s = (s & 0xFFFFFFFF) + (s >> 32)
    return s


_EXCLUDE = frozenset((0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F, 0x40,
                      0x5B, 0x5C, 0x5D, 0x5E, 0x5F, 0x60))


def checksum_string(value):
    """The 16-character ASCII encoding of a checksum (FITS checksum convention, as astropy's
    _BaseHDU._char_encode)."""
    value &= 0xFFFFFFFF
    asc = [0] * 16
    for i in range(4):
        byte = (value >> ((3 - i) * 8)) & 0xFF
        q, r = byte // 4 + ord("0"), byte % 4
        ch = [q + r, q, q, q]
        check = True
        while check:
            check = False
            for x in _EXCLUDE:
                for j in (0, 2):
                    if ch[j] == x or ch[j + 1] == x:
                        ch[j] += 1
                        ch[j + 1] -= 1
                        check = True
        for j in range(4):
            asc[4 * j + i] = ch[j]
    return "".join(chr(asc[(i + 15) % 16]) for i in range(16))


_CHECKSUM_ZERO = None


def hdu_bytes(images, data=b"", checksum="HDU checksum"):
    """The bytes of one HDU: card images (80 characters each, without END), then `data`
    (unpadded) padded with zeros; with DATASUM/CHECKSUM cards (comment `checksum`) as astropy's
    add_checksum(when=checksum) adds them, unless `checksum` is None."""
    data = pad_block(bytes(data))
    if checksum is None:
        text = "".join(images) + "END".ljust(80)
        return pad_block(text.encode("ascii"), b" ") + data
    ds = ones_complement_sum(data)
    zero = astropy_card_image("CHECKSUM", "0" * 16, checksum)
    dsum = astropy_card_image("DATASUM", str(ds), checksum)
    text = "".join(images) + zero + dsum + "END".ljust(80)
    head = pad_block(text.encode("ascii"), b" ")
    cs = ones_complement_sum(head, ds)
    final = astropy_card_image("CHECKSUM", checksum_string(~cs), checksum)
    return pad_block(("".join(images) + final + dsum + "END".ljust(80)).encode("ascii"),
                     b" ") + data
