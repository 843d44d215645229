"""The simulator's settings (:class:`SimConfig`) and constants."""
import dataclasses

__all__ = ["SimConfig", "REF_EPOCH_MJD", "REFCAT_NAME", "PIXEL_ARCSEC", "SATURATION_ADU",
           "CLEAN", "BLEND", "DISPLACED", "COSMIC_RAY", "MOVING", "SATURATED"]


REF_EPOCH_MJD = 57388.0     # J2016.0, Gaia DR3's epoch


# Outlier codes in truth/detections.fits
CLEAN, BLEND, DISPLACED, COSMIC_RAY, MOVING, SATURATED = range(6)


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
# One visit: detections on every CCD
# ------------------------------------------------------------------------------------------
PIXEL_ARCSEC = 0.168


SATURATION_ADU = 40000.0   # peak above the sky
