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


def _load_core():
    """The compiled core: _core_avx2 (built for x86-64-v3: AVX2/FMA) where it was built and the
    CPU runs it, else _core (any CPU of the platform); MOSAICFIT_CORE=generic forces the
    second. Both are the same code (CMakeLists.txt); the first assembles the normal equations
    ~1.5x faster."""
    import importlib
    import os
    generic = importlib.import_module(f"{__name__}._core")
    choice = os.environ.get("MOSAICFIT_CORE", "auto").strip().lower() or "auto"
    if choice not in ("auto", "generic", "avx2"):
        raise MosaicError(f"MOSAICFIT_CORE={choice!r}: use auto, generic or avx2")
    if choice == "generic":
        return generic
    if not generic.cpu_runs_x86_64_v3():
        if choice == "avx2":
            raise MosaicError("MOSAICFIT_CORE=avx2 but this CPU does not run x86-64-v3 code")
        return generic
    try:
        return importlib.import_module(f"{__name__}._core_avx2")
    except ImportError:
        if choice == "avx2":
            raise MosaicError("MOSAICFIT_CORE=avx2 but the x86-64-v3 core was not built "
                              "(CMake option MOSAICFIT_AVX2)") from None
        return generic


def __getattr__(name):
    if name == "_core":
        # `from mosaicfit import _core` anywhere gets the core chosen once, here
        core = globals()["_core"] = _load_core()
        return core
    # the API is imported on first use, so that the command line starts fast
    if name in _API:
        import importlib
        module, attr = _API[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
