"""The configuration of the three commands: one table of every key (:data:`OPTIONS`).

Each key has a type, a default, the values it allows, a description and the commands that read
it; ``--config KEY=VALUE`` (or ``config.KEY=VALUE``, hscPipe's spelling) sets it, an unknown
key or a value of the wrong type or range is a one-line error naming the key (with the
nearest known key), and ``mosaicfit config`` prints the table, which the README's
configuration section is made from. mosaic.py keys carry meas_mosaic's ``MosaicConfig``
names, with HSC production's defaults (obs_subaru's overrides): order-9 astrometry, order-7
photometry per visit, absolute photometry.

    cfg = MosaicConfig(fittingOrder=7)        # or MosaicConfig().update(["fittingOrder=7"])
    cfg.fittingOrder                          # 7
"""
import difflib
from dataclasses import dataclass

from . import MosaicError

__all__ = ["Option", "OPTIONS", "Config", "MosaicConfig", "ExposureConfig", "CatalogConfig",
           "MATCH_DATASET_CHOICES", "COMMANDS", "describe"]

MOSAIC, EXPOSURE, CATALOG = "mosaic.py", "calibrateExposure.py", "calibrateCatalog.py"
COMMANDS = (MOSAIC, EXPOSURE, CATALOG)

#: values of matchDataset ("" chooses by what the repository holds)
MATCH_DATASET_CHOICES = ("", "refcat", "srcMatch", "icMatch")


@dataclass(frozen=True)
class Option:
    """One configuration key."""
    name: str
    type: type              # bool, int, float or str
    default: object
    doc: str
    commands: tuple = (MOSAIC,)
    choices: tuple = None   # the values allowed (None: any of the type)
    minimum: float = None   # smallest value allowed (inclusive unless `above`)
    maximum: float = None
    above: bool = False     # the value must be strictly above `minimum`

    def parse(self, text):
        """The value of the command-line text `text`, checked (MosaicError otherwise)."""
        s = str(text).strip()
        try:
            if self.type is bool:
                low = s.lower()
                if low in ("true", "t", "1", "yes", "on"):
                    value = True
                elif low in ("false", "f", "0", "no", "off"):
                    value = False
                else:
                    raise ValueError
            elif self.type is int:
                try:
                    value = int(s, 0)           # 0x10 too
                except ValueError:
                    value = int(s)              # 010 (int(.., 0) refuses leading zeros)
            elif self.type is float:
                value = float(s)
            else:
                value = s
        except ValueError:
            what = {bool: "a boolean (True or False)", int: "a valid integer",
                    float: "a number"}[self.type]
            raise MosaicError(f"--config: {self.name}={s!r} is not {what}") from None
        self.check(value)
        return value

    def check(self, value):
        """MosaicError unless `value` is allowed."""
        if self.choices is not None and value not in self.choices:
            raise MosaicError(f"--config: {self.name} must be one of "
                              + ", ".join(repr(c) for c in self.choices) + f" (got {value!r})")
        if self.minimum is not None and (value <= self.minimum if self.above
                                         else value < self.minimum):
            rel = "above" if self.above else ">="
            raise MosaicError(f"--config: {self.name} must be {rel} {self.minimum:g} "
                              f"(got {value!r})")
        if self.maximum is not None and value > self.maximum:
            raise MosaicError(f"--config: {self.name} must be <= {self.maximum:g} "
                              f"(got {value!r})")


