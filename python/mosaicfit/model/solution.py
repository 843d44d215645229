"""The fitted model of a tract, its products, and its file format.

A :class:`Solution` holds the CCD placement (shared by all visits), the astrometric model
(:class:`~mosaicfit.model.astrometry.AstrometricModel`), one photometric model per filter
(:class:`~mosaicfit.model.photometry.PhotometricModel`), the CCDs kept at their single-frame
WCS (`frozen`), the run's statistics and the tables of what the fit used.

Products (as hscPipe wrote them): per (visit, CCD) a TAN-SIP of order N about the optical axis
(CRVAL the sky at the optical axis, CRPIX its pixel position), and an fcr polynomial
P_fcr = S_v - S_v(axis) in the CCD frame turned to the focal plane, with
FLUXMAG0 = 10^(0.4 (S_v(axis) + dC)), S_v = P_v + F_v the visit's surface (its flux polynomial
and, where it has one, its transparency field).

File format (:meth:`Solution.save`, :meth:`Solution.load`), version 4: a folder with

``solution.json``
    ``{"format": "mosaicfit-solution", "version": 4, "mosaicfit": VERSION, "camera": NAME,
    "placement": {CCD: [dx, dy, theta]}`` (15 micron focal-plane pixels, radians),
    ``"astrometry": null | {"tangent_point": [ra, dec] (deg), "optics_scale": rad,
    "order": N, "visits": {VISIT: [[xi terms], [eta terms]]}`` (Legendre coefficients,
    arcsec, in the order of :class:`~mosaicfit.model.basis.PolyBasis`), ``"chromatic": null |
    {"colour": "g-i", "reference_colour": mag, "vectors": {VISIT: [dxi, deta]} (arcsec/mag),
    "source": {VISIT: "fitted"|"headers"}}, "turbulence": [VISIT...]}`` (the visits with a
    field in ``turbulence.fits``), ``"sip_order": N``,
    ``"photometry": {FILTER: {"order": M, "basis": "chebyshev"|"legendre", "scale": px,
    "absolute": bool, "visits": {VISIT: [terms]}, "ccd_terms": {CCD: mag}, "fields":
    [VISIT...]}}`` (the visits with a transparency field in ``transparency.fits``),
    ``"frozen": {"VISIT,CCD": header cards}``,
    ``"fluxmag0err": {"VISIT,CCD": counts}``, ``"visits": {VISIT: {"mjd", "filter"}}``,
    ``"stats": RunStats}``; numbers as JSON numbers (exact doubles), NaN as ``NaN``;
``detections.fits``, ``stars.fits``
    the tables :attr:`Solution.detections` and :attr:`Solution.stars`;
``turbulence.fits`` (when a visit has a turbulence field)
    per visit two image HDUs TURB_XI_<VISIT>, TURB_ETA_<VISIT> (arcsec, float64) with the
    grid's X0, Y0, STEP (arcsec) in their headers (:class:`~mosaicfit.model.turbulence.
    TurbulenceField`);
``transparency.fits`` (when a visit has a transparency field)
    per visit an image HDU TRANS_<VISIT> (mag, float64) with the grid's X0, Y0, STEP
    (focal-plane pixels) in its header (:class:`~mosaicfit.model.photometry.
    TransparencyField`).

Version 3 folders (no transparency fields), version 2 folders (no chromatic term, no
turbulence) and version 1 folders (mosaicfit 0.1, whose solution.json held the Solution's attributes) load
too; a newer version or another format is an error that names it.
"""
import copy
import json
import os

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from .. import MosaicError, __version__
from ..io.atomic import write_fits, write_table, write_text
from ..io.fits import card_image
from .astrometry import AstrometricModel, CcdPlacement, Optics, TractPlane
from .chromatic import ChromaticTerm
from .basis import PolyBasis
from .camera import hsc
from .fluxcorr import FluxCorrection, rotate_pixels
from .photometry import PhotometricModel, TransparencyField
from .groups import index_groups
from .sip import SipFit, SipModel, area_from_gradients, cards_text, fit_tan_sip_many
from .statistics import AstrometryStats, IterationSummary, PhotometryStats, RunStats, VisitQuality
from .turbulence import TurbulenceField

__all__ = ["Solution", "FORMAT", "VERSION", "plain"]

FORMAT = "mosaicfit-solution"
VERSION = 4
#: SIP order of the products of a visit with a turbulence field
TURBULENCE_SIP_ORDER = 12


#: CCDs whose product TAN-SIP is fitted in one pass (Solution.prepare_wcs)
PREPARE_CHUNK = 512


