"""Fields sampled on a regular grid: node (i, j) at (x0 + j step, y0 + i step), interpolated
bilinearly and zero outside the grid (the turbulence and transparency fields)."""
import numpy as np

__all__ = ["bilinear", "grid_hdu", "grid_of_hdu"]

# cards of a grid's image HDU that are not the fit's parameters
_STRUCTURE = ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "EXTNAME",
              "VISIT", "FILTER", "X0", "Y0", "STEP")


def bilinear(grids, x0, y0, step, x, y):
    """Each 2-D array of `grids` (all of one shape, rows along y) interpolated bilinearly at
    (x, y); 0 outside the grid. Returns a list, one array of the shape of `x` per grid."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ny, nx = grids[0].shape
    fx = (x - x0) / step
    fy = (y - y0) / step
    inside = (fx >= 0) & (fx <= nx - 1) & (fy >= 0) & (fy <= ny - 1)
    j = np.clip(np.floor(np.nan_to_num(fx)).astype(np.int64), 0, max(nx - 2, 0))
    i = np.clip(np.floor(np.nan_to_num(fy)).astype(np.int64), 0, max(ny - 2, 0))
    tx = np.clip(np.nan_to_num(fx) - j, 0.0, 1.0)
    ty = np.clip(np.nan_to_num(fy) - i, 0.0, 1.0)
    j1, i1 = np.minimum(j + 1, nx - 1), np.minimum(i + 1, ny - 1)
    out = []
    for g in grids:
        v = ((1 - tx) * (1 - ty) * g[i, j] + tx * (1 - ty) * g[i, j1]
             + (1 - tx) * ty * g[i1, j] + tx * ty * g[i1, j1])
        out.append(np.where(inside, v, 0.0))
    return out


def grid_hdu(data, name, visit, x0, y0, step, unit, axes, params, filter=None):
    """An ImageHDU `name` of a grid (float64) with VISIT (and FILTER), the origin X0, Y0 and
    the STEP in `unit` along `axes` (two names, for the comments) and the fit's `params`
    (those of FITS-able values and keys of <= 8 characters, upper-cased)."""
    from astropy.io import fits
    h = fits.ImageHDU(np.asarray(data, float), name=name)
    h.header["VISIT"] = int(visit)
    if filter is not None:
        h.header["FILTER"] = str(filter)
    h.header["X0"] = (float(x0), f"[{unit}] {axes[0]} of node (0, 0)")
    h.header["Y0"] = (float(y0), f"[{unit}] {axes[1]} of node (0, 0)")
    h.header["STEP"] = (float(step), f"[{unit}] grid step")
    for k, v in params.items():
        if isinstance(v, (int, float, bool, str)) and len(k) <= 8:
            h.header[k.upper()] = v
    return h


def grid_of_hdu(hdu):
    """(x0, y0, step, data, params) of an HDU :func:`grid_hdu` wrote (params lower-cased)."""
    h = hdu.header
    return (h["X0"], h["Y0"], h["STEP"], np.asarray(hdu.data, float),
            {k.lower(): h[k] for k in h if k not in _STRUCTURE})
