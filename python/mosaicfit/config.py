"""Configuration of the mosaic fit, with meas_mosaic's ``MosaicConfig`` names.

Defaults are those of HSC production (obs_subaru's mosaic overrides of meas_mosaic):
order-9 astrometry, order-7 photometry per visit, absolute photometry. ``--config key=value``
on the command line sets any field; an unknown key or a value of the wrong type is an error
that names the valid keys.
"""
import dataclasses
import difflib
from dataclasses import dataclass, field, fields

from . import MosaicError

#: values of MosaicConfig.matchDataset ("" chooses by what the repository holds)
MATCH_DATASET_CHOICES = ("", "refcat", "srcMatch", "icMatch")


@dataclass
class MosaicConfig:
    # -- star selection (meas_mosaic SourceReader) --
    nBrightest: int = 0                 # stars per exposure (0: no limit beyond the cells)
    cellSize: int = 512                 # pixels
    nStarPerCell: int = 5               # brightest stars kept per cell
    includeSaturated: bool = False
    extendednessForStarSelection: str = ""   # column names; empty: from the detected schema
    saturatedForStarSelection: str = ""
    psfStarForStarSelection: str = ""
    minSnr: float = 10.0                # detections below this S/N are not used (jointcal: 10)
    # -- matching --
    radXMatch: float = 1.0              # arcsec, between visits and to the reference catalogue
    numSourceMerge: int = 2             # detections (visits) a star needs without a reference
    minNumMatch: int = 0                # reference matches a CCD needs to be used
    requireTractOverlap: bool = True
    # -- astrometry --
    doSolveWcs: bool = True
    fittingOrder: int = 9
    internalFitting: bool = True        # use stars without a reference match
    solveCcd: bool = True
    allowRotation: bool = True
    catRMS: float = 0.040 / 3600.0      # degrees: reference position error assumed when the
    #                                     catalogue gives none (hscPipe's meaning and default)
    refPosErrorFloor: float = 0.001     # arcsec added in quadrature to the catalogue's own
    #                                     position errors (propagated to the epoch)
    astromErrorFloor: float = 0.0       # arcsec added in quadrature to centroid errors
    # -- photometry --
    doSolveFlux: bool = True
    fluxFitOrder: int = 7
    chebyshev: bool = True              # basis of the flux polynomial in the fit
    fluxFitAbsolute: bool = True        # reference stars tie the zero points
    fluxFitSolveCcd: bool = True        # per-CCD flux scale (sum 0)
    commonFluxCorr: bool = False        # one flux polynomial for all visits
    photomErrorFloor: float = 0.0       # mag added in quadrature to flux errors
    refMagErrorFloor: float = 0.005     # mag, floor of the reference magnitude errors
    # -- reference catalogue and colour terms --
    refcat: str = ""                    # folder name under ROOT/ref_cats (empty: the only one)
    matchDataset: str = ""              # where reference stars come from: "refcat" (ROOT/
    #   ref_cats, matched by position), "srcMatch" (SRCMATCH/SRCMATCHFULL files: pairs with
    #   SRC), "icMatch" (MATCH files: pairs with ICSRC); empty: ref_cats when the repository
    #   has one, else the srcMatch files, else the icMatch ones. Normalized match files need
    #   ref_cats to be denormalized; Full ones carry the reference records
    refBand: str = ""                   # reference band (empty: from the filter)
    doColorTerms: bool = True
    colorTermLibrary: str = ""          # 'hscpipe' (default: hscPipe's terms) or 'lsst'
    photoCatName: str = ""
    # -- the solution --
    relativeSolution: bool = False      # allow a run without reference stars (relative frame)
    clipSigma: float = 5.0              # detections beyond this are clipped, worst first
    maxIter: int = 20
    rejectVariables: bool = True        # drop stars whose fluxes disagree beyond chance (p<1e-4)
    minStarsPerCcd: int = 10            # CCDs with fewer matched stars are frozen (nominal)
    coaddName: str = "deep"
    # -- diagnostics (hscPipe 3.x spelling) --
    outputDiag: bool = False
    outputDir: str = ""

    @classmethod
    def keys(cls):
        return [f.name for f in fields(cls)]

    def set(self, key, text):
        """Set field `key` from its command-line text, checking the type."""
        types = {f.name: f.type for f in fields(self)}
        if key not in types:
            close = difflib.get_close_matches(key, types, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise MosaicError(f"--config: unknown key {key!r}{hint}; valid keys: "
                              + ", ".join(sorted(types)))
        kind = types[key]
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind)
        try:
            if kind is bool:
                low = str(text).strip().lower()
                if low in ("true", "t", "1", "yes"):
                    value = True
                elif low in ("false", "f", "0", "no"):
                    value = False
                else:
                    raise ValueError
            elif kind is int:
                value = int(str(text), 0)
            elif kind is float:
                value = float(text)
            else:
                value = str(text)
        except ValueError:
            raise MosaicError(f"--config: {key}={text!r} is not a valid {kind.__name__}") from None
        setattr(self, key, value)
        self.validate()

    def update(self, pairs):
        """Apply ``key=value`` strings (as given to --config)."""
        for item in pairs:
            if "=" not in item:
                raise MosaicError(f"--config: {item!r} is not of the form key=value")
            k, v = item.split("=", 1)
            self.set(k.strip(), v.strip())
        return self

    def validate(self):
        checks = [
            (self.fittingOrder >= 1, "fittingOrder must be >= 1"),
            (self.fittingOrder <= 15, "fittingOrder must be <= 15"),
            (self.fluxFitOrder >= 0, "fluxFitOrder must be >= 0"),
            (self.cellSize >= 128, "cellSize must be >= 128"),
            (self.nStarPerCell >= 1, "nStarPerCell must be >= 1"),
            (self.radXMatch > 0, "radXMatch must be positive"),
            (self.catRMS >= 0, "catRMS must not be negative"),
            (self.clipSigma > 1, "clipSigma must be above 1"),
            (self.maxIter >= 1, "maxIter must be >= 1"),
            (self.numSourceMerge >= 1, "numSourceMerge must be >= 1"),
            (self.matchDataset in MATCH_DATASET_CHOICES, "matchDataset must be one of "
             + ", ".join(repr(c) for c in MATCH_DATASET_CHOICES)),
        ]
        for ok, msg in checks:
            if not ok:
                raise MosaicError(f"--config: {msg}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_text(self):
        """The configuration as `key=value` lines, as stored next to the outputs."""
        return "".join(f"{k}={v!r}\n" for k, v in self.to_dict().items())
