"""Observing the simulated sky: each visit's detections on each CCD as the single-frame
pipeline measures them (centroid and flux noise, blends, saturation, cosmic rays, moving
objects, PSF stars), their SRC tables and the single-frame TAN-SIP WCS of each CCD."""
import dataclasses
import os

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .. import MosaicError
from ..fit.matching import friends_of_friends
from ..model.camera import hsc
from ..model.colorterms import DEFAULT_BAND_FOR_FILTER
from ..model.sip import SipModel, cards_text, fit_tan_sip
from ..model.sky import sky_to_tangent, tangent_to_sky
from ..units import MAS_RAD
from .config import (BLEND, CLEAN, COSMIC_RAY, DISPLACED, DOUBLED, MOVING, PIXEL_ARCSEC,
                     SATURATED, SATURATION_ADU, SimConfig)
from .effects import draw_effects, effect_rng, parse_effects, wcs_error_tangent
from .sky import colour_gi, draw_sky, make_refcat, positions_at
from .truth import TruthModel, draw_params

__all__ = ["SimulatedTract", "make_tract", "src_table"]


def _observe_visit(cfg, rng, truth, stars, v, ccd_list, erng=None):
    """Return a list of per-CCD source dicts and truth rows for visit `v`."""
    camera = truth.camera
    ra, dec = positions_at(stars, v["mjd"])
    xi, eta = sky_to_tangent(ra, dec, v["ra"], v["dec"])
    near = np.hypot(xi, eta) < np.radians(0.8)          # the FoV is 0.75 deg in radius
    idx_near = np.nonzero(near)[0]
    xi, eta = xi[near], eta[near]
    if truth.displaces_images:
        # the atmosphere moves each image: refraction by colour (dcr), turbulence
        xi, eta = truth.apparent_tangent(v["visit"], xi, eta, colour_gi(stars[idx_near]))
    X, Y = camera.tangent_plane_to_field_angle(xi, eta, v["sky_angle"])
    X, Y = truth._unperturb(v, X, Y)
    fx, fy = camera.field_angle_to_focal_plane(X, Y)

    sigma_psf = v["seeing_fwhm"] / 2.3548 / PIXEL_ARCSEC     # pixels
    n_eff = 4 * np.pi * sigma_psf ** 2
    sky_var = v["sky_adu"] / v["gain"]                       # ADU^2 per pixel

    # unresolved blends: objects closer than ~0.8 FWHM merge into one detection
    tan_arcsec = np.stack([xi, eta], axis=-1) * (180 / np.pi * 3600)
    group = friends_of_friends(tan_arcsec, 0.8 * v["seeing_fwhm"])

    out = []
    truth_rows = []
    for ccd in ccd_list:
        px, py = truth._fp_to_ccd(ccd, fx, fy)
        d = camera[ccd]
        on = (px >= -0.5) & (px < d.width - 0.5) & (py >= -0.5) & (py < d.height - 0.5)
        sel = np.nonzero(on)[0]
        out.append(_measure_ccd(cfg, rng, truth, v, ccd, stars, idx_near[sel], px[sel], py[sel],
                                group[sel], sigma_psf, n_eff, sky_var, truth_rows, erng))
    return out, truth_rows


def _misestimated_errors(truth, erng, v, perr):
    """centroid-errors: the true centroid scatter has a floor (PSF-model and pixel-response
    errors) of a few mas that the reported errors lack; these are the photon-noise errors
    scaled per visit and by a log-normal factor per detection. Returns (true, reported)."""
    e = truth.effects["centroid-errors"]
    floor_px = e["floor_mas"] / 1000.0 / PIXEL_ARCSEC
    true = np.sqrt(perr ** 2 + floor_px ** 2)
    reported = perr * v["centroid_err_scale"] * np.exp(erng.normal(0, e["scatter"], len(perr)))
    return true, reported


def _doubled_images(truth, erng, v, ccd, x, y, candidates):
    """doubled: a tracking fault doubles the images of the visit: a fraction of its
    detections is measured 50-300 mas away along one direction on the sky. Returns the
    shift in pixels (dx, dy) and its size in mas (0 where none)."""
    e = truth.effects["doubled"]
    n = len(x)
    hit = candidates & (erng.uniform(size=n) < e["fraction"])
    mas = np.where(hit, erng.uniform(*e["shift_mas"], n), 0.0)
    pa = np.radians(e["direction_deg"])
    dxi, deta = mas * np.sin(pa) * MAS_RAD, mas * np.cos(pa) * MAS_RAD
    # pixels from the tangent-plane shift through the local Jacobian of the true mapping
    x0, y0 = truth.pixel_to_tangent(v["visit"], ccd, x, y)
    ax, ay = truth.pixel_to_tangent(v["visit"], ccd, x + 1.0, y)
    bx, by = truth.pixel_to_tangent(v["visit"], ccd, x, y + 1.0)
    a, b, c, d = ax - x0, bx - x0, ay - y0, by - y0
    det = a * d - b * c
    return (d * dxi - b * deta) / det, (-c * dxi + a * deta) / det, mas


