"""``mosaicfit config``: the configuration keys of the three commands."""


def add(sub):
    """Add the ``config`` subcommand (list the configuration keys) to `sub`."""
    p = sub.add_parser("config", help="list the configuration keys (--config KEY=VALUE)",
                       description="Print every configuration key of mosaic.py, "
                       "calibrateExposure.py and calibrateCatalog.py with its type, default "
                       "and meaning.")
    p.add_argument("--markdown", action="store_true", help="as a Markdown table")
    p.set_defaults(func=run)


def run(args):
    """Print every configuration key (a Markdown table with --markdown); returns 0."""
    from ..config import describe
    print(describe(markdown=args.markdown))
    return 0
