"""A realistic simulated HSC tract, with its truth, in the hscPipe data-repository format.

Every accuracy claim of mosaicfit is measured against this truth, so the simulation follows
the physics of the real data rather than the model we fit:

* astrometry: the real HSC order-9 distortion, the ~0.48% sky-scale excess, per-visit changes
  (scale, rotation, shear, quadratic terms: refraction, flexure), per-CCD offsets and rotations of
  a few microns, pointing errors, proper motions between the visits and the reference epoch,
  centroid noise from S/N;
* photometry: per-visit zero points (exposure time, transparency, clouds of a few tenths of a
  magnitude with gradients), per-CCD gain residuals, a smooth illumination pattern of a few per
  cent, the pixel-area (Jacobian) effect of the distortion on flat-fielded point sources, flux
  noise from the source, the sky and a floor;
* the field: stars (number counts rising with magnitude, 14-25 mag) and galaxies (steeper
  counts, extended: PSF fluxes that change with seeing, rejected by extendedness but for the
  faint and compact ones), saturated bright stars, PSF stars flagged, unresolved blends that
  depend on the seeing, displaced centroids, cosmic rays, moving objects, a dead CCD (9), a few
  failed CCDs, partial coverage at the edge of the field;
* inputs as the single-frame pipeline leaves them: SRC catalogs (afw format), CORR headers with a
  single-frame TAN-SIP WCS that is 0.1-1" off and a FLUXMAG0 a few per cent off, a registry, and
  a Gaia-like reference catalog (epoch 2016.0, proper motions, errors).

The truth goes to ``ROOT/truth/``: ``stars.fits`` (truth_id, ra, dec at the mean epoch of the
visits, pm, mag), ``detections.fits`` (visit, ccd, id, truth_id, noise-free x_true, y_true,
instFlux_true, outlier code) and ``model.json``, from which :class:`TruthModel` evaluates the true
pixel -> sky mapping and photometric calibration of any (visit, ccd, x, y).
"""
import dataclasses
import json
import os
import time

import numpy as np
from astropy.io import fits
from astropy.table import Table

from . import MosaicError
from .atomic import write_fits, write_text
from .camera import hsc, sky_to_tangent, tangent_to_sky
from .matching import friends_of_friends
from .sip import fit_tan_sip, sip_pixel_to_sky

REF_EPOCH_MJD = 57388.0     # J2016.0, Gaia DR3's epoch
DAYS_PER_YEAR = 365.25
MAS = np.pi / (180.0 * 3600.0 * 1000.0)   # radians

# Outlier codes in truth/detections.fits
CLEAN, BLEND, DISPLACED, COSMIC_RAY, MOVING, SATURATED = range(6)

# Reference-catalogue band of each HSC filter (the simulation has no colour terms)
FILTER_BAND = {"HSC-G": "g", "HSC-R": "r", "HSC-R2": "r", "HSC-I": "i", "HSC-I2": "i",
               "HSC-Z": "z", "HSC-Y": "y", "NB0387": "g", "NB0515": "g", "NB0656": "r",
               "NB0816": "i", "NB0921": "z", "NB1010": "y"}
# A PS1-named catalogue: HSC production calibrated against Pan-STARRS1 through colour terms,
# and the simulated catalogue carries PS1-band magnitudes whose HSC colour-term transform is the
# truth (its astrometry is Gaia-like).
REFCAT_NAME = "ps1_pv3_3pi_sim"


@dataclasses.dataclass
class SimConfig:
    """Knobs of the simulation; defaults give an HSC-SSP-like 10-visit i-band tract."""
    visits: int = 10
    ccds: tuple = tuple(range(104))
    filter: str = "HSC-I"
    seed: int = 1
    ra: float = 150.1            # field centre (COSMOS, HSC-SSP tract 9813)
    dec: float = 2.2
    field_radius_deg: float = 1.0     # objects exist within this radius: edge CCDs see less
    dither_min_deg: float = 0.1
    dither_max_deg: float = 0.6
    first_visit: int = 902798
    visit_step: int = 2
    mjd_start: float = 57101.4   # 2015-03-23; visits spread over a few nights
    exptime: float = 200.0
    star_density: float = 4000.0     # stars per deg^2 with 17 < m < 25
    galaxy_density: float = 5000.0   # galaxies per deg^2 with 18 < m < 24.5
    ref_mag_limit: float = 21.0
    dead_ccds: tuple = (9,)
    failed_fraction: float = 0.005   # (visit, CCD) pairs whose SRC or CORR is missing
    images: bool = False
    pointing: int = 1201
    field: str = "SSP_WIDE"
    schema: str = "lsst"         # SRC column names: "lsst" (base_*) or "hsc3" (hscPipe 3.x)
    match_files: tuple = ()      # also write: "srcMatch", "srcMatchFull", "icMatch" (+ ICSRC)


