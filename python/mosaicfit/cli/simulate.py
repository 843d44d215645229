"""``mosaicfit simulate``: write a simulated HSC data repository with its truth."""
import argparse

from ..io.dataid import parse_id


def _ccd_list(text):
    return tuple(sorted({d["ccd"] for d in parse_id([f"ccd={text}"])}))


def _match_file_list(text):
    from ..sim import MATCH_FILES
    kinds = MATCH_FILES if text.strip() == "all" else \
        tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in MATCH_FILES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown match file kind {bad[0]!r} (known: "
                                         f"{', '.join(MATCH_FILES)}, all)")
    return tuple(kinds)


def add(sub):
    p = sub.add_parser("simulate", help="write a simulated HSC data repository with its truth",
                       description="Simulate one field observed by Hyper Suprime-Cam and write "
                       "it as an hscPipe data repository (registry, CORR, SRC, reference "
                       "catalogue) with the truth under ROOT/truth/.")
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--rerun", default="sim", help="rerun to write CORR/SRC into (default: sim)")
    p.add_argument("--visits", type=int, default=10, help="number of visits (default: 10)")
    p.add_argument("--ccds", type=_ccd_list, default=tuple(range(104)), metavar="IDS",
                   help="CCDs in --id syntax, e.g. 0..103 or 0..8^10..103 (default: 0..103)")
    p.add_argument("--filter", default="HSC-I", help="HSC filter name (default: HSC-I)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--ra", type=float, default=150.1, help="field centre RA, deg (default: COSMOS)")
    p.add_argument("--dec", type=float, default=2.2, help="field centre Dec, deg")
    p.add_argument("--images", action="store_true",
                   help="also write CORR pixels (85 MB per CCD: use with a few CCDs)")
    p.add_argument("--schema", choices=("lsst", "hsc3"), default="lsst",
                   help="SRC column names: lsst (base_*, default) or hsc3 (hscPipe 3.x dotted "
                   "names, afw table version 0)")
    p.add_argument("--match-files", type=_match_file_list, default=(), metavar="KINDS",
                   help="also write reference match files: comma-separated srcMatch "
                   "(SRCMATCH, normalized), srcMatchFull (SRCMATCHFULL), icMatch (MATCH, "
                   "normalized, with ICSRC), or all")
    p.add_argument("-j", "--jobs", type=int, default=2, help="writer threads (default: 2)")
    p.set_defaults(func=run)


def run(args):
    from ..sim import simulate_repository
    sim = simulate_repository(args.root, rerun=args.rerun, jobs=args.jobs, visits=args.visits,
                              ccds=args.ccds, filter=args.filter, seed=args.seed, ra=args.ra,
                              dec=args.dec, images=args.images, schema=args.schema,
                              match_files=tuple(args.match_files or ()))
    print("\n".join(sim.summary_lines(args.root)))
    return 0
