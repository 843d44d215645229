"""The fit's typed state: the associated detections both fits read (:class:`FitData`) and what
each fit leaves for the record (:class:`AstrometryResult`, :class:`PhotometryResult`)."""
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["FitData", "AstrometryResult", "PhotometryResult"]


@dataclass
class AstrometryResult:
    """Per detection and star, after the astrometric fit."""
    active: np.ndarray      # (n,) bool: used in the final solution
    resid: np.ndarray       # (n, 2) model - star - y, arcsec
    w: np.ndarray           # (n,) weights, arcsec^-2
    xstar: np.ndarray       # (nstar, 2) star positions in the tract plane, arcsec
    y: np.ndarray           # (n, 2) proper-motion offsets from the mean epoch, arcsec
    prior_w: np.ndarray = None   # (nstar,) weights of the stars' reference positions
    orders: np.ndarray = None    # (nvisit,) polynomial order of each visit (-1: frozen)
    # the last least-squares problem of the fit, CCD placement included (a
    # fit.core.LeastSquaresProblem): its marginal covariances give the products' errors
    # (fit.uncertainty.astrometric_ccd_errors)
    problem: object = None


@dataclass
class PhotometryResult:
    """Per detection and star, after the photometric fit(s) (one per filter)."""
    active: np.ndarray      # (n,) bool
    resid: np.ndarray       # (n,) calibrated - star magnitude
    w: np.ndarray           # (n,) weights, mag^-2
    xstar: np.ndarray       # (nstar,) star magnitudes (NaN: no photometry)
    m_cor: np.ndarray       # (n,) m_inst - 2.5 log10 J
    mag_ref: np.ndarray     # (n,) reference magnitude used (NaN: none)
    prior_w: np.ndarray = None   # (nstar,) weights of the stars' reference magnitudes
    orders: np.ndarray = None    # (nvisit,) flux polynomial order of each visit

    @classmethod
    def empty(cls, n, nstar):
        """A result for `n` detections and `nstar` stars with nothing fitted: none active, all NaN."""
        nan = np.full(n, np.nan)
        return cls(np.zeros(n, bool), nan.copy(), nan.copy(), np.full(nstar, np.nan), nan.copy(),
                   nan.copy())


@dataclass
class FitData:
    """The selected, associated detections of a run, as both fits read them.

    Indices: `star` per detection (0..nstar-1), `vidx`/`cidx` into `visits`/`ccds`. For a
    subset (:meth:`subset`), `rows` and `star_ids` map back to the full data.
    """
    det: object             # mosaicfit.fit.selection.Detections
    star: np.ndarray
    nstar: int
    vidx: np.ndarray        # int32
    cidx: np.ndarray        # int32
    ccds: np.ndarray
    visits: np.ndarray
    star_ra: np.ndarray     # mean single-frame position of each star, degrees
    star_dec: np.ndarray
    u0: np.ndarray          # nominal focal-plane position of each detection, 15 micron px
    v0: np.ndarray
    ref: object             # mosaicfit.model.reference.Reference or None
    ref_of_star: np.ndarray  # reference row per star, -1 if none
    t0: float               # mean epoch of the visits, MJD (NaN if unknown)
    det_mjd: np.ndarray     # epoch of each detection
    rows: np.ndarray = None
    star_ids: np.ndarray = None
    rejected_refs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # reference rows the astrometry found contradicted by their detections: kept out of the
    # later associations
    damaged: dict = field(default_factory=dict)
    # visit -> direction (deg) of the displaced images of a visit found damaged (fit.quality):
    # judged again with it in the later associations
    astrometry: AstrometryResult = None
    photometry: PhotometryResult = None

    def __len__(self):
        return len(self.det)

    def subset(self, visits):
        """The detections of `visits` (one filter's), stars and visits renumbered."""
        visits = np.asarray(sorted(visits))
        rows = np.nonzero(np.isin(self.det.visit, visits))[0]
        star_ids, star = np.unique(self.star[rows], return_inverse=True)
        det = self.det.take(rows)
        ccds = np.unique(det.ccd)
        return replace(self, det=det, star=star.astype(np.int64), nstar=len(star_ids),
                       vidx=np.searchsorted(visits, det.visit).astype(np.int32),
                       cidx=np.searchsorted(ccds, det.ccd).astype(np.int32), ccds=ccds,
                       visits=visits, star_ra=self.star_ra[star_ids],
                       star_dec=self.star_dec[star_ids], u0=self.u0[rows], v0=self.v0[rows],
                       ref_of_star=self.ref_of_star[star_ids], det_mjd=self.det_mjd[rows],
                       rows=rows, star_ids=star_ids, astrometry=None, photometry=None)
