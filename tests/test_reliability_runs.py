"""Reliability of interrupted and concurrent runs (issue 8): mosaic.py killed (SIGKILL) while
writing, then re-run; two runs on the same rerun at once (the rerun lock)."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from mosaicfit import cli
from mosaicfit.io.lock import LOCK_NAME, rerun_lock

from test_reliability_mosaic import check_outputs

ID = ["--id", "visit=902798..902802:2", "ccd=30..70", "tract=0"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs") / "repo")
    assert cli.main(["simulate", root, "--visits", "3", "--ccds", "30..70", "--seed", "3"]) == 0
    return root


def mosaic_cmd(root, *extra, prelude=""):
    """mosaic.py in a fresh interpreter; `prelude` (Python) runs first."""
    argv = ["mosaic", root, "--rerun=sim", *ID, *extra]
    return [sys.executable, "-c",
            f"import sys\n{prelude}\nfrom mosaicfit.cli import main\nsys.exit(main({argv!r}))\n"]


# each product takes 50 ms more to write: the run is still writing when the test acts on it
# (a whole run of this tract takes ~1 s, too quick to catch otherwise)
SLOW_WRITES = ("import time, mosaicfit.io.atomic as _a\n_wt = _a.write_temporary\n"
               "_a.write_temporary = lambda tmp, data: (time.sleep(0.05), _wt(tmp, data))[1]")


def env(**kw):
    e = dict(os.environ)
    e.update({k: str(v) for k, v in kw.items()})
    return e


def outputs(root):
    return glob.glob(os.path.join(root, "rerun", "sim", "*", "*", "corr", "*", "[wf]c[sr]-*.fits"))


def test_killed_while_writing_then_rerun(repo):
    p = subprocess.Popen(mosaic_cmd(repo, prelude=SLOW_WRITES), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    t0 = time.time()
    while len(outputs(repo)) < 4 and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    n_partial = len(outputs(repo))
    assert 0 < n_partial < 2 * 3 * 41
    # what a reader sees after the kill: whole files (the hidden temporaries are not outputs)
    for path in outputs(repo):
        assert not os.path.basename(path).startswith(".")
    r = subprocess.run(mosaic_cmd(repo), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    n = check_outputs(repo)          # every output reads back; no .tmp file left anywhere
    assert n >= 2 * 3 * 41 - 20 and n > n_partial


def test_two_runs_at_once_second_refuses(repo):
    """The second run waits up to MOSAICFIT_LOCK_TIMEOUT, then refuses naming the lock and
    the holder's pid; the first completes untouched."""
    first = subprocess.Popen(mosaic_cmd(repo, prelude=SLOW_WRITES), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = os.path.join(repo, "rerun", "sim", LOCK_NAME)
    t0 = time.time()
    while time.time() - t0 < 60:
        if os.path.exists(lock) and open(lock).read().strip():
            break
        time.sleep(0.01)
    second = subprocess.run(mosaic_cmd(repo), capture_output=True, text=True, timeout=120,
                            env=env(MOSAICFIT_LOCK_TIMEOUT=0.5))
    first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()
    assert second.returncode == 1
    lines = [l for l in second.stderr.splitlines() if "error:" in l]
    assert len(lines) == 1 and "Traceback" not in second.stderr
    assert lock in lines[0] and f"pid {first.pid}" in lines[0], lines[0]
    assert check_outputs(repo) >= 2 * 3 * 41 - 20


def test_two_runs_at_once_second_waits(repo):
    """With a long enough timeout the second run waits for the first, then runs: both
    succeed and the outputs are whole."""
    first = subprocess.Popen(mosaic_cmd(repo, prelude=SLOW_WRITES), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    lock = os.path.join(repo, "rerun", "sim", LOCK_NAME)
    t0 = time.time()
    while time.time() - t0 < 60 and not (os.path.exists(lock) and open(lock).read().strip()):
        time.sleep(0.01)
    second = subprocess.run(mosaic_cmd(repo), capture_output=True, text=True, timeout=300,
                            env=env(MOSAICFIT_LOCK_TIMEOUT=300))
    first.wait(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "waiting for" in second.stderr
    assert check_outputs(repo) >= 2 * 3 * 41 - 20


def test_calibrate_takes_the_lock(repo, capsys, monkeypatch):
    """calibrateCatalog.py refuses while another process holds the rerun's lock."""
    lockdir = os.path.join(repo, "rerun", "sim")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mosaicfit.io.lock import rerun_lock\n"
        f"with rerun_lock({repo!r}, {lockdir!r}, 'holder'):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("MOSAICFIT_LOCK_TIMEOUT", "0.3")
        rc = cli.main(["calibrate-catalog", repo, "--rerun=sim", "--id", "visit=902798", "ccd=40"])
        err = capsys.readouterr().err
        assert rc == 1 and f"pid {holder.pid}, holder" in err and LOCK_NAME in err, err
    finally:
        holder.kill()
        holder.wait()
    with rerun_lock(repo, lockdir, "test", timeout=5):      # released with its holder
        pass


def test_stale_temporaries_removed(repo, capsys):
    folder = os.path.join(repo, "rerun", "sim", "01201", "HSC-I", "corr", "0000")
    os.makedirs(folder)
    stale = os.path.join(folder, ".wcs-0902798-040.fits.abcd_123.tmp")
    open(stale, "wb").write(b"SIMPLE  =")
    assert cli.main(["mosaic", repo, "--rerun=sim", *ID]) == 0
    assert not os.path.exists(stale)
    check_outputs(repo)


def test_lock_refuses_missing_root(tmp_path, capsys):
    root = str(tmp_path / "nothing")
    assert cli.main(["mosaic", root, "--rerun=sim", *ID]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert not os.path.exists(root)
