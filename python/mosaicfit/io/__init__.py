"""Every file format of the package, one module each, and the data repository.

- :mod:`~mosaicfit.io.fits`: FITS helpers (opening with one-line errors, the fast reader of
  well-formed files, card images, WCS cards);
- :mod:`~mosaicfit.io.atomic`: the one atomic writer (temporary name, then rename);
- :mod:`~mosaicfit.io.afwtable`: lsst.afw.table FITS tables;
- :mod:`~mosaicfit.io.src`: SRC catalogues and their column schemas;
- :mod:`~mosaicfit.io.corr`: afw exposures (CORR, CALEXP, header-only exposures);
- :mod:`~mosaicfit.io.refcat`: HTM-sharded reference catalogues;
- :mod:`~mosaicfit.io.matchfile`: hscPipe's match files;
- :mod:`~mosaicfit.io.wcsfile`, :mod:`~mosaicfit.io.fcrfile`: the mosaic's products;
- :mod:`~mosaicfit.io.layout`: the Gen2 repository layout and its registry;
- :mod:`~mosaicfit.io.dataid`: the ``--id`` grammar and data references;
- :mod:`~mosaicfit.io.skymap`: discrete and rings sky maps;
- :mod:`~mosaicfit.io.lock`: one writer per rerun.

Nothing here knows the model: readers return headers, tables and arrays.
"""
