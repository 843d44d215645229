"""Atomic file output: write to a temporary name in the target folder, then rename.

A reader never sees a partly written file, and an interrupted run leaves either the old file
or none (plus, at worst after a kill, a hidden ``.NAME.*.tmp`` file, which the next run under
the rerun's lock removes: :func:`mosaicfit.io.lock.remove_stale_temporaries`; none after an
error). An OSError while writing (full disk, read-only folder) becomes a one-line
:class:`OutputError` naming the file: the commands stop at the first one rather than fail
every output alike.
"""
import contextlib
import os
import tempfile

from astropy.io import fits

from .. import MosaicError

__all__ = ["OutputError", "atomic_path", "write_bytes", "write_fits", "write_table", "write_temporary",
           "write_text"]


class OutputError(MosaicError):
    """An output file cannot be written (full disk, read-only folder, no permission)."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success rename it to `path`.

    Usage::

        with atomic_path(out) as tmp:
            hdulist.writeto(tmp)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=folder)
        os.close(fd)
        os.unlink(tmp)  # writers such as astropy refuse to overwrite; give them a fresh name
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
    """Write bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        write_temporary(tmp, data)


def write_text(text, path):
    """Write a string to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
