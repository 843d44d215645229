"""FITS headers and binary tables of well-formed files, read without astropy's per-card cost.

astropy.io.fits parses every card value through several layers of its configuration and
verification machinery (~40 us a card); a mosaic reads thousands of CCDs whose SRC and CORR
headers have hundreds of cards (a real HSC SRC table ~1000), which made reading the largest
phase of a run. Here the card images are parsed directly (FITS 4.0, section 4.2: fixed and free
format values, CONTINUE long strings, HIERARCH keywords) and a binary table's rows are mapped
with numpy. The readers are strict: anything unusual (a card they cannot parse, a truncated
file, variable-length arrays, scaled columns) makes them return None, and the callers fall back
to astropy, which also gives the error messages. So a file is either read here exactly as
astropy would read it, or by astropy.
"""
import os
import re

import numpy as np
from astropy.io.fits.card import UNDEFINED

__all__ = ["Card", "Header", "parse_header", "read_headers", "read_bintable"]

BLOCK = 2880

_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?"
_VALUE = re.compile(
    r"\s*(?:'(?P<str>(?:[^']|'')*)'|(?P<bool>[TF])(?![^\s/])|(?P<int>[+-]?\d+)(?![^\s/])"
    rf"|(?P<float>{_NUM})(?![^\s/])|\(\s*(?P<re>{_NUM})\s*,\s*(?P<im>{_NUM})\s*\)|(?P<none>))"
    r"\s*(?:/(?P<comment>.*))?$")
_KEYWORD = re.compile(r"^[A-Z0-9_-]{0,8}$")
_COMMENTARY = ("COMMENT", "HISTORY", "")


class Card:
    """One header card: keyword, value (str, bool, int, float, complex, astropy's UNDEFINED)
    and comment, as astropy's Card gives them."""
    __slots__ = ("keyword", "value", "comment")

    def __init__(self, keyword, value, comment=""):
        self.keyword, self.value, self.comment = keyword, value, comment


class Header:
    """The cards of one HDU: the read-only mapping part of astropy's Header interface (get,
    [], in, keys, cards) plus the raw card images (`text`)."""

    def __init__(self, cards, text):
        self.cards = cards
        self.text = text
        self._index = {}
        for c in cards:
            if c.keyword not in _COMMENTARY:
                # as astropy: the card's value is UNDEFINED, the header's None
                self._index.setdefault(c.keyword.upper(), None if c.value is UNDEFINED else c.value)

    def __contains__(self, key):
        return key.upper() in self._index

    def __getitem__(self, key):
        return self._index[key.upper()]

    def get(self, key, default=None):
        return self._index.get(key.upper(), default)

    def keys(self):
        return [c.keyword for c in self.cards]

    def __len__(self):
        return len(self.cards)

    def tostring(self):
        return self.text

    def to_astropy(self):
        from astropy.io import fits
        return fits.Header.fromstring(self.text)


def _value(m):
    if m.group("str") is not None:
        return m.group("str").replace("''", "'").rstrip()
    if m.group("bool") is not None:
        return m.group("bool") == "T"
    if m.group("int") is not None:
        return int(m.group("int"))
    if m.group("float") is not None:
        return float(m.group("float").replace("D", "E").replace("d", "e"))
    if m.group("re") is not None:
        return complex(float(m.group("re").replace("D", "E")), float(m.group("im").replace("D", "E")))
    return UNDEFINED                 # astropy's value of a card without one


def parse_header(text):
    """Cards of header text (80-character card images up to END): a Header, or None if a card
    is not standard FITS (the caller then lets astropy judge the file)."""
    cards = []
    n = len(text) // 80
    i = 0
    while i < n:
        img = text[80 * i:80 * i + 80]
        i += 1
        key = img[:8].rstrip()
        if key == "END":
            return Header(cards, text[:80 * i])
        if key == "HIERARCH":
            name, eq, rest = img[9:].partition("=")
            if not eq:
                return None
            key = " ".join(name.split())        # astropy keeps its case
            m = _VALUE.match(rest)
        elif img[8:10] == "= " and key not in _COMMENTARY:
            if not _KEYWORD.match(key):
                return None
            m = _VALUE.match(img[10:])
        elif key in _COMMENTARY:
            cards.append(Card(key, img[8:].rstrip()))
            continue
        else:
            return None                  # a keyword without a value indicator
        if m is None:
            return None
        value = _value(m)
        comment = (m.group("comment") or "").strip()
        # a long string continued on CONTINUE cards (the '&' convention)
        while isinstance(value, str) and value.endswith("&") and i < n \
                and text[80 * i:80 * i + 8] == "CONTINUE":
            m2 = _VALUE.match(text[80 * i + 8:80 * i + 80])
            if m2 is None or m2.group("str") is None:
                return None
            value = value[:-1] + m2.group("str").replace("''", "'").rstrip()
            if m2.group("comment"):
                comment = (comment + " " + m2.group("comment").strip()).strip()
            i += 1
        cards.append(Card(key, value, comment))
    return None                                       # no END card


def _data_size(h):
    naxis = h.get("NAXIS", 0)
    if not isinstance(naxis, int) or naxis < 0:
        return None
    if naxis == 0:
        return 0
    bitpix = h.get("BITPIX")
    if bitpix not in (8, 16, 32, 64, -32, -64):
        return None
    count = 1
    for k in range(1, naxis + 1):
        d = h.get(f"NAXIS{k}")
        if not isinstance(d, int) or d < 0:
            return None
        count *= d
    pcount, gcount = h.get("PCOUNT", 0), h.get("GCOUNT", 1)
    if not isinstance(pcount, int) or not isinstance(gcount, int):
        return None
    return abs(bitpix) // 8 * gcount * (pcount + count)


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
                # END can only be the first 3 characters of a card
                if any(block[j:j + 3] == b"END" and not block[j + 3:j + 80].strip()
                       for j in range(0, BLOCK, 80)):
                    break
                if len(chunks) > 4000:
                    return None
            raw = b"".join(chunks)
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                return None
            h = parse_header(text)
            if h is None or (not out and h.cards[:1] and h.cards[0].keyword != "SIMPLE"):
                return None
            if not h.cards:
                return None
            nbytes = _data_size(h)
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
