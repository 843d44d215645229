"""The fit's pieces on their own, against what they must do by construction: worst-first
clipping and its stopping rule, the affordable-order rule, cross-identification and reference
association, the CCD placement and the astrometric chain's derivatives, the polynomial basis,
and the configuration table."""
import logging
import math
import os
import re

import numpy as np
import pytest
from numpy.polynomial import chebyshev, legendre

from mosaicfit import MosaicError
from mosaicfit.config import OPTIONS, CatalogConfig, ExposureConfig, MosaicConfig
from mosaicfit.fit.association import cross_match, match_reference
from mosaicfit.fit.clipping import (chance_clips, clip_threshold, clip_worst,
                                    inconsistent_stars, update_active)
from mosaicfit.fit.order import MIN_STARS_PER_TERM, affordable_order
from mosaicfit.model.astrometry import AstrometricModel, CcdPlacement, Optics, TractPlane
from mosaicfit.model.basis import PolyBasis, n_terms
from mosaicfit.model.camera import hsc
from mosaicfit.model.sky import tangent_to_sky

PKG = os.path.join(os.path.dirname(__file__), os.pardir, "python", "mosaicfit")


# -- clipping ----------------------------------------------------------------------------------
def test_clip_worst_takes_one_detection_per_star():
    chi = np.array([30.0, 40.0, 1.0, 26.0, 2.0, 100.0])
    star = np.array([0, 0, 0, 1, 1, 2])
    active = np.array([True, True, True, True, True, False])   # star 2's one is clipped already
    n = clip_worst(chi, star, active, 25.0)
    assert n == 2
    assert active.tolist() == [True, False, True, False, True, False]


def test_threshold_anneals_to_clip_sigma():
    assert clip_threshold(0, 5.0) == np.inf
    assert [clip_threshold(i, 5.0) for i in (1, 2, 3, 4, 10)] == [50.0, 20.0, 10.0, 5.0, 5.0]
    assert clip_threshold(1, 60.0) == 60.0


def test_chance_clips_cover_gaussian_noise():
    """Worst-first clipping of pure Gaussian noise at 5 sigma stops: what one pass clips is
    within the allowance of chance_clips (expected + 2 sqrt + 1) in >= 95% of the trials."""
    rng = np.random.default_rng(3)
    ok = 0
    for _ in range(200):
        n = 200_000
        chi = np.sum(rng.normal(size=(n, 2)) ** 2, axis=1)
        star = np.arange(n)
        active = np.ones(n, bool)
        ok += clip_worst(chi, star, active, 25.0) <= chance_clips(n, 5.0, 2)
    assert ok >= 190
    assert chance_clips(100, np.inf, 2) == 0
    expected = 200_000 * math.exp(-12.5)
    assert chance_clips(200_000, 5.0, 2) == int(expected + 2 * math.sqrt(expected) + 1)


def test_update_active_reinstates_detections_that_now_fit():
    chi = np.array([1.0, 600.0, 10.0])
    star = np.array([0, 1, 2])
    active = np.array([True, True, False])
    usable = np.ones(3, bool)
    nclip, nback, thr = update_active(chi, star, active, usable, 3, 5.0)   # threshold 10
    assert thr == 10.0 and nclip == 1 and nback == 1
    assert active.tolist() == [True, False, True]


def test_inconsistent_stars_finds_a_variable():
    rng = np.random.default_rng(5)
    nstar, per = 400, 8
    star = np.repeat(np.arange(nstar), per)
    chi = rng.normal(size=len(star)) ** 2
    chi[star == 7] *= 30.0                       # a variable: 30 times the scatter
    bad = inconsistent_stars(chi, star, np.ones(len(star), bool), nstar,
                             np.zeros(nstar, bool), 1)
    assert bad.tolist() == [7]


# -- orders ------------------------------------------------------------------------------------
def test_affordable_order(caplog):
    need9 = MIN_STARS_PER_TERM * n_terms(9)
    assert affordable_order(9, np.array([need9, need9 + 10, 5 * need9]), 1, "astrometric") == 9
    with caplog.at_level(logging.WARNING, logger="mosaicfit"):
        got = affordable_order(9, np.array([MIN_STARS_PER_TERM * n_terms(4)] * 3), 1, "flux")
    assert got == 4 and "reduced from 9 to 4" in caplog.text
    assert affordable_order(7, np.array([3, 3]), 0, "flux") == 0
    assert affordable_order(7, np.array([], int), 1, "flux") == 1


