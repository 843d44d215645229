"""The fit's typed state: the associated detections both fits read (:class:`FitData`) and what
each fit leaves for the record (:class:`AstrometryResult`, :class:`PhotometryResult`)."""
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["FitData", "AstrometryStart", "AstrometryResult", "PhotometryResult", "CcdTerms"]


@dataclass
class AstrometryStart:
    """Where a converged astrometric fit ended, by visit and CCD number (not by index): a fit
    of the same run after a new association starts there (fit.solve) instead of from the
    nominal placement, uniform weights and a wide clipping threshold."""
    placement: dict         # {ccd: (dx px, dy px, rotation rad)}
    coefficients: dict      # {visit: (2, T) polynomial coefficients}
    error_scale: dict       # {visit: scale of the centroid errors} (fit.errors)
    error_floor: float      # arcsec
    ref_scale: float        # of the reference catalogue's errors
    ref_floor: float        # arcsec
    dcr_vectors: dict       # {visit: (dx, dy) arcsec per unit colour} (fit.chromatic)


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
    start: AstrometryStart = None  # where a following fit of the run starts


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
    prior_mat: np.ndarray = None  # (nvisit, T, T) the common-terms prior's matrices, if any

    @classmethod
    def empty(cls, n, nstar):
        """A result for `n` detections and `nstar` stars with nothing fitted: none active, all NaN."""
        nan = np.full(n, np.nan)
        return cls(np.zeros(n, bool), nan.copy(), nan.copy(), np.full(nstar, np.nan), nan.copy(),
                   nan.copy())


@dataclass
class CcdTerms:
    """CCD parameters a fit holds at given values instead of fitting them: the placement
    {ccd: (dx, dy, theta)} (focal-plane pixels, radians, from the nominal placement) and the
    photometric CCD terms {filter: {ccd: dC}} (magnitudes). A CCD absent from them is held at
    its nominal placement, or 0. The CCDs are the camera's, shared by every visit of a
    survey: the regions of a split run (pipeline.regions) hold them at their common
    consensus, so that no region's products differ from its neighbours' by its own CCD fit.

    `weights` (same keys) say how strongly each value is determined (the detections the fit
    used on the CCD): :meth:`consensus` averages the regions' values with them.

    `astro_common` and `flux_common` {filter: dict from_order, mu, sigma, tau, used}: the
    common terms of the visits' astrometric and flux polynomials (the camera's distortion and
    flat field, fit.shrinkage.common_function_prior), shared by every region in the same
    way."""
    placement: dict = field(default_factory=dict)
    flux: dict = field(default_factory=dict)
    placement_weights: dict = field(default_factory=dict)
    flux_weights: dict = field(default_factory=dict)
    flux_common: dict = field(default_factory=dict)
    astro_common: dict = field(default_factory=dict)

    @classmethod
    def of(cls, sol):
        """The CCD terms fitted by the solution `sol` (a model.solution.Solution), weighted by
        the detections each fit used on each CCD."""
        d = sol.detections
        ccd = np.asarray(d["ccd"]) if d is not None and len(d) else np.zeros(0, int)
        count = lambda used: {int(c): int(n) for c, n in zip(*np.unique(ccd[used],
                                                                         return_counts=True))}
        terms = cls()
        if sol.astrometry is not None:
            terms.placement = dict(sol.placement.offsets)
            st = sol.stats.astrometry if sol.stats is not None else None
            if st is not None and st.common:
                terms.astro_common = {f: dict(c) for f, c in st.common.items()}
            terms.placement_weights = count(np.asarray(d["astro_used"], bool)) if len(ccd)                 else {}
        for filt, model in sol.photometry.items():
            terms.flux[filt] = dict(model.ccd_terms)
            used = np.asarray(d["phot_used"], bool) if len(ccd) else np.zeros(0, bool)
            if len(ccd):
                mine = [v for v, i in sol.visit_info.items() if (i.get("filter") or "") == filt]
                used = used & np.isin(np.asarray(d["visit"]), mine)
            terms.flux_weights[filt] = count(used)
            st = sol.stats.photometry.get(filt) if sol.stats is not None else None
            if st is not None and st.common:
                terms.flux_common[filt] = dict(st.common)
        return terms

    @classmethod
    def consensus(cls, terms):
        """The weighted mean of several fits' CCD terms (a CCD absent from a fit, or with
        weight 0, does not count there)."""
        def mean(values, weights):
            acc = {}
            for val, wt in zip(values, weights):
                for c, x in val.items():
                    w = wt.get(c, 0)
                    if w > 0:
                        a = acc.setdefault(c, [0.0, 0.0])
                        a[0] = a[0] + w * np.asarray(x, float)
                        a[1] += w
            return ({c: (tuple(float(y) for y in a[0] / a[1]) if np.ndim(a[0]) else
                         float(a[0] / a[1])) for c, a in acc.items()},
                    {c: a[1] for c, a in acc.items()})
        out = cls()
        out.placement, out.placement_weights = mean([t.placement for t in terms],
                                                    [t.placement_weights for t in terms])
        for filt in sorted({f for t in terms for f in t.astro_common}):
            common = _common_consensus([t.astro_common[filt] for t in terms
                                        if filt in t.astro_common])
            if common is not None:
                out.astro_common[filt] = common
        for filt in sorted({f for t in terms for f in t.flux}):
            out.flux[filt], out.flux_weights[filt] = mean(
                [t.flux.get(filt, {}) for t in terms], [t.flux_weights.get(filt, {}) for t in terms])
            common = _common_consensus([t.flux_common[filt] for t in terms
                                        if filt in t.flux_common])
            if common is not None:
                out.flux_common[filt] = common
        return out


def _common_consensus(commons):
    """The regions' common terms (of one filter's astrometric or flux polynomials) combined:
    mu weighted by the inverse of each region's prior covariance, the covariance and the
    spread averaged over the regions by their visits (each region's estimate of the same
    camera function); those of the most common shape only (a region whose order was lowered
    has fewer terms)."""
    if not commons:
        return None
    shapes = [np.shape(c["sigma"]) for c in commons]
    shape = max(set(shapes), key=shapes.count)
    commons = [c for c, sh in zip(commons, shapes) if sh == shape]
    P = [np.linalg.inv(np.asarray(c["sigma"], float)) for c in commons]
    mu = np.linalg.solve(sum(P), sum(p @ np.asarray(c["mu"], float).T
                                     for p, c in zip(P, commons))).T
    w = np.array([max(int(c["used"]), 1) for c in commons], float)
    sigma = sum(wi * np.asarray(c["sigma"], float) for wi, c in zip(w, commons)) / w.sum()
    return dict(from_order=int(commons[0]["from_order"]), mu=mu.tolist(), sigma=sigma.tolist(),
                tau=float(np.sum(w * [c["tau"] for c in commons]) / w.sum()),
                used=int(w.sum()))


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
