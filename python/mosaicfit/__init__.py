"""mosaicfit: joint astrometric and photometric calibration of mosaic-camera tracts.

A replacement for hscPipe's ``mosaic.py``, ``calibrateExposure.py`` and
``calibrateCatalog.py`` for Subaru Hyper Suprime-Cam. The package is layered, each layer using
only those below it (ARCHITECTURE.md):

- :mod:`mosaicfit.cli`: the command line (argparse only);
- :mod:`mosaicfit.pipeline`: what the commands do, locally or on Dask;
- :mod:`mosaicfit.diagnostics`: hscPipe's plots and files, the report;
- :mod:`mosaicfit.fit`: selection, association, clipping, the astrometric and photometric fits;
- :mod:`mosaicfit.model`: the camera, the model and its products (TAN-SIP, fcr), the Solution;
- :mod:`mosaicfit.io`: every file format, the data repository, atomic writing;
- :mod:`mosaicfit.sim`: the simulator (uses model and io);
- :mod:`mosaicfit.config`, :mod:`mosaicfit.units`: the configuration table and unit constants.

For other pipelines, without files::

    from mosaicfit import solve, ExposureData, hsc
    sol = solve(exposures, hsc(), config, refcat)
"""
__version__ = "0.2.0"


class MosaicError(Exception):
    """An error in the user's input (a file, a value, an id) that is reported in one line."""


_API = {"solve": ("fit.solve", "solve"), "ExposureData": ("fit.selection", "ExposureData"),
        "hsc": ("model.camera", "hsc"), "Solution": ("model.solution", "Solution"),
        "MosaicConfig": ("config", "MosaicConfig")}

__all__ = ["MosaicError", "__version__"] + list(_API)


def __getattr__(name):
    # the API is imported on first use, so that the command line starts fast
    if name in _API:
        import importlib
        module, attr = _API[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
