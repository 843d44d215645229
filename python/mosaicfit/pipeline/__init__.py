"""What the commands do, on files: mosaic.py (:mod:`~mosaicfit.pipeline.mosaic`), calibrateExposure.py
and calibrateCatalog.py (:mod:`~mosaicfit.pipeline.calibrate`, the work on one CCD in
:mod:`~mosaicfit.pipeline.apply`), make-skymap, the demo; reading the inputs and the reference
stars; where the work runs (:mod:`~mosaicfit.pipeline.executor`: local processes or Dask).
"""