def _measure_ccd(cfg, rng, truth, v, ccd, stars, idx, px, py, group, sigma_psf, n_eff, sky_var,
                 truth_rows, erng=None):
    visit = v["visit"]
    zp = truth.zeropoint(visit, ccd, px, py) if len(idx) else np.zeros(0)
    mag = np.asarray(stars["mag"])[idx]
    is_star = np.asarray(stars["is_star"])[idx]
    size_px = np.asarray(stars["size"])[idx] / PIXEL_ARCSEC
    flux_true = 10 ** (-0.4 * (mag - zp))          # total flux in ADU
    # PSF flux of a Gaussian galaxy: F 2 s_p^2 / (2 s_p^2 + r^2); seeing dependent
    psf_frac = 2 * sigma_psf ** 2 / (2 * sigma_psf ** 2 + size_px ** 2)
    flux_psf_true = flux_true * psf_frac
    outlier = np.zeros(len(idx), dtype=np.int16)

    # merge unresolved blends: flux-weighted centroid, summed flux, id of the brightest
    x_meas_true, y_meas_true, f_meas_true = px.copy(), py.copy(), flux_psf_true.copy()
    keep = np.ones(len(idx), bool)
    if len(idx):
        order = np.lexsort((-flux_psf_true, group))
        g = group[order]
        starts = np.r_[0, np.nonzero(np.diff(g))[0] + 1]
        sizes = np.diff(np.r_[starts, len(g)])
        for s0, n in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = order[s0:s0 + n]
            w = flux_psf_true[members]
            head = members[0]
            x_meas_true[head] = np.sum(w * px[members]) / w.sum()
            y_meas_true[head] = np.sum(w * py[members]) / w.sum()
            f_meas_true[head] = w.sum()
            keep[members[1:]] = False
            if w[1:].sum() > 0.01 * w[0]:
                outlier[head] = BLEND

    # noise and detection
    fvar = np.maximum(f_meas_true, 0) / v["gain"] + n_eff * sky_var + (0.003 * f_meas_true) ** 2
    ferr = np.sqrt(fvar)
    snr = f_meas_true / ferr
    detected = keep & (snr + rng.normal(0, 1, len(idx)) > 5.0)
    size_eff = np.sqrt(sigma_psf ** 2 + size_px ** 2)
    # centroid error: sqrt(2) sigma / SNR for a background-limited Gaussian, plus a floor
    perr = np.sqrt((np.sqrt(2) * size_eff / np.maximum(snr, 1e-3)) ** 2 + 0.003 ** 2)
    perr_true = perr_reported = perr
    if truth.has("centroid-errors"):
        perr_true, perr_reported = _misestimated_errors(truth, erng["centroid-errors"], v, perr)
    x_meas = x_meas_true + rng.normal(0, 1, len(idx)) * perr_true
    y_meas = y_meas_true + rng.normal(0, 1, len(idx)) * perr_true
    f_meas = f_meas_true + rng.normal(0, 1, len(idx)) * ferr

    # saturation: the peak over the limit; the flux is lost into bleed trails, centroid biased
    peak = f_meas_true / (2 * np.pi * size_eff ** 2)
    sat = peak > SATURATION_ADU
    f_meas[sat] = f_meas_true[sat] * rng.uniform(0.4, 0.9, sat.sum())
    x_meas[sat] += rng.normal(0, 0.3, sat.sum())
    y_meas[sat] += rng.normal(0, 0.3, sat.sum())
    outlier[sat] = SATURATED
    # displaced centroids (bad deblends, ghosts): 0.2%, 0.3-1.2" away
    disp = detected & ~sat & (rng.uniform(size=len(idx)) < 0.002)
    ang = rng.uniform(0, 2 * np.pi, disp.sum())
    dist = rng.uniform(0.3, 1.2, disp.sum()) / PIXEL_ARCSEC
    x_meas[disp] += dist * np.cos(ang)
    y_meas[disp] += dist * np.sin(ang)
    outlier[disp] = DISPLACED
    if truth.has("doubled") and visit == truth.effects["doubled"]["visit"]:
        ddx, ddy, doubled_mas = _doubled_images(truth, erng["doubled"], v, ccd, x_meas_true,
                                                y_meas_true, detected)
        x_meas += ddx
        y_meas += ddy
        outlier[(doubled_mas > 0) & (outlier == CLEAN)] = DOUBLED
    else:
        doubled_mas = np.zeros(len(idx))

    # star/galaxy separation: fails for faint compact objects
    m_obs = -2.5 * np.log10(np.maximum(f_meas, 1e-3)) + zp
    p_gal_as_star = 0.003 + 0.5 / (1 + np.exp(-(m_obs - 23.8) / 0.35)) * np.exp(-size_px / 4.0)
    p_star_as_gal = 0.005 + 0.3 / (1 + np.exp(-(m_obs - 24.3) / 0.3))
    u = rng.uniform(size=len(idx))
    ext = np.where(is_star, (u < p_star_as_gal), ~(u < p_gal_as_star)).astype(float)

    sel = np.nonzero(detected)[0]
    n_det = len(sel)
    # spurious point sources: cosmic rays (sharp, one visit) and moving objects
    n_cr = rng.poisson(3)
    n_mov = rng.poisson(0.3)
    n_extra = n_cr + n_mov
    d = truth.camera[ccd]
    ex_x = rng.uniform(0, d.width - 1, n_extra)
    ex_y = rng.uniform(0, d.height - 1, n_extra)
    ex_f = np.r_[10 ** rng.uniform(2.5, 3.8, n_cr),
                 10 ** (-0.4 * (rng.uniform(20, 24, n_mov) - (v["zp"])))]
    ex_ferr = np.sqrt(ex_f / v["gain"] + n_eff * sky_var)
    ex_perr = np.sqrt(2) * sigma_psf / (ex_f / ex_ferr)
    ex_perr_reported = ex_perr * v.get("centroid_err_scale", 1.0)

    n = n_det + n_extra
    rows = {
        "x": np.r_[x_meas[sel], ex_x], "y": np.r_[y_meas[sel], ex_y],
        "x_err": np.r_[perr_reported[sel], ex_perr_reported], "flux": np.r_[f_meas[sel], ex_f],
        "flux_err": np.r_[ferr[sel], ex_ferr],
        "ext": np.r_[ext[sel], (rng.uniform(size=n_extra) < 0.3).astype(float)],
        "sat": np.r_[sat[sel], np.zeros(n_extra, bool)],
    }
    # PSF stars: bright, unsaturated, isolated point sources, ~30 per CCD
    cand = np.nonzero(is_star[sel] & ~sat[sel] & (snr[sel] > 50) & (outlier[sel] == CLEAN))[0]
    psf_used = np.zeros(n, bool)
    psf_used[rng.permutation(cand)[:30]] = True

    ids = ((v["visit"] * 200 + ccd) << 32) + np.arange(1, n + 1, dtype=np.int64)
    truth_row = dict(
        visit=np.full(n, v["visit"], np.int32), ccd=np.full(n, ccd, np.int16), id=ids,
        truth_id=np.r_[np.asarray(stars["truth_id"])[idx[sel]], np.full(n_extra, -1)],
        x_true=np.r_[px[sel], ex_x], y_true=np.r_[py[sel], ex_y],
        instFlux_true=np.r_[flux_true[sel], ex_f],
        outlier=np.r_[outlier[sel], np.full(n_cr, COSMIC_RAY), np.full(n_mov, MOVING)].astype(np.int16))
    if truth.has("centroid-errors"):
        truth_row["x_err_true"] = np.r_[perr_true[sel], ex_perr]      # px, on both axes
    if truth.has("doubled"):
        truth_row["doubled_mas"] = np.r_[doubled_mas[sel], np.zeros(n_extra)]
    truth_rows.append(truth_row)
    return dict(visit=v["visit"], ccd=ccd, ids=ids, psf_used=psf_used, **rows)


