"""Reliability of mosaic.py (issue 8): a small simulated repository damaged in each way of the
issue. Every run must end with a one-line error naming the file or value and the problem (no
traceback), the documented exit status, no partial or corrupt output (every wcs-/fcr- file
reads back; no temporary file left) and the inputs untouched.

Exit status: 1 for an error that stops the run (nothing new written); for unreadable inputs
of some CCDs the run skips them (one line each: ``mosaic: skipping ...``), solves the rest,
writes their outputs and exits 1 so that scripts notice; CCDs whose inputs are absent
(``Not opening files``) or whose bad rows (NaN, inf, zero or negative errors) are dropped by
the star selection do not change the exit status (0).
"""
import errno
import glob
import hashlib
import os
import sqlite3

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from damage import edit_table, empty_table, set_column
from mosaicfit import MosaicError, cli
from mosaicfit.model.camera import hsc
from mosaicfit.model.fluxcorr import read_fcr
from mosaicfit.io.wcsfile import read_wcs_header

VISITS = "visit=902798..902802:2"
# 17 central CCDs x 3 visits: every damaged input and refusal case runs a whole mosaic.py, so
# the tract is as small as keeps each visit solvable with room for a damaged CCD
NCCD = 17
CCDS = "ccd=38..54"
ID = ["--id", VISITS, CCDS, "tract=0"]
SRC = "rerun/sim/01201/HSC-I/output/SRC-0902800-045.fits"
CORR = "rerun/sim/01201/HSC-I/corr/CORR-0902800-045.fits"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rel") / "repo")
    assert cli.main(["simulate", root, "--visits", "3", "--ccds", "38..54", "--seed", "3"]) == 0
    return root


