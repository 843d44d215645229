"""The reference catalogue as the fit uses it: positions propagated to an epoch with their
proper motions and errors, and magnitudes in an HSC filter through the colour terms."""
from dataclasses import dataclass

import numpy as np

from ..units import AB_NJY_ZEROPOINT, DAYS_PER_YEAR, DEG_MAS, RAD_MAS
from .colorterms import reference_magnitudes

__all__ = ["Reference"]


@dataclass
class Reference:
    """Reference catalogue arrays propagated to an epoch."""
    ra: np.ndarray
    dec: np.ndarray
    pm_ra: np.ndarray      # mas/yr (times cos dec)
    pm_dec: np.ndarray
    epoch: np.ndarray      # MJD
    pos_err: np.ndarray    # mas at its epoch
    pm_err: np.ndarray     # mas/yr
    mag: np.ndarray
    mag_err: np.ndarray
    table: object = None     # the catalogue itself, for magnitudes in other filters

    def take(self, rows):
        """The reference objects of `rows` (an index array), without the catalogue table."""
        return Reference(self.ra[rows], self.dec[rows], self.pm_ra[rows], self.pm_dec[rows],
                         self.epoch[rows], self.pos_err[rows], self.pm_err[rows], self.mag[rows],
                         self.mag_err[rows])

    def magnitudes(self, filter_name, refcat_name="", band=None, color_terms=True, library=None):
        """Reference magnitudes (and errors) in an HSC filter: the catalogue band of the filter,
        through the HSC colour term of the catalogue when there is one (mosaicfit.model.colorterms).
        Returns (mag, mag_err, one-line description)."""
        if self.table is None:
            return self.mag, self.mag_err, "reference magnitudes as given"
        return reference_magnitudes(self.table, refcat_name, filter_name, band_for_filter=band or None,
                                    apply=color_terms, library=library)

    @classmethod
    def from_table(cls, t, band):
        """Reference arrays from a reference catalogue in the LSST convention.

        Parameters
        ----------
        t : astropy.table.Table
            The catalogue: coord_ra, coord_dec (radians); optional pm_ra, pm_dec and the errors
            coord_raErr, coord_decErr, pm_raErr, pm_decErr (radians, per year for the motions),
            epoch (MJD) and ``<band>_flux``, ``<band>_fluxErr`` (nJy).
        band : str
            Catalogue band of the magnitudes (e.g. ``"i"``); empty or absent: no magnitudes.

        Returns
        -------
        Reference
            ra, dec in degrees; motions in mas/yr (0 where missing); pos_err in mas (NaN where the
            catalogue gives none, so that the fit assumes catRMS); AB magnitudes (NaN for
            flux <= 0).
        """
        n = len(t)
        col = lambda name, default: (np.asarray(t[name], float) if name in t.colnames
                                     else np.full(n, default))
        ra = np.degrees(np.asarray(t["coord_ra"], float))
        dec = np.degrees(np.asarray(t["coord_dec"], float))
        pm_ra = np.nan_to_num(col("pm_ra", 0.0)) * RAD_MAS
        pm_dec = np.nan_to_num(col("pm_dec", 0.0)) * RAD_MAS
        epoch = col("epoch", np.nan)
        # NaN where the catalogue gives no position error (the fit then assumes catRMS)
        pos_err = np.sqrt(0.5 * (col("coord_raErr", np.nan) ** 2
                                 + col("coord_decErr", np.nan) ** 2)) * RAD_MAS
        pm_err = np.sqrt(0.5 * (np.nan_to_num(col("pm_raErr", 0.0)) ** 2
                                + np.nan_to_num(col("pm_decErr", 0.0)) ** 2)) * RAD_MAS
        mag = np.full(n, np.nan)
        mag_err = np.full(n, np.nan)
        if band and f"{band}_flux" in t.colnames:
            f = np.asarray(t[f"{band}_flux"], float)
            with np.errstate(invalid="ignore", divide="ignore"):
                mag = np.where(f > 0, -2.5 * np.log10(f) + AB_NJY_ZEROPOINT, np.nan)
                if f"{band}_fluxErr" in t.colnames:
                    mag_err = 2.5 / np.log(10) * np.asarray(t[f"{band}_fluxErr"], float) / f
        return cls(ra, dec, pm_ra, pm_dec, epoch, pos_err, pm_err, mag, mag_err, t)

    def at(self, mjd):
        """(ra, dec) in degrees propagated to `mjd` (scalar or per object), and the position
        error there (mas). Objects without an epoch are taken as they are."""
        dt = np.where(np.isfinite(self.epoch), (np.asarray(mjd) - self.epoch) / DAYS_PER_YEAR, 0.0)
        dec = self.dec + self.pm_dec * dt / DEG_MAS
        ra = self.ra + self.pm_ra * dt / DEG_MAS / np.cos(np.radians(self.dec))
        err = np.sqrt(self.pos_err ** 2 + (self.pm_err * dt) ** 2)
        return ra, dec, err
