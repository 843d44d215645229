"""``calibrateExposure.py`` and ``calibrateCatalog.py`` (``mosaicfit calibrate-exposure`` /
``calibrate-catalog``): apply the mosaic solution to CORR images and SRC catalogues."""
import argparse

from ..config import CatalogConfig, ExposureConfig
from ..io.dataid import add_id_argument

_CONFIGS = {"exposure": ExposureConfig, "catalog": CatalogConfig}


def _add_common(p, kind):
    p.add_argument("root", metavar="ROOT", help="data repository")
    p.add_argument("--rerun", required=True, metavar="[INPUT:]OUTPUT")
    p.add_argument("--calib", metavar="CALIB", help="calibration repository (accepted, unused)")
    add_id_argument(p)
    known = ", ".join(f"{o.name} ({o.doc})" for o in _CONFIGS[kind].options())
    p.add_argument("--config", "-c", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help=f"configuration overrides: {known}")
    p.add_argument("-j", "--processes", "--jobs", dest="jobs", type=int, default=1,
                   metavar="N", help="CCDs processed at once in local processes (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler (e.g. tcp://host:8786): run the CCDs there")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute outputs that exist and are newer than their inputs")
    for flag in ("--clobber-config", "--clobber-versions", "--no-versions"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)   # hscPipe's; no-ops
    p.set_defaults(func=run, kind=kind)


def add_exposure(sub):
    """Add the ``calibrate-exposure`` subcommand to the subparsers `sub`; returns its parser."""
    p = sub.add_parser("calibrate-exposure",
                       help="apply the mosaic solution to CORR images: write CALEXP "
                            "(hscPipe's calibrateExposure.py)",
                       description="Multiply each CORR image by the mosaic's flux correction "
                       "f = 10^(-0.4 P) J (variance by f^2), put in the mosaic WCS and "
                       "FLUXMAG0, and write POINTING/FILTER/corr/TTTT/CALEXP-VVVVVVV-CCC.fits.")
    _add_common(p, "exposure")
    return p


def add_catalog(sub):
    """Add the ``calibrate-catalog`` subcommand to the subparsers `sub`; returns its parser."""
    p = sub.add_parser("calibrate-catalog",
                       help="apply the mosaic solution to SRC catalogs: write CALSRC "
                            "(hscPipe's calibrateCatalog.py)",
                       description="Scale every flux of each SRC catalog by the mosaic's flux "
                       "correction at the source, add mosaic.corr, recompute coord_ra/dec with "
                       "the mosaic WCS and (doApplyCalib=True) add magnitudes; write "
                       "POINTING/FILTER/output/TTTT/CALSRC-VVVVVVV-CCC.fits.")
    _add_common(p, "catalog")
    return p


def run(args):
    """Run calibrateExposure.py or calibrateCatalog.py (``args.kind``); returns the exit status."""
    from ..pipeline.calibrate import CalibrateRequest, run_calibrate
    return run_calibrate(CalibrateRequest(
        kind=args.kind, root=args.root, rerun=args.rerun, ids=args.id, config=args.config,
        jobs=args.jobs, scheduler=args.scheduler, overwrite=args.overwrite))
