"""Reliability of calibrateExposure.py and calibrateCatalog.py (issue 8): a small simulated
repository (3 visits x 21 CCDs, solved by mosaic.py) damaged in each way of the issue. Every
run must end with one line on stderr naming the file or value and the problem (no traceback),
the documented exit status, no partial or corrupt output (every CALEXP/CALSRC present reads
back whole, no NaN or inf that its inputs did not have; no temporary file left) and the inputs
untouched.

Exit status (README, "What each failure does"): a CCD whose inputs are unreadable, damaged or
absent is skipped with one line ``calibrateX: skipping visit=V ccd=C tract=T: PATH: problem``,
the others are written, and the run exits 1; NaN/inf rows of a catalogue and empty catalogues
are calibrated (NaN where there is no centroid) with exit 0; errors that stop the run (the
command line, the registry, the rerun, a tract without mosaic outputs, an output that cannot
be written) are one line ``mosaicfit calibrate-X: error: ...`` with exit 1.
"""
import errno
import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

from damage import edit_table, empty_table, set_column
import mosaicfit.io.atomic as atomic
from mosaicfit import MosaicError, cli
from mosaicfit.pipeline.apply import CORR_COLUMN
from mosaicfit.io.src import read_src
from mosaicfit.io.corr import read_corr, write_corr
from mosaicfit.io.lock import LOCK_NAME
from mosaicfit.io.fits import make_wcs

from test_reliability_mosaic import corrupt, corrupt_middle, snapshot, truncate, wrong_schema
from test_reliability_runs import env

VISITS = "visit=902798..902802:2"
CCDS = "ccd=47..48"
ID = ["--id", "visit=902798^902800", CCDS, "tract=0"]
N_TASKS = 4
V, C = 902800, 48                      # the CCD that gets damaged
KEY = f"{V:07d}-{C:03d}"
RR = "rerun/sim/01201/HSC-I"
SRC = f"{RR}/output/SRC-{KEY}.fits"
CORR = f"{RR}/corr/CORR-{KEY}.fits"
WCS = f"{RR}/corr/0000/wcs-{KEY}.fits"
FCR = f"{RR}/corr/0000/fcr-{KEY}.fits"
CALEXP = f"{RR}/corr/0000/CALEXP-{KEY}.fits"
CALSRC = f"{RR}/output/0000/CALSRC-{KEY}.fits"
NO_MOSAIC = (902800, 46)               # a CCD without wcs-/fcr- (removed after mosaic.py)
PIXELS = (96, 160)                     # (height, width) of the CORR images given pixels

pytestmark = pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")

COMMANDS = {"exposure": ("calibrate-exposure", "calibrateExposure", "CALEXP-"),
            "catalog": ("calibrate-catalog", "calibrateCatalog", "CALSRC-")}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("relcal") / "repo")
    assert cli.main(["simulate", root, "--visits", "3", "--ccds", "40..60", "--seed", "1"]) == 0
    assert cli.main(["mosaic", root, "--rerun=sim", "--id", VISITS, "ccd=40..60", "tract=0",
                     "--config", "fittingOrder=5", "fluxFitOrder=3"]) == 0
    # small pixel arrays for the CCDs the tests calibrate (the simulation writes 0x0 CORRs)
    rng = np.random.default_rng(5)
    for path in glob.glob(os.path.join(root, RR, "corr", "CORR-*-04[7-9].fits")) + \
            glob.glob(os.path.join(root, RR, "corr", "CORR-*-05[0-3].fits")):
        exp = read_corr(path)
        exp.image = rng.normal(100, 10, PIXELS).astype(np.float32)
        exp.variance = np.full(PIXELS, 100, np.float32)
        exp.mask = np.zeros(PIXELS, np.int32)
        write_corr(path, exp)
    shutil.rmtree(os.path.join(root, "truth"))
    # a CCD mosaic.py left without products (which CCDs those are is the fit's business:
    # test_partial_runs): the calibrate commands must skip it with one line
    for kind in ("wcs", "fcr"):
        p = os.path.join(root, RR, "corr", "0000", f"{kind}-%07d-%03d.fits" % NO_MOSAIC)
        if os.path.exists(p):
            os.remove(p)
    return root


# ------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------
def is_output(rel):
    return os.path.basename(rel).startswith(("CALEXP-", "CALSRC-")) or \
        os.path.basename(rel) == LOCK_NAME


def check_inputs_untouched(before, root):
    """Every input file is as it was; nothing but outputs (and the lock) appeared."""
    after = snapshot(root)
    for rel, sig in before.items():
        if not is_output(rel):
            assert after.get(rel) == sig, f"input {rel} changed"
    new = [rel for rel in after if rel not in before and not is_output(rel)]
    assert not new, f"unexpected new files: {new}"


def _input_of(path, root):
    name = os.path.basename(path)
    key = name.split("-", 1)[1]
    if name.startswith("CALEXP-"):
        return os.path.join(root, RR, "corr", "CORR-" + key)
    return os.path.join(root, RR, "output", "SRC-" + key)


