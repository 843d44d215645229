"""The hscPipe ``--id`` grammar and its expansion against the registry.

One ``--id`` is a list of ``KEY=VALUE`` tokens.  A value is split on ``^`` into alternatives;
each alternative is a literal, ``a..b`` (a to b inclusive) or ``a..b:s`` (a to b with stride s).
The keys of one ``--id`` expand to their cross product (the first key varying slowest, as
lsst.pipe.base's IdValueAction did); several ``--id`` options are concatenated::

    --id visit=902798..902808:2 ccd=0..8^10..103 tract=0    # 6 visits x 103 CCDs (not 9)
    --id visit=902798 ccd=50 --id visit=902800 ccd=49^51      # 3 data ids

visit, ccd, tract and pointing are integers; filter, field and dateObs are strings
(``filter=HSC-I``).  lsst.pipe.base accepted any string and checked it later; we reject at once,
in one line naming the token: a token without '=', an empty value or alternative, an unknown
key, a key given twice in one ``--id``, a non-integer value for an integer key, and a bad range
(``5..3`` empty, ``1..``, ``a..b``, a stride <= 0, or a range for a string key).  A value given
twice in one key is kept once.  An ``--id`` with no tokens is one empty data id, which selects
every registry row (as in hscPipe).
"""
import difflib
import itertools
import re
from collections import namedtuple

from .. import MosaicError

INT_KEYS = ("visit", "ccd", "tract", "pointing")
STR_KEYS = ("filter", "field", "dateObs")
VALID_KEYS = ("visit", "ccd", "tract", "filter", "field", "pointing", "dateObs")
REGISTRY_KEYS = ("visit", "ccd", "filter", "field", "pointing", "dateObs")  # not tract
METAVAR = "KEY=VALUE1[^VALUE2...]"
MAX_IDS = 5_000_000  # data ids one --id may expand to (a guard against a mistyped range)

_INT_RE = re.compile(r"-?[0-9]+\Z")
_STRIDE_RE = re.compile(r"[0-9]+\Z")


class DataIdError(MosaicError):
    """A malformed ``--id`` or one that selects no data; the message is one line."""


_DataRefBase = namedtuple("DataRef", "visit ccd filter pointing field dateObs tract")


class DataRef(_DataRefBase):
    """One (visit, ccd[, tract]) to process, with its registry properties.

    ``repo.path("wcs", **ref._asdict())`` gives its file; ``tract`` is None if the --id named
    none.
    """

    __slots__ = ()

    def __str__(self):
        s = f"visit={self.visit} ccd={self.ccd}"
        return s if self.tract is None else f"{s} tract={self.tract}"

    @property
    def data_id(self):
        """The dict of the fields that are not None."""
        return {k: v for k, v in self._asdict().items() if v is not None}


def _ref_sort_key(ref):
    return (ref.visit, ref.ccd, -1 if ref.tract is None else ref.tract)


def _error(token, message):
    return DataIdError(f"--id {token!r}: {message}")


def _split_tokens(tokens):
    if tokens is None:
        return []
    if isinstance(tokens, str):
        return tokens.split()
    out = []
    for t in tokens:
        if not isinstance(t, str):
            raise DataIdError(f"--id token {t!r} is not a string")
        out.extend(t.split())
    return out


def _parse_int(text, token, what):
    if not _INT_RE.match(text):
        raise _error(token, f"{what} {text!r} is not an integer")
    return int(text)


