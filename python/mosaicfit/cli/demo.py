"""``mosaicfit demo``: simulate a tract, solve it and check it against the truth."""


def add(sub):
    """Add the ``demo`` subcommand to the subparsers `sub`."""
    p = sub.add_parser("demo", help="simulate a tract, solve it and check it against the truth",
                       description="Simulate an HSC-SSP-like 10-visit tract, make its sky map, "
                       "run mosaic.py and compare the single-frame inputs and the mosaic "
                       "outputs with the simulation truth.")
    p.add_argument("--dir", default="mosaicfit-demo", help="where to write (default: ./mosaicfit-demo)")
    p.add_argument("--visits", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=run)


def run(args):
    """Run the demo in ``args.dir``; returns its exit status (0)."""
    from ..pipeline.demo import run_demo
    return run_demo(args.dir, visits=args.visits, seed=args.seed)