def _bad_rows(a):
    a = np.asarray(a, dtype=float)
    bad = ~np.isfinite(a)
    return bad.reshape(len(a), -1).any(axis=1) if a.ndim > 1 else bad


def check_calsrc(path, root):
    with fits.open(path, checksum=True) as hl:          # whole, checksums right
        hl.verify("exception")
    out = read_src(path)
    src = read_src(_input_of(path, root))
    assert len(out) == len(src), path
    x = np.asarray(src["base_SdssCentroid_x"], float)
    y = np.asarray(src["base_SdssCentroid_y"], float)
    with np.errstate(invalid="ignore"):     # finite, and on or near the CCD
        good = (np.abs(x) < 1e5) & (np.abs(y) < 1e5)
    f = np.asarray(out[CORR_COLUMN])
    assert np.all(np.isfinite(f[good]) & (f[good] > 0)), path
    assert np.all(np.isnan(f[~(np.isfinite(x) & np.isfinite(y))])), path
    for name in out.colnames:
        a = np.asarray(out[name])
        if a.dtype.kind != "f":
            continue
        if name in src.colnames:     # no NaN/inf that the input row did not have
            new = _bad_rows(a) & ~_bad_rows(src[name]) & good
            assert not np.any(new), (path, name)
        else:                        # magnitudes: NaN for unusable fluxes, never inf
            assert not np.any(np.isinf(a)), (path, name)
    return out


def check_calexp(path, root):
    with fits.open(path, checksum=True) as hl:
        hl.verify("exception")
    out = read_corr(path)
    corr = read_corr(_input_of(path, root))
    make_wcs(out.wcs_header, path)
    assert np.isfinite(out.fluxmag0) and out.fluxmag0 > 0, path
    if corr.image is None:
        assert out.image is None
        return out
    for plane in ("image", "variance"):
        a, b = getattr(out, plane), getattr(corr, plane)
        assert a.shape == b.shape, path
        assert np.array_equal(np.isfinite(a), np.isfinite(b)), (path, plane)
    assert np.array_equal(out.mask, corr.mask)
    return out


def check_outputs(root):
    """Every CALEXP/CALSRC reads back whole and sane; no temporary file anywhere. Returns
    the number of outputs."""
    n = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            assert not name.endswith(".tmp"), f"temporary file left: {p}"
            if name.startswith("CALSRC-"):
                check_calsrc(p, root)
                n += 1
            elif name.startswith("CALEXP-"):
                check_calexp(p, root)
                n += 1
    return n


def outputs(root, kind=None):
    pats = [f"{RR}/corr/*/CALEXP-*.fits", f"{RR}/output/*/CALSRC-*.fits"]
    if kind == "exposure":
        pats = pats[:1]
    elif kind == "catalog":
        pats = pats[1:]
    return sorted(p for pat in pats for p in glob.glob(os.path.join(root, pat)))


def run(root, capsys, kind, *args, rerun="sim", debug=False):
    argv = (["--debug"] if debug else []) + [COMMANDS[kind][0], root, f"--rerun={rerun}", *args]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "unexpected" not in err, err
    return rc, out, err.strip()


def error_line(err, kind):
    """The one line of stderr: the command's error."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mosaicfit {COMMANDS[kind][0]}: error: "), lines[0]
    return lines[0]


def skip_line(err, kind):
    """The one line of stderr: the damaged CCD skipped."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{COMMANDS[kind][1]}: skipping visit={V} ccd={C} tract=0: "), \
        lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------
# damage
# ------------------------------------------------------------------------------------------
def set_raw(key, text):
    """Rewrite the value of card `key` (every HDU) as the raw text `text`, in place, as a
    broken writer would (astropy refuses to write NaN or inf)."""
    def damage(path):
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            k = key.encode().ljust(8)
            n = 0
            for i in range(0, len(data), 80):
                if data[i:i + 10] == k + b"= ":
                    data[i + 10:i + 80] = text.encode().rjust(20).ljust(70)
                    n += 1
            assert n, key
            f.seek(0)
            f.write(data)
    return damage


def drop_keys(*keys):
    def damage(path):
        with fits.open(path) as hl:
            hl = fits.HDUList([h.copy() for h in hl])
        n = 0
        for h in hl:
            for k in keys:
                if k in h.header:
                    del h.header[k]
                    n += 1
        assert n, keys
        hl.writeto(path, overwrite=True, output_verify="ignore")
    return damage


def set_keys(**values):
    def damage(path):
        with fits.open(path) as hl:
            hl = fits.HDUList([h.copy() for h in hl])
        for h in hl:
            for k, v in values.items():
                if k in h.header:
                    h.header[k] = v
        hl.writeto(path, overwrite=True, output_verify="ignore")
    return damage


def nan_pixels(path):
    exp = read_corr(path)
    exp.image[::7, ::5] = np.nan
    exp.image[3, :] = np.inf
    exp.variance[::11, 1::3] = np.nan
    write_corr(path, exp)


