"""``mosaicfit report``: rebuild the diagnostics of a finished run."""
import os
import time

from ..io.layout import Repository


def add(sub):
    """Add the ``report`` subcommand to the subparsers `sub`."""
    p = sub.add_parser("report", help="rebuild the diagnostics and index.html of a finished run",
                       description="Rebuild the diagnostic plots, hscPipe's diagnostic files and "
                       "index.html of a tract from what 'mosaic.py --diagnostics' saved in "
                       "DIAGDIR/TTTT/ (solution.json, detections.fits, stars.fits).")
    p.add_argument("root", metavar="ROOT", help="data repository")
    p.add_argument("--rerun", required=True, metavar="[INPUT:]OUTPUT")
    p.add_argument("--tract", required=True, type=int, help="tract number")
    p.add_argument("--diagDir", metavar="DIR",
                   help="diagnostics folder given to mosaic.py (default: ROOT/rerun/R/mosaic-diag)")
    p.set_defaults(func=run)


def run(args):
    """Rebuild the diagnostics of ``args.tract`` from what DIAGDIR/TTTT holds; returns 0."""
    from .. import diagnostics
    t0 = time.time()
    repo = Repository(args.root, args.rerun)
    ddir = args.diagDir or os.path.join(repo.rerun_dir, "mosaic-diag")
    outdir = os.path.join(ddir, f"{args.tract:04d}")
    files = diagnostics.rebuild(outdir)
    print(f"tract {args.tract}: rebuilt {len(files)} diagnostic files in {time.time() - t0:.1f} s: "
          f"{os.path.join(outdir, 'index.html')}")
    return 0
