"""The truth of a simulated tract: the true pixel -> sky mapping and photometric calibration
of every (visit, ccd) (:class:`TruthModel`), read back from ``ROOT/truth`` (:class:`Truth`),
and the accuracy of the single-frame inputs and of the mosaic's products against it."""
import json
import os

import numpy as np
from astropy.table import Table

from .. import MosaicError
from ..io.corr import read_corr
from ..io.layout import Repository
from ..io.wcsfile import read_wcs_header
from ..model.camera import hsc
from ..model.fluxcorr import read_fcr
from ..model.sip import SipModel
from ..model.sky import sky_to_tangent, tangent_to_sky
from ..units import MAS_RAD, RAD_MAS
from .config import CLEAN, REF_EPOCH_MJD
from .effects import bilinear, von_karman_field, wcs_error_tangent
from .sky import colour_gi, positions_at, strip_to_sky

__all__ = ["TruthModel", "Truth", "draw_params", "evaluate_inputs", "evaluate_outputs",
           "FIELD_SCALE"]


# ------------------------------------------------------------------------------------------
# The truth model
# ------------------------------------------------------------------------------------------
class TruthModel:
    """The true pixel -> sky mapping and photometric calibration of every (visit, CCD).

    pixel (x, y) -> focal plane (camera placement + per-CCD offset dx, dy [mm] and rotation)
    -> field angle (camera distortion) -> per-visit perturbation F(X, Y) (scale, rotation,
    shear, quadratic terms) -> gnomonic plane about the boresight (sky-angle convention of the
    camera) -> (ra, dec).

    This mapping (:meth:`pixel_to_sky`) is the smooth one a calibration can recover: that of a
    source of the reference colour through an atmosphere without turbulence. With the effects
    ``dcr`` and ``turbulence`` (``params['effects']``), the image of a source is displaced
    from it in the visit's tangent plane by :meth:`dcr_offset` (its colour) and
    :meth:`turbulence_offset` (its position): :meth:`star_sky_to_pixel` is where a source's
    image truly lands, :meth:`star_pixel_to_sky` its inverse. Displacements are (dxi, deta)
    in mas, east and north in the visit's tangent plane (RA cos Dec and Dec to 1e-4).

    Photometry: m_true = -2.5 log10(instFlux) + zeropoint(visit, ccd, x, y) with
    zeropoint = zp[visit] - cloud_visit(X, Y) - illum(X, Y) - dmag[ccd] - 2.5 log10 J(x, y),
    J the true pixel area relative to that at the optical axis.
    """

    def __init__(self, params, camera=None):
        self.params = params
        self.camera = camera or hsc()
        self.visits = {int(v["visit"]): v for v in params["visits"]}
        self.ccds = {int(c): v for c, v in params["ccds"].items()}
        self.effects = params.get("effects", {})
        self._turbulence = {}    # visit -> (dxi, deta) grids, the last few visits
        self._axis_area = {}     # (visit, ccd, h) -> pixel area at the optical axis

    def has(self, effect):
        """Whether the simulation has `effect` (one of sim.effects.EFFECTS) switched on."""
        return effect in self.effects

    @property
    def displaces_images(self):
        """Whether images are displaced from the smooth mapping (effect dcr or turbulence on)."""
        return self.has("dcr") or self.has("turbulence")

    # -- persistence ---------------------------------------------------------------------------
    def to_json(self):
        """The truth parameters as JSON text (``truth/model.json``)."""
        return json.dumps(self.params, indent=1)

    @classmethod
    def load(cls, root):
        """The TruthModel of ``ROOT/truth/model.json``; MosaicError if it cannot be read."""
        path = os.path.join(root, "truth", "model.json")
        try:
            with open(path) as f:
                return cls(json.load(f))
        except (OSError, ValueError) as e:
            raise MosaicError(f"{path}: cannot read the simulation truth: {e}") from None

    # -- astrometry ----------------------------------------------------------------------------
    def _ccd_to_fp(self, ccd, x, y):
        c = self.ccds[int(ccd)]
        fx, fy = self.camera.pixel_to_focal_plane(ccd, x, y)
        d = self.camera[ccd]
        ox, oy = d.offset_mm
        th = c["rot_rad"]  # rotation of the CCD about its own centre
        rx, ry = fx - ox, fy - oy
        return (ox + c["dx_mm"] + rx - th * ry, oy + c["dy_mm"] + ry + th * rx)

    def _fp_to_ccd(self, ccd, fx, fy):
        c = self.ccds[int(ccd)]
        d = self.camera[ccd]
        ox, oy = d.offset_mm
        rx, ry = fx - ox - c["dx_mm"], fy - oy - c["dy_mm"]
        th = c["rot_rad"]
        den = 1.0 + th * th
        return self.camera.focal_plane_to_pixel(ccd, ox + (rx + th * ry) / den,
                                                oy + (ry - th * rx) / den)

    @staticmethod
    def _perturb(v, X, Y):
        L = v["linear"]
        Q = v["quadratic"]       # [[x: c20, c11, c02], [y: c20, c11, c02]] per radian
        return (X + L[0][0] * X + L[0][1] * Y + Q[0][0] * X * X + Q[0][1] * X * Y + Q[0][2] * Y * Y,
                Y + L[1][0] * X + L[1][1] * Y + Q[1][0] * X * X + Q[1][1] * X * Y + Q[1][2] * Y * Y)

    def _unperturb(self, v, Xp, Yp):
        X, Y = np.array(Xp, dtype=float), np.array(Yp, dtype=float)
        for _ in range(20):   # fixed point: the perturbation is ~1e-3 of the identity
            fx, fy = self._perturb(v, X, Y)
            dX, dY = Xp - fx, Yp - fy
            X, Y = X + dX, Y + dY
            if np.max(np.abs(dX), initial=0) < 1e-16 and np.max(np.abs(dY), initial=0) < 1e-16:
                break
        return X, Y

    def pixel_to_tangent(self, visit, ccd, x, y):
        """(xi, eta) in radians about the visit's boresight."""
        v = self.visits[int(visit)]
        X, Y = self.camera.focal_plane_to_field_angle(*self._ccd_to_fp(ccd, x, y))
        X, Y = self._perturb(v, X, Y)
        return self.camera.field_angle_to_tangent_plane(X, Y, v["sky_angle"])

    def pixel_to_sky(self, visit, ccd, x, y):
        """True (ra, dec) in degrees of 0-based pixel (x, y) of (visit, ccd)."""
        v = self.visits[int(visit)]
        xi, eta = self.pixel_to_tangent(visit, ccd, x, y)
        return tangent_to_sky(xi, eta, v["ra"], v["dec"])

    def sky_to_pixel(self, visit, ccd, ra, dec):
        """True 0-based pixel of (ra, dec), degrees, in (visit, ccd): inverse of :meth:`pixel_to_sky`."""
        v = self.visits[int(visit)]
        xi, eta = sky_to_tangent(ra, dec, v["ra"], v["dec"])
        X, Y = self.camera.tangent_plane_to_field_angle(xi, eta, v["sky_angle"])
        X, Y = self._unperturb(v, X, Y)
        return self._fp_to_ccd(ccd, *self.camera.field_angle_to_focal_plane(X, Y))

    # -- the atmosphere and the single-frame WCS (effects) ---------------------------------------
    def dcr_offset(self, visit, colour):
        """(dxi, deta) mas: differential chromatic refraction of a source of PS1 g-i `colour`
        in `visit`, k tan(z) (colour - colour_ref) towards the zenith (k < 0: blue sources
        move towards it); zero without the dcr effect."""
        colour = np.asarray(colour, float)
        if not self.has("dcr"):
            return np.zeros_like(colour), np.zeros_like(colour)
        d = self.effects["dcr"]
        o = self.visits[int(visit)]["observing"]
        shift = d["k_mas_per_mag"] * np.tan(np.radians(o["zenith_distance_deg"])) * \
            (colour - d["colour_ref"])
        q = np.radians(o["parallactic_deg"])
        return shift * np.sin(q), shift * np.cos(q)

    def _turbulence_grids(self, visit):
        if visit not in self._turbulence:
            t = self.visits[visit]["turbulence"]
            g = self.effects["turbulence"]
            if len(self._turbulence) >= 4:
                self._turbulence.pop(next(iter(self._turbulence)))
            self._turbulence[visit] = von_karman_field(
                t["seed"], t["rms_mas"], t["outer_scale_arcmin"], t["b_fraction"],
                g["step_arcmin"], g["grid"])
        return self._turbulence[visit]

    def turbulence_tangent(self, visit, xi, eta):
        """(dxi, deta) mas of the turbulent field of `visit` at tangent-plane position (xi,
        eta) radians about the boresight; zero without the turbulence effect."""
        xi, eta = np.asarray(xi, float), np.asarray(eta, float)
        if not self.has("turbulence"):
            return np.zeros_like(xi), np.zeros_like(eta)
        gx, gy = self._turbulence_grids(int(visit))
        step = self.effects["turbulence"]["step_arcmin"]
        u, w = np.degrees(xi) * 60.0, np.degrees(eta) * 60.0
        return (bilinear(gx, step, u, w).astype(float), bilinear(gy, step, u, w).astype(float))

    def turbulence_offset(self, visit, ra, dec):
        """(dxi, deta) mas of the turbulent field of `visit` at sky position (ra, dec) deg."""
        v = self.visits[int(visit)]
        return self.turbulence_tangent(visit, *sky_to_tangent(ra, dec, v["ra"], v["dec"]))

    def apparent_tangent(self, visit, xi, eta, colour):
        """Where the atmosphere puts the image of a source of `colour` at true tangent-plane
        position (xi, eta) radians: the position plus its DCR and turbulence offsets."""
        a, b = self.dcr_offset(visit, colour)
        c, d = self.turbulence_tangent(visit, xi, eta)
        return xi + (a + c) * MAS_RAD, eta + (b + d) * MAS_RAD

    def star_sky_to_pixel(self, visit, ccd, ra, dec, colour=None):
        """The true pixel position of the image of a source at (ra, dec) deg of g-i `colour`
        (None: the reference colour), DCR and turbulence included."""
        v = self.visits[int(visit)]
        colour = self._colour(colour, ra)
        xi, eta = self.apparent_tangent(visit, *sky_to_tangent(ra, dec, v["ra"], v["dec"]),
                                        colour)
        return self.sky_to_pixel(visit, ccd, *tangent_to_sky(xi, eta, v["ra"], v["dec"]))

    def star_pixel_to_sky(self, visit, ccd, x, y, colour=None, turbulence=True):
        """The true (ra, dec) deg of a source of g-i `colour` (None: the reference colour)
        whose image is at pixel (x, y): the smooth mapping less the source's DCR offset and
        (`turbulence`) the turbulent one."""
        v = self.visits[int(visit)]
        xi_a, eta_a = self.pixel_to_tangent(visit, ccd, x, y)
        a, b = self.dcr_offset(visit, self._colour(colour, xi_a))
        xi, eta = xi_a - a * MAS_RAD, eta_a - b * MAS_RAD
        if turbulence and self.has("turbulence"):
            x0, e0 = xi, eta
            for _ in range(3):       # the field is evaluated at the true position
                c, d = self.turbulence_tangent(visit, xi, eta)
                xi, eta = x0 - c * MAS_RAD, e0 - d * MAS_RAD
        return tangent_to_sky(xi, eta, v["ra"], v["dec"])

    def _colour(self, colour, like):
        if colour is None:
            return np.full(np.shape(like), self.effects.get("dcr", {}).get("colour_ref", 0.0))
        return np.broadcast_to(np.asarray(colour, float), np.shape(like))

    def single_frame_wcs_error(self, visit, ccd, x, y):
        """(dxi, deta) mas: the error the edge-wcs effect gives the single-frame (CORR) WCS at
        pixel (x, y), before its TAN-SIP fit; zero without the effect."""
        xi, eta = self.pixel_to_tangent(visit, ccd, x, y)
        if not self.has("edge-wcs"):
            return np.zeros_like(xi), np.zeros_like(eta)
        a, b = wcs_error_tangent(self.visits[int(visit)]["wcs_error"], xi, eta)
        return a * RAD_MAS, b * RAD_MAS

    def area_ratio(self, visit, ccd, x, y, h=1.0):
        """J: true pixel area at (x, y) over the pixel area at the optical axis."""
        def area(cx, cy, cc):
            a = self.pixel_to_tangent(visit, cc, cx + h, cy)
            b = self.pixel_to_tangent(visit, cc, cx - h, cy)
            c = self.pixel_to_tangent(visit, cc, cx, cy + h)
            d = self.pixel_to_tangent(visit, cc, cx, cy - h)
            return np.abs((a[0] - b[0]) * (c[1] - d[1]) - (a[1] - b[1]) * (c[0] - d[0])) / (4 * h * h)
        # the optical axis seen from a CCD without offsets: the axis has no CCD of its own
        key = (int(visit), int(ccd), float(h))
        if key not in self._axis_area:        # the same number each time: computed once
            ax, ay = self.camera.focal_plane_to_pixel(ccd, 0.0, 0.0)
            self._axis_area[key] = area(ax, ay, ccd)
        return area(np.asarray(x, float), np.asarray(y, float), ccd) / self._axis_area[key]

    # -- photometry ----------------------------------------------------------------------------
    def field_angle(self, visit, ccd, x, y):
        """True field angle (X, Y) in radians of 0-based pixel (x, y) of `ccd`.

        With the CCD's true offsets, before the visit's perturbation (`visit` is unused): the frame
        of the cloud and illumination patterns of :meth:`zeropoint`.
        """
        return self.camera.focal_plane_to_field_angle(*self._ccd_to_fp(ccd, x, y))

    def cloud_edge(self, visit, X, Y):
        """Magnitudes of extinction of the ``clouds`` effect at field angles (X, Y) radians
        (0 without it, and for the other visits)."""
        e = self.effects.get("clouds")
        if e is None or int(visit) != e["visit"]:
            return np.zeros(np.shape(X))
        t = np.radians(e["direction_deg"])
        d = np.degrees(np.asarray(X) * np.cos(t) + np.asarray(Y) * np.sin(t))
        return e["depth_mag"] / (1.0 + np.exp(-(d - e["edge_deg"]) / e["width_deg"]))

    def zeropoint(self, visit, ccd, x, y):
        """m_true = -2.5 log10(instFlux) + zeropoint, at 0-based pixel (x, y)."""
        v = self.visits[int(visit)]
        X, Y = self.field_angle(visit, ccd, x, y)
        return (v["zp"] - _poly_field(v["cloud"], X, Y) - _poly_field(self.params["illum"], X, Y)
                - self.cloud_edge(visit, X, Y)
                - self.ccds[int(ccd)]["dmag"] - 2.5 * np.log10(self.area_ratio(visit, ccd, x, y)))


