"""The joint fit of a tract: star selection, cross-identification, astrometry, photometry.

    sol = solve(exposures, camera, config, refcat)

`exposures` are :class:`ExposureData` (in-memory catalogues and single-frame WCS headers: no
files needed), `refcat` a table in the LSST reference-catalogue convention. The normal
equations are assembled and solved in C++ (mosaicfit._core.fit_mosaic) with the star
parameters eliminated; this module prepares the problem, iterates (the CCD rotations are the
only non-linear parameters) and clips outliers, worst first per star.
"""
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from . import MosaicError, _core
from .config import MosaicConfig
from .matching import cross_match, match_reference, radec_to_xyz, select_stars
from .model import ARCSEC_RAD, BASES, Solution, poly_eval, poly_grad
from .sip import SipModel

log = logging.getLogger("mosaicfit.solve")

DAYS_PER_YEAR = 365.25
RELATIVE_PRIOR_ARCSEC = 0.5
MIN_STARS_PER_TERM = 5         # detections per polynomial term a typical visit needs    # single-frame WCS accuracy, ties a relative solution's frame
RAD_MAS = 180.0 / np.pi * 3.6e6
FILTER_BAND = {"HSC-G": "g", "HSC-R": "r", "HSC-R2": "r", "HSC-I": "i", "HSC-I2": "i",
               "HSC-Z": "z", "HSC-Y": "y", "NB0387": "g", "NB0515": "g", "NB0656": "r",
               "NB0816": "i", "NB0921": "z", "NB1010": "y"}


@dataclass
class ExposureData:
    """One CCD of one visit as the fit needs it."""
    visit: int
    ccd: int
    catalog: dict            # mosaicfit.catalog.standardize() arrays
    wcs_header: object       # single-frame TAN(-SIP) header (astropy Header or dict-like)
    fluxmag0: float = None   # single-frame calibration (counts of a 0-mag star)
    mjd: float = None        # epoch of the exposure
    filter: str = None
    sip: object = None       # the single-frame WCS as a mosaicfit.sip.SipModel (made if None)


@dataclass
class IterationSummary:
    """One iteration of a fit. chi2 is that of the detections and ndof their number of
    observations less the number of parameters (stars included): reference priors carry
    little information at hscPipe's catRMS floor of 40 mas, and counting them as degrees of
    freedom would bias chi2/ndof low."""
    kind: str
    iteration: int
    chi2: float
    ndof: int
    rms: float              # mas (astrometry) or mmag (photometry), active detections
    n_active: int
    n_clipped: int
    t_assemble: float
    t_solve: float

    def line(self):
        unit = "mas" if self.kind == "astrometry" else "mmag"
        return (f"{self.kind} iteration {self.iteration}: chi2/ndof = {self.chi2:.1f}/{self.ndof} "
                f"= {self.chi2 / max(self.ndof, 1):.3f}, rms {self.rms:.2f} {unit}, "
                f"{self.n_active} detections, {self.n_clipped} clipped "
                f"(assemble {self.t_assemble:.2f} s, solve {self.t_solve:.2f} s)")


@dataclass
class Detections:
    """The selected detections of all exposures, as flat arrays."""
    exp: np.ndarray
    visit: np.ndarray
    ccd: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sig_pix: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    ra: np.ndarray          # from the single-frame WCS, degrees
    dec: np.ndarray
    pixscale: np.ndarray    # arcsec per pixel of the single-frame WCS
    extra: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.x)

    def take(self, m):
        return Detections(**{k: (v[m] if isinstance(v, np.ndarray) else v)
                             for k, v in self.__dict__.items() if k != "extra"},
                          extra={k: v[m] for k, v in self.extra.items()})


def _select(exposures, camera, cfg):
    parts, excluded = [], []
    for k, e in enumerate(exposures):
        d = camera[e.ccd]
        cat = e.catalog
        idx = select_stars(cat, d.width, d.height, cfg.cellSize, cfg.nStarPerCell,
                           cfg.nBrightest, cfg.includeSaturated, cfg.minSnr)
        if len(idx) == 0:
            excluded.append((e.visit, e.ccd))
            continue
        x, y = cat["x"][idx], cat["y"][idx]
        xe, ye = cat["x_err"][idx], cat["y_err"][idx]
        snr = cat["flux"][idx] / cat["flux_err"][idx]
        with np.errstate(invalid="ignore"):
            sig = np.sqrt(0.5 * (xe ** 2 + ye ** 2))
        bad = ~np.isfinite(sig) | (sig <= 0)
        sig[bad] = np.maximum(0.01, 1.5 / snr[bad])       # ~FWHM / SNR when not measured
        if e.sip is None:
            e.sip = SipModel.from_header(e.wcs_header)
        ra, dec = e.sip.pixel_to_sky(x, y)
        h = e.wcs_header
        scale = np.sqrt(abs(h["CD1_1"] * h["CD2_2"] - h["CD1_2"] * h["CD2_1"])) * 3600.0
        n = len(idx)
        parts.append(dict(exp=np.full(n, k), visit=np.full(n, e.visit), ccd=np.full(n, e.ccd),
                          x=x, y=y, sig_pix=sig, flux=cat["flux"][idx], flux_err=cat["flux_err"][idx],
                          ra=ra, dec=dec, pixscale=np.full(n, scale)))
    if not parts:
        raise MosaicError(f"no usable stars in any of the {len(exposures)} CCDs")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Detections(**cat), excluded


