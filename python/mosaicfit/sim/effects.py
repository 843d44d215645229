"""The switchable effects that make the simulation as hard as the sky (``SimConfig.effects``,
``mosaicfit simulate --effects``): the physics of each, and the drawing of its per-visit
parameters into the truth model.

Each effect has its own random stream (seeded from the simulation's seed and the effect's
name), so that switching one on leaves everything the others draw unchanged, and with no
effect on the simulation is the default one, number for number.

* ``edge-wcs``: the single-frame (CORR) WCS of a visit is off by a smooth error of the whole
  visit's solution, ~0.05" at the centre growing with the field radius to ~1.5" rms at the
  edge (a radial cubic distortion error plus a quadratic one along a random direction),
  instead of a per-CCD 0.1-1" offset. The truth does not change.
* ``dcr``: differential chromatic refraction. Each night's visits are timed at an hour angle
  from Mauna Kea (airmass up to ``dcr_max_airmass``); every source is displaced towards the
  zenith by ``k(filter) tan(z) (colour - colour_ref)`` with ``colour`` the PS1 g-i, ``k`` from
  the dispersion of air over the filter (:func:`dcr_coefficient_mas`; k < 0: sources bluer
  than the reference move towards the zenith).
* ``doubled``: one visit has doubled images (a tracking or guiding fault): a fraction of its
  detections is measured 50-300 mas off along one direction; the truth flags them (outlier
  code DOUBLED, column ``doubled_mas``).
* ``centroid-errors``: the centroid errors the SRC reports are misestimated: scaled per visit
  and with a per-detection log-normal scatter, while the true scatter has a floor of a few mas
  that the reported errors lack; the truth keeps the true error (column ``x_err_true``).
* ``clouds``: the edge of a cloud across one visit: its transparency falls across the field
  as a smooth ramp, ``depth * S((d - d0) / width)`` magnitudes with d the field angle along a
  random direction and S the logistic function: clear on one side, up to ``cloud_depth_mag``
  on the other (the 30-visit failure of issue 14: 0.1-0.6 mag over a third of the CCDs). The
  truth's zero points carry it (:meth:`TruthModel.cloud_edge`).
* ``turbulence``: a von Karman Gaussian random displacement field per visit (5-15 mas per
  axis, outer scale 3-10'), mostly curl-free (E mode) as Leget et al. (2021) measured on
  HSC-SSP, generated on an FFT grid; the truth evaluates it anywhere (bilinear on the grid).
"""
import math

import numpy as np
from astropy.time import Time

from .. import MosaicError
from ..units import MAS_RAD, RAD_MAS

__all__ = ["EFFECTS", "parse_effects", "effect_rng", "draw_effects", "air_refractivity",
           "dcr_coefficient_mas", "FILTER_BANDPASS_UM", "local_sidereal_time_deg",
           "horizon_coordinates", "wcs_error_tangent", "von_karman_field", "von_karman_spectrum",
           "von_karman_correlation", "bilinear", "SUBARU_LATITUDE_DEG",
           "SUBARU_LONGITUDE_DEG", "FIELD_EDGE_RAD"]


EFFECTS = ("edge-wcs", "dcr", "doubled", "centroid-errors", "turbulence", "clouds")


def parse_effects(text):
    """'all' or a comma-separated list of names of :data:`EFFECTS` -> tuple, in that order."""
    names = EFFECTS if text.strip() == "all" else \
        tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in names if k not in EFFECTS]
    if bad:
        raise MosaicError(f"unknown simulation effect {bad[0]!r} (known: {', '.join(EFFECTS)}, "
                          "all)")
    return tuple(e for e in EFFECTS if e in names)


def effect_rng(seed, effect):
    """The random stream of one effect: independent of the main stream and of the others."""
    return np.random.default_rng([int(seed), 0x5EFF, EFFECTS.index(effect)])


# ------------------------------------------------------------------------------------------
# The site and the sky: hour angle, altitude, azimuth, parallactic angle
# ------------------------------------------------------------------------------------------
SUBARU_LATITUDE_DEG = 19.8256      # Subaru Telescope, Mauna Kea
SUBARU_LONGITUDE_DEG = -155.4761   # east longitude
SIDEREAL_DEG_PER_DAY = 360.98564736629


