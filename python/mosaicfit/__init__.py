"""mosaicfit: joint astrometric and photometric calibration of mosaic-camera tracts.

A replacement for hscPipe's ``mosaic.py``, ``calibrateExposure.py`` and
``calibrateCatalog.py`` for Subaru Hyper Suprime-Cam.
"""
__version__ = "0.1.0"


class MosaicError(Exception):
    """An error in the user's input (a file, a value, an id) that is reported in one line."""
