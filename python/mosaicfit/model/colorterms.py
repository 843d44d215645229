"""Colour terms: reference-catalogue magnitudes transformed to HSC filters.

A colour term turns the magnitudes of a reference catalogue (Pan-STARRS1, SDSS) into the
magnitude a star would have in an HSC filter::

    mag = primary + c0 + c1 * (primary - secondary) + c2 * (primary - secondary)**2

(``primary``, ``secondary`` are AB magnitudes in two bands of the reference catalogue), as in
LSST's ``lsst.pipe.tasks.colorterms.Colorterm`` and hscPipe's ``meas_photocal``.

The coefficients are data, shipped in ``data/colorterms/<library>.json`` with their source
(repository, path, commit). Two libraries are shipped:

``hscpipe`` (the default)
    the values hscPipe's mosaic.py used (HSC fork of obs_subaru, ``config/hsc/colorterms.py``):
    HSC-G, -R, -I, -I2, -Z, -Y, NB0816, NB0921 for ``sdss*`` and ``ps1*`` catalogues. NB0387,
    NB0515 and the other narrow bands have no term and are calibrated without one
    (``doColorTerms=False``).
``lsst``
    the later set of LSST's obs_subaru (``config/colorterms.py``), which also covers HSC-R2,
    IB0945 and the narrow bands NB0387 ... NB1010.

A library maps reference-catalogue name patterns (``fnmatch``, e.g. ``ps1*`` matches
``ps1_pv3_3pi_20170110``, ``sdss*`` matches ``sdss-dr9-fink-v5b``) to a term per HSC filter.
Like LSST's ColortermLibrary, an exact catalogue name wins over patterns, and a name matching
several patterns is an error. Filter names are HSC's physical filter names (``HSC-I``,
``NB0921``); hscPipe's short names (``i``, ``i2``, ``N921``, ``N1010``) are accepted too.

Reference tables follow the LSST convention: ``<band>_flux`` and ``<band>_fluxErr`` in nJy,
AB magnitude = -2.5 log10(flux) + 31.4.
"""
import fnmatch
import json
import os
import re
from dataclasses import dataclass

import numpy as np

from ..units import AB_NJY_ZEROPOINT

__all__ = ["Colorterm", "ColortermLibrary", "ColortermLookupError", "DEFAULT_LIBRARY",
           "DEFAULT_BAND_FOR_FILTER", "available_libraries", "load_library",
           "canonical_filter_name", "default_band", "find_colorterm", "reference_magnitudes"]

_DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "colorterms")

#: library used when none is named
DEFAULT_LIBRARY = "hscpipe"

_MAG_PER_LN = 2.5 / np.log(10.0)

#: Reference band used for each HSC filter when no colour term is applied (the package's one
#: filter -> band table). The narrow-band
#: and I2 entries NB0387, NB0515 -> g, NB0816 -> i, NB0921, NB1010 -> z, HSC-I2 -> i are
#: hscPipe's (obs_subaru config/hsc/filterMap.py); the others are the band that contains the
#: filter's wavelength (z, not y, for the reddest, as hscPipe did for NB1010: SDSS has no y).
DEFAULT_BAND_FOR_FILTER = {
    "HSC-G": "g", "HSC-R": "r", "HSC-R2": "r", "HSC-I": "i", "HSC-I2": "i",
    "HSC-Z": "z", "HSC-Y": "y",
    "NB0387": "g", "NB0400": "g", "NB0468": "g", "NB0515": "g", "NB0527": "g",
    "NB0656": "r", "NB0718": "i", "NB0816": "i", "NB0921": "z", "NB0926": "z",
    "NB0973": "z", "NB1010": "z", "IB0945": "z",
}


class ColortermLookupError(LookupError):
    """A reference-catalogue name matches several patterns of a colour-term library."""


