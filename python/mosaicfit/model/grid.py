"""Fields sampled on a regular grid: node (i, j) at (x0 + j step, y0 + i step), interpolated
bilinearly and zero outside the grid (the turbulence and transparency fields)."""
import numpy as np

__all__ = ["bilinear"]


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
