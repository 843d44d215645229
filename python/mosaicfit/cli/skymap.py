"""``mosaicfit make-skymap``: the sky map (tracts) of a rerun."""
from ..io.dataid import add_id_argument
from ..pipeline.skymap import make_skymap


def add(sub):
    """Add the ``make-skymap`` subcommand to the subparsers `sub`."""
    p = sub.add_parser("make-skymap", help="make the sky map (tracts) of a rerun",
                       description="Make a discrete sky map with one tract (0) covering the "
                       "given visits (hscPipe's makeDiscreteSkyMap.py), or the HSC-SSP rings "
                       "sky map (--rings), and store it in ROOT/rerun/RERUN/deepCoadd/skyMap.json.")
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--rerun", required=True)
    add_id_argument(p)
    p.add_argument("--rings", action="store_true",
                   help="the HSC-SSP rings sky map (120 rings, TAN, 1' overlap, 0.168\"/px)")
    p.add_argument("--border", type=float, default=None, metavar="DEG",
                   help="extra border of the discrete tract, degrees")
    p.add_argument("--clobber", action="store_true", help="replace an existing sky map")
    p.set_defaults(func=run)


def run(args):
    """Make and store the rerun's sky map and print what was written; returns 0."""
    print(make_skymap(args.root, args.rerun, args.id, rings=args.rings, border_deg=args.border,
                      clobber=args.clobber))
    return 0