# ------------------------------------------------------------------------------------------
# The truth model
# ------------------------------------------------------------------------------------------
class TruthModel:
    """The true pixel -> sky mapping and photometric calibration of every (visit, CCD).

    pixel (x, y) -> focal plane (camera placement + per-CCD offset dx, dy [mm] and rotation)
    -> field angle (camera distortion) -> per-visit perturbation F(X, Y) (scale, rotation,
    shear, quadratic terms) -> gnomonic plane about the boresight (sky-angle convention of the
    camera) -> (ra, dec).

    Photometry: m_true = -2.5 log10(instFlux) + zeropoint(visit, ccd, x, y) with
    zeropoint = zp[visit] - cloud_visit(X, Y) - illum(X, Y) - dmag[ccd] - 2.5 log10 J(x, y),
    J the true pixel area relative to that at the optical axis.
    """

    def __init__(self, params, camera=None):
        self.params = params
        self.camera = camera or hsc()
        self.visits = {int(v["visit"]): v for v in params["visits"]}
        self.ccds = {int(c): v for c, v in params["ccds"].items()}

    # -- persistence ---------------------------------------------------------------------------
    def to_json(self):
        return json.dumps(self.params, indent=1)

    @classmethod
    def load(cls, root):
        path = os.path.join(root, "truth", "model.json")
        try:
            with open(path) as f:
                return cls(json.load(f))
        except (OSError, ValueError) as e:
            raise MosaicError(f"{path}: cannot read the simulation truth: {e}") from None

    # -- astrometry ----------------------------------------------------------------------------
    def _ccd_to_fp(self, ccd, x, y):
        c = self.ccds[int(ccd)]
        fx, fy = self.camera.pixel_to_focal_plane(ccd, x, y)
        d = self.camera[ccd]
        ox, oy = d.offset_mm
        th = c["rot_rad"]  # rotation of the CCD about its own centre
        rx, ry = fx - ox, fy - oy
        return (ox + c["dx_mm"] + rx - th * ry, oy + c["dy_mm"] + ry + th * rx)

    def _fp_to_ccd(self, ccd, fx, fy):
        c = self.ccds[int(ccd)]
        d = self.camera[ccd]
        ox, oy = d.offset_mm
        rx, ry = fx - ox - c["dx_mm"], fy - oy - c["dy_mm"]
        th = c["rot_rad"]
        den = 1.0 + th * th
        return self.camera.focal_plane_to_pixel(ccd, ox + (rx + th * ry) / den,
                                                oy + (ry - th * rx) / den)

    @staticmethod
    def _perturb(v, X, Y):
        L = v["linear"]
        Q = v["quadratic"]       # [[x: c20, c11, c02], [y: c20, c11, c02]] per radian
        return (X + L[0][0] * X + L[0][1] * Y + Q[0][0] * X * X + Q[0][1] * X * Y + Q[0][2] * Y * Y,
                Y + L[1][0] * X + L[1][1] * Y + Q[1][0] * X * X + Q[1][1] * X * Y + Q[1][2] * Y * Y)

    def _unperturb(self, v, Xp, Yp):
        X, Y = np.array(Xp, dtype=float), np.array(Yp, dtype=float)
        for _ in range(20):   # fixed point: the perturbation is ~1e-3 of the identity
            fx, fy = self._perturb(v, X, Y)
            dX, dY = Xp - fx, Yp - fy
            X, Y = X + dX, Y + dY
            if np.max(np.abs(dX), initial=0) < 1e-16 and np.max(np.abs(dY), initial=0) < 1e-16:
                break
        return X, Y

    def pixel_to_tangent(self, visit, ccd, x, y):
        """(xi, eta) in radians about the visit's boresight."""
        v = self.visits[int(visit)]
        X, Y = self.camera.focal_plane_to_field_angle(*self._ccd_to_fp(ccd, x, y))
        X, Y = self._perturb(v, X, Y)
        return self.camera.field_angle_to_tangent_plane(X, Y, v["sky_angle"])

    def pixel_to_sky(self, visit, ccd, x, y):
        """True (ra, dec) in degrees of 0-based pixel (x, y) of (visit, ccd)."""
        v = self.visits[int(visit)]
        xi, eta = self.pixel_to_tangent(visit, ccd, x, y)
        return tangent_to_sky(xi, eta, v["ra"], v["dec"])

    def sky_to_pixel(self, visit, ccd, ra, dec):
        v = self.visits[int(visit)]
        xi, eta = sky_to_tangent(ra, dec, v["ra"], v["dec"])
        X, Y = self.camera.tangent_plane_to_field_angle(xi, eta, v["sky_angle"])
        X, Y = self._unperturb(v, X, Y)
        return self._fp_to_ccd(ccd, *self.camera.field_angle_to_focal_plane(X, Y))

    def area_ratio(self, visit, ccd, x, y, h=1.0):
        """J: true pixel area at (x, y) over the pixel area at the optical axis."""
        def area(cx, cy, cc):
            a = self.pixel_to_tangent(visit, cc, cx + h, cy)
            b = self.pixel_to_tangent(visit, cc, cx - h, cy)
            c = self.pixel_to_tangent(visit, cc, cx, cy + h)
            d = self.pixel_to_tangent(visit, cc, cx, cy - h)
            return np.abs((a[0] - b[0]) * (c[1] - d[1]) - (a[1] - b[1]) * (c[0] - d[0])) / (4 * h * h)
        # the optical axis seen from a CCD without offsets: the axis has no CCD of its own
        ax, ay = self.camera.focal_plane_to_pixel(ccd, 0.0, 0.0)
        return area(np.asarray(x, float), np.asarray(y, float), ccd) / area(ax, ay, ccd)

    # -- photometry ----------------------------------------------------------------------------
    def field_angle(self, visit, ccd, x, y):
        return self.camera.focal_plane_to_field_angle(*self._ccd_to_fp(ccd, x, y))

    def zeropoint(self, visit, ccd, x, y):
        """m_true = -2.5 log10(instFlux) + zeropoint, at 0-based pixel (x, y)."""
        v = self.visits[int(visit)]
        X, Y = self.field_angle(visit, ccd, x, y)
        return (v["zp"] - _poly_field(v["cloud"], X, Y) - _poly_field(self.params["illum"], X, Y)
                - self.ccds[int(ccd)]["dmag"] - 2.5 * np.log10(self.area_ratio(visit, ccd, x, y)))


FIELD_SCALE = np.radians(0.75)   # field-angle unit of the photometric polynomials


def _poly_field(coeffs, X, Y):
    """sum c[i][j] (X/R)^i (Y/R)^j with R = 0.75 deg: smooth focal-plane patterns."""
    u, v = X / FIELD_SCALE, Y / FIELD_SCALE
    out = np.zeros_like(np.asarray(u, dtype=float))
    for i, row in enumerate(coeffs):
        for j, c in enumerate(row):
            if c:
                out = out + c * u ** i * v ** j
    return out


# ------------------------------------------------------------------------------------------
# Drawing the sky, the visits and the instrument
# ------------------------------------------------------------------------------------------
def _draw_params(cfg, rng, camera):
    n = cfg.visits
    visits = []
    mjd = cfg.mjd_start
    for k in range(n):
        # HSC-SSP-like dithers: offsets of 0.1-0.6 deg around the field centre, some rotated
        if k == 0:
            r, phi = 0.0, 0.0
        else:
            r = rng.uniform(cfg.dither_min_deg, cfg.dither_max_deg)
            phi = 2 * np.pi * (k - 1) / max(n - 1, 1) + rng.normal(0, 0.3)
        dra, ddec = r * np.cos(phi), r * np.sin(phi)
        ra_c, dec_c = tangent_to_sky(np.radians(dra), np.radians(ddec), cfg.ra, cfg.dec)
        # pointing error of the telescope: ~1" rms
        ra_b, dec_b = tangent_to_sky(*(rng.normal(0, 1.0, 2) * np.pi / 648000), ra_c, dec_c)
        sky_angle = 270.0 if k % 3 != 2 else 270.0 + rng.choice([-1, 1]) * rng.uniform(20, 90)
        if k and k % 2 == 0:
            mjd += 1.0 + rng.integers(0, 3)          # a new night
        else:
            mjd += (cfg.exptime + 40.0) / 86400.0     # the next exposure of the night
        extinction = rng.exponential(0.08)            # transparency: clouds of a few tenths
        theta = rng.normal(0, 2e-5)
        scale = 0.0048 + rng.normal(0, 2e-5)          # the sky scale is ~0.48% above nominal
        shear = rng.normal(0, 1e-5, 2)
        visits.append(dict(
            visit=int(cfg.first_visit + cfg.visit_step * k), ra=float(ra_b), dec=float(dec_b),
            ra_commanded=float(ra_c), dec_commanded=float(dec_c),
            sky_angle=float(sky_angle), mjd=float(mjd), exptime=cfg.exptime,
            seeing_fwhm=float(rng.uniform(0.5, 0.95)),               # arcsec
            sky_adu=float(rng.uniform(1500.0, 4000.0)),              # per pixel
            gain=3.0,
            zp=float(27.0 + 2.5 * np.log10(cfg.exptime) - extinction),
            linear=[[scale + shear[0], -theta + shear[1]], [theta + shear[1], scale - shear[0]]],
            quadratic=(rng.normal(0, 1.5e-3, (2, 3))).tolist(),      # ~0.05" at the field edge
            # cloud gradient/curvature across the field: up to a few hundredths of a mag
            cloud=[[0.0, float(rng.normal(0, 0.01)), float(rng.normal(0, 0.005))],
                   [float(rng.normal(0, 0.01)), float(rng.normal(0, 0.005)), 0.0],
                   [float(rng.normal(0, 0.005)), 0.0, 0.0]],
        ))
    ccds = {}
    for c in camera.science_ccds:
        ccds[str(c)] = dict(dx_mm=float(rng.normal(0, 0.003)), dy_mm=float(rng.normal(0, 0.003)),
                            rot_rad=float(rng.normal(0, 3e-5)), dmag=float(rng.normal(0, 0.01)))
    # illumination residual: radial, ~3% at the edge, plus a small tilt
    illum = [[0.0, 0.004, 0.03], [0.006, 0.0, 0.0], [0.03, 0.0, 0.0]]
    return dict(camera=camera.name, filter=cfg.filter, seed=cfg.seed, visits=visits, ccds=ccds,
                illum=illum, ref_epoch_mjd=REF_EPOCH_MJD)