# ------------------------------------------------------------------------------------------
def snapshot(root):
    """{relative path: (sha1, mtime_ns)} of every file of the repository."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = (hashlib.sha1(f.read()).hexdigest(),
                                                 os.stat(p).st_mtime_ns)
    return out


def is_output(rel):
    base = os.path.basename(rel)
    return base.startswith(("wcs-", "fcr-")) or rel.startswith(os.path.join("rerun", "sim", "config"))


def check_inputs_untouched(before, root):
    after = snapshot(root)
    for rel, sig in before.items():
        if is_output(rel):
            continue
        assert after.get(rel) == sig, f"input {rel} changed"


def check_no_config(root):
    assert not os.path.exists(os.path.join(root, "rerun", "sim", "config")), "config written"


def check_outputs(root):
    """Every wcs-/fcr- file reads back whole and finite; no temporary file remains. Returns
    the number of outputs."""
    n = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            assert not name.endswith(".tmp"), f"temporary file left: {p}"
            if name.startswith("wcs-"):
                h = read_wcs_header(p)
                WCS(h)
                for k, v in h.items():
                    assert not (isinstance(v, float) and not np.isfinite(v)), (p, k)
                n += 1
            elif name.startswith("fcr-"):
                ccd = int(name[-8:-5])
                fc = read_fcr(p, hsc()[ccd].nquarter)
                assert np.all(np.isfinite(fc.coeffs)) and np.isfinite(fc.fluxmag0), p
                with fits.open(p, checksum=True) as hl:
                    hl.verify("exception")
                n += 1
    return n


def run(root, capsys, *args, rerun="sim", debug=False):
    argv = (["--debug"] if debug else []) + ["mosaic", root, f"--rerun={rerun}", *args]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, err.strip()



def assert_refused(repo, capsys, args, words):
    """mosaic.py `args` stops with exit 1 and one error line holding all `words`, nothing
    written (outputs, stored configuration) and the inputs untouched."""
    before = snapshot(repo)
    rc, err = run(repo, capsys, *args)
    assert rc == 1, err
    line = error_line(err)
    assert all(w in line for w in words), line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0
    check_no_config(repo)


def error_line(err):
    lines = [l for l in err.splitlines() if l.startswith("mosaicfit mosaic: error:")]
    assert len(lines) == 1, err
    return lines[0]


def wcs_files(root):
    return glob.glob(os.path.join(root, "rerun", "sim", "*", "*", "corr", "*", "wcs-*.fits"))


# ------------------------------------------------------------------------------------------
# damaged FITS inputs
# ------------------------------------------------------------------------------------------
def truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2 + 17)


def corrupt(path):
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(b"\x00garbage" * 40)


def corrupt_middle(path):
    with open(path, "r+b") as f:
        f.seek(2880)
        f.write(b"\xff" * 2880)


def wrong_schema(path):
    t = fits.BinTableHDU.from_columns([fits.Column("a", "D", array=np.arange(5.0)),
                                       fits.Column("b", "J", array=np.arange(5))])
    fits.HDUList([fits.PrimaryHDU(), t]).writeto(path, overwrite=True)


def nan_crval(path):
    with fits.open(path) as hl:
        hl = fits.HDUList([h.copy() for h in hl])
    for h in hl:
        if "CRVAL1" in h.header:
            h.header["CRVAL1"] = np.nan if False else "nan"
    hl.writeto(path, overwrite=True)


# (name, file, damage, expected rc, words in the message, the damaged CCD still gets outputs)
SKIP_CASES = [
    ("src-truncated", SRC, truncate, 1, ["SRC-0902800-045.fits"], False),
    ("src-corrupt-header", SRC, corrupt, 1, ["SRC-0902800-045.fits"], False),
    ("src-corrupt-data", SRC, corrupt_middle, 1, ["SRC-0902800-045.fits"], False),
    ("src-wrong-schema", SRC, wrong_schema, 1, ["SRC-0902800-045.fits"], False),
    ("src-all-nan-centroids", SRC, edit_table(set_column("base_SdssCentroid_x", np.nan)), 1,
     ["SRC-0902800-045.fits", "finite centroid"], False),
    ("corr-truncated-header", CORR, lambda p: os.truncate(p, 1000), 1, ["CORR-0902800-045.fits"], False),
    ("corr-corrupt", CORR, corrupt, 1, ["CORR-0902800-045.fits"], False),
    ("corr-wrong-schema", CORR, wrong_schema, 1, ["CORR-0902800-045.fits", "WCS"], False),
    ("corr-nan-crval", CORR, nan_crval, 1, ["CORR-0902800-045.fits", "CRVAL1"], False),
]
ROW_CASES = [
    ("src-some-nan-centroids", set_column("base_SdssCentroid_x", np.nan, slice(0, None, 3))),
    ("src-inf-centroids", set_column("base_SdssCentroid_y", np.inf, slice(0, None, 4))),
    ("src-nan-fluxes", set_column("base_PsfFlux_flux", np.nan, slice(0, None, 2))),
    ("src-inf-fluxes", set_column("base_PsfFlux_flux", np.inf, slice(1, None, 2))),
    ("src-nan-flux-errors", set_column("base_PsfFlux_fluxSigma", np.nan, slice(0, None, 2))),
    ("src-zero-flux-errors", set_column("base_PsfFlux_fluxSigma", 0.0)),
    ("src-negative-flux-errors", set_column("base_PsfFlux_fluxSigma", -1.0)),
    ("src-nan-centroid-errors", set_column("base_SdssCentroid_xSigma", np.nan)),
    ("src-zero-centroid-errors", set_column("base_SdssCentroid_xSigma", 0.0)),
    ("src-negative-centroid-errors", set_column("base_SdssCentroid_ySigma", -0.5)),
    ("src-inf-centroid-errors", set_column("base_SdssCentroid_ySigma", np.inf)),
]


@pytest.mark.parametrize("name,rel,damage,rc_expected,words,has_output", SKIP_CASES,
                         ids=[c[0] for c in SKIP_CASES])
def test_unreadable_input_is_skipped(repo, capsys, name, rel, damage, rc_expected, words, has_output):
    damage(os.path.join(repo, rel))
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == rc_expected, err
    line = next(l for l in err.splitlines() if "0902800-045" in l)
    assert line.startswith("mosaic: skipping") and all(w in line for w in words), line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) > 0
    assert any("-0902800-046.fits" in p for p in wcs_files(repo))
    assert any("-0902800-045.fits" in p for p in wcs_files(repo)) == has_output


@pytest.mark.parametrize("name,fn", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_bad_rows_are_dropped(repo, capsys, name, fn):
    """NaN/inf centroids, fluxes or errors, zero or negative errors in every row of one CCD
    (or a part of the rows): those detections are not used; the run succeeds and no NaN
    reaches the outputs."""
    for v in ("0902798", "0902800"):
        edit_table(fn)(os.path.join(repo, SRC.replace("0902800", v)))
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 0, err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) >= 2 * NCCD * 3 - 10


def test_corr_pixels_truncated(repo, capsys):
    """mosaic.py reads only the CORR headers: a CORR cut in its pixels does not stop it (the
    pixels are calibrateExposure's business, which reports them)."""
    truncate(os.path.join(repo, CORR))
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 0, err
    check_inputs_untouched(before, repo)
    assert any("-0902800-045.fits" in p for p in wcs_files(repo))
    check_outputs(repo)


def test_empty_catalog(repo, capsys):
    empty_table(os.path.join(repo, SRC))
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 0, err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) > 0