@dataclass(frozen=True)
class Colorterm:
    """Colour term for one (reference catalogue, HSC filter) pair.

    ``mag = primary + c0 + c1 * (primary - secondary) + c2 * (primary - secondary)**2`` where
    ``primary`` and ``secondary`` name bands of the reference catalogue."""
    primary: str
    secondary: str
    c0: float = 0.0
    c1: float = 0.0
    c2: float = 0.0

    @property
    def is_identity(self):
        """True when the term returns the primary magnitude unchanged."""
        return self.c0 == 0.0 and (self.primary == self.secondary
                                   or (self.c1 == 0.0 and self.c2 == 0.0))

    @property
    def bands(self):
        """Reference bands the term reads (one when primary == secondary)."""
        return (self.primary,) if self.primary == self.secondary else (self.primary,
                                                                       self.secondary)

    def transform_mags(self, mag_primary, mag_secondary):
        """Magnitude in the target filter from the primary and secondary magnitudes (arrays or
        scalars; NaN propagates)."""
        mp = np.asarray(mag_primary, dtype=float)
        color = mp - np.asarray(mag_secondary, dtype=float)
        return mp + self.c0 + color * (self.c1 + color * self.c2)

    def propagate_errors(self, err_p, err_s, color=None):
        """Error of the transformed magnitude from the errors of the two inputs.

        Without ``color`` this is LSST's ``Colorterm.propagateFluxErrors``:
        ``hypot((1 + c1) * err_p, c1 * err_s)`` (linear, so it holds for magnitude errors and,
        as LSST uses it, for flux errors; it leaves out the c2 term, i.e. it is exact at colour
        0). With ``color`` (primary - secondary, magnitudes) it is the first-order propagation
        of magnitude errors through the full quadratic:
        ``hypot((1 + c1 + 2 c2 color) * err_p, (c1 + 2 c2 color) * err_s)``. The two inputs are
        taken as independent; when primary == secondary the colour is identically 0 and the
        error is ``err_p``."""
        ep = np.asarray(err_p, dtype=float)
        es = np.asarray(err_s, dtype=float)
        if self.primary == self.secondary:
            return np.abs(ep) + np.zeros(np.shape(es))
        slope = self.c1 if color is None else self.c1 + 2.0 * self.c2 * np.asarray(color, float)
        return np.hypot((1.0 + slope) * ep, slope * es)

    def formula(self):
        """The term as text, e.g. ``i + 0.000643 - 0.130078 (i - z) - 0.006855 (i - z)^2``."""
        text = self.primary
        col = f"({self.primary} - {self.secondary})"
        if self.primary != self.secondary:
            for c, suffix in ((self.c0, ""), (self.c1, f" {col}"), (self.c2, f" {col}^2")):
                if c != 0.0:
                    text += f" {'-' if c < 0 else '+'} {abs(c):.8g}{suffix}"
        elif self.c0 != 0.0:
            text += f" {'-' if self.c0 < 0 else '+'} {abs(self.c0):.8g}"
        return text


