"""``mosaic.py`` (``mosaicfit mosaic``): solve the tract(s), write wcs-*/fcr-*."""
from ..io.dataid import add_id_argument


def add(sub):
    """Add the ``mosaic`` subcommand (mosaic.py) to the subparsers `sub`."""
    p = sub.add_parser("mosaic", help="solve the tract(s): write wcs-*/fcr-* (hscPipe's mosaic.py)",
                       description="Joint astrometric and photometric solution of every CCD of "
                       "every visit in a tract; writes wcs-VVVVVVV-CCC.fits and "
                       "fcr-VVVVVVV-CCC.fits under POINTING/FILTER/corr/TTTT/ of the rerun.")
    p.add_argument("root", metavar="ROOT", help="data repository")
    p.add_argument("--calib", metavar="CALIB", help="calibration repository (accepted, unused)")
    p.add_argument("--rerun", required=True, metavar="[INPUT:]OUTPUT")
    add_id_argument(p)
    p.add_argument("--config", "-c", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="configuration overrides (meas_mosaic names), e.g. fittingOrder=9; "
                   "'mosaicfit config' lists them")
    p.add_argument("--clobber-config", action="store_true",
                   help="run even if the rerun holds a different mosaic configuration")
    p.add_argument("-j", "--jobs", type=int, default=1, help="processes for reading (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler: read inputs and fit tracts on the cluster")
    p.add_argument("--diagnostics", action="store_true", help="write diagnostic plots and files")
    p.add_argument("--diagDir", metavar="DIR", help="where diagnostics go (default: ROOT/rerun/R/mosaic-diag)")
    p.set_defaults(func=run)


def run(args):
    """Run mosaic.py with the parsed arguments; returns its exit status."""
    from ..pipeline.mosaic import MosaicRequest, run_mosaic
    return run_mosaic(MosaicRequest(
        root=args.root, rerun=args.rerun, ids=args.id, config=args.config,
        clobber_config=args.clobber_config, jobs=args.jobs, scheduler=args.scheduler,
        diagnostics=args.diagnostics, diag_dir=args.diagDir))