def _shard(repo):
    return sorted(glob.glob(os.path.join(repo, "ref_cats", "*", "[0-9]*.fits")))


@pytest.mark.parametrize("damage", [truncate, corrupt, corrupt_middle, wrong_schema],
                         ids=["truncated", "corrupt-header", "corrupt-data", "wrong-schema"])
def test_bad_reference_shard(repo, capsys, damage):
    shards = _shard(repo)
    for s in shards:          # all: whichever the tract needs is damaged
        damage(s)
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 1
    line = error_line(err)
    assert os.path.basename(os.path.dirname(shards[0])) in line and ".fits" in line, line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0
    check_no_config(repo)


def test_nan_reference_coordinates(repo, capsys):
    """Reference stars with NaN or infinite coordinates are not matched (not a crash)."""
    for s in _shard(repo):
        with fits.open(s) as hl:
            hl = fits.HDUList([h.copy() for h in hl])
        d = hl[1].data
        d["coord_ra"][::5] = np.nan
        d["coord_dec"][1::5] = np.inf
        hl.writeto(s, overwrite=True)
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 0, err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) > 0


# ------------------------------------------------------------------------------------------
# the registry
# ------------------------------------------------------------------------------------------
def _sql(repo, *statements):
    con = sqlite3.connect(os.path.join(repo, "registry.sqlite3"))
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()


def _dup_rows(repo):
    path = os.path.join(repo, "registry.sqlite3")
    con = sqlite3.connect(path)
    rows = con.execute("select field, visit, filter, dateObs, pointing, ccd, config, taiObs, "
                       "expTime from raw").fetchall()
    con.execute("drop table raw")
    con.execute("create table raw (id integer primary key autoincrement, field text, visit int, "
                "filter text, dateObs text, pointing int, ccd int, config text, taiObs text, "
                "expTime double)")
    rows.append(next(r for r in rows if r[1] == 902800 and r[5] == 45))
    con.executemany("insert into raw (field, visit, filter, dateObs, pointing, ccd, config, taiObs, "
                    "expTime) values (?,?,?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()


REGISTRY_CASES = [
    ("missing", lambda r: os.remove(os.path.join(r, "registry.sqlite3")), ["registry.sqlite3"]),
    ("corrupt", lambda r: corrupt(os.path.join(r, "registry.sqlite3")), ["registry"]),
    ("no-raw-table", lambda r: _sql(r, "drop table raw"), ["registry", "raw"]),
    ("without-the-visits", lambda r: _sql(r, "delete from raw where visit >= 902798"), ["visit"]),
    ("duplicate-rows", _dup_rows, ["visit 902800", "45"]),
    ("two-filters", lambda r: _sql(r, "update raw set filter='HSC-R' where visit=902800 and ccd=45"),
     ["visit 902800", "HSC-R"]),
]


@pytest.mark.parametrize("name,damage,words", REGISTRY_CASES, ids=[c[0] for c in REGISTRY_CASES])
def test_bad_registry(repo, capsys, name, damage, words):
    damage(repo)
    assert_refused(repo, capsys, ID, words)


# ------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------
ARG_CASES = [
    ("id-syntax", ["--id", "visit=90x2798", CCDS, "tract=0"], ["90x2798"]),
    ("id-no-equals", ["--id", "visit", CCDS, "tract=0"], ["visit"]),
    ("id-open-range", ["--id", "visit=902798..", CCDS, "tract=0"], ["902798.."]),
    ("id-empty-range", ["--id", "visit=902802..902798", CCDS, "tract=0"], ["902802..902798"]),
    ("id-unknown-key", ["--id", VISITS, "chip=40", "tract=0"], ["chip"]),
    ("id-no-such-ccds", ["--id", VISITS, "ccd=200..201", "tract=0"], ["ccd"]),
    ("tract-not-in-skymap", ["--id", VISITS, CCDS, "tract=7"], ["tract 7"]),
    ("config-unknown-key", ID + ["--config", "fitingOrder=9"], ["fitingOrder", "fittingOrder"]),
    ("config-wrong-type", ID + ["--config", "fittingOrder=nine"], ["fittingOrder", "nine", "int"]),
    ("config-wrong-bool", ID + ["--config", "solveCcd=maybe"], ["solveCcd", "maybe", "bool"]),
    ("config-out-of-range", ID + ["--config", "fittingOrder=0"], ["fittingOrder"]),
    ("config-no-equals", ID + ["--config", "fittingOrder"], ["fittingOrder", "KEY=VALUE"]),
    ("config-no-refcat", ID + ["--config", "refcat=nosuch"], ["nosuch"]),
]


@pytest.mark.parametrize("name,args,words", ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_bad_arguments(repo, capsys, name, args, words):
    if name == "tract-not-in-skymap":
        assert cli.main(["make-skymap", repo, "--rerun=sim", "--id", VISITS, CCDS]) == 0
        capsys.readouterr()
    assert_refused(repo, capsys, args, words)


def test_tract_without_overlap(repo, capsys):
    """The rings sky map's tract 0 is at the south pole: no CCD of the field overlaps it."""
    assert cli.main(["make-skymap", repo, "--rerun=sim", "--rings"]) == 0
    capsys.readouterr()
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 1
    assert "tract 0 does not overlap" in error_line(err)
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0
    check_no_config(repo)


@pytest.mark.parametrize("rerun", ["../escape", "sim/../../escape", "/tmp/escape-abs", ""],
                         ids=["dotdot", "dotdot-inner", "absolute", "empty"])
def test_rerun_escaping_root(repo, capsys, rerun):
    before = snapshot(repo)
    parent = set(os.listdir(os.path.dirname(repo)))
    rc, err = run(repo, capsys, *ID, rerun=rerun)
    assert rc == 1
    assert "rerun" in error_line(err)
    assert set(os.listdir(os.path.dirname(repo))) == parent
    assert not os.path.exists("/tmp/escape-abs")
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0
    check_no_config(repo)


def test_existing_output_needs_clobber_config(repo, capsys):
    rc, err = run(repo, capsys, *ID)
    assert rc == 0, err
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID, "--config", "fittingOrder=7")
    assert rc == 1 and "--clobber-config" in error_line(err)
    after = snapshot(repo)
    lock = os.path.join("rerun", "sim", ".mosaicfit.lock")     # holds the last run's pid
    after.pop(lock, None)
    before.pop(lock, None)
    assert after == before          # nothing rewritten
    check_outputs(repo)


def test_debug_shows_the_traceback(repo):
    with pytest.raises(MosaicError, match="fitingOrder"):
        cli.main(["--debug", "mosaic", repo, "--rerun=sim", *ID, "--config", "fitingOrder=9"])


# ------------------------------------------------------------------------------------------
# the output folder: read-only or full
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code,after", [(errno.ENOSPC, 20), (errno.EROFS, 0), (errno.EACCES, 0),
                                        (errno.ENOSPC, 0)],
                         ids=["disk-full-midway", "read-only", "permission", "disk-full-at-once"])