# -- association -------------------------------------------------------------------------------
def _offset(ra, dec, dra_arcsec, ddec_arcsec):
    return tangent_to_sky(np.radians(dra_arcsec / 3600.0), np.radians(ddec_arcsec / 3600.0),
                          ra, dec)


def test_cross_match_groups_and_drops_ambiguous_groups():
    ra0, dec0 = 150.0, 2.0
    pos = [(0.0, 0.0, 1), (0.3, 0.0, 2), (0.0, 0.2, 3),      # one star seen in 3 visits
           (20.0, 0.0, 1), (20.4, 0.0, 1), (20.2, 0.1, 2),   # two visit-1 detections: ambiguous
           (40.0, 0.0, 1)]                                   # a single detection
    ra, dec = _offset(ra0, dec0, np.array([p[0] for p in pos]), np.array([p[1] for p in pos]))
    visit = np.array([p[2] for p in pos])
    star, nstar, namb = cross_match(ra, dec, visit, 1.0, min_visits=1)
    assert namb == 1 and nstar == 2
    assert star[0] == star[1] == star[2] >= 0 and np.all(star[3:6] == -1) and star[6] >= 0
    star2, nstar2, _ = cross_match(ra, dec, visit, 1.0, min_visits=2)
    assert nstar2 == 1 and star2[6] == -1


def test_match_reference_is_one_to_one_and_the_nearer_wins():
    sra, sdec = _offset(150.0, 2.0, np.array([0.0, 0.5, 30.0]), np.zeros(3))
    rra, rdec = _offset(150.0, 2.0, np.array([0.2, 60.0]), np.zeros(2))
    assert match_reference(sra, sdec, rra, rdec, 1.0).tolist() == [0, -1, -1]
    assert match_reference(sra, sdec, rra[:0], rdec[:0], 1.0).tolist() == [-1, -1, -1]


# -- the astrometric chain ---------------------------------------------------------------------
def test_ccd_placement_round_trip_and_derivatives():
    cam = hsc()
    pl = CcdPlacement(cam, {50: (3.0, -2.0, 1e-4), 101: (-1.0, 4.0, -2e-4)})
    x, y = np.array([0.0, 1000.0, 2047.0]), np.array([0.0, 3000.0, 4175.0])
    for ccd in (50, 101, 7):
        u, v = pl.to_focal_plane(ccd, x, y)
        bx, by = pl.to_pixel(ccd, u, v)
        assert np.allclose(bx, x, atol=1e-8) and np.allclose(by, y, atol=1e-8)
    ox, oy = pl.origin(50)
    u0, v0 = pl.nominal(50, x, y)
    g = np.array([3.0, -2.0, 1e-4])
    _, _, ru, rv = pl.place(ox, oy, *g, u0, v0)
    G = pl.derivatives(ru, rv)
    for k, h in enumerate((1e-3, 1e-3, 1e-8)):
        dg = np.zeros(3)
        dg[k] = h
        up, vp, _, _ = pl.place(ox, oy, *(g + dg), u0, v0)
        um, vm, _, _ = pl.place(ox, oy, *(g - dg), u0, v0)
        assert np.allclose((up - um) / (2 * h), G[:, 0, k], atol=1e-5)
        assert np.allclose((vp - vm) / (2 * h), G[:, 1, k], atol=1e-5)