def _draw_counts(rng, n_mean, mlo, mhi, slope):
    """Magnitudes with dN/dm ~ 10^(slope m) between mlo and mhi."""
    n = rng.poisson(n_mean)
    a, b = 10 ** (slope * mlo), 10 ** (slope * mhi)
    return np.log10(a + rng.uniform(size=n) * (b - a)) / slope


def _draw_sky(cfg, rng, mean_mjd):
    area = 2 * np.pi * (1 - np.cos(np.radians(cfg.field_radius_deg))) * (180 / np.pi) ** 2
    # stars: slope 0.15 dex/mag from 14 to 25 mag, normalised to star_density at 17-25
    s = 0.15
    frac = (10 ** (s * 25) - 10 ** (s * 17)) / (10 ** (s * 25) - 10 ** (s * 14))
    m_star = _draw_counts(rng, cfg.star_density * area / frac, 14.0, 25.0, s)
    m_gal = _draw_counts(rng, cfg.galaxy_density * area, 18.0, 24.5, 0.35)
    n_s, n_g = len(m_star), len(m_gal)
    n = n_s + n_g
    # uniform on the cap
    cosr = 1 - rng.uniform(size=n) * (1 - np.cos(np.radians(cfg.field_radius_deg)))
    r = np.arccos(cosr)
    phi = rng.uniform(0, 2 * np.pi, n)
    ra, dec = tangent_to_sky(np.tan(r) * np.cos(phi), np.tan(r) * np.sin(phi), cfg.ra, cfg.dec)
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
    t["mag"] = _filter_mag(t, cfg.filter)      # the truth in the simulated filter
    return t


def _ps1_mags(stars):
    """PS1-band magnitudes of the sources: `base` is the i-band magnitude, `ri` the colour
    along a rough stellar locus."""
    m = np.asarray(stars["base_mag"])
    ri = np.asarray(stars["ri"])
    return {"g": m + 1.2 * ri + 0.25, "r": m + ri, "i": m + 0.0, "z": m - 0.45 * ri,
            "y": m - 0.6 * ri}


def _filter_mag(stars, filter_name):
    """True magnitude in an HSC filter: the PS1 bands through HSC's colour term for PS1, or
    the filter's band as is where there is none (narrow bands): consistent across filters and
    with the reference catalogue."""
    from .colorterms import find_colorterm
    bands = _ps1_mags(stars)
    term = find_colorterm(REFCAT_NAME, filter_name)
    if term is not None and term.primary in bands and term.secondary in bands:
        return term.transform_mags(bands[term.primary], bands[term.secondary])
    return bands[FILTER_BAND.get(filter_name, "i")]


def _positions_at(stars, mjd):
    dt = (mjd - stars["epoch"]) / DAYS_PER_YEAR
    dec = stars["dec"] + stars["pm_dec"] * dt / 3.6e6
    ra = stars["ra"] + stars["pm_ra"] * dt / 3.6e6 / np.cos(np.radians(stars["dec"]))
    return np.asarray(ra), np.asarray(dec)


# ------------------------------------------------------------------------------------------
# One visit: detections on every CCD
# ------------------------------------------------------------------------------------------
PIXEL_ARCSEC = 0.168
SATURATION_ADU = 40000.0   # peak above the sky


def _observe_visit(cfg, rng, truth, stars, v, ccd_list):
    """Return a list of per-CCD source dicts and truth rows for visit `v`."""
    camera = truth.camera
    visit = v["visit"]
    ra, dec = _positions_at(stars, v["mjd"])
    xi, eta = sky_to_tangent(ra, dec, v["ra"], v["dec"])
    near = np.hypot(xi, eta) < np.radians(0.8)          # the FoV is 0.75 deg in radius
    idx_near = np.nonzero(near)[0]
    X, Y = camera.tangent_plane_to_field_angle(xi[near], eta[near], v["sky_angle"])
    X, Y = truth._unperturb(v, X, Y)
    fx, fy = camera.field_angle_to_focal_plane(X, Y)

    sigma_psf = v["seeing_fwhm"] / 2.3548 / PIXEL_ARCSEC     # pixels
    n_eff = 4 * np.pi * sigma_psf ** 2
    sky_var = v["sky_adu"] / v["gain"]                       # ADU^2 per pixel

    # unresolved blends: objects closer than ~0.8 FWHM merge into one detection
    tan_arcsec = np.stack([xi[near], eta[near]], axis=-1) * (180 / np.pi * 3600)
    group = friends_of_friends(tan_arcsec, 0.8 * v["seeing_fwhm"])

    out = []
    truth_rows = []
    for ccd in ccd_list:
        px, py = truth._fp_to_ccd(ccd, fx, fy)
        d = camera[ccd]
        on = (px >= -0.5) & (px < d.width - 0.5) & (py >= -0.5) & (py < d.height - 0.5)
        sel = np.nonzero(on)[0]
        out.append(_measure_ccd(cfg, rng, truth, v, ccd, stars, idx_near[sel], px[sel], py[sel],
                                group[sel], sigma_psf, n_eff, sky_var, truth_rows))
    return out, truth_rows