def test_output_write_fails(repo, capsys, failing_replace, code, after):
    """os.replace (the commit of each atomic write) fails after `after` files: a one-line error
    naming the file and the reason, whole files or none, no temporary file left."""
    failing_replace(("wcs-", "fcr-"), code, after)
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 1
    line = error_line(err)
    assert os.strerror(code) in line and ("wcs-" in line or "fcr-" in line), line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == after


def test_output_write_fails_while_writing(repo, capsys, monkeypatch):
    """The disk fills while a file is being written: half of it reaches the temporary file,
    then the write raises ENOSPC."""
    import builtins
    import mosaicfit.io.atomic as atomic          # the writer of the wcs- and fcr- bytes
    count = [0]

    class Half:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fake_open(name, mode="r", *a, **k):
        f = builtins.open(name, mode, *a, **k)
        if "w" in mode and str(name).endswith(".tmp"):
            count[0] += 1
            if count[0] > 5:
                return Half(f)
        return f

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 1
    assert os.strerror(errno.ENOSPC) in error_line(err)
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 5


# ------------------------------------------------------------------------------------------
# a tract that cannot be solved
# ------------------------------------------------------------------------------------------
def test_too_few_stars(repo, capsys):
    """Every catalogue cut to 2 detections: a clear error, nothing written, no NaN."""
    for p in glob.glob(os.path.join(repo, "rerun", "sim", "*", "*", "output", "SRC-*.fits")):
        with fits.open(p) as hl:
            hl = fits.HDUList([h.copy() for h in hl])
        hl[1] = fits.BinTableHDU(data=hl[1].data[:2], header=hl[1].header)
        hl.writeto(p, overwrite=True)
    before = snapshot(repo)
    rc, err = run(repo, capsys, *ID)
    assert rc == 1, err
    line = error_line(err)
    assert "star" in line, line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0
    check_no_config(repo)


def test_single_ccd(repo, capsys):
    """One CCD of one visit: either solved (whole outputs, no NaN) or a clear error."""
    before = snapshot(repo)
    rc, err = run(repo, capsys, "--id", "visit=902798", "ccd=45", "tract=0")
    if rc:
        error_line(err)
    check_inputs_untouched(before, repo)
    check_outputs(repo)