def _add_displacements(truth, stars, star_row, v, truth_rows):
    """The truth of the atmosphere's displacement of each detection of a source in visit `v`
    (effects dcr, turbulence): columns dcr_dxi, dcr_deta, turb_dxi, turb_deta in mas (east,
    north in the visit's tangent plane; 0 for spurious detections), from the truth model at
    the source's true position."""
    for r in truth_rows:
        tid = r["truth_id"]
        m = np.nonzero(tid > 0)[0]
        s = stars[np.array([star_row[int(t)] for t in tid[m]], dtype=int)]
        for c in ("dcr_dxi", "dcr_deta", "turb_dxi", "turb_deta"):
            r[c] = np.zeros(len(tid))
        r["dcr_dxi"][m], r["dcr_deta"][m] = truth.dcr_offset(v["visit"], colour_gi(s))
        xi, eta = sky_to_tangent(*positions_at(s, v["mjd"]), v["ra"], v["dec"])
        r["turb_dxi"][m], r["turb_deta"][m] = truth.turbulence_tangent(v["visit"], xi, eta)


# ------------------------------------------------------------------------------------------
# The single-frame products: initial WCS, FLUXMAG0, SRC catalog, CORR header/image
# ------------------------------------------------------------------------------------------
def _single_frame_wcs(truth, rng, visit, ccd):
    """A TAN-SIP of order 4 fitted to the truth, then disturbed by a typical single-frame
    astrometric error: 0.1-1" offset, ~0.5" rotation across the CCD, ~1e-5 scale error; with
    the edge-wcs effect, the error of a whole visit's solution (~0.05" at the centre, ~1.5" at
    the edge) instead of the offset."""
    d = truth.camera[ccd]
    gx, gy = np.meshgrid(np.linspace(0, d.width - 1, 9), np.linspace(0, d.height - 1, 17))
    gx, gy = gx.ravel(), gy.ravel()
    xi, eta = truth.pixel_to_tangent(visit, ccd, gx, gy)
    off = rng.uniform(0.1, 1.0) * np.pi / 648000
    ang = rng.uniform(0, 2 * np.pi)
    rot = rng.normal(0, 2e-5)
    scl = rng.normal(0, 1e-5)
    cx, cy = np.mean(xi), np.mean(eta)
    if truth.has("edge-wcs"):
        exi, eeta = wcs_error_tangent(truth.visits[visit]["wcs_error"], xi, eta)
        xi2 = cx + (xi - cx) * (1 + scl) - (eta - cy) * rot + exi
        eta2 = cy + (eta - cy) * (1 + scl) + (xi - cx) * rot + eeta
    else:
        xi2 = cx + (xi - cx) * (1 + scl) - (eta - cy) * rot + off * np.cos(ang)
        eta2 = cy + (eta - cy) * (1 + scl) + (xi - cx) * rot + off * np.sin(ang)
    v = truth.visits[visit]
    ra, dec = tangent_to_sky(xi2, eta2, v["ra"], v["dec"])
    crpix = ((d.width + 1) / 2.0, (d.height + 1) / 2.0)
    ra_c, dec_c = tangent_to_sky(*_interp_centre(gx, gy, xi2, eta2, crpix), v["ra"], v["dec"])
    cards, model = fit_tan_sip(gx, gy, ra, dec, crpix, (float(ra_c), float(dec_c)), 4,
                               inverse_box=(-0.5, d.width - 0.5, -0.5, d.height - 0.5),
                               as_cards=True)
    # the header for the CORR, and its numbers (SipModel.from_header of that header gives
    # the same model: the cards hold the shortest repr of each number), to place the sources
    return fits.Header.fromstring(cards_text(cards)), model


