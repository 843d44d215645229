"""Fitting the chromatic term (:mod:`mosaicfit.model.chromatic`): one DCR vector per visit and,
for the stars whose colour is unknown, an effective colour of their own.

The term enters the astrometric fit as a known displacement of each detection,
d_v (c_s - c_ref), updated after every solve of the polynomials and stars (a Gauss-Seidel
step: colours are nearly uncorrelated with position, so the polynomials and the DCR vectors
barely interact and the alternation converges in the fit's own iterations):

* d_v: the regression of the visit's residuals (with the current term added back) on the
  colours of its stars with known colours, both centred (the polynomial's constant takes the
  visit's mean);
* where the catalogue gives no colour, a star's effective colour is a free parameter,
  estimated from its own detections jointly with its position (eliminated: the star's
  position is free in every solve) when its visits differ enough in refraction that it is
  determined to `dcrMaxColorError` mag; otherwise it keeps the reference colour;
* with no star of known colour, the visits' headers (AIRMASS / ZD / ALTITUDE and PARANG / HA)
  give each d_v's direction and its tan z, and only the effective colours are fitted (in
  units of 10 mas per unit of tan z);
* with neither (the real HSC sample: SDSS positions without colours, headers without the
  zenith distance), the vectors and the effective colours are fitted together from the
  converged fit's residuals (:meth:`DcrFit.start_from_residuals`): a star-specific shift
  that changes from visit to visit along one vector per visit is what DCR does and nothing
  else in the model does. The rank-one fit (alternating least squares) is kept only where it
  takes out more than chance would from white noise (the largest singular value of a noise
  matrix of the stars x visits' size, plus 5 sigma), the effective colours in units of their
  weighted rms over the stars (source "residuals").

Colours come from the reference catalogue (bands of `dcrColor`, e.g. ``g-i``) and, for the
stars it lacks, from the run itself when it has visits in both bands' filters (the mean
single-frame calibrated magnitudes, -2.5 log10(flux / FLUXMAG0)).
"""
import logging
import math

import numpy as np

from .. import MosaicError
from ..model.chromatic import ChromaticTerm
from ..model.colorterms import default_band
from ..units import AB_NJY_ZEROPOINT

log = logging.getLogger("mosaicfit.fit")

__all__ = ["star_colours", "visit_refraction", "DcrFit", "parse_colour"]

SUBARU_LATITUDE_DEG = 19.825504
# the unit of the effective colours when only the headers' refraction is known: 10 mas
HEADER_UNIT_ARCSEC = 0.010
# fewer stars of known colour than this per visit: its vector is not fitted from colours
MIN_COLOURED_PER_VISIT = 30


def parse_colour(text):
    """('g', 'i') of a colour name 'g-i'."""
    parts = [p.strip() for p in str(text).split("-")]
    if len(parts) != 2 or not all(parts):
        raise MosaicError(f"--config dcrColor={text!r}: give two bands, e.g. g-i")
    return parts[0], parts[1]


