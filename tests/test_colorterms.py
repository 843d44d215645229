"""Colour terms: published coefficients, transformation, error propagation, catalogue-name
patterns, filters without terms, magnitudes from LSST-convention reference tables."""
import json
import os
import re

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

import mosaicfit.model.colorterms as ct
from mosaicfit.model.colorterms import Colorterm, ColortermLibrary, ColortermLookupError, canonical_filter_name, find_colorterm, load_library, reference_magnitudes

PS1 = "ps1_pv3_3pi_20170110"
SDSS = "sdss-dr9-fink-v5b"


def flux(mag):
    """nJy of an AB magnitude."""
    return 10.0 ** (-0.4 * (np.asarray(mag, float) - 31.4))


# ------------------------------------------------------------------------------------------
# shipped data
# ------------------------------------------------------------------------------------------

def test_shipped_libraries_and_sources():
    assert ct.available_libraries() == ["hscpipe", "lsst"]
    assert ct.DEFAULT_LIBRARY == "hscpipe"
    for name in ct.available_libraries():
        path = os.path.join(ct._DATA, name + ".json")
        with open(path) as f:
            d = json.load(f)
        assert d["name"] == name
        assert set(d["refcats"]) == {"hsc*", "sdss*", "ps1*"}
        # every value has a cited source: repository, path and, where it was resolvable,
        # the commit
        assert d["sources"]
        for s in d["sources"]:
            assert s["repo"] in ("lsst/obs_subaru", "HyperSuprime-Cam/obs_subaru")
            assert s["path"].endswith("colorterms.py")
            assert s["commit"] is None and "could not be resolved" in s["what"] \
                or re.fullmatch(r"[0-9a-f]{40}", s["commit"])
        for pat, entry in d["refcats"].items():
            for f, t in entry["terms"].items():
                assert canonical_filter_name(f) == f
                assert t["primary"] in "ugrizy" and t["secondary"] in "ugrizy"
                if pat == "hsc*":          # HSC catalogues need no transformation
                    assert t["primary"] == t["secondary"] and t["c0"] == t["c1"] == t["c2"] == 0


@pytest.mark.parametrize("library, refcat, filt, expected", [
    # hscPipe era (HyperSuprime-Cam/obs_subaru config/hsc/colorterms.py), as published
    ("hscpipe", PS1, "HSC-G", ("g", "r", 0.00730066, 0.06508481, -0.01510570)),
    ("hscpipe", PS1, "HSC-I", ("i", "z", 0.00166891, -0.13944659, -0.03034094)),
    ("hscpipe", PS1, "HSC-I2", ("i", "z", 0.00180361, -0.18483562, -0.02675511)),
    ("hscpipe", PS1, "HSC-Y", ("y", "z", -0.00156858, 0.14747401, 0.02880125)),
    ("hscpipe", PS1, "NB0921", ("z", "y", 0.00142051, -0.59278367, -0.25059679)),
    ("hscpipe", SDSS, "HSC-R", ("r", "i", 0.00231810, 0.01284177, -0.03068248)),
    ("hscpipe", SDSS, "HSC-Y", ("z", "i", 0.01739708, 0.35652971, 0.00574408)),
    ("hscpipe", SDSS, "NB0816", ("i", "z", 0.00927133, -0.63558358, -0.05474862)),
    # lsst/obs_subaru config/colorterms.py
    ("lsst", PS1, "HSC-R2", ("r", "i", -0.000032, -0.002866, -0.012638)),
    ("lsst", PS1, "HSC-Z", ("z", "y", -0.005362, -0.221551, -0.308279)),
    ("lsst", PS1, "NB0387", ("g", "r", 0.427879, 1.869068, 0.540580)),
    ("lsst", PS1, "NB0718", ("i", "r", -0.016294, -0.233139, 0.252505)),
    ("lsst", PS1, "NB1010", ("y", "z", 0.003607, 0.865366, 1.271817)),
    ("lsst", SDSS, "HSC-G", ("g", "r", -0.009777, -0.077235, -0.013121)),
    ("lsst", SDSS, "NB0387", ("u", "g", -0.709229, 0.310719, -0.044107)),
    ("lsst", SDSS, "NB0656", ("r", "i", 0.037014, -0.538947, 0.052489)),
])
def test_published_coefficients(library, refcat, filt, expected):
    assert find_colorterm(refcat, filt, library=library) == Colorterm(*expected)