def local_sidereal_time_deg(mjd_tai, longitude_deg=SUBARU_LONGITUDE_DEG):
    """Local mean sidereal time (degrees) at TAI MJD `mjd_tai` (GMST of IAU 1982, UT1 ~ UTC)."""
    mjd_utc = Time(mjd_tai, format="mjd", scale="tai").utc.mjd
    return (280.46061837 + SIDEREAL_DEG_PER_DAY * (mjd_utc - 51544.5) + longitude_deg) % 360.0


def horizon_coordinates(ha_deg, dec_deg, latitude_deg=SUBARU_LATITUDE_DEG):
    """(altitude, azimuth (north through east), parallactic angle) in degrees of a direction
    of hour angle `ha_deg` and declination `dec_deg`. The parallactic angle q is the position
    angle (north through east) of the zenith seen from the source: the zenith lies along
    (east, north) = (sin q, cos q)."""
    h, d, p = np.radians(ha_deg), np.radians(dec_deg), np.radians(latitude_deg)
    alt = np.arcsin(np.sin(p) * np.sin(d) + np.cos(p) * np.cos(d) * np.cos(h))
    az = np.arctan2(-np.cos(d) * np.sin(h), np.cos(p) * np.sin(d) - np.sin(p) * np.cos(d) * np.cos(h))
    q = np.arctan2(np.sin(h), np.tan(p) * np.cos(d) - np.sin(d) * np.cos(h))
    return np.degrees(alt), np.degrees(az) % 360.0, np.degrees(q)


# ------------------------------------------------------------------------------------------
# Differential chromatic refraction
# ------------------------------------------------------------------------------------------
# Centre and width (FWHM) in microns of the HSC filters (Kawanomoto et al. 2018, rounded); the
# narrow and intermediate bands are named after their centre in nm (NB0921: 921 nm).
FILTER_BANDPASS_UM = {"HSC-G": (0.4754, 0.1395), "HSC-R": (0.6175, 0.1503),
                      "HSC-R2": (0.6231, 0.1505), "HSC-I": (0.7711, 0.1574),
                      "HSC-I2": (0.7671, 0.1497), "HSC-Z": (0.8898, 0.0766),
                      "HSC-Y": (0.9762, 0.0783)}
PS1_G_UM, PS1_I_UM = 0.481, 0.752     # effective wavelengths of the colour's bands (Tonry 2012)


def filter_bandpass_um(filter_name):
    """(centre, FWHM) in microns of an HSC filter.

    NB and IB filters are read from their names (centre in nm; FWHM 0.012 and 0.035 micron);
    MosaicError for any other unknown filter.
    """
    if filter_name in FILTER_BANDPASS_UM:
        return FILTER_BANDPASS_UM[filter_name]
    if filter_name[:2] in ("NB", "IB") and filter_name[2:].isdigit():
        return int(filter_name[2:]) / 1000.0, (0.035 if filter_name[:2] == "IB" else 0.012)
    raise MosaicError(f"no bandpass known for filter {filter_name!r}")


def air_refractivity(wavelength_um, pressure_hpa, temperature_k):
    """n - 1 of dry air: Edlen's (1966) dispersion formula for 15 C and 1013.25 hPa, scaled
    with the density (P / T)."""
    s2 = 1.0 / np.asarray(wavelength_um, float) ** 2
    n_std = 1e-6 * (64.328 + 29498.1 / (146.0 - s2) + 255.4 / (41.0 - s2))
    return n_std * (pressure_hpa / 1013.25) * (288.15 / temperature_k)


def dcr_coefficient_mas(filter_name, pressure_hpa, temperature_k):
    """k in mas per magnitude of g-i at tan z = 1: the shift towards the zenith of a source one
    magnitude redder than the reference (negative: red sources are refracted less).

    The refraction is R = (n - 1) tan z, so the differential refraction is dn/dlambda times
    the shift of the effective wavelength of the filter with colour. A source whose g-i is
    larger by one magnitude has ln F rising by ln(10)/2.5 / (lambda_i - lambda_g) per micron
    across the filter; for a band of width W (variance W^2/12) its photon-weighted mean
    wavelength moves by W^2/12 times that slope. At Mauna Kea (616 hPa, 275 K) this gives
    k = -22 (g), -11 (r), -6 (i), -1.0 (z), -0.8 (y) mas/mag: 25 mas per magnitude of g-i in
    g at airmass 1.5, 7 in i.
    """
    lam, width = filter_bandpass_um(filter_name)
    h = 1e-4
    dn_dlam = (air_refractivity(lam + h, pressure_hpa, temperature_k)
               - air_refractivity(lam - h, pressure_hpa, temperature_k)) / (2 * h)  # per um
    dlam_dcolour = width ** 2 / 12.0 * (math.log(10) / 2.5) / (PS1_I_UM - PS1_G_UM)  # um/mag
    return float(dn_dlam * dlam_dcolour * RAD_MAS)