class Solution:
    """The fitted model of one tract: astrometric and photometric, per visit and CCD.

    Built by :func:`mosaicfit.fit.solve.solve`; its products are :meth:`wcs_header` /
    :meth:`wcs` and :meth:`flux_correction`.
    """

    def __init__(self, camera, placement=None, astrometry=None, photometry=None, sip_order=None,
                 frozen=None, fluxmag0err=None, visit_info=None, stats=None):
        """`photometry`: {filter: PhotometricModel}; `visit_info`: {visit: dict(mjd, filter)}."""
        self.camera = camera
        self.placement = placement or (astrometry.placement if astrometry else
                                       CcdPlacement(camera))
        self.astrometry = astrometry          # AstrometricModel or None
        self.photometry = dict(photometry or {})     # filter -> PhotometricModel
        self.sip_order = int(sip_order or (astrometry.order if astrometry else 9))
        self.frozen = dict(frozen or {})      # (visit, ccd) -> single-frame WCS header (text)
        self.fluxmag0err = dict(fluxmag0err or {})   # (visit, ccd) -> FLUXMAG0ERR (counts)
        self.visit_info = dict(visit_info or {})     # visit -> dict(mjd, filter)
        self.stats = stats or RunStats()
        self.detections = None                # astropy Table of the detections the fit used
        self.stars = None                     # astropy Table of the stars
        self._wcs_cache = {}

    # -- geometry --------------------------------------------------------------------------------
    def focal_plane(self, ccd, x, y):
        """Fitted focal-plane position (u, v) in 15 micron pixels of 0-based CCD pixels."""
        return self.placement.to_focal_plane(ccd, x, y)

    def focal_plane_to_pixel(self, ccd, u, v):
        """Fitted focal-plane (u, v) in 15 micron pixels -> 0-based pixel of `ccd`."""
        return self.placement.to_pixel(ccd, u, v)

    def optical_axis_pixel(self, ccd):
        """0-based pixel of CCD `ccd` at the focal-plane origin (the optical axis)."""
        return self.placement.optical_axis_pixel(ccd)

    def has_astrometry(self, visit):
        """Whether `visit` has a fitted astrometric polynomial."""
        return self.astrometry is not None and self.astrometry.has_visit(visit)

    def pixel_to_sky(self, visit, ccd, x, y):
        """(ra, dec) in degrees of 0-based pixels, from the model itself (from the
        single-frame WCS for a CCD kept at it)."""
        if (int(visit), int(ccd)) in self.frozen or not self.has_astrometry(visit):
            return self.sip_model(visit, ccd).pixel_to_sky(x, y)
        return self.astrometry.pixel_to_sky(visit, ccd, x, y)

    # -- WCS products ----------------------------------------------------------------------------
    def wcs_header(self, visit, ccd):
        """TAN-SIP header of order N about the optical axis, fitted to the model over the CCD
        with CD the model's own derivative at the axis (so that its pixel area ratio J is the
        model's): to < 1e-3 mas, since over a CCD the model is an order-N polynomial in
        pixels to far below that."""
        return fits.Header.fromstring(cards_text(self.wcs_cards(visit, ccd)))

    def _wcs(self, visit, ccd, what="both"):
        """(cards, SipModel) of the product WCS (`what` "cards" or "model": that one only),
        its fit cached as a sip.SipFit (frozen: the single-frame header's text); the cards
        become text (sip.cards_text) only when written."""
        key = (int(visit), int(ccd))
        if key not in self._wcs_cache:
            if key in self.frozen:
                hdr = self.frozen[key]
                text = hdr if isinstance(hdr, str) else hdr.tostring()
                self._wcs_cache[key] = (text, SipModel.from_header(text))
            elif not self.has_astrometry(visit):
                raise MosaicError(f"no astrometric solution for visit {visit}")
            else:
                self.prepare_wcs([key])
        got = self._wcs_cache[key]
        if isinstance(got, tuple) and not isinstance(got, SipFit):
            return got
        return (got.cards() if what != "model" else None,
                got.model() if what != "cards" else None)

    def prepare_wcs(self, keys):
        """Fit the product WCS of each (visit, ccd) of `keys` with an astrometric solution
        and none cached yet, all at once (sip.fit_tan_sip_many: one C++ call per SIP order
        and CCD size): the TAN-SIP of order N about the optical axis, fitted to the model
        over the CCD with CD the model's own derivative at the axis (so that its pixel area
        ratio J is the model's), to < 1e-3 mas, since over a CCD the model is an order-N
        polynomial in pixels to far below that."""
        groups = {}
        for visit, ccd in keys:
            key = (int(visit), int(ccd))
            if key in self._wcs_cache or key in self.frozen or not self.has_astrometry(visit):
                continue
            d = self.camera[key[1]]
            groups.setdefault((self.product_sip_order(visit), d.width, d.height), []).append(key)
        # (in chunks: the model on every grid point of 20000 CCDs at once, a 200-visit run's,
        # was ~0.8 GB of temporaries and the run's peak memory; each chunk a few CCDs in many
        # visits, whose forward fits share one factorisation per CCD, cpp/sip.cpp)
        chunks = [(k, g[i:i + PREPARE_CHUNK]) for k, g in groups.items()
                  for g in [sorted(g, key=lambda vc: (vc[1], vc[0]))]
                  for i in range(0, len(g), PREPARE_CHUNK)]
        for (order, width, height), group in chunks:
            # (N + 3) x 2 (N + 3) points, ~5 per term: the products within 2e-6 mas of those
            # from (N + 7) x 2 (N + 7) on the 10-visit tract, at 56% of the model evaluations
            n = order + 3
            gx, gy = np.meshgrid(np.linspace(-0.5, width - 0.5, n),
                                 np.linspace(-0.5, height - 0.5, 2 * n))
            gx, gy = gx.ravel(), gy.ravel()
            # the model at every grid point of every CCD of the group in one evaluation
            # (model.astrometry.AstrometricModel.pixels_to_sky)
            K, n = len(group), len(gx)
            visits = np.array([k[0] for k in group], np.int64)
            ccds = np.array([k[1] for k in group], np.int64)
            am = self.astrometry
            ra, dec = am.pixels_to_sky(np.repeat(visits, n), np.repeat(ccds, n),
                                       np.tile(gx, K), np.tile(gy, K))
            crpix = np.array([self.optical_axis_pixel(c) for c in ccds]).reshape(K, 2) + 1.0
            crval = np.stack(am.axes_to_sky(visits), axis=-1)
            cd = am.axis_jacobians(visits, ccds, crval)
            box = (-0.5, width - 0.5, -0.5, height - 0.5)
            out = fit_tan_sip_many(np.broadcast_to(gx, (K, n)), np.broadcast_to(gy, (K, n)),
                                   ra.reshape(K, n), dec.reshape(K, n), crpix, crval, cd, order,
                                   inverse_order=order, inverse_box=[box] * K)
            self._wcs_cache.update(zip(group, out))

    def product_sip_order(self, visit):
        """The SIP order of the products of `visit`: the solution's, raised to
        TURBULENCE_SIP_ORDER where the visit has a turbulence field (its arcminute structure
        needs it: 1.0 mas of representation error at order 9 against 0.6 at 12 on an 8 mas
        field)."""
        a = self.astrometry
        if a is not None and int(visit) in a.turbulence:
            return max(self.sip_order, TURBULENCE_SIP_ORDER)
        return self.sip_order

    def wcs_cards(self, visit, ccd):
        """The product WCS of (visit, ccd) as [(key, value)] cards (header text for a CCD kept
        at its single-frame WCS): what is written into its wcs- file."""
        return self._wcs(visit, ccd, "cards")[0]

    def wcs_card_text(self, visit, ccd):
        """``sip.cards_text(self.wcs_cards(visit, ccd))``: the card text of its wcs- file
        (made from the fit's numbers directly: sip.SipFit.card_text)."""
        key = (int(visit), int(ccd))
        got = self._wcs_cache.get(key)
        if got is None and key not in self.frozen and self.has_astrometry(visit):
            self.prepare_wcs([key])
            got = self._wcs_cache[key]
        if isinstance(got, SipFit):
            return got.card_text()
        return cards_text(self.wcs_cards(visit, ccd))

    def visit_quality(self, visit):
        """The astrometric fit's quality row of `visit` (dict; fit.quality.VisitQuality's
        fields), or None."""
        a = self.stats.astrometry
        for q in (a.visit_quality if a is not None else ()):
            if int(q["visit"]) == int(visit):
                return q
        return None

    def product_cards(self, visit, ccd):
        """mosaicfit's own cards for the primary header of the products of (visit, ccd):
        [(key, value, comment)] (the README's "Product header keywords")."""
        before, after = self._visit_product_cards(visit, (int(visit), int(ccd)) in self.frozen)
        return before + self.uncertainty_cards(visit, ccd) + after + \
            self.photometry_cards(visit)

    def _visit_product_cards(self, visit, frozen):
        """The cards of product_cards that are the visit's alone: (those before the CCD's
        uncertainty cards, those after it but for the photometry's); `frozen`: for a CCD kept
        at its single-frame WCS (no model cards)."""
        q = self.visit_quality(visit)
        before = VisitQuality(**q).header_cards() if q is not None else []
        after = []
        a = self.astrometry
        if a is not None and not frozen:
            if a.chromatic is not None:
                after += a.chromatic.header_cards(visit)
            f = a.turbulence.get(int(visit))
            after.append(("MFTURB", f is not None, "turbulence field removed (mosaicfit)"))
            if f is not None:
                after += [("MFTSIG", round(float(f.params.get("sigma", 0.0)), 3),
                           "[mas] turbulence kernel rms per axis"),
                          ("MFTLEN", round(float(f.params.get("lenarcm", 0.0)), 3),
                           "[arcmin] von Karman outer scale / 2 pi")]
        return before, after

    def product_card_images(self, visit, ccd, cache):
        """:meth:`product_cards` of (visit, ccd) as card images (80 characters each), and
        the images of its fcr- product's own cards (:meth:`uncertainty_cards` then
        :meth:`photometry_cards`): (wcs images, fcr images). The cards of the visit alone
        are formatted once per visit into `cache` (a dict the writer keeps for one pass over
        a final solution: 20000 products, ~15 cards each)."""
        v = int(visit)
        frozen = (v, int(ccd)) in self.frozen
        got = cache.get((v, frozen))
        if got is None:
            before, after = self._visit_product_cards(v, frozen)
            phot = [card_image(*c) for c in self.photometry_cards(v)]
            got = cache[(v, frozen)] = ([card_image(*c) for c in before],
                                        [card_image(*c) for c in after] + phot, phot)
        before, after, phot = got
        unc = [card_image(*c) for c in self.uncertainty_cards(v, ccd)]
        return before + unc + after, unc + phot

    def photometry_cards(self, visit):
        """The cards of `visit`'s transparency field, where the visit has photometry: MFTRANS
        (whether its calibration carries a field) and, with one, MFTRSIG, MFTRLEN."""
        m = self.photometric_model(visit)
        if m is None:
            return []
        f = m.fields.get(int(visit))
        cards = [("MFTRANS", f is not None, "transparency field in the calibration (mosaicfit)")]
        if f is not None:
            cards += [("MFTRSIG", round(float(f.params.get("sigma", 0.0)), 3),
                       "[mmag] transparency kernel rms"),
                      ("MFTRLEN", round(float(f.params.get("lenarcm", 0.0)), 3),
                       "[arcmin] transparency kernel length")]
        return cards

    def uncertainty_cards(self, visit, ccd):
        """The products' uncertainties from the normal equations (fit.uncertainty) as header
        cards [(key, value, comment)] (none for a frozen visit's single-frame WCS)."""
        r = self.ccd_error(visit, ccd)
        if r is None:
            return []
        cards = [("MFPOSERR", round(float(r["pos_err_mas"]), 4),
                  "[mas] astrometric uncertainty per axis, rms over the CCD"),
                 ("MFPOSMAX", round(float(r["pos_err_max_mas"]), 4),
                  "[mas] astrometric uncertainty per axis, largest on the CCD")]
        if np.isfinite(r["mag_err_mmag"]):
            cards += [("MFMAGERR", round(float(r["mag_err_mmag"]), 4),
                       "[mmag] photometric uncertainty, rms over the CCD"),
                      ("MFMAGMAX", round(float(r["mag_err_max_mmag"]), 4),
                       "[mmag] photometric uncertainty, largest on the CCD")]
        return cards

    def lean(self):
        """A shallow copy without the detection and star tables and the cached product WCSs:
        the model, for another process (the tables are the bulk of the bytes, and the cache
        goes with the work of its CCDs: :meth:`prepared_wcs`)."""
        out = copy.copy(self)
        out.detections = out.stars = None
        out._wcs_cache = {}
        return out

    def prepared_wcs(self, keys):
        """{(visit, ccd): fitted product TAN-SIP} of those of `keys` already fitted
        (:meth:`prepare_wcs`): what another process writing them needs not fit again
        (:meth:`adopt_wcs`)."""
        got = ((k, self._wcs_cache.get(k)) for k in keys)
        return {k: f for k, f in got if isinstance(f, SipFit)}

    def adopt_wcs(self, fitted):
        """Take the product TAN-SIPs `fitted` ({(visit, ccd): fit}, from
        :meth:`prepared_wcs` of the same solution) as this one's."""
        self._wcs_cache.update(fitted)

    def forget_wcs(self, visit, ccd):
        """Drop the cached product WCS of (visit, ccd) (once written: keeps memory flat)."""
        self._wcs_cache.pop((int(visit), int(ccd)), None)

    def sip_model(self, visit, ccd):
        """The product WCS as a :class:`mosaicfit.model.sip.SipModel` (fast evaluation)."""
        return self._wcs(visit, ccd, "model")[1]

    def pixel_area_ratios(self, visits, ccds, x, y):
        """J of the product WCS (:meth:`SipModel.area_ratio`) at the 0-based pixels (x, y) of
        (visits, ccds), one of each per point: the CCDs with a fitted TAN-SIP of one order in
        one C++ pass (model.basis.PolyBasis.evaluate_sets; the same kernel and coefficients as
        each CCD's SipModel, so the same numbers), the others (single-frame WCS) one by one."""
        visits, ccds = np.asarray(visits, np.int64), np.asarray(ccds, np.int64)
        x, y = np.asarray(x, float), np.asarray(y, float)
        J = np.ones(len(x))
        # (one integer key per point: np.unique of the (visit, ccd) rows was 0.7 s at 200
        # visits; CCD ids are below 1000)
        ukeys, inv = np.unique(visits * 1000 + ccds, return_inverse=True)
        inv = inv.ravel()
        keys = np.stack([ukeys // 1000, ukeys % 1000], axis=1)
        self.prepare_wcs([tuple(k) for k in keys.tolist()])
        by_order = {}
        for g, m in index_groups(inv):                  # m: the points of key g
            v, c = keys[g].tolist()
            fit = self._wcs_cache.get((v, c))
            if isinstance(fit, SipFit):
                by_order.setdefault(fit.order, []).append((g, fit))
            else:
                J[m] = self.sip_model(v, c).area_ratio(x[m], y[m])
        for order, fits_ in by_order.items():
            if order < 2:
                continue                           # no SIP: J = 1
            slot = np.full(len(keys), -1)
            slot[[g for g, _ in fits_]] = np.arange(len(fits_))
            on = slot[inv] >= 0
            k = slot[inv[on]]
            basis = PolyBasis(order, "monomial")
            coef = np.zeros((len(fits_), 2, basis.n_terms))
            coef[:, :, 3:] = [f.hi for _, f in fits_]
            crpix = np.array([f.crpix for _, f in fits_])
            _, du, dv = basis.evaluate_sets(coef, k, x[on] + 1.0 - crpix[k, 0],
                                            y[on] + 1.0 - crpix[k, 1], gradients=True)
            J[on] = area_from_gradients(du[0], dv[0], du[1], dv[1])
        return J

    def wcs(self, visit, ccd):
        """astropy.wcs.WCS of (visit, ccd); astropy's origin-0 pixels are afw's."""
        return WCS(self.wcs_header(visit, ccd))

    # -- photometry ------------------------------------------------------------------------------
    def filter_of(self, visit):
        """Filter name of `visit` ("" if unknown)."""
        return self.visit_info.get(int(visit), {}).get("filter") or ""

    def photometric_model(self, visit):
        """The PhotometricModel of `visit`'s filter (None if it has no photometry)."""
        m = self.photometry.get(self.filter_of(visit))
        if m is None and len(self.photometry) == 1:
            m = next(iter(self.photometry.values()))
        return m if m is not None and m.has_visit(visit) else None

    def ccd_error(self, visit, ccd):
        """The row of ``stats.ccd_errors`` of (visit, ccd) (pos_err_mas, mag_err_mmag,
        n_stars, constrained), or None (a frozen visit, a CCD not in the run)."""
        if not hasattr(self, "_ccd_error_index") or self._ccd_error_index[0] is not \
                self.stats.ccd_errors:
            self._ccd_error_index = (self.stats.ccd_errors, {
                (int(r["visit"]), int(r["ccd"])): r for r in self.stats.ccd_errors})
        return self._ccd_error_index[1].get((int(visit), int(ccd)))

    def constrained(self, visit, ccd):
        """Whether the solution constrains the products of (visit, ccd): a CCD of a frozen
        visit (its single-frame WCS), or one whose uncertainties are within maxCcdPosError
        and maxCcdMagError (fit.uncertainty). A solution without these rows (an older file)
        constrains every CCD with stars used by the fit."""
        if (int(visit), int(ccd)) in self.frozen:
            return True
        row = self.ccd_error(visit, ccd)
        if row is None:
            return not self.stats.ccd_errors
        return bool(row["constrained"])

    def has_photometry(self, visit):
        """Whether `visit` has a photometric model (of its filter)."""
        return self.photometric_model(visit) is not None

    def mag_offset(self, visit, ccd, x, y):
        """P_v(u, v) + dC: the magnitude added to m_inst - 2.5 log10 J to calibrate."""
        return self.photometric_model(visit).mag_offset(visit, ccd, *self.focal_plane(ccd, x, y))

    def ccd_term(self, visit, ccd):
        """dC of `ccd` in the filter of `visit` (0 without photometry)."""
        m = self.photometric_model(visit)
        return m.ccd_term(ccd) if m is not None else 0.0

    def fluxmag0(self, visit, ccd):
        """Flux of a 0-mag star at the optical axis: 10^(0.4 (P_v(axis) + dC))."""
        return 10.0 ** (0.4 * self.photometric_model(visit).zero_point(visit, ccd))

    def flux_correction(self, visit, ccd):
        """The fcr product: an order-M monomial polynomial in the CCD frame turned to the focal
        plane, about the optical axis, fitted exactly to P_v - P_v(axis)."""
        return self.flux_corrections([(visit, ccd)])[0]

    def flux_corrections(self, keys):
        """:meth:`flux_correction` of each (visit, ccd) of `keys` (visits with a photometric
        model), the polynomials of all fitted at once (PolyBasis.fit_many)."""
        keys = [(int(v), int(c)) for v, c in keys]
        out = [None] * len(keys)
        axis = {}                      # visit -> PhotometricModel.axis_value
        groups = {}
        for i, (visit, ccd) in enumerate(keys):
            d = self.camera[ccd]
            groups.setdefault((id(self.photometric_model(visit)), d.width, d.height), []).append(i)
        for (_, width, height), idx in groups.items():
            ph = self.photometric_model(keys[idx[0]][0])
            n = ph.order + 5
            gx, gy = np.meshgrid(np.linspace(-0.5, width - 0.5, n),
                                 np.linspace(-0.5, height - 0.5, 2 * n))
            gx, gy = gx.ravel(), gy.ravel()
            K, m = len(idx), len(gx)
            visits = np.array([keys[i][0] for i in idx], np.int64)
            ccds = np.array([keys[i][1] for i in idx], np.int64)
            # the grid of each CCD, in the focal plane and in the product's frame: the same in
            # every visit, so each CCD's is computed, and its polynomial's design factored, once
            uccd, at = np.unique(ccds, return_inverse=True)
            fu, fv = np.empty((len(uccd), m)), np.empty((len(uccd), m))
            xs, ys = np.empty((len(uccd), m)), np.empty((len(uccd), m))
            origin = np.empty((len(uccd), 2))
            for k, ccd in enumerate(uccd.tolist()):
                fu[k], fv[k] = self.focal_plane(ccd, gx, gy)
                nq = self.camera[ccd].nquarter
                ax, ay = self.optical_axis_pixel(ccd)
                axr, ayr = rotate_pixels(ax, ay, nq, width, height)
                origin[k] = -float(axr), -float(ayr)
                xr, yr = rotate_pixels(gx, gy, nq, width, height)
                xs[k], ys[k] = xr + origin[k, 0], yr + origin[k, 1]
            p = ph.surfaces(np.repeat(visits, m), fu[at].ravel(), fv[at].ravel()).reshape(K, m)
            p0 = ph.surfaces(visits, np.zeros(K), np.zeros(K))
            # without a constant term: p - p0 is 0 at the axis, and the constant is FLUXMAG0's.
            # A fitted constant would be the polynomial extrapolated to the axis, up to ~17000
            # px off an edge CCD, where rounding makes it ~0.03 mmag: zeroing it afterwards
            # offset those CCDs by that much (differently in every run)
            basis = PolyBasis(ph.order, "monomial", min_order=1)
            coef = np.empty((K, basis.n_terms))
            for k, mine in index_groups(at):     # one fit per CCD, its visits' right-hand sides
                coef[mine] = basis.fit(xs[k], ys[k], (p[mine] - p0[mine, None]).T).T
            for k, i in enumerate(idx):
                visit, ccd = keys[i]
                coeffs = {t: float(c) for t, c in zip(basis.terms, coef[k])}
                coeffs[(0, 0)] = 0.0
                d = self.camera[ccd]
                # fluxmag0(visit, ccd), its visit's part evaluated once
                if visit not in axis:
                    axis[visit] = ph.axis_value(visit)
                f0 = 10.0 ** (0.4 * (axis[visit] + ph.ccd_term(ccd)))
                out[i] = FluxCorrection(
                    order=ph.order, coeffs=coeffs, x0=float(origin[at[k], 0]),
                    y0=float(origin[at[k], 1]), u_max=1.0, v_max=1.0, chebyshev=False,
                    absolute=ph.absolute, fluxmag0=f0,
                    fluxmag0err=float(self.fluxmag0err.get((visit, ccd), 0.0)),
                    nq=d.nquarter, width=d.width, height=d.height,
                    filter=self.visit_info.get(visit, {}).get("filter") or "_unknown_")
        return out

    # -- the file ----------------------------------------------------------------------------------
    def save(self, outdir):
        """Write the solution into folder `outdir` (the module doc gives the format)."""
        a = self.astrometry
        state = dict(
            format=FORMAT, version=VERSION, mosaicfit=__version__, camera=self.camera.name,
            placement={str(c): list(o) for c, o in sorted(self.placement.offsets.items())},
            astrometry=None if a is None else dict(
                tangent_point=list(a.plane.tangent_point), optics_scale=a.optics.scale,
                order=a.order, visits={str(v): c.tolist() for v, c in sorted(a.coefficients.items())},
                chromatic=None if a.chromatic is None else a.chromatic.to_dict(),
                turbulence=sorted(int(v) for v in a.turbulence)),
            sip_order=self.sip_order,
            photometry={f: dict(
                order=p.order, basis=p.kind, scale=p.scale, absolute=p.absolute,
                visits={str(v): c.tolist() for v, c in sorted(p.coefficients.items())},
                ccd_terms={str(c): x for c, x in sorted(p.ccd_terms.items())},
                fields=sorted(int(v) for v in p.fields))
                for f, p in sorted(self.photometry.items())},
            frozen={f"{v},{c}": (h if isinstance(h, str) else h.tostring())
                    for (v, c), h in sorted(self.frozen.items())},
            fluxmag0err={f"{v},{c}": float(x) for (v, c), x in sorted(self.fluxmag0err.items())},
            visits={str(v): dict(i) for v, i in sorted(self.visit_info.items())},
            stats=plain(self.stats.to_dict()))
        write_text(json.dumps(state, indent=1, allow_nan=True) + "\n",
                   os.path.join(outdir, "solution.json"))
        if a is not None and a.turbulence:
            hdus = [fits.PrimaryHDU()]
            for v, f in sorted(a.turbulence.items()):
                hdus += f.to_hdus(v)
            write_fits(fits.HDUList(hdus), os.path.join(outdir, "turbulence.fits"))
        fields = [(f, v, t) for f, p in sorted(self.photometry.items())
                  for v, t in sorted(p.fields.items())]
        if fields:
            write_fits(fits.HDUList([fits.PrimaryHDU()] + [t.to_hdu(f, v) for f, v, t in fields]),
                       os.path.join(outdir, "transparency.fits"))
        if self.detections is not None:
            write_table(self.detections, os.path.join(outdir, "detections.fits"), "DETECTIONS")
        if self.stars is not None:
            write_table(self.stars, os.path.join(outdir, "stars.fits"), "STARS")

    @classmethod
    def load(cls, outdir, camera=None):
        """The Solution saved in folder `outdir` (version 1 to 4), with its tables."""
        path = os.path.join(outdir, "solution.json")
        try:
            with open(path) as f:
                st = json.load(f)
        except FileNotFoundError:
            raise MosaicError(f"{path}: not found: the diagnostics of a run are rebuilt from "
                              "the files that 'mosaic.py --diagnostics' leaves there "
                              "(solution.json, detections.fits, stars.fits)") from None
        except ValueError as e:
            raise MosaicError(f"{path}: not a mosaicfit solution file: {e}") from None
        version = st.get("version") if isinstance(st, dict) else None
        if not isinstance(st, dict) or st.get("format") != FORMAT or version not in (1, 2, 3, 4):
            raise MosaicError(f"{path}: not a mosaicfit solution file of version 1 to 4 "
                              f"(format {st.get('format') if isinstance(st, dict) else None!r}, "
                              f"version {version!r}: made by a newer mosaicfit?)")
        if camera is None:
            camera = hsc()
            if st.get("camera") != camera.name:
                raise MosaicError(f"{path}: made with camera {st.get('camera')!r}; give that camera")
        try:
            sol = _from_v2(st, camera, outdir) if version >= 2 else _from_v1(st, camera)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MosaicError(f"{path}: unreadable solution (version {version}): {e}") from None
        for name, attr in (("detections.fits", "detections"), ("stars.fits", "stars")):
            p = os.path.join(outdir, name)
            if not os.path.exists(p):
                raise MosaicError(f"{p}: not found (needed with solution.json)")
            setattr(sol, attr, Table.read(p, hdu=1))
        return sol


def plain(x):
    """JSON-able copies of numpy scalars and tuples."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def _key(text):
    v, c = text.split(",")
    return int(v), int(c)


def _from_v2(st, camera, outdir):
    """Versions 2 to 4 (3 adds the chromatic term and the turbulence fields, 4 the
    transparency fields)."""
    placement = CcdPlacement(camera, {int(c): o for c, o in st["placement"].items()})
    a = st["astrometry"]
    astro = None if a is None else AstrometricModel(
        placement, Optics(camera, a["optics_scale"]), TractPlane(a["tangent_point"]), a["order"],
        {int(v): c for v, c in a["visits"].items()})
    if a is not None and a.get("chromatic"):
        astro.chromatic = ChromaticTerm.from_dict(a["chromatic"])
    if a is not None and a.get("turbulence"):
        p = os.path.join(outdir, "turbulence.fits")
        try:
            with fits.open(p) as h:
                for v in a["turbulence"]:
                    astro.turbulence[int(v)] = TurbulenceField.from_hdus(
                        h[f"TURB_XI_{int(v)}"], h[f"TURB_ETA_{int(v)}"])
        except (OSError, KeyError) as e:
            raise MosaicError(f"{p}: the turbulence fields of solution.json: {e}") from None
    phot = {f: PhotometricModel(f, p["order"], p["basis"], p["scale"],
                                {int(v): c for v, c in p["visits"].items()},
                                {int(c): x for c, x in p["ccd_terms"].items()}, p["absolute"])
            for f, p in st["photometry"].items()}
    wanted = [(f, int(v)) for f, p in st["photometry"].items() for v in p.get("fields", [])]
    if wanted:
        p = os.path.join(outdir, "transparency.fits")
        try:
            with fits.open(p) as h:
                for f, v in wanted:
                    phot[f].fields[v] = TransparencyField.from_hdu(h[f"TRANS_{v}"])
        except (OSError, KeyError) as e:
            raise MosaicError(f"{p}: the transparency fields of solution.json: {e}") from None
    return Solution(camera, placement, astro, phot, st["sip_order"],
                    frozen={_key(k): h for k, h in st["frozen"].items()},
                    fluxmag0err={_key(k): x for k, x in st["fluxmag0err"].items()},
                    visit_info={int(v): i for v, i in st["visits"].items()},
                    stats=RunStats.from_dict(st["stats"]))


def _decode_v1(x):
    """mosaicfit 0.1's tagged JSON (numbers, lists, __nd__ arrays, __tuple__, __map__,
    __items__, __header__, and __obj__ for its IterationSummary); nothing else is built."""
    if isinstance(x, list):
        return [_decode_v1(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__nd__" in x:
        return np.array(x["__nd__"], dtype=x["dtype"]).reshape(x["shape"])
    if "__tuple__" in x:
        return tuple(_decode_v1(v) for v in x["__tuple__"])
    if "__map__" in x:
        return {k: _decode_v1(v) for k, v in x["__map__"].items()}
    if "__items__" in x:
        return {_decode_v1(k): _decode_v1(v) for k, v in x["__items__"]}
    if "__header__" in x:
        return x["__header__"]
    if "__obj__" in x:
        if not x["__obj__"].endswith(":IterationSummary"):
            raise ValueError(f"unknown object {x['__obj__']}")
        return IterationSummary(**_decode_v1(x["state"]))
    return {k: _decode_v1(v) for k, v in x.items()}


def _from_v1(st, camera):
    """A version-1 state: the attributes of mosaicfit 0.1's Solution."""
    at = {k: _decode_v1(v) for k, v in st["attributes"].items()}
    placement = CcdPlacement(camera, at.get("ccd_geom", {}))
    astro = AstrometricModel(placement, Optics(camera, at["fa_scale"]),
                             TractPlane(at["tangent_point"]), at["order"], at.get("astro", {})) \
        if at.get("astro") else None
    visit_info = {int(v): dict(i) for v, i in at.get("visit_info", {}).items()}
    s = at.get("stats", {})
    phot = {}
    for f, terms in (at.get("ccd_mag_by_filter") or {"": {}}).items():
        coefs = {v: c for v, c in at.get("phot", {}).items()
                 if (visit_info.get(int(v), {}).get("filter") or "") == f or f == ""}
        if coefs:
            phot[f] = PhotometricModel(f, at["phot_order"], at["phot_basis"], at["scale"], coefs,
                                       terms, s.get("absolute", True))
    stats = RunStats(**{k: s[k] for k in ("n_detections", "n_stars", "n_ref_stars",
                                          "n_ambiguous", "n_visits", "n_ccds", "band") if k in s})
    stats.iterations = list(s.get("iterations", []))
    stats.timing = dict(s.get("timing", {}))
    stats.excluded = [tuple(e) for e in s.get("excluded", [])]
    stats.no_products = [tuple(e) for e in s.get("no_products", [])]
    if "astro_chi2" in s:
        stats.astrometry = AstrometryStats(s.get("astro_order", at["order"]), s["astro_chi2"],
                                           s["astro_ndof"], s["astro_rms_mas"],
                                           s.get("astro_clipped", 0), s.get("astro_n_active", 0),
                                           s.get("astro_ref_rejected", 0))
    for f, p in s.get("phot_by_filter", {}).items():
        stats.photometry[f] = PhotometryStats(f, p["order"], p["chi2"], p["ndof"], p["rms_mmag"],
                                              0, 0, absolute=p["absolute"],
                                              visits=list(p.get("visits", [])),
                                              colour_terms=s.get("colour_terms", {}).get(f, ""))
    return Solution(camera, placement, astro, phot, at.get("sip_order"),
                    frozen={tuple(k): h for k, h in at.get("frozen", {}).items()},
                    fluxmag0err={tuple(k): x for k, x in at.get("fluxmag0err", {}).items()},
                    visit_info=visit_info, stats=stats)