def _measure_ccd(cfg, rng, truth, v, ccd, stars, idx, px, py, group, sigma_psf, n_eff, sky_var,
                 truth_rows):
    visit = v["visit"]
    zp = truth.zeropoint(visit, ccd, px, py) if len(idx) else np.zeros(0)
    mag = np.asarray(stars["mag"])[idx]
    is_star = np.asarray(stars["is_star"])[idx]
    size_px = np.asarray(stars["size"])[idx] / PIXEL_ARCSEC
    flux_true = 10 ** (-0.4 * (mag - zp))          # total flux in ADU
    # PSF flux of a Gaussian galaxy: F 2 s_p^2 / (2 s_p^2 + r^2); seeing dependent
    psf_frac = 2 * sigma_psf ** 2 / (2 * sigma_psf ** 2 + size_px ** 2)
    flux_psf_true = flux_true * psf_frac
    outlier = np.zeros(len(idx), dtype=np.int16)

    # merge unresolved blends: flux-weighted centroid, summed flux, id of the brightest
    x_meas_true, y_meas_true, f_meas_true = px.copy(), py.copy(), flux_psf_true.copy()
    keep = np.ones(len(idx), bool)
    if len(idx):
        order = np.lexsort((-flux_psf_true, group))
        g = group[order]
        starts = np.r_[0, np.nonzero(np.diff(g))[0] + 1]
        sizes = np.diff(np.r_[starts, len(g)])
        for s0, n in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = order[s0:s0 + n]
            w = flux_psf_true[members]
            head = members[0]
            x_meas_true[head] = np.sum(w * px[members]) / w.sum()
            y_meas_true[head] = np.sum(w * py[members]) / w.sum()
            f_meas_true[head] = w.sum()
            keep[members[1:]] = False
            if w[1:].sum() > 0.01 * w[0]:
                outlier[head] = BLEND

    # noise and detection
    fvar = np.maximum(f_meas_true, 0) / v["gain"] + n_eff * sky_var + (0.003 * f_meas_true) ** 2
    ferr = np.sqrt(fvar)
    snr = f_meas_true / ferr
    detected = keep & (snr + rng.normal(0, 1, len(idx)) > 5.0)
    size_eff = np.sqrt(sigma_psf ** 2 + size_px ** 2)
    # centroid error: sqrt(2) sigma / SNR for a background-limited Gaussian, plus a floor
    perr = np.sqrt((np.sqrt(2) * size_eff / np.maximum(snr, 1e-3)) ** 2 + 0.003 ** 2)
    x_meas = x_meas_true + rng.normal(0, 1, len(idx)) * perr
    y_meas = y_meas_true + rng.normal(0, 1, len(idx)) * perr
    f_meas = f_meas_true + rng.normal(0, 1, len(idx)) * ferr

    # saturation: the peak over the limit; the flux is lost into bleed trails, centroid biased
    peak = f_meas_true / (2 * np.pi * size_eff ** 2)
    sat = peak > SATURATION_ADU
    f_meas[sat] = f_meas_true[sat] * rng.uniform(0.4, 0.9, sat.sum())
    x_meas[sat] += rng.normal(0, 0.3, sat.sum())
    y_meas[sat] += rng.normal(0, 0.3, sat.sum())
    outlier[sat] = SATURATED
    # displaced centroids (bad deblends, ghosts): 0.2%, 0.3-1.2" away
    disp = detected & ~sat & (rng.uniform(size=len(idx)) < 0.002)
    ang = rng.uniform(0, 2 * np.pi, disp.sum())
    dist = rng.uniform(0.3, 1.2, disp.sum()) / PIXEL_ARCSEC
    x_meas[disp] += dist * np.cos(ang)
    y_meas[disp] += dist * np.sin(ang)
    outlier[disp] = DISPLACED

    # star/galaxy separation: fails for faint compact objects
    m_obs = -2.5 * np.log10(np.maximum(f_meas, 1e-3)) + zp
    p_gal_as_star = 0.003 + 0.5 / (1 + np.exp(-(m_obs - 23.8) / 0.35)) * np.exp(-size_px / 4.0)
    p_star_as_gal = 0.005 + 0.3 / (1 + np.exp(-(m_obs - 24.3) / 0.3))
    u = rng.uniform(size=len(idx))
    ext = np.where(is_star, (u < p_star_as_gal), ~(u < p_gal_as_star)).astype(float)

    sel = np.nonzero(detected)[0]
    n_det = len(sel)
    # spurious point sources: cosmic rays (sharp, one visit) and moving objects
    n_cr = rng.poisson(3)
    n_mov = rng.poisson(0.3)
    n_extra = n_cr + n_mov
    d = truth.camera[ccd]
    ex_x = rng.uniform(0, d.width - 1, n_extra)
    ex_y = rng.uniform(0, d.height - 1, n_extra)
    ex_f = np.r_[10 ** rng.uniform(2.5, 3.8, n_cr),
                 10 ** (-0.4 * (rng.uniform(20, 24, n_mov) - (v["zp"])))]
    ex_ferr = np.sqrt(ex_f / v["gain"] + n_eff * sky_var)
    ex_perr = np.sqrt(2) * sigma_psf / (ex_f / ex_ferr)

    n = n_det + n_extra
    rows = {
        "x": np.r_[x_meas[sel], ex_x], "y": np.r_[y_meas[sel], ex_y],
        "x_err": np.r_[perr[sel], ex_perr], "flux": np.r_[f_meas[sel], ex_f],
        "flux_err": np.r_[ferr[sel], ex_ferr],
        "ext": np.r_[ext[sel], (rng.uniform(size=n_extra) < 0.3).astype(float)],
        "sat": np.r_[sat[sel], np.zeros(n_extra, bool)],
    }
    # PSF stars: bright, unsaturated, isolated point sources, ~30 per CCD
    cand = np.nonzero(is_star[sel] & ~sat[sel] & (snr[sel] > 50) & (outlier[sel] == CLEAN))[0]
    psf_used = np.zeros(n, bool)
    psf_used[rng.permutation(cand)[:30]] = True

    ids = ((v["visit"] * 200 + ccd) << 32) + np.arange(1, n + 1, dtype=np.int64)
    truth_rows.append(dict(
        visit=np.full(n, v["visit"], np.int32), ccd=np.full(n, ccd, np.int16), id=ids,
        truth_id=np.r_[np.asarray(stars["truth_id"])[idx[sel]], np.full(n_extra, -1)],
        x_true=np.r_[px[sel], ex_x], y_true=np.r_[py[sel], ex_y],
        instFlux_true=np.r_[flux_true[sel], ex_f],
        outlier=np.r_[outlier[sel], np.full(n_cr, COSMIC_RAY), np.full(n_mov, MOVING)].astype(np.int16)))
    return dict(visit=v["visit"], ccd=ccd, ids=ids, psf_used=psf_used, **rows)


# ------------------------------------------------------------------------------------------
# The single-frame products: initial WCS, FLUXMAG0, SRC catalog, CORR header/image
# ------------------------------------------------------------------------------------------
def _single_frame_wcs(truth, rng, visit, ccd):
    """A TAN-SIP of order 4 fitted to the truth, then disturbed by a typical single-frame
    astrometric error: 0.1-1" offset, ~0.5" rotation across the CCD, ~1e-5 scale error."""
    d = truth.camera[ccd]
    gx, gy = np.meshgrid(np.linspace(0, d.width - 1, 9), np.linspace(0, d.height - 1, 17))
    gx, gy = gx.ravel(), gy.ravel()
    xi, eta = truth.pixel_to_tangent(visit, ccd, gx, gy)
    off = rng.uniform(0.1, 1.0) * np.pi / 648000
    ang = rng.uniform(0, 2 * np.pi)
    rot = rng.normal(0, 2e-5)
    scl = rng.normal(0, 1e-5)
    cx, cy = np.mean(xi), np.mean(eta)
    xi2 = cx + (xi - cx) * (1 + scl) - (eta - cy) * rot + off * np.cos(ang)
    eta2 = cy + (eta - cy) * (1 + scl) + (xi - cx) * rot + off * np.sin(ang)
    v = truth.visits[visit]
    ra, dec = tangent_to_sky(xi2, eta2, v["ra"], v["dec"])
    crpix = ((d.width + 1) / 2.0, (d.height + 1) / 2.0)
    ra_c, dec_c = tangent_to_sky(*_interp_centre(gx, gy, xi2, eta2, crpix), v["ra"], v["dec"])
    return fit_tan_sip(gx, gy, ra, dec, crpix, (float(ra_c), float(dec_c)), 4,
                       inverse_box=(-0.5, d.width - 0.5, -0.5, d.height - 0.5))


def _interp_centre(gx, gy, xi, eta, crpix):
    # the grid is regular and contains the centre pixel up to interpolation: fit a quadratic
    u, w = gx - (crpix[0] - 1), gy - (crpix[1] - 1)
    M = np.stack([np.ones_like(u), u, w, u * u, u * w, w * w], axis=-1)
    return np.linalg.lstsq(M, xi, rcond=None)[0][0], np.linalg.lstsq(M, eta, rcond=None)[0][0]


def _src_table(det, wcs_header):
    n = len(det["x"])
    ra, dec = sip_pixel_to_sky(wcs_header, det["x"], det["y"])
    t = Table()
    t["id"] = det["ids"]
    t["coord_ra"] = np.radians(ra)
    t["coord_dec"] = np.radians(dec)
    t["parent"] = np.zeros(n, np.int64)
    t["base_SdssCentroid_x"] = det["x"]
    t["base_SdssCentroid_y"] = det["y"]
    t["base_SdssCentroid_xSigma"] = det["x_err"].astype(np.float32)
    t["base_SdssCentroid_ySigma"] = det["x_err"].astype(np.float32)
    t["base_PsfFlux_flux"] = det["flux"]
    t["base_PsfFlux_fluxSigma"] = det["flux_err"]
    t["base_ClassificationExtendedness_value"] = det["ext"]
    t["calib_psfUsed"] = det["psf_used"]
    t["base_PixelFlags_flag_saturated"] = det["sat"]
    t["base_PixelFlags_flag_saturatedCenter"] = det["sat"]
    t["base_SdssCentroid_flag"] = np.zeros(n, bool)
    t["base_PsfFlux_flag"] = det["flux"] <= 0
    return t


