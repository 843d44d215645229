"""Atomic file output: write to a temporary name in the target folder, then rename.

A reader never sees a partly written file, and an interrupted run leaves either the old file
or none (plus, at worst after a kill, a hidden ``.NAME.*.tmp`` file; none after an error).
An OSError while writing (full disk, read-only folder) becomes a one-line MosaicError naming
the file.
"""
import contextlib
import os
import tempfile

from . import MosaicError


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
        raise MosaicError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):      # full disk, read-only folder, no permission: one line
            raise MosaicError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def write_fits(hdulist, path):
    """Write an astropy HDUList to `path` atomically (with checksums)."""
    with atomic_path(path) as tmp:
        hdulist.writeto(tmp, checksum=True)


def write_text(text, path):
    """Write a string to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
