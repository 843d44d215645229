"""One writer per rerun: an advisory lock (``fcntl.flock``) on ``ROOT/rerun/R/.mosaicfit.lock``.

mosaic.py, calibrateExposure.py and calibrateCatalog.py hold it while they run, so two runs
on the same rerun never interleave their outputs. A second run waits up to a timeout
(``MOSAICFIT_LOCK_TIMEOUT`` seconds, default 60; 0: do not wait), then refuses with a one-line
error naming the lock file and the pid of the holder. The lock is the kernel's: it goes away
with the holding process, even after SIGKILL, so a killed run never leaves a stale lock. The
file itself stays (removing it would race with a waiting run).
"""
import contextlib
import errno
import fcntl
import os
import re
import sys
import time

from .. import MosaicError

LOCK_NAME = ".mosaicfit.lock"
DEFAULT_TIMEOUT = 60.0


def _timeout():
    text = os.environ.get("MOSAICFIT_LOCK_TIMEOUT", "")
    if not text.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise MosaicError(f"MOSAICFIT_LOCK_TIMEOUT={text!r} is not a number of seconds") from None
    if not value >= 0:
        raise MosaicError(f"MOSAICFIT_LOCK_TIMEOUT={text!r} must be >= 0")
    return value


@contextlib.contextmanager
def rerun_lock(root, rerun_dir, command="mosaicfit", timeout=None):
    """Hold the lock of `rerun_dir` (created if need be, inside the existing folder `root`)
    for the block. Once held, temporary files left by a killed run are removed."""
    timeout = _timeout() if timeout is None else float(timeout)
    path = os.path.join(rerun_dir, LOCK_NAME)
    if not os.path.isdir(root):
        raise MosaicError(f"{root}: no such data repository folder")
    try:
        os.makedirs(rerun_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise MosaicError(f"{path}: cannot create the rerun's lock ({e.strerror or e})") from None
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise MosaicError(f"{path}: cannot lock ({e.strerror or e})") from None
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                raise MosaicError(f"{path}: the rerun is in use by another run ({holder}); "
                                  f"gave up after {timeout:g} s (MOSAICFIT_LOCK_TIMEOUT)")
            if not waited:
                print(f"{command}: waiting for {path} ({_holder(fd)})", file=sys.stderr)
                waited = True
            time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        remove_stale_temporaries(rerun_dir)
        yield path
    finally:
        os.close(fd)        # releases the lock


def _holder(fd):
    try:
        text = os.pread(fd, 200, 0).decode("ascii", "replace").split()
    except OSError:
        text = []
    if text and text[0].isdigit():
        return f"pid {text[0]}" + (f", {text[1]}" if len(text) > 1 else "")
    return "pid unknown"


_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")      # mosaicfit.io.atomic.atomic_path's names


def remove_stale_temporaries(rerun_dir):
    """Remove the hidden temporary files (``.NAME.XXXXXXXX.tmp``) a killed run left in the
    rerun. Call only while holding the rerun's lock: no other run is writing there."""
    n = 0
    for dirpath, _, files in os.walk(rerun_dir):
        for name in files:
            if _TMP.match(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
    return n
