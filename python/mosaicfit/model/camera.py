"""Camera geometry: CCD placement on the focal plane and the optical distortion.

A camera is data, not code: a folder with ``camera.json`` naming a detector table (CSV, one row
per CCD: centre offset in mm, yaw in degrees, reference pixel, pixel size, bounding box) and a
distortion polynomial (JSON: focal-plane "pixels" -> field angle). ``hsc()`` loads the
packaged Hyper Suprime-Cam description; ``Camera.from_folder`` loads any other.

Coordinate frames (units explicit in every name):

* pixel: 0-based (x, y) inside a CCD, as afw and the SRC catalogs use;
* focal plane: (x_mm, y_mm), or (u, v) = focal plane / pixel size in 15 micron "pixels",
  the frame of the meas_mosaic model;
* field angle: (X, Y) in radians, used directly as gnomonic-plane coordinates;
* sky: (ra, dec) in degrees, via the boresight and the rotator's sky angle.
"""
import csv
import functools
import json
import os
from dataclasses import dataclass

import numpy as np

from .. import MosaicError
from ..units import ARCSEC_RAD
from .basis import PolyBasis
from .sky import sky_to_tangent, tangent_to_sky

_DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


@dataclass(frozen=True)
class Detector:
    """One CCD of the camera, as in the detector table.

    id and name; type 0 science, 1 focus (as obs_subaru); offset_mm the focal-plane position
    (mm) of the reference pixel refpos (0-based pixels); yaw_deg its rotation (degrees);
    pixel_size_mm (x, y); bbox (x0, y0, x1, y1) in pixels, inclusive.
    """
    id: int
    name: str
    type: int          # 0 science, 1 focus (as obs_subaru)
    offset_mm: tuple   # (x, y) of the reference pixel on the focal plane
    yaw_deg: float
    refpos: tuple      # reference pixel (x, y), 0-based
    pixel_size_mm: tuple
    bbox: tuple        # (x0, y0, x1, y1), inclusive

    @property
    def width(self):
        """Width of the bounding box, pixels."""
        return self.bbox[2] - self.bbox[0] + 1

    @property
    def height(self):
        """Height of the bounding box, pixels."""
        return self.bbox[3] - self.bbox[1] + 1

    @property
    def nquarter(self):
        """Quarter turns of the CCD on the focal plane, round(yaw / 90) mod 4 (fcr frame)."""
        return int(round(self.yaw_deg / 90.0)) % 4


class Polynomial2D:
    """The optics' (X, Y) = sum_k c[k] u^nx[k] v^ny[k], vectorised, with its derivatives."""

    def __init__(self, terms, xcoeffs, ycoeffs):
        self.terms = np.asarray(terms, dtype=int)
        self.cx = np.asarray(xcoeffs, dtype=float)
        self.cy = np.asarray(ycoeffs, dtype=float)
        self.order = int(self.terms.sum(axis=1).max())
        self.basis = PolyBasis(self.order, "monomial")
        self._coef = np.zeros((2, self.basis.n_terms))
        for (i, j), cx, cy in zip(self.terms, self.cx, self.cy):    # repeated terms add up
            self._coef[:, self.basis.index(int(i), int(j))] += (cx, cy)

    def __call__(self, u, v):
        X, Y = self.basis.evaluate(self._coef, u, v)
        return X, Y

    def jacobian(self, u, v):
        """(dX/du, dX/dv, dY/du, dY/dv)."""
        _, du, dv = self.basis.evaluate_with_gradients(self._coef, u, v)
        return du[0], dv[0], du[1], dv[1]

    def values_and_jacobian(self, u, v):
        """(X, Y, (dX/du, dX/dv, dY/du, dY/dv)) from one evaluation: the numbers of
        __call__ and :meth:`jacobian`."""
        val, du, dv = self.basis.evaluate_with_gradients(self._coef, u, v)
        return val[0], val[1], (du[0], dv[0], du[1], dv[1])


