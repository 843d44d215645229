"""The hscPipe --id grammar (mosaicfit.dataid) and its expansion against a registry."""
import argparse
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaicfit import MosaicError
from mosaicfit.io.dataid import MAX_IDS, DataIdError, DataRef, add_id_argument, format_ids, format_values, parse_id, parse_ids, resolve
from mosaicfit.io.layout import Registry, Repository

# ---------------------------------------------------------------------------------------------
# parsing


def test_reference_example_visits_by_ccds():
    ids = parse_id(["visit=902798..902808:2", "ccd=0..103", "tract=0"])
    assert len(ids) == 6 * 104
    assert sorted({d["visit"] for d in ids}) == [902798, 902800, 902802, 902804, 902806, 902808]
    assert sorted({d["ccd"] for d in ids}) == list(range(104))
    assert {d["tract"] for d in ids} == {0}
    # the cross product, first key slowest (as lsst.pipe.base's IdValueAction)
    assert ids[0] == {"visit": 902798, "ccd": 0, "tract": 0}
    assert ids[1] == {"visit": 902798, "ccd": 1, "tract": 0}
    assert ids[104] == {"visit": 902800, "ccd": 0, "tract": 0}
    assert all(type(d["visit"]) is int and type(d["ccd"]) is int for d in ids)


def test_every_ccd_but_9():
    ccds = [d["ccd"] for d in parse_id("ccd=0..8^10..103")]
    assert len(ccds) == 103
    assert 9 not in ccds
    assert ccds == [c for c in range(104) if c != 9]


def test_one_string_equals_tokens():
    assert parse_id("visit=1..3 ccd=0^5") == parse_id(["visit=1..3", "ccd=0^5"])
    assert parse_id(["visit=1..3 ccd=0^5"]) == parse_id(["visit=1..3", "ccd=0^5"])


def test_cross_product():
    ids = parse_id(["visit=1^2", "ccd=3^4", "filter=HSC-I^HSC-R"])
    assert len(ids) == 8
    assert ids == [{"visit": v, "ccd": c, "filter": f}
                   for v in (1, 2) for c in (3, 4) for f in ("HSC-I", "HSC-R")]


def test_strings_stay_strings():
    ids = parse_id(["filter=HSC-I", "field=SSP_WIDE", "dateObs=2015-01-21", "pointing=815"])
    assert ids == [{"filter": "HSC-I", "field": "SSP_WIDE", "dateObs": "2015-01-21", "pointing": 815}]
    assert parse_id("filter=NB0921")[0]["filter"] == "NB0921"


def test_ranges_strides_and_literals():
    assert [d["visit"] for d in parse_id("visit=1..5:2")] == [1, 3, 5]
    assert [d["visit"] for d in parse_id("visit=1..6:2")] == [1, 3, 5]
    assert [d["visit"] for d in parse_id("visit=7..7")] == [7]
    assert [d["visit"] for d in parse_id("visit=0^2..4^7..9")] == [0, 2, 3, 4, 7, 8, 9]
    assert [d["ccd"] for d in parse_id("ccd=007")] == [7]
    # a value given twice is kept once (first position)
    assert [d["ccd"] for d in parse_id("ccd=3^0..4")] == [3, 0, 1, 2, 4]


def test_empty_id_is_one_empty_data_id():
    assert parse_id([]) == [{}]


def test_concatenation():
    ids = parse_ids([["visit=1", "ccd=0..2"], ["visit=2", "ccd=5"], "visit=3 ccd=7^8"])
    assert ids == [{"visit": 1, "ccd": 0}, {"visit": 1, "ccd": 1}, {"visit": 1, "ccd": 2},
                   {"visit": 2, "ccd": 5}, {"visit": 3, "ccd": 7}, {"visit": 3, "ccd": 8}]
    assert parse_ids(None) == []
    assert parse_ids([]) == []


