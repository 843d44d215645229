"""Compare two sets of mosaic products (wcs-/fcr- files) CCD by CCD.

    python bench/compare_products.py DIR_A DIR_B [--grid 9]

DIR_A and DIR_B are the folders holding the products (``.../corr/TTTT``), or any folders
above them (searched recursively). Each (visit, CCD) present in both is evaluated on a grid
of pixels over the CCD (corners included) with astropy alone, independently of mosaicfit:

- position: the angular separation of the two WCSs' ``all_pix2world`` (mas);
- flux: the calibrated magnitude offset -2.5 log10(10^(-0.4 P) J / FLUXMAG0) of the two
  fcr/wcs pairs (mmag), with P the fcr polynomial in the CCD frame turned by the CCD's
  quarter turns (the file does not say them: they are read from the camera table packaged
  with mosaicfit, or taken as 0 with --no-camera) and J the WCS pixel area relative to CRPIX.

Prints the largest and rms differences and the CCDs present in only one set; exits 1 when a
difference exceeds --tol-mas / --tol-mmag (defaults 1e-6, the restructuring's criterion).
"""
import argparse
import csv
import glob
import os
import re
import sys

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

_NAME = re.compile(r"^(wcs|fcr)-(\d{7})-(\d{3})\.fits$")
W, H = 2048, 4176


def find_products(top):
    """{(kind, visit, ccd): path} under `top`."""
    out = {}
    for path in glob.glob(os.path.join(top, "**", "*.fits"), recursive=True):
        m = _NAME.match(os.path.basename(path))
        if m:
            out[(m.group(1), int(m.group(2)), int(m.group(3)))] = path
    return out


def quarter_turns():
    """{ccd: nq} from the detector table packaged with mosaicfit (round(yaw / 90) mod 4)."""
    import mosaicfit
    base = os.path.dirname(mosaicfit.__file__)
    path = next(iter(glob.glob(os.path.join(base, "data", "hsc", "hsc_detectors.csv"))), None)
    if path is None:
        return {}
    with open(path, newline="") as f:
        return {int(r["id"]): int(round(float(r["yawDeg"]) / 90.0)) % 4 for r in csv.DictReader(f)}


def _separation_mas(ra1, dec1, ra2, dec2):
    """Angle between two positions (degrees) in mas, from the chord of their unit vectors
    (exact for tiny angles, unlike arccos of a dot product)."""
    def xyz(ra, dec):
        r, d = np.radians(ra), np.radians(dec)
        return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])
    chord = np.linalg.norm(xyz(ra1, dec1) - xyz(ra2, dec2), axis=0)
    return np.degrees(2.0 * np.arcsin(0.5 * chord)) * 3.6e6


def wcs_of(path):
    with fits.open(path) as hdul:
        for hdu in list(hdul[1:2]) + [hdul[0]]:
            if "CTYPE1" in hdu.header:
                return WCS(hdu.header), hdu.header
    raise ValueError(f"{path}: no WCS")


def area_ratio(header, x, y):
    """J = |det d(u + A, v + B)/d(u, v)| at 0-based pixels."""
    u = x + 1.0 - header["CRPIX1"]
    v = y + 1.0 - header["CRPIX2"]
    au = av = bu = bv = 0.0
    for key in header:
        m = re.match(r"^(A|B)_(\d+)_(\d+)$", key)
        if not m:
            continue
        p, q, c = int(m.group(2)), int(m.group(3)), float(header[key])
        du = c * p * u ** max(p - 1, 0) * v ** q if p else 0.0
        dv = c * q * u ** p * v ** max(q - 1, 0) if q else 0.0
        if m.group(1) == "A":
            au, av = au + du, av + dv
        else:
            bu, bv = bu + du, bv + dv
    return np.abs((1 + au) * (1 + bv) - av * bu)


