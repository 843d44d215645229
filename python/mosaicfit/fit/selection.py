"""The fit's inputs and the detections it uses: one CCD of one visit as the fit needs it
(:class:`ExposureData`), the star selection of each CCD (meas_mosaic's SourceReader) and the
selected detections of all CCDs as flat arrays (:class:`Detections`).
"""
from dataclasses import dataclass, field

import numpy as np

from .. import MosaicError
from ..model.sip import SipModel, pixels_to_sky

__all__ = ["ExposureData", "Detections", "select_stars", "select_stars_many",
           "select_detections"]


@dataclass
class ExposureData:
    """One CCD of one visit as the fit needs it."""
    visit: int
    ccd: int
    catalog: dict            # mosaicfit.io.src.standardize() arrays
    wcs_header: object       # single-frame TAN(-SIP) header (astropy Header or dict-like)
    fluxmag0: float = None   # single-frame calibration (counts of a 0-mag star)
    mjd: float = None        # epoch of the exposure
    filter: str = None
    sip: object = None       # the single-frame WCS as a mosaicfit.model.sip.SipModel (made if None)
    # observing conditions from the CORR header (AIRMASS, ZD, ALTITUDE, PARANG, HA: numbers,
    # HA possibly sexagesimal hours), for the chromatic term's prediction
    observing: dict = None


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
    # the detection's row in the run's selection (select_detections), kept through take():
    # what names it in every association of the run
    row: np.ndarray = None
    extra: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.x)

    def take(self, m):
        """The detections selected by `m` (a boolean mask or index array), extra columns included."""
        return Detections(**{k: (v[m] if isinstance(v, np.ndarray) else v)
                             for k, v in self.__dict__.items() if k != "extra"},
                          extra={k: v[m] for k, v in self.extra.items()})


def select_detections(exposures, camera, cfg):
    """The selected detections of `exposures` and the (visit, ccd) of those without any."""
    cats = [e.catalog for e in exposures]
    sizes = np.array([(camera[e.ccd].width, camera[e.ccd].height) for e in exposures], float)
    chosen = select_stars_many(cats, sizes[:, 0], sizes[:, 1], cfg.cellSize, cfg.nStarPerCell,
                               cfg.nBrightest, cfg.includeSaturated, cfg.minSnr)
    counts = np.array([len(i) for i in chosen], np.int64)
    excluded = [(e.visit, e.ccd) for e, c in zip(exposures, counts) if c == 0]
    on = np.nonzero(counts)[0]
    if len(on) == 0:
        raise MosaicError(f"no usable stars in any of the {len(exposures)} CCDs")
    cat = {key: np.concatenate([cats[k][key][chosen[k]] for k in on])
           for key in ("x", "y", "x_err", "y_err", "flux", "flux_err")}
    models = []
    for k in on:
        e = exposures[k]
        if e.sip is None:
            e.sip = SipModel.from_header(e.wcs_header)
        models.append(e.sip)
    # the pixel scale of each CCD's header CD (the readers' headers stay unparsed)
    cd = np.array([m.cd for m in models], float).reshape(len(on), 2, 2)
    scale = np.sqrt(np.abs(cd[:, 0, 0] * cd[:, 1, 1] - cd[:, 0, 1] * cd[:, 1, 0])) * 3600.0
    n = counts[on]
    exp_of = np.repeat(on, n)
    snr = cat["flux"] / cat["flux_err"]
    with np.errstate(invalid="ignore"):
        sig = np.sqrt(0.5 * (cat.pop("x_err") ** 2 + cat.pop("y_err") ** 2))
    bad = ~np.isfinite(sig) | (sig <= 0)
    sig[bad] = np.maximum(0.01, 1.5 / snr[bad])       # ~FWHM / SNR when not measured
    cat.update(exp=exp_of, visit=np.array([e.visit for e in exposures])[exp_of],
               ccd=np.array([e.ccd for e in exposures])[exp_of], sig_pix=sig,
               pixscale=np.repeat(scale, n))
    # the single-frame WCS's sky positions, every CCD at once
    cat["ra"], cat["dec"] = pixels_to_sky(models, np.repeat(np.arange(len(on)), n), cat["x"],
                                          cat["y"])
    order = ("exp", "visit", "ccd", "x", "y", "sig_pix", "flux", "flux_err", "pixscale", "ra",
             "dec")
    return Detections(**{k: cat[k] for k in order}, row=np.arange(len(cat["x"]))), excluded


