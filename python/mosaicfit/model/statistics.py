"""What a fit reports, typed: each iteration, the astrometric and photometric fits, the run.

A :class:`RunStats` travels with the :class:`~mosaicfit.model.solution.Solution` (and its
file), and is read by the command's summary, the diagnostics and the benchmarks.
"""
from dataclasses import asdict, dataclass, field, fields

__all__ = ["IterationSummary", "AstrometryStats", "PhotometryStats", "RunStats", "VisitQuality",
           "VISIT_FLAGS"]


@dataclass
class IterationSummary:
    """One iteration of a fit. chi2 is that of all the observations: the detections, the
    reference values of the stars tied to the catalogue and the priors of the model's
    coefficients; ndof their number less the number of parameters (stars included). A
    reference-tied star brings D parameters and D observations (its catalogue value), so a
    one-visit fit against the catalogue is determined, and a partial run's chi2/ndof is not
    biased high (issue 14)."""
    kind: str               # "astrometry" or "photometry"
    iteration: int
    chi2: float
    ndof: int
    rms: float              # mas (astrometry) or mmag (photometry), active detections
    n_active: int
    n_clipped: int
    t_assemble: float       # seconds
    t_solve: float
    solver: str = ""        # the reduced system's factorisation (fit.core.SOLVERS): dense, sparse

    def line(self):
        """The iteration as one log line: chi2/ndof, rms (mas or mmag), counts and timings."""
        unit = "mas" if self.kind == "astrometry" else "mmag"
        return (f"{self.kind} iteration {self.iteration}: chi2/ndof = {self.chi2:.1f}/{self.ndof} "
                f"= {self.chi2 / max(self.ndof, 1):.3f}, rms {self.rms:.2f} {unit}, "
                f"{self.n_active} detections, {self.n_clipped} clipped "
                f"(assemble {self.t_assemble:.2f} s, solve {self.t_solve:.2f} s"
                + (f", {self.solver})" if self.solver else ")"))


@dataclass
class AstrometryStats:
    """The astrometric fit's final state."""
    order: int
    chi2: float
    ndof: int
    rms_mas: float          # rms per coordinate of the active detections
    clipped: int            # detections clipped
    n_active: int
    ref_rejected: int = 0   # reference associations the detections contradicted
    error_scale: dict = field(default_factory=dict)   # visit -> scale of the input errors
    error_floor_mas: float = 0.0                        # the error model's floor
    ref_error_scale: float = 1.0                        # scale of the reference errors
    converged: bool = True
    # one row (dict) per visit: fit.quality.VisitQuality's fields
    visit_quality: list = field(default_factory=list)
    # the common-terms prior of the visit polynomials per filter
    # (fit.shrinkage.common_function_prior): {filter: dict from_order, mu (2, H), sigma
    # (H, H) (arcsec), tau (arcsec), used (visits)}
    common: dict = field(default_factory=dict)

    @property
    def chi2_ndof(self):
        """chi2 / ndof (ndof taken as at least 1)."""
        return self.chi2 / max(self.ndof, 1)

    def damaged_visits(self, flags=("doubled", "excluded")):
        """{visit: quality row} of the visits carrying one of `flags`."""
        return {int(q["visit"]): q for q in self.visit_quality if q["flag"] in flags}


#: the flags a visit can carry (fit.quality), in order of severity
VISIT_FLAGS = ("ok", "noisy", "trailed", "doubled", "excluded")


@dataclass
class VisitQuality:
    """What the fit saw of one visit (mas, fractions)."""
    visit: int
    n_detections: int
    n_used: int
    clipped_fraction: float
    sigma_mas: float            # robust sigma per axis of the used residuals
    axis_ratio: float           # robust major / minor axis of the residual covariance
    error_scale: float          # the error model's scale for the visit (1: as the inputs say)
    outlier_fraction: float     # leave-one-out residuals beyond 5 sigma
    coherence: float            # mean resultant length of the outliers' directions
    shift_direction_deg: float  # their mean direction on the sky (north through east)
    shift_mas: float            # their median distance from the clean peak
    excluded_fraction: float    # detections excluded as displaced (doubled images)
    flag: str = "ok"
    note: str = ""

    def as_row(self):
        """The fields as a dict (one row of the visit table)."""
        return asdict(self)

    def header_cards(self):
        """FITS cards for the visit's products (documented in the README)."""
        return [("MFQUAL", self.flag, "mosaicfit visit quality: " + "/".join(VISIT_FLAGS)),
                ("MFQSIG", round(self.sigma_mas, 3), "[mas] robust residual sigma per axis"),
                ("MFQCLIP", round(self.clipped_fraction, 4), "fraction of detections clipped"),
                ("MFQEXCL", round(self.excluded_fraction, 4),
                 "fraction excluded as displaced images")]