def _mean_position(ra, dec, label, n):
    xyz = radec_to_xyz(ra, dec)
    s = np.zeros((n, 3))
    np.add.at(s, label, xyz)
    s /= np.linalg.norm(s, axis=1)[:, None]
    return np.degrees(np.arctan2(s[:, 1], s[:, 0])) % 360.0, np.degrees(np.arcsin(np.clip(s[:, 2], -1, 1)))


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

    def magnitudes(self, filter_name, refcat_name="", band=None, color_terms=True, library=None):
        """Reference magnitudes (and errors) in an HSC filter: the catalogue band of the filter,
        through the HSC colour term of the catalogue when there is one (mosaicfit.colorterms).
        Returns (mag, mag_err, one-line description)."""
        from .colorterms import reference_magnitudes
        if self.table is None:
            return self.mag, self.mag_err, "reference magnitudes as given"
        return reference_magnitudes(self.table, refcat_name, filter_name, band_for_filter=band or None,
                                    apply=color_terms, library=library)

    @classmethod
    def from_table(cls, t, band):
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
                mag = np.where(f > 0, -2.5 * np.log10(f) + 31.4, np.nan)
                if f"{band}_fluxErr" in t.colnames:
                    mag_err = 2.5 / np.log(10) * np.asarray(t[f"{band}_fluxErr"], float) / f
        return cls(ra, dec, pm_ra, pm_dec, epoch, pos_err, pm_err, mag, mag_err, t)

    def at(self, mjd):
        """(ra, dec) in degrees propagated to `mjd` (scalar or per object), and the position
        error there (mas). Objects without an epoch are taken as they are."""
        dt = np.where(np.isfinite(self.epoch), (np.asarray(mjd) - self.epoch) / DAYS_PER_YEAR, 0.0)
        dec = self.dec + self.pm_dec * dt / 3.6e6
        ra = self.ra + self.pm_ra * dt / 3.6e6 / np.cos(np.radians(self.dec))
        err = np.sqrt(self.pos_err ** 2 + (self.pm_err * dt) ** 2)
        return ra, dec, err


def _clip_worst(chi, star, active, threshold):
    """Deactivate, for each star, its worst active detection if it is beyond `threshold`."""
    cand = np.nonzero(active & (chi > threshold))[0]
    if len(cand) == 0:
        return 0
    order = cand[np.lexsort((-chi[cand], star[cand]))]
    first = np.r_[True, star[order][1:] != star[order][:-1]]
    active[order[first]] = False
    return int(first.sum())


def _clip_threshold(it, clip_sigma):
    """Clipping threshold (in sigma) at iteration `it` (0-based; none at 0). A few gross
    mismatches (wrong cross-identifications, ~1") bias the first solution by several mas near
    them, which would make good bright detections look like 5-sigma outliers: the threshold
    starts wide and comes down to `clip_sigma` as the solution cleans up."""
    schedule = [np.inf, 50.0, 20.0, 10.0]
    return max(clip_sigma, schedule[it]) if it < len(schedule) else clip_sigma


def _chi2_quantile(dof, z):
    """Upper quantile of chi2 with `dof` degrees of freedom at normal deviate z
    (Wilson-Hilferty; good to a few per cent for dof >= 1)."""
    k = np.maximum(np.asarray(dof, float), 1e-9)
    return k * (1.0 - 2.0 / (9.0 * k) + z * np.sqrt(2.0 / (9.0 * k))) ** 3


def _inconsistent_stars(chi, star, active, nstar, has_prior, dims, z=3.72):
    """Stars whose active detections are inconsistent with a constant source (variables,
    galaxies whose PSF flux follows the seeing, moving stars): their summed chi2 is beyond the
    1e-4 upper quantile (z = 3.72) of chi2 with (detections - 1) x dims degrees of freedom
    (x dims when a reference value ties the star)."""
    csum = np.bincount(star[active], weights=chi[active], minlength=nstar)
    n = np.bincount(star[active], minlength=nstar)
    dof = (n - (~has_prior).astype(int)) * dims
    bad = (dof >= 2) & (csum > _chi2_quantile(dof, z))
    return np.nonzero(bad)[0]


def _affordable_order(order, per_visit, lowest, what):
    """The highest polynomial order <= `order` for which the typical (median) visit has
    MIN_STARS_PER_TERM detections per term; said in the log when it is lower."""
    typical = float(np.median(per_visit)) if len(per_visit) else 0.0
    best = order
    while best > lowest and typical < MIN_STARS_PER_TERM * (best + 1) * (best + 2) // 2:
        best -= 1
    if best < order:
        log.warning("%s polynomial order reduced from %d to %d: a typical visit has only %d "
                    "stars", what, order, best, typical)
    return best


def _chance_clips(n_active, thr, dims):
    """How many clips of one iteration pure Gaussian noise explains: the expected number of
    the n_active detections beyond `thr` sigma (chi2 with `dims` degrees of freedom), plus
    two Poisson sigmas and one. Worst-first clipping at 5 sigma of 5e5 detections finds ~2
    such by chance in every iteration, and would otherwise never stop."""
    from math import erfc, exp, sqrt
    if not np.isfinite(thr):
        return 0
    p = exp(-thr * thr / 2.0) if dims == 2 else erfc(thr / sqrt(2.0))
    expected = n_active * p
    return int(expected + 2.0 * sqrt(expected) + 1.0)


def _update_active(chi, star, active, usable, it, clip_sigma):
    """Clip the worst detection per star beyond this iteration's threshold and reinstate
    clipped detections that now fit well (0.8 of the threshold). Returns (clipped,
    reinstated, threshold)."""
    thr = _clip_threshold(it, clip_sigma)
    if not np.isfinite(thr):
        return 0, 0, thr
    back = usable & ~active & (chi < (0.8 * thr) ** 2)
    active |= back
    return _clip_worst(chi, star, active, thr ** 2), int(back.sum()), thr


