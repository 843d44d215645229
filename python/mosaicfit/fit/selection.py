"""The fit's inputs and the detections it uses: one CCD of one visit as the fit needs it
(:class:`ExposureData`), the star selection of each CCD (meas_mosaic's SourceReader) and the
selected detections of all CCDs as flat arrays (:class:`Detections`).
"""
from dataclasses import dataclass, field

import numpy as np

from .. import MosaicError
from ..model.sip import SipModel, pixels_to_sky

__all__ = ["ExposureData", "Detections", "select_stars", "select_detections"]


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
    # the sky corners (ra[4], dec[4]) of the CCD through `sip` (the readers compute them in
    # their processes: the run's tracts and reference areas are found from them)
    corners: tuple = None


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
    parts, excluded, models = [], [], []
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
        cd = e.sip.cd.tolist()           # the header's CD (the readers' headers stay unparsed)
        scale = np.sqrt(abs(cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0])) * 3600.0
        n = len(idx)
        parts.append(dict(exp=np.full(n, k), visit=np.full(n, e.visit), ccd=np.full(n, e.ccd),
                          x=x, y=y, sig_pix=sig, flux=cat["flux"][idx], flux_err=cat["flux_err"][idx],
                          pixscale=np.full(n, scale), wcs=np.full(n, len(models))))
        models.append(e.sip)
    if not parts:
        raise MosaicError(f"no usable stars in any of the {len(exposures)} CCDs")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # the single-frame WCS's sky positions, every CCD at once
    cat["ra"], cat["dec"] = pixels_to_sky(models, cat.pop("wcs"), cat["x"], cat["y"])
    return Detections(**cat, row=np.arange(len(cat["x"]))), excluded


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
    x, y = cat["x"], cat["y"]
    flux, ferr = cat["flux"], cat["flux_err"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & np.isfinite(ferr)
              & (flux > 0) & (ferr > 0) & (flux / ferr >= min_snr)
              & (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5))
        ok &= ~cat["centroid_flag"] & ~cat["flux_flag"]
        if not include_saturated:
            ok &= ~cat["saturated"] & ~cat["saturated_center"]
        ext = cat["extendedness"]
        ok &= cat["psf_used"] | (np.nan_to_num(ext, nan=1.0) < 0.5)
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        return idx
    ncx = int(np.ceil(width / cell_size))
    cell = (np.clip(np.floor(x[idx] + 0.5), 0, width - 1) // cell_size).astype(np.int64) + ncx * (
        np.clip(np.floor(y[idx] + 0.5), 0, height - 1) // cell_size).astype(np.int64)
    order = np.lexsort((-flux[idx], cell))
    c = cell[order]
    start = np.r_[0, np.nonzero(np.diff(c))[0] + 1]
    rank = np.arange(len(c)) - np.repeat(start, np.diff(np.r_[start, len(c)]))
    keep = idx[order[rank < n_per_cell]]
    if n_brightest > 0 and len(keep) > n_brightest:
        keep = keep[np.argsort(-flux[keep])[:n_brightest]]
    return np.sort(keep)
