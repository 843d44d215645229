"""The Gen2 repository layout, reruns and registry (mosaicfit.layout)."""
import os
import sqlite3

import pytest

from mosaicfit import MosaicError
from mosaicfit.io.layout import TEMPLATES, Registry, Repository

ID = dict(visit=902798, ccd=50, pointing=815, filter="HSC-I", tract=0)


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "ROOT"
    r.mkdir()
    return r


@pytest.mark.parametrize("dataset, rel", [
    ("calexp", "00815/HSC-I/corr/CORR-0902798-050.fits"),
    ("src", "00815/HSC-I/output/SRC-0902798-050.fits"),
    ("icSrc", "00815/HSC-I/output/ICSRC-0902798-050.fits"),
    ("icMatch", "00815/HSC-I/output/MATCH-0902798-050.fits"),
    ("srcMatch", "00815/HSC-I/output/SRCMATCH-0902798-050.fits"),
    ("wcs", "00815/HSC-I/corr/0000/wcs-0902798-050.fits"),
    ("fcr", "00815/HSC-I/corr/0000/fcr-0902798-050.fits"),
    ("calexp_calibrated", "00815/HSC-I/corr/0000/CALEXP-0902798-050.fits"),
    ("src_calibrated", "00815/HSC-I/output/0000/CALSRC-0902798-050.fits"),
    ("skymap", "deepCoadd/skyMap.json"),
])
def test_paths(root, dataset, rel):
    repo = Repository(root, "R")
    assert repo.path(dataset, **ID) == f"{root}/rerun/R/{rel}"


def test_literal_templates():
    assert TEMPLATES["calexp"] == "%(pointing)05d/%(filter)s/corr/CORR-%(visit)07d-%(ccd)03d.fits"
    assert TEMPLATES["wcs"] == "%(pointing)05d/%(filter)s/corr/%(tract)04d/wcs-%(visit)07d-%(ccd)03d.fits"
    assert TEMPLATES["src_calibrated"] == \
        "%(pointing)05d/%(filter)s/output/%(tract)04d/CALSRC-%(visit)07d-%(ccd)03d.fits"


def test_path_errors(root):
    repo = Repository(root, "R")
    with pytest.raises(MosaicError, match="needs tract"):
        repo.path("wcs", visit=1, ccd=2, pointing=3, filter="HSC-I")
    with pytest.raises(MosaicError, match="needs tract"):
        repo.path("wcs", visit=1, ccd=2, pointing=3, filter="HSC-I", tract=None)
    with pytest.raises(MosaicError, match="unknown dataset 'deepCoadd'"):
        repo.path("deepCoadd", **ID)


def test_nested_rerun_and_refcat(root):
    repo = Repository(root, "user/mosaic1/")
    assert repo.rerun == "user/mosaic1"
    assert repo.rerun_dir == f"{root}/rerun/user/mosaic1"
    assert repo.path("fcr", **ID) == f"{root}/rerun/user/mosaic1/00815/HSC-I/corr/0000/fcr-0902798-050.fits"
    assert repo.refcat_dir("ps1_pv3_3pi_20170110") == f"{root}/ref_cats/ps1_pv3_3pi_20170110"
    with pytest.raises(MosaicError):
        repo.refcat_dir("../elsewhere")


@pytest.mark.parametrize("rerun", ["", "  ", "/abs/rerun", "../up", "a/../../b", "a/..", "a:b:c", "a:a"])
def test_bad_rerun_names(root, rerun):
    with pytest.raises(MosaicError) as info:
        Repository(root, rerun)
    assert "\n" not in str(info.value)


def test_missing_root(tmp_path):
    with pytest.raises(MosaicError, match="not a directory"):
        Repository(tmp_path / "nope", "R")


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x")