class SimulatedTract:
    """The in-memory result of :func:`make_tract`: truth, inputs, and their writer."""

    def __init__(self, cfg, truth, stars, detections, catalogs, wcs_headers, fluxmag0, refcat,
                 missing):
        self.config = cfg
        self.truth = truth
        self.stars = stars                # Table
        self.detections = detections      # Table (truth of every detection)
        self.catalogs = catalogs          # {(visit, ccd): Table in the afw SRC schema}
        self.wcs_headers = wcs_headers    # {(visit, ccd): single-frame TAN-SIP header}
        self.fluxmag0 = fluxmag0          # {(visit, ccd): (FLUXMAG0, FLUXMAG0ERR)}
        self.refcat = refcat              # Table in the LSST reference-catalogue convention
        self.missing = missing            # {(visit, ccd): "src" | "calexp" | "both"}

    @property
    def visits(self):
        return sorted(self.truth.visits)

    def write(self, root, rerun="sim", jobs=1):
        """Write the data repository ROOT (registry, rerun RERUN with CORR and SRC files,
        ref_cats/, truth/). Returns the number of files written."""
        return _write_repository(self, root, rerun, jobs)


def make_tract(config=None, **kw):
    """Simulate a tract in memory. Keywords override fields of :class:`SimConfig`."""
    cfg = dataclasses.replace(config or SimConfig(), **kw)
    if cfg.visits < 1:
        raise MosaicError(f"--visits must be at least 1, not {cfg.visits}")
    camera = hsc()
    bad = [c for c in cfg.ccds if c not in camera.science_ccds]
    if bad:
        raise MosaicError(f"no science CCD {bad[0]} in {camera.name} (0..103)")
    rng = np.random.default_rng(cfg.seed)
    truth = TruthModel(_draw_params(cfg, rng, camera), camera)
    vis = [truth.visits[v] for v in sorted(truth.visits)]
    mean_mjd = float(np.mean([v["mjd"] for v in vis]))
    stars = _draw_sky(cfg, rng, mean_mjd)

    live = [c for c in cfg.ccds if c not in cfg.dead_ccds]
    per_ccd = {}
    truth_rows = []
    for v in vis:
        dets, rows = _observe_visit(cfg, rng, truth, stars, v, live)
        truth_rows += rows
        for det in dets:
            per_ccd[(v["visit"], det["ccd"])] = det
    detections = Table({k: np.concatenate([r[k] for r in truth_rows]) for k in truth_rows[0]}) \
        if truth_rows else Table()

    wcs_headers, catalogs, fluxmag0 = {}, {}, {}
    for key, det in per_ccd.items():
        wcs_headers[key] = _single_frame_wcs(truth, rng, *key)
        catalogs[key] = _src_table(det, wcs_headers[key])
        # single-frame photometric calibration: a few per cent off the truth at the CCD centre
        d = camera[key[1]]
        zp = truth.zeropoint(key[0], key[1], (d.width - 1) / 2.0, (d.height - 1) / 2.0)
        fluxmag0[key] = (float(10 ** (0.4 * (zp + rng.normal(0, 0.02))) ), float(10 ** (0.4 * zp) * 0.01))
    missing = {}
    keys = sorted(per_ccd)
    n_fail = int(round(cfg.failed_fraction * len(keys)))
    for i in rng.permutation(len(keys))[:n_fail]:
        missing[keys[i]] = rng.choice(["src", "calexp"])
    for v in vis:
        for c in cfg.dead_ccds:
            if c in cfg.ccds:
                missing[(v["visit"], c)] = "both"
    refcat = _make_refcat(cfg, rng, stars)
    return SimulatedTract(cfg, truth, stars, detections, catalogs, wcs_headers, fluxmag0, refcat,
                          missing)


def _make_refcat(cfg, rng, stars):
    """Gaia-like astrometry (epoch 2016.0, proper motions, errors growing with magnitude) and
    PS1-like fluxes of the brighter stars; the band of the simulated filter equals the truth."""
    band = FILTER_BAND.get(cfg.filter, "i")
    sel = np.asarray(stars["is_star"]) & (np.asarray(stars["mag"]) < cfg.ref_mag_limit)
    s = stars[sel]
    m = np.asarray(s["mag"])
    n = len(s)
    # Gaia DR3-like: 0.02-0.07 mas to G = 17, 0.4 mas at 20, 0.7 mas at 21 (at epoch 2016.0)
    pos_err = np.where(m < 17, 0.02 + 0.0125 * np.clip(m - 13, 0, None), 0.07 * 10 ** (0.25 * (m - 17)))
    pm_err = 1.2 * pos_err                                                       # mas/yr
    ra_t, dec_t = _positions_at(s, REF_EPOCH_MJD)
    dra = rng.normal(0, 1, n) * pos_err
    ddec = rng.normal(0, 1, n) * pos_err
    dec = dec_t + ddec / 3.6e6
    ra = ra_t + dra / 3.6e6 / np.cos(np.radians(dec_t))
    pm_ra = np.asarray(s["pm_ra"]) + rng.normal(0, 1, n) * pm_err
    pm_dec = np.asarray(s["pm_dec"]) + rng.normal(0, 1, n) * pm_err
    mag_err = np.sqrt(0.004 ** 2 + (0.01 * 10 ** (0.4 * (m - 20.0))) ** 2)
    colours = _ps1_mags(s)     # their colour-term transform is the truth (see _filter_mag)
    t = Table()
    t["id"] = np.asarray(s["truth_id"], np.int64)
    t["coord_ra"] = np.radians(ra)
    t["coord_dec"] = np.radians(dec)
    t["coord_raErr"] = pos_err * MAS
    t["coord_decErr"] = pos_err * MAS
    t["pm_ra"] = pm_ra * MAS      # rad/yr
    t["pm_dec"] = pm_dec * MAS
    t["pm_raErr"] = pm_err * MAS
    t["pm_decErr"] = pm_err * MAS
    t["epoch"] = np.full(n, REF_EPOCH_MJD)
    t.meta["name"] = REFCAT_NAME
    for b, mb in colours.items():
        mb_obs = mb + rng.normal(0, 1, n) * mag_err
        t[f"{b}_flux"] = 10 ** (-0.4 * (mb_obs - 31.4))          # nJy
        t[f"{b}_fluxErr"] = t[f"{b}_flux"] * mag_err * np.log(10) / 2.5
    return t


# ------------------------------------------------------------------------------------------
# Writing the repository
# ------------------------------------------------------------------------------------------
def _date_strings(mjd):
    from astropy.time import Time
    t = Time(mjd, format="mjd", scale="tai")
    return t.utc.isot[:10], t.isot


def _registry_rows(sim):
    cfg = sim.config
    rows = []
    for visit in sim.visits:
        v = sim.truth.visits[visit]
        date, tai = _date_strings(v["mjd"])
        for ccd in cfg.ccds:
            rows.append(dict(field=cfg.field, visit=visit, filter=cfg.filter, dateObs=date,
                             pointing=cfg.pointing, ccd=int(ccd), config="", taiObs=tai,
                             expTime=v["exptime"]))
    return rows


