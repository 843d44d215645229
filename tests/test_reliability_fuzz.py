"""Fuzzing (issue 8): the --id parser and the FITS header readers on mutated bytes of real
meas_mosaic outputs. The only outcomes allowed: a valid result, or a one-line MosaicError
(DataIdError for --id); never another exception type, never a hang."""
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mosaicfit import MosaicError
from mosaicfit.io.dataid import DataIdError, parse_id
from mosaicfit.io.corr import read_corr_header
from mosaicfit.model.fluxcorr import read_fcr
from mosaicfit.io.fits import parse_header
from mosaicfit.model.sip import SipModel

DATA = os.path.join(os.path.dirname(__file__), "data", "meas_mosaic-outputs")
WCS_FILE = os.path.join(DATA, "wcs-0007358-049.fits")
FCR_FILE = os.path.join(DATA, "fcr-0007358-049.fits")
FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))

ID_ALPHABET = "visitccdfilterpointingtract=.^:,-+ 0123456789HSC-Ix_/\\'\"\t\n*~é"
ID_PIECES = st.one_of(
    st.sampled_from(["visit=", "ccd=", "tract=", "filter=", "pointing=", "field=", "..", "^", ":",
                     "0", "9", "902798", "103", "-1", "1e3", "0x10", "99999999999999999999",
                     " ", "=", "visit", "HSC-I"]),
    st.text(ID_ALPHABET, max_size=6),
)


def _one_line(e):
    msg = str(e)
    assert msg and "\n" not in msg, repr(msg)


@FUZZ
@given(st.lists(st.lists(ID_PIECES, max_size=8).map("".join), max_size=4))
def test_fuzz_parse_id(tokens):
    try:
        ids = parse_id(tokens)
    except DataIdError as e:
        _one_line(e)
        return
    assert isinstance(ids, list)
    for d in ids:
        assert isinstance(d, dict)


def _mutations(data):
    n = len(data)
    return st.lists(st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
                              st.integers(0, n - 1), st.binary(min_size=1, max_size=16)),
                    min_size=1, max_size=4)


def _mutate(data, ops):
    b = bytearray(data)
    for op, i, payload in ops:
        i = min(i, max(len(b) - 1, 0))
        if op == "flip" and b:
            b[i] ^= payload[0] or 0x20
        elif op == "set":
            b[i:i + len(payload)] = payload
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = payload
        elif op == "delete":
            del b[i:i + len(payload) * 10]
    return bytes(b)


with open(WCS_FILE, "rb") as _f:
    WCS_BYTES = _f.read()
with open(FCR_FILE, "rb") as _f:
    FCR_BYTES = _f.read()
TMP = tempfile.mkdtemp(prefix="mosaicfit-fuzz-")


def _write(name, data):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _header_region(data):
    """Bias the mutations to the first 4 header blocks (where the cards are)."""
    return data


@FUZZ
@given(_mutations(WCS_BYTES[:4 * 2880]))
def test_fuzz_read_corr_header(ops):
    path = _write("CORR-fuzz.fits", _mutate(WCS_BYTES, ops))
    try:
        h0, wh = read_corr_header(path)
    except MosaicError as e:
        _one_line(e)
        return
    assert "CRVAL1" in wh


@FUZZ
@given(_mutations(WCS_BYTES[:4 * 2880]))
def test_fuzz_sip_from_header(ops):
    text = _mutate(WCS_BYTES[:4 * 2880], ops).decode("ascii", "replace")
    try:
        SipModel.from_header(text)
    except MosaicError as e:
        _one_line(e)


def _sip_or_error(header):
    try:
        s = SipModel.from_header(header)
    except MosaicError as e:
        _one_line(e)
        return "error"
    return (tuple(s.crpix), tuple(s.crval), tuple(s.cd.ravel()), s.a, s.b, s.ap, s.bp)


WCS_HDU1 = WCS_BYTES[2880:23040]          # the image HDU's header: the TAN-SIP WCS


@FUZZ
@given(_mutations(WCS_HDU1))
def test_fuzz_sip_from_parsed_header_is_from_its_text(ops):
    # the fast reader's headers give their parsed values (no second parse of the text): the
    # same model, or an error in both, as the card text
    h = parse_header(_mutate(WCS_HDU1, ops).decode("ascii", "replace"))
    if h is not None:
        assert _sip_or_error(h) == _sip_or_error(h.text)


def test_sip_from_parsed_header_unmutated():
    h = parse_header(WCS_HDU1.decode("ascii"))
    assert _sip_or_error(h) != "error" and _sip_or_error(h) == _sip_or_error(h.text)


@FUZZ
@given(_mutations(FCR_BYTES))
def test_fuzz_read_fcr(ops):
    path = _write("fcr-fuzz.fits", _mutate(FCR_BYTES, ops))
    try:
        read_fcr(path, 0)
    except MosaicError as e:
        _one_line(e)


def test_unmutated_files_read():
    read_corr_header(WCS_FILE)
    read_fcr(FCR_FILE, 0)
    SipModel.from_header(WCS_BYTES[:4 * 2880].decode("ascii"))


def test_sip_exponents_d_read_alike_on_both_paths():
    # FITS writes D exponents; some writers write d: the fast reader and the card text agree
    text = WCS_HDU1.decode("ascii")
    i = text.index("A_1_3   =")
    for exp in ("D-17", "d-17"):
        t = text[:i] + text[i:i + 80].replace("E-17", exp) + text[i + 80:]
        h = parse_header(t)
        assert _sip_or_error(h) == _sip_or_error(h.text) == _sip_or_error(text)
