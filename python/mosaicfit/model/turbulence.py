"""The turbulent displacement field of a visit: the last map of the astrometric chain.

The atmosphere displaces the images of one exposure by a field that varies on arcminute
scales (Léget et al. 2021: ~30 mas^2 at 1' on HSC-SSP exposures), which no per-visit
polynomial follows. :mod:`mosaicfit.fit.turbulence` estimates it per visit (a Gaussian
process on the residuals); here it is held as what it is, a vector field in the tract plane,
sampled on a regular grid and interpolated bilinearly (the GP's posterior mean is smooth on the
scale of the distance between stars, ~1', far above the grid step of 30").

The field is the apparent displacement of an image: the true tract-plane position of a
detection is the polynomial's minus the field there.
"""
import numpy as np

from .grid import bilinear, grid_hdu, grid_of_hdu

__all__ = ["TurbulenceField"]


class TurbulenceField:
    """A vector field (dxi, deta) in arcsec on a regular grid of the tract plane: node (i, j)
    at (x0 + j step, y0 + i step) arcsec; zero outside the grid. `params` records how it was
    fitted (kernel amplitude, outer scale, validation figures)."""

    def __init__(self, x0, y0, step, dxi, deta, params=None):
        self.x0, self.y0, self.step = float(x0), float(y0), float(step)
        self.dxi = np.ascontiguousarray(dxi, float)
        self.deta = np.ascontiguousarray(deta, float)
        if self.dxi.shape != self.deta.shape or self.dxi.ndim != 2:
            raise ValueError("dxi and deta must be 2-D arrays of the same shape")
        self.params = dict(params or {})

    @property
    def shape(self):
        """(rows, columns) of the grid (rows along eta)."""
        return self.dxi.shape

    def nodes(self):
        """(xi, eta) of the grid nodes, arcsec, each (ny, nx)."""
        ny, nx = self.shape
        return np.meshgrid(self.x0 + self.step * np.arange(nx), self.y0 + self.step * np.arange(ny))

    def __call__(self, xi, eta):
        """(dxi, deta) in arcsec at tract-plane positions (arcsec), bilinear; 0 outside."""
        dxi, deta = bilinear((self.dxi, self.deta), self.x0, self.y0, self.step, xi, eta)
        return dxi, deta

    # -- file format: one image HDU pair per visit (Solution.save) -----------------------------
    def to_hdus(self, visit):
        """Two ImageHDUs (TURB_XI_<visit>, TURB_ETA_<visit>), arcsec, float64, with the grid's
        origin and step (and the fit's parameters) in their headers."""
        return [grid_hdu(data, f"TURB_{name}_{int(visit)}", visit, self.x0, self.y0, self.step,
                         "arcsec", ("tract-plane xi", "tract-plane eta"), self.params)
                for name, data in (("XI", self.dxi), ("ETA", self.deta))]

    @classmethod
    def from_hdus(cls, hxi, heta):
        """The field of two ImageHDUs :meth:`to_hdus` wrote (other cards back as `params`, lower-cased)."""
        x0, y0, step, dxi, params = grid_of_hdu(hxi)
        return cls(x0, y0, step, dxi, np.asarray(heta.data, float), params)