def test_filter_coverage():
    hp, ls = load_library("hscpipe"), load_library("lsst")
    broad = ["HSC-G", "HSC-I", "HSC-I2", "HSC-R", "HSC-Y", "HSC-Z"]
    for cat in (PS1, SDSS):
        assert hp.filters(cat) == broad + ["NB0816", "NB0921"]
        assert set(ls.filters(cat)) == set(broad) | {
            "HSC-R2", "IB0945", "NB0387", "NB0400", "NB0468", "NB0515", "NB0527", "NB0656",
            "NB0718", "NB0816", "NB0921", "NB0926", "NB0973", "NB1010"}
    assert hp.filters("hsc_dr1") == ["HSC-G", "HSC-I", "HSC-R", "HSC-Y", "HSC-Z"]


# ------------------------------------------------------------------------------------------
# transformation and errors
# ------------------------------------------------------------------------------------------

def test_transform_by_hand():
    # PS1 -> HSC-I (hscpipe): i = 18.0, z = 17.7, colour 0.3:
    # 18.0 + 0.00166891 - 0.13944659 * 0.3 - 0.03034094 * 0.09
    t = find_colorterm(PS1, "HSC-I")
    assert t.transform_mags(18.0, 17.7) == pytest.approx(17.9571042484, abs=1e-12)
    # SDSS -> HSC-G (lsst): g = 20.0, r = 19.5: 20 - 0.009777 - 0.077235 * 0.5 - 0.013121 * 0.25
    t = find_colorterm(SDSS, "HSC-G", library="lsst")
    assert t.transform_mags(20.0, 19.5) == pytest.approx(19.94832525, abs=1e-12)
    # PS1 -> NB0921 (hscpipe): z = 17.5, y = 17.25:
    # 17.5 + 0.00142051 - 0.59278367 * 0.25 - 0.25059679 * 0.0625
    t = find_colorterm(PS1, "NB0921")
    assert t.transform_mags(17.5, 17.25) == pytest.approx(17.337562293125, abs=1e-12)
    # arrays, NaN propagation
    out = t.transform_mags([17.5, np.nan, 17.5], [17.25, 17.0, np.nan])
    assert out[0] == pytest.approx(17.337562293125, abs=1e-12) and np.isnan(out[1:]).all()


def test_formula_text():
    t = find_colorterm(PS1, "HSC-I")
    assert t.formula() == "i + 0.00166891 - 0.13944659 (i - z) - 0.03034094 (i - z)^2"
    assert Colorterm("i", "i").formula() == "i" and Colorterm("i", "i").is_identity
    assert Colorterm("g", "r", c1=0.1).formula() == "g + 0.1 (g - r)"


@pytest.mark.parametrize("library, refcat, filt", [
    ("hscpipe", PS1, "HSC-I"), ("hscpipe", SDSS, "HSC-Y"), ("hscpipe", PS1, "NB0921"),
    ("lsst", PS1, "NB1010"), ("lsst", SDSS, "NB0387")])
def test_error_propagation_against_numeric_derivatives(library, refcat, filt):
    t = find_colorterm(refcat, filt, library=library)
    rng = np.random.default_rng(5)
    mp = rng.uniform(15, 22, 50)
    ms = mp - rng.uniform(-0.5, 2.0, 50)
    ep, es = rng.uniform(0.001, 0.05, 50), rng.uniform(0.001, 0.05, 50)
    h = 1e-6
    dp = (t.transform_mags(mp + h, ms) - t.transform_mags(mp - h, ms)) / (2 * h)
    ds = (t.transform_mags(mp, ms + h) - t.transform_mags(mp, ms - h)) / (2 * h)
    numeric = np.sqrt((dp * ep) ** 2 + (ds * es) ** 2)
    np.testing.assert_allclose(t.propagate_errors(ep, es, color=mp - ms), numeric, rtol=1e-7)
    # without a colour: LSST's Colorterm.propagateFluxErrors, hypot((1 + c1) ep, c1 es) --
    # the numeric derivative at colour 0
    lsst = np.hypot((1 + t.c1) * ep, t.c1 * es)
    np.testing.assert_allclose(t.propagate_errors(ep, es), lsst, rtol=1e-14)
    dp0 = (t.transform_mags(ms + h, ms) - t.transform_mags(ms - h, ms)) / (2 * h)
    ds0 = (t.transform_mags(ms, ms + h) - t.transform_mags(ms, ms - h)) / (2 * h)
    np.testing.assert_allclose(lsst, np.hypot(dp0 * ep, ds0 * es), rtol=1e-7)