FIELD_SCALE = np.radians(0.75)   # field-angle unit of the photometric polynomials


def _poly_field(coeffs, X, Y):
    """sum c[i][j] (X/R)^i (Y/R)^j with R = 0.75 deg: smooth focal-plane patterns."""
    u, v = X / FIELD_SCALE, Y / FIELD_SCALE
    out = np.zeros_like(np.asarray(u, dtype=float))
    for i, row in enumerate(coeffs):
        for j, c in enumerate(row):
            if c:
                out = out + c * u ** i * v ** j
    return out


# ------------------------------------------------------------------------------------------
# Drawing the sky, the visits and the instrument
# ------------------------------------------------------------------------------------------
def draw_params(cfg, rng, camera):
    """Draw the truth parameters of a simulation (what ``truth/model.json`` holds).

    Returns
    -------
    dict
        ``visits``: per visit the boresight (ra, dec, degrees, ~1 arcsec off the commanded
        pointing), sky angle (degrees), MJD, seeing (arcsec FWHM), sky (ADU), zero point (mag),
        linear and quadratic field-angle perturbations and cloud pattern (mag); ``ccds``: per CCD
        the offsets dx_mm, dy_mm, rotation rot_rad and dmag; ``illum``: the illumination pattern
        (mag); camera, filter, seed and ref_epoch_mjd.
    """
    n = cfg.visits
    visits = []
    mjd = cfg.mjd_start
    for k in range(n):
        if cfg.layout == "wide":
            # HSC-SSP-Wide-like: the k-th pointing of a strip, scattered across it
            ra_c, dec_c = strip_to_sky((k - 0.5 * (n - 1)) * cfg.wide_step_deg,
                                       rng.uniform(-0.5, 0.5) * cfg.wide_width_deg,
                                       cfg.ra, cfg.dec)
        else:
            # HSC-SSP-like dithers: offsets of 0.1-0.6 deg around the field centre, some rotated
            if k == 0:
                r, phi = 0.0, 0.0
            else:
                r = rng.uniform(cfg.dither_min_deg, cfg.dither_max_deg)
                phi = 2 * np.pi * (k - 1) / max(n - 1, 1) + rng.normal(0, 0.3)
            dra, ddec = r * np.cos(phi), r * np.sin(phi)
            ra_c, dec_c = tangent_to_sky(np.radians(dra), np.radians(ddec), cfg.ra, cfg.dec)
        # pointing error of the telescope: ~1" rms
        ra_b, dec_b = tangent_to_sky(*(rng.normal(0, 1.0, 2) * np.pi / 648000), ra_c, dec_c)
        sky_angle = 270.0 if k % 3 != 2 else 270.0 + rng.choice([-1, 1]) * rng.uniform(20, 90)
        if k and k % 2 == 0:
            mjd += 1.0 + rng.integers(0, 3)          # a new night
        else:
            mjd += (cfg.exptime + 40.0) / 86400.0     # the next exposure of the night
        extinction = rng.exponential(0.08)            # transparency: clouds of a few tenths
        theta = rng.normal(0, 2e-5)
        scale = 0.0048 + rng.normal(0, 2e-5)          # the sky scale is ~0.48% above nominal
        shear = rng.normal(0, 1e-5, 2)
        visits.append(dict(
            visit=int(cfg.first_visit + cfg.visit_step * k), ra=float(ra_b), dec=float(dec_b),
            ra_commanded=float(ra_c), dec_commanded=float(dec_c),
            sky_angle=float(sky_angle), mjd=float(mjd), exptime=cfg.exptime,
            seeing_fwhm=float(rng.uniform(0.5, 0.95)),               # arcsec
            sky_adu=float(rng.uniform(1500.0, 4000.0)),              # per pixel
            gain=3.0,
            zp=float(27.0 + 2.5 * np.log10(cfg.exptime) - extinction),
            linear=[[scale + shear[0], -theta + shear[1]], [theta + shear[1], scale - shear[0]]],
            quadratic=(rng.normal(0, 1.5e-3, (2, 3))).tolist(),      # ~0.05" at the field edge
            # cloud gradient/curvature across the field: up to a few hundredths of a mag
            cloud=[[0.0, float(rng.normal(0, 0.01)), float(rng.normal(0, 0.005))],
                   [float(rng.normal(0, 0.01)), float(rng.normal(0, 0.005)), 0.0],
                   [float(rng.normal(0, 0.005)), 0.0, 0.0]],
        ))
    ccds = {}
    for c in camera.science_ccds:
        ccds[str(c)] = dict(dx_mm=float(rng.normal(0, 0.003)), dy_mm=float(rng.normal(0, 0.003)),
                            rot_rad=float(rng.normal(0, 3e-5)), dmag=float(rng.normal(0, 0.01)))
    # illumination residual: radial, ~3% at the edge, plus a small tilt
    illum = [[0.0, 0.004, 0.03], [0.006, 0.0, 0.0], [0.03, 0.0, 0.0]]
    out = dict(camera=camera.name, filter=cfg.filter, seed=cfg.seed, visits=visits, ccds=ccds,
               illum=illum, ref_epoch_mjd=REF_EPOCH_MJD)
    if cfg.layout == "wide":
        out["layout"] = dict(kind="wide", centre=[cfg.ra, cfg.dec], step_deg=cfg.wide_step_deg,
                             width_deg=cfg.wide_width_deg)
    return out