def plane_sizes_differ(path):
    with fits.open(path) as hl:
        hl = fits.HDUList([h.copy() for h in hl])
    hl[1].data = np.zeros((7, 9), np.float32)
    hl.writeto(path, overwrite=True)


BOTH = ("exposure", "catalog")
EXP = ("exposure",)
CAT = ("catalog",)

# (name, kinds, file, damage, words in the skip line). The damaged CCD gets no output, the
# 11 others do, the exit status is 1.
SKIP_CASES = [
    # the image (calibrateExposure)
    ("corr-truncated-pixels", EXP, CORR, truncate, ["CORR-" + KEY, "truncated"]),
    ("corr-truncated-header", EXP, CORR, lambda p: os.truncate(p, 1000), ["CORR-" + KEY]),
    ("corr-corrupt", EXP, CORR, corrupt, ["CORR-" + KEY]),
    ("corr-corrupt-header-block", EXP, CORR, corrupt_middle, ["CORR-" + KEY]),
    ("corr-empty-file", EXP, CORR, lambda p: os.truncate(p, 0), ["CORR-" + KEY, "empty"]),
    ("corr-wrong-schema", EXP, CORR, wrong_schema, ["CORR-" + KEY]),
    ("corr-no-wcs", EXP, CORR, drop_keys("CD1_1", "CD1_2", "CD2_1", "CD2_2"),
     ["CORR-" + KEY, "WCS"]),
    ("corr-plane-sizes-differ", EXP, CORR, plane_sizes_differ, ["CORR-" + KEY, "sizes differ"]),
    ("corr-missing", EXP, CORR, os.remove, ["no CORR file", "CORR-" + KEY]),
    # the catalogue (calibrateCatalog)
    ("src-truncated", CAT, SRC, truncate, ["SRC-" + KEY]),
    ("src-corrupt", CAT, SRC, corrupt, ["SRC-" + KEY]),
    ("src-corrupt-header-block", CAT, SRC, corrupt_middle, ["SRC-" + KEY]),
    ("src-wrong-schema", CAT, SRC, wrong_schema, ["SRC-" + KEY, "schema"]),
    ("src-missing", CAT, SRC, os.remove, ["no SRC file", "SRC-" + KEY]),
    # the mosaic WCS (both)
    ("wcs-truncated", BOTH, WCS, truncate, ["wcs-" + KEY]),
    ("wcs-corrupt", BOTH, WCS, corrupt, ["wcs-" + KEY]),
    ("wcs-wrong-schema", BOTH, WCS, wrong_schema, ["wcs-" + KEY, "WCS"]),
    ("wcs-no-cd", BOTH, WCS, drop_keys("CD1_1", "CD1_2", "CD2_1", "CD2_2"), ["wcs-" + KEY, "WCS"]),
    ("wcs-no-crpix", BOTH, WCS, drop_keys("CRPIX1"), ["wcs-" + KEY, "CRPIX1"]),
    ("wcs-no-ctype", BOTH, WCS, drop_keys("CTYPE1", "CTYPE2"), ["wcs-" + KEY, "WCS"]),
    ("wcs-nan-crval", BOTH, WCS, set_raw("CRVAL1", "NAN"), ["wcs-" + KEY, "CRVAL1"]),
    ("wcs-inf-cd", BOTH, WCS, set_raw("CD1_2", "1E999"), ["wcs-" + KEY, "CD1_2"]),
    ("wcs-nan-crpix", BOTH, WCS, set_raw("CRPIX2", "nan"), ["wcs-" + KEY, "CRPIX2"]),
    ("wcs-inf-sip", BOTH, WCS, set_raw("A_2_0", "-1E400"), ["wcs-" + KEY, "A_2_0"]),
    ("wcs-text-sip-order", BOTH, WCS, set_keys(A_ORDER="five"), ["wcs-" + KEY, "A_ORDER"]),
    ("wcs-singular-cd", BOTH, WCS, set_keys(CD1_1=0.0, CD1_2=0.0), ["wcs-" + KEY, "singular"]),
    ("wcs-absurd-sip", BOTH, WCS, set_keys(A_2_0=1e-3), ["wcs-" + KEY, "pixel area"]),
    ("wcs-missing", BOTH, WCS, os.remove, ["no wcs file", "wcs-" + KEY]),
    # the mosaic flux correction (both)
    ("fcr-truncated", BOTH, FCR, truncate, ["fcr-" + KEY, "truncated"]),
    ("fcr-corrupt", BOTH, FCR, corrupt, ["fcr-" + KEY]),
    ("fcr-wrong-schema", BOTH, FCR, wrong_schema, ["fcr-" + KEY, "ORDER"]),
    ("fcr-no-order", BOTH, FCR, drop_keys("ORDER"), ["fcr-" + KEY, "ORDER"]),
    ("fcr-no-coefficient", BOTH, FCR, drop_keys("C_1_0"), ["fcr-" + KEY, "C_1_0"]),
    ("fcr-no-x0", BOTH, FCR, drop_keys("X0"), ["fcr-" + KEY, "X0"]),
    ("fcr-no-fluxmag0", BOTH, FCR, drop_keys("FLUXMAG0"), ["fcr-" + KEY, "FLUXMAG0"]),
    ("fcr-ncoeff-mismatch", BOTH, FCR, set_keys(NCOEFF=36), ["fcr-" + KEY, "NCOEFF"]),
    ("fcr-nan-coefficient", BOTH, FCR, set_raw("C_0_1", "NaN"), ["fcr-" + KEY, "C_0_1"]),
    ("fcr-inf-fluxmag0", BOTH, FCR, set_raw("FLUXMAG0", "1E999"), ["fcr-" + KEY, "FLUXMAG0"]),
    ("fcr-inf-x0", BOTH, FCR, set_raw("X0", "-1E999"), ["fcr-" + KEY, "X0"]),
    ("fcr-zero-u-max", BOTH, FCR, set_keys(U_MAX=0.0), ["fcr-" + KEY, "U_MAX"]),
    ("fcr-absurd-zero-point", BOTH, FCR, set_keys(C_0_0=1e4), ["fcr-" + KEY]),
    ("fcr-order-out-of-range", BOTH, FCR, set_keys(ORDER=99), ["fcr-" + KEY, "ORDER"]),
    ("fcr-zero-fluxmag0", BOTH, FCR, set_keys(FLUXMAG0=0.0), ["fcr-" + KEY, "FLUXMAG0"]),
    ("fcr-missing", BOTH, FCR, os.remove, ["no fcr file", "fcr-" + KEY]),
]
SKIP_PARAMS = [pytest.param(c[0], kind, *c[2:], id=f"{c[0]}-{kind}")
               for c in SKIP_CASES for kind in c[1]]