# ------------------------------------------------------------------------------------------
# The error of the single-frame WCS (edge-wcs)
# ------------------------------------------------------------------------------------------
FIELD_EDGE_RAD = np.radians(0.75)     # the field radius of HSC


def wcs_error_tangent(e, xi, eta):
    """The single-frame WCS error (radians) at true tangent-plane position (xi, eta) about the
    boresight: centre offset + rho^2 (radial r_hat rho + directional d_hat), rho the field
    radius in units of the field edge (0.75 deg); `e` the visit's ``wcs_error`` (mas)."""
    xi, eta = np.asarray(xi, float), np.asarray(eta, float)
    rho2 = (xi * xi + eta * eta) / FIELD_EDGE_RAD ** 2
    c, d, a = e["centre_mas"], e["directional_mas"], e["radial_mas"]
    return ((c[0] + rho2 * (a * xi / FIELD_EDGE_RAD + d[0])) * MAS_RAD,
            (c[1] + rho2 * (a * eta / FIELD_EDGE_RAD + d[1])) * MAS_RAD)


# ------------------------------------------------------------------------------------------
# Atmospheric turbulence: a von Karman Gaussian random field
# ------------------------------------------------------------------------------------------
def von_karman_correlation(r, outer_scale):
    """The von Karman correlation function of each displacement component, normalised to 1 at
    r = 0: (r/L)^(5/6) K_5/6(2 pi r / L) / lim (treegp's kernel, Leget et al. 2021); its
    spectrum is (f^2 + 1/L^2)^(-11/6) in cycles per unit length. Needs scipy."""
    from scipy.special import gamma, kv
    r = np.asarray(r, float)
    lim0 = gamma(5.0 / 6.0) / (2 * np.pi ** (5.0 / 6.0))
    with np.errstate(invalid="ignore"):
        c = (r / outer_scale) ** (5.0 / 6.0) * kv(5.0 / 6.0, 2 * np.pi * r / outer_scale) / lim0
    return np.where(r > 0, c, 1.0)


def von_karman_spectrum(outer_scale_arcmin, step_arcmin, n):
    """(P, ux, uy) on the n x n FFT grid of `step_arcmin`: the von Karman spectrum P(f) =
    (f^2 + 1/L^2)^(-11/6) (cycles per arcmin; 0 at f = 0) and the unit wave vector (the E
    mode's direction; the B mode's is (-uy, ux))."""
    f = np.fft.fftfreq(n, d=step_arcmin)                  # cycles per arcmin
    fx, fy = np.meshgrid(f, f)                            # fx along axis 1 (xi)
    f2 = fx * fx + fy * fy
    power = (f2 + outer_scale_arcmin ** -2.0) ** (-11.0 / 6.0)
    power[0, 0] = 0.0
    fr = np.sqrt(f2)
    fr[0, 0] = 1.0
    return power, fx / fr, fy / fr