# ------------------------------------------------------------------------------------------
# Measuring a calibration against the truth
# ------------------------------------------------------------------------------------------
class Truth:
    """The truth of a simulated repository, for measuring any calibration against it.

    Only clean detections of stars count (no blends, saturation, displaced centroids, cosmic
    rays or moving objects): these are where a calibration can and must be right.
    """

    def __init__(self, root):
        self.root = root
        self.model = TruthModel.load(root)
        tdir = os.path.join(root, "truth")
        try:
            self.stars = Table.read(os.path.join(tdir, "stars.fits"))
            self.detections = Table.read(os.path.join(tdir, "detections.fits"))
        except (OSError, ValueError) as e:
            raise MosaicError(f"{tdir}: cannot read the simulation truth: {e}") from None
        self._index()

    @classmethod
    def from_tract(cls, sim):
        """The truth of an in-memory :class:`~mosaicfit.sim.SimulatedTract` (make_tract)."""
        self = cls.__new__(cls)
        self.root = None
        self.model, self.stars, self.detections = sim.truth, sim.stars, sim.detections
        self._index()
        return self

    def _index(self):
        self._row = {int(t): i for i, t in enumerate(np.asarray(self.stars["truth_id"]))}
        d = self.detections
        key = np.asarray(d["visit"], np.int64) * 1000 + np.asarray(d["ccd"], np.int64)
        order = np.argsort(key, kind="stable")
        self._order = order
        self._keys, self._starts = np.unique(key[order], return_index=True)
        self._ends = np.r_[self._starts[1:], len(order)]

    def clean_stars(self, visit, ccd):
        """Truth rows (Table) of the clean star detections of (visit, ccd) with the star's
        true ra, dec (degrees, at the visit's epoch) and magnitude."""
        k = np.searchsorted(self._keys, visit * 1000 + ccd)
        if k >= len(self._keys) or self._keys[k] != visit * 1000 + ccd:
            return None
        sub = self.detections[self._order[self._starts[k]:self._ends[k]]]
        sub = sub[(np.asarray(sub["outlier"]) == CLEAN) & (np.asarray(sub["truth_id"]) > 0)]
        rows = np.array([self._row[int(t)] for t in sub["truth_id"]], dtype=int)
        stars = self.stars[rows] if len(rows) else self.stars[:0]
        sub = sub[np.asarray(stars["is_star"], bool)]
        stars = stars[np.asarray(stars["is_star"], bool)]
        ra, dec = positions_at(stars, self.model.visits[visit]["mjd"])
        sub["ra"], sub["dec"], sub["mag"] = ra, dec, np.asarray(stars["mag"])
        sub["colour"] = colour_gi(stars)
        return sub

    AGAINST = ("star", "reference-colour", "smooth")

    def astrometric_error(self, visit, ccd, pixel_to_sky, against="star"):
        """(dRA cos Dec, dDec) in mas of `pixel_to_sky(x, y) -> (ra, dec) deg` at the
        noise-free image positions of the clean stars of (visit, ccd), against:

        * ``"star"``: the stars' true positions; the DCR and turbulence displacements of their
          images (effects dcr, turbulence) count as errors of `pixel_to_sky`;
        * ``"reference-colour"``: the true position of a source of the reference colour whose
          image lies there (the star's position displaced by its DCR): what a WCS for the
          reference colour should give; turbulence counts as an error;
        * ``"smooth"``: the smooth true mapping (:meth:`TruthModel.pixel_to_sky`): neither
          counts.

        Without those effects the three agree.
        """
        if against not in self.AGAINST:
            raise MosaicError(f"unknown truth {against!r}; known: {', '.join(self.AGAINST)}")
        s = self.clean_stars(visit, ccd)
        if s is None or len(s) == 0:
            return np.zeros(0), np.zeros(0)
        x, y = np.asarray(s["x_true"]), np.asarray(s["y_true"])
        ra, dec = pixel_to_sky(x, y)
        ra0, dec0 = np.asarray(s["ra"]), np.asarray(s["dec"])
        if against == "smooth":
            ra0, dec0 = self.model.pixel_to_sky(visit, ccd, x, y)
        elif against == "reference-colour" and self.model.has("dcr"):
            v = self.model.visits[visit]
            xi, eta = sky_to_tangent(ra0, dec0, v["ra"], v["dec"])
            a, b = self.model.dcr_offset(visit, s["colour"])
            ra0, dec0 = tangent_to_sky(xi + a * MAS_RAD, eta + b * MAS_RAD, v["ra"], v["dec"])
        dra = ((ra - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec0))
        return np.asarray(dra) * 3.6e6, np.asarray(dec - dec0) * 3.6e6

    def photometric_error(self, visit, ccd, calibrated_mag):
        """mmag of `calibrated_mag(x, y, instFlux) -> mag` for the noise-free fluxes of the
        clean stars of (visit, ccd), minus their true magnitudes."""
        s = self.clean_stars(visit, ccd)
        if s is None or len(s) == 0:
            return np.zeros(0)
        m = calibrated_mag(np.asarray(s["x_true"]), np.asarray(s["y_true"]),
                           np.asarray(s["instFlux_true"]))
        return (np.asarray(m) - np.asarray(s["mag"])) * 1000.0