def _associated_references(exposures, det, star, nstar):
    """Reference row of each star from associations made outside the fit: the catalogues'
    ``ref_index`` arrays (reference row per source, -1 if none; set from hscPipe's match files
    by mosaicfit.matchfile), or None when no exposure carries one. A star takes the reference
    most of its detections name; a reference goes to the star with most detections naming it.
    """
    if not any("ref_index" in e.catalog for e in exposures):
        return None
    ref_det = np.full(len(det), -1, np.int64)
    for k in np.unique(det.exp):
        cat = exposures[k].catalog
        ri = cat.get("ref_index")
        if ri is None:
            continue
        rows = np.nonzero(np.asarray(ri) >= 0)[0]
        m = np.nonzero(det.exp == k)[0]
        if not len(rows) or not len(m):
            continue
        # the selected detections are rows of the catalogue: found by their pixel position,
        # which the selection copied exactly
        cx, cy = np.asarray(cat["x"], float)[rows], np.asarray(cat["y"], float)[rows]
        order = np.argsort(cx, kind="stable")
        pos = np.clip(np.searchsorted(cx[order], det.x[m]), 0, len(rows) - 1)
        r = order[pos]
        hit = (cx[r] == det.x[m]) & (cy[r] == det.y[m])
        ref_det[m[hit]] = np.asarray(ri)[rows[r[hit]]]
    out = np.full(nstar, -1, np.int64)
    sel = ref_det >= 0
    if not sel.any():
        return out
    pairs, votes = np.unique(np.stack([star[sel], ref_det[sel]], axis=1), axis=0,
                             return_counts=True)
    # per star the most named reference, then per reference the star naming it most
    o = np.lexsort((-votes, pairs[:, 0]))
    first = np.r_[True, pairs[o, 0][1:] != pairs[o, 0][:-1]]
    pairs, votes = pairs[o][first], votes[o][first]
    o = np.lexsort((-votes, pairs[:, 1]))
    first = np.r_[True, pairs[o, 1][1:] != pairs[o, 1][:-1]]
    best = pairs[o][first]
    out[best[:, 0]] = best[:, 1]
    return out


def solve(exposures, camera, config=None, refcat=None, tangent_point=None, refcat_name=""):
    """Fit the tract made of `exposures` (list of :class:`ExposureData`).

    refcat: an astropy Table in the LSST reference-catalogue convention (coord_ra/dec
    radians, <band>_flux nJy, optional errors, proper motions and epoch), or None for a
    relative solution (config.relativeSolution). tangent_point: (ra, dec) of the tract plane,
    degrees (default: the centre of the detections). refcat_name: the catalogue's name, which
    selects its colour terms (e.g. ps1_pv3_3pi_20170110). Visits of several filters share one
    astrometric solution and get one photometric solution per filter. Returns a
    :class:`Solution`.
    """
    cfg = (config or MosaicConfig()).validate()
    if not refcat_name and refcat is not None:
        refcat_name = str(getattr(refcat, "meta", {}).get("name", ""))
    t_start = time.time()
    stats = {"timing": {}, "iterations": []}
    det, excluded = _select(exposures, camera, cfg)
    if excluded:
        from .dataid import format_visit_ccds
        log.warning("%d CCDs without usable stars excluded: %s", len(excluded),
                    format_visit_ccds(excluded))
    stats["excluded"] = excluded
    exp_mjd = np.array([np.nan if e.mjd is None else e.mjd for e in exposures], float)
    visits = np.unique(det.visit)
    vmjd = {}
    for v in visits:
        m = [e.mjd for e in exposures if e.visit == v and e.mjd is not None]
        vmjd[int(v)] = float(np.mean(m)) if m else np.nan
    t0 = np.nanmean(list(vmjd.values())) if np.any(np.isfinite(list(vmjd.values()))) else np.nan
    det_mjd = exp_mjd[det.exp]

    # -- cross-identification ------------------------------------------------------------------
    tm = time.time()
    star, nstar, namb = cross_match(det.ra, det.dec, det.visit, cfg.radXMatch, min_visits=1)
    keep = star >= 0
    det = det.take(keep)
    star = star[keep]
    det_mjd = det_mjd[keep]
    sra, sdec = _mean_position(det.ra, det.dec, star, nstar)
    nvis = np.bincount(star, minlength=nstar)

    band = cfg.refBand or FILTER_BAND.get(next((e.filter for e in exposures if e.filter), ""), "")
    ref = None
    ref_of_star = np.full(nstar, -1, np.int64)
    if refcat is not None and len(refcat):
        ref = Reference.from_table(refcat, band)
        given = _associated_references(exposures, det, star, nstar)
        if given is not None:
            # hscPipe's match files (mosaicfit.matchfile): the associations they record
            ref_of_star = given
        else:
            rra, rdec, _ = ref.at(t0 if np.isfinite(t0) else np.nan)
            ref_of_star = match_reference(sra, sdec, rra, rdec, cfg.radXMatch)
    use = ((nvis >= cfg.numSourceMerge) & cfg.internalFitting) | (ref_of_star >= 0)
    new = np.full(nstar, -1, np.int64)
    new[use] = np.arange(use.sum())
    star = new[star]
    keep = star >= 0
    det, star, det_mjd = det.take(keep), star[keep], det_mjd[keep]
    ref_of_star = ref_of_star[use]
    nstar = int(use.sum())
    n_ref = int((ref_of_star >= 0).sum())
    stats.update(n_detections=len(det), n_stars=nstar, n_ref_stars=n_ref, n_ambiguous=namb,
                 n_visits=len(visits), n_ccds=len(np.unique(det.ccd)), band=band)
    stats["timing"]["match"] = time.time() - tm
    log.info("%d detections of %d stars (%d matched to the reference catalogue, %d ambiguous "
             "groups dropped) in %d visits", len(det), nstar, n_ref, namb, len(visits))
    if nstar == 0:
        raise MosaicError("no star is seen in two visits or matched to the reference catalogue")
    if n_ref == 0 and not cfg.relativeSolution:
        raise MosaicError("no star matched the reference catalogue within radXMatch="
                          f"{cfg.radXMatch}\"; use --config relativeSolution=True for a "
                          "relative solution")

    if tangent_point is None:
        tp = _mean_position(det.ra, det.dec, np.zeros(len(det), int), 1)
        tangent_point = (float(tp[0][0]), float(tp[1][0]))
    ps = camera.pixel_size_mm
    u0 = np.empty(len(det))
    v0 = np.empty(len(det))
    for c in np.unique(det.ccd):
        m = det.ccd == c
        fx, fy = camera.pixel_to_focal_plane(int(c), det.x[m], det.y[m])
        u0[m], v0[m] = fx / ps, fy / ps
    scale = 1.02 * max(np.max(np.abs(u0)), np.max(np.abs(v0)))
    X0, Y0 = camera.focal_plane_to_field_angle(u0 * ps, v0 * ps)
    fa_scale = 1.02 * max(np.max(np.abs(X0)), np.max(np.abs(Y0)))
    sol = Solution(camera, tangent_point, scale, cfg.fittingOrder, cfg.fluxFitOrder,
                   "chebyshev" if cfg.chebyshev else "legendre", fa_scale=fa_scale,
                   sip_order=cfg.fittingOrder)
    sol.stats = stats
    for v in visits:
        e = next(e for e in exposures if e.visit == v)
        sol.visit_info[int(v)] = dict(mjd=vmjd[int(v)], filter=e.filter)

    vlist = [int(v) for v in visits]
    vidx = np.searchsorted(visits, det.visit).astype(np.int32)
    ccds = np.unique(det.ccd)
    cidx = np.searchsorted(ccds, det.ccd).astype(np.int32)

    ctx = dict(det=det, star=star, nstar=nstar, vidx=vidx, cidx=cidx, ccds=ccds, visits=visits,
               star_ra=sra[use], star_dec=sdec[use],
               u0=u0, v0=v0, ref=ref, ref_of_star=ref_of_star, t0=t0, det_mjd=det_mjd)
    if cfg.doSolveWcs:
        ta = time.time()
        _fit_astrometry(sol, ctx, cfg, exposures)
        stats["timing"]["astrometry"] = time.time() - ta
    else:
        for e in exposures:
            sol.frozen[(e.visit, e.ccd)] = e.wcs_header
    if cfg.doSolveFlux:
        tp_ = time.time()
        filters = {int(v): (sol.visit_info[int(v)]["filter"] or "") for v in visits}
        for filt in sorted(set(filters.values())):
            sub = _filter_context(ctx, [v for v in visits if filters[int(v)] == filt])
            if sub["nstar"] == 0:
                log.warning("filter %s: no star for the photometric fit", filt)
                continue
            if len(filters) > 1:
                log.info("photometry of filter %s: %d visits", filt, len(sub["visits"]))
            _fit_photometry(sol, sub, cfg, exposures, filt, refcat_name)
            if "phot_resid" in sub:
                if "ref_mag_used" in sub:
                    full_ref = ctx.setdefault("mag_ref_det", np.full(len(ctx["det"]), np.nan))
                    full_ref[sub["rows"]] = sub["ref_mag_used"][sub["star"]]
                for k in ("phot_active", "phot_resid", "phot_w", "m_cor"):
                    full = ctx.setdefault(k, np.full(len(ctx["det"]), np.nan if k != "phot_active" else False,
                                                     dtype=float if k != "phot_active" else bool))
                    full[sub["rows"]] = sub[k]
                xs = ctx.setdefault("phot_xstar", np.full(ctx["nstar"], np.nan))
                xs[sub["star_ids"]] = sub["phot_xstar"]
        stats["timing"]["photometry"] = time.time() - tp_
    stats["timing"]["solve_total"] = time.time() - t_start
    _record(sol, ctx, exposures)
    return sol