class ColortermLibrary:
    """Colour terms per reference-catalogue name pattern and HSC filter.

    ``data`` maps a catalogue name or fnmatch pattern to ``{filter: Colorterm}``;
    ``labels`` maps the same keys to a short catalogue label for messages (``PS1``)."""

    def __init__(self, data, name="custom", labels=None, sources=(), description=""):
        self.name = name
        self.data = {pat: {canonical_filter_name(f): t for f, t in terms.items()}
                     for pat, terms in data.items()}
        self.labels = dict(labels or {})
        self.sources = list(sources)
        self.description = description

    @classmethod
    def from_json(cls, path):
        """Load a library from a JSON file.

        The file holds ``refcats``: {name or pattern: {"label": ..., "terms": {filter: {"primary",
        "secondary", "c0", "c1", "c2"}}}} and optionally ``name`` (default: the file name without
        extension), ``sources`` and ``description``.
        """
        with open(path) as f:
            d = json.load(f)
        data, labels = {}, {}
        for pat, entry in d["refcats"].items():
            labels[pat] = entry.get("label", pat)
            data[pat] = {f: Colorterm(t["primary"], t["secondary"], float(t.get("c0", 0.0)),
                                      float(t.get("c1", 0.0)), float(t.get("c2", 0.0)))
                         for f, t in entry["terms"].items()}
        return cls(data, name=d.get("name", os.path.splitext(os.path.basename(path))[0]),
                   labels=labels, sources=d.get("sources", ()),
                   description=d.get("description", ""))

    def catalog_key(self, refcat_name):
        """The library key that applies to ``refcat_name``: the name itself if present, else
        the single pattern it matches; None if none matches. Several matching patterns raise
        ColortermLookupError (as LSST's ColortermLibrary does)."""
        if refcat_name in self.data:
            return refcat_name
        hits = [p for p in self.data if fnmatch.fnmatchcase(refcat_name, p)]
        if len(hits) > 1:
            raise ColortermLookupError(f"reference catalogue {refcat_name!r} matches several "
                                       f"colour-term entries of library {self.name!r}: {hits}")
        return hits[0] if hits else None

    def label(self, refcat_name):
        """Short label of a catalogue for messages (e.g. PS1); the name itself if there is none."""
        key = self.catalog_key(refcat_name)
        return self.labels.get(key, refcat_name) if key is not None else refcat_name

    def get(self, refcat_name, filter_name):
        """The Colorterm for (catalogue, filter), or None when the library has none."""
        key = self.catalog_key(refcat_name)
        if key is None:
            return None
        return self.data[key].get(canonical_filter_name(filter_name))

    def filters(self, refcat_name):
        """HSC filters with a term for this catalogue (sorted)."""
        key = self.catalog_key(refcat_name)
        return sorted(self.data[key]) if key is not None else []


_LIBRARIES = {}