def fcr_mag(path, x, y, nq):
    """(P(x, y) in magnitudes, FLUXMAG0) of an fcr file."""
    h = fits.getheader(path, 0)
    order = int(h["ORDER"])
    xr, yr = {0: (x, y), 1: (H - 1 - y, x), 2: (W - 1 - x, H - 1 - y), 3: (y, W - 1 - x)}[nq]
    u = (xr + h["X0"]) / h["U_MAX"]
    v = (yr + h["Y0"]) / h["V_MAX"]
    c = np.zeros((order + 1, order + 1))
    for i in range(order + 1):
        for j in range(order + 1 - i):
            c[i, j] = h[f"C_{i}_{j}"]
    if h["CHEBYSHEV"]:
        p = np.polynomial.chebyshev.chebval2d(u, v, c)
    else:
        p = np.polynomial.polynomial.polyval2d(u, v, c)
    return p, float(h["FLUXMAG0"])


def compare(dir_a, dir_b, grid=9, nq_of=None):
    a, b = find_products(dir_a), find_products(dir_b)
    gx, gy = np.meshgrid(np.linspace(-0.5, W - 0.5, grid), np.linspace(-0.5, H - 0.5, 2 * grid))
    gx, gy = gx.ravel(), gy.ravel()
    pos, mag = [], []
    for key in sorted(set(a) & set(b)):
        kind, visit, ccd = key
        if kind == "wcs":
            wa, _ = wcs_of(a[key])
            wb, _ = wcs_of(b[key])
            ra1, de1 = wa.all_pix2world(gx, gy, 0)
            ra2, de2 = wb.all_pix2world(gx, gy, 0)
            d = _separation_mas(ra1, de1, ra2, de2)
            pos.append((key, float(d.max()), float(np.sqrt(np.mean(d ** 2)))))
        elif ("wcs", visit, ccd) in a and ("wcs", visit, ccd) in b:
            nq = (nq_of or {}).get(ccd, 0)
            out = []
            for side in (a, b):
                _, hw = wcs_of(side[("wcs", visit, ccd)])
                p, f0 = fcr_mag(side[key], gx, gy, nq)
                out.append(p - 2.5 * np.log10(area_ratio(hw, gx, gy)) + 2.5 * np.log10(f0)
                           if f0 > 0 else np.full(len(gx), np.nan))
            d = np.abs(out[0] - out[1]) * 1000.0
            mag.append((key, float(np.nanmax(d)) if np.isfinite(d).any() else np.nan,
                        float(np.sqrt(np.nanmean(d ** 2))) if np.isfinite(d).any() else np.nan))
    return a, b, pos, mag


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir_a")
    p.add_argument("dir_b")
    p.add_argument("--grid", type=int, default=9, help="grid points along x (2x along y)")
    p.add_argument("--tol-mas", type=float, default=1e-6)
    p.add_argument("--tol-mmag", type=float, default=1e-6)
    p.add_argument("--no-camera", action="store_true", help="take every CCD as unrotated")
    args = p.parse_args(argv)
    nq = {} if args.no_camera else quarter_turns()
    a, b, pos, mag = compare(args.dir_a, args.dir_b, args.grid, nq)
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    print(f"{len(a)} files in A, {len(b)} in B; {len(pos)} WCS and {len(mag)} fcr pairs compared")
    bad = bool(only_a or only_b)
    for name, rows, unit, tol in (("WCS", pos, "mas", args.tol_mas), ("flux", mag, "mmag", args.tol_mmag)):
        if not rows:
            continue
        worst = max(rows, key=lambda r: -1 if not np.isfinite(r[1]) else r[1])
        rms = float(np.sqrt(np.nanmean([r[2] ** 2 for r in rows])))
        print(f"{name}: max {worst[1]:.3g} {unit} (visit {worst[0][1]} ccd {worst[0][2]}), "
              f"rms {rms:.3g} {unit}")
        bad |= worst[1] > tol
    for label, only in (("only in A", only_a), ("only in B", only_b)):
        if only:
            print(f"{label}: {len(only)} files, e.g. " + ", ".join(
                f"{k}-{v:07d}-{c:03d}" for k, v, c in only[:5]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