def _corr_primary(sim, visit, ccd):
    v = sim.truth.visits[visit]
    date, tai = _date_strings(v["mjd"])
    h = fits.Header()
    h["FLUXMAG0"], h["HIERARCH FLUXMAG0ERR"] = sim.fluxmag0[(visit, ccd)]
    h["FILTER"] = sim.config.filter
    h["EXPTIME"] = v["exptime"]
    h["DATE-OBS"] = date
    h["MJD"] = v["mjd"]
    h["MJD-AVG"] = v["mjd"] + 0.5 * v["exptime"] / 86400.0
    h["BORE-RA"] = (v["ra_commanded"], "[deg] telescope boresight RA (commanded)")
    h["BORE-DEC"] = (v["dec_commanded"], "[deg] telescope boresight Dec (commanded)")
    h["HIERARCH BORE-ROTANG"] = (v["sky_angle"], "[deg] rotator sky position angle")
    h["ROTTYPE"] = "SKY"
    h["VISIT"] = visit
    h["CCD"] = ccd
    h["DET-ID"] = ccd
    h["OBJECT"] = sim.config.field
    h["POINTING"] = sim.config.pointing
    h["INSTRUME"] = "Hyper Suprime-Cam"
    return h


def _render_ccd(sim, visit, ccd, rng):
    """Star and galaxy images with noise, background subtracted (a calexp), plus mask and
    variance planes, consistent with the catalogue's truth fluxes."""
    v = sim.truth.visits[visit]
    d = sim.truth.camera[ccd]
    det = sim.detections
    m = (np.asarray(det["visit"]) == visit) & (np.asarray(det["ccd"]) == ccd)
    sub = det[m]
    sigma_psf = v["seeing_fwhm"] / 2.3548 / PIXEL_ARCSEC
    img = np.zeros((d.height, d.width), np.float32)
    sizes = dict(zip(np.asarray(sim.stars["truth_id"]), np.asarray(sim.stars["size"])))
    for tid, x, y, f in zip(sub["truth_id"], sub["x_true"], sub["y_true"], sub["instFlux_true"]):
        s = np.hypot(sigma_psf, sizes.get(int(tid), 0.0) / PIXEL_ARCSEC)
        r = int(np.ceil(5 * s))
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 2, d.width)
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 2, d.height)
        if x0 >= x1 or y0 >= y1:
            continue
        # pixel-integrated Gaussian (error functions), so aperture sums equal the flux
        from math import erf, sqrt
        ex = np.array([erf((xx - x) / (sqrt(2) * s)) for xx in np.arange(x0, x1 + 1) - 0.5])
        ey = np.array([erf((yy - y) / (sqrt(2) * s)) for yy in np.arange(y0, y1 + 1) - 0.5])
        img[y0:y1, x0:x1] += (f * 0.25 * np.outer(np.diff(ey), np.diff(ex))).astype(np.float32)
    var = (v["sky_adu"] + np.maximum(img, 0)) / v["gain"]
    img += (rng.normal(0, 1, img.shape) * np.sqrt(var)).astype(np.float32)
    mask = np.zeros(img.shape, np.int32)
    sat = img > SATURATION_ADU
    img[sat] = SATURATION_ADU
    mask[sat] |= 1 << 1                      # SAT
    return img, mask, var.astype(np.float32)


def _write_one(sim, repo, key, images, rng_seed, matches=None):
    from .catalog import write_src
    from .exposure import Exposure, write_corr
    visit, ccd = key
    what = sim.missing.get(key)
    did = dict(visit=visit, ccd=ccd, pointing=sim.config.pointing, filter=sim.config.filter)
    n = 0
    if what not in ("src", "both"):
        src = sim.catalogs[key]
        write_src(repo.path("src", **did), src_in_schema(src, sim.config.schema))
        n += 1
        if sim.config.match_files and matches is not None:
            n += _write_match_files(sim, repo, did, key, src, matches, rng_seed)
    if what not in ("calexp", "both"):
        wh = fits.Header(sim.wcs_headers[key])
        img = mask = var = None
        if images:
            img, mask, var = _render_ccd(sim, visit, ccd, np.random.default_rng(rng_seed))
        write_corr(repo.path("calexp", **did),
                   Exposure(image=img, mask=mask, variance=var,
                            header=_corr_primary(sim, visit, ccd), wcs_header=wh))
        n += 1
    return n


# ------------------------------------------------------------------------------------------
# hscPipe 3.x column names; reference match files (icMatch, srcMatch, srcMatchFull)
# ------------------------------------------------------------------------------------------
SCHEMAS = ("lsst", "hsc3")
MATCH_FILES = ("srcMatch", "srcMatchFull", "icMatch")
ICSRC_MIN_SNR = 50.0          # the calibration step's bright, isolated sources


def src_in_schema(t, schema):
    """A simulated SRC table (LSST names, :func:`_src_table`) with the column names and layout
    of `schema`: 'lsst' as is; 'hsc3' as hscPipe 3.x (afw table version 0) wrote it, the
    dotted names of mosaicfit.catalog.SCHEMAS['hsc3'] with '_' for '.' on disk, 2-vector
    ``coord`` and ``centroid_sdss``, packed covariance ``centroid_sdss_err`` (xx, xy, yy)."""
    if schema == "lsst":
        return t
    if schema != "hsc3":
        raise MosaicError(f"unknown SRC schema {schema!r}; known: {', '.join(SCHEMAS)}")
    n = len(t)
    out = Table()
    out["id"] = t["id"]
    out["coord"] = np.column_stack([t["coord_ra"], t["coord_dec"]]).reshape(n, 2)
    out["parent"] = t["parent"]
    out["centroid_sdss"] = np.column_stack([t["base_SdssCentroid_x"],
                                            t["base_SdssCentroid_y"]]).reshape(n, 2)
    sx = np.asarray(t["base_SdssCentroid_xSigma"], float)
    sy = np.asarray(t["base_SdssCentroid_ySigma"], float)
    out["centroid_sdss_err"] = np.column_stack([sx ** 2, np.zeros(n), sy ** 2]).reshape(n, 3) \
        .astype(np.float32)
    out["centroid_sdss_flags"] = t["base_SdssCentroid_flag"]
    out["flux_psf"] = t["base_PsfFlux_flux"]
    out["flux_psf_err"] = t["base_PsfFlux_fluxSigma"]
    out["flux_psf_flags"] = t["base_PsfFlux_flag"]
    out["classification_extendedness"] = t["base_ClassificationExtendedness_value"]
    out["calib_psf_used"] = t["calib_psfUsed"]
    out["flags_pixel_saturated_any"] = t["base_PixelFlags_flag_saturated"]
    out["flags_pixel_saturated_center"] = t["base_PixelFlags_flag_saturatedCenter"]
    out.meta["afw_table_version"] = 0
    return out


def _reference_matches(sim):
    """{(visit, ccd): (SRC rows, refcat rows, separation in radians)}: the matches the
    single-frame astrometry made: the detections of reference stars whose measured position
    (through the true WCS) lies within 1" (meas_astrom's catalogMatchDist) of the reference
    position propagated to the visit's epoch."""
    ref = sim.refcat
    rrow = {int(i): k for k, i in enumerate(np.asarray(ref["id"]))}
    det = sim.detections
    tid = np.asarray(det["truth_id"], np.int64)
    did = np.asarray(det["id"], np.int64)
    key = np.asarray(det["visit"], np.int64) * 1000 + np.asarray(det["ccd"], np.int64)
    out = {}
    for (v, c), cat in sim.catalogs.items():
        m = key == v * 1000 + c
        ids = np.asarray(cat["id"], np.int64)
        truth_of = dict(zip(did[m], tid[m]))
        src_rows, ref_rows = [], []
        for k, i in enumerate(ids):
            r = rrow.get(int(truth_of.get(int(i), -1)), -1)
            if r >= 0:
                src_rows.append(k)
                ref_rows.append(r)
        src_rows, ref_rows = np.array(src_rows, int), np.array(ref_rows, int)
        if not len(src_rows):
            out[(v, c)] = (src_rows, ref_rows, np.zeros(0))
            continue
        mjd = sim.truth.visits[v]["mjd"]
        dt = (mjd - np.asarray(ref["epoch"])[ref_rows]) / DAYS_PER_YEAR
        dec0 = np.asarray(ref["coord_dec"])[ref_rows]
        dec = dec0 + np.asarray(ref["pm_dec"])[ref_rows] * dt
        ra = np.asarray(ref["coord_ra"])[ref_rows] + \
            np.asarray(ref["pm_ra"])[ref_rows] * dt / np.cos(dec0)
        mra, mdec = sim.truth.pixel_to_sky(v, c, np.asarray(cat["base_SdssCentroid_x"])[src_rows],
                                           np.asarray(cat["base_SdssCentroid_y"])[src_rows])
        a = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)
        mra, mdec = np.radians(mra), np.radians(mdec)
        b = np.stack([np.cos(mdec) * np.cos(mra), np.cos(mdec) * np.sin(mra), np.sin(mdec)], -1)
        sep = 2 * np.arcsin(np.clip(np.linalg.norm(a - b, axis=1) / 2, 0, 1))
        ok = sep < np.radians(1.0 / 3600)
        out[(v, c)] = (src_rows[ok], ref_rows[ok], sep[ok])
    return out