def _record(sol, ctx, exposures):
    """sol.detections and sol.stars: what the fit used and found, for diagnostics and for
    users (astropy Tables; positions in the tract plane in arcsec, residuals in mas/mmag)."""
    from astropy.table import Table
    det, star, nstar = ctx["det"], ctx["star"], ctx["nstar"]
    n = len(det)
    ros = ctx["ref_of_star"]
    t = Table()
    t["visit"] = det.visit.astype(np.int64)
    t["ccd"] = det.ccd.astype(np.int32)
    t["x"], t["y"] = det.x, det.y
    u, v = np.empty(n), np.empty(n)
    for c in np.unique(det.ccd):
        m = det.ccd == c
        u[m], v[m] = sol.focal_plane(int(c), det.x[m], det.y[m])
    t["u"], t["v"] = u, v
    t["star"] = star.astype(np.int64)
    t["ref"] = ros[star] >= 0
    nan = np.full(n, np.nan)
    if "astro_resid" in ctx:
        res, xs = ctx["astro_resid"], ctx["astro_xstar"]
        t["xi_star"], t["eta_star"] = xs[star, 0], xs[star, 1]
        # the model's position of the detection (the fit's residuals are taken about a star
        # position of 0 where the star has none left: all its detections clipped)
        x0 = np.nan_to_num(xs[star], nan=0.0)
        t["xi_fit"], t["eta_fit"] = x0[:, 0] + res[:, 0] + ctx["astro_y"][:, 0], \
            x0[:, 1] + res[:, 1] + ctx["astro_y"][:, 1]
        t["dxi"], t["deta"] = res[:, 0] * 1000.0, res[:, 1] * 1000.0        # mas
        t["pos_err"] = 1000.0 / np.sqrt(ctx["astro_w"])                     # mas
        t["astro_used"] = ctx["astro_active"]
    else:
        for c in ("xi_star", "eta_star", "xi_fit", "eta_fit", "dxi", "deta", "pos_err"):
            t[c] = nan
        t["astro_used"] = np.zeros(n, bool)
    t["mag_inst"] = -2.5 * np.log10(det.flux)
    if "phot_resid" in ctx:
        xs = ctx["phot_xstar"]
        t["mag_cor"] = ctx["m_cor"]                       # m_inst - 2.5 log10 J
        t["jacobian"] = 10 ** (-0.4 * (ctx["m_cor"] - t["mag_inst"]))
        t["mag_fit"] = np.nan_to_num(xs[star], nan=0.0) + ctx["phot_resid"]   # calibrated magnitude
        t["mag_star"] = xs[star]
        t["dmag"] = ctx["phot_resid"] * 1000.0             # mmag
        t["mag_err"] = 1.0 / np.sqrt(ctx["phot_w"])
        t["phot_used"] = ctx["phot_active"]
    else:
        for c in ("mag_cor", "jacobian", "mag_fit", "mag_star", "dmag", "mag_err"):
            t[c] = nan
        t["phot_used"] = np.zeros(n, bool)
    ref = ctx["ref"]
    rmag = np.full(nstar, np.nan)
    rra = np.full(nstar, np.nan)
    rdec = np.full(nstar, np.nan)
    if ref is not None:
        has = ros >= 0
        rmag[has] = ref.mag[ros[has]]
        r0 = ref.at(ctx["t0"])
        rra[has], rdec[has] = r0[0][ros[has]], r0[1][ros[has]]
    # the reference magnitude the photometric fit used (through the colour term of the
    # detection's filter), else the catalogue's band magnitude
    t["mag_ref"] = ctx["mag_ref_det"] if "mag_ref_det" in ctx else rmag[star]
    sol.detections = t
    st = Table()
    st["id"] = np.arange(nstar, dtype=np.int64)
    ra, dec = _mean_position(det.ra, det.dec, star, nstar)     # single-frame, the fallback
    if "astro_xstar" in ctx:
        fa, fd = sol.tract_to_sky(ctx["astro_xstar"][:, 0], ctx["astro_xstar"][:, 1])
        fitted = np.isfinite(fa) & np.isfinite(fd)       # not for stars all of whose
        ra, dec = np.where(fitted, fa, ra), np.where(fitted, fd, dec)   # detections were clipped
    st["ra"], st["dec"] = ra, dec                            # degrees, at the mean epoch
    st["mag"] = ctx["phot_xstar"] if "phot_xstar" in ctx else np.full(nstar, np.nan)
    st["n_det"] = np.bincount(star, minlength=nstar)
    st["ref_index"] = ros
    st["ref_ra"], st["ref_dec"], st["ref_mag"] = rra, rdec, rmag
    sol.stars = st