def test_parent_chain_via_symlink(root):
    # ROOT <- rerun/A <- rerun/B (Gen2: _parent points to the parent repository folder)
    a = root / "rerun" / "A"
    b = root / "rerun" / "B"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    os.symlink("../..", a / "_parent")
    os.symlink(str(a), b / "_parent")
    repo = Repository(root, "B")
    assert repo.search_path == [str(b), str(a), str(root)]
    assert repo.parents == [str(a), str(root)]

    # read from the first repository that has it; write to B always
    assert repo.find("src", **ID) is None
    _touch(os.path.join(root, TEMPLATES["src"] % ID))
    assert repo.find("src", **ID) == os.path.join(root, TEMPLATES["src"] % ID)
    _touch(os.path.join(a, TEMPLATES["src"] % ID))
    assert repo.find("src", **ID) == os.path.join(a, TEMPLATES["src"] % ID)
    _touch(os.path.join(b, TEMPLATES["src"] % ID))
    assert repo.find("src", **ID) == os.path.join(b, TEMPLATES["src"] % ID)
    assert repo.path("wcs", **ID).startswith(str(b) + os.sep)
    assert Repository(root, "A").find("src", **ID) == os.path.join(a, TEMPLATES["src"] % ID)


def test_parent_chain_via_plain_file(root):
    a = root / "rerun" / "A"
    b = root / "rerun" / "B"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "_parent").write_text(str(root) + "\n")
    (b / "_parent").write_text("../A\n")  # relative to the rerun folder
    assert Repository(root, "B").search_path == [str(b), str(a), str(root)]


def test_new_rerun_has_root_as_parent(root):
    repo = Repository(root, "new")
    assert repo.search_path == [f"{root}/rerun/new", str(root)]


def test_parent_errors(root):
    a = root / "rerun" / "A"
    b = root / "rerun" / "B"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    os.symlink(str(b), a / "_parent")
    os.symlink(str(a), b / "_parent")
    with pytest.raises(MosaicError, match="loop"):
        Repository(root, "B").search_path
    c = root / "rerun" / "C"
    c.mkdir()
    os.symlink(str(root / "gone"), c / "_parent")
    with pytest.raises(MosaicError, match="_parent"):
        Repository(root, "C").find("src", **ID)


def test_input_output_rerun(root):
    a = root / "rerun" / "A"
    a.mkdir(parents=True)
    os.symlink("../..", a / "_parent")
    repo = Repository(root, "A:B")
    assert repo.rerun == "B" and repo.input_rerun == "A"
    assert repo.search_path == [f"{root}/rerun/B", str(a), str(root)]
    repo.make_rerun_dir()
    assert os.path.realpath(root / "rerun" / "B" / "_parent") == os.path.realpath(a)
    assert Repository(root, "B").search_path == [f"{root}/rerun/B", str(a), str(root)]
    with pytest.raises(MosaicError, match="input rerun"):
        Repository(root, "X:C").search_path


def test_held_search_path_finds_as_before_and_follows_a_new_parent_link(root):
    # hold_search_path (the readers': resolved once) gives the same chain; a _parent link made
    # afterwards by make_rerun_dir is followed again
    a = root / "rerun" / "A"
    a.mkdir(parents=True)
    os.symlink("../..", a / "_parent")
    (a / "x.txt").write_text("in A")
    held = Repository(root, "A:B").hold_search_path()
    assert held.search_path == [f"{root}/rerun/B", str(a), str(root)]
    assert held.find("skymap", coaddName="deep") is None
    held.make_rerun_dir()
    assert held.search_path == [f"{root}/rerun/B", str(a), str(root)]
    assert held._search is None
    b = Repository(root, "B").hold_search_path()
    assert b.search_path == [f"{root}/rerun/B", str(a), str(root)]


# ---------------------------------------------------------------------------------------------
# registry

ROWS = [dict(visit=v, ccd=c, filter=f, pointing=p, field="SSP_WIDE", dateObs="2015-01-21",
             taiObs="2015-01-21T10:00:00.000", expTime=150.0, config="0x1")
        for v, f, p in [(902798, "HSC-I", 815), (902800, "HSC-I", 815), (904010, "HSC-R", 1000)]
        for c in (0, 1, 2)]


