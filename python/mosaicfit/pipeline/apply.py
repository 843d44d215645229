"""Applying the mosaic solution to one CCD (hscPipe's calibrateExposure / calibrateCatalog).

The calibration of a CCD is the flux correction factor

    f(x, y) = 10^(-0.4 P(x, y)) * J(x, y)

at 0-based pixel (x, y): P the photometric polynomial of the ``fcr-`` file (magnitudes, in the
frame turned by the CCD's quarter turns: :mod:`mosaicfit.model.fluxcorr`) and J the pixel area of the
``wcs-`` file's TAN-SIP WCS relative to the area at CRPIX (meas_mosaic's Jacobian, 1 at the
optical axis: :meth:`mosaicfit.model.sip.SipModel.area_ratio`). A calibrated flux is ``flux * f`` and a
calibrated magnitude ``-2.5 log10(flux * f / FLUXMAG0)`` with FLUXMAG0 from the fcr file.

- :func:`calibrate_exposure`: image *= f, variance *= f^2, mask unchanged, the mosaic WCS
  replaces the single-frame one, FLUXMAG0/FLUXMAG0ERR from the fcr, the rest of the headers
  kept (the CALEXP of hscPipe);
- :func:`calibrate_catalog`: every flux and flux error column times f at the source, a column
  ``mosaic.corr`` = f, ``coord_ra``/``coord_dec`` (radians) from the mosaic WCS and, with
  ``apply_calib``, magnitudes and their errors from FLUXMAG0 (the CALSRC of hscPipe).

f is evaluated per pixel by a C++ kernel (``mosaicfit._core``, cpp/apply.cpp): each image row
collapses the two polynomials into 1-D ones in x, evaluated by Horner's rule with a vectorised
exp2, on OpenMP threads with the GIL released. ``interpolate=True`` reproduces meas_mosaic's
``getFCorImg`` instead: P evaluated at the ends of 100-pixel segments along the rows of the
rotated frame and interpolated linearly in between (with its weights i / interval), J exact.
"""
import math
import re
import time

import numpy as np
from astropy.io import fits

from .. import MosaicError, _core
from ..io.corr import Exposure
from ..io.fits import header_has_wcs, make_wcs
from ..io.src import resolve_columns
from ..model.sip import SipModel

__all__ = ["CORR_COLUMN", "correction_factor", "correction_image", "reference_factor",
           "calibrate_exposure", "calibrate_catalog", "flux_columns", "FluxColumn",
           "INTERP_LENGTH", "check_correction"]

#: the column of a CALSRC holding f at each source (hscPipe 3.x/4.x name)
CORR_COLUMN = "mosaic.corr"
#: meas_mosaic's getFCorImg interpolation step (pixels)
INTERP_LENGTH = 100

# ------------------------------------------------------------------------------------------
# the correction factor
# ------------------------------------------------------------------------------------------

def _kernel_params(wcs_header, fcr, source="WCS header"):
    """The C++ kernel's parameters of one CCD (``_core.FluxPoly``, ``_core.SipArea``, checked
    here: the kernel trusts them), built once and passed to every kernel call."""
    if fcr is None:
        poly = dict(coeffs=np.zeros((1, 1)), x0=0.0, y0=0.0, u_max=1.0, v_max=1.0,
                    chebyshev=False, nq=0, width=1, height=1)
    else:
        poly = dict(coeffs=np.ascontiguousarray(fcr.coeffs, dtype=float), x0=float(fcr.x0),
                    y0=float(fcr.y0), u_max=float(fcr.u_max), v_max=float(fcr.v_max),
                    chebyshev=bool(fcr.chebyshev), nq=int(fcr.nq), width=int(fcr.width),
                    height=int(fcr.height))
    if wcs_header is None:
        sip = dict(a=np.zeros((1, 1)), b=np.zeros((1, 1)), crpix1=0.0, crpix2=0.0)
    else:
        if not header_has_wcs(wcs_header):
            raise MosaicError(f"{source}: no WCS (CTYPE/CRVAL/CRPIX/CD cards) in the header")
        model = SipModel.from_header(wcs_header, source)
        a, b = model.arrays()
        sip = dict(a=np.ascontiguousarray(a, dtype=float), b=np.ascontiguousarray(b, dtype=float),
                   crpix1=float(model.crpix[0]), crpix2=float(model.crpix[1]))
    _check_kernel_params(poly, sip)
    return _core.FluxPoly(**poly), _core.SipArea(**sip)