def _parse_alternative(key, alt, token):
    """The values one alternative of `key` stands for (a range, or a list of one literal)."""
    if key in STR_KEYS:
        if ".." in alt:
            raise _error(token, f"{alt!r}: ranges a..b are only for the integer keys "
                                f"({', '.join(INT_KEYS)})")
        return [alt]
    if ".." not in alt:
        if ":" in alt:
            raise _error(token, f"{alt!r}: a stride ':s' needs a range a..b:s")
        return [_parse_int(alt, token, "value")]
    start_text, _, rest = alt.partition("..")
    end_text, colon, stride_text = rest.partition(":")
    if not start_text or not end_text:
        raise _error(token, f"range {alt!r} is incomplete (write a..b or a..b:s)")
    start = _parse_int(start_text, token, f"range {alt!r}: start")
    end = _parse_int(end_text, token, f"range {alt!r}: end")
    stride = 1
    if colon:
        if not _STRIDE_RE.match(stride_text):
            raise _error(token, f"range {alt!r}: stride {stride_text!r} is not a positive integer")
        stride = int(stride_text)
        if stride <= 0:
            raise _error(token, f"range {alt!r}: stride must be positive, not {stride}")
    if end < start:
        raise _error(token, f"range {alt!r} is empty (its end {end} is before its start {start})")
    values = range(start, end + 1, stride)
    if len(values) > MAX_IDS:
        raise _error(token, f"range {alt!r} has {len(values)} values (at most {MAX_IDS})")
    return values