_O = Option
#: every configuration key of the three commands, in the order they are stored
OPTIONS = (
    # -- star selection (meas_mosaic's SourceReader) --
    _O("nBrightest", int, 0, "brightest stars kept per CCD (0: no limit beyond the cells)",
       minimum=0),
    _O("cellSize", int, 512, "size in pixels of the cells that limit the stars per area",
       minimum=128),
    _O("nStarPerCell", int, 5, "brightest stars kept per cell", minimum=1),
    _O("includeSaturated", bool, False, "keep saturated stars"),
    _O("extendednessForStarSelection", str, "", "SRC column of the extendedness (a point "
       "source has < 0.5; empty: the catalogue's schema decides)"),
    _O("saturatedForStarSelection", str, "", "SRC flag column of saturated sources (empty: "
       "the schema's)"),
    _O("psfStarForStarSelection", str, "", "SRC flag column of the PSF stars, kept whatever "
       "their extendedness (empty: the schema's)"),
    _O("minSnr", float, 10.0, "detections below this S/N are not used (jointcal: 10)",
       minimum=0.0),
    # -- matching --
    _O("radXMatch", float, 1.0, "arcsec: radius of the matches between visits and to the "
       "reference catalogue", minimum=0.0, above=True),
    _O("numSourceMerge", int, 2, "detections (visits) a star without a reference match needs",
       minimum=1),
    _O("minNumMatch", int, 0, "a CCD with no more than this many reference matches is left "
       "out of the fit (and of the products), as meas_mosaic's; 0: none is", minimum=0),
    _O("associationRounds", int, 3, "re-associate the detections (into stars and with the "
       "reference catalogue) through the fitted astrometry, with radii that follow its "
       "residuals, up to this many times until nothing changes; 0: once through the "
       "single-frame WCS, as hscPipe did", minimum=0),
    _O("requireTractOverlap", bool, True, "write products only for the CCDs that overlap the "
       "tract"),
    # -- regions (pipeline.regions) --
    _O("regionNside", int, 0, "split the run into sky regions, the HEALPix cells (nested, "
       "this nside: cells of ~58.6/nside deg) of its visits' centres, each fitted as one task "
       "(a Dask task with --scheduler, a local process with -j N) with the visits within "
       "regionOverlap of its own, whose products it writes; 0: one fit for the run",
       choices=(0,) + tuple(2 ** k for k in range(14))),
    _O("regionOverlap", float, 3.0, "degrees: a region also fits the visits whose centres lie "
       "within this distance of one of its own (two HSC field diameters: the visits its "
       "border visits overlap, and theirs), so that neighbouring regions agree where they "
       "meet", minimum=0.0),
    _O("regionCcdTerms", bool, True, "with regions: fit each region once for the CCD "
       "placement and flux terms and the visit polynomials' common terms (the camera's, "
       "shared by all regions), then every region "
       "with them held at the regions' consensus (twice the fitting time; off: each region "
       "fits its own, and its products carry them across its borders)"),
    # -- astrometry --
    _O("doSolveWcs", bool, True, "fit the astrometry (else the single-frame WCS is kept)"),
    _O("fittingOrder", int, 9, "order of the per-visit astrometric polynomial",
       minimum=1, maximum=15),
    _O("commonFromOrder", int, 4, "the visits' polynomial terms of this order and above get a "
       "prior at their common value over the visits (in the camera's frame), as wide as their "
       "spread between visits measured by the fit; a visit whose terms depart beyond chance "
       "keeps its own (0: none)", minimum=0, maximum=15),
    _O("internalFitting", bool, True, "use stars without a reference match"),
    _O("solveCcd", bool, True, "fit the CCD offsets (and rotations)"),
    _O("allowRotation", bool, True, "fit the CCD rotations"),
    _O("catRMS", float, 0.040 / 3600.0, "degrees: the reference position error assumed where "
       "the catalogue gives none (hscPipe's meaning and default)", minimum=0.0),
    _O("refPosErrorFloor", float, 0.001, "arcsec added in quadrature to the catalogue's own "
       "position errors (propagated to the epoch)", minimum=0.0),
    _O("astromErrorFloor", float, 0.0, "arcsec added in quadrature to the centroid errors",
       minimum=0.0),
    _O("fitErrorModel", bool, True, "fit the errors from the residuals: a scale per visit and "
       "a floor for the detections, a scale for the reference catalogue (astrometry and "
       "photometry)"),
    _O("fitDcr", bool, True, "fit the chromatic term: a DCR vector per visit times the "
       "star's colour minus dcrReferenceColor (free effective colours where the catalogue "
       "has none)"),
    _O("dcrColor", str, "g-i", "colour of the chromatic term: two reference-catalogue bands"),
    _O("dcrReferenceColor", float, 1.0, "mag: the colour the written WCS is for"),
    _O("dcrMaxColorError", float, 0.3, "a star without a catalogue colour gets an effective "
       "colour of its own where its visits determine it to this (mag)", minimum=0.0),
    _O("fitTurbulence", bool, True, "fit each visit's turbulent displacement field (a "
       "Gaussian process with a von Karman kernel on the residuals) and remove it from the "
       "products where the reserved stars confirm it"),
    _O("fitReserveFraction", float, 0.1, "fraction of the stars held out of the fit to "
       "validate the turbulence fields (they join the final solution)", minimum=0.0,
       maximum=0.5),
    _O("turbulenceGridStep", float, 30.0, "arcsec: grid step of the turbulence fields",
       minimum=1.0),
    # -- photometry --
    _O("doSolveFlux", bool, True, "fit the photometry"),
    _O("fluxFitOrder", int, 7, "order of the per-visit flux polynomial", minimum=0),
    _O("chebyshev", bool, True, "Chebyshev (else Legendre) basis of the flux polynomial in "
       "the fit"),
    _O("fluxFitAbsolute", bool, True, "tie the zero points to the reference magnitudes"),
    _O("fluxCommonFromOrder", int, 3, "the visits' flux polynomial terms of this order and "
       "above get a prior at their common value over the visits (the camera's flat field), "
       "as wide as their spread between visits measured by the fit; a visit whose terms "
       "depart beyond chance keeps its own (0: none)", minimum=0, maximum=15),
    _O("fitTransparency", bool, True, "fit the transparency field of each visit whose flux "
       "residuals are correlated beyond chance (a cloud's edge: a Gaussian process on the "
       "residuals, fit.transparency) and carry it into its fcr- products"),
    _O("fluxFitSolveCcd", bool, True, "fit a flux scale per CCD (summing to 0)"),
    _O("photHuber", float, 3.0, "the photometric fit's Huber loss: weights min(1, k/|chi|) "
       "beyond k sigma (0: least squares)", minimum=0.0),
    _O("commonFluxCorr", bool, False, "one flux polynomial for all visits"),
    _O("photomErrorFloor", float, 0.0, "mag added in quadrature to the flux errors",
       minimum=0.0),
    _O("refMagErrorFloor", float, 0.005, "mag: floor of the reference magnitude errors",
       minimum=0.0),
    # -- reference catalogue and colour terms --
    _O("refcat", str, "", "reference catalogue folder under ROOT/ref_cats (empty: the only "
       "one)"),
    _O("matchDataset", str, "", "where the reference stars come from: refcat (ROOT/ref_cats, "
       "matched by position), srcMatch (SRCMATCH/SRCMATCHFULL files: pairs with SRC), icMatch "
       "(MATCH files: pairs with ICSRC); empty: ref_cats when the repository has one, else "
       "the srcMatch files, else the icMatch ones", choices=MATCH_DATASET_CHOICES),
    _O("refBand", str, "", "reference band (empty: from the filter)"),
    _O("doColorTerms", bool, True, "transform the reference magnitudes with HSC's colour terms"),
    _O("colorTermLibrary", str, "", "colour terms: hscpipe (hscPipe's, the default), lsst, or "
       "a JSON file of the same layout"),
    _O("photoCatName", str, "", "name of the photometric reference catalogue that selects "
       "the colour terms (as meas_mosaic's and jointcal's; empty: the reference catalogue's "
       "own name)"),
    # -- the solution --
    _O("relativeSolution", bool, False, "allow a run without reference stars (a relative "
       "solution)"),
    _O("clipSigma", float, 5.0, "detections beyond this many sigma are clipped, worst first",
       minimum=1.0, above=True),
    _O("maxIter", int, 20, "iterations of each fit at most", minimum=1),
    _O("rejectVariables", bool, True, "drop stars whose fluxes disagree beyond chance "
       "(p < 1e-4)"),
    _O("minStarsPerCcd", int, 10, "CCDs with fewer stars are held near their nominal "
       "placement by a weak prior (fit.astrometry.CCD_PLACEMENT_PRIOR_PX)",
       minimum=0),
    _O("maxCcdPosError", float, 2.0, "mas: a CCD whose astrometric uncertainty (per "
       "coordinate, rms over the CCD, from the normal equations: fit.uncertainty) is larger "
       "gets no products: it lies outside what its visit's stars constrain", minimum=0.0,
       above=True),
    _O("maxCcdMagError", float, 5.0, "mmag: the same for the photometric uncertainty (and "
       "the largest coherent residual of a CCD, a model that does not describe it)",
       minimum=0.0, above=True),
    _O("maxCcdErrorRatio", float, 5.0, "a CCD is outside only when its uncertainty is also "
       "beyond this many times the run's median CCD uncertainty: the limits follow the "
       "data's noise (real-sky edge CCDs are 2-4x the median, extrapolated ones 10-100x)",
       minimum=1.0),
    _O("coaddName", str, "deep", "coadd name of the sky map (ROOT/rerun/R/<coaddName>Coadd/"
       "skyMap.json)"),
    # -- diagnostics (hscPipe 3.x spelling of --diagnostics --diagDir) --
    _O("outputDiag", bool, False, "write the diagnostics"),
    _O("outputDir", str, "", "where the diagnostics go (default: ROOT/rerun/R/mosaic-diag)"),
    # -- calibrateExposure.py / calibrateCatalog.py --
    _O("interpolate", bool, False, "reproduce meas_mosaic's every-100-pixel linear "
       "interpolation of the flux correction along x (default: exact per pixel)",
       commands=(EXPOSURE,)),
    _O("doApplyCalib", bool, True, "also write calibrated magnitudes and their errors",
       commands=(CATALOG,)),
    _O("threads", int, 0, "kernel threads per CCD (0: all cores when serial, cores/N with "
       "-j N, 1 on a Dask worker)", commands=(EXPOSURE, CATALOG), minimum=0),
)
del _O


