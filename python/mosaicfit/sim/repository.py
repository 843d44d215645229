"""Writing a simulated tract as an hscPipe data repository: registry, CORR and SRC files (and
match files, on request), the reference catalogue and the truth."""
import os
import time
from math import erf, sqrt
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from .. import MosaicError
from ..io.atomic import write_fits, write_text
from ..io.corr import Exposure, write_corr
from ..io.layout import Registry, Repository
from ..io.matchfile import full_match_table, write_full_match_file, write_match_file
from ..io.refcat import write_refcat
from ..io.src import write_src
from ..model.sip import sip_pixel_to_sky
from ..units import DAYS_PER_YEAR
from .config import PIXEL_ARCSEC, REFCAT_NAME, SATURATION_ADU
from .observe import make_tract

__all__ = ["simulate_repository", "write_repository", "src_in_schema", "SCHEMAS", "MATCH_FILES"]


# ------------------------------------------------------------------------------------------
# Writing the repository
# ------------------------------------------------------------------------------------------
def _date_strings(mjd):
    t = Time(mjd, format="mjd", scale="tai")
    return t.utc.isot[:10], t.isot


def _registry_rows(sim):
    cfg = sim.config
    rows = []
    for visit in sim.visits:
        v = sim.truth.visits[visit]
        date, tai = _date_strings(v["mjd"])
        for ccd in cfg.ccds:
            rows.append(dict(field=cfg.field, visit=visit, filter=cfg.filter, dateObs=date,
                             pointing=cfg.pointing, ccd=int(ccd), config="", taiObs=tai,
                             expTime=v["exptime"]))
    return rows


def _corr_primary(sim, visit, ccd):
    v = sim.truth.visits[visit]
    date, tai = _date_strings(v["mjd"])
    h = fits.Header()
    h["FLUXMAG0"], h["HIERARCH FLUXMAG0ERR"] = sim.fluxmag0[(visit, ccd)]
    h["FILTER"] = sim.config.filter
    h["EXPTIME"] = v["exptime"]
    h["DATE-OBS"] = date
    h["MJD"] = v["mjd"]
    h["MJD-AVG"] = v["mjd"] + 0.5 * v["exptime"] / 86400.0
    h["BORE-RA"] = (v["ra_commanded"], "[deg] telescope boresight RA (commanded)")
    h["BORE-DEC"] = (v["dec_commanded"], "[deg] telescope boresight Dec (commanded)")
    h["HIERARCH BORE-ROTANG"] = (v["sky_angle"], "[deg] rotator sky position angle")
    h["ROTTYPE"] = "SKY"
    h["VISIT"] = visit
    h["CCD"] = ccd
    h["DET-ID"] = ccd
    h["OBJECT"] = sim.config.field
    h["POINTING"] = sim.config.pointing
    h["INSTRUME"] = "Hyper Suprime-Cam"
    if "observing" in v:          # the dcr effect: where the telescope pointed, and the air
        o = v["observing"]
        d = sim.truth.effects["dcr"]
        h["AIRMASS"] = (round(o["airmass"], 6), "sec(ZD) at mid-exposure")
        h["ZD"] = (o["zenith_distance_deg"], "[deg] zenith distance at mid-exposure")
        h["ALTITUDE"] = (o["altitude_deg"], "[deg] altitude of telescope pointing")
        h["AZIMUTH"] = (o["azimuth_deg"], "[deg] azimuth of pointing, north through east")
        h["LST"] = (_sexagesimal(o["lst_deg"] / 15.0, 3), "local sidereal time, mid-exposure")
        h["HA"] = (o["hour_angle_deg"], "[deg] hour angle at mid-exposure (west > 0)")
        h["PARANG"] = (o["parallactic_deg"], "[deg] parallactic angle: PA of the zenith, N->E")
        h["OUT-PRS"] = (d["pressure_hpa"], "[hPa] atmospheric pressure outside the dome")
        h["OUT-TMP"] = (d["temperature_k"], "[K] temperature outside the dome")
    return h


def _sexagesimal(hours, digits):
    """'HH:MM:SS.sss' of `hours` in [0, 24)."""
    s = round((hours % 24.0) * 3600.0, digits) % 86400.0
    return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:0{3 + digits}.{digits}f}"