def test_astrometric_chain_derivatives_match_finite_differences():
    """d(xi, eta)/d(dx, dy, theta) through polynomial x optics x placement (what the fit's CCD
    columns are) against central differences of the model's own positions."""
    cam = hsc()
    rng = np.random.default_rng(2)
    order = 5
    T = n_terms(order)
    coef = rng.normal(scale=1e-3, size=(1, 2, T))
    coef[0, 0, 1], coef[0, 1, 2] = 3000.0, 3000.0            # ~the field in arcsec
    pl = CcdPlacement(cam)
    model = AstrometricModel(pl, Optics(cam, 0.0131), TractPlane((150.0, 2.0)), order,
                             {0: coef[0]})
    ccd = 22
    x, y = rng.uniform(0, 2047, 50), rng.uniform(0, 4175, 50)
    ox, oy = pl.origin(ccd)
    u0, v0 = pl.nominal(ccd, x, y)

    def xi_eta(g):
        u, v, ru, rv = pl.place(ox, oy, *g, u0, v0)
        a, b = model.optics(u, v)
        return model.basis.evaluate(coef[0], a, b), (u, v, ru, rv, a, b)

    g0 = np.zeros(3)
    _, (u, v, ru, rv, a, b) = xi_eta(g0)
    G = model.placement_derivatives(coef, np.zeros(len(x), int), a, b, u, v, ru, rv, True)
    for k, h in enumerate((0.01, 0.01, 1e-7)):
        dg = np.zeros(3)
        dg[k] = h
        num = (xi_eta(g0 + dg)[0] - xi_eta(g0 - dg)[0]) / (2 * h)      # (2, n)
        assert np.allclose(num.T, G[:, :, k], rtol=1e-5, atol=1e-9 * np.abs(num).max())
    # the fit takes the optics' values and Jacobian from one evaluation: the same numbers
    a1, b1, jac = model.optics.values_and_jacobian(u, v)
    np.testing.assert_array_equal(a1, a)
    np.testing.assert_array_equal(b1, b)
    for j1, j0 in zip(jac, model.optics.jacobian(u, v)):
        np.testing.assert_array_equal(j1, j0)
    np.testing.assert_array_equal(
        model.placement_derivatives(coef, np.zeros(len(x), int), a, b, u, v, ru, rv, True,
                                    jac), G)


# -- the polynomial basis ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["legendre", "chebyshev", "monomial"])
def test_basis_matches_numpy(kind):
    rng = np.random.default_rng(1)
    order = 6
    basis = PolyBasis(order, kind)
    c = rng.normal(size=basis.n_terms)
    u, v = rng.uniform(-1, 1, 100), rng.uniform(-1, 1, 100)
    C = np.zeros((order + 1, order + 1))
    for (i, j), x in zip(basis.terms, c):
        C[i, j] = x
    ref = {"legendre": legendre.legval2d, "chebyshev": chebyshev.chebval2d,
           "monomial": np.polynomial.polynomial.polyval2d}[kind](u, v, C)
    assert np.allclose(basis.evaluate(c, u, v), ref, atol=1e-12)
    assert np.array_equal(basis.vector(C), c)
    assert basis.terms[basis.index(2, 3)] == (2, 3)
    val, du, dv = basis.evaluate_with_gradients(c, u, v)
    h = 1e-6
    assert np.allclose(du, (basis.evaluate(c, u + h, v) - basis.evaluate(c, u - h, v)) / (2 * h),
                       atol=1e-6)


