"""The numbers of a run: robust statistics, the run's summary and the per-visit table."""
import numpy as np

from ..units import DEG_MAS

__all__ = ["clipped_std", "rms", "rms2", "column", "nice", "summarize", "visit_table", "ccd_term",
           "ccd_terms"]


# ------------------------------------------------------------------------------------------
# statistics helpers
# ------------------------------------------------------------------------------------------
def clipped_std(a, nsig=3.0, iters=5):
    """(std, mean, n) of the finite values of `a`, iteratively clipped at nsig x std."""
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return np.nan, np.nan, 0
    keep = np.ones(len(a), bool)
    for _ in range(iters):
        mean, std = a[keep].mean(), a[keep].std()
        new = np.abs(a - mean) <= nsig * std if std > 0 else keep
        if np.array_equal(new, keep) or new.sum() < 3:
            break
        keep = new
    return float(a[keep].std()), float(a[keep].mean()), int(keep.sum())


def rms(a):
    """Root mean square of the finite values of `a` (NaN if there are none)."""
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(a ** 2))) if len(a) else np.nan


def rms2(dx, dy):
    """Per-coordinate rms of 2-D residuals: sqrt(mean((dx^2 + dy^2) / 2))."""
    d = np.asarray(dx, float) ** 2 + np.asarray(dy, float) ** 2
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d / 2))) if len(d) else np.nan


def column(t, name, dtype=float):
    """Column `name` of table `t` as an array of `dtype`; None if `t` is None or lacks it."""
    if t is None or name not in t.colnames:
        return None
    return np.asarray(t[name], dtype)


def nice(x, choices=(1, 2, 5)):
    """The smallest 'nice' number (1, 2, 5 x 10^k) >= x."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    k = np.floor(np.log10(x))
    for c in choices:
        if c * 10 ** k >= x * (1 - 1e-9):
            return float(c * 10 ** k)
    return float(10 ** (k + 1))


def summarize(sol):
    """The run's summary (a dict of plain numbers) from the solution and its tables."""
    st = sol.stats
    d, s = sol.detections, sol.stars
    out = dict(n_visits=st.n_visits, n_ccds=st.n_ccds, n_stars=st.n_stars,
               n_ref_stars=st.n_ref_stars, n_detections=st.n_detections)
    if d is not None and len(d):
        visit, ref = column(d, "visit", np.int64), column(d, "ref", bool)
        out.update(n_visits=len(np.unique(visit)), n_ccds=len(np.unique(column(d, "ccd", int))),
                   n_detections=len(d), n_ref_detections=int(ref.sum()))
        au = column(d, "astro_used", bool)
        dxi, deta = column(d, "dxi"), column(d, "deta")
        out.update(astro_used=int(au.sum()), astro_rejected=int((~au).sum()),
                   astro_rms_all=rms2(dxi[au], deta[au]),
                   astro_rms_internal=rms2(dxi[au & ~ref], deta[au & ~ref]),
                   astro_rms_ref=rms2(dxi[au & ref], deta[au & ref]))
        pu = column(d, "phot_used", bool)
        dm = column(d, "dmag")
        cal_cat = (column(d, "mag_fit") - column(d, "mag_ref")) * 1000.0
        good_cat = pu & ref & np.isfinite(cal_cat)
        out.update(phot_used=int(pu.sum()), phot_rejected=int((~pu).sum()),
                   phot_rms_all=rms(dm[pu]), phot_rms_internal=rms(dm[pu & ~ref]),
                   phot_rms_ref=rms(dm[pu & ref]),
                   phot_rms_vs_catalog=rms(cal_cat[good_cat]),
                   phot_sigma_vs_catalog=clipped_std(cal_cat[good_cat])[0],
                   phot_mean_vs_catalog=float(np.mean(cal_cat[good_cat])) if good_cat.any() else np.nan)
    if s is not None and len(s):
        has = column(s, "ref_index", np.int64) >= 0
        out["n_stars"] = len(s)
        out["n_ref_stars"] = int(has.sum())
        ra, dec, rra, rdec = (column(s, c) for c in ("ra", "dec", "ref_ra", "ref_dec"))
        dra = ((ra - rra + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec)) * DEG_MAS
        ddec = (dec - rdec) * DEG_MAS
        ok = has & np.isfinite(dra) & np.isfinite(ddec)
        out["astro_rms_star_vs_catalog"] = rms2(dra[ok], ddec[ok])
        out["astro_mean_star_vs_catalog"] = (float(np.mean(dra[ok])), float(np.mean(ddec[ok]))) \
            if ok.any() else (np.nan, np.nan)
    a = st.astrometry
    if a is not None:
        out.update(astro_chi2=a.chi2, astro_ndof=a.ndof, astro_rms_mas=a.rms_mas,
                   astro_clipped=a.clipped, astro_order=a.order)
    ph = [st.photometry[f] for f in sorted(st.photometry)]
    if ph:
        out.update(phot_chi2=sum(p.chi2 for p in ph), phot_ndof=sum(p.ndof for p in ph),
                   phot_clipped=sum(p.clipped for p in ph),
                   phot_variables=sum(p.variables for p in ph),
                   phot_order=ph[0].order if len(ph) == 1 else
                   ", ".join(f"{p.filter}: {p.order}" for p in ph),
                   absolute=all(p.absolute for p in ph))
    out.update(n_ambiguous=st.n_ambiguous, band=st.band)
    out["frozen_visits"] = sorted({int(v) for v, _ in sol.frozen})
    out["excluded"] = [list(map(int, e)) for e in st.excluded]
    return out


def visit_table(sol):
    """Per-visit numbers for the page."""
    d = sol.detections
    rows = []
    visit = column(d, "visit", np.int64)
    ccd = column(d, "ccd", int)
    ref = column(d, "ref", bool)
    au, pu = column(d, "astro_used", bool), column(d, "phot_used", bool)
    dxi, deta, dm = column(d, "dxi"), column(d, "deta"), column(d, "dmag")
    for v in sorted(np.unique(visit).tolist()):
        m = visit == v
        zp = np.nan
        if sol.has_photometry(v):
            zp = float(np.median([2.5 * np.log10(sol.fluxmag0(v, int(c))) for c in np.unique(ccd[m])]))
        rows.append(dict(visit=v, mjd=sol.visit_info.get(v, {}).get("mjd", np.nan),
                         n_ccd=len(np.unique(ccd[m])), n_det=int(m.sum()), n_ref=int((m & ref).sum()),
                         astro_rms=rms2(dxi[m & au], deta[m & au]),
                         astro_rej=int((m & ~au).sum()), phot_rms=rms(dm[m & pu]),
                         phot_rej=int((m & ~pu).sum()), zp=zp,
                         frozen=any(fv == v for fv, _ in sol.frozen)))
    return rows


def ccd_term(sol, visit, ccd):
    """The CCD's magnitude term dC for the visit's filter (0 where not fitted)."""
    return float(sol.ccd_term(visit, ccd))


def ccd_terms(sol):
    """{ccd: dC} of the first filter (by name) of the solution ({} without photometry)."""
    if not sol.photometry:
        return {}
    model = sol.photometry[sorted(sol.photometry)[0]]
    return {int(c): float(x) for c, x in sorted(model.ccd_terms.items())}
