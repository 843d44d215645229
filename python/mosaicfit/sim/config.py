"""The simulator's settings (:class:`SimConfig`) and constants."""
import dataclasses

__all__ = ["SimConfig", "REF_EPOCH_MJD", "REFCAT_NAME", "PIXEL_ARCSEC", "SATURATION_ADU",
           "CLEAN", "BLEND", "DISPLACED", "COSMIC_RAY", "MOVING", "SATURATED", "DOUBLED"]


REF_EPOCH_MJD = 57388.0     # J2016.0, Gaia DR3's epoch


# Outlier codes in truth/detections.fits (DOUBLED: only with the ``doubled`` effect)
CLEAN, BLEND, DISPLACED, COSMIC_RAY, MOVING, SATURATED, DOUBLED = range(7)


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
    # the survey layout: "deep", dithers of 0.1-0.6 deg about (ra, dec) (HSC-SSP Deep-like,
    # the default); "wide", an HSC-SSP-Wide-like strip of pointings along the great circle
    # heading east through (ra, dec), centred there, consecutive pointings wide_step_deg apart
    # and spread uniformly over wide_width_deg across the strip: with the 1.5 deg field each
    # position of the strip's middle is seen by ~1.5 / wide_step_deg visits (7 by default),
    # and the strip covers a tract (1.7 deg) every ~8 visits
    layout: str = "deep"
    wide_step_deg: float = 0.2
    wide_width_deg: float = 0.3
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

    # -- effects of the real sky (sim.effects; none by default: the default simulation) -------
    effects: tuple = ()          # any of "edge-wcs", "dcr", "doubled", "centroid-errors",
    #                              "turbulence", "clouds"
    # edge-wcs: the single-frame WCS error of a visit, at the centre and (rms) at the edge
    wcs_centre_arcsec: float = 0.05
    wcs_edge_arcsec: float = 1.5
    # dcr: visits at |hour angle| <= max, airmass <= max; the site's air; the colour (PS1 g-i)
    # of a source that refraction leaves where the smooth truth mapping puts it
    dcr_max_hour_angle_h: float = 3.5
    dcr_max_airmass: float = 1.8
    dcr_colour_ref: float = 1.0
    site_pressure_hpa: float = 616.0
    site_temperature_k: float = 275.0
    # doubled: the visit (0: the middle one), the fraction of its detections, the shift range
    doubled_visit: int = 0
    doubled_fraction: float = 0.45
    doubled_shift_mas: tuple = (50.0, 300.0)
    # centroid-errors: reported = true photon-noise error x visit scale x lognormal(scatter);
    # the true error also has a floor the reported one lacks
    centroid_err_scale: tuple = (0.7, 1.5)
    centroid_err_scatter: float = 0.2
    centroid_floor_mas: float = 3.0
    # turbulence: per visit rms per axis (uniform) and outer scale (log-uniform); B-mode share;
    # the FFT grid (512 x 0.25' = 128' about the boresight)
    turbulence_rms_mas: tuple = (5.0, 15.0)
    turbulence_outer_scale_arcmin: tuple = (3.0, 10.0)
    turbulence_b_fraction: float = 0.1
    turbulence_step_arcmin: float = 0.25
    turbulence_grid: int = 512
    # clouds: the visit (0: the middle one) whose transparency has a cloud edge; its depth at
    # the far side; where the ramp is half way (field angle along its direction) and its width
    cloud_visit: int = 0
    cloud_depth_mag: float = 0.6
    cloud_edge_deg: float = 0.45
    cloud_width_deg: float = 0.12


# ------------------------------------------------------------------------------------------
# One visit: detections on every CCD
# ------------------------------------------------------------------------------------------
PIXEL_ARCSEC = 0.168


SATURATION_ADU = 40000.0   # peak above the sky