def _render_ccd(sim, visit, ccd, rng):
    """Star and galaxy images with noise, background subtracted (a calexp), plus mask and
    variance planes, consistent with the catalogue's truth fluxes."""
    v = sim.truth.visits[visit]
    d = sim.truth.camera[ccd]
    det = sim.detections
    m = (np.asarray(det["visit"]) == visit) & (np.asarray(det["ccd"]) == ccd)
    sub = det[m]
    sigma_psf = v["seeing_fwhm"] / 2.3548 / PIXEL_ARCSEC
    img = np.zeros((d.height, d.width), np.float32)
    sizes = dict(zip(np.asarray(sim.stars["truth_id"]), np.asarray(sim.stars["size"])))
    for tid, x, y, f in zip(sub["truth_id"], sub["x_true"], sub["y_true"], sub["instFlux_true"]):
        s = np.hypot(sigma_psf, sizes.get(int(tid), 0.0) / PIXEL_ARCSEC)
        r = int(np.ceil(5 * s))
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 2, d.width)
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 2, d.height)
        if x0 >= x1 or y0 >= y1:
            continue
        # pixel-integrated Gaussian (error functions), so aperture sums equal the flux
        ex = np.array([erf((xx - x) / (sqrt(2) * s)) for xx in np.arange(x0, x1 + 1) - 0.5])
        ey = np.array([erf((yy - y) / (sqrt(2) * s)) for yy in np.arange(y0, y1 + 1) - 0.5])
        img[y0:y1, x0:x1] += (f * 0.25 * np.outer(np.diff(ey), np.diff(ex))).astype(np.float32)
    var = (v["sky_adu"] + np.maximum(img, 0)) / v["gain"]
    img += (rng.normal(0, 1, img.shape) * np.sqrt(var)).astype(np.float32)
    mask = np.zeros(img.shape, np.int32)
    sat = img > SATURATION_ADU
    img[sat] = SATURATION_ADU
    mask[sat] |= 1 << 1                      # SAT
    return img, mask, var.astype(np.float32)


def _write_one(sim, repo, key, images, rng_seed, matches=None):
    visit, ccd = key
    what = sim.missing.get(key)
    did = dict(visit=visit, ccd=ccd, pointing=sim.config.pointing, filter=sim.config.filter)
    n = 0
    if what not in ("src", "both"):
        src = sim.catalogs[key]
        write_src(repo.path("src", **did), src_in_schema(src, sim.config.schema))
        n += 1
        if sim.config.match_files and matches is not None:
            n += _write_match_files(sim, repo, did, key, src, matches, rng_seed)
    if what not in ("calexp", "both"):
        wh = sim.wcs_headers[key]           # write_corr does not change it
        img = mask = var = None
        if images:
            img, mask, var = _render_ccd(sim, visit, ccd, np.random.default_rng(rng_seed))
        write_corr(repo.path("calexp", **did),
                   Exposure(image=img, mask=mask, variance=var,
                            header=_corr_primary(sim, visit, ccd), wcs_header=wh))
        n += 1
    return n


# ------------------------------------------------------------------------------------------
# hscPipe 3.x column names; reference match files (icMatch, srcMatch, srcMatchFull)
# ------------------------------------------------------------------------------------------
SCHEMAS = ("lsst", "hsc3")
MATCH_FILES = ("srcMatch", "srcMatchFull", "icMatch")
ICSRC_MIN_SNR = 50.0          # the calibration step's bright, isolated sources


def src_in_schema(t, schema):
    """A simulated SRC table (LSST names, :func:`_src_table`) with the column names and layout
    of `schema`: 'lsst' as is; 'hsc3' as hscPipe 3.x (afw table version 0) wrote it, the
    dotted names of mosaicfit.io.src.SCHEMAS['hsc3'] with '_' for '.' on disk, 2-vector
    ``coord`` and ``centroid_sdss``, packed covariance ``centroid_sdss_err`` (xx, xy, yy)."""
    if schema == "lsst":
        return t
    if schema != "hsc3":
        raise MosaicError(f"unknown SRC schema {schema!r}; known: {', '.join(SCHEMAS)}")
    n = len(t)
    out = Table()
    out["id"] = t["id"]
    out["coord"] = np.column_stack([t["coord_ra"], t["coord_dec"]]).reshape(n, 2)
    out["parent"] = t["parent"]
    out["centroid_sdss"] = np.column_stack([t["base_SdssCentroid_x"],
                                            t["base_SdssCentroid_y"]]).reshape(n, 2)
    sx = np.asarray(t["base_SdssCentroid_xSigma"], float)
    sy = np.asarray(t["base_SdssCentroid_ySigma"], float)
    out["centroid_sdss_err"] = np.column_stack([sx ** 2, np.zeros(n), sy ** 2]).reshape(n, 3) \
        .astype(np.float32)
    out["centroid_sdss_flags"] = t["base_SdssCentroid_flag"]
    out["flux_psf"] = t["base_PsfFlux_flux"]
    out["flux_psf_err"] = t["base_PsfFlux_fluxSigma"]
    out["flux_psf_flags"] = t["base_PsfFlux_flag"]
    out["classification_extendedness"] = t["base_ClassificationExtendedness_value"]
    out["calib_psf_used"] = t["calib_psfUsed"]
    out["flags_pixel_saturated_any"] = t["base_PixelFlags_flag_saturated"]
    out["flags_pixel_saturated_center"] = t["base_PixelFlags_flag_saturatedCenter"]
    out.meta["afw_table_version"] = 0
    return out