def test_identity_term_errors():
    t = Colorterm("i", "i")
    np.testing.assert_allclose(t.propagate_errors([0.01, 0.02], [np.nan, 5.0]), [0.01, 0.02])


# ------------------------------------------------------------------------------------------
# lookup
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("refcat, key", [
    ("ps1_pv3_3pi_20170110", "ps1*"), ("ps1_pv3_3pi_20190101", "ps1*"), ("ps1", "ps1*"),
    ("sdss-dr9-fink-v5b", "sdss*"), ("sdss_dr16", "sdss*"), ("hsc_pdr2", "hsc*"),
    ("gaia_dr2_20200414", None), ("PS1_pv3", None), ("my_ps1", None)])
def test_catalogue_patterns(refcat, key):
    for name in ("hscpipe", "lsst"):
        assert load_library(name).catalog_key(refcat) == key
    if key is None:
        assert find_colorterm(refcat, "HSC-I") is None


def test_exact_name_wins_and_ambiguous_patterns():
    lib = ColortermLibrary({"ps1*": {"HSC-I": Colorterm("i", "z", c1=-0.1)},
                            "ps1_special": {"HSC-I": Colorterm("i", "z", c1=-0.2)},
                            "*_special": {"HSC-I": Colorterm("i", "r", c1=-0.3)}}, name="t")
    assert lib.get("ps1_special", "HSC-I").c1 == -0.2          # exact name first
    assert lib.get("ps1_x", "i").c1 == -0.1
    assert lib.get("sdss_special", "HSC-I").c1 == -0.3
    with pytest.raises(ColortermLookupError, match="several"):
        lib.get("ps1_x_special", "HSC-I")


@pytest.mark.parametrize("given, canonical", [
    ("HSC-I", "HSC-I"), ("i", "HSC-I"), ("HSC-i", "HSC-I"), ("HSC-y", "HSC-Y"),
    ("i2", "HSC-I2"), ("HSC-R2", "HSC-R2"), ("N921", "NB0921"), ("NB921", "NB0921"),
    ("NB0921", "NB0921"), ("N387", "NB0387"), ("N1010", "NB1010"), ("NB01010", "NB1010"),
    ("I945", "IB0945"), ("IB0945", "IB0945"), ("MegaCam-u", "MegaCam-u")])
def test_filter_names(given, canonical):
    assert canonical_filter_name(given) == canonical


def test_short_names_find_the_same_terms():
    assert find_colorterm(PS1, "i") == find_colorterm(PS1, "HSC-I")
    assert find_colorterm(PS1, "N921") == find_colorterm(PS1, "NB0921")
    assert find_colorterm(SDSS, "N1010", library="lsst") == \
        find_colorterm(SDSS, "NB1010", library="lsst")


@pytest.mark.parametrize("filt", ["NB0387", "NB0515", "NB0656", "NB1010", "HSC-R2", "NB0400"])
def test_filters_without_terms_in_hscpipe(filt):
    for cat in (PS1, SDSS):
        assert find_colorterm(cat, filt) is None
    assert find_colorterm(PS1, filt, library="lsst") is not None
    assert find_colorterm("hsc_pdr1", filt) is None


