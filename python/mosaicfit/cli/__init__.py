"""The command line (argparse only): see :mod:`mosaicfit.cli.main`."""
from .main import (build_parser, calibrate_catalog_main, calibrate_exposure_main, main,
                   mosaic_main)

__all__ = ["main", "build_parser", "mosaic_main", "calibrate_exposure_main",
           "calibrate_catalog_main"]