@pytest.mark.parametrize("name,kind,rel,damage,words", SKIP_PARAMS)
def test_damaged_input_is_skipped(repo, capsys, name, kind, rel, damage, words):
    damage(os.path.join(repo, rel))
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, kind, *ID)
    assert rc == 1, err
    line = skip_line(err, kind)
    assert all(w in line for w in words), line
    assert f"{N_TASKS - 1} written, 1 failed" in out, out
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_TASKS - 1
    assert not os.path.exists(os.path.join(repo, CALEXP if kind == "exposure" else CALSRC))


def test_zero_fluxmag0_without_magnitudes(repo, capsys):
    """calibrateCatalog.py with doApplyCalib=False does not need FLUXMAG0."""
    set_keys(FLUXMAG0=0.0)(os.path.join(repo, FCR))
    rc, out, err = run(repo, capsys, "catalog", *ID, "--config", "doApplyCalib=False")
    assert rc == 0 and err == "", err
    assert check_outputs(repo) == N_TASKS
    assert "base_PsfFlux_mag" not in read_src(os.path.join(repo, CALSRC)).colnames


@pytest.mark.parametrize("kind", BOTH)
def test_ccd_without_mosaic_outputs(repo, capsys, kind):
    """mosaic.py wrote no wcs-/fcr- for a CCD (too few stars): named and skipped."""
    visit, ccd = NO_MOSAIC
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, kind, "--id", f"visit={visit}", "ccd=45..47", "tract=0")
    assert rc == 1
    lines = err.splitlines()
    assert len(lines) == 1 and f"skipping visit={visit} ccd={ccd} tract=0: no wcs file" in \
        lines[0] and "wcs-%07d-%03d.fits" % NO_MOSAIC in lines[0], err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 2


def test_skip_with_local_processes(repo, capsys):
    """The same report and status when the CCDs run in worker processes (-j 2)."""
    truncate(os.path.join(repo, FCR))
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, "catalog", *ID, "-j", "2")
    assert rc == 1
    assert "fcr-" + KEY in skip_line(err, "catalog")
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_TASKS - 1


# ------------------------------------------------------------------------------------------
# bad rows: calibrated, NaN where there is no centroid, exit 0
# ------------------------------------------------------------------------------------------
ROW_CASES = [
    ("src-some-nan-centroids", set_column("base_SdssCentroid_x", np.nan, slice(0, None, 3))),
    ("src-all-nan-centroids", set_column("base_SdssCentroid_y", np.nan)),
    ("src-inf-centroids", set_column("base_SdssCentroid_y", np.inf, slice(0, None, 4))),
    ("src-huge-centroids", set_column("base_SdssCentroid_x", 1e300, slice(1, None, 4))),
    ("src-nan-fluxes", set_column("base_PsfFlux_flux", np.nan, slice(0, None, 2))),
    ("src-inf-fluxes", set_column("base_PsfFlux_flux", np.inf, slice(1, None, 2))),
    ("src-negative-inf-fluxes", set_column("base_PsfFlux_flux", -np.inf, slice(1, None, 3))),
    ("src-zero-negative-fluxes", set_column("base_PsfFlux_flux", -5.0, slice(0, None, 2))),
    ("src-nan-flux-errors", set_column("base_PsfFlux_fluxSigma", np.nan, slice(0, None, 2))),
    ("src-inf-flux-errors", set_column("base_PsfFlux_fluxSigma", np.inf, slice(0, None, 2))),
    ("src-nan-coords", set_column("coord_ra", np.nan)),
]