def test_unknown_library(tmp_path):
    with pytest.raises(ValueError, match="unknown colour-term library"):
        load_library("nope")
    # a custom JSON file of the same layout
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"name": "mine", "refcats": {"gaia*": {"label": "Gaia", "terms": {
        "i": {"primary": "phot_g_mean", "secondary": "phot_rp_mean", "c1": 0.5}}}}}))
    lib = load_library(str(p))
    assert lib.get("gaia_dr3", "HSC-I") == Colorterm("phot_g_mean", "phot_rp_mean", 0, 0.5, 0)
    assert load_library(lib) is lib


# ------------------------------------------------------------------------------------------
# magnitudes from reference tables
# ------------------------------------------------------------------------------------------

def _table(mags, errs=0.01):
    t = Table()
    for b, m in mags.items():
        t[f"{b}_flux"] = flux(m)
        t[f"{b}_fluxErr"] = flux(m) * np.asarray(errs) / 1.0857362047581294
    return t


def test_reference_magnitudes_with_colour_term():
    t = _table({"g": [20.0, 19.0], "r": [19.5, 19.2], "i": [18.0, 19.1], "z": [17.7, 19.0]})
    mag, err, desc = reference_magnitudes(t, PS1, "HSC-I", "i")
    assert mag[0] == pytest.approx(17.9571042484, abs=1e-9)
    c = 0.1     # second star, by hand
    assert mag[1] == pytest.approx(19.1 + 0.00166891 - 0.13944659 * c - 0.03034094 * c * c,
                                   abs=1e-9)
    assert desc.startswith("PS1 colour term i + 0.00166891 - 0.13944659 (i - z)")
    assert "for HSC-I" in desc
    # error: first-order propagation through the term with each star's colour, magnitude
    # errors 0.01 in both bands
    slope = -0.13944659 + 2 * -0.03034094 * np.array([0.3, 0.1])
    np.testing.assert_allclose(err, 0.01 * np.hypot(1 + slope, slope), rtol=1e-9)
    # hscPipe short filter names and the lsst library
    mag2, _, desc2 = reference_magnitudes(t, SDSS, "g", "g", library="lsst")
    assert mag2[0] == pytest.approx(19.94832525, abs=1e-9)
    assert desc2.startswith("SDSS colour term g - 0.009777 - 0.077235 (g - r)")


def test_reference_magnitude_errors_against_numeric_flux_derivatives():
    rng = np.random.default_rng(1)
    n = 30
    t = Table({"i_flux": flux(rng.uniform(16, 21, n)), "z_flux": flux(rng.uniform(16, 21, n))})
    t["i_fluxErr"] = t["i_flux"] * rng.uniform(0.001, 0.05, n)
    t["z_fluxErr"] = t["z_flux"] * rng.uniform(0.001, 0.05, n)
    mag, err, _ = reference_magnitudes(t, PS1, "HSC-I2", "i")
    grads = []
    for b in ("i", "z"):
        h = t[f"{b}_flux"] * 1e-7
        up, dn = t.copy(), t.copy()
        up[f"{b}_flux"] = t[f"{b}_flux"] + h
        dn[f"{b}_flux"] = t[f"{b}_flux"] - h
        d = (reference_magnitudes(up, PS1, "HSC-I2", "i")[0]
             - reference_magnitudes(dn, PS1, "HSC-I2", "i")[0]) / (2 * h)
        grads.append(d * t[f"{b}_fluxErr"])
    np.testing.assert_allclose(err, np.hypot(*grads), rtol=1e-5)


def test_missing_and_non_positive_fluxes():
    t = Table()
    t["i_flux"] = MaskedColumn([1e5, 1e5, -5.0, 0.0, np.nan, 1e5], mask=[0, 0, 0, 0, 0, 1])
    t["i_fluxErr"] = [1e3, np.nan, 1e3, 1e3, 1e3, 1e3]
    t["z_flux"] = [1e5, 1e5, 1e5, 1e5, 1e5, 1e5]
    t["z_fluxErr"] = [1e3] * 6
    mag, err, _ = reference_magnitudes(t, PS1, "HSC-I")
    assert np.isfinite(mag[:2]).all() and np.isnan(mag[2:]).all()
    assert np.isfinite(err[0]) and np.isnan(err[1:]).all()
    # a missing secondary flux makes the colour-term magnitude NaN; without colour terms the
    # primary alone is used
    t["z_flux"][0] = -1.0
    mag, _, _ = reference_magnitudes(t, PS1, "HSC-I")
    assert np.isnan(mag[0])
    mag, _, desc = reference_magnitudes(t, PS1, "HSC-I", apply=False)
    assert mag[0] == pytest.approx(-2.5 * 5 + 31.4) and desc.startswith("no colour term: i band")
    # without fluxErr columns: magnitudes, NaN errors
    t2 = Table({"i_flux": [1e5], "z_flux": [1e5]})
    mag, err, _ = reference_magnitudes(t2, PS1, "HSC-I")
    assert np.isfinite(mag).all() and np.isnan(err).all()


