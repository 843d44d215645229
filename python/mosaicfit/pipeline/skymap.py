"""What ``mosaicfit make-skymap`` does: the sky map (tracts) of a rerun, a discrete one
around the given visits (hscPipe's makeDiscreteSkyMap.py) or HSC-SSP's rings."""
import os
import sys

import numpy as np

from .. import MosaicError
from ..io.layout import Repository
from ..io.skymap import RingsSkyMap, make_discrete_skymap, save_skymap
from ..model.camera import hsc
from .inputs import ccd_sky_corners, resolve_refs

__all__ = ["make_skymap"]


def make_skymap(root, rerun, ids=None, rings=False, border_deg=None, clobber=False):
    """Make and store the sky map of the rerun; returns the line that says what was written."""
    repo = Repository(root, rerun)
    out = repo.path("skymap")
    if os.path.exists(out) and not clobber:
        raise MosaicError(f"{out}: a sky map exists already (use --clobber to replace it)")
    if rings:
        skymap = RingsSkyMap()
        what = f"rings sky map ({len(skymap)} tracts)"
    else:
        refs = resolve_refs(repo, ids or [])
        corners, no_corr = ccd_sky_corners(repo, refs, hsc())
        if no_corr:
            print(f"Not opening files: no CORR for {len(no_corr)} of {len(refs)} CCDs "
                  f"(e.g. {no_corr[0]})", file=sys.stderr)
        if not corners:
            raise MosaicError("no CORR files found for the given --id: cannot place a tract")
        ra = np.concatenate([c[0] for c in corners.values()])
        dec = np.concatenate([c[1] for c in corners.values()])
        kw = {} if border_deg is None else {"border_deg": border_deg}
        skymap = make_discrete_skymap(ra, dec, **kw)
        t = skymap[0]
        what = (f"discrete sky map: tract 0 at RA {t.ctr_ra:.4f}, Dec {t.ctr_dec:.4f} deg "
                f"covering {len(corners)} CCDs")
    save_skymap(skymap, out)
    return f"wrote {what} to {out}"