# ------------------------------------------------------------------------------------------
# Astrometry
# ------------------------------------------------------------------------------------------
def _placement(sol, ctx, geom):
    """Focal-plane (u, v) of every detection for CCD parameters geom[(ncc, 3)], and the
    offsets (ru, rv) from each CCD's centre (for the rotation derivative)."""
    cam = sol.camera
    ps = cam.pixel_size_mm
    ccds = ctx["ccds"]
    ox = np.array([cam[int(c)].offset_mm[0] / ps for c in ccds])[ctx["cidx"]]
    oy = np.array([cam[int(c)].offset_mm[1] / ps for c in ccds])[ctx["cidx"]]
    g = geom[ctx["cidx"]]
    c, s = np.cos(g[:, 2]), np.sin(g[:, 2])
    ru0, rv0 = ctx["u0"] - ox, ctx["v0"] - oy
    ru, rv = c * ru0 - s * rv0, s * ru0 + c * rv0
    return ox + g[:, 0] + ru, oy + g[:, 1] + rv, ru, rv


def _fit_astrometry(sol, ctx, cfg, exposures):
    det, star, nstar = ctx["det"], ctx["star"], ctx["nstar"]
    vidx, cidx, ccds, visits = ctx["vidx"], ctx["cidx"], ctx["ccds"], ctx["visits"]
    n, nv, nc = len(det), len(visits), len(ccds)
    # the polynomial order: reduced when the typical visit has too few stars for it (narrow
    # bands, sparse fields); visits far below the typical one are frozen further down
    order = _affordable_order(cfg.fittingOrder, np.bincount(vidx, minlength=nv), 1, "astrometric")
    sol.order = order
    T = (order + 1) * (order + 2) // 2
    fs = sol.fa_scale
    ps = sol.camera.pixel_size_mm

    # weights: centroid errors in arcsec (single-frame pixel scale) plus the floor
    sig = det.sig_pix * det.pixscale
    w = 1.0 / (sig ** 2 + cfg.astromErrorFloor ** 2)
    # reference stars: prior at the mean epoch, proper motion to each visit's epoch
    y = np.zeros((n, 2))
    prior = np.zeros((nstar, 2))
    prior_w = np.zeros(nstar)
    ref, ros, t0 = ctx["ref"], ctx["ref_of_star"], ctx["t0"]
    has = ros >= 0
    if ref is not None and has.any():
        r = ros[has]
        sub = Reference(*(getattr(ref, f)[r] for f in ("ra", "dec", "pm_ra", "pm_dec", "epoch",
                                                        "pos_err", "pm_err", "mag", "mag_err")))
        ra0, dec0, err0 = sub.at(t0)
        prior[has] = np.stack(sol.sky_to_tract(ra0, dec0), axis=-1)
        # jointcal's convention: the catalogue's own errors (Gaia: 0.02-1 mas, which is what
        # ties the tract's global distortion, invisible to the internal data, to the sky)
        # plus a floor; hscPipe's catRMS (40 mas) where the catalogue gives no errors
        sig2 = np.where(np.isfinite(err0), (err0 / 1000.0) ** 2 + cfg.refPosErrorFloor ** 2,
                        (cfg.catRMS * 3600.0) ** 2)
        prior_w[has] = 1.0 / sig2
        # displacement between t0 and each detection's epoch, in the tract plane
        dm = np.nonzero(has[star] & np.isfinite(ctx["det_mjd"]))[0]
        if len(dm):
            rowmap = np.full(nstar, -1)
            rowmap[np.nonzero(has)[0]] = np.arange(has.sum())
            rr = rowmap[star[dm]]
            sub2 = Reference(*(getattr(sub, f)[rr] for f in ("ra", "dec", "pm_ra", "pm_dec", "epoch",
                                                             "pos_err", "pm_err", "mag", "mag_err")))
            ra1, dec1, _ = sub2.at(ctx["det_mjd"][dm])
            xi1 = np.stack(sol.sky_to_tract(ra1, dec1), axis=-1)
            y[dm] = xi1 - prior[star[dm]]
    coef_prior = coef_prior_w = None
    if not has.any():
        # Relative solution. The internal data leave free any smooth distortion of the tract
        # plane common to all visits (not only an affine one: composed with order-9 visit
        # polynomials it stays representable to far below the noise). Every star is tied,
        # weakly, to its mean single-frame position (0.5": the single-frame WCS accuracy), as a
        # reference star would be: the frame becomes the average of the single-frame WCSs and
        # the internal precision is untouched.
        prior = np.stack(sol.sky_to_tract(ctx["star_ra"], ctx["star_dec"]), axis=-1)
        prior_w = np.full(nstar, 1.0 / RELATIVE_PRIOR_ARCSEC ** 2)

    geom = np.zeros((nc, 3))
    ref_prior = has.copy() if (ref is not None and has.any()) else np.zeros(nstar, bool)
    n_ref_rejected = 0
    half_diag = np.array([0.5 * np.hypot(sol.camera[int(c)].width, sol.camera[int(c)].height)
                          for c in ccds])
    active = np.ones(n, bool)
    # frozen visits / CCDs: too few stars for their parameters
    per_visit = np.bincount(vidx, minlength=nv)
    frozen_v = per_visit < 2 * T
    for k in np.nonzero(frozen_v)[0]:
        log.warning("visit %d has only %d stars for %d astrometric terms: frozen at its "
                    "single-frame WCS", visits[k], per_visit[k], T)
    active &= ~frozen_v[vidx]
    usable = active.copy()
    coef = np.zeros((nv, 2, T))
    last_chi2 = np.inf
    for it in range(cfg.maxIter):
        u, v, ru, rv = _placement(sol, ctx, geom)
        a, b = sol.field_coords(u, v)            # the polynomial's coordinates
        K = 3
        G = np.zeros((n, 2, K))
        ccd_fixed = np.ones(nc, np.uint8)
        if it > 0 and cfg.solveCcd:
            # d(field angle)/d(focal plane), per 15-micron unit, for the CCD derivatives
            ja, jb, jc, jd = (j * ps / fs for j in sol.camera.field_angle_jacobian(u * ps, v * ps))
            for k in range(nv):
                m = vidx == k
                if not m.any():
                    continue
                _, dpa, dpb = poly_grad(coef[k], a[m], b[m], order, "legendre")
                dpu = dpa * ja[m] + dpb * jc[m]      # dP/du, dP/dv: (2, n_m)
                dpv = dpa * jb[m] + dpb * jd[m]
                G[m, :, 0] = dpu.T
                G[m, :, 1] = dpv.T
                if cfg.allowRotation:
                    G[m, :, 2] = (dpu * -rv[m] + dpv * ru[m]).T
            n_on = np.bincount(cidx[active], minlength=nc)
            ccd_fixed = (n_on < cfg.minStarsPerCcd).astype(np.uint8)
        r = _core.fit_mosaic(star.astype(np.int32), vidx, cidx, active.astype(np.uint8),
                             a, b, y, w, G, prior, prior_w, coef_prior, coef_prior_w,
                             ccd_fixed, nv, nc, nstar, 2, K, order, BASES["legendre"], True)
        if r["status"] != "ok":
            raise MosaicError("the astrometric normal equations are singular: too few stars "
                              "overlap between visits (check --id and the reference catalogue)")
        coef = r["coef"]
        res = r["resid"]
        chi = w * np.sum(res ** 2, axis=1)
        ndof = int(r["nobs_det"] - r["nparam"])
        rms = float(np.sqrt(np.mean(np.sum(res[active] ** 2, axis=1) / 2))) * 1000.0
        # no clipping before the CCD placement is fitted (iteration 0): offsets of ~0.2 px
        # would look like outliers for the brightest stars
        nclip, nback, thr = _update_active(chi, star, active, usable, it, cfg.clipSigma)
        # a reference association the detections contradict (a neighbour within radXMatch,
        # a blend, a catalogue error) is dropped, not fought detection by detection: held at
        # the catalogue's mas-level errors, one such star 0.5" off bends the solution around
        # it by several mas
        if np.isfinite(thr) and ref_prior.any():
            pchi = prior_w * np.sum((r["xstar"] - prior) ** 2, axis=1)
            wrong = ref_prior & np.isfinite(pchi) & (pchi > thr ** 2)
            if wrong.any():
                prior_w[wrong] = 0.0
                ref_prior &= ~wrong
                y[wrong[star]] = 0.0          # no proper motion of a catalogue star not theirs
                n_ref_rejected += int(wrong.sum())
                nclip += int(wrong.sum())
                log.info("astrometry: %d reference associations contradicted by the detections "
                         "(beyond %.0f sigma) dropped", int(wrong.sum()), thr)
        summ = IterationSummary("astrometry", it + 1, float(r["chi2_det"]), ndof, rms,
                                int(active.sum()), nclip, float(r["t_assemble"]), float(r["t_solve"]))
        sol.stats["iterations"].append(summ)
        log.info(summ.line())
        step = r["dccd"]
        geom[:, :2] += step[:, :2]
        geom[:, 2] += step[:, 2]
        # the largest move of a CCD corner the step made, in pixels: the polynomials were
        # solved jointly with it, so what a further iteration would still change is O(move^2)
        move = float(np.max(np.abs(step[:, :2]).max(axis=1) + np.abs(step[:, 2]) * half_diag,
                            initial=0.0))
        log.debug("astrometry iteration %d: CCD placement step %.2g px", it + 1, move)
        small = move < 1e-3
        # steps along nearly degenerate directions (CCD offsets against the polynomials) may
        # not vanish but no longer change chi2
        stalled = it > 1 and abs(summ.chi2 - last_chi2) < 1e-6 * max(summ.chi2, 1.0)
        last_chi2 = summ.chi2
        if it > 0 and nclip <= _chance_clips(int(active.sum()), thr, 2) and nback == 0 \
                and thr <= cfg.clipSigma and (small or stalled):
            break
    if ndof <= 0:
        raise MosaicError(f"too few stars to determine the astrometric solution: "
                          f"{int(r['nobs_det'])} measurements for {int(r['nparam'])} parameters")
    # final state
    for k, vv in enumerate(visits):
        if frozen_v[k]:
            for e in exposures:
                if e.visit == vv:
                    sol.frozen[(e.visit, e.ccd)] = e.wcs_header
        else:
            sol.astro[int(vv)] = coef[k]
    for k, c in enumerate(ccds):
        sol.ccd_geom[int(c)] = tuple(float(a) for a in geom[k])
    xstar = r["xstar"]
    n_clip_total = int((usable & ~active).sum())
    sol.stats["astro_ref_rejected"] = n_ref_rejected
    if n_ref_rejected:
        ctx["ref_of_star"] = np.where(has & ~ref_prior, -1, ros)   # not these stars' records
        sol.stats["n_ref_stars"] = int((ctx["ref_of_star"] >= 0).sum())
    sol.stats.update(astro_order=order, astro_chi2=float(r["chi2_det"]), astro_ndof=ndof, astro_rms_mas=rms,
                     astro_clipped=n_clip_total, astro_n_active=int(active.sum()))
    ctx.update(astro_active=active, astro_resid=res, astro_w=w, astro_xstar=xstar, astro_y=y)