class Config:
    """The validated configuration of one command (a subclass names it): attribute access to
    the keys of :data:`OPTIONS` that the command reads."""
    command = None

    def __init__(self, **values):
        object.__setattr__(self, "_values", {o.name: o.default for o in self.options()})
        for key, value in values.items():
            setattr(self, key, value)

    @classmethod
    def options(cls):
        """The Options of :data:`OPTIONS` this command reads, in their order."""
        return [o for o in OPTIONS if cls.command in o.commands]

    @classmethod
    def keys(cls):
        """Names of the command's configuration keys, in their order."""
        return [o.name for o in cls.options()]

    @classmethod
    def option(cls, key):
        """The Option of `key` (MosaicError naming the nearest known key if there is none)."""
        for o in cls.options():
            if o.name == key:
                return o
        names = cls.keys()
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise MosaicError(f"--config: unknown key {key!r}{hint}; valid keys of {cls.command}: "
                          + ", ".join(sorted(names)))

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no key {name!r}") from None

    def __setattr__(self, name, value):
        self.option(name)
        self._values[name] = value

    def __getstate__(self):
        return dict(self._values)

    def __setstate__(self, state):
        object.__setattr__(self, "_values", dict(state))

    def __eq__(self, other):
        return type(other) is type(self) and other._values == self._values

    def __repr__(self):
        changed = ", ".join(f"{o.name}={self._values[o.name]!r}" for o in self.options()
                            if self._values[o.name] != o.default)
        return f"{type(self).__name__}({changed})"

    def set(self, key, text):
        """Set `key` from its command-line text (``config.`` prefix allowed), checked."""
        if key.startswith("config."):
            key = key[len("config."):]
        self._values[key] = self.option(key).parse(text)
        return self

    def update(self, items):
        """Apply ``KEY=VALUE`` strings, as given to --config."""
        for item in items or ():
            if "=" not in item:
                raise MosaicError(f"--config: {item!r} is not of the form KEY=VALUE")
            key, value = item.split("=", 1)
            self.set(key.strip(), value)
        return self

    def validate(self):
        """MosaicError unless every value is allowed (values set as attributes are checked
        here). Returns self."""
        for o in self.options():
            o.check(self._values[o.name])
        return self

    def to_dict(self):
        """A copy of the current values, {key: value} (not validated here)."""
        return dict(self._values)

    def to_text(self):
        """``config.KEY=VALUE`` lines (Python literals), as the rerun stores a configuration."""
        return "".join(f"config.{k}={v!r}\n" for k, v in self._values.items())


