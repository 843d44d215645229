"""The simulated sky: stars and galaxies with their magnitudes, colours and proper motions,
and the Gaia-like, PS1-banded reference catalogue made from them."""
import numpy as np
from astropy.table import Table

from ..model.colorterms import default_band, find_colorterm
from ..model.sky import tangent_to_sky
from ..units import DAYS_PER_YEAR, DEG_MAS, MAS_RAD
from .config import REF_EPOCH_MJD, REFCAT_NAME

__all__ = ["draw_counts", "draw_sky", "strip_to_sky", "strip_extent", "ps1_mags", "colour_gi", "filter_mag", "positions_at",
           "make_refcat"]


def draw_counts(rng, n_mean, mlo, mhi, slope):
    """Magnitudes with dN/dm ~ 10^(slope m) between mlo and mhi."""
    n = rng.poisson(n_mean)
    a, b = 10 ** (slope * mlo), 10 ** (slope * mhi)
    return np.log10(a + rng.uniform(size=n) * (b - a)) / slope


def strip_to_sky(lam, beta, ra0, dec0):
    """(ra, dec) degrees of strip coordinates (lam, beta), degrees: lam along the great circle
    heading east through (ra0, dec0), beta across it (north positive)."""
    lam, beta = np.radians(lam), np.radians(beta)
    r0, d0 = np.radians(ra0), np.radians(dec0)
    e0 = np.array([np.cos(d0) * np.cos(r0), np.cos(d0) * np.sin(r0), np.sin(d0)])
    east = np.array([-np.sin(r0), np.cos(r0), 0.0])
    north = np.array([-np.sin(d0) * np.cos(r0), -np.sin(d0) * np.sin(r0), np.cos(d0)])
    p = (np.multiply.outer(np.cos(beta) * np.cos(lam), e0)
         + np.multiply.outer(np.cos(beta) * np.sin(lam), east)
         + np.multiply.outer(np.sin(beta), north))
    ra = np.degrees(np.arctan2(p[..., 1], p[..., 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(p[..., 2], -1.0, 1.0)))
    return ra, dec


def strip_extent(cfg):
    """(lam_min, lam_max, beta_half) degrees of the sky a wide-layout simulation draws: the
    pointings' strip widened by field_radius_deg on every side."""
    half = 0.5 * (cfg.visits - 1) * cfg.wide_step_deg + cfg.field_radius_deg
    return -half, half, 0.5 * cfg.wide_width_deg + cfg.field_radius_deg


def draw_sky(cfg, rng, mean_mjd):
    """Draw the stars and galaxies of the field: a cap of cfg.field_radius_deg about (cfg.ra,
    cfg.dec), or with cfg.layout "wide" the strip of the pointings widened by as much
    (:func:`strip_extent`).

    Returns
    -------
    astropy.table.Table
        truth_id; ra, dec (degrees, at epoch `mean_mjd`, MJD); pm_ra, pm_dec (mas/yr, pm_ra
        times cos dec; 0 for galaxies); base_mag; is_star; size (galaxy Gaussian sigma, arcsec;
        0 for stars); ri (a colour for the other bands); mag (true magnitude in cfg.filter).
    """
    wide = cfg.layout == "wide"
    if wide:
        lam0, lam1, bh = strip_extent(cfg)
        area = np.radians(lam1 - lam0) * 2 * np.sin(np.radians(bh)) * (180 / np.pi) ** 2
    else:
        area = 2 * np.pi * (1 - np.cos(np.radians(cfg.field_radius_deg))) * (180 / np.pi) ** 2
    # stars: slope 0.15 dex/mag from 14 to 25 mag, normalised to star_density at 17-25
    s = 0.15
    frac = (10 ** (s * 25) - 10 ** (s * 17)) / (10 ** (s * 25) - 10 ** (s * 14))
    m_star = draw_counts(rng, cfg.star_density * area / frac, 14.0, 25.0, s)
    m_gal = draw_counts(rng, cfg.galaxy_density * area, 18.0, 24.5, 0.35)
    n_s, n_g = len(m_star), len(m_gal)
    n = n_s + n_g
    if wide:
        # uniform on the strip: lam uniform, sin(beta) uniform
        lam = rng.uniform(lam0, lam1, n)
        beta = np.degrees(np.arcsin(rng.uniform(-1, 1, n) * np.sin(np.radians(bh))))
        ra, dec = strip_to_sky(lam, beta, cfg.ra, cfg.dec)
    else:
        # uniform on the cap
        cosr = 1 - rng.uniform(size=n) * (1 - np.cos(np.radians(cfg.field_radius_deg)))
        r = np.arccos(cosr)
        phi = rng.uniform(0, 2 * np.pi, n)
        ra, dec = tangent_to_sky(np.tan(r) * np.cos(phi), np.tan(r) * np.sin(phi), cfg.ra,
                                 cfg.dec)
    is_star = np.r_[np.ones(n_s, bool), np.zeros(n_g, bool)]
    # proper motions (mas/yr): a thick-disc/halo-like spread, a few fast movers
    pm = np.zeros((n, 2))
    pm[:n_s] = rng.normal(0, 6.0, (n_s, 2))
    fast = rng.uniform(size=n_s) < 0.01
    pm[:n_s][fast] = rng.normal(0, 60.0, (fast.sum(), 2))
    size = np.zeros(n)                       # galaxy Gaussian sigma, arcsec
    size[n_s:] = np.exp(rng.uniform(np.log(0.15), np.log(1.2), n_g))
    # colours for the reference catalogue's other bands (no colour terms in the sim)
    ri = rng.uniform(0.0, 1.4, n)
    t = Table(dict(
        truth_id=np.arange(1, n + 1, dtype=np.int64), ra=ra, dec=dec,
        pm_ra=pm[:, 0], pm_dec=pm[:, 1], epoch=np.full(n, mean_mjd),
        base_mag=np.r_[m_star, m_gal], is_star=is_star, size=size, ri=ri))
    t["mag"] = filter_mag(t, cfg.filter)      # the truth in the simulated filter
    return t


def ps1_mags(stars):
    """PS1-band magnitudes of the sources: `base` is the i-band magnitude, `ri` the colour
    along a rough stellar locus."""
    m = np.asarray(stars["base_mag"])
    ri = np.asarray(stars["ri"])
    return {"g": m + 1.2 * ri + 0.25, "r": m + ri, "i": m + 0.0, "z": m - 0.45 * ri,
            "y": m - 0.6 * ri}


def colour_gi(stars):
    """PS1 g-i of the sources: the colour of their differential chromatic refraction."""
    bands = ps1_mags(stars)
    return np.asarray(bands["g"] - bands["i"], float)


def filter_mag(stars, filter_name):
    """True magnitude in an HSC filter: the PS1 bands through HSC's colour term for PS1, or
    the filter's band as is where there is none (narrow bands): consistent across filters and
    with the reference catalogue."""
    bands = ps1_mags(stars)
    term = find_colorterm(REFCAT_NAME, filter_name)
    if term is not None and term.primary in bands and term.secondary in bands:
        return term.transform_mags(bands[term.primary], bands[term.secondary])
    return bands[default_band(filter_name) or "i"]


def positions_at(stars, mjd):
    """(ra, dec) in degrees of `stars` at `mjd`, moved from their epochs by their proper motions."""
    dt = (mjd - stars["epoch"]) / DAYS_PER_YEAR
    dec = stars["dec"] + stars["pm_dec"] * dt / DEG_MAS
    ra = stars["ra"] + stars["pm_ra"] * dt / DEG_MAS / np.cos(np.radians(stars["dec"]))
    return np.asarray(ra), np.asarray(dec)


def reference_mag_error(mag):
    """The simulated reference catalogue's magnitude errors (PS1-like: 4 mmag, growing with the
    photon noise beyond ~19)."""
    return np.sqrt(0.004 ** 2 + (0.01 * 10 ** (0.4 * (np.asarray(mag) - 20.0))) ** 2)


def make_refcat(cfg, rng, stars):
    """Gaia-like astrometry (epoch 2016.0, proper motions, errors growing with magnitude) and
    PS1-like fluxes of the brighter stars; the band of the simulated filter equals the truth."""
    sel = np.asarray(stars["is_star"]) & (np.asarray(stars["mag"]) < cfg.ref_mag_limit)
    s = stars[sel]
    m = np.asarray(s["mag"])
    n = len(s)
    # Gaia DR3-like: 0.02-0.07 mas to G = 17, 0.4 mas at 20, 0.7 mas at 21 (at epoch 2016.0)
    pos_err = np.where(m < 17, 0.02 + 0.0125 * np.clip(m - 13, 0, None), 0.07 * 10 ** (0.25 * (m - 17)))
    pm_err = 1.2 * pos_err                                                       # mas/yr
    ra_t, dec_t = positions_at(s, REF_EPOCH_MJD)
    dra = rng.normal(0, 1, n) * pos_err
    ddec = rng.normal(0, 1, n) * pos_err
    dec = dec_t + ddec / DEG_MAS
    ra = ra_t + dra / DEG_MAS / np.cos(np.radians(dec_t))
    pm_ra = np.asarray(s["pm_ra"]) + rng.normal(0, 1, n) * pm_err
    pm_dec = np.asarray(s["pm_dec"]) + rng.normal(0, 1, n) * pm_err
    mag_err = reference_mag_error(m)
    colours = ps1_mags(s)     # their colour-term transform is the truth (see filter_mag)
    t = Table()
    t["id"] = np.asarray(s["truth_id"], np.int64)
    t["coord_ra"] = np.radians(ra)
    t["coord_dec"] = np.radians(dec)
    t["coord_raErr"] = pos_err * MAS_RAD
    t["coord_decErr"] = pos_err * MAS_RAD
    t["pm_ra"] = pm_ra * MAS_RAD      # rad/yr
    t["pm_dec"] = pm_dec * MAS_RAD
    t["pm_raErr"] = pm_err * MAS_RAD
    t["pm_decErr"] = pm_err * MAS_RAD
    t["epoch"] = np.full(n, REF_EPOCH_MJD)
    t.meta["name"] = REFCAT_NAME
    for b, mb in colours.items():
        mb_obs = mb + rng.normal(0, 1, n) * mag_err
        t[f"{b}_flux"] = 10 ** (-0.4 * (mb_obs - 31.4))          # nJy
        t[f"{b}_fluxErr"] = t[f"{b}_flux"] * mag_err * np.log(10) / 2.5
    return t