@pytest.mark.parametrize("name,fn", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_bad_rows_are_calibrated(repo, capsys, name, fn):
    edit_table(fn)(os.path.join(repo, SRC))
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, "catalog", *ID)
    assert rc == 0 and err == "", err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_TASKS          # incl. the NaN/inf rule on every column


def test_empty_catalog(repo, capsys):
    empty_table(os.path.join(repo, SRC))
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, "catalog", *ID)
    assert rc == 0 and err == "", err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_TASKS
    t = read_src(os.path.join(repo, CALSRC))
    assert len(t) == 0 and CORR_COLUMN in t.colnames and "base_PsfFlux_mag" in t.colnames


def test_nan_pixels(repo, capsys):
    """NaN/inf pixels stay NaN/inf; no other pixel becomes one."""
    nan_pixels(os.path.join(repo, CORR))
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, "exposure", *ID)
    assert rc == 0 and err == "", err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_TASKS


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
    con = sqlite3.connect(os.path.join(repo, "registry.sqlite3"))
    cols = [r[1] for r in con.execute("pragma table_info(raw)") if r[1] != "id"]
    rows = con.execute(f"select {', '.join(cols)} from raw").fetchall()
    row = next(r for r in rows if r[cols.index("visit")] == V and r[cols.index("ccd")] == C)
    con.execute("drop table raw")
    con.execute(f"create table raw (id integer primary key autoincrement, {', '.join(cols)})")
    q = ", ".join("?" * len(cols))
    con.executemany(f"insert into raw ({', '.join(cols)}) values ({q})", rows + [row])
    con.commit()
    con.close()


REGISTRY_CASES = [
    ("missing", lambda r: os.remove(os.path.join(r, "registry.sqlite3")), ["registry.sqlite3"]),
    ("corrupt", lambda r: corrupt(os.path.join(r, "registry.sqlite3")), ["registry"]),
    ("no-raw-table", lambda r: _sql(r, "drop table raw"), ["registry", "raw"]),
    ("without-the-visits", lambda r: _sql(r, "delete from raw where visit >= 902798"),
     ["no data", "registry"]),
    ("duplicate-rows", _dup_rows, [f"visit {V}", str(C), "duplicate"]),
    ("two-filters", lambda r: _sql(r, f"update raw set filter='HSC-R' where visit={V} and ccd={C}"),
     [f"visit {V}", "HSC-R"]),
]


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize("name,damage,words", REGISTRY_CASES, ids=[c[0] for c in REGISTRY_CASES])
def test_bad_registry(repo, capsys, name, damage, words, kind):
    damage(repo)
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, kind, *ID, rerun="sim:fresh")
    assert rc == 1, err
    line = error_line(err, kind)
    assert all(w in line for w in words), line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0
    assert not os.path.exists(os.path.join(repo, "rerun", "fresh")), "rerun created"


def test_registry_without_one_visit(repo, capsys):
    """A visit of the --id range absent from the registry: named on one line, the rest done."""
    _sql(repo, f"delete from raw where visit={V}")
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, "catalog", *ID)
    assert rc == 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"not in the registry {os.path.join(repo, 'registry.sqlite3')}: visit={V} ccd=47"), err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_TASKS - 2


# ------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------
ARG_CASES = [
    ("id-syntax", BOTH, ["--id", "visit=90x2798", CCDS, "tract=0"], ["90x2798"]),
    ("id-no-equals", BOTH, ["--id", "visit", CCDS, "tract=0"], ["visit"]),
    ("id-open-range", BOTH, ["--id", "visit=902798..", CCDS, "tract=0"], ["902798.."]),
    ("id-empty-range", BOTH, ["--id", "visit=902802..902798", CCDS, "tract=0"],
     ["902802..902798", "empty"]),
    ("id-zero-stride", BOTH, ["--id", "visit=902798..902802:0", CCDS, "tract=0"], [":0"]),
    ("id-unknown-key", BOTH, ["--id", VISITS, "chip=40", "tract=0"], ["chip"]),
    ("id-bad-tract", BOTH, ["--id", VISITS, CCDS, "tract=zero"], ["zero"]),
    ("id-no-such-ccds", BOTH, ["--id", VISITS, "ccd=200..201", "tract=0"], ["no data", "ccd"]),
    ("id-no-such-visit", BOTH, ["--id", "visit=1", CCDS, "tract=0"], ["visit=1"]),
    ("tract-without-outputs", BOTH, ["--id", VISITS, CCDS, "tract=7"], ["tract 7", "mosaic"]),
    ("config-unknown-key", EXP, ID + ["--config", "interpolat=True"],
     ["interpolat", "interpolate"]),
    ("config-other-commands-key", EXP, ID + ["--config", "doApplyCalib=False"],
     ["doApplyCalib"]),
    ("config-unknown-key", CAT, ID + ["--config", "doApplyCal=False"],
     ["doApplyCal", "doApplyCalib"]),
    ("config-wrong-bool", EXP, ID + ["--config", "interpolate=maybe"], ["interpolate", "maybe"]),
    ("config-wrong-bool", CAT, ID + ["--config", "doApplyCalib=2"], ["doApplyCalib", "2"]),
    ("config-wrong-int", BOTH, ID + ["--config", "threads=two"], ["threads", "two", "integer"]),
    ("config-out-of-range", BOTH, ID + ["--config", "threads=-1"], ["threads", "-1"]),
    ("config-no-equals", BOTH, ID + ["--config", "threads"], ["threads", "KEY=VALUE"]),
    ("jobs-zero", BOTH, ID + ["-j", "0"], ["-j", "0"]),
]
ARG_PARAMS = [pytest.param(c[0], kind, c[2], c[3], id=f"{c[0]}-{kind}")
              for c in ARG_CASES for kind in c[1]]