def _reference_matches(sim):
    """{(visit, ccd): (SRC rows, refcat rows, separation in radians)}: the matches the
    single-frame astrometry made: the detections of reference stars whose measured position
    (through the true WCS) lies within 1" (meas_astrom's catalogMatchDist) of the reference
    position propagated to the visit's epoch."""
    ref = sim.refcat
    rrow = {int(i): k for k, i in enumerate(np.asarray(ref["id"]))}
    det = sim.detections
    tid = np.asarray(det["truth_id"], np.int64)
    did = np.asarray(det["id"], np.int64)
    key = np.asarray(det["visit"], np.int64) * 1000 + np.asarray(det["ccd"], np.int64)
    out = {}
    for (v, c), cat in sim.catalogs.items():
        m = key == v * 1000 + c
        ids = np.asarray(cat["id"], np.int64)
        truth_of = dict(zip(did[m], tid[m]))
        src_rows, ref_rows = [], []
        for k, i in enumerate(ids):
            r = rrow.get(int(truth_of.get(int(i), -1)), -1)
            if r >= 0:
                src_rows.append(k)
                ref_rows.append(r)
        src_rows, ref_rows = np.array(src_rows, int), np.array(ref_rows, int)
        if not len(src_rows):
            out[(v, c)] = (src_rows, ref_rows, np.zeros(0))
            continue
        mjd = sim.truth.visits[v]["mjd"]
        dt = (mjd - np.asarray(ref["epoch"])[ref_rows]) / DAYS_PER_YEAR
        dec0 = np.asarray(ref["coord_dec"])[ref_rows]
        dec = dec0 + np.asarray(ref["pm_dec"])[ref_rows] * dt
        ra = np.asarray(ref["coord_ra"])[ref_rows] + \
            np.asarray(ref["pm_ra"])[ref_rows] * dt / np.cos(dec0)
        mra, mdec = sim.truth.pixel_to_sky(v, c, np.asarray(cat["base_SdssCentroid_x"])[src_rows],
                                           np.asarray(cat["base_SdssCentroid_y"])[src_rows])
        a = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)
        mra, mdec = np.radians(mra), np.radians(mdec)
        b = np.stack([np.cos(mdec) * np.cos(mra), np.cos(mdec) * np.sin(mra), np.sin(mdec)], -1)
        sep = 2 * np.arcsin(np.clip(np.linalg.norm(a - b, axis=1) / 2, 0, 1))
        ok = sep < np.radians(1.0 / 3600)
        out[(v, c)] = (src_rows[ok], ref_rows[ok], sep[ok])
    return out


def _match_metadata(sim, key):
    """The match metadata of meas_astrom's createMatchMetadata for a CCD."""
    d = sim.truth.camera[key[1]]
    wh = sim.wcs_headers[key]
    cx, cy = (d.width - 1) / 2.0, (d.height - 1) / 2.0
    ra, dec = sip_pixel_to_sky(wh, np.array([cx, 0, 0, d.width - 1, d.width - 1]),
                               np.array([cy, 0, d.height - 1, 0, d.height - 1]))
    v = np.stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                  np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))], -1)
    radius = np.degrees(np.max(np.arccos(np.clip(v[1:] @ v[0], -1, 1))))
    return {"RA": float(ra[0]), "DEC": float(dec[0]), "RADIUS": float(radius), "SMATCHV": 1,
            "FILTER": sim.config.filter}


def _full_reference_rows(sim, rows):
    """Reference records as the single-frame astrometry loaded them: the catalogue as is
    (LSST names, nJy) or, for hscPipe 3.x, id, a 2-vector coord and <band>_flux /
    <band>_fluxSigma in Jy without position errors or proper motions (astrometry.net)."""
    ref = sim.refcat[rows]
    if sim.config.schema == "lsst":
        t = Table(ref, copy=True)
        for name in t.colnames:
            if name.endswith(("_flux", "_fluxErr")):
                t[name].meta["TUNIT"] = "nJy"
        t.meta.clear()
        return t
    t = Table()
    t["id"] = ref["id"]
    t["coord"] = np.column_stack([ref["coord_ra"], ref["coord_dec"]]).reshape(len(ref), 2)
    for b in ("g", "r", "i", "z", "y"):
        if f"{b}_flux" in ref.colnames:
            t[f"{b}_flux"] = np.asarray(ref[f"{b}_flux"]) / 1e9
            t[f"{b}_flux"].meta["TUNIT"] = "Jy"
            t[f"{b}_fluxSigma"] = np.asarray(ref[f"{b}_fluxErr"]) / 1e9
            t[f"{b}_fluxSigma"].meta["TUNIT"] = "Jy"
    return t


