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


def _effect_list(text):
    from .. import MosaicError
    from ..sim.effects import parse_effects
    try:
        return parse_effects(text)
    except MosaicError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


EFFECTS_HELP = """\
effects (--effects, none by default: without them the simulation is the default one, number
for number; each is recorded in ROOT/truth/model.json with its parameters):
  edge-wcs         the CORR (single-frame) WCS of each visit is off by a smooth error of the
                   visit's solution: ~0.05" at the centre, growing with the field radius to
                   ~1.5" rms at the edge (radial cubic + quadratic along a random direction),
                   instead of a per-CCD 0.1-1" offset; the truth is unchanged
  dcr              differential chromatic refraction: each night's visits at an hour angle
                   from Mauna Kea (airmass <= 1.8), every source displaced towards the zenith
                   by k tan(z) (g-i - 1.0), k = -22 (g), -11 (r), -6 (i), -1 (z), -0.8 (y)
                   mas/mag from the dispersion of air; CORR headers gain AIRMASS, ZD,
                   ALTITUDE, AZIMUTH, LST, HA, PARANG (parallactic angle), OUT-PRS, OUT-TMP
  doubled          one visit (--doubled-visit, default the middle one) has doubled images:
                   45% of its detections are measured 50-300 mas off along one direction;
                   the truth flags them (outlier code 6, column doubled_mas)
  centroid-errors  the SRC centroid errors are misestimated: photon-noise errors scaled by
                   0.7-1.5 per visit and a 20% log-normal scatter, while the true scatter has
                   a 3 mas floor; the truth keeps the true error (column x_err_true)
  turbulence       a von Karman turbulent displacement field per visit, 5-15 mas rms per
                   axis, outer scale 3-10', 90% E mode (Leget et al. 2021); truth columns
                   turb_dxi, turb_deta (and dcr_dxi, dcr_deta) in mas
  clouds           the edge of a cloud across one visit (--cloud-visit, default the middle
                   one): its transparency falls as a smooth ramp across the field, clear on
                   one side, 0.6 mag on the other; the truth's zero points carry it
"""


def add(sub):
    """Add the ``simulate`` subcommand to the subparsers `sub`."""
    p = sub.add_parser("simulate", help="write a simulated HSC data repository with its truth",
                       description="Simulate one field (or, with --layout wide, a strip of "
                       "fields) observed by Hyper Suprime-Cam and write it as an hscPipe data "
                       "repository (registry, CORR, SRC, reference "
                       "catalogue) with the truth under ROOT/truth/.",
                       epilog=EFFECTS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--rerun", default="sim", help="rerun to write CORR/SRC into (default: sim)")
    p.add_argument("--visits", type=int, default=10, help="number of visits (default: 10)")
    p.add_argument("--ccds", type=_ccd_list, default=tuple(range(104)), metavar="IDS",
                   help="CCDs in --id syntax, e.g. 0..103 or 0..8^10..103 (default: 0..103)")
    p.add_argument("--filter", default="HSC-I", help="HSC filter name (default: HSC-I)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--ra", type=float, default=150.1, help="field centre RA, deg (default: COSMOS)")
    p.add_argument("--dec", type=float, default=2.2, help="field centre Dec, deg")
    p.add_argument("--layout", choices=("deep", "wide"), default="deep",
                   help="deep: 0.1-0.6 deg dithers about --ra/--dec (default); wide: an "
                   "HSC-SSP-Wide-like strip of pointings heading east, centred on --ra/--dec, "
                   "each position seen by ~1.5/--wide-step visits")
    p.add_argument("--wide-step", type=float, default=0.2, metavar="DEG",
                   help="wide: spacing of consecutive pointings along the strip (default 0.2)")
    p.add_argument("--wide-width", type=float, default=0.3, metavar="DEG",
                   help="wide: pointings spread uniformly over this width across the strip "
                   "(default 0.3)")
    p.add_argument("--images", action="store_true",
                   help="also write CORR pixels (85 MB per CCD: use with a few CCDs)")
    p.add_argument("--schema", choices=("lsst", "hsc3"), default="lsst",
                   help="SRC column names: lsst (base_*, default) or hsc3 (hscPipe 3.x dotted "
                   "names, afw table version 0)")
    p.add_argument("--match-files", type=_match_file_list, default=(), metavar="KINDS",
                   help="also write reference match files: comma-separated srcMatch "
                   "(SRCMATCH, normalized), srcMatchFull (SRCMATCHFULL), icMatch (MATCH, "
                   "normalized, with ICSRC), or all")
    p.add_argument("--effects", type=_effect_list, default=(), metavar="EFFECTS",
                   help="switch on effects of the real sky (see below): comma-separated "
                   "edge-wcs, dcr, doubled, centroid-errors, turbulence, clouds, or all")
    p.add_argument("--doubled-visit", type=int, default=0, metavar="VISIT",
                   help="the visit with doubled images (effect doubled; default: the middle "
                   "visit)")
    p.add_argument("--cloud-visit", type=int, default=0, metavar="VISIT",
                   help="the visit under a cloud edge (effect clouds; default: the middle "
                   "visit)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="writer threads (default: 2)")
    p.set_defaults(func=run)


def run(args):
    """Write the simulated repository and print what was simulated; returns 0."""
    from ..sim import simulate_repository
    sim = simulate_repository(args.root, rerun=args.rerun, jobs=args.jobs, visits=args.visits,
                              ccds=args.ccds, filter=args.filter, seed=args.seed, ra=args.ra,
                              dec=args.dec, layout=args.layout, wide_step_deg=args.wide_step,
                              wide_width_deg=args.wide_width, images=args.images,
                              schema=args.schema,
                              match_files=tuple(args.match_files or ()),
                              effects=tuple(args.effects or ()),
                              doubled_visit=args.doubled_visit, cloud_visit=args.cloud_visit)
    print("\n".join(sim.summary_lines(args.root)))
    return 0