@pytest.mark.parametrize("token, words", [
    ("visit", ["'visit'", "no '='"]),
    ("visit=", ["'visit='", "empty value"]),
    ("=5", ["'=5'", "no key"]),
    ("visit=1^^3", ["'visit=1^^3'", "empty alternative"]),
    ("visit=1^", ["'visit=1^'", "empty alternative"]),
    ("visit=5..3", ["'visit=5..3'", "empty"]),
    ("visit=1..", ["'visit=1..'", "incomplete"]),
    ("visit=..3", ["'visit=..3'", "incomplete"]),
    ("visit=a..b", ["'visit=a..b'", "not an integer"]),
    ("visit=1..b", ["'visit=1..b'", "not an integer"]),
    ("visit=1..3..5", ["'visit=1..3..5'", "not an integer"]),
    ("visit=1..5:0", ["'visit=1..5:0'", "stride"]),
    ("visit=1..5:-1", ["'visit=1..5:-1'", "stride"]),
    ("visit=1..5:", ["'visit=1..5:'", "stride"]),
    ("visit=1..5:x", ["'visit=1..5:x'", "stride"]),
    ("visit=3:2", ["'visit=3:2'", "stride"]),
    ("visit=abc", ["'visit=abc'", "not an integer"]),
    ("ccd=1.5", ["'ccd=1.5'", "not an integer"]),
    ("tract=zero", ["'tract=zero'", "not an integer"]),
    ("filter=HSC-G..HSC-I", ["'filter=HSC-G..HSC-I'", "integer keys"]),
    ("vist=1", ["'vist=1'", "unknown key", "visit, ccd, tract, filter, field, pointing, dateObs"]),
    ("patch=1,1", ["'patch=1,1'", "unknown key"]),
])
def test_errors_name_the_token(token, words):
    with pytest.raises(DataIdError) as info:
        parse_id(["ccd=0", token])
    message = str(info.value)
    assert "\n" not in message
    for w in words:
        assert w in message
    assert isinstance(info.value, MosaicError)


def test_same_key_twice_in_one_id():
    with pytest.raises(DataIdError, match=r"'visit=2'.*twice"):
        parse_id(["visit=1", "ccd=0", "visit=2"])
    # but fine in separate --id options
    assert len(parse_ids([["visit=1"], ["visit=2"]])) == 2


def test_huge_expansion_refused():
    with pytest.raises(DataIdError, match="narrow"):
        parse_id(["visit=0..99999", "ccd=0..103"])
    with pytest.raises(DataIdError, match="values"):
        parse_id([f"visit=0..{MAX_IDS + 1}"])


# the Python range expansion of random alternatives

_alternative = st.one_of(
    st.integers(0, 300).map(lambda a: (str(a), [a])),
    st.tuples(st.integers(0, 300), st.integers(0, 60)).map(
        lambda t: (f"{t[0]}..{t[0] + t[1]}", list(range(t[0], t[0] + t[1] + 1)))),
    st.tuples(st.integers(0, 300), st.integers(0, 60), st.integers(1, 9)).map(
        lambda t: (f"{t[0]}..{t[0] + t[1]}:{t[2]}", list(range(t[0], t[0] + t[1] + 1, t[2])))),
)


def _ordered_unique(values):
    return list(dict.fromkeys(values))


@settings(max_examples=150, deadline=None)
@given(st.lists(_alternative, min_size=1, max_size=5))
def test_property_equals_range_expansion(alternatives):
    value = "^".join(text for text, _ in alternatives)
    expected = _ordered_unique(v for _, values in alternatives for v in values)
    assert [d["ccd"] for d in parse_id([f"ccd={value}"])] == expected


@settings(max_examples=50, deadline=None)
@given(st.lists(_alternative, min_size=1, max_size=3), st.lists(_alternative, min_size=1, max_size=3))
def test_property_cross_product(visit_alts, ccd_alts):
    visits = _ordered_unique(v for _, vs in visit_alts for v in vs)
    ccds = _ordered_unique(v for _, vs in ccd_alts for v in vs)
    ids = parse_id(["visit=" + "^".join(t for t, _ in visit_alts),
                    "ccd=" + "^".join(t for t, _ in ccd_alts)])
    assert ids == [{"visit": v, "ccd": c} for v in visits for c in ccds]