def _write_match_files(sim, repo, did, key, src, matches, seed):
    src_rows, ref_rows, sep = matches[key]
    meta = _match_metadata(sim, key)
    ref_ids = np.asarray(sim.refcat["id"], np.int64)[ref_rows]
    src_ids = np.asarray(src["id"], np.int64)[src_rows]
    version = 0 if sim.config.schema == "hsc3" else 1
    n = 0
    todo = sim.config.match_files
    if "srcMatch" in todo:
        write_match_file(repo.path("srcMatch", **did), ref_ids, src_ids, sep, meta, version)
        n += 1
    if "srcMatchFull" in todo:
        t = full_match_table(_full_reference_rows(sim, ref_rows),
                             src_in_schema(src[src_rows], sim.config.schema), sep)
        write_full_match_file(repo.path("srcMatchFull", **did), t,
                              dict(meta, REFCAT=REFCAT_NAME), version=version)
        n += 1
    if "icMatch" in todo:
        # ICSRC: the bright sources of the calibration step, measured again (centroids differ
        # by a few hundredths of a pixel) and numbered on their own: its ids are not SRC's
        rng = np.random.default_rng(seed + 7)
        snr = np.asarray(src["base_PsfFlux_flux"]) / np.asarray(src["base_PsfFlux_fluxSigma"])
        ic_rows = np.nonzero(snr > ICSRC_MIN_SNR)[0]
        ic = src[ic_rows]
        ic["id"] = (np.asarray(ic["id"]) >> 32 << 32) + np.arange(1, len(ic) + 1)
        for c in ("base_SdssCentroid_x", "base_SdssCentroid_y"):
            ic[c] = np.asarray(ic[c]) + rng.normal(0, 0.02, len(ic))
        write_src(repo.path("icSrc", **did), src_in_schema(ic, sim.config.schema))
        pos = {int(r): k for k, r in enumerate(ic_rows)}
        keep = np.array([int(r) in pos for r in src_rows], bool)
        ic_ids = np.asarray(ic["id"], np.int64)[[pos[int(r)] for r in src_rows[keep]]]
        write_match_file(repo.path("icMatch", **did), ref_ids[keep], ic_ids, sep[keep], meta,
                         version)
        n += 2
    return n


def write_repository(sim, root, rerun="sim", jobs=1):
    """Write the SimulatedTract `sim` as the data repository ROOT (registry, rerun RERUN with
    CORR and SRC files, ref_cats/, truth/). Returns the number of files written."""
    os.makedirs(root, exist_ok=True)
    Registry.create(os.path.join(root, "registry.sqlite3"), _registry_rows(sim))
    repo = Repository(root, rerun)
    keys = sorted(set(sim.catalogs) | set(sim.missing))
    keys = [k for k in keys if k in sim.catalogs]
    seeds = {k: (sim.config.seed * 1000003 + k[0] * 211 + k[1]) for k in keys}
    bad = [m for m in sim.config.match_files if m not in MATCH_FILES]
    if bad:
        raise MosaicError(f"unknown match file kind {bad[0]!r}; known: {', '.join(MATCH_FILES)}")
    if sim.config.schema not in SCHEMAS:
        raise MosaicError(f"unknown SRC schema {sim.config.schema!r}; known: {', '.join(SCHEMAS)}")
    matches = _reference_matches(sim) if sim.config.match_files else None
    n = 0
    if jobs > 1:
        with ThreadPoolExecutor(jobs) as ex:
            n = sum(ex.map(lambda k: _write_one(sim, repo, k, sim.config.images, seeds[k],
                                                matches), keys))
    else:
        for k in keys:
            n += _write_one(sim, repo, k, sim.config.images, seeds[k], matches)
    write_refcat(repo.refcat_dir(REFCAT_NAME), sim.refcat)
    tdir = os.path.join(root, "truth")
    os.makedirs(tdir, exist_ok=True)
    stars = sim.stars.copy()
    stars["ra"].unit = stars["dec"].unit = "deg"
    stars["pm_ra"].unit = stars["pm_dec"].unit = "mas/yr"
    write_fits(fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(stars)]),
               os.path.join(tdir, "stars.fits"))
    write_fits(fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(sim.detections)]),
               os.path.join(tdir, "detections.fits"))
    write_text(sim.truth.to_json(), os.path.join(tdir, "model.json"))
    return n + 3


def simulate_repository(root, rerun="sim", jobs=1, config=None, **kw):
    """Simulate a tract and write it as a data repository at `root`; returns the
    :class:`SimulatedTract`."""
    t0 = time.time()
    sim = make_tract(config, **kw)
    sim.timing = {"simulate": time.time() - t0}
    t1 = time.time()
    write_repository(sim, root, rerun, jobs=jobs)
    sim.timing["write"] = time.time() - t1
    return sim