@pytest.mark.parametrize("name,kind,args,words", ARG_PARAMS)
def test_bad_arguments(repo, capsys, name, kind, args, words):
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, kind, *args, rerun="sim:fresh")
    assert rc == 1, err
    line = error_line(err, kind)
    assert all(w in line for w in words), line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0
    fresh = os.path.join(repo, "rerun", "fresh")
    if name == "tract-without-outputs":     # looked up under the lock (mosaic.py may be
        assert os.listdir(fresh) == [LOCK_NAME]     # writing them): only the lock file
    else:
        assert not os.path.exists(fresh), "rerun created"


def test_argparse_errors_are_one_usage_line(repo, capsys):
    """Options argparse itself rejects: its usage message and status 2, no traceback."""
    for argv in (["calibrate-catalog", repo, *ID],                          # no --rerun
                 ["calibrate-exposure", repo, "--rerun=sim", *ID, "-j", "x"],
                 ["calibrate-catalog", repo, "--rerun=sim", *ID, "--bogus"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
    assert check_outputs(repo) == 0


def test_debug_shows_the_traceback(repo):
    with pytest.raises(MosaicError, match="interpolat"):
        cli.main(["--debug", "calibrate-exposure", repo, "--rerun=sim", *ID,
                  "--config", "interpolat=True"])


@pytest.mark.parametrize("rerun", ["../escape", "sim/../../escape", "/tmp/escape-abs", "",
                                   "sim:../escape", "../../x:out"],
                         ids=["dotdot", "dotdot-inner", "absolute", "empty", "output-dotdot",
                              "input-dotdot"])
@pytest.mark.parametrize("kind", BOTH)
def test_rerun_escaping_root(repo, capsys, rerun, kind):
    before = snapshot(repo)
    parent = set(os.listdir(os.path.dirname(repo)))
    rc, out, err = run(repo, capsys, kind, *ID, rerun=rerun)
    assert rc == 1
    assert "rerun" in error_line(err, kind)
    assert set(os.listdir(os.path.dirname(repo))) == parent
    assert not os.path.exists("/tmp/escape-abs")
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0


def test_missing_root(tmp_path, capsys):
    root = str(tmp_path / "nothing")
    rc, out, err = run(root, capsys, "catalog", *ID)
    assert rc == 1 and root in error_line(err, "catalog")
    assert not os.path.exists(root)


# ------------------------------------------------------------------------------------------
# existing outputs: a re-run skips the complete ones, redoes damaged or stale ones
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BOTH)
def test_rerun_skips_complete_outputs(repo, capsys, kind):
    rc, out, err = run(repo, capsys, kind, *ID)
    assert rc == 0 and err == "", err
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, kind, *ID)
    assert rc == 0 and err == "" and f"0 written, {N_TASKS} up to date" in out, out
    after = snapshot(repo)
    for s in (before, after):
        s.pop(os.path.join("rerun", "sim", LOCK_NAME), None)
    assert after == before                 # nothing rewritten
    # --overwrite recomputes: the same bytes
    rc, out, err = run(repo, capsys, kind, *ID, "--overwrite")
    assert rc == 0 and f"{N_TASKS} written" in out
    after = snapshot(repo)
    assert {k: v[0] for k, v in after.items() if is_output(k) and LOCK_NAME not in k} == \
        {k: v[0] for k, v in before.items() if is_output(k)}
    assert check_outputs(repo) == N_TASKS


def _damage_output(how):
    def damage(path):
        if how == "truncated":
            truncate(path)
        elif how == "garbage":
            corrupt(path)
        elif how == "empty":
            os.truncate(path, 0)
        elif how == "stale":                     # older than its inputs
            t = os.stat(path).st_mtime - 3600
            os.utime(path, (t, t))
        future = time.time() + 60
        if how != "stale":                       # newer than the inputs: only its content
            os.utime(path, (future, future))     # can tell it is not complete
    return damage


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "stale"])
@pytest.mark.parametrize("kind", BOTH)
def test_rerun_redoes_damaged_outputs(repo, capsys, kind, how):
    rc, out, err = run(repo, capsys, kind, *ID)
    assert rc == 0
    target = os.path.join(repo, CALEXP if kind == "exposure" else CALSRC)
    whole = open(target, "rb").read()
    _damage_output(how)(target)
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, kind, *ID)
    assert rc == 0 and err == "" and f"1 written, {N_TASKS - 1} up to date" in out, out
    assert open(target, "rb").read() == whole
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_TASKS