def available_libraries():
    """Names of the shipped colour-term libraries."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(_DATA) if f.endswith(".json"))


def load_library(library=None):
    """A ColortermLibrary: a shipped one by name (default DEFAULT_LIBRARY), a path to a JSON
    file of the same layout, or a ColortermLibrary (returned as is)."""
    if isinstance(library, ColortermLibrary):
        return library
    library = library or DEFAULT_LIBRARY
    if library not in _LIBRARIES:
        path = library if (os.sep in library or library.endswith(".json")) else \
            os.path.join(_DATA, library + ".json")
        if not os.path.exists(path):
            raise ValueError(f"unknown colour-term library {library!r} "
                             f"(shipped: {', '.join(available_libraries())})")
        _LIBRARIES[library] = ColortermLibrary.from_json(path)
    return _LIBRARIES[library]


_BROAD = {"G": "HSC-G", "R": "HSC-R", "R2": "HSC-R2", "I": "HSC-I", "I2": "HSC-I2",
          "Z": "HSC-Z", "Y": "HSC-Y"}


def canonical_filter_name(name):
    """HSC physical filter name for hscPipe/LSST spellings: ``i``/``HSC-i`` -> ``HSC-I``,
    ``i2`` -> ``HSC-I2``, ``N921``/``NB921`` -> ``NB0921``, ``N1010``/``NB01010`` ->
    ``NB1010``, ``I945`` -> ``IB0945``. Other names are returned unchanged."""
    s = str(name).strip()
    u = s.upper()
    if u.startswith("HSC-") and u[4:] in _BROAD:
        return _BROAD[u[4:]]
    if u in _BROAD:
        return _BROAD[u]
    m = re.fullmatch(r"(NB?|IB?)0*(\d{3,4})", u)
    if m:
        return ("NB" if m.group(1)[0] == "N" else "IB") + f"{int(m.group(2)):04d}"
    return s


def default_band(filter_name):
    """Reference band for an HSC filter without colour term (DEFAULT_BAND_FOR_FILTER), or
    None if the filter is unknown."""
    return DEFAULT_BAND_FOR_FILTER.get(canonical_filter_name(filter_name))


def find_colorterm(refcat_name, filter_name, library=None):
    """The Colorterm for reference catalogue ``refcat_name`` (e.g. ``ps1_pv3_3pi_20170110``)
    and HSC filter ``filter_name``, or None when the library has no term for them."""
    return load_library(library).get(refcat_name, filter_name)


def _band_mag(table, band):
    """(mag, mag_err) of a band of an LSST-convention table; NaN where the flux is missing or
    not positive (and the error where fluxErr is missing or negative)."""
    cols = table.colnames if hasattr(table, "colnames") else list(table.keys())
    if f"{band}_flux" not in cols:
        raise KeyError(f"reference catalogue has no {band}_flux column")
    flux = np.ma.filled(np.ma.asarray(table[f"{band}_flux"], dtype=float), np.nan)
    if f"{band}_fluxErr" in cols:
        ferr = np.ma.filled(np.ma.asarray(table[f"{band}_fluxErr"], dtype=float), np.nan)
    else:
        ferr = np.full(flux.shape, np.nan)
    good = np.isfinite(flux) & (flux > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(good, -2.5 * np.log10(np.where(good, flux, 1.0)) + AB_NJY_ZEROPOINT, np.nan)
        err = np.where(good & (ferr >= 0), _MAG_PER_LN * ferr / np.where(good, flux, 1.0),
                       np.nan)
    return mag, err


def reference_magnitudes(table, refcat_name, filter_name, band_for_filter=None, apply=True,
                         library=None):
    """AB magnitudes of reference stars in an HSC filter.

    table: LSST-convention reference table (astropy Table or dict of arrays) with
        ``<band>_flux``/``<band>_fluxErr`` in nJy.
    refcat_name: the catalogue's name (chooses the colour terms by pattern).
    filter_name: HSC filter (``HSC-I``, ``NB0921``, or hscPipe's ``i``, ``N921``).
    band_for_filter: the band used as is when no colour term is applied: a band name
        (``"i"``), a mapping filter -> band, a callable, or None for DEFAULT_BAND_FOR_FILTER.
    apply: use the colour term when the library has one (doColorTerms).
    library: colour-term library (name, JSON path or ColortermLibrary; default
        DEFAULT_LIBRARY).

    Returns (mag, mag_err, description): arrays (NaN where a needed flux is missing or not
    positive; mag_err NaN where a flux error is missing) and one line for the log. The error
    is propagated as Colorterm.propagate_errors with each star's colour. When the term needs
    a band the table lacks, the band_for_filter band is used as is, and the description says
    so.
    """
    lib = load_library(library)
    fname = canonical_filter_name(filter_name)
    term = lib.get(refcat_name, fname) if apply else None
    label = lib.label(refcat_name)
    cols = set(table.colnames if hasattr(table, "colnames") else table.keys())
    note = ""
    if term is not None and not all(f"{b}_flux" in cols for b in term.bands):
        missing = [f"{b}_flux" for b in term.bands if f"{b}_flux" not in cols]
        note = f" (the {label} colour term needs {', '.join(missing)}, not in the catalogue)"
        term = None
    if term is not None:
        mp, ep = _band_mag(table, term.primary)
        if term.primary == term.secondary:
            ms, es = mp, np.zeros_like(ep)
        else:
            ms, es = _band_mag(table, term.secondary)
        color = mp - ms if term.primary != term.secondary else np.zeros_like(mp)
        mag = term.transform_mags(mp, ms)
        err = term.propagate_errors(ep, es, color=color)
        what = "identity" if term.is_identity else "colour term"
        return mag, err, (f"{label} {what} {term.formula()} for {fname} "
                          f"[library {lib.name}, catalogue {refcat_name}]")
    band = _resolve_band(band_for_filter, fname, filter_name)
    mag, err = _band_mag(table, band)
    if not apply:
        why = "colour terms off"
    elif note:
        why = note.strip()[1:-1]
    else:
        why = f"library {lib.name} has none for {fname} with {refcat_name}"
    return mag, err, f"no colour term: {band} band as is for {fname} ({why})"


def _resolve_band(band_for_filter, fname, given):
    if band_for_filter is None:
        band = default_band(fname)
    elif isinstance(band_for_filter, str):
        band = band_for_filter
    elif callable(band_for_filter):
        band = band_for_filter(given)
    else:
        band = band_for_filter.get(given, band_for_filter.get(fname))
    if band is None:
        raise KeyError(f"no reference band given for filter {given!r}")
    return band