def _interp_centre(gx, gy, xi, eta, crpix):
    # the grid is regular and contains the centre pixel up to interpolation: fit a quadratic
    u, w = gx - (crpix[0] - 1), gy - (crpix[1] - 1)
    M = np.stack([np.ones_like(u), u, w, u * u, u * w, w * w], axis=-1)
    return np.linalg.lstsq(M, xi, rcond=None)[0][0], np.linalg.lstsq(M, eta, rcond=None)[0][0]


def src_table(det, wcs_header):
    """The SRC catalog (afw schema, ``base_*`` names) of one CCD's simulated detections.

    Parameters
    ----------
    det : dict
        Detection arrays: ids, x, y (0-based pixels), x_err (pixels), flux, flux_err (counts),
        ext, psf_used, sat.
    wcs_header : header or SipModel
        The CCD's single-frame TAN-SIP WCS, which gives coord_ra, coord_dec (radians).

    Returns
    -------
    astropy.table.Table
        ``x_err`` is both centroid sigmas (the simulated errors are isotropic); a non-positive
        flux sets base_PsfFlux_flag.
    """
    n = len(det["x"])
    model = wcs_header if isinstance(wcs_header, SipModel) else SipModel.from_header(wcs_header)
    ra, dec = model.pixel_to_sky(det["x"], det["y"])
    # one Table of all columns (adding them one by one costs ~1.5 ms a CCD)
    t = Table({
        "id": det["ids"],
        "coord_ra": np.radians(ra),
        "coord_dec": np.radians(dec),
        "parent": np.zeros(n, np.int64),
        "base_SdssCentroid_x": det["x"],
        "base_SdssCentroid_y": det["y"],
        "base_SdssCentroid_xSigma": det["x_err"].astype(np.float32),
        "base_SdssCentroid_ySigma": det["x_err"].astype(np.float32),
        "base_PsfFlux_flux": det["flux"],
        "base_PsfFlux_fluxSigma": det["flux_err"],
        "base_ClassificationExtendedness_value": det["ext"],
        "calib_psfUsed": det["psf_used"],
        "base_PixelFlags_flag_saturated": det["sat"],
        "base_PixelFlags_flag_saturatedCenter": det["sat"],
        "base_SdssCentroid_flag": np.zeros(n, bool),
        "base_PsfFlux_flag": det["flux"] <= 0,
    })
    return t