def test_registry_roundtrip(root):
    reg = Registry.create(root / "registry.sqlite3", ROWS)
    assert len(reg) == 9
    assert reg.visits() == [902798, 902800, 904010]
    assert reg.ccds(902800) == [0, 1, 2]
    assert reg.visit_info(904010) == dict(field="SSP_WIDE", filter="HSC-R", dateObs="2015-01-21",
                                          taiObs="2015-01-21T10:00:00.000", pointing=1000)
    assert [(r["visit"], r["ccd"]) for r in reg.rows(filter="HSC-I", ccd=1)] == [(902798, 1), (902800, 1)]
    assert len(reg.rows(visit=[902798, 904010])) == 6
    assert reg.rows(visit=902798, ccd=2)[0]["expTime"] == 150.0
    with pytest.raises(MosaicError, match="no column"):
        reg.rows(patch="1,1")
    with pytest.raises(MosaicError, match="visit 5 "):
        reg.visit_info(5)
    with pytest.raises(MosaicError, match="visit 5 "):
        reg.ccds(5)


def test_registry_schema_as_hscpipe(root):
    path = root / "registry.sqlite3"
    Registry.create(path, ROWS)
    conn = sqlite3.connect(path)
    raw_cols = [r[1] for r in conn.execute("pragma table_info(raw)")]
    assert raw_cols == ["id", "field", "visit", "filter", "dateObs", "pointing", "ccd", "config",
                        "taiObs", "expTime"]
    visit_cols = [r[1] for r in conn.execute("pragma table_info(raw_visit)")]
    assert visit_cols == ["visit", "field", "filter", "dateObs", "taiObs", "pointing"]
    assert conn.execute("select count(*) from raw_visit").fetchone()[0] == 3
    with pytest.raises(sqlite3.IntegrityError):  # unique(visit, ccd), as hscPipe's
        conn.execute("insert into raw (visit, ccd) values (902798, 0)")
    conn.close()


def test_registry_create_is_atomic_and_replaces(root):
    path = root / "registry.sqlite3"
    Registry.create(path, ROWS)
    with pytest.raises(MosaicError):
        Registry.create(path, ROWS + [ROWS[0]])  # duplicate (visit, ccd): refused, old file kept
    assert len(Registry(path)) == 9
    Registry.create(path, ROWS[:3])
    assert len(Registry(path)) == 3
    assert [p.name for p in root.iterdir()] == ["registry.sqlite3"]  # no temporary left


def test_registry_create_refuses_bad_rows(root):
    path = root / "registry.sqlite3"
    with pytest.raises(MosaicError, match="visit 1 ccd 0 twice"):
        Registry.create(path, [dict(visit=1, ccd=0, filter="HSC-I", pointing=1)] * 2)
    with pytest.raises(MosaicError, match="visit 1 has two filter"):
        Registry.create(path, [dict(visit=1, ccd=0, filter="HSC-I", pointing=1),
                               dict(visit=1, ccd=1, filter="HSC-R", pointing=1)])
    with pytest.raises(MosaicError, match="pointing"):
        Registry.create(path, [dict(visit=1, ccd=0, filter="HSC-I")])
    with pytest.raises(MosaicError, match="unknown column"):
        Registry.create(path, [dict(visit=1, ccd=0, filter="HSC-I", pointing=1, patch="1,1")])
    assert not path.exists()


def test_registry_missing_or_corrupt(root):
    path = root / "registry.sqlite3"
    with pytest.raises(MosaicError, match=str(path)):
        Registry(path)
    assert not path.exists()  # opening must not create it
    path.write_bytes(b"this is not an sqlite database, just some text" * 10)
    with pytest.raises(MosaicError, match=str(path)):
        Registry(path)
    path.write_bytes(b"")
    with pytest.raises(MosaicError, match="no table 'raw'"):
        Registry(path)


def test_repository_registry(root):
    repo = Repository(root, "R")
    with pytest.raises(MosaicError, match=str(root / "registry.sqlite3")):
        repo.registry
    Registry.create(root / "registry.sqlite3", ROWS)
    assert repo.registry.visits() == [902798, 902800, 904010]
    assert repo.registry is repo.registry
    info = repo.registry.visit_info(902798)
    assert repo.path("wcs", visit=902798, ccd=50, tract=0, **info) == \
        f"{root}/rerun/R/00815/HSC-I/corr/0000/wcs-0902798-050.fits"
