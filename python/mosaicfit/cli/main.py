"""The command line: ``mosaicfit COMMAND ...`` and hscPipe's ``mosaic.py``,
``calibrateExposure.py`` and ``calibrateCatalog.py``.

This package only parses arguments and hands them to mosaicfit.pipeline (one module per
command). Errors in the user's input are reported in one line (``mosaicfit CMD: error: ...``)
with a non-zero exit status; ``--debug`` shows the Python traceback instead. The commands'
modules are imported when they run: ``--help`` and argument errors come back at once.
"""
import argparse
import logging
import os
import sys

# BLAS threads buy nothing for mosaicfit's small dense products (the big solve is Eigen's with
# OpenMP) and stall badly when the cores are shared: one thread unless the user says otherwise.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY"):
    os.environ.setdefault(_var, "1" if _var == "OPENBLAS_NUM_THREADS" else "PASSIVE")
del _var

from .. import MosaicError, __version__  # noqa: E402

try:
    from . import calibrate, config, demo, mosaic, report, simulate, skymap  # noqa: E402
except MosaicError as _e:        # MOSAICFIT_CORE naming no core: one line, as any input error
    sys.exit(f"mosaicfit: error: {_e}")

__all__ = ["main", "build_parser", "mosaic_main", "calibrate_exposure_main",
           "calibrate_catalog_main"]


def build_parser():
    """The ``mosaicfit`` argument parser, with every subcommand added."""
    p = argparse.ArgumentParser(prog="mosaicfit", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"mosaicfit {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    simulate.add(sub)
    skymap.add(sub)
    mosaic.add(sub)
    calibrate.add_exposure(sub)
    calibrate.add_catalog(sub)
    demo.add(sub)
    report.add(sub)
    config.add(sub)
    return p


def main(argv=None):
    """Entry point of ``mosaicfit``: parse `argv` (default: sys.argv[1:]) and run the subcommand.

    Returns the exit status: the subcommand's, 1 on a MosaicError (message only; the traceback
    with --debug), 130 on Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except MosaicError as e:
        if args.debug:
            raise
        print(f"mosaicfit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mosaicfit {args.command}: interrupted", file=sys.stderr)
        return 130


def mosaic_main(argv=None):
    """Console script ``mosaic.py``: hscPipe's command line."""
    return main(["mosaic"] + list(sys.argv[1:] if argv is None else argv))


def calibrate_exposure_main(argv=None):
    """Console script ``calibrateExposure.py``: hscPipe's command line."""
    return main(["calibrate-exposure"] + list(sys.argv[1:] if argv is None else argv))


def calibrate_catalog_main(argv=None):
    """Console script ``calibrateCatalog.py``: hscPipe's command line."""
    return main(["calibrate-catalog"] + list(sys.argv[1:] if argv is None else argv))