def _check_kernel_params(poly, sip):
    """What cpp/apply.hpp takes: square coefficient arrays of order 0..30, nq 0..3, U_MAX and
    V_MAX non-zero, a box of at least 1 x 1, finite values (ValueError otherwise)."""
    c, a, b = poly["coeffs"], sip["a"], sip["b"]
    if c.ndim != 2 or c.shape[0] != c.shape[1] or not 1 <= c.shape[0] <= 31:
        raise ValueError(f"fcr coeffs must be a square 2-D array of order 0..30, not {c.shape}")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape or not 1 <= a.shape[0] <= 31:
        raise ValueError("SIP a and b must be square 2-D arrays of the same size, order 0..30")
    if poly["nq"] not in (0, 1, 2, 3):
        raise ValueError("nq must be 0..3")
    if not (poly["u_max"] != 0.0 and poly["v_max"] != 0.0):
        raise ValueError("u_max and v_max must be non-zero")
    if poly["width"] < 1 or poly["height"] < 1:
        raise ValueError("CCD box must be at least 1 x 1")
    if not np.all(np.isfinite(c)):
        raise ValueError("non-finite flux polynomial coefficient")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("non-finite SIP coefficient")
    if not np.all(np.isfinite([poly["x0"], poly["y0"], poly["u_max"], poly["v_max"],
                               sip["crpix1"], sip["crpix2"]])):
        raise ValueError("non-finite X0/Y0/U_MAX/V_MAX/CRPIX")


def correction_factor(wcs_header, fcr, x, y, threads=0):
    """f at 0-based pixel positions (arrays of any shape; NaN where x or y is not finite).

    `wcs_header`: the mosaic TAN-SIP header (None: J = 1); `fcr`: a FluxCorrection from
    :func:`mosaicfit.model.fluxcorr.read_fcr` (None: P = 0)."""
    poly, sip = _kernel_params(wcs_header, fcr)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in shape: {x.shape} and {y.shape}")
    out = _core.flux_correction_points(poly, sip, np.ascontiguousarray(x).ravel(),
                                         np.ascontiguousarray(y).ravel(), int(threads))
    return out.reshape(x.shape)


def correction_image(wcs_header, fcr, width, height, interpolate=False, threads=0):
    """f over a `width` x `height` image (float64 array indexed [y, x])."""
    poly, sip = _kernel_params(wcs_header, fcr)
    if width < 0 or height < 0:
        raise ValueError(f"negative image size {width} x {height}")
    if interpolate:
        _check_full_box(fcr, width, height)
    return _core.flux_correction_image(poly, sip, int(width), int(height), bool(interpolate),
                                         INTERP_LENGTH, int(threads))


def reference_factor(wcs_header, fcr, x, y):
    """f in plain numpy (fcr.mag and the SIP's area ratio): slower, for checks and benchmarks."""
    jac = SipModel.from_header(wcs_header).area_ratio(x, y) if wcs_header is not None else None
    if fcr is None:
        return np.ones(np.shape(x)) if jac is None else jac
    return fcr.factor(x, y, jac)


#: the largest |P| (mag) and the range of J taken for a plausible flux correction (the real
#: meas_mosaic files have |P| < 0.1 mag and J 0.8-1 at the edge of the HSC field)
MAX_CORRECTION_MAG = 10.0
AREA_RATIO_RANGE = (0.5, 2.0)


