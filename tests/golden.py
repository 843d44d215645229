"""The golden products: the solution of a small simulated tract (3 visits x 40 CCDs, seed 4)
evaluated on a 3 x 3 pixel grid of a few CCDs, so that every change to the code sees what it
moves in the products (tests/test_golden.py).

    python tests/golden.py --update     # after an intended change; say in the commit what moved

The file holds sky positions (degrees) of the wcs- TAN-SIP headers and the calibrated
magnitude offsets (mag) of the fcr- corrections with their FLUXMAG0.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "data", "golden_products.json")
CCDS = (33, 41, 49, 57, 66)
GRID = [(x, y) for x in (0.0, 1023.5, 2047.0) for y in (0.0, 2087.5, 4175.0)]


def compute():
    from mosaicfit.fit.selection import ExposureData
    from mosaicfit.fit.solve import solve
    from mosaicfit.io.src import standardize
    from mosaicfit.model.camera import hsc
    from mosaicfit.model.sip import pixel_area_ratio, sip_pixel_to_sky
    from mosaicfit.sim import make_tract
    sim = make_tract(visits=3, ccds=tuple(range(30, 70)), seed=4)
    exps = [ExposureData(v, c, standardize(cat), sim.wcs_headers[(v, c)],
                         sim.fluxmag0[(v, c)][0], sim.truth.visits[v]["mjd"], "HSC-I")
            for (v, c), cat in sorted(sim.catalogs.items()) if not sim.missing.get((v, c))]
    sol = solve(exps, hsc(), None, sim.refcat, tangent_point=(150.1, 2.2))
    x = np.array([g[0] for g in GRID])
    y = np.array([g[1] for g in GRID])
    out = {}
    for v in sorted(sim.truth.visits):
        for c in CCDS:
            if not sol.has_astrometry(v) or (v, c) in sol.frozen:
                continue
            h = sol.wcs_header(v, c)
            ra, dec = sip_pixel_to_sky(h, x, y)
            fc = sol.flux_correction(v, c)
            dmag = -2.5 * np.log10(fc.factor(x, y, pixel_area_ratio(h, x, y)))
            out[f"{v}-{c}"] = dict(ra=ra.tolist(), dec=dec.tolist(), dmag=dmag.tolist(),
                                   fluxmag0=float(fc.fluxmag0))
    return out


def load():
    with open(PATH) as f:
        return json.load(f)


if __name__ == "__main__":
    if "--update" not in sys.argv:
        sys.exit(__doc__)
    with open(PATH, "w") as f:
        json.dump(compute(), f, indent=0)
    print("wrote", PATH)
