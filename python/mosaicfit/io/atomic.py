"""Atomic file output: write to a temporary name in the target folder, then rename.

A reader never sees a partly written file, and an interrupted run leaves either the old file
or none (plus, at worst after a kill, a hidden ``.NAME.*.tmp`` file, which the next run under
the rerun's lock removes: :func:`mosaicfit.io.lock.remove_stale_temporaries`; none after an
error). An OSError while writing (full disk, read-only folder) becomes a one-line
:class:`OutputError` naming the file: the commands stop at the first one rather than fail
every output alike.
"""
import collections
import concurrent.futures
import contextlib
import errno
import itertools
import os
import secrets
import tempfile

from astropy.io import fits

from .. import MosaicError

__all__ = ["OutputError", "WRITER_THREADS", "atomic_path", "concurrent_writes", "write_bytes",
           "write_copies", "write_fits", "write_table", "write_temporary", "write_text"]


class OutputError(MosaicError):
    """An output file cannot be written (full disk, read-only folder, no permission)."""


# temporary names ".NAME." + 8 hex digits + ".tmp", the form
# mosaicfit.io.lock.remove_stale_temporaries removes: 4 random digits of this process and 4 of
# a counter, so that no file has to be created to find a free name (tempfile.mkstemp + unlink
# took ~30% of a mosaic's write phase under cProfile)
_TOKEN = secrets.token_hex(2)
_COUNT = itertools.count()


def _fresh_name(folder, base):
    n = next(_COUNT)
    tmp = os.path.join(folder, f".{base}.{_TOKEN}{n % 0x10000:04x}.tmp")
    if os.path.lexists(tmp):        # a killed run's leftover, or the counter wrapped
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    return tmp


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` (a name no file has: writers such as astropy
    refuse to overwrite); on success rename it to `path`.

    Usage::

        with atomic_path(out) as tmp:
            hdulist.writeto(tmp)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
        tmp = _fresh_name(folder, os.path.basename(path))
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):      # full disk, read-only folder, no permission: one line
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def write_fits(hdulist, path, tail=b""):
    """Write an astropy HDUList to `path` atomically, with CHECKSUM/DATASUM cards whose comment
    is fixed (astropy puts the time there), so that the same data always give the same bytes;
    `tail` (whole, padded HDUs) is appended as it is."""
    for hdu in hdulist:
        hdu.add_checksum(when="HDU checksum")
    with atomic_path(path) as tmp:
        hdulist.writeto(tmp, checksum=False)
        if tail:
            with open(tmp, "ab") as f:
                f.write(tail)


def write_table(table, path, extname=None):
    """Write an astropy Table to `path` atomically as a FITS binary table (HDU 1, named
    `extname`) after an empty primary HDU."""
    hdu = fits.table_to_hdu(table)
    if extname:
        hdu.name = extname
    write_fits(fits.HDUList([fits.PrimaryHDU(), hdu]), path)


def write_temporary(tmp, data):
    """Write `data` (bytes) to the temporary `tmp` of an :func:`atomic_path`: the one place
    every byte-built product (SRC, CORR, CALSRC, CALEXP files) reaches the disk (the fault
    injection of the reliability tests hooks here and at astropy's writeto)."""
    with open(tmp, "wb") as f:
        f.write(data)


def write_bytes(data, path):
    """Write bytes to `path` atomically (inside :func:`concurrent_writes`: on its threads)."""
    write_copies(data, [path])


def write_copies(data, paths):
    """Write bytes to every path of `paths` atomically: the first written, each other a hard
    link to it (made under a temporary name, then renamed), or written again where the file
    system has no hard links there. The same product wanted in several folders (a CCD in
    several tracts) is then written once: on a 200-visit strip, 1.45 copies per product of
    20-66 kB, 2.5 -> 1.8 GB on disk (the write phase, bound there by creating the files and
    formatting them, did not shrink). A later run replaces each name by a new file (a
    rename), never rewriting the shared one in place. Inside
    :func:`concurrent_writes`: on its threads, all copies by one of them."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        return
    pool = _WRITERS.get("pool")
    if pool is not None:
        pool.submit(data, paths)
        return
    _write_now(data, paths)


# link failures that mean "no hard links here" (another device, a file system without them,
# too many links): the bytes are written instead
_NO_LINKS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
             errno.ENOSYS}


def _link_or_write(first, data, path):
    with atomic_path(path) as tmp:
        try:
            os.link(first, tmp)
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
            write_temporary(tmp, data)


class _WriterPool:
    """Threads writing :func:`write_bytes`'s files; at most `depth` waiting. The first error
    stops the submissions (raised at the next one or at the end)."""

    def __init__(self, threads, depth):
        self._ex = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="writer")
        self._pending = collections.deque()
        self._depth = depth

    def submit(self, data, paths):
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._depth):
            self._pending.popleft().result()        # raises the first error
        self._pending.append(self._ex.submit(_write_now, data, paths))

    def close(self, failed=False):
        """Wait for the files handed over (after a failure: only those being written) and
        raise the first error."""
        if failed:
            self._ex.shutdown(wait=True, cancel_futures=True)
            return
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._ex.shutdown(wait=True, cancel_futures=True)


def _write_now(data, paths):
    with atomic_path(paths[0]) as tmp:
        write_temporary(tmp, data)
    for other in paths[1:]:
        _link_or_write(paths[0], data, other)


_WRITERS = {}


#: threads writing the files inside :func:`concurrent_writes`
WRITER_THREADS = 4


@contextlib.contextmanager
def concurrent_writes(threads=WRITER_THREADS, depth=256):
    """Inside this block :func:`write_bytes` hands its files to `threads` threads and
    returns: a mosaic writes thousands of few-kB products, whose open, write and rename then
    overlap the formatting of the next ones (on a local disk a few percent of the write phase;
    more where each create or rename waits on a network file system). Each file is still
    written atomically; the block ends when all are on disk, raising the first error (an
    :class:`OutputError`) if one failed, after which no file waiting is written. Nested
    blocks are the outer one."""
    if _WRITERS.get("pool") is not None:
        yield
        return
    pool = _WRITERS["pool"] = _WriterPool(threads, depth)
    ok = False
    try:
        yield
        ok = True
    finally:
        _WRITERS.pop("pool", None)
        pool.close(failed=not ok)


def write_text(text, path):
    """Write a string to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