def _parse_token(token):
    key, eq, value = token.partition("=")
    if not eq:
        raise _error(token, "expected KEY=VALUE (no '=')")
    if not key:
        raise _error(token, "no key before '='")
    if key not in VALID_KEYS:
        close = difflib.get_close_matches(key, VALID_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _error(token, f"unknown key {key!r} (valid keys: {', '.join(VALID_KEYS)}){hint}")
    if not value:
        raise _error(token, f"empty value for {key}")
    values = {}  # dict as an ordered set: a value given twice is kept once
    for alt in value.split("^"):
        if not alt:
            raise _error(token, f"empty alternative in {value!r} ('^' at an end or '^^')")
        for v in _parse_alternative(key, alt, token):
            values[v] = None
            if len(values) > MAX_IDS:
                raise _error(token, f"more than {MAX_IDS} values")
    return key, list(values)


def parse_id(tokens):
    """Expand one ``--id``: a list of ``KEY=VALUE`` tokens, or one string of them.

    Returns the list of data id dicts (the cross product of the keys' values, in the order
    given: the first key varies slowest).  Raises DataIdError.
    """
    tokens = _split_tokens(tokens)
    keys, value_lists, seen = [], [], {}
    for token in tokens:
        key, values = _parse_token(token)
        if key in seen:
            raise _error(token, f"{key} appears twice in one --id (also in {seen[key]!r}); "
                                f"use {key}=A^B for several values")
        seen[key] = token
        keys.append(key)
        value_lists.append(values)
    total = 1
    for values in value_lists:
        total *= len(values)
    if total > MAX_IDS:
        raise DataIdError(f"--id {' '.join(tokens)!r} expands to {total} data ids "
                          f"(at most {MAX_IDS}); narrow the ranges")
    return [dict(zip(keys, combo)) for combo in itertools.product(*value_lists)]


def parse_ids(id_args):
    """Concatenate the data ids of several ``--id`` options (``args.id`` of `add_id_argument`).

    `id_args` is a list with one entry per ``--id``: a list of tokens or one string.  None (no
    ``--id`` given) gives [].
    """
    if id_args is None:
        return []
    if isinstance(id_args, str):
        raise DataIdError("parse_ids wants a list of --id token lists, not one string")
    out = []
    for tokens in id_args:
        out.extend(parse_id(tokens))
    return out


def add_id_argument(parser, name="--id", dest=None, help=None):
    """Add hscPipe's ``--id`` option to an argparse parser; ``parse_ids(args.id)`` expands it."""
    if help is None:
        help = ("data ids, e.g. --id visit=902798..902808:2 ccd=0..8^10..103 tract=0; "
                "'^' separates alternatives, a..b is a range (inclusive), a..b:s one with "
                "stride s; the keys are crossed, repeated --id options are concatenated; "
                f"keys: {', '.join(VALID_KEYS)}")
    kwargs = {"dest": dest} if dest is not None else {}
    return parser.add_argument(name, nargs="*", action="append", metavar=METAVAR, help=help,
                               **kwargs)


# ---------------------------------------------------------------------------------------------
# summaries (for messages)


def format_values(values):
    """Values in the --id grammar: integers as runs ``0..8^10..103``, strings joined by '^'."""
    values = list(dict.fromkeys(values))
    ints = sorted(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    others = [str(v) for v in values if not (isinstance(v, int) and not isinstance(v, bool))]
    parts = []
    i = 0
    while i < len(ints):
        j = i
        while j + 1 < len(ints) and ints[j + 1] == ints[j] + 1:
            j += 1
        parts.append(str(ints[i]) if j == i else f"{ints[i]}..{ints[j]}")
        i = j + 1
    return "^".join(parts + others)


def format_visit_ccds(pairs):
    """(visit, ccd) pairs in --id form, one group per visit: 'visit=1 ccd=0..3^9; visit=2 ccd=9'
    (for messages that must name every CCD on one line)."""
    by = {}
    for v, c in pairs:
        by.setdefault(int(v), []).append(int(c))
    return "; ".join(f"visit={v} ccd={format_values(c)}" for v, c in sorted(by.items()))


def format_ids(ids, limit=200):
    """A short one-line description of a list of data ids, in the --id grammar."""
    if not ids:
        return "(no data id)"
    keys = list(dict.fromkeys(k for d in ids for k in d))
    if not keys:
        return "(everything)"
    text = " ".join(f"{k}={format_values([d[k] for d in ids if k in d])}" for k in keys)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# resolving against the registry


def _normalise(data_id):
    out = {}
    for key, value in data_id.items():
        if key not in VALID_KEYS:
            raise DataIdError(f"unknown data id key {key!r} (valid keys: {', '.join(VALID_KEYS)})")
        if value is None:
            continue
        if key in INT_KEYS:
            if isinstance(value, bool):
                raise DataIdError(f"data id {key}={value!r} is not an integer")
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise DataIdError(f"data id {key}={value!r} is not an integer") from None
        else:
            value = str(value)
        out[key] = value
    return out


def resolve(ids, registry):
    """Expand data ids against the registry.

    Each id dict selects the registry rows that match all its registry keys (visit, ccd,
    filter, field, pointing, dateObs); ``tract`` is carried into each ref.  Returns
    ``(refs, missing)``: ``refs`` the sorted list of distinct `DataRef`, ``missing`` the sorted
    (visit, ccd) pairs that an id named explicitly but that are not in the registry (ccd is None
    for a visit named without a ccd that is not in the registry at all).  A (visit, ccd) that is
    in the registry but excluded by another key (e.g. ``filter=``) is filtered out, not missing.

    Raises DataIdError if nothing at all is selected, MosaicError if a selected visit has two
    filters or pointings or a duplicated CCD in the registry.  `registry` may also be a
    layout.Repository.
    """
    if not hasattr(registry, "rows") and hasattr(registry, "registry"):
        registry = registry.registry
    ids = [_normalise(d) for d in ids]
    refs = set()
    missing = set()
    for data_id in ids:
        selection = {k: data_id[k] for k in REGISTRY_KEYS if k in data_id}
        visit, ccd = selection.get("visit"), selection.get("ccd")
        if visit is not None and not registry.has_visit(visit):
            missing.add((visit, ccd))
            continue
        rows = registry.rows(**selection)
        if not rows and visit is not None and ccd is not None \
                and not registry.rows(visit=visit, ccd=ccd):
            missing.add((visit, ccd))
            continue
        tract = data_id.get("tract")
        for row in rows:
            refs.add(DataRef(visit=row["visit"], ccd=row["ccd"], filter=row["filter"],
                             pointing=row["pointing"], field=row["field"],
                             dateObs=row["dateObs"], tract=tract))
    for visit in sorted({ref.visit for ref in refs}):
        registry.check_visit(visit)
    if not refs:
        where = getattr(registry, "path", "the registry")
        raise DataIdError(f"no data in {where} for --id {format_ids(ids)}")
    return (sorted(refs, key=_ref_sort_key),
            sorted(missing, key=lambda vc: (vc[0], -1 if vc[1] is None else vc[1])))