# ------------------------------------------------------------------------------------------
# Star selection and cross-identification for the mosaic fit
# ------------------------------------------------------------------------------------------
def select_stars(cat, width, height, cell_size=512, n_per_cell=5, n_brightest=0,
                 include_saturated=False, min_snr=5.0):
    """Indices of the detections of one CCD used by the fit, as meas_mosaic's SourceReader:
    point sources (PSF stars, or extendedness < 0.5), not saturated, finite and unflagged,
    at most `n_per_cell` brightest per `cell_size` pixel cell (and `n_brightest` overall).

    `cat` is a standardized catalogue (mosaicfit.io.src.standardize).
    """
    return select_stars_many([cat], [width], [height], cell_size, n_per_cell, n_brightest,
                             include_saturated, min_snr)[0]


def select_stars_many(cats, widths, heights, cell_size=512, n_per_cell=5, n_brightest=0,
                      include_saturated=False, min_snr=5.0):
    """:func:`select_stars` of each catalogue of `cats` (CCD k `widths[k]` x `heights[k]`
    pixels), all at once: one pass of numpy over every CCD's detections (one per CCD was
    ~0.3 ms each, 20000 of them in a 200-visit run). Returns a list of index arrays."""
    sizes = np.array([len(c["x"]) for c in cats], np.int64)
    if sizes.sum() == 0:
        return [np.zeros(0, np.int64) for _ in cats]
    col = {k: np.concatenate([np.asarray(c[k]) for c in cats])
           for k in ("x", "y", "flux", "flux_err", "centroid_flag", "flux_flag", "saturated",
                     "saturated_center", "extendedness", "psf_used")}
    of = np.repeat(np.arange(len(cats)), sizes)
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    w = np.asarray(widths, float)[of]
    h = np.asarray(heights, float)[of]
    x, y, flux, ferr = col["x"], col["y"], col["flux"], col["flux_err"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & np.isfinite(ferr)
              & (flux > 0) & (ferr > 0) & (flux / ferr >= min_snr)
              & (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5))
        ok &= ~col["centroid_flag"] & ~col["flux_flag"]
        if not include_saturated:
            ok &= ~col["saturated"] & ~col["saturated_center"]
        ok &= col["psf_used"] | (np.nan_to_num(col["extendedness"], nan=1.0) < 0.5)
    idx = np.nonzero(ok)[0]
    # the cells of each CCD, numbered apart from every other CCD's
    ncx = np.ceil(np.asarray(widths, float) / cell_size).astype(np.int64)
    ncy = np.ceil(np.asarray(heights, float) / cell_size).astype(np.int64)
    first = np.r_[0, np.cumsum(ncx * ncy)[:-1]]
    k = of[idx]
    cell = first[k] + (np.clip(np.floor(x[idx] + 0.5), 0, w[idx] - 1) // cell_size).astype(
        np.int64) + ncx[k] * (np.clip(np.floor(y[idx] + 0.5), 0, h[idx] - 1)
                              // cell_size).astype(np.int64)
    order = np.lexsort((-flux[idx], cell))          # stable: ties keep the catalogue's order
    c = cell[order]
    run = np.r_[0, np.nonzero(np.diff(c))[0] + 1]
    rank = np.arange(len(c)) - np.repeat(run, np.diff(np.r_[run, len(c)]))
    keep = np.sort(idx[order[rank < n_per_cell]])
    parts = np.split(keep, np.searchsorted(keep, start[1:]))
    out = [p - s0 for p, s0 in zip(parts, start)]
    if n_brightest > 0:
        # (ties in the catalogue's order)
        out = [np.sort(p[np.argsort(-flux[p + s0], kind="stable")[:n_brightest]])
               if len(p) > n_brightest else p for p, s0 in zip(out, start)]
    return out