def evaluate_inputs(root, rerun, refs, against="star"):
    """Errors of the single-frame inputs (CORR WCS and FLUXMAG0) of `refs` against the truth
    (`against`: see :meth:`Truth.astrometric_error`): dict(wcs_rms_mas=(ra, dec), zp_rms_mmag,
    zp_range_mmag, n_stars)."""
    truth = Truth(root)
    repo = Repository(root, rerun)
    dra, ddec, dmag, zps = [], [], [], []
    for ref in refs:
        path = repo.find("calexp", **ref.data_id)
        if path is None:
            continue
        exp = read_corr(path, metadata_only=True)
        a, b = truth.astrometric_error(ref.visit, ref.ccd,
                                       SipModel.from_header(exp.wcs_header).pixel_to_sky,
                                       against)
        dra.append(a)
        ddec.append(b)
        f0 = exp.fluxmag0
        dm = truth.photometric_error(ref.visit, ref.ccd,
                                     lambda x, y, f: -2.5 * np.log10(f / f0))
        dmag.append(dm)
        s = truth.clean_stars(ref.visit, ref.ccd)
        if s is not None and len(s):
            zps.append(truth.model.zeropoint(ref.visit, ref.ccd, s["x_true"], s["y_true"])
                       - truth.model.visits[ref.visit]["zp"])
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)
    dra, ddec, dmag, zps = cat(dra), cat(ddec), cat(dmag), cat(zps)
    rms = lambda a: float(np.sqrt(np.mean(a ** 2))) if len(a) else float("nan")
    return dict(wcs_rms_mas=(rms(dra), rms(ddec)), zp_rms_mmag=rms(dmag),
                zp_range_mmag=float(np.ptp(zps) * 1000) if len(zps) else float("nan"),
                n_stars=int(len(dra)))