class MosaicConfig(Config):
    """mosaic.py's configuration (meas_mosaic's MosaicConfig names)."""
    command = MOSAIC

    def column_map(self):
        """The SRC columns the star-selection keys name ({} when none is set): the catalogue
        reader's column_map (mosaicfit.io.src.standardize)."""
        out = {}
        for key, field in (("extendednessForStarSelection", "extendedness"),
                           ("saturatedForStarSelection", "saturated"),
                           ("psfStarForStarSelection", "psf_used")):
            if self._values[key]:
                out[field] = self._values[key]
        return out


class ExposureConfig(Config):
    """calibrateExposure.py's configuration."""
    command = EXPOSURE


class CatalogConfig(Config):
    """calibrateCatalog.py's configuration."""
    command = CATALOG


def describe(markdown=True):
    """The configuration table: one row per key (name, type, default, commands, description)."""
    rows = []
    for o in OPTIONS:
        default = repr(o.default) if o.type is str else str(o.default)
        cmds = ", ".join(c.replace(".py", "") for c in o.commands)
        rows.append((o.name, o.type.__name__, default, cmds, o.doc))
    if not markdown:
        return "\n".join(f"{n} ({t}, default {d}; {c}): {doc}" for n, t, d, c, doc in rows)
    lines = ["| key | type | default | commands | what it does |", "|---|---|---|---|---|"]
    lines += [f"| `{n}` | {t} | `{d}` | {c} | {doc} |" for n, t, d, c, doc in rows]
    return "\n".join(lines)