def test_add_id_argument():
    parser = argparse.ArgumentParser(prog="mosaic.py")
    parser.add_argument("root")
    add_id_argument(parser)
    args = parser.parse_args(["ROOT", "--id", "visit=902798..902808:2", "ccd=0..103", "tract=0",
                              "--id", "visit=1", "ccd=5"])
    assert args.id == [["visit=902798..902808:2", "ccd=0..103", "tract=0"], ["visit=1", "ccd=5"]]
    assert len(parse_ids(args.id)) == 6 * 104 + 1
    assert parser.parse_args(["ROOT"]).id is None
    assert "KEY=VALUE1[^VALUE2...]" in parser.format_help()


def test_format_values_and_ids():
    assert format_values(list(range(0, 9)) + list(range(10, 104))) == "0..8^10..103"
    assert format_values([5, 3, 4, 9]) == "3..5^9"
    assert format_values(["HSC-I", "HSC-I", "HSC-R"]) == "HSC-I^HSC-R"
    assert format_ids(parse_id("visit=1^3 ccd=0..3")) == "visit=1^3 ccd=0..3"
    assert format_ids([{}]) == "(everything)"


# ---------------------------------------------------------------------------------------------
# resolving against a registry


def _rows(visits, filter_name, pointing, ccds=range(104), field="SSP_WIDE"):
    return [dict(visit=v, ccd=c, filter=filter_name, pointing=pointing, field=field,
                 dateObs="2015-01-21", taiObs="2015-01-21T10:00:00", expTime=150.0, config="x")
            for v in visits for c in ccds]


@pytest.fixture
def registry(tmp_path):
    rows = (_rows([902798, 902800, 902802, 902804, 902806], "HSC-I", 815,
                  ccds=[c for c in range(104) if c != 9])  # ccd 9 missing, and visit 902808
            + _rows([902900, 902902], "HSC-R", 816, ccds=range(4), field="SSP_DEEP"))
    return Registry.create(tmp_path / "registry.sqlite3", rows)


def test_resolve_reference_example(registry):
    ids = parse_id("visit=902798..902808:2 ccd=0..103 tract=0")
    refs, missing = resolve(ids, registry)
    assert len(refs) == 5 * 103
    assert refs == sorted(refs, key=lambda r: (r.visit, r.ccd))
    ref = refs[0]
    assert isinstance(ref, DataRef)
    assert ref == DataRef(visit=902798, ccd=0, filter="HSC-I", pointing=815, field="SSP_WIDE",
                          dateObs="2015-01-21", tract=0)
    assert str(ref) == "visit=902798 ccd=0 tract=0"
    # asked for explicitly, not in the registry: reported, not dropped silently
    assert missing == [(v, 9) for v in (902798, 902800, 902802, 902804, 902806)] + \
        [(902808, c) for c in range(104)]


def test_resolve_without_ccd_or_tract(registry):
    refs, missing = resolve(parse_id("visit=902900^902902"), registry)
    assert [(r.visit, r.ccd) for r in refs] == [(v, c) for v in (902900, 902902) for c in range(4)]
    assert all(r.tract is None and r.filter == "HSC-R" and r.pointing == 816 for r in refs)
    assert missing == []
    refs, missing = resolve(parse_id("visit=902900^902901"), registry)
    assert len(refs) == 4 and missing == [(902901, None)]


def test_resolve_by_filter_and_field(registry):
    refs, _ = resolve(parse_id("filter=HSC-R ccd=0"), registry)
    assert [(r.visit, r.ccd) for r in refs] == [(902900, 0), (902902, 0)]
    refs, _ = resolve(parse_id("field=SSP_WIDE ccd=5"), registry)
    assert [r.visit for r in refs] == [902798, 902800, 902802, 902804, 902806]
    # a key other than visit/ccd filters; what it excludes is not "missing"
    refs, missing = resolve(parse_id("visit=902798^902900 ccd=0 filter=HSC-I"), registry)
    assert [(r.visit, r.ccd) for r in refs] == [(902798, 0)]
    assert missing == []


