"""The fit's typed state: what the iterations report and what the fits hand on."""
from dataclasses import dataclass

__all__ = ["IterationSummary"]


@dataclass
class IterationSummary:
    """One iteration of a fit. chi2 is that of the detections and ndof their number of
    observations less the number of parameters (stars included): reference priors carry
    little information at hscPipe's catRMS floor of 40 mas, and counting them as degrees of
    freedom would bias chi2/ndof low."""
    kind: str
    iteration: int
    chi2: float
    ndof: int
    rms: float              # mas (astrometry) or mmag (photometry), active detections
    n_active: int
    n_clipped: int
    t_assemble: float
    t_solve: float

    def line(self):
        unit = "mas" if self.kind == "astrometry" else "mmag"
        return (f"{self.kind} iteration {self.iteration}: chi2/ndof = {self.chi2:.1f}/{self.ndof} "
                f"= {self.chi2 / max(self.ndof, 1):.3f}, rms {self.rms:.2f} {unit}, "
                f"{self.n_active} detections, {self.n_clipped} clipped "
                f"(assemble {self.t_assemble:.2f} s, solve {self.t_solve:.2f} s)")