@pytest.mark.parametrize("filt, band", [("NB0387", "g"), ("NB0515", "g"), ("NB1010", "z"),
                                        ("NB0656", "r")])
def test_narrow_bands_without_terms_use_their_band(filt, band):
    t = _table({"g": [20.0], "r": [19.5], "i": [19.2], "z": [19.0], "y": [18.9]})
    mag, err, desc = reference_magnitudes(t, PS1, filt, band)
    expect = {"g": 20.0, "r": 19.5, "z": 19.0}[band]
    assert mag[0] == pytest.approx(expect, abs=1e-9) and err[0] == pytest.approx(0.01)
    assert desc.startswith(f"no colour term: {band} band as is for {filt}")
    assert "hscpipe has none" in desc
    # the default band map says the same (hscPipe's filterMap for NB0387/NB0515/NB1010)
    assert reference_magnitudes(t, PS1, filt)[2] == desc


def test_apply_false_and_band_for_filter_forms():
    t = _table({"g": [20.0], "r": [19.5], "i": [18.0], "z": [17.7]})
    mag, _, desc = reference_magnitudes(t, PS1, "HSC-I", "i", apply=False)
    assert mag[0] == pytest.approx(18.0) and "colour terms off" in desc
    assert reference_magnitudes(t, PS1, "HSC-I", {"HSC-I": "z"}, apply=False)[0][0] == \
        pytest.approx(17.7)
    assert reference_magnitudes(t, PS1, "i", {"i": "r"}, apply=False)[0][0] == \
        pytest.approx(19.5)
    assert reference_magnitudes(t, PS1, "HSC-I", lambda f: "g", apply=False)[0][0] == \
        pytest.approx(20.0)
    with pytest.raises(KeyError, match="no reference band"):
        reference_magnitudes(t, PS1, "MegaCam-u", apply=False)
    with pytest.raises(KeyError, match="y_flux"):
        reference_magnitudes(t, PS1, "HSC-Y", "y", apply=False)


def test_term_needing_absent_band_falls_back():
    # SDSS NB0387 (lsst library) needs u; a catalogue without u is used in g as is
    t = _table({"g": [20.0], "r": [19.5]})
    mag, _, desc = reference_magnitudes(t, SDSS, "NB0387", library="lsst")
    assert mag[0] == pytest.approx(20.0)
    assert desc.startswith("no colour term: g band as is") and "u_flux" in desc
    t["u_flux"] = flux([21.0])
    t["u_fluxErr"] = flux([21.0]) * 0.01 / 1.0857362047581294
    mag, _, desc = reference_magnitudes(t, SDSS, "NB0387", library="lsst")
    c = 1.0
    assert mag[0] == pytest.approx(21.0 - 0.709229 + 0.310719 * c - 0.044107 * c * c)
    assert desc.startswith("SDSS colour term u - 0.709229 + 0.310719 (u - g)")


def test_hsc_catalogue_identity_and_dict_input():
    t = {"i_flux": np.array([flux(18.0)]), "i_fluxErr": np.array([flux(18.0) * 0.02])}
    mag, err, desc = reference_magnitudes(t, "hsc_pdr2_wide", "HSC-I", "i")
    assert mag[0] == pytest.approx(18.0) and err[0] == pytest.approx(0.02 * 1.0857362047581294)
    assert desc.startswith("HSC identity i for HSC-I")