class SimulatedTract:
    """The in-memory result of :func:`make_tract`: truth, inputs, and their writer."""

    def __init__(self, cfg, truth, stars, detections, catalogs, wcs_headers, fluxmag0, refcat,
                 missing):
        self.config = cfg
        self.truth = truth
        self.stars = stars                # Table
        self.detections = detections      # Table (truth of every detection)
        self.catalogs = catalogs          # {(visit, ccd): Table in the afw SRC schema}
        self.wcs_headers = wcs_headers    # {(visit, ccd): single-frame TAN-SIP header}
        self.fluxmag0 = fluxmag0          # {(visit, ccd): (FLUXMAG0, FLUXMAG0ERR)}
        self.refcat = refcat              # Table in the LSST reference-catalogue convention
        self.missing = missing            # {(visit, ccd): "src" | "calexp" | "both"}

    @property
    def visits(self):
        """Sorted visit numbers of the simulation."""
        return sorted(self.truth.visits)

    def summary_lines(self, root):
        """What was simulated (and written to `root`), as ``mosaicfit simulate`` prints it."""
        cfg = self.config
        n_src = len(self.catalogs) - sum(1 for k, w in self.missing.items()
                                         if w == "src" and k in self.catalogs)
        timing = getattr(self, "timing", {})
        lines = [f"simulated {len(self.visits)} visits x {len(cfg.ccds)} CCDs (visits "
                 f"{self.visits[0]}..{self.visits[-1]}:{cfg.visit_step}, {cfg.filter}) in "
                 f"{timing.get('simulate', 0.0):.1f} s, wrote in {timing.get('write', 0.0):.1f} s "
                 f"to {os.path.abspath(root)}",
                 f"  {len(self.detections)} detections in {n_src} SRC catalogs; "
                 f"{int(np.sum(self.stars['is_star']))} stars, "
                 f"{int(np.sum(~self.stars['is_star']))} galaxies; {len(self.refcat)} "
                 "reference stars"]
        if cfg.layout == "wide":
            lines.append(f"  layout wide: a strip of {len(self.visits)} pointings "
                         f"{cfg.wide_step_deg:g} deg apart heading east through ({cfg.ra:g}, "
                         f"{cfg.dec:g}), scattered over {cfg.wide_width_deg:g} deg across it")
        if self.missing:
            lines.append(f"  missing on purpose (dead or failed CCDs): {len(self.missing)} "
                         "(visit, ccd) inputs")
        if cfg.effects:
            lines.append("  effects: " + ", ".join(self._effect_summary()))
        return lines

    def _effect_summary(self):
        t = self.truth
        vis = [t.visits[v] for v in self.visits]
        out = []
        for e in self.config.effects:
            if e == "edge-wcs":
                out.append(f"edge-wcs (~{self.config.wcs_edge_arcsec:g}\" at the edge)")
            elif e == "dcr":
                x = [v["observing"]["airmass"] for v in vis]
                out.append(f"dcr (k = {t.effects['dcr']['k_mas_per_mag']:.1f} mas/mag g-i, "
                           f"airmass {min(x):.2f}-{max(x):.2f})")
            elif e == "doubled":
                n = int(np.sum(np.asarray(self.detections["outlier"]) == DOUBLED))
                out.append(f"doubled (visit {t.effects['doubled']['visit']}, {n} detections)")
            elif e == "centroid-errors":
                s = [v["centroid_err_scale"] for v in vis]
                out.append(f"centroid-errors (scale {min(s):.2f}-{max(s):.2f})")
            elif e == "turbulence":
                r = [v["turbulence"]["rms_mas"] for v in vis]
                out.append(f"turbulence ({min(r):.0f}-{max(r):.0f} mas rms)")
            elif e == "clouds":
                c = t.effects["clouds"]
                out.append(f"clouds (visit {c['visit']}, up to {c['depth_mag']:.2f} mag)")
        return out


