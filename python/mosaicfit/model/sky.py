"""Positions on the sky: gnomonic (tangent-plane) projections and unit vectors.

Angles in degrees on the sky, radians in the tangent plane (xi east, eta north), as the
names say.
"""
import numpy as np

__all__ = ["sky_to_tangent", "tangent_to_sky", "radec_to_xyz", "xyz_to_radec", "mean_position"]


def sky_to_tangent(ra_deg, dec_deg, ra0_deg, dec0_deg):
    """Gnomonic projection about (ra0, dec0): (xi, eta) in radians (east, north)."""
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    cd, sd = np.cos(dec), np.sin(dec)
    cd0, sd0 = np.cos(dec0), np.sin(dec0)
    dra = ra - ra0
    den = sd * sd0 + cd * cd0 * np.cos(dra)
    xi = cd * np.sin(dra) / den
    eta = (sd * cd0 - cd * sd0 * np.cos(dra)) / den
    return xi, eta


def tangent_to_sky(xi, eta, ra0_deg, dec0_deg):
    """Inverse gnomonic projection: (xi, eta) radians about (ra0, dec0) -> (ra, dec) degrees."""
    xi = np.asarray(xi, dtype=float)
    eta = np.asarray(eta, dtype=float)
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    cd0, sd0 = np.cos(dec0), np.sin(dec0)
    den = cd0 - eta * sd0
    ra = ra0 + np.arctan2(xi, den)
    dec = np.arctan2(sd0 + eta * cd0, np.hypot(xi, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def radec_to_xyz(ra_deg, dec_deg):
    """Unit vectors (n, 3) for RA, Dec in degrees."""
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)



def xyz_to_radec(xyz):
    """(ra, dec) in degrees of vectors (n, 3), normalised here."""
    s = np.asarray(xyz, float)
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    return (np.degrees(np.arctan2(s[..., 1], s[..., 0])) % 360.0,
            np.degrees(np.arcsin(np.clip(s[..., 2], -1, 1))))


def mean_position(ra, dec, label, n):
    """(ra, dec) in degrees of the mean unit vector of the positions of each of `n` groups
    (`label` the group of each position)."""
    s = np.zeros((n, 3))
    np.add.at(s, label, radec_to_xyz(ra, dec))
    return xyz_to_radec(s)
