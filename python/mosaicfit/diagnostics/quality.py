"""mosaicfit's own diagnostics of the real sky, beside hscPipe's files: the per-visit quality
(flags of damaged visits, robust residuals, error scales), the chromatic term and the
turbulence fields of each visit (written as CSV, one row per visit, and drawn)."""
import csv
import io

from ..io.atomic import write_text

__all__ = ["write_visit_quality", "write_turbulence", "write_ccd_errors",
           "VISIT_QUALITY_COLUMNS", "TURBULENCE_COLUMNS", "CCD_ERROR_COLUMNS"]

CCD_ERROR_COLUMNS = ("visit", "ccd", "n_stars", "pos_err_mas", "pos_err_max_mas",
                     "mag_err_mmag", "mag_err_max_mmag", "coherent_mmag", "constrained")


def write_ccd_errors(sol, path):
    """ccd_errors.csv: one row per (visit, CCD) of the fitted visits: the products'
    uncertainties from the normal equations (rms and largest over the CCD, per coordinate in
    mas, in mmag; fit.uncertainty), the coherent photometric residual the model leaves there,
    and whether the solution constrains the CCD (constrained = 0: no wcs-/fcr- written).
    Returns the rows."""
    rows = list(sol.stats.ccd_errors)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CCD_ERROR_COLUMNS)
    for r in rows:
        w.writerow([_fmt(r[c]) if c != "constrained" else int(bool(r[c]))
                    for c in CCD_ERROR_COLUMNS])
    write_text(buf.getvalue(), path)
    return rows

VISIT_QUALITY_COLUMNS = ("visit", "flag", "n_detections", "n_used", "clipped_fraction",
                         "excluded_fraction", "sigma_mas", "axis_ratio", "error_scale",
                         "outlier_fraction", "coherence", "shift_direction_deg", "shift_mas",
                         "note")


def write_visit_quality(sol, path):
    """visit_quality.csv: one row per visit of the astrometric fit (fit.quality.VisitQuality;
    flag ok / noisy / trailed / doubled / excluded). Returns the rows."""
    a = sol.stats.astrometry
    rows = list(a.visit_quality) if a is not None else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(VISIT_QUALITY_COLUMNS)
    for r in rows:
        w.writerow([_fmt(r.get(c, "")) for c in VISIT_QUALITY_COLUMNS])
    write_text(buf.getvalue(), path)
    return rows


TURBULENCE_COLUMNS = ("visit", "used", "sigma_mas", "length_arcmin", "reserved_n",
                      "reserved_before_mas", "reserved_after_mas", "r_arcmin",
                      "xi_before_mas2", "xi_after_mas2", "pairs")


def write_turbulence(sol, path):
    """turbulence.csv: per visit and separation bin, the residuals' correlation function
    xi_+ (mas^2) before and after the visit's turbulence field was removed, with the kernel
    fitted (rms per axis, length) and the reserved stars' scatter (mas) without and with the
    field (fit.turbulence). Returns the number of visits (0: no turbulence phase ran)."""
    info = sol.stats.turbulence or {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TURBULENCE_COLUMNS)
    for v in sorted(info):
        t = info[v]
        r = t.get("r_arcmin") or []
        before = t.get("xi_before_mas2") or [float("nan")] * len(r)
        after = t.get("xi_after_mas2") or [float("nan")] * len(r)
        pairs = t.get("pairs") or [0] * len(r)
        for k in range(len(r)):
            w.writerow([v, int(bool(t.get("used"))), _fmt(float(t.get("sigma_mas", float("nan")))),
                        _fmt(float(t.get("length_arcmin", float("nan")))),
                        t.get("reserved_n", 0),
                        _fmt(float(t.get("reserved_before_mas", float("nan")))),
                        _fmt(float(t.get("reserved_after_mas", float("nan")))),
                        _fmt(float(r[k])), _fmt(float(before[k])), _fmt(float(after[k])),
                        int(pairs[k])])
    write_text(buf.getvalue(), path)
    return len(info)


def _fmt(x):
    return f"{x:.6g}" if isinstance(x, float) else x