# ------------------------------------------------------------------------------------------
# the output folder: read-only or full
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code,after", [(errno.ENOSPC, 2), (errno.EROFS, 0), (errno.EACCES, 0),
                                        (errno.ENOSPC, 0), (errno.EDQUOT, 1)],
                         ids=["disk-full-midway", "read-only", "permission", "disk-full-at-once",
                              "quota"])
@pytest.mark.parametrize("kind", BOTH)
def test_output_write_fails(repo, capsys, failing_replace, kind, code, after):
    """os.replace (the commit of each atomic write) fails after `after` files: one error line
    naming the file and the reason, the run stops, whole files or none, no temporary left."""
    count = failing_replace(("CALEXP-", "CALSRC-"), code, after)
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, kind, *ID)
    assert rc == 1
    line = error_line(err, kind)
    assert os.strerror(code) in line and COMMANDS[kind][2] in line, line
    assert count[0] == after + 1                     # stopped at the first failure
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == after


def test_output_folder_cannot_be_made(repo, capsys, monkeypatch):
    """The folder of the CALSRCs (output/0000) cannot be created (read-only file system)."""
    real = os.makedirs

    def makedirs(name, *a, **k):
        if os.fspath(name).endswith(os.path.join("output", "0000")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), name)
        return real(name, *a, **k)

    monkeypatch.setattr(os, "makedirs", makedirs)
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, "catalog", *ID)
    assert rc == 1
    line = error_line(err, "catalog")
    assert os.strerror(errno.EROFS) in line and "CALSRC-" in line, line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_output_folder_blocked_by_a_file(repo, capsys, jobs):
    """A file where the CALSRC folder should be: one error line, the run stops, also with the
    CCDs in worker processes."""
    blocker = os.path.join(repo, RR, "output", "0000")
    open(blocker, "w").close()
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, "catalog", *ID, "-j", jobs)
    assert rc == 1
    line = error_line(err, "catalog")
    assert "CALSRC-" in line and "cannot write" in line, line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(repo, capsys):
    folder = os.path.join(repo, RR, "corr", "0000")
    os.chmod(folder, 0o555)
    try:
        before = snapshot(repo)
        rc, out, err = run(repo, capsys, "exposure", *ID)
    finally:
        os.chmod(folder, 0o755)
    assert rc == 1
    assert "CALEXP-" in error_line(err, "exposure")
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 0


@pytest.mark.parametrize("kind", BOTH)
def test_disk_fills_while_writing(repo, capsys, monkeypatch, kind):
    """Half of a file reaches its temporary, then the write raises ENOSPC."""
    real = fits.HDUList.writeto
    count = [0]

    def writeto(self, name, *a, **k):
        if not str(name).endswith(".tmp"):
            return real(self, name, *a, **k)
        count[0] += 1
        if count[0] <= 2:
            return real(self, name, *a, **k)
        import io
        buf = io.BytesIO()
        real(self, buf, *a, **k)
        with open(name, "wb") as f:
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    def write_temporary(tmp, data):        # the byte-built files (io.atomic)
        count[0] += 1
        if count[0] <= 2:
            return real_bytes(tmp, data)
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

    real_bytes = atomic.write_temporary
    monkeypatch.setattr(fits.HDUList, "writeto", writeto)
    monkeypatch.setattr(atomic, "write_temporary", write_temporary)
    before = snapshot(repo)
    rc, out, err = run(repo, capsys, kind, *ID)
    assert rc == 1
    line = error_line(err, kind)
    assert os.strerror(errno.ENOSPC) in line and COMMANDS[kind][2] in line, line
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == 2


# ------------------------------------------------------------------------------------------
# killed runs, concurrent runs
# ------------------------------------------------------------------------------------------
ID_MANY = ["--id", VISITS, "ccd=47..53", "tract=0"]          # 21 CCDs
N_MANY = 21


def cmd(root, kind, *extra, prelude=""):
    """A calibrate command in a fresh interpreter; `prelude` (Python) runs first."""
    argv = [COMMANDS[kind][0], root, "--rerun=sim", *ID_MANY, *extra]
    code = (f"import sys\n{prelude}\nfrom mosaicfit.cli import main\n"
            f"sys.exit(main({argv!r}))\n")
    return [sys.executable, "-c", code]


# each CCD takes 0.1 s more (the first run of the concurrency tests)
SLOW = ("import time, mosaicfit.pipeline.calibrate as c\n_r = c.run_task\n"
        "c.run_task = lambda s: (time.sleep(0.1), _r(s))[1]")