def check_correction(wcs_header, fcr, width, height, wcs_source="WCS", fcr_source="fcr",
                     steps=(9, 17)):
    """Check f = 10^(-0.4 P) J on a grid over the `width` x `height` CCD (corners included)
    before applying it: P finite and within MAX_CORRECTION_MAG magnitudes, J within
    AREA_RATIO_RANGE. Raises MosaicError naming the file at fault and the pixel, so that a
    damaged fcr or wcs never makes zeros, inf or NaN pixels."""
    gx, gy = np.meshgrid(np.linspace(0, width - 1, steps[0]),
                         np.linspace(0, height - 1, steps[1]))
    gx, gy = gx.ravel(), gy.ravel()
    factor = correction_factor(None, fcr, gx, gy)            # 10^(-0.4 P), the kernel's
    with np.errstate(all="ignore"):
        p = fcr.mag(gx, gy)
        bad = ~(np.isfinite(p) & (np.abs(p) <= MAX_CORRECTION_MAG) & np.isfinite(factor)
                & (factor > 0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise MosaicError(f"{fcr_source}: the photometric correction P is {p[i]:.6g} mag at "
                          f"pixel ({gx[i]:.0f}, {gy[i]:.0f}) (it must be finite and within "
                          f"+-{MAX_CORRECTION_MAG:g} mag): damaged polynomial coefficients")
    jac = correction_factor(wcs_header, None, gx, gy)         # J
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = AREA_RATIO_RANGE
        bad = ~((jac >= lo) & (jac <= hi))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise MosaicError(f"{wcs_source}: the pixel area ratio J of the TAN-SIP WCS is "
                          f"{jac[i]:.6g} at pixel ({gx[i]:.0f}, {gy[i]:.0f}) (it must lie "
                          f"between {lo:g} and {hi:g}): damaged SIP coefficients")


def _check_full_box(fcr, width, height):
    if fcr is None:
        return
    if (width, height) != (fcr.width, fcr.height):
        raise MosaicError(f"interpolate=True needs the full {fcr.width} x {fcr.height} CCD "
                          f"(meas_mosaic's segments start at its edge), not {width} x {height}")


# ------------------------------------------------------------------------------------------
# exposures
# ------------------------------------------------------------------------------------------

def _set_card(header, key, value, comment=None):
    """Set `key` (a HIERARCH card if longer than 8 characters) keeping its place if present."""
    if key in header:
        header[key] = value
    else:
        name = key if len(key) <= 8 else "HIERARCH " + key
        header.append(fits.Card(name, value, comment) if comment else fits.Card(name, value))


def calibrate_exposure(exposure, wcs_header, fcr, interpolate=False, threads=0, inplace=False,
                       timing=None):
    """The calibrated exposure (hscPipe's CALEXP) of a CORR :class:`~mosaicfit.io.corr.Exposure`.

    image *= f, variance *= f^2 (float32, computed in double), mask unchanged; the WCS cards of
    `wcs_header` replace the single-frame WCS; FLUXMAG0 and FLUXMAG0ERR come from `fcr`; all
    other header cards are kept. With `inplace` the pixel arrays of `exposure` are modified
    and reused (no copy); the headers are always copies. If `timing` is a dict, the seconds
    spent in the pixel kernel are stored under ``"kernel"``.
    """
    if wcs_header is None or fcr is None:
        raise MosaicError("calibrate_exposure needs both the mosaic WCS and the flux correction")
    source = exposure.source
    poly, sip = _kernel_params(wcs_header, fcr, source=f"{source} (mosaic WCS)")
    out = Exposure(header=exposure.header.copy(), wcs_header=exposure.wcs_header.copy(),
                   mask_planes=dict(exposure.mask_planes), path=exposure.path)
    out.set_wcs(wcs_header)          # checks it is a valid celestial WCS (one-line error)

    def pixels(a):
        if a is None:
            return None
        if inplace and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable:
            return a
        return np.array(a, dtype=np.float32, order="C")

    image = pixels(exposure.image)
    variance = pixels(exposure.variance)
    ref = image if image is not None else variance
    if ref is not None:
        if ref.ndim != 2 or (image is not None and variance is not None
                             and image.shape != variance.shape):
            raise ValueError(f"{source}: image and variance must be 2-D arrays of one shape")
        if interpolate:
            _check_full_box(fcr, ref.shape[1], ref.shape[0])
        t0 = time.perf_counter()
        _core.apply_flux_correction(poly, sip, image, variance, bool(interpolate),
                                      INTERP_LENGTH, int(threads))
        if timing is not None:
            timing["kernel"] = timing.get("kernel", 0.0) + time.perf_counter() - t0
    _set_card(out.header, "FLUXMAG0", float(fcr.fluxmag0))
    _set_card(out.header, "FLUXMAG0ERR", float(fcr.fluxmag0err))
    out.image, out.variance = image, variance
    out.mask = exposure.mask if inplace or exposure.mask is None else exposure.mask.copy()
    return out


# ------------------------------------------------------------------------------------------
# catalogs
# ------------------------------------------------------------------------------------------

class FluxColumn:
    """A flux column of a source catalog, its error column (or None) and the names of the
    magnitude columns made from them."""

    __slots__ = ("flux", "err", "mag", "mag_err")

    def __init__(self, flux, err, mag, mag_err):
        self.flux, self.err, self.mag, self.mag_err = flux, err, mag, mag_err

    def __repr__(self):
        return f"FluxColumn({self.flux!r}, err={self.err!r}, mag={self.mag!r}, mag_err={self.mag_err!r})"


# hscPipe 3.x/4.x (meas_mosaic getFluxKeys): 'flux.X' or 'X.flux', errors NAME + '.err'; the
# on-disk spelling has '_' for '.'. Magnitudes: NAME with 'flux' replaced by 'mag' (applyCalib).
_HSC_DOT = re.compile(r"^(flux\.\w+|\w+\.flux)$")
_HSC_UNDERSCORE = re.compile(r"^(flux_[A-Za-z0-9]+|[A-Za-z0-9]+_flux)$")
# LSST: PREFIX_instFlux / PREFIX_flux (errors _instFluxErr, _fluxSigma or _fluxErr);
# magnitudes PREFIX_mag and PREFIX_magErr (as lsst.afw PhotoCalib.calibrateCatalog names them).
_LSST_FLUX = re.compile(r"^(?P<prefix>.+)_(?P<kind>instFlux|flux)$")
_LSST_ERRS = {"instFlux": ("instFluxErr",), "flux": ("fluxSigma", "fluxErr")}
# other columns linear in a flux: scaled, no magnitude (deblend_psfFlux, blendedness fluxes,
# flux-shape covariances such as base_SdssShape_instFlux_xx_Cov)
_OTHER_FLUX = re.compile(r"(^|_)[a-z]+Flux$|_(instFlux|flux)_(child|parent)$|"
                         r"_(instFlux|flux)_[A-Za-z]+_Cov$")


def _is_float(table, name):
    return np.asarray(table[name]).dtype.kind == "f"


def flux_columns(table):
    """(flux columns, other flux-linear columns) of a catalog: a list of :class:`FluxColumn`
    and a list of names. Only floating-point columns count (flags are bool)."""
    names = [n for n in table.colnames if _is_float(table, n)]
    present = set(names)
    fluxes, claimed = [], set()
    for name in names:
        fc = None
        if _HSC_DOT.match(name) or _HSC_UNDERSCORE.match(name):
            sep = "." if "." in name else "_"
            err = name + sep + "err"
            mag = name.replace("flux", "mag")
            fc = FluxColumn(name, err if err in present else None, mag, mag + sep + "err")
        else:
            m = _LSST_FLUX.match(name)
            if m:
                prefix = m.group("prefix")
                err = next((f"{prefix}_{e}" for e in _LSST_ERRS[m.group("kind")]
                            if f"{prefix}_{e}" in present), None)
                fc = FluxColumn(name, err, f"{prefix}_mag", f"{prefix}_magErr")
        if fc is not None:
            fluxes.append(fc)
            claimed.add(fc.flux)
            if fc.err:
                claimed.add(fc.err)
    others = [n for n in names if n not in claimed and _OTHER_FLUX.search(n)]
    return fluxes, others


def _mag_from_flux(flux, flux_err, fluxmag0, fluxmag0err):
    """afw Calib.getMagnitude: m = -2.5 log10(flux / FLUXMAG0), its error
    2.5 / ln 10 * hypot(err / flux, FLUXMAG0ERR / FLUXMAG0); NaN for flux <= 0 or not finite
    (afw gives -inf for an infinite flux) and for a non-finite error."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        good = np.isfinite(flux) & (flux > 0)
        mag = np.where(good, -2.5 * np.log10(np.where(good, flux, 1.0) / fluxmag0), np.nan)
        err = None
        if flux_err is not None:
            rel = np.asarray(flux_err, dtype=float) / np.where(good, flux, np.nan)
            err = 2.5 / math.log(10.0) * np.hypot(rel, fluxmag0err / fluxmag0)
            err[~np.isfinite(err)] = np.nan      # an infinite error is no error estimate
    return mag, err


def _scaled(col, f):
    a = np.asarray(col, dtype=float)
    return a * f.reshape((-1,) + (1,) * (a.ndim - 1))


def calibrate_catalog(table, wcs_header, fcr, apply_calib=True, threads=0, source=None):
    """The calibrated catalog (hscPipe's CALSRC) of a SRC table (from mosaicfit.io.src.read_src).

    The same columns, in the same order and types, with every flux and flux error column
    (:func:`flux_columns`; vector columns element by element) times f at the source's
    centroid, coord_ra/coord_dec (or hscPipe's 2-vector ``coord``) recomputed from
    `wcs_header` in radians, then a float64 column ``mosaic.corr`` = f; with `apply_calib`,
    for each flux column its magnitude and error from FLUXMAG0 (afw's Calib.getMagnitude),
    named as hscPipe's applyCalib did (``flux.psf`` -> ``mag.psf``, ``mag.psf.err``) or, for
    LSST names, ``PREFIX_mag``/``PREFIX_magErr``. Sources without a finite centroid, or so far
    off the CCD that f overflows, get NaN.
    """
    src = source or table.meta.get("source_file") or "catalog"
    if wcs_header is None or fcr is None:
        raise MosaicError(f"{src}: calibrate_catalog needs both the mosaic WCS and the flux "
                          "correction")
    cols = resolve_columns(table, source=src)
    n = len(table)
    x = np.asarray(cols["x"].get(table), dtype=float) if n else np.zeros(0)
    y = np.asarray(cols["y"].get(table), dtype=float) if n else np.zeros(0)
    x = np.ma.filled(x, np.nan) if np.ma.isMaskedArray(x) else x
    y = np.ma.filled(y, np.nan) if np.ma.isMaskedArray(y) else y
    f = correction_factor(wcs_header, fcr, x, y, threads=threads) if n else np.zeros(0)
    with np.errstate(invalid="ignore"):
        f[~(np.isfinite(f) & (f > 0))] = np.nan   # centroids far off the CCD: overflow
    if apply_calib and not fcr.fluxmag0 > 0:
        raise MosaicError(f"{src}: the flux correction has no FLUXMAG0 (it is "
                          f"{fcr.fluxmag0}); magnitudes cannot be computed "
                          "(use --config doApplyCalib=False)")
    out = table.copy(copy_data=True)          # columns keep their units, docs and types
    fluxes, others = flux_columns(table)
    for name in [fc.flux for fc in fluxes] + [fc.err for fc in fluxes if fc.err] + others:
        out[name][...] = _scaled(table[name], f)
    _update_coords(out, wcs_header, x, y, src)
    if CORR_COLUMN in out.colnames:
        raise MosaicError(f"{src}: has a {CORR_COLUMN!r} column already: is it calibrated?")
    out[CORR_COLUMN] = f.astype(np.float64)
    out[CORR_COLUMN].meta["TDOC"] = "Magnitude correction from meas_mosaic (flux factor f)"
    if apply_calib:
        m0, m0err = float(fcr.fluxmag0), float(fcr.fluxmag0err)
        for fc in fluxes:
            mag, err = _mag_from_flux(out[fc.flux], out[fc.err] if fc.err else None, m0, m0err)
            for name, values, what in ((fc.mag, mag, "magnitude"), (fc.mag_err, err, "magnitude error")):
                if values is None:
                    continue
                if name in out.colnames:
                    raise MosaicError(f"{src}: cannot add the {what} column {name!r}: the "
                                      "catalog has one already (use --config doApplyCalib=False)")
                out[name] = values
                out[name].unit = "mag"
                out[name].meta["TDOC"] = f"Calibrated {what} from {fc.err if 'error' in what else fc.flux}"
    return out


def _update_coords(out, wcs_header, x, y, src):
    has_pair = "coord_ra" in out.colnames and "coord_dec" in out.colnames
    has_vec = "coord" in out.colnames and np.asarray(out["coord"]).ndim == 2
    if not (has_pair or has_vec) or len(out) == 0:
        return
    w = make_wcs(wcs_header, f"{src} (mosaic WCS)")
    good = np.isfinite(x) & np.isfinite(y)
    ra = np.full(len(x), np.nan)
    dec = np.full(len(x), np.nan)
    if np.any(good):
        r, d = w.all_pix2world(x[good], y[good], 0)
        ra[good], dec[good] = np.radians(r), np.radians(d)
    if has_pair:
        out["coord_ra"][...] = ra
        out["coord_dec"][...] = dec
    if has_vec:
        out["coord"][:, 0] = ra
        out["coord"][:, 1] = dec