def evaluate_outputs(root, rerun, refs, tract, against="star"):
    """Errors of the mosaic's wcs-/fcr- files of `refs` against the truth (`against`: see
    :meth:`Truth.astrometric_error`): dict(wcs_rms_mas=(ra, dec), zp_rms_mmag, n_stars,
    n_ccds). The calibrated magnitude is hscPipe's:
    -2.5 log10(flux 10^(-0.4 P) J / FLUXMAG0), J the pixel area of the wcs- file."""
    truth = Truth(root)
    repo = Repository(root, rerun)
    dra, ddec, dmag = [], [], []
    n_ccds = 0
    for ref in refs:
        did = dict(ref.data_id, tract=tract)
        wp, fp = repo.path("wcs", **did), repo.path("fcr", **did)
        if not (os.path.exists(wp) and os.path.exists(fp)):
            continue
        n_ccds += 1
        sip = SipModel.from_header(read_wcs_header(wp), wp)
        fc = read_fcr(fp, hsc()[ref.ccd].nquarter)
        a, b = truth.astrometric_error(ref.visit, ref.ccd, sip.pixel_to_sky, against)
        dra.append(a)
        ddec.append(b)
        dmag.append(truth.photometric_error(ref.visit, ref.ccd, lambda x, y, f: -2.5 * np.log10(
            f * fc.factor(x, y, sip.area_ratio(x, y)) / fc.fluxmag0)))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)
    rms = lambda a: float(np.sqrt(np.mean(a ** 2))) if len(a) else float("nan")
    dra, ddec, dmag = cat(dra), cat(ddec), cat(dmag)
    return dict(wcs_rms_mas=(rms(dra), rms(ddec)), zp_rms_mmag=rms(dmag), n_stars=int(len(dra)),
                n_ccds=n_ccds)