@dataclass
class PhotometryStats:
    """The photometric fit of one filter, final state."""
    filter: str
    order: int
    chi2: float
    ndof: int
    rms_mmag: float
    clipped: int
    n_active: int
    variables: int = 0      # stars removed as inconsistent with a constant flux
    absolute: bool = True   # zero points tied to the reference catalogue
    visits: list = field(default_factory=list)
    colour_terms: str = ""  # how the reference magnitudes were made (one line)
    error_scale: dict = field(default_factory=dict)   # visit -> scale of the input errors
    error_floor_mmag: float = 0.0
    ref_error_scale: float = 1.0
    converged: bool = True
    # (visit, CCD)s where the model leaves a residual plane beyond chance
    # (fit.uncertainty.coherent_residuals): dicts visit, ccd, rms_mmag, noise_mmag, n
    coherent: list = field(default_factory=list)
    # the common-terms prior of the visit polynomials (fit.shrinkage.common_function_prior):
    # dict from_order, mu (1, H), sigma (H, H) (mag), tau (mag), used (visits); None without
    common: dict = None
    # visit -> the transparency field's fit (fit.transparency.visit_transparency's info:
    # sigma_mmag, length_arcmin, significance), for the visits that have one
    transparency: dict = field(default_factory=dict)

    @property
    def chi2_ndof(self):
        """chi2 / ndof (ndof taken as at least 1)."""
        return self.chi2 / max(self.ndof, 1)


@dataclass
class RunStats:
    """The run: counts, iterations, timings and the fits' final states."""
    n_detections: int = 0
    n_stars: int = 0
    n_ref_stars: int = 0
    n_ambiguous: int = 0        # cross-identification groups dropped (two detections a visit)
    n_visits: int = 0
    n_ccds: int = 0
    band: str = ""              # reference band of the run's first filter
    excluded: list = field(default_factory=list)      # (visit, ccd) without usable stars
    no_products: list = field(default_factory=list)   # (visit, ccd) left without wcs-/fcr-
    iterations: list = field(default_factory=list)    # IterationSummary, both fits in order
    timing: dict = field(default_factory=dict)        # phase -> seconds
    astrometry: AstrometryStats = None
    photometry: dict = field(default_factory=dict)    # filter -> PhotometryStats
    # visit -> the turbulence fit's figures (fit.turbulence.fit_visit_field's info)
    turbulence: dict = field(default_factory=dict)
    # one row (dict) per (visit, CCD) of the fitted visits: the products' uncertainties from
    # the normal equations (fit.uncertainty.CcdError's fields) and whether they are written
    ccd_errors: list = field(default_factory=list)

    def to_dict(self):
        """Plain JSON-able values (tuples as lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The RunStats of a :meth:`to_dict` dict (e.g. read from solution.json).

        Nested statistics are rebuilt, visit and CCD keys turned back to ints (JSON makes them
        strings) and unknown keys ignored.
        """
        d = dict(d)
        known = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in d.items() if k in known and k not in
                     ("iterations", "astrometry", "photometry", "excluded", "no_products",
                      "turbulence")})
        out.turbulence = {int(k): v for k, v in (d.get("turbulence") or {}).items()}
        out.excluded = [tuple(int(x) for x in e) for e in d.get("excluded", [])]
        out.no_products = [tuple(int(x) for x in e) for e in d.get("no_products", [])]
        out.iterations = [IterationSummary(**it) for it in d.get("iterations", [])]
        if d.get("astrometry"):
            a = dict(d["astrometry"])
            a["error_scale"] = {int(k): v for k, v in a.get("error_scale", {}).items()}
            out.astrometry = AstrometryStats(**a)
        out.photometry = {}
        for k, v in (d.get("photometry") or {}).items():
            v = dict(v)
            v["error_scale"] = {int(x): y for x, y in v.get("error_scale", {}).items()}
            v["transparency"] = {int(x): y for x, y in v.get("transparency", {}).items()}
            out.photometry[k] = PhotometryStats(**v)
        return out