@pytest.mark.parametrize("kind,min_order", [("legendre", 0), ("monomial", 2)])
def test_basis_evaluates_a_coefficient_set_per_point(kind, min_order):
    """evaluate_sets (one C++ pass, each point its own set, e.g. its visit's) is the
    per-set evaluation, values and gradients."""
    rng = np.random.default_rng(2)
    basis = PolyBasis(7, kind, min_order=min_order)
    coef = rng.normal(size=(4, 2, basis.n_terms))
    n = 30000                                  # above the C++ kernel's threading threshold
    group = rng.integers(0, 4, n)
    u, v = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    val, du, dv = basis.evaluate_sets(coef, group, u, v, gradients=True)
    (only,) = basis.evaluate_sets(coef, group, u, v)
    assert np.array_equal(only, val)
    for g in range(4):
        m = group == g
        ref = basis.evaluate_with_gradients(coef[g], u[m], v[m])
        for got, want in zip((val, du, dv), ref):
            assert np.allclose(got[:, m], want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        basis.evaluate_sets(coef, np.full(n, 4), u, v)


def test_basis_fit_recovers_a_polynomial_far_from_the_origin():
    basis = PolyBasis(4, "monomial", min_order=1)
    rng = np.random.default_rng(4)
    c = rng.normal(size=basis.n_terms) * np.array([10.0 ** -(i + j) for i, j in basis.terms])
    u, v = rng.uniform(13000, 15000, 400), rng.uniform(-9000, -5000, 400)
    got = basis.fit(u, v, basis.evaluate(c, u, v))
    assert np.allclose(basis.evaluate(got, u, v), basis.evaluate(c, u, v), rtol=1e-9)
    with pytest.raises(ValueError, match="too few"):
        basis.fit(u[:5], v[:5], u[:5])


# -- the configuration table -------------------------------------------------------------------
def test_every_configuration_key_is_read_by_the_code():
    """Each key of config.OPTIONS is read somewhere outside config.py (as cfg.KEY or, in a
    task's configuration dict, cfg["KEY"]) or by config.py's own column map: a key that
    nothing reads is a promise the code does not keep."""
    text = ""
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py") and f != "config.py":
                with open(os.path.join(folder, f)) as fh:
                    text += fh.read()
    with open(os.path.join(PKG, "config.py")) as fh:
        own = fh.read()
    for o in OPTIONS:
        read_elsewhere = re.search(rf'\.{o.name}\b|\["{o.name}"\]', text)
        read_here = re.search(rf'"{o.name}"\)?:\s*$|\("{o.name}", "', own, re.M)
        assert read_elsewhere or read_here, f"configuration key {o.name} is never read"


def test_configuration_parsing():
    cfg = MosaicConfig().update(["fittingOrder=7", "config.radXMatch=2.5", "solveCcd=off"])
    assert (cfg.fittingOrder, cfg.radXMatch, cfg.solveCcd) == (7, 2.5, False)
    with pytest.raises(MosaicError, match="did you mean fittingOrder"):
        MosaicConfig().update(["fitingOrder=7"])
    with pytest.raises(MosaicError, match="must be <= 15"):
        MosaicConfig(fittingOrder=16).validate()
    with pytest.raises(MosaicError, match="KEY=VALUE"):
        ExposureConfig().update(["threads"])
    with pytest.raises(MosaicError, match="valid keys of calibrateCatalog.py"):
        CatalogConfig().update(["interpolate=True"])           # another command's key
    assert "config.fittingOrder=9\n" in MosaicConfig().to_text()
    assert MosaicConfig(extendednessForStarSelection="ext").column_map() == {"extendedness": "ext"}


def _changed_by_dict(a, b):
    """The definition, detection by detection: a detection is its row in the run's
    selection; it changed when it is in one association only, or its star's first detection
    (in that order) or its star's reference differ."""
    def labels(d):
        keys = d.det.row.tolist()
        first = {}
        for k, s in sorted(zip(keys, d.star.tolist())):
            first.setdefault(s, k)
        return {k: (first[s], int(d.ref_of_star[s])) for k, s in zip(keys, d.star.tolist())}
    la, lb = labels(a), labels(b)
    return sum(1 for k in set(la) | set(lb) if la.get(k) != lb.get(k))


def test_changed_detections_counts_what_the_definition_does():
    from types import SimpleNamespace
    from mosaicfit.fit.solve import _changed_detections
    rng = np.random.default_rng(3)

    def assoc(row, star, ref_of_star):
        return SimpleNamespace(det=SimpleNamespace(row=row), star=star, nstar=len(ref_of_star),
                               ref_of_star=ref_of_star)
    n = 3000
    rows = np.arange(n)
    star = rng.integers(0, 800, n)
    ref = np.where(rng.uniform(size=800) < 0.3, rng.integers(0, 500, 800), -1)
    a = assoc(rows, star, ref)
    assert _changed_detections(a, a) == 0
    # b: some detections gone, some new (rows a does not have), some stars merged or split,
    # some references changed
    keep = rng.uniform(size=n) > 0.05
    star_b = np.where(rng.uniform(size=n) < 0.03, rng.integers(0, 900, n), star)
    ref_b = np.concatenate([np.where(rng.uniform(size=800) < 0.02, 7, ref), np.full(100, -1)])
    m = 100
    b = assoc(np.concatenate([rows[keep], n + np.arange(m)]),
              np.concatenate([star_b[keep], rng.integers(0, 900, m)]), ref_b)
    want = _changed_by_dict(a, b)
    assert 200 < want < n
    assert _changed_detections(a, b) == want == _changed_detections(b, a)


def test_reference_errors_from_the_detections_offsets():
    """The catalogue's error scale and floor from the offsets of the stars' detections
    (averaged) from it: the same whatever the fitted star positions (pinned to the catalogue
    or free), recovered to the precision that N stars allow."""
    from mosaicfit.fit.errors import detection_offsets, fit_reference_errors
    rng = np.random.default_rng(5)
    nstar, sig_det = 6000, 1.0e-3                   # arcsec
    n_det = rng.integers(1, 7, nstar)
    star = np.repeat(np.arange(nstar), n_det)
    cat_sig = rng.uniform(0.5e-3, 3e-3, nstar)
    scale, floor = 1.5, 1.0e-3
    ref = rng.normal(0, 1, (nstar, 2)) * np.sqrt(scale ** 2 * cat_sig ** 2 + floor ** 2)[:, None]
    det = rng.normal(0, sig_det, (len(star), 2))    # true positions at 0
    w = np.full(len(star), sig_det ** -2)
    act = np.ones(len(star), bool)
    fits_ = []
    for xstar in (ref, np.zeros((nstar, 2)), rng.normal(0, 1e-3, (nstar, 2))):
        resid = det - xstar[star]                   # model - star
        d2, var_det, ok, h = detection_offsets(xstar, ref, resid, w, star, act, nstar)
        assert ok.all() and np.allclose(var_det, sig_det ** 2 / n_det) and not h.any()
        e = fit_reference_errors(d2, cat_sig ** 2, var_det, 2)
        fits_.append((float(e.scale[0]), e.floor))
    assert np.allclose(fits_, fits_[0], rtol=1e-9, atol=1e-12)
    # ~6000 stars x 2 axes: the reference variance to ~3%, of which scale and floor share
    assert abs(fits_[0][0] - scale) < 0.15 and abs(fits_[0][1] - floor) < 0.4e-3, fits_[0]
    # the model's share h of the offsets (fit.errors.model_leverage) is put back
    d2, var_det, ok, _ = detection_offsets(ref, ref, det - ref[star], w, star, act, nstar)
    hm = np.full(len(star), 0.3)
    _, _, _, hbar = detection_offsets(ref, ref, det - ref[star], w, star, act, nstar, hm)
    assert np.allclose(hbar, 0.3)
    e = fit_reference_errors(0.7 * d2, cat_sig ** 2, var_det, 2, hbar)
    assert np.isclose(float(e.scale[0]), fits_[0][0]) and np.isclose(e.floor, fits_[0][1])


# -- residual planes per CCD (fit.uncertainty.coherent_residuals) ------------------------------
def test_coherent_residuals_are_each_ccds_weighted_plane():
    """Every (visit, CCD) at once equals each one's own weighted least-squares plane; a
    plane put into one CCD's residuals is flagged there, the noise elsewhere is not."""
    from mosaicfit.fit.uncertainty import COHERENT_SIGMA, coherent_residuals
    from mosaicfit.fit.clipping import chi2_quantile
    rng = np.random.default_rng(5)
    cam = hsc()
    n = 6000
    visit = rng.choice([902000, 902002], n)
    ccd = rng.integers(0, 20, n)
    x, y = rng.uniform(0, 2048, n), rng.uniform(0, 4176, n)
    sig = rng.uniform(0.005, 0.03, n)
    w = 1 / sig ** 2
    res = rng.normal(0, sig)
    plane = (visit == 902002) & (ccd == 7)
    res[plane] += 0.01 + 0.02 * (x[plane] / 2048 - 0.5)
    active = rng.random(n) > 0.05
    active[(visit == 902000) & (ccd == 3)] &= np.arange(n)[(visit == 902000) & (ccd == 3)] < 0
    out = coherent_residuals(res, w, active, visit, ccd, x, y, cam)
    assert (902000, 3) not in out                      # no active detection
    assert len(out) == 39
    for (v, c), (rms, noise, m, bad) in out.items():
        on = active & (visit == v) & (ccd == c)
        A = np.stack([np.ones(on.sum()), x[on] / 2048 - 0.5, y[on] / 4176 - 0.5], axis=1)
        sw = np.sqrt(w[on])
        b = np.linalg.lstsq(A * sw[:, None], res[on] * sw, rcond=None)[0]
        chi2 = np.sum(w[on] * (res[on] - A @ b) ** 2)
        C = np.linalg.inv((A * w[on, None]).T @ A) * max(1.0, chi2 / (on.sum() - 3))
        M = np.diag([1.0, 1 / 12, 1 / 12])
        assert m == on.sum()
        assert rms == pytest.approx(np.sqrt(b @ M @ b), rel=1e-9)
        assert noise == pytest.approx(np.sqrt(np.trace(M @ C)), rel=1e-9)
        assert bad == (b @ np.linalg.solve(C, b) > chi2_quantile(3, COHERENT_SIGMA)
                       and rms > 0.002)
        assert bad == ((v, c) == (902002, 7))


# -- star selection ----------------------------------------------------------------------------
def _catalog(rng, n):
    x = rng.uniform(-2.0, 2050.0, n)
    y = rng.uniform(-2.0, 4178.0, n)
    flux = rng.choice([100.0, 200.0, 300.0], n) * rng.integers(1, 4, n)   # ties in a cell
    x[rng.random(n) < 0.03] = np.nan
    return dict(x=x, y=y, flux=flux, flux_err=np.full(n, 10.0) * rng.uniform(0.5, 3.0, n),
                centroid_flag=rng.random(n) < 0.05, flux_flag=rng.random(n) < 0.05,
                saturated=rng.random(n) < 0.05, saturated_center=rng.random(n) < 0.05,
                extendedness=np.where(rng.random(n) < 0.1, np.nan, rng.choice([0.0, 1.0], n)),
                psf_used=rng.random(n) < 0.2)


def _select_one_by_one(cat, width, height, cell, per_cell, brightest, min_snr):
    """meas_mosaic's SourceReader rule written out source by source."""
    good = []
    for i in range(len(cat["x"])):
        x, y, f, e = cat["x"][i], cat["y"][i], cat["flux"][i], cat["flux_err"][i]
        if not (np.isfinite(x) and np.isfinite(y) and f > 0 and e > 0 and f / e >= min_snr):
            continue
        if not (-0.5 <= x < width - 0.5 and -0.5 <= y < height - 0.5):
            continue
        if cat["centroid_flag"][i] or cat["flux_flag"][i] or cat["saturated"][i] \
                or cat["saturated_center"][i]:
            continue
        ext = cat["extendedness"][i]
        if not (cat["psf_used"][i] or (np.isfinite(ext) and ext < 0.5)):
            continue
        c = (min(max(math.floor(x + 0.5), 0), width - 1) // cell,
             min(max(math.floor(y + 0.5), 0), height - 1) // cell)
        good.append((c, -f, i))
    keep, count = [], {}
    for c, _, i in sorted(good):                   # brightest first, then catalogue order
        count[c] = count.get(c, 0) + 1
        if count[c] <= per_cell:
            keep.append(i)
    if brightest and len(keep) > brightest:
        keep = sorted(keep, key=lambda i: (-cat["flux"][i], i))[:brightest]
    return sorted(keep)


@pytest.mark.parametrize("brightest", [0, 7])
def test_star_selection_of_many_ccds_at_once_is_each_ccds_own(brightest):
    from mosaicfit.fit.selection import select_stars_many
    rng = np.random.default_rng(5)
    cats = [_catalog(rng, n) for n in (300, 0, 1, 57, 800)]
    widths, heights = [2048, 2048, 2048, 1024, 2048], [4176, 4176, 4176, 1024, 4176]
    got = select_stars_many(cats, widths, heights, 512, 2, brightest, False, 5.0)
    for cat, w, h, g in zip(cats, widths, heights, got):
        assert g.tolist() == _select_one_by_one(cat, w, h, 512, 2, brightest, 5.0)
    assert sum(len(g) for g in got) >= 15         # the rule had something to choose from
