"""Differential chromatic refraction (DCR): the colour-dependent part of the astrometric model.

The atmosphere's dispersion displaces each image towards the zenith by an amount that depends
on the source's spectrum through the filter: to first order k tan(z) (c - c_ref) for a star of
colour c, with k a few to tens of mas per magnitude (HSC-g ~20, HSC-i ~6, for g - i). A star
of the reference colour c_ref is not displaced relative to the others; so the visit
polynomials, which every star shares, are the mapping for that colour, and each visit carries
one displacement vector d_v (the zenith's direction at the visit's parallactic angle, scaled
by k tan z) that says how every other colour moves (gbdes's colour term, one per exposure).

Products: the wcs- file of a visit is the mapping for a star of the reference colour, and its
primary header carries the visit's vector (README, "Product header keywords"):

    true position = WCS position - (DCRXI, DCRETA) x (colour - DCRREF)

with DCRXI along RA cos Dec (east) and DCRETA along Dec (north), mas per magnitude of the
colour DCRCOL (e.g. ``g-i``).
"""
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ChromaticTerm"]


@dataclass
class ChromaticTerm:
    """The per-visit DCR vectors of a solution.

    colour: the colour's name (``"g-i"``: reference-catalogue bands, first minus second);
    reference_colour: c_ref, magnitudes; vectors: {visit: (dxi, deta)} arcsec per magnitude in
    the tract plane; source: {visit: "fitted" | "headers" | "residuals"}: from the stars'
    colours, or only the direction and the tan z of the visit's headers with the stars'
    effective colours fitted, or vectors and effective colours both from the residuals (then
    the vector is in arcsec per unit of effective colour, the effective colours of unit rms).
    """
    colour: str
    reference_colour: float
    vectors: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    def offset(self, visit, colour):
        """(dxi, deta) arcsec: the displacement of a star of `colour` in `visit`."""
        d = self.vectors.get(int(visit), (0.0, 0.0))
        dc = np.asarray(colour, float) - self.reference_colour
        return d[0] * dc, d[1] * dc

    def header_cards(self, visit):
        """The wcs- primary cards of `visit` (none if it has no vector)."""
        if int(visit) not in self.vectors:
            return []
        dx, dy = self.vectors[int(visit)]
        return [("DCRCOL", self.colour, "colour of the DCR term (catalogue bands)"),
                ("DCRREF", float(self.reference_colour), "[mag] colour the WCS is for"),
                ("DCRXI", round(float(dx) * 1000.0, 6), "[mas/mag] DCR along RA cos Dec"),
                ("DCRETA", round(float(dy) * 1000.0, 6), "[mas/mag] DCR along Dec"),
                ("DCRSRC", self.source.get(int(visit), "fitted"),
                 "fitted, headers or residuals (mas per colour unit)")]

    def to_dict(self):
        """The term as a JSON-able dict (visit keys as strings)."""
        return dict(colour=self.colour, reference_colour=self.reference_colour,
                    vectors={str(v): [float(x) for x in d] for v, d in sorted(self.vectors.items())},
                    source={str(v): s for v, s in sorted(self.source.items())})

    @classmethod
    def from_dict(cls, d):
        """The ChromaticTerm of a :meth:`to_dict` dict."""
        return cls(d["colour"], float(d["reference_colour"]),
                   {int(v): tuple(x) for v, x in d["vectors"].items()},
                   {int(v): s for v, s in d.get("source", {}).items()})