def make_tract(config=None, **kw):
    """Simulate a tract in memory. Keywords override fields of :class:`SimConfig`."""
    cfg = dataclasses.replace(config or SimConfig(), **kw)
    if cfg.filter not in DEFAULT_BAND_FOR_FILTER:
        raise MosaicError(f"unknown HSC filter {cfg.filter!r}; known: "
                          + ", ".join(DEFAULT_BAND_FOR_FILTER))
    if cfg.visits < 1:
        raise MosaicError(f"--visits must be at least 1, not {cfg.visits}")
    if cfg.layout not in ("deep", "wide"):
        raise MosaicError(f"unknown layout {cfg.layout!r}: deep or wide")
    if cfg.layout == "wide" and not (cfg.wide_step_deg > 0 and cfg.wide_width_deg >= 0):
        raise MosaicError(f"--wide-step must be > 0 and --wide-width >= 0, not "
                          f"{cfg.wide_step_deg} and {cfg.wide_width_deg}")
    camera = hsc()
    bad = [c for c in cfg.ccds if c not in camera.science_ccds]
    if bad:
        raise MosaicError(f"no science CCD {bad[0]} in {camera.name} (0..103)")
    effects = cfg.effects if not isinstance(cfg.effects, str) else (cfg.effects,)
    effects = parse_effects(",".join(effects)) if effects else ()
    cfg = dataclasses.replace(cfg, effects=effects)
    rng = np.random.default_rng(cfg.seed)
    truth = TruthModel(draw_effects(cfg, draw_params(cfg, rng, camera)), camera)
    erng = {e: effect_rng(cfg.seed, e) for e in effects}   # observation-time draws per effect
    vis = [truth.visits[v] for v in sorted(truth.visits)]
    mean_mjd = float(np.mean([v["mjd"] for v in vis]))
    stars = draw_sky(cfg, rng, mean_mjd)

    live = [c for c in cfg.ccds if c not in cfg.dead_ccds]
    per_ccd = {}
    truth_rows = []
    star_row = {int(t): i for i, t in enumerate(np.asarray(stars["truth_id"]))}
    for v in vis:
        dets, rows = _observe_visit(cfg, rng, truth, stars, v, live, erng)
        if truth.displaces_images:
            _add_displacements(truth, stars, star_row, v, rows)
        truth_rows += rows
        for det in dets:
            per_ccd[(v["visit"], det["ccd"])] = det
    detections = Table({k: np.concatenate([r[k] for r in truth_rows]) for k in truth_rows[0]}) \
        if truth_rows else Table()

    wcs_headers, catalogs, fluxmag0 = {}, {}, {}
    for key, det in per_ccd.items():
        wcs_headers[key], model = _single_frame_wcs(truth, rng, *key)
        catalogs[key] = src_table(det, model)
        # single-frame photometric calibration: a few per cent off the truth at the CCD centre
        d = camera[key[1]]
        zp = truth.zeropoint(key[0], key[1], (d.width - 1) / 2.0, (d.height - 1) / 2.0)
        fluxmag0[key] = (float(10 ** (0.4 * (zp + rng.normal(0, 0.02))) ), float(10 ** (0.4 * zp) * 0.01))
    missing = {}
    keys = sorted(per_ccd)
    n_fail = int(round(cfg.failed_fraction * len(keys)))
    for i in rng.permutation(len(keys))[:n_fail]:
        missing[keys[i]] = rng.choice(["src", "calexp"])
    for v in vis:
        for c in cfg.dead_ccds:
            if c in cfg.ccds:
                missing[(v["visit"], c)] = "both"
    refcat = make_refcat(cfg, rng, stars)
    return SimulatedTract(cfg, truth, stars, detections, catalogs, wcs_headers, fluxmag0, refcat,
                          missing)