# ------------------------------------------------------------------------------------------
# Photometry
# ------------------------------------------------------------------------------------------
def _filter_context(ctx, visits):
    """The part of the fit context made of the detections of `visits` (one filter), with the
    stars and visits renumbered; rows / star_ids map back to the full context."""
    visits = np.asarray(sorted(visits))
    rows = np.nonzero(np.isin(ctx["det"].visit, visits))[0]
    star_ids, star = np.unique(ctx["star"][rows], return_inverse=True)
    det = ctx["det"].take(rows)
    ccds = np.unique(det.ccd)
    return dict(ctx, det=det, star=star.astype(np.int64), nstar=len(star_ids),
                vidx=np.searchsorted(visits, det.visit).astype(np.int32),
                cidx=np.searchsorted(ccds, det.ccd).astype(np.int32), ccds=ccds, visits=visits,
                ref_of_star=ctx["ref_of_star"][star_ids], rows=rows, star_ids=star_ids)


def _fit_photometry(sol, ctx, cfg, exposures, filt="", refcat_name=""):
    det, star, nstar = ctx["det"], ctx["star"], ctx["nstar"]
    vidx, cidx, ccds, visits = ctx["vidx"], ctx["cidx"], ctx["ccds"], ctx["visits"]
    n, nv, nc = len(det), len(visits), len(ccds)
    frozen_visits = {v for (v, c) in sol.frozen}
    # pixel-area correction J of the written WCS (TAN-SIP), exactly as the calibration step
    # (calibrateExposure/calibrateCatalog) will apply it
    J = np.ones(n)
    for e_idx in np.unique(det.exp):
        m = det.exp == e_idx
        e = exposures[e_idx]
        J[m] = sol.sip_model(e.visit, e.ccd).area_ratio(det.x[m], det.y[m])
    m_inst = -2.5 * np.log10(det.flux)
    m_cor = m_inst - 2.5 * np.log10(J)
    sig = 2.5 / np.log(10) * det.flux_err / det.flux
    w = 1.0 / (sig ** 2 + cfg.photomErrorFloor ** 2)
    prior = np.zeros((nstar, 1))
    prior_w = np.zeros(nstar)
    ref, ros = ctx["ref"], ctx["ref_of_star"]
    absolute = bool(cfg.fluxFitAbsolute and ref is not None)
    if absolute:
        has = ros >= 0
        rmag, rerr, how = ref.magnitudes(filt, refcat_name, band=cfg.refBand,
                                         color_terms=cfg.doColorTerms,
                                         library=cfg.colorTermLibrary or None)
        log.info("reference magnitudes for %s: %s", filt or "the filter", how)
        sol.stats.setdefault("colour_terms", {})[filt] = how
        rm = rmag[ros[has]]
        re = np.nan_to_num(rerr[ros[has]], nan=0.02)
        ok = np.isfinite(rm)
        idx = np.nonzero(has)[0][ok]
        prior[idx, 0] = rm[ok]
        prior_w[idx] = 1.0 / (re[ok] ** 2 + cfg.refMagErrorFloor ** 2)
        ctx["ref_mag_used"] = np.full(nstar, np.nan)          # for the record (mag_ref)
        ctx["ref_mag_used"][idx] = rm[ok]
        if not ok.any():
            log.warning("no reference magnitudes in band %r: relative photometry", sol.stats.get("band"))
            absolute = False
    sol.stats["absolute"] = absolute

    # the flux polynomial order: reduced when stars are too few for it (narrow bands), judged
    # on the typical visit; a visit with far fewer stars than that (or without an astrometric
    # solution) keeps only its zero point
    active = np.ones(n, bool)
    per_visit = np.bincount(vidx, minlength=nv)
    order = _affordable_order(cfg.fluxFitOrder, per_visit, 0, "flux")
    sol.phot_order = order
    T = (order + 1) * (order + 2) // 2
    basis = sol.phot_basis
    zp_only = [k for k in range(nv) if per_visit[k] < 3 * T or int(visits[k]) in frozen_visits]
    for k in zp_only:
        if T > 1:
            log.warning("visit %d: %d stars, too few for an order-%d flux polynomial: zero point "
                        "only", visits[k], per_visit[k], order)
    if cfg.commonFluxCorr:
        # one polynomial for all visits (visit index 0) and per-visit zero points, carried by
        # the per-"CCD" parameter slot, indexed by visit
        poly_idx = np.zeros(n, np.int32)
        par_idx = vidx.astype(np.int32)
        npoly, npar = 1, nv
    else:
        poly_idx = vidx.astype(np.int32)
        par_idx = cidx.astype(np.int32)
        npoly, npar = nv, nc
    solve_par = cfg.commonFluxCorr or cfg.fluxFitSolveCcd
    u, v = np.empty(n), np.empty(n)
    for c in np.unique(det.ccd):
        m = det.ccd == c
        u[m], v[m] = sol.focal_plane(int(c), det.x[m], det.y[m])
    s = sol.scale
    coef_prior = np.zeros((npoly, 1, T))
    coef_prior_w = np.zeros((npoly, 1, T))
    if not cfg.commonFluxCorr:
        for k in zp_only:
            coef_prior_w[k, 0, 1:] = 1e12          # the spatial terms held at 0
    if not absolute:
        # relative: the first visit's zero point at its single-frame FLUXMAG0
        f0 = [e.fluxmag0 for e in exposures if e.visit == visits[0] and e.fluxmag0]
        zp0 = 2.5 * np.log10(np.median(f0)) if f0 else 0.0
        coef_prior[0, 0, 0] = zp0
        coef_prior_w[0, 0, 0] = 1e12
    G = np.ones((n, 1, 1))
    usable = active.copy()
    variables_done = False
    n_variable = 0
    for it in range(cfg.maxIter):
        r = _core.fit_mosaic(star.astype(np.int32), poly_idx, par_idx, active.astype(np.uint8),
                             u / s, v / s, -m_cor[:, None], w, G, prior, prior_w, coef_prior,
                             coef_prior_w, None if solve_par else np.ones(npar, np.uint8),
                             npoly, npar, nstar, 1, 1, order, BASES[basis], True)
        if r["status"] != "ok":
            raise MosaicError("the photometric normal equations are singular: too few stars "
                              "overlap between visits or have a reference magnitude")
        res = r["resid"][:, 0]
        chi = w * res ** 2
        ndof = int(r["nobs_det"] - r["nparam"])
        rms = float(np.sqrt(np.mean(res[active] ** 2))) * 1000.0
        nclip, nback, thr = _update_active(chi, star, active, usable, it + 1, cfg.clipSigma)
        summ = IterationSummary("photometry", it + 1, float(r["chi2_det"]), ndof, rms,
                                int(active.sum()), nclip, float(r["t_assemble"]), float(r["t_solve"]))
        sol.stats["iterations"].append(summ)
        log.info(summ.line())
        if nclip <= _chance_clips(int(active.sum()), thr, 1) and nback == 0 and thr <= cfg.clipSigma:
            bad = _inconsistent_stars(chi, star, active, nstar, prior_w > 0, 1) \
                if cfg.rejectVariables and not variables_done else []
            variables_done = True
            if len(bad) == 0:
                break
            drop = np.isin(star, bad)
            active &= ~drop
            usable &= ~drop
            n_variable = len(bad)
            log.info("photometry: %d stars inconsistent with a constant flux (variables, "
                     "galaxies) removed", len(bad))
    if ndof <= 0:
        raise MosaicError(f"too few stars to determine the photometric solution of {filt}: "
                          f"{int(r['nobs_det'])} measurements for {int(r['nparam'])} parameters")
    n_clip_total = int((usable & ~active).sum())
    coef = r["coef"]
    par = r["dccd"][:, 0]
    for k, vv in enumerate(visits):
        if cfg.commonFluxCorr:
            c = coef[0].copy()
            c[0, 0] += par[k]            # the visit's zero point joins the constant term
            sol.phot[int(vv)] = c
        else:
            sol.phot[int(vv)] = coef[k]
    if not cfg.commonFluxCorr:
        for k, c in enumerate(ccds):
            sol.ccd_mag_by_filter.setdefault(filt, {})[int(c)] = float(par[k])
    # FLUXMAG0ERR: clipped scatter of calibrated minus reference magnitudes per CCD (minus
    # the fitted star magnitudes in a relative solution); resid = calibrated - star magnitude
    xs = r["xstar"][:, 0]
    cal = res + xs[star]
    for e_idx in np.unique(det.exp):
        m = (det.exp == e_idx) & active
        e = exposures[e_idx]
        if absolute:
            mm = m & (prior_w[star] > 0)
            d = cal[mm] - prior[star[mm], 0]
        else:
            d = res[m]
        err = float(np.sqrt(np.mean(d ** 2))) if len(d) >= 3 else np.nan
        sol.fluxmag0err[(e.visit, e.ccd)] = err
    # fall back to the visit's scatter where a CCD has too few stars; convert to flux
    for (vv, c), err in list(sol.fluxmag0err.items()):
        if not np.isfinite(err):
            vals = [x for (v2, _), x in sol.fluxmag0err.items() if v2 == vv and np.isfinite(x)]
            err = float(np.median(vals)) if vals else 0.0
        if sol.has_photometry(vv):
            sol.fluxmag0err[(vv, c)] = sol.fluxmag0(vv, c) * 0.4 * np.log(10) * err
    sol.stats.setdefault("phot_by_filter", {})[filt] = dict(
        chi2=float(r["chi2_det"]), ndof=ndof, rms_mmag=rms, order=order, absolute=absolute,
        visits=[int(v) for v in visits])
    sol.stats.update(phot_chi2=float(r["chi2_det"]), phot_ndof=ndof, phot_rms_mmag=rms,
                     phot_clipped=n_clip_total, phot_variables=n_variable, phot_order=order, phot_n_active=int(active.sum()))
    ctx.update(phot_active=active, phot_resid=res, phot_w=w, phot_xstar=xs, m_cor=m_cor)