def _match_metadata(sim, key):
    """The match metadata of meas_astrom's createMatchMetadata for a CCD."""
    from .sip import sip_pixel_to_sky
    d = sim.truth.camera[key[1]]
    wh = sim.wcs_headers[key]
    cx, cy = (d.width - 1) / 2.0, (d.height - 1) / 2.0
    ra, dec = sip_pixel_to_sky(wh, np.array([cx, 0, 0, d.width - 1, d.width - 1]),
                               np.array([cy, 0, d.height - 1, 0, d.height - 1]))
    v = np.stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                  np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))], -1)
    radius = np.degrees(np.max(np.arccos(np.clip(v[1:] @ v[0], -1, 1))))
    return {"RA": float(ra[0]), "DEC": float(dec[0]), "RADIUS": float(radius), "SMATCHV": 1,
            "FILTER": sim.config.filter}


def _full_reference_rows(sim, rows):
    """Reference records as the single-frame astrometry loaded them: the catalogue as is
    (LSST names, nJy) or, for hscPipe 3.x, id, a 2-vector coord and <band>_flux /
    <band>_fluxSigma in Jy without position errors or proper motions (astrometry.net)."""
    ref = sim.refcat[rows]
    if sim.config.schema == "lsst":
        t = Table(ref, copy=True)
        for name in t.colnames:
            if name.endswith(("_flux", "_fluxErr")):
                t[name].meta["TUNIT"] = "nJy"
        t.meta.clear()
        return t
    t = Table()
    t["id"] = ref["id"]
    t["coord"] = np.column_stack([ref["coord_ra"], ref["coord_dec"]]).reshape(len(ref), 2)
    for b in ("g", "r", "i", "z", "y"):
        if f"{b}_flux" in ref.colnames:
            t[f"{b}_flux"] = np.asarray(ref[f"{b}_flux"]) / 1e9
            t[f"{b}_flux"].meta["TUNIT"] = "Jy"
            t[f"{b}_fluxSigma"] = np.asarray(ref[f"{b}_fluxErr"]) / 1e9
            t[f"{b}_fluxSigma"].meta["TUNIT"] = "Jy"
    return t


def _write_match_files(sim, repo, did, key, src, matches, seed):
    from .catalog import write_src
    from .matchfile import full_match_table, write_full_match_file, write_match_file
    src_rows, ref_rows, sep = matches[key]
    meta = _match_metadata(sim, key)
    ref_ids = np.asarray(sim.refcat["id"], np.int64)[ref_rows]
    src_ids = np.asarray(src["id"], np.int64)[src_rows]
    version = 0 if sim.config.schema == "hsc3" else 1
    n = 0
    todo = sim.config.match_files
    if "srcMatch" in todo:
        write_match_file(repo.path("srcMatch", **did), ref_ids, src_ids, sep, meta, version)
        n += 1
    if "srcMatchFull" in todo:
        t = full_match_table(_full_reference_rows(sim, ref_rows),
                             src_in_schema(src[src_rows], sim.config.schema), sep)
        write_full_match_file(repo.path("srcMatchFull", **did), t,
                              dict(meta, REFCAT=REFCAT_NAME), version=version)
        n += 1
    if "icMatch" in todo:
        # ICSRC: the bright sources of the calibration step, measured again (centroids differ
        # by a few hundredths of a pixel) and numbered on their own: its ids are not SRC's
        rng = np.random.default_rng(seed + 7)
        snr = np.asarray(src["base_PsfFlux_flux"]) / np.asarray(src["base_PsfFlux_fluxSigma"])
        ic_rows = np.nonzero(snr > ICSRC_MIN_SNR)[0]
        ic = src[ic_rows]
        ic["id"] = (np.asarray(ic["id"]) >> 32 << 32) + np.arange(1, len(ic) + 1)
        for c in ("base_SdssCentroid_x", "base_SdssCentroid_y"):
            ic[c] = np.asarray(ic[c]) + rng.normal(0, 0.02, len(ic))
        write_src(repo.path("icSrc", **did), src_in_schema(ic, sim.config.schema))
        pos = {int(r): k for k, r in enumerate(ic_rows)}
        keep = np.array([int(r) in pos for r in src_rows], bool)
        ic_ids = np.asarray(ic["id"], np.int64)[[pos[int(r)] for r in src_rows[keep]]]
        write_match_file(repo.path("icMatch", **did), ref_ids[keep], ic_ids, sep[keep], meta,
                         version)
        n += 2
    return n


def _write_repository(sim, root, rerun, jobs=1):
    from .layout import Registry, Repository
    from .refcat import write_refcat
    os.makedirs(root, exist_ok=True)
    Registry.create(os.path.join(root, "registry.sqlite3"), _registry_rows(sim))
    repo = Repository(root, rerun)
    keys = sorted(set(sim.catalogs) | set(sim.missing))
    keys = [k for k in keys if k in sim.catalogs]
    seeds = {k: (sim.config.seed * 1000003 + k[0] * 211 + k[1]) for k in keys}
    bad = [m for m in sim.config.match_files if m not in MATCH_FILES]
    if bad:
        raise MosaicError(f"unknown match file kind {bad[0]!r}; known: {', '.join(MATCH_FILES)}")
    if sim.config.schema not in SCHEMAS:
        raise MosaicError(f"unknown SRC schema {sim.config.schema!r}; known: {', '.join(SCHEMAS)}")
    matches = _reference_matches(sim) if sim.config.match_files else None
    n = 0
    if jobs > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(jobs) as ex:
            n = sum(ex.map(lambda k: _write_one(sim, repo, k, sim.config.images, seeds[k],
                                                matches), keys))
    else:
        for k in keys:
            n += _write_one(sim, repo, k, sim.config.images, seeds[k], matches)
    write_refcat(repo.refcat_dir(REFCAT_NAME), sim.refcat)
    tdir = os.path.join(root, "truth")
    os.makedirs(tdir, exist_ok=True)
    stars = sim.stars.copy()
    stars["ra"].unit = stars["dec"].unit = "deg"
    stars["pm_ra"].unit = stars["pm_dec"].unit = "mas/yr"
    write_fits(fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(stars)]),
               os.path.join(tdir, "stars.fits"))
    write_fits(fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(sim.detections)]),
               os.path.join(tdir, "detections.fits"))
    write_text(sim.truth.to_json(), os.path.join(tdir, "model.json"))
    return n + 3


