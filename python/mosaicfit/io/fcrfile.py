"""The mosaic's ``fcr-VVVVVVV-CCC.fits`` files (meas_mosaic's FluxFitParams), as bytes on disk.

Layout (``tests/data/meas_mosaic-outputs/fcr-*.fits``): an afw exposure with 0x0 pixels
(primary, IMAGE, MASK, VARIANCE, an empty afw archive index table); the primary header holds
``ORDER``, ``NCOEFF`` = (ORDER+1)(ORDER+2)/2, ``CHEBYSHEV``, ``ABSOLUTE``, ``U_MAX``, ``V_MAX``,
``X0``, ``Y0``, ``C_i_j`` (i + j <= ORDER), ``FLUXMAG0``, ``FLUXMAG0ERR`` (and ``FILTER``,
``AR_HDU``). What the numbers mean, and their checks, are the model's:
:class:`mosaicfit.model.fluxcorr.FluxCorrection`.
"""
import functools
import io
import os

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .afwtable import afw_table_hdu
from .corr import afw_header_only_exposure
from .fits import BLOCK, open_fits

__all__ = ["read_fcr_header", "fcr_file_bytes"]


def read_fcr_header(path):
    """The primary header of an fcr file (MosaicError naming the file if it cannot be read)."""
    path = os.fspath(path)
    with open_fits(path, "flux correction (fcr) file") as hdul:
        return hdul[0].header.copy()


def fcr_file_bytes(primary_cards):
    """The bytes of an fcr file with the card images of its primary header, with the HDU
    structure of the real files: 0x0 IMAGE/MASK/VARIANCE, an empty archive index table."""
    return afw_header_only_exposure(primary_cards, tail=_archive_index_bytes())


def _archive_index_hdu():
    """afw's (empty) archive index table, as in the real fcr files."""
    names = ["id", "cat.archive", "cat.persistable", "row0", "nrows", "name", "module"]
    docs = {"id": "Archive ID of the persistable object that owns the records pointed at by "
                  "this entry",
            "cat.archive": "index of the catalog this entry points to, from the perspective "
                           "of the archive",
            "cat.persistable": "index of the catalog this entry points to, from the "
                               "perspective of the Persistable",
            "row0": "first row used by the persistable object in this catalog",
            "nrows": "number of rows used by the persistable object in this catalog",
            "name": "unique name for the persistable object's class",
            "module": "Python module that should be imported to register the object's "
                      "factory"}
    cols = [np.zeros(0, np.int32)] * 5 + [np.zeros(0, "U64"), np.zeros(0, "U64")]
    table = Table(cols, names=names)
    extra = [("EXTTYPE", "ARCHIVE_INDEX", ""),
             ("AR_CATN", 0, "# of this catalog relative to the start of this archive"),
             ("AR_NCAT", 1, "# of catalogs in this archive, including the index")]
    return afw_table_hdu(table, docs=docs, extra_cards=extra, version=3)


@functools.lru_cache(maxsize=1)
def _archive_index_bytes():
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), _archive_index_hdu()]).writeto(buf)
    return buf.getvalue()[BLOCK:]          # drop the throw-away primary header (one block)