def _band_mag(table, band):
    col = f"{band}_flux"
    if table is None or col not in table.colnames:
        return None
    f = np.asarray(table[col], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(f > 0, -2.5 * np.log10(f) + AB_NJY_ZEROPOINT, np.nan)


def star_colours(data, exposures, colour):
    """(nstar,) colour of each star of `data` (FitData), NaN where unknown, and a one-line
    description of where they came from."""
    b1, b2 = parse_colour(colour)
    c = np.full(data.nstar, np.nan)
    what = []
    ref = data.ref
    has = data.ref_of_star >= 0
    if ref is not None and has.any():
        m1, m2 = _band_mag(ref.table, b1), _band_mag(ref.table, b2)
        if m1 is not None and m2 is not None:
            rows = data.ref_of_star[has]
            col = m1[rows] - m2[rows]
            fin = np.isfinite(col)
            # a catalogue whose colours are all the same (placeholder magnitudes, one band
            # copied into all) says nothing about colour: its stars count as unknown
            if fin.sum() >= 10 and np.ptp(col[fin]) < 0.01:
                what.append(f"the reference catalogue's {colour} is {np.median(col[fin]):.2f} "
                            "for every star: not used")
            else:
                c[has] = col
                what.append(f"{int(np.isfinite(c).sum())} from the reference catalogue")
    # the run's own magnitudes, for the stars without a catalogue colour
    filt_of_exp = np.array([default_band(e.filter or "") or "" for e in exposures])
    band = filt_of_exp[data.det.exp]
    if (band == b1).any() and (band == b2).any():
        f0 = np.array([e.fluxmag0 if e.fluxmag0 else np.nan for e in exposures], float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mag = -2.5 * np.log10(data.det.flux / f0[data.det.exp])
        mean = {}
        for b in (b1, b2):
            m = (band == b) & np.isfinite(mag)
            n = np.bincount(data.star[m], minlength=data.nstar)
            s = np.bincount(data.star[m], weights=mag[m], minlength=data.nstar)
            mean[b] = np.where(n > 0, s / np.maximum(n, 1), np.nan)
        own = mean[b1] - mean[b2]
        fill = ~np.isfinite(c) & np.isfinite(own)
        c[fill] = own[fill]
        if fill.any():
            what.append(f"{int(fill.sum())} from this run's {b1} and {b2} visits")
    return c, "; ".join(what) or "none known"


def _parallactic_deg(ha_deg, dec_deg, lat_deg=SUBARU_LATITUDE_DEG):
    h, d, p = (np.radians(x) for x in (ha_deg, dec_deg, lat_deg))
    return float(np.degrees(np.arctan2(np.sin(h), np.tan(p) * np.cos(d) - np.sin(d) * np.cos(h))))


def _hours_or_deg(v):
    """HA from a header: degrees as a number, hours as a sexagesimal string."""
    if isinstance(v, (int, float)):
        return float(v)
    parts = str(v).strip().replace(" ", ":").split(":")
    sign = -1.0 if parts[0].startswith("-") else 1.0
    h = sum(abs(float(x)) / 60.0 ** k for k, x in enumerate(parts))
    return sign * h * 15.0


def visit_refraction(exposures, visits, dec_of_visit):
    """(nv, 2): tan(z) (sin q, cos q) per visit (q the parallactic angle, the zenith's
    position angle north through east), from the first exposure's observing headers; NaN
    where they do not say."""
    out = np.full((len(visits), 2), np.nan)
    first = {}                 # each visit's first exposure with observing headers
    for e in exposures:
        if e.observing and e.visit not in first:
            first[e.visit] = e.observing
    for k, v in enumerate(visits):
        obs = first.get(v)
        if not obs:
            continue
        z = None
        if "ZD" in obs:
            z = obs["ZD"]
        elif "ALTITUDE" in obs:
            z = 90.0 - obs["ALTITUDE"]
        elif "AIRMASS" in obs and obs["AIRMASS"] >= 1.0:
            z = math.degrees(math.acos(1.0 / obs["AIRMASS"]))
        q = obs.get("PARANG")
        if q is None and "HA" in obs:
            try:
                q = _parallactic_deg(_hours_or_deg(obs["HA"]), dec_of_visit[k])
            except ValueError:
                q = None
        if z is None or q is None or not (0.0 <= z < 89.0):
            continue
        t = math.tan(math.radians(z))
        out[k] = t * math.sin(math.radians(q)), t * math.cos(math.radians(q))
    return out


class DcrFit:
    """The state of the chromatic term during the astrometric fit (module doc)."""

    def __init__(self, colour, refraction, star, vidx, visits, cfg):
        self.cfg = cfg
        self.star, self.vidx, self.visits = star, vidx, visits
        nv = len(visits)
        self.known = np.isfinite(colour)
        self.dc = np.where(self.known, colour - cfg.dcrReferenceColor, 0.0)   # per star
        self.free = np.zeros(len(colour), bool)
        self.d = np.zeros((nv, 2))
        n_col = np.bincount(vidx[self.known[star]], minlength=nv)
        self.from_colours = n_col >= MIN_COLOURED_PER_VISIT
        self.from_headers = ~self.from_colours & np.all(np.isfinite(refraction), axis=1)
        self.d[self.from_headers] = refraction[self.from_headers] * HEADER_UNIT_ARCSEC
        self.from_residuals = np.zeros(nv, bool)
        self.active = bool(self.from_colours.any() or self.from_headers.any())

    @property
    def can_start_from_residuals(self):
        """Whether the term may be fitted from the residuals alone: nothing else gives it and
        there are visits enough to tell a per-visit vector from the stars' positions."""
        return (not self.active) and len(self.visits) >= 3 and not self.known.any()

    def _colours_given_vectors(self, s, w, act):
        """Each star's effective colour and its error with its position (eliminated), from
        the detections `act` with the current vectors; (colour, sigma, star shift (ns, 2))."""
        star, vidx = self.star, self.vidx
        ns = len(self.dc)
        sc, wc, dv = star[act], w[act], self.d[vidx[act]]
        W = np.bincount(sc, weights=wc, minlength=ns)
        Dx = np.stack([np.bincount(sc, weights=wc * dv[:, i], minlength=ns) for i in (0, 1)], 1)
        Dd = np.bincount(sc, weights=wc * np.sum(dv * dv, axis=1), minlength=ns)
        Sr = np.stack([np.bincount(sc, weights=wc * s[act, i], minlength=ns) for i in (0, 1)], 1)
        Srd = np.bincount(sc, weights=wc * np.sum(s[act] * dv, axis=1), minlength=ns)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            info = Dd - np.sum(Dx * Dx, axis=1) / W
            # a colour the vectors do not determine (one visit, or vectors all alike): none
            det = (W > 0) & (info > 1e-12 * np.maximum(Dd, 1e-300))
            c = np.where(det, (Srd - np.sum(Sr * Dx, axis=1) / W) / np.where(det, info, 1.0),
                         np.nan)
            sigma = np.where(det, 1.0 / np.sqrt(np.where(det, info, 1.0)), np.inf)
            shift = (Sr - np.where(det, c, 0.0)[:, None] * Dx) / np.where(W > 0, W, 1.0)[:, None]
        return c, sigma, shift

    def start_from_residuals(self, res, w, act, iterations=40):
        """Fit the vectors and the effective colours from the residuals `res` (n, 2) of a
        converged fit without the term (module doc); True (and the term active) where the
        rank-one structure is beyond chance. Logs what it found."""
        star, vidx, nv = self.star, self.vidx, len(self.visits)
        ns = len(self.dc)
        n_det = np.bincount(star[act], minlength=ns)
        use = act & (n_det[star] >= 2)
        if not use.any():
            return False
        s = res
        W = np.bincount(star[use], weights=w[use], minlength=ns)
        mean = np.stack([np.bincount(star[use], weights=w[use] * s[use, i], minlength=ns)
                         for i in (0, 1)], 1) / np.maximum(W, 1e-300)[:, None]
        chi0 = float(np.sum(w[use] * np.sum((s[use] - mean[star[use]]) ** 2, axis=1)))
        # start: a vector growing along the sequence of visits, in both coordinates (any
        # start not orthogonal to the answer converges to it, as a power iteration does)
        k = np.arange(nv) - 0.5 * (nv - 1)
        self.d = np.stack([k, k], 1) * 1e-3
        self.dc = np.zeros(ns)
        for _ in range(iterations):
            c, sigma, shift = self._colours_given_vectors(s, w, use)
            c = np.where(np.isfinite(c), c, 0.0)
            rms = math.sqrt(float(np.sum(W * c * c) / max(float(W.sum()), 1e-300)))
            if not rms > 0:
                return False
            c /= rms
            # each visit's vector: weighted least squares of its residuals on the colours
            # about their mean, all visits at once from per-visit sums (a mask per visit
            # was O(visits x detections) in each of the iterations)
            vu, wu, xu = vidx[use], w[use], c[star[use]]
            ru = s[use] - shift[star[use]]
            sw = np.bincount(vu, weights=wu, minlength=nv)
            swx = np.bincount(vu, weights=wu * xu, minlength=nv)
            with np.errstate(invalid="ignore", divide="ignore"):
                mx = np.where(sw > 0, swx / np.where(sw > 0, sw, 1.0), 0.0)
            xc = xu - mx[vu]
            den = np.bincount(vu, weights=wu * xc * xc, minlength=nv)
            num = np.stack([np.bincount(vu, weights=wu * xc * ru[:, i], minlength=nv)
                            for i in (0, 1)], axis=1)
            fit = (sw > 0) & (den > 0)
            self.d[fit] = num[fit] / den[fit, None]
            self.dc = c
        c, sigma, shift = self._colours_given_vectors(s, w, use)
        c = np.where(np.isfinite(c), c, 0.0)
        model = shift[star] + self.d[vidx] * c[star][:, None]
        chi1 = float(np.sum(w[use] * np.sum((s[use] - model[use]) ** 2, axis=1)))
        gain = chi0 - chi1
        N, M = int((W > 0).sum()), 2 * nv
        chance = (math.sqrt(N) + math.sqrt(M)) ** 2 + 5.0 * math.sqrt(2.0 * N)
        if not gain > chance:
            log.info("chromatic term: not fitted (no star or header colour; the residuals' "
                     "chromatic pattern takes out chi2 %.0f, chance %.0f from %d stars)",
                     gain, chance, N)
            self.d[:] = 0.0
            self.dc[:] = 0.0
            return False
        ok = (W > 0) & np.isfinite(sigma) & (sigma < self.cfg.dcrMaxColorError)
        if ok.sum() < MIN_COLOURED_PER_VISIT:
            # the pattern is there in aggregate, but no star's share is: fitted, each star's
            # colour would only trade its noise for its DCR
            log.info("chromatic term: not fitted: the residuals show a chromatic pattern "
                     "(vectors |d| %s mas per unit of effective colour; chi2 down by %.0f, "
                     "chance %.0f from %d stars), but only %d stars' effective colours are "
                     "determined to dcrMaxColorError=%.2g (of unit rms)",
                     "/".join(f"{1000.0 * np.hypot(*x):.1f}" for x in self.d), gain, chance,
                     N, int(ok.sum()), self.cfg.dcrMaxColorError)
            self.d[:] = 0.0
            self.dc[:] = 0.0
            return False
        self.from_residuals[:] = True
        self.active = True
        self.free = ok
        self.dc = np.where(ok, np.clip(c, -4.0, 4.0), 0.0)
        log.info("chromatic term: fitted from the residuals (no star or header colour): "
                 "vectors of %d visits, |d| %s mas per unit of effective colour, effective "
                 "colours of %d stars (chi2 down by %.0f, chance %.0f)", nv,
                 "/".join(f"{1000.0 * np.hypot(*x):.1f}" for x in self.d), int(ok.sum()), gain,
                 chance)
        return True

    def offsets(self):
        """(n, 2) arcsec: each detection's displacement d_v (c_s - c_ref)."""
        return self.d[self.vidx] * self.dc[self.star][:, None]

    def update(self, res, w, act):
        """One step from the residuals `res` (n, 2, with the current offsets removed) of the
        detections `act` with weights `w`: the vectors of the visits fitted from colours,
        then the free effective colours. Returns the largest change of a detection's offset
        (arcsec)."""
        if not self.active:
            return 0.0
        old = self.offsets()
        s = res + old                     # the residuals without the term
        star, vidx = self.star, self.vidx
        # each fitted visit's vector by weighted least squares on the colours about their
        # mean, all visits at once (bincounts: a mask per visit is O(visits x detections))
        fitted = self.from_colours | self.from_residuals
        sel = np.where(self.from_residuals[vidx], act & self.free[star],
                       act & self.known[star]) & fitted[vidx]
        g, ww, x = vidx[sel], w[sel], self.dc[star[sel]]
        nv = len(self.visits)
        W = np.bincount(g, weights=ww, minlength=nv)
        Sx = np.bincount(g, weights=ww * x, minlength=nv)
        xbar = np.divide(Sx, W, out=np.zeros(nv), where=W > 0)
        xc = x - xbar[g]
        den = np.bincount(g, weights=ww * xc * xc, minlength=nv)
        for d in range(2):
            num = np.bincount(g, weights=ww * xc * s[sel, d], minlength=nv)
            ok = fitted & (den > 0)
            self.d[ok, d] = num[ok] / den[ok]
        # free effective colours: jointly with the star's position, which the solve frees
        cand = act & ~self.known[star]
        if cand.any() and np.any(self.d[vidx[cand]] != 0):
            W = np.bincount(star[cand], weights=w[cand], minlength=len(self.dc))
            c, sigma, _ = self._colours_given_vectors(s, w, cand)
            ok = np.isfinite(c) & (W > 0) & (sigma < self.cfg.dcrMaxColorError)
            self.free = ok
            self.dc = np.where(self.known, self.dc, np.where(ok, np.clip(c, -4.0, 4.0), 0.0))
        new = self.offsets()
        return float(np.max(np.abs(new - old), initial=0.0))

    def term(self):
        """The ChromaticTerm of the fit (vectors of the visits it has one for)."""
        t = ChromaticTerm(self.cfg.dcrColor, float(self.cfg.dcrReferenceColor))
        for k, v in enumerate(self.visits):
            if self.from_colours[k]:
                t.vectors[int(v)] = (float(self.d[k, 0]), float(self.d[k, 1]))
                t.source[int(v)] = "fitted"
            elif self.from_headers[k]:
                t.vectors[int(v)] = (float(self.d[k, 0]), float(self.d[k, 1]))
                t.source[int(v)] = "headers"
            elif self.from_residuals[k]:
                t.vectors[int(v)] = (float(self.d[k, 0]), float(self.d[k, 1]))
                t.source[int(v)] = "residuals"
        return t