def simulate(root, rerun="sim", jobs=1, config=None, **kw):
    """Simulate a tract and write it as a data repository at `root`; returns the
    :class:`SimulatedTract`."""
    t0 = time.time()
    sim = make_tract(config, **kw)
    sim.timing = {"simulate": time.time() - t0}
    t1 = time.time()
    sim.write(root, rerun, jobs=jobs)
    sim.timing["write"] = time.time() - t1
    return sim


# ------------------------------------------------------------------------------------------
# Measuring a calibration against the truth
# ------------------------------------------------------------------------------------------
class Truth:
    """The truth of a simulated repository, for measuring any calibration against it.

    Only clean detections of stars count (no blends, saturation, displaced centroids, cosmic
    rays or moving objects): these are where a calibration can and must be right.
    """

    def __init__(self, root):
        from astropy.table import Table as _T
        self.root = root
        self.model = TruthModel.load(root)
        tdir = os.path.join(root, "truth")
        try:
            self.stars = _T.read(os.path.join(tdir, "stars.fits"))
            self.detections = _T.read(os.path.join(tdir, "detections.fits"))
        except (OSError, ValueError) as e:
            raise MosaicError(f"{tdir}: cannot read the simulation truth: {e}") from None
        self._row = {int(t): i for i, t in enumerate(np.asarray(self.stars["truth_id"]))}
        d = self.detections
        key = np.asarray(d["visit"], np.int64) * 1000 + np.asarray(d["ccd"], np.int64)
        order = np.argsort(key, kind="stable")
        self._order = order
        self._keys, self._starts = np.unique(key[order], return_index=True)
        self._ends = np.r_[self._starts[1:], len(order)]

    def clean_stars(self, visit, ccd):
        """Truth rows (Table) of the clean star detections of (visit, ccd) with the star's
        true ra, dec (degrees, at the visit's epoch) and magnitude."""
        k = np.searchsorted(self._keys, visit * 1000 + ccd)
        if k >= len(self._keys) or self._keys[k] != visit * 1000 + ccd:
            return None
        sub = self.detections[self._order[self._starts[k]:self._ends[k]]]
        sub = sub[(np.asarray(sub["outlier"]) == CLEAN) & (np.asarray(sub["truth_id"]) > 0)]
        rows = np.array([self._row[int(t)] for t in sub["truth_id"]], dtype=int)
        stars = self.stars[rows] if len(rows) else self.stars[:0]
        sub = sub[np.asarray(stars["is_star"], bool)]
        stars = stars[np.asarray(stars["is_star"], bool)]
        ra, dec = _positions_at(stars, self.model.visits[visit]["mjd"])
        sub["ra"], sub["dec"], sub["mag"] = ra, dec, np.asarray(stars["mag"])
        return sub

    def astrometric_error(self, visit, ccd, pixel_to_sky):
        """(dRA cos Dec, dDec) in mas of `pixel_to_sky(x, y) -> (ra, dec) deg` at the
        noise-free positions of the clean stars of (visit, ccd)."""
        s = self.clean_stars(visit, ccd)
        if s is None or len(s) == 0:
            return np.zeros(0), np.zeros(0)
        ra, dec = pixel_to_sky(np.asarray(s["x_true"]), np.asarray(s["y_true"]))
        dra = ((ra - s["ra"] + 180.0) % 360.0 - 180.0) * np.cos(np.radians(s["dec"]))
        return np.asarray(dra) * 3.6e6, np.asarray(dec - s["dec"]) * 3.6e6

    def photometric_error(self, visit, ccd, calibrated_mag):
        """mmag of `calibrated_mag(x, y, instFlux) -> mag` for the noise-free fluxes of the
        clean stars of (visit, ccd), minus their true magnitudes."""
        s = self.clean_stars(visit, ccd)
        if s is None or len(s) == 0:
            return np.zeros(0)
        m = calibrated_mag(np.asarray(s["x_true"]), np.asarray(s["y_true"]),
                           np.asarray(s["instFlux_true"]))
        return (np.asarray(m) - np.asarray(s["mag"])) * 1000.0


def evaluate_inputs(root, rerun, refs):
    """Errors of the single-frame inputs (CORR WCS and FLUXMAG0) of `refs` against the truth:
    dict(wcs_rms_mas=(ra, dec), zp_rms_mmag, zp_range_mmag, n_stars)."""
    from .exposure import read_corr
    from .layout import Repository
    from .sip import sip_pixel_to_sky as p2s
    truth = Truth(root)
    repo = Repository(root, rerun)
    dra, ddec, dmag, zps = [], [], [], []
    for ref in refs:
        path = repo.find("calexp", **ref.data_id)
        if path is None:
            continue
        exp = read_corr(path, metadata_only=True)
        a, b = truth.astrometric_error(ref.visit, ref.ccd, lambda x, y: p2s(exp.wcs_header, x, y))
        dra.append(a)
        ddec.append(b)
        f0 = exp.fluxmag0
        dm = truth.photometric_error(ref.visit, ref.ccd,
                                     lambda x, y, f: -2.5 * np.log10(f / f0))
        dmag.append(dm)
        s = truth.clean_stars(ref.visit, ref.ccd)
        if s is not None and len(s):
            zps.append(truth.model.zeropoint(ref.visit, ref.ccd, s["x_true"], s["y_true"])
                       - truth.model.visits[ref.visit]["zp"])
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)
    dra, ddec, dmag, zps = cat(dra), cat(ddec), cat(dmag), cat(zps)
    rms = lambda a: float(np.sqrt(np.mean(a ** 2))) if len(a) else float("nan")
    return dict(wcs_rms_mas=(rms(dra), rms(ddec)), zp_rms_mmag=rms(dmag),
                zp_range_mmag=float(np.ptp(zps) * 1000) if len(zps) else float("nan"),
                n_stars=int(len(dra)))


def evaluate_outputs(root, rerun, refs, tract):
    """Errors of the mosaic's wcs-/fcr- files of `refs` against the truth: dict(wcs_rms_mas=
    (ra, dec), zp_rms_mmag, n_stars, n_ccds). The calibrated magnitude is hscPipe's:
    -2.5 log10(flux 10^(-0.4 P) J / FLUXMAG0), J the pixel area of the wcs- file."""
    from .camera import hsc
    from .fluxcorr import read_fcr
    from .layout import Repository
    from .sip import pixel_area_ratio, sip_pixel_to_sky
    from .wcsfile import read_wcs_header
    truth = Truth(root)
    repo = Repository(root, rerun)
    dra, ddec, dmag = [], [], []
    n_ccds = 0
    for ref in refs:
        did = dict(ref.data_id, tract=tract)
        wp, fp = repo.path("wcs", **did), repo.path("fcr", **did)
        if not (os.path.exists(wp) and os.path.exists(fp)):
            continue
        n_ccds += 1
        h = read_wcs_header(wp)
        fc = read_fcr(fp, hsc()[ref.ccd].nquarter)
        a, b = truth.astrometric_error(ref.visit, ref.ccd, lambda x, y: sip_pixel_to_sky(h, x, y))
        dra.append(a)
        ddec.append(b)
        dmag.append(truth.photometric_error(ref.visit, ref.ccd, lambda x, y, f: -2.5 * np.log10(
            f * fc.factor(x, y, pixel_area_ratio(h, x, y)) / fc.fluxmag0)))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)
    rms = lambda a: float(np.sqrt(np.mean(a ** 2))) if len(a) else float("nan")
    dra, ddec, dmag = cat(dra), cat(ddec), cat(dmag)
    return dict(wcs_rms_mas=(rms(dra), rms(ddec)), zp_rms_mmag=rms(dmag), n_stars=int(len(dra)),
                n_ccds=n_ccds)