class Camera:
    """Detectors plus the focal-plane -> field-angle distortion of one instrument."""

    def __init__(self, name, detectors, distortion, pixel_size_mm, plate_scale_arcsec_per_mm,
                 raw_wcs=None):
        self.name = name
        self.detectors = {d.id: d for d in detectors}
        self.distortion = distortion
        self.pixel_size_mm = float(pixel_size_mm)
        # field angle [rad] per polynomial unit (HSC: 11.2"/mm x 0.015 mm = 0.168")
        self._angle_per_unit = plate_scale_arcsec_per_mm * pixel_size_mm * ARCSEC_RAD
        raw_wcs = raw_wcs or {}
        self.flip_x = bool(raw_wcs.get("flip_x", False))
        self.rotation_offset_deg = float(raw_wcs.get("rotation_offset_deg", 0.0))

    @property
    def pixel_scale_arcsec(self):
        """Arcsec per focal-plane pixel at the optical axis (the plate scale, no distortion)."""
        return self._angle_per_unit / ARCSEC_RAD

    @classmethod
    def from_folder(cls, folder):
        """Load a camera described by ``folder/camera.json``."""
        path = os.path.join(folder, "camera.json")
        try:
            with open(path) as f:
                desc = json.load(f)
            dets = _read_detectors(os.path.join(folder, desc["detectors"]))
            with open(os.path.join(folder, desc["distortion"])) as f:
                dist = json.load(f)
            poly = Polynomial2D(dist["terms_nx_ny"], dist["xCoeffs"], dist["yCoeffs"])
        except (OSError, ValueError, KeyError) as e:
            raise MosaicError(f"{path}: cannot load camera description: {e}") from None
        pixel_sizes = {d.pixel_size_mm for d in dets}
        if len(pixel_sizes) != 1 or abs(pixel_sizes.pop()[0] - dist["pixelSize_mm"]) > 1e-12:
            raise MosaicError(f"{path}: detector pixel size differs from the distortion's")
        return cls(desc["name"], dets, poly, dist["pixelSize_mm"], dist["plateScale_arcsec_per_mm"],
                   desc.get("raw_wcs"))

    # -- detectors -----------------------------------------------------------------------------
    def __getitem__(self, ccd):
        try:
            return self.detectors[int(ccd)]
        except KeyError:
            raise MosaicError(f"camera {self.name} has no CCD {ccd}") from None

    @property
    def science_ccds(self):
        """Sorted ids of the science CCDs (type 0)."""
        return sorted(i for i, d in self.detectors.items() if d.type == 0)

    # -- pixel <-> focal plane -----------------------------------------------------------------
    def pixel_to_focal_plane(self, ccd, x, y):
        """0-based CCD pixel -> focal plane (x_mm, y_mm)."""
        d = self[ccd]
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        c, s = np.cos(np.radians(d.yaw_deg)), np.sin(np.radians(d.yaw_deg))
        dx = (x - d.refpos[0]) * d.pixel_size_mm[0]
        dy = (y - d.refpos[1]) * d.pixel_size_mm[1]
        return d.offset_mm[0] + c * dx - s * dy, d.offset_mm[1] + s * dx + c * dy

    def focal_plane_to_pixel(self, ccd, x_mm, y_mm):
        """Focal plane (x_mm, y_mm) -> 0-based pixel of `ccd` (may lie outside the CCD)."""
        d = self[ccd]
        c, s = np.cos(np.radians(d.yaw_deg)), np.sin(np.radians(d.yaw_deg))
        dx = np.asarray(x_mm, dtype=float) - d.offset_mm[0]
        dy = np.asarray(y_mm, dtype=float) - d.offset_mm[1]
        return (d.refpos[0] + (c * dx + s * dy) / d.pixel_size_mm[0],
                d.refpos[1] + (-s * dx + c * dy) / d.pixel_size_mm[1])

    # -- focal plane <-> field angle -----------------------------------------------------------
    def focal_plane_to_field_angle(self, x_mm, y_mm):
        """Focal plane (mm) -> field angle (radians)."""
        u = np.asarray(x_mm, dtype=float) / self.pixel_size_mm
        v = np.asarray(y_mm, dtype=float) / self.pixel_size_mm
        X, Y = self.distortion(u, v)
        return X * self._angle_per_unit, Y * self._angle_per_unit

    def field_angle_to_focal_plane(self, X_rad, Y_rad, tol_mm=1e-12, max_iter=50):
        """Field angle (radians) -> focal plane (mm), by Newton's method on the polynomial.

        Converges to ~1e-12 mm (the LSST code stops at 0.005 focal-plane pixel).
        """
        X = np.asarray(X_rad, dtype=float) / self._angle_per_unit
        Y = np.asarray(Y_rad, dtype=float) / self._angle_per_unit
        u, v = X.copy(), Y.copy()   # the distortion is close to the identity
        tol = tol_mm / self.pixel_size_mm
        for _ in range(max_iter):
            fx, fy = self.distortion(u, v)
            a, b, c, d = self.distortion.jacobian(u, v)
            rx, ry = X - fx, Y - fy
            det = a * d - b * c
            du = (d * rx - b * ry) / det
            dv = (-c * rx + a * ry) / det
            u = u + du
            v = v + dv
            if np.all(np.abs(du) < tol) and np.all(np.abs(dv) < tol):
                break
        return u * self.pixel_size_mm, v * self.pixel_size_mm

    def pixel_to_field_angle(self, ccd, x, y):
        """0-based pixel of `ccd` -> field angle (X, Y) in radians, nominal CCD placement."""
        return self.focal_plane_to_field_angle(*self.pixel_to_focal_plane(ccd, x, y))

    def field_angle_to_pixel(self, ccd, X_rad, Y_rad):
        """Field angle (radians) -> 0-based pixel of `ccd` (may lie outside the CCD)."""
        return self.focal_plane_to_pixel(ccd, *self.field_angle_to_focal_plane(X_rad, Y_rad))

    def field_angle_jacobian(self, x_mm, y_mm):
        """d(field angle [rad]) / d(focal plane [mm]) as (a, b, c, d)."""
        u = np.asarray(x_mm, dtype=float) / self.pixel_size_mm
        v = np.asarray(y_mm, dtype=float) / self.pixel_size_mm
        k = self._angle_per_unit / self.pixel_size_mm
        return tuple(k * j for j in self.distortion.jacobian(u, v))

    def field_angle_and_jacobian(self, x_mm, y_mm):
        """(X, Y, (a, b, c, d)): :meth:`focal_plane_to_field_angle` and
        :meth:`field_angle_jacobian` from one evaluation of the distortion."""
        u = np.asarray(x_mm, dtype=float) / self.pixel_size_mm
        v = np.asarray(y_mm, dtype=float) / self.pixel_size_mm
        X, Y, J = self.distortion.values_and_jacobian(u, v)
        k = self._angle_per_unit / self.pixel_size_mm
        return X * self._angle_per_unit, Y * self._angle_per_unit, tuple(k * j for j in J)

    # -- field angle <-> sky (raw pointing) ----------------------------------------------------
    def field_angle_to_tangent_plane(self, X_rad, Y_rad, sky_angle_deg):
        """Field angle -> gnomonic-plane (xi, eta) in radians, east and north, for a rotator
        sky angle (the instrument's raw-WCS convention: x flip and rotation offset)."""
        X = np.asarray(X_rad, dtype=float)
        Y = np.asarray(Y_rad, dtype=float)
        if self.flip_x:
            X = -X
        th = np.radians(sky_angle_deg + self.rotation_offset_deg)
        c, s = np.cos(th), np.sin(th)
        return c * X - s * Y, s * X + c * Y

    def tangent_plane_to_field_angle(self, xi, eta, sky_angle_deg):
        """Gnomonic-plane (xi, eta) in radians about the boresight -> field angle (X, Y), radians.

        The inverse of :meth:`field_angle_to_tangent_plane` for the rotator sky angle
        `sky_angle_deg` (degrees).
        """
        th = np.radians(sky_angle_deg + self.rotation_offset_deg)
        c, s = np.cos(th), np.sin(th)
        xi = np.asarray(xi, dtype=float)
        eta = np.asarray(eta, dtype=float)
        X, Y = c * xi + s * eta, -s * xi + c * eta
        return (-X if self.flip_x else X), Y

    def pixel_to_sky(self, ccd, x, y, boresight_ra_deg, boresight_dec_deg, sky_angle_deg):
        """Raw (nominal) pixel -> (ra, dec) degrees from the boresight and sky angle."""
        xi, eta = self.field_angle_to_tangent_plane(*self.pixel_to_field_angle(ccd, x, y),
                                                    sky_angle_deg)
        return tangent_to_sky(xi, eta, boresight_ra_deg, boresight_dec_deg)

    def sky_to_pixel(self, ccd, ra_deg, dec_deg, boresight_ra_deg, boresight_dec_deg,
                     sky_angle_deg):
        """(ra, dec) in degrees -> nominal (raw) 0-based pixel of `ccd`.

        The inverse of :meth:`pixel_to_sky`; the boresight (ra, dec) and the rotator sky angle are
        in degrees.
        """
        xi, eta = sky_to_tangent(ra_deg, dec_deg, boresight_ra_deg, boresight_dec_deg)
        return self.field_angle_to_pixel(
            ccd, *self.tangent_plane_to_field_angle(xi, eta, sky_angle_deg))

    def ccd_corners(self, ccd, pad=0.0):
        """Pixel (x, y) of the four corners of the CCD's pixel boundary, padded by `pad` px."""
        d = self[ccd]
        x0, y0 = d.bbox[0] - 0.5 - pad, d.bbox[1] - 0.5 - pad
        x1, y1 = d.bbox[2] + 0.5 + pad, d.bbox[3] + 0.5 + pad
        return np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1])


def _read_detectors(path):
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.append(Detector(
                id=int(row["id"]), name=row["name"], type=int(row["detectorType"]),
                offset_mm=(float(row["offset_x"]), float(row["offset_y"])),
                yaw_deg=float(row["yawDeg"]),
                refpos=(float(row["refpos_x"]), float(row["refpos_y"])),
                pixel_size_mm=(float(row["pixelSize_x"]), float(row["pixelSize_y"])),
                bbox=(int(row["bbox_x0"]), int(row["bbox_y0"]), int(row["bbox_x1"]),
                      int(row["bbox_y1"]))))
    if not out:
        raise ValueError(f"no detectors in {path}")
    return out


@functools.lru_cache(maxsize=None)
def hsc():
    """The Subaru Hyper Suprime-Cam camera (cached)."""
    return Camera.from_folder(os.path.join(_DATA, "hsc"))