# the 4th output hangs half written, for the kill
HANG = ("import os, time, io\nfrom astropy.io import fits\n_w = fits.HDUList.writeto\n_n = [0]\n"
        "def _hang(self, name, *a, **k):\n"
        "    if not str(name).endswith('.tmp'):\n"
        "        return _w(self, name, *a, **k)\n"
        "    _n[0] += 1\n"
        "    if _n[0] < 4:\n"
        "        return _w(self, name, *a, **k)\n"
        "    b = io.BytesIO(); _w(self, b, *a, **k)\n"
        "    with open(name, 'wb') as f:\n"
        "        f.write(b.getvalue()[:len(b.getvalue()) // 2]); f.flush()\n"
        "    print('half', flush=True); time.sleep(120)\n"
        "fits.HDUList.writeto = _hang\n"
        "import mosaicfit.io.atomic as _a\n_wt = _a.write_temporary\n"
        "def _hang_bytes(tmp, data):\n"
        "    _n[0] += 1\n"
        "    if _n[0] < 4:\n"
        "        return _wt(tmp, data)\n"
        "    with open(tmp, 'wb') as f:\n"
        "        f.write(data[:len(data) // 2]); f.flush()\n"
        "    print('half', flush=True); time.sleep(120)\n"
        "_a.write_temporary = _hang_bytes")


@pytest.mark.parametrize("kind", BOTH)
def test_killed_half_way_through_a_file_then_rerun(repo, capsys, kind):
    """SIGKILL while a file is half written: the outputs present are whole (the half file is
    a hidden temporary), a re-run removes the temporary and completes."""
    before = snapshot(repo)
    p = subprocess.Popen(cmd(repo, kind, prelude=HANG), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "half", p.stderr.read()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL
    tmp = [f for d, _, fs in os.walk(repo) for f in fs if f.endswith(".tmp")]
    assert len(tmp) == 1 and tmp[0].startswith("." + COMMANDS[kind][2]), tmp
    done = outputs(repo, kind)
    assert len(done) == 3
    for path in done:
        (check_calexp if kind == "exposure" else check_calsrc)(path, repo)
    rc, out, err = run(repo, capsys, kind, *ID_MANY)
    assert rc == 0 and err == "", err
    assert f"{N_MANY - 3} written, 3 up to date" in out, out
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_MANY          # no temporary left


def test_killed_at_a_random_moment_then_rerun(repo, capsys):
    before = snapshot(repo)
    p = subprocess.Popen(cmd(repo, "catalog", prelude=SLOW), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    t0 = time.time()
    while len(outputs(repo)) < 5 and p.poll() is None and time.time() - t0 < 60:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    n = len(outputs(repo))
    assert 5 <= n < N_MANY
    rc, out, err = run(repo, capsys, "catalog", *ID_MANY)
    assert rc == 0 and err == "", err
    check_inputs_untouched(before, repo)
    assert check_outputs(repo) == N_MANY


def _start_holding(repo, kind):
    """Start a slow run; return it once it holds the rerun's lock."""
    lock = os.path.join(repo, "rerun", "sim", LOCK_NAME)
    os.truncate(lock, 0)                   # mosaic.py's pid is in it
    first = subprocess.Popen(cmd(repo, kind, prelude=SLOW), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 60 and first.poll() is None:
        if open(lock).read().strip():
            break
        time.sleep(0.01)
    assert first.poll() is None
    return first, lock


def test_two_runs_at_once_second_refuses(repo):
    """While calibrateCatalog.py runs, a second calibrateCatalog.py, a calibrateExposure.py
    and a mosaic.py on the same rerun each wait MOSAICFIT_LOCK_TIMEOUT, then refuse naming
    the lock and the holder's pid; the first completes untouched."""
    first, lock = _start_holding(repo, "catalog")
    e = env(MOSAICFIT_LOCK_TIMEOUT=0.5)
    others = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
              for c in (cmd(repo, "catalog"), cmd(repo, "exposure"),
                        [sys.executable, "-m", "mosaicfit.cli", "mosaic", repo, "--rerun=sim",
                         "--id", VISITS, "ccd=40..60", "tract=0"])]
    results = [o.communicate(timeout=120) + (o.returncode,) for o in others]
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0 and err1 == "", err1
    assert f"{N_MANY} written" in out1
    for out, err, rc in results:
        assert rc == 1 and out == "", (out, err)
        lines = [l for l in err.splitlines() if "error:" in l]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lock in lines[0] and f"pid {first.pid}" in lines[0], lines[0]
    assert check_outputs(repo) == N_MANY


def test_two_runs_at_once_second_waits(repo):
    """The second run waits for the first, then finds everything done: no output is written
    twice or interleaved."""
    first, lock = _start_holding(repo, "exposure")
    second = subprocess.run(cmd(repo, "exposure"), capture_output=True, text=True, timeout=120,
                            env=env(MOSAICFIT_LOCK_TIMEOUT=120))
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0 and f"{N_MANY} written" in out1, err1
    assert second.returncode == 0, second.stderr
    assert "waiting for" in second.stderr and lock in second.stderr
    assert f"0 written, {N_MANY} up to date" in second.stdout, second.stdout
    assert check_outputs(repo) == N_MANY
