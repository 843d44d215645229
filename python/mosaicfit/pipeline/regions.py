"""Sky regions: a run too large for one fit split into HEALPix cells (issue 16).

A wide survey is one connected set of visits, each overlapping only its neighbours; its joint
fit grows with the number of visits. With ``--config regionNside=N`` a run is split into the
HEALPix cells (nested scheme, ``nside`` N: cells of about 58.6/N degrees) of its visits'
centres, as Rubin splits its gbdes fits. Each cell is a region: it *owns* the visits whose
centres fall in it, and fits them together with every visit whose centre lies within
``regionOverlap`` degrees of one of its own (the margin), each region as one independent task
(a Dask task with a scheduler). A visit's products come from its own region only.

Why the margin makes neighbouring regions agree: every visit is tied to the reference
catalogue and to the visits it shares stars with; a region cut at its own visits would leave
its border visits with stars on one side only, fitted differently from how the neighbouring
region fits the visits across the border (a seam). With the margin, the border visits are
fitted with all the visits they overlap (one field diameter, 1.5 deg for HSC) and those with
theirs (a second ring): what the solution of a visit still takes from beyond the margin decays
with each ring of visits. bench/region_split.py measures what remains at the borders against
the one-fit solution.
"""
from dataclasses import dataclass

import numpy as np

from .. import MosaicError
from ..model.sky import radec_to_xyz

__all__ = ["Region", "sky_regions"]


@dataclass
class Region:
    """One region of a run: the HEALPix cell `pixel` (nested, `nside`), its own visits (whose
    products it writes) and the visits it fits (its own and the margin)."""
    nside: int
    pixel: int
    own: list
    fitted: list

    @property
    def name(self):
        """The region as the log names it."""
        return f"region {self.pixel} (nside {self.nside})"


def sky_regions(centres, nside, overlap_deg):
    """The regions of visits with `centres` ({visit: (ra, dec)} in degrees): one per HEALPix
    cell (nested, `nside`) holding a visit centre, in cell order, each fitting its own visits
    and those within `overlap_deg` degrees of one of them."""
    try:
        from astropy_healpix import HEALPix       # optional: pip install 'mosaicfit[dask]'
    except ImportError:
        raise MosaicError("regionNside needs astropy-healpix: pip install astropy-healpix") \
            from None
    import astropy.units as u
    visits = sorted(centres)
    ra = np.array([centres[v][0] for v in visits], float)
    dec = np.array([centres[v][1] for v in visits], float)
    pix = np.asarray(HEALPix(nside=nside, order="nested").lonlat_to_healpix(ra * u.deg,
                                                                            dec * u.deg))
    xyz = radec_to_xyz(ra, dec)
    near = xyz @ xyz.T >= np.cos(np.radians(overlap_deg))       # visit pairs within the margin
    out = []
    for p in np.unique(pix):
        own = pix == p
        fitted = own | near[own].any(axis=0)
        out.append(Region(int(nside), int(p), [visits[i] for i in np.nonzero(own)[0]],
                          [visits[i] for i in np.nonzero(fitted)[0]]))
    return out