def test_resolve_concatenated_ids_dedupe_and_carry_tract(registry):
    ids = parse_ids([["visit=902900", "ccd=0^1", "tract=0"], ["visit=902900", "ccd=1..2", "tract=0"],
                     ["visit=902900", "ccd=1", "tract=1"]])
    refs, _ = resolve(ids, registry)
    assert [(r.visit, r.ccd, r.tract) for r in refs] == [
        (902900, 0, 0), (902900, 1, 0), (902900, 1, 1), (902900, 2, 0)]


def test_resolve_accepts_repository(tmp_path, registry):
    repo = Repository(tmp_path, "r")
    refs, _ = resolve(parse_id("visit=902900 ccd=3"), repo)
    assert [(r.visit, r.ccd) for r in refs] == [(902900, 3)]


def test_resolve_nothing_selected_names_the_id(registry):
    with pytest.raises(DataIdError, match=r"visit=1\.\.3 ccd=0"):
        resolve(parse_id("visit=1..3 ccd=0"), registry)
    with pytest.raises(DataIdError, match="filter=HSC-Z"):
        resolve(parse_id("filter=HSC-Z"), registry)
    with pytest.raises(DataIdError, match="registry.sqlite3"):
        resolve(parse_id("visit=902798 filter=HSC-R"), registry)
    with pytest.raises(DataIdError):
        resolve([], registry)


def _raw_registry(path, rows):
    """A registry as another tool might have left it: no unique constraint."""
    conn = sqlite3.connect(path)
    conn.execute("create table raw (id integer primary key autoincrement, field text, visit int, "
                 "filter text, dateObs text, pointing int, ccd int, config text, taiObs text, "
                 "expTime double)")
    conn.execute("create table raw_visit (visit int, field text, filter text, dateObs text, "
                 "taiObs text, pointing int)")
    conn.executemany("insert into raw (visit, ccd, filter, pointing, field, dateObs) "
                     "values (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return Registry(path)


def test_resolve_two_filter_visit(tmp_path):
    reg = _raw_registry(tmp_path / "registry.sqlite3", [
        (1, 0, "HSC-I", 815, "F", "d"), (1, 1, "HSC-R", 815, "F", "d"), (2, 0, "HSC-I", 815, "F", "d")])
    with pytest.raises(MosaicError, match="visit 1 has 2 filters"):
        resolve(parse_id("visit=1 ccd=0"), reg)
    with pytest.raises(MosaicError, match="visit 1"):
        reg.visit_info(1)
    # an unrelated visit still resolves
    refs, _ = resolve(parse_id("visit=2"), reg)
    assert [(r.visit, r.ccd) for r in refs] == [(2, 0)]


def test_resolve_duplicate_rows(tmp_path):
    reg = _raw_registry(tmp_path / "registry.sqlite3", [
        (7, 0, "HSC-I", 815, "F", "d"), (7, 0, "HSC-I", 815, "F", "d"), (7, 1, "HSC-I", 815, "F", "d")])
    with pytest.raises(MosaicError, match="visit 7.*ccd 0"):
        resolve(parse_id("visit=7 ccd=1"), reg)
    with pytest.raises(MosaicError, match="visit 7"):
        reg.ccds(7)


def test_resolve_rejects_bad_hand_made_ids(registry):
    with pytest.raises(DataIdError, match="patch"):
        resolve([{"patch": "1,1"}], registry)
    with pytest.raises(DataIdError, match="visit"):
        resolve([{"visit": "x"}], registry)
    refs, _ = resolve([{"visit": "902900", "ccd": 0}], registry)  # numeric strings are cast
    assert len(refs) == 1