def von_karman_field(seed, rms_mas, outer_scale_arcmin, b_fraction, step_arcmin, n,
                     fov_radius_arcmin=45.0):
    """One realisation of the turbulent displacement of a visit: (dxi, deta) grids in mas,
    n x n with a step of `step_arcmin`, centred on the boresight (grid[j, i] at xi = (i - n/2)
    step, eta = (j - n/2) step).

    Displacements are drawn in Fourier space with the von Karman spectrum P(f) = (f^2 +
    1/L^2)^(-11/6): the E mode (curl-free, along the wave vector) with (1 - b_fraction) of the
    power and the B mode (divergence-free) with b_fraction. The realisation is scaled so that
    its rms per axis over the field of view is `rms_mas`.
    """
    rng = np.random.default_rng(seed)
    power, ux, uy = von_karman_spectrum(outer_scale_arcmin, step_arcmin, n)
    e = np.fft.fft2(rng.normal(size=(n, n))) * np.sqrt((1.0 - b_fraction) * power)
    b = np.fft.fft2(rng.normal(size=(n, n))) * np.sqrt(b_fraction * power)
    dx = np.fft.ifft2(1j * (ux * e - uy * b)).real
    dy = np.fft.ifft2(1j * (uy * e + ux * b)).real
    g = (np.arange(n) - n // 2) * step_arcmin
    gx, gy = np.meshgrid(g, g)
    fov = gx * gx + gy * gy < fov_radius_arcmin ** 2
    scale = rms_mas / np.sqrt(0.5 * np.mean(dx[fov] ** 2 + dy[fov] ** 2))
    return (dx * scale).astype(np.float32), (dy * scale).astype(np.float32)


def bilinear(grid, step, u, v):
    """Bilinear interpolation of `grid` (grid[j, i] at u = (i - n/2) step, v = (j - n/2)
    step) at (u, v); constant beyond the grid's edge."""
    n = grid.shape[0]
    gu = np.clip(np.asarray(u, float) / step + n // 2, 0.0, n - 1.0)
    gv = np.clip(np.asarray(v, float) / step + n // 2, 0.0, n - 1.0)
    i = np.minimum(gu.astype(int), n - 2)
    j = np.minimum(gv.astype(int), n - 2)
    a, b = gu - i, gv - j
    return ((1 - a) * (1 - b) * grid[j, i] + a * (1 - b) * grid[j, i + 1]
            + (1 - a) * b * grid[j + 1, i] + a * b * grid[j + 1, i + 1])


# ------------------------------------------------------------------------------------------
# Drawing the effects' parameters into the truth
# ------------------------------------------------------------------------------------------
def draw_effects(cfg, params):
    """Add the parameters of the effects of `cfg` to the truth `params` (in place):
    ``params['effects'][name]`` and per-visit entries; no key at all without effects."""
    effects = parse_effects(",".join(cfg.effects)) if cfg.effects else ()
    if not effects:
        return params
    params["effects"] = {}
    visits = params["visits"]
    if "edge-wcs" in effects:
        _draw_edge_wcs(cfg, params, visits, effect_rng(cfg.seed, "edge-wcs"))
    if "dcr" in effects:
        _draw_dcr(cfg, params, visits, effect_rng(cfg.seed, "dcr"))
    if "doubled" in effects:
        _draw_doubled(cfg, params, visits, effect_rng(cfg.seed, "doubled"))
    if "centroid-errors" in effects:
        _draw_centroid_errors(cfg, params, visits, effect_rng(cfg.seed, "centroid-errors"))
    if "turbulence" in effects:
        _draw_turbulence(cfg, params, visits, effect_rng(cfg.seed, "turbulence"))
    if "clouds" in effects:
        _draw_clouds(cfg, params, visits, effect_rng(cfg.seed, "clouds"))
    return params


def _draw_edge_wcs(cfg, params, visits, rng):
    params["effects"]["edge-wcs"] = dict(edge_arcsec=cfg.wcs_edge_arcsec,
                                         centre_arcsec=cfg.wcs_centre_arcsec,
                                         field_edge_deg=float(np.degrees(FIELD_EDGE_RAD)))
    for v in visits:
        # the visit's solution: an offset at the centre, and at the edge the rms over the
        # circle sqrt(radial^2 + directional^2) = edge_arcsec within +-20%
        c_ang, d_ang = rng.uniform(0, 2 * np.pi, 2)
        centre = cfg.wcs_centre_arcsec * 1000.0 * rng.uniform(0.5, 1.5)
        edge = cfg.wcs_edge_arcsec * 1000.0 * rng.uniform(0.8, 1.2)
        gamma = rng.uniform(0, np.pi / 2)
        v["wcs_error"] = dict(
            centre_mas=[float(centre * np.cos(c_ang)), float(centre * np.sin(c_ang))],
            radial_mas=float(rng.choice([-1.0, 1.0]) * edge * np.cos(gamma)),
            directional_mas=[float(edge * np.sin(gamma) * np.cos(d_ang)),
                             float(edge * np.sin(gamma) * np.sin(d_ang))])


def _draw_dcr(cfg, params, visits, rng):
    """Time each night's visits at an hour angle (airmass <= dcr_max_airmass) and give each
    visit its observing geometry at mid-exposure."""
    k = dcr_coefficient_mas(cfg.filter, cfg.site_pressure_hpa, cfg.site_temperature_k)
    params["effects"]["dcr"] = dict(
        k_mas_per_mag=k, colour="g-i", colour_ref=cfg.dcr_colour_ref,
        latitude_deg=SUBARU_LATITUDE_DEG, longitude_deg=SUBARU_LONGITUDE_DEG,
        pressure_hpa=cfg.site_pressure_hpa, temperature_k=cfg.site_temperature_k,
        refraction_mas=float(air_refractivity(filter_bandpass_um(cfg.filter)[0],
                                              cfg.site_pressure_hpa, cfg.site_temperature_k)
                             * RAD_MAS))
    shift = 0.0
    for i, v in enumerate(visits):
        if i == 0 or v["mjd"] - visits[i - 1]["mjd_scheduled"] > 0.3:   # a new night
            for _ in range(1000):
                ha = rng.uniform(-1, 1) * cfg.dcr_max_hour_angle_h * 15.0
                alt, _, _ = horizon_coordinates(ha, v["dec"])
                if 1.0 / np.sin(np.radians(alt)) <= cfg.dcr_max_airmass:
                    break
            mid = v["mjd"] + 0.5 * v["exptime"] / 86400.0
            now = (local_sidereal_time_deg(mid) - v["ra"] + 180.0) % 360.0 - 180.0
            shift = ((ha - now + 180.0) % 360.0 - 180.0) / SIDEREAL_DEG_PER_DAY
        v["mjd_scheduled"] = v["mjd"]
        v["mjd"] = float(v["mjd"] + shift)
        mid = v["mjd"] + 0.5 * v["exptime"] / 86400.0
        lst = local_sidereal_time_deg(mid)
        ha = (lst - v["ra"] + 180.0) % 360.0 - 180.0
        alt, az, q = horizon_coordinates(ha, v["dec"])
        z = 90.0 - float(alt)
        v["observing"] = dict(lst_deg=float(lst), hour_angle_deg=float(ha),
                              altitude_deg=float(alt), azimuth_deg=float(az),
                              zenith_distance_deg=z, airmass=float(1.0 / np.cos(np.radians(z))),
                              parallactic_deg=float(q))


def _chosen_visit(requested, option, cfg, visits):
    """The visit an effect of one visit hits: `requested` (the `option` given), else the
    middle one; a visit not simulated is a one-line error."""
    ids = [v["visit"] for v in visits]
    visit = requested or ids[len(ids) // 2]
    if visit not in ids:
        raise MosaicError(f"{option} {visit} is not a simulated visit "
                          f"({ids[0]}..{ids[-1]}:{cfg.visit_step})")
    return visit


def _draw_doubled(cfg, params, visits, rng):
    visit = _chosen_visit(cfg.doubled_visit, "--doubled-visit", cfg, visits)
    params["effects"]["doubled"] = dict(
        visit=int(visit), fraction=cfg.doubled_fraction,
        shift_mas=[float(s) for s in cfg.doubled_shift_mas],
        direction_deg=float(rng.uniform(0, 360.0)),     # on the sky, north through east
        seed=int(rng.integers(2 ** 31)))


def _draw_centroid_errors(cfg, params, visits, rng):
    params["effects"]["centroid-errors"] = dict(
        floor_mas=cfg.centroid_floor_mas, scatter=cfg.centroid_err_scatter,
        seed=int(rng.integers(2 ** 31)))
    for v in visits:
        v["centroid_err_scale"] = float(rng.uniform(*cfg.centroid_err_scale))


def _draw_clouds(cfg, params, visits, rng):
    visit = _chosen_visit(cfg.cloud_visit, "--cloud-visit", cfg, visits)
    params["effects"]["clouds"] = dict(
        visit=int(visit), depth_mag=float(cfg.cloud_depth_mag),
        direction_deg=float(rng.uniform(0, 360.0)),          # of the deepest side, focal plane
        edge_deg=float(cfg.cloud_edge_deg), width_deg=float(cfg.cloud_width_deg))


def _draw_turbulence(cfg, params, visits, rng):
    params["effects"]["turbulence"] = dict(step_arcmin=cfg.turbulence_step_arcmin,
                                           grid=cfg.turbulence_grid)
    lo, hi = cfg.turbulence_outer_scale_arcmin
    for v in visits:
        v["turbulence"] = dict(seed=int(rng.integers(2 ** 31)),
                               rms_mas=float(rng.uniform(*cfg.turbulence_rms_mas)),
                               outer_scale_arcmin=float(np.exp(rng.uniform(np.log(lo),
                                                                           np.log(hi)))),
                               b_fraction=cfg.turbulence_b_fraction)
