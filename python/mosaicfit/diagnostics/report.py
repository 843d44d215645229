"""The diagnostics of a run, in one call (:func:`write_all`): hscPipe's files and plots, the
summary and index.html, the per-visit plots shared with helper processes."""
import html
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import MosaicError, __version__
from ..io.atomic import write_text
from ..model.solution import Solution, plain
from .files import (write_catalog, write_ccd_dat, write_ccd_scale, write_coeffs, write_dmag,
                    write_dpos)
from .plots import (FocalPlane, plot_dflux2d, plot_fcont, plot_jcont, plot_mdm, plot_pos_dpos,
                    plot_res_flux, plot_res_pos_arrow, plot_res_pos_scatter, plot_turbulence,
                    single_thread_blas, visit_sip)
from .quality import write_ccd_errors, write_turbulence, write_visit_quality
from .stats import column, summarize, visit_table

log = logging.getLogger("mosaicfit.diagnostics")


# ------------------------------------------------------------------------------------------
# index.html
# ------------------------------------------------------------------------------------------
def _f(x, fmt="{:.2f}"):
    try:
        if x is None or not np.isfinite(x):
            return "–"
    except TypeError:
        return html.escape(str(x))
    return fmt.format(x)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.2em 2em;color:#222;max-width:1500px}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.4em 0;font-size:.9em} details{max-width:28em;text-align:left} td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f0f0f0} td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px} .grid figure{margin:0;flex:1 1 30%;min-width:320px}
figure img{width:100%;border:1px solid #ddd} figcaption{font-size:.85em;color:#444}
.cols{display:flex;flex-wrap:wrap;gap:2em} .note{color:#555;font-size:.9em}
tr.bad td{background:#fde8e8}
"""


def _img(name, caption, cls=""):
    return (f'<figure{cls}><a href="{html.escape(name)}"><img src="{html.escape(name)}" '
            f'alt="{html.escape(name)}" loading="lazy"></a><figcaption>{caption}</figcaption></figure>')


def write_index(sol, outdir, summ, visits, jinfo, files, t_diag, quality=()):
    """Write ``outdir/index.html``: the run's counts, accuracy, timings, visits and plots.

    Parameters
    ----------
    sol : Solution
        The solved tract (its run statistics give the timings and iterations).
    outdir : str
        The diagnostics folder; the page refers to the plots in it by relative names.
    summ : dict
        :func:`summarize` of `sol` (rms in mas and mmag).
    visits : list of dict
        :func:`visit_table` rows of `sol`.
    jinfo : dict
        {visit: concentric-centre figures of its Jacobian map}; visits without one show a dash.
    files : set of str
        Names of the files written: only plots among them are shown.
    t_diag : float
        Seconds the diagnostics took.
    quality : sequence of VisitQuality
        The visits' quality rows, shown as a table if any.
    """
    st = sol.stats
    tm = st.timing
    e = html.escape
    rows = [("visits", summ.get("n_visits")), ("CCDs", summ.get("n_ccds")),
            ("stars", summ.get("n_stars")),
            ("stars matched to the reference catalogue", summ.get("n_ref_stars")),
            ("detections", summ.get("n_detections")),
            ("detections of reference-matched stars", summ.get("n_ref_detections")),
            ("astrometry: detections clipped", summ.get("astro_clipped")),
            ("astrometry: detections not used (clipped or frozen visit)", summ.get("astro_rejected")),
            ("photometry: detections clipped", summ.get("phot_clipped")),
            ("photometry: variable / inconsistent stars removed", summ.get("phot_variables")),
            ("photometry: detections not used", summ.get("phot_rejected")),
            ("photometry: polynomial order", summ.get("phot_order")),
            ("photometry: absolute (reference magnitudes)", summ.get("absolute")),
            ("band", summ.get("band")),
            ("visits frozen at their single-frame WCS", ", ".join(map(str, summ["frozen_visits"])) or "none")]
    excl = summ["excluded"]
    acc = [("astrometry, all used detections (= the fit's rms)", _f(summ.get("astro_rms_all")), "mas"),
           ("astrometry, internal stars (detection − fitted star)", _f(summ.get("astro_rms_internal")), "mas"),
           ("astrometry, reference-matched stars (detection − fitted star)", _f(summ.get("astro_rms_ref")), "mas"),
           ("astrometry, fitted star − reference catalogue", _f(summ.get("astro_rms_star_vs_catalog")), "mas"),
           ("photometry, all used detections (= the fit's rms)", _f(summ.get("phot_rms_all")), "mmag"),
           ("photometry, internal stars", _f(summ.get("phot_rms_internal")), "mmag"),
           ("photometry, reference-matched stars", _f(summ.get("phot_rms_ref")), "mmag"),
           ("photometry, calibrated − catalogue (rms / 3σ-clipped σ)",
            f"{_f(summ.get('phot_rms_vs_catalog'))} / {_f(summ.get('phot_sigma_vs_catalog'))}", "mmag"),
           ("photometry, calibrated − catalogue mean", _f(summ.get("phot_mean_vs_catalog")), "mmag")]
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mosaicfit diagnostics</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>Mosaic diagnostics</h1><p class='note'>{e(os.path.abspath(outdir))} — mosaicfit {e(__version__)}, "
           f"written {e(time.strftime('%Y-%m-%d %H:%M:%S'))}. Per-coordinate rms of astrometric "
           "residuals; residuals are model − star.</p>",
           "<div class='cols'><div><h2>Run</h2><table>"]
    out += [f"<tr><td class='l'>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in rows]
    if excl:
        out.append(f"<tr><td class='l'>visit/CCDs excluded (no usable stars)</td><td><details><summary>"
                   f"{len(excl)}</summary>{e(', '.join(f'{v}/{c}' for v, c in excl))}</details></td></tr>")
    else:
        out.append("<tr><td class='l'>visit/CCDs excluded (no usable stars)</td><td>none</td></tr>")
    out.append("</table></div><div><h2>Accuracy</h2><table><tr><th class='l'>rms</th><th>value</th><th>unit</th></tr>")
    out += [f"<tr><td class='l'>{e(k)}</td><td>{v}</td><td class='l'>{u}</td></tr>" for k, v, u in acc]
    out.append("</table><h2>Timing</h2><table><tr><th class='l'>phase</th><th>s</th></tr>")
    for k in ("match", "astrometry", "photometry", "solve_total"):
        if k in tm:
            out.append(f"<tr><td class='l'>{e(k)}</td><td>{tm[k]:.2f}</td></tr>")
    out.append(f"<tr><td class='l'>diagnostics</td><td>{t_diag:.2f}</td></tr></table></div></div>")
    out.append("<h2>Iterations</h2><table><tr><th class='l'>fit</th><th>iteration</th><th>χ²</th>"
               "<th>ndof</th><th>χ²/ndof</th><th>rms</th><th>used</th><th>clipped</th>"
               "<th>assemble (s)</th><th>solve (s)</th></tr>")
    for it in st.iterations:
        unit = "mas" if it.kind == "astrometry" else "mmag"
        out.append(f"<tr><td class='l'>{e(it.kind)}</td><td>{it.iteration}</td><td>{it.chi2:.1f}</td>"
                   f"<td>{it.ndof}</td><td>{it.chi2 / max(it.ndof, 1):.3f}</td><td>{it.rms:.2f} {unit}</td>"
                   f"<td>{it.n_active}</td><td>{it.n_clipped}</td><td>{it.t_assemble:.2f}</td>"
                   f"<td>{it.t_solve:.2f}</td></tr>")
    out.append("</table>")
    out.append("<h2>All visits</h2><div class='grid'>")
    caps = {"ResPosScatter.png": "astrometric residuals: Δξ against Δη, histograms with clipped σ",
            "PosDPos.png": "astrometric residuals against ξ and η (tract plane)",
            "MdM.png": "photometric residuals against magnitude; matched vs internal; calibrated − catalogue",
            "ResFlux.png": "photometric residual histogram, CCD terms against radius, by visit and CCD",
            "DFlux2D.png": "photometric residuals by focal-plane position"}
    for name, cap in caps.items():
        if name in files:
            out.append(_img(name, e(cap)))
    out.append("</div>")
    out.append("<h2>Visits</h2><table><tr><th>visit</th><th>MJD</th><th>CCDs</th><th>detections</th>"
               "<th>ref.</th><th>astrom. rms (mas)</th><th>astrom. not used</th><th>photom. rms (mmag)</th>"
               "<th>photom. not used</th><th>zero point 2.5 log FLUXMAG0 (median, mag)</th><th>J centre (u, v) px</th>"
               "<th>J non-concentric rms</th></tr>")
    for r in visits:
        ji = jinfo.get(r["visit"])
        jc = f"({ji['u0']:.0f}, {ji['v0']:.0f})" if ji else "–"
        jn = f"{ji['nonconcentric']:.1e}" if ji else "–"
        fz = " (frozen)" if r["frozen"] else ""
        out.append(f"<tr><td><a href='#v{r['visit']}'>{r['visit']}</a>{fz}</td><td>{_f(r['mjd'], '{:.4f}')}</td>"
                   f"<td>{r['n_ccd']}</td><td>{r['n_det']}</td><td>{r['n_ref']}</td><td>{_f(r['astro_rms'])}</td>"
                   f"<td>{r['astro_rej']}</td><td>{_f(r['phot_rms'])}</td><td>{r['phot_rej']}</td>"
                   f"<td>{_f(r['zp'], '{:.4f}')}</td><td>{jc}</td><td>{jn}</td></tr>")
    out.append("</table>")
    if quality:
        out.append("<h2>Visit quality</h2><p class='note'>Robust residual σ per axis, clipped "
                   "and excluded fractions, the error model's scale; flags: noisy (σ above 2× "
                   "the median visit's), trailed (elongated residuals), doubled (coherent "
                   "displaced images, excluded), excluded (too little left: no products). "
                   "<a href='visit_quality.csv'>visit_quality.csv</a></p><table><tr>"
                   "<th>visit</th><th>flag</th><th>σ (mas)</th><th>axis ratio</th>"
                   "<th>error scale</th><th>clipped</th><th>excluded</th><th class='l'>note</th></tr>")
        for q in quality:
            cls = "" if q["flag"] == "ok" else " class='bad'"
            out.append(f"<tr{cls}><td>{q['visit']}</td><td>{e(q['flag'])}</td>"
                       f"<td>{_f(q['sigma_mas'])}</td><td>{_f(q['axis_ratio'])}</td>"
                       f"<td>{_f(q['error_scale'])}</td><td>{100 * q['clipped_fraction']:.1f}%</td>"
                       f"<td>{100 * q['excluded_fraction']:.1f}%</td><td class='l'>{e(q['note'])}</td></tr>")
        out.append("</table>")
    turb = sol.stats.turbulence or {}
    if turb:
        out.append("<h2>Turbulence</h2><p class='note'>Per visit: the von Kármán kernel fitted "
                   "to the residuals (rms per axis, length), and the scatter of the reserved "
                   "stars (held out of the fit) without and with the visit's field; a field "
                   "that does not lower it is not used. <a href='turbulence.csv'>turbulence.csv"
                   "</a>, <a href='Turbulence.png'>Turbulence.png</a></p><table><tr>"
                   "<th>visit</th><th>used</th><th>σ (mas)</th><th>length (')</th>"
                   "<th>reserved</th><th>before (mas)</th><th>after (mas)</th></tr>")
        for v in sorted(turb):
            t = turb[v]
            cls = "" if t.get("used") else " class='bad'"
            out.append(f"<tr{cls}><td>{v}</td><td>{'yes' if t.get('used') else 'no'}</td>"
                       f"<td>{_f(t.get('sigma_mas'))}</td><td>{_f(t.get('length_arcmin'))}</td>"
                       f"<td>{t.get('reserved_n', 0)}</td><td>{_f(t.get('reserved_before_mas'))}"
                       f"</td><td>{_f(t.get('reserved_after_mas'))}</td></tr>")
        out.append("</table>")
    trans = [(f, v, t) for f, p in sorted(sol.stats.photometry.items())
             for v, t in sorted((p.transparency or {}).items())]
    if trans:
        out.append("<h2>Transparency</h2><p class='note'>Visits whose flux residuals stay "
                   "correlated over arcminutes after their polynomial (a cloud's edge): the "
                   "kernel fitted to their correlation function (rms, length, significance) and "
                   "the CCDs' residual misfit that found them; their calibration and fcr- "
                   "products carry the field.</p><table><tr><th>filter</th><th>visit</th>"
                   "<th>σ (mmag)</th><th>length (')</th><th>significance</th>"
                   "<th>misfit (mmag)</th></tr>")
        for f, v, t in trans:
            out.append(f"<tr class='bad'><td>{e(f)}</td><td>{v}</td>"
                       f"<td>{_f(t.get('sigma_mmag'))}</td><td>{_f(t.get('length_arcmin'))}</td>"
                       f"<td>{_f(t.get('significance'))}</td><td>{_f(t.get('misfit_mmag'))}</td>"
                       "</tr>")
        out.append("</table>")
    for r in visits:
        v = r["visit"]
        out.append(f"<h3 id='v{v}'>visit {v}</h3><div class='grid'>")
        for name, cap in ((f"ResPosArrow2D_{v}.png", "astrometric residuals (focal-plane axes)"),
                          (f"fcont_{v}.png", "flux correction"), (f"jcont_{v}.png", "Jacobian (pixel area)")):
            if name in files:
                out.append(_img(name, e(cap)))
        out.append("</div>")
    out.append("<h2>Files</h2><p class='note'>hscPipe's files: " + ", ".join(
        f"<a href='{n}'>{n}</a>" for n in ("catalog.fits", "ccd.dat", "ccdScale.dat", "coeffs.dat",
                                           "dmag.dat", "dpos.dat") if n in files)
        + ". To rebuild this folder: <code>mosaicfit report ROOT --rerun=RERUN --tract=T</code> "
        "(reads <a href='solution.json'>solution.json</a>, detections.fits, stars.fits).</p>")
    out.append("</body></html>\n")
    write_text("\n".join(out), os.path.join(outdir, "index.html"))


# ------------------------------------------------------------------------------------------
def write_all(sol, outdir, save=True, jobs=None):
    """Write every diagnostic plot and file of `sol` into `outdir` (created if needed) and
    index.html; with `save`, also the solution's state for `mosaicfit report`.

    jobs: processes drawing the per-visit plots (default: up to 4, the CPUs there are, for 8
    visits or more; 1 draws everything here). The helpers are fresh interpreters
    (``python -m mosaicfit.diagnostics``), not forks: safe after OpenMP and in any script.
    Returns the list of file names written."""
    with single_thread_blas():
        return _write_all(sol, outdir, save, jobs)


def rebuild(outdir):
    """Write the diagnostics of `outdir` again from the solution :func:`write_all` saved there
    (``mosaicfit report``). Returns the list of file names written."""
    return write_all(Solution.load(outdir), outdir, save=False)


def _visit_plots(sol, fp, visits, sips, cols, present, outdir):
    """The three per-visit plots of `visits`: (file names, {visit: J centre info})."""
    files, jinfo = [], {}
    for v in visits:
        name = f"ResPosArrow2D_{v}.png"
        plot_res_pos_arrow(sol, v, fp, sips[v], cols, os.path.join(outdir, name))
        files.append(name)
        if sol.has_photometry(v):
            name = f"fcont_{v}.png"
            plot_fcont(sol, v, fp, os.path.join(outdir, name), present=present[v])
            files.append(name)
        name = f"jcont_{v}.png"
        info = plot_jcont(sol, v, fp, sips[v], os.path.join(outdir, name), present=present[v])
        files.append(name)
        if info:
            jinfo[int(v)] = info
    return files, jinfo


class _Cols(dict):
    """Detection columns as a dict of arrays that col reads like a Table."""
    @property
    def colnames(self):
        """The column names, as Table.colnames."""
        return list(self)


ARROW_COLUMNS = ("visit", "ccd", "astro_used", "ref", "dxi", "deta", "u", "v", "pos_err")


def _start_helpers(sol, fp, shares, sips, present, outdir):
    """Start one helper process per share of visits; returns [(process, share, result path)]."""
    slim = sol.lean()
    d = sol.detections
    cols = _Cols({c: np.asarray(d[c]) for c in ARROW_COLUMNS})
    fp.numbers_layer()
    fd, payload = tempfile.mkstemp(prefix=".diag-", suffix=".pkl", dir=outdir)
    with os.fdopen(fd, "wb") as f:
        pickle.dump(dict(sol=slim, fp=fp, sips=sips, cols=cols, present=present, outdir=outdir),
                    f, protocol=pickle.HIGHEST_PROTOCOL)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = []
    for share in shares:
        result = payload[:-4] + f"-{share[0]}.json"
        cmd = [sys.executable, "-m", "mosaicfit.diagnostics", payload, result] + [str(v) for v in share]
        procs.append((subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE), share, result))
    return procs, payload


def _finish_helpers(procs, payload, redo):
    """Wait for the helpers; the visits of one that failed are drawn by `redo(visits)`."""
    files, jinfo = [], {}
    for p, share, result in procs:
        _, err = p.communicate()
        ok = p.returncode == 0 and os.path.exists(result)
        if ok:
            with open(result) as f:
                r = json.load(f)
            files += r["files"]
            jinfo.update({int(k): v for k, v in r["jcont"].items()})
            os.unlink(result)
        else:
            log.warning("diagnostics helper for visits %s failed (%s): drawing them here",
                        share, err.decode(errors="replace").strip().splitlines()[-1:] or p.returncode)
            f2, j2 = redo(share)
            files += f2
            jinfo.update(j2)
    if os.path.exists(payload):
        os.unlink(payload)
    return files, jinfo


def helper_main(argv):
    """Entry of a helper process: python -m mosaicfit.diagnostics PAYLOAD RESULT VISIT..."""
    payload, result, visits = argv[0], argv[1], [int(v) for v in argv[2:]]
    with open(payload, "rb") as f:
        w = pickle.load(f)
    with single_thread_blas():
        files, jinfo = _visit_plots(w["sol"], w["fp"], visits, w["sips"], w["cols"], w["present"],
                                    w["outdir"])
    write_text(json.dumps(plain(dict(files=files, jcont=jinfo))), result)
    return 0


def _default_jobs(nvisit):
    """Helpers only for 8 visits or more (each costs ~2 s to start), at most 4, and no more
    than the CPUs left idle by the machine's load: on a busy machine they only compete."""
    if nvisit < 8:
        return 1
    ncpu = os.cpu_count() or 1
    try:
        idle = ncpu - os.getloadavg()[0]
    except (AttributeError, OSError):
        idle = ncpu
    return int(max(1, min(4, ncpu, np.floor(idle + 0.5))))


def _write_all(sol, outdir, save, jobs):
    t0 = time.time()
    os.makedirs(outdir, exist_ok=True)
    d = sol.detections
    if d is None or len(d) == 0:
        raise MosaicError("the solution has no detection table: nothing to diagnose")
    files = []
    if save:
        sol.save(outdir)
        files += ["solution.json", "detections.fits", "stars.fits"]
    ccds = sorted(set(np.unique(column(d, "ccd", int)).tolist()) | set(sol.placement.offsets))
    fp = FocalPlane(sol, ccds)
    visits = sorted(np.unique(column(d, "visit", np.int64)).tolist())
    sips = {v: visit_sip(sol, v, fp) for v in visits}
    has_astro = bool(np.isfinite(column(d, "dxi")).any())
    has_phot = bool(np.isfinite(column(d, "dmag")).any())
    dv, dc = column(d, "visit", np.int64), column(d, "ccd", int)
    present = {v: set(np.unique(dc[dv == v]).tolist()) for v in visits}

    # per-visit plots: shares for helper processes, started first, the last share drawn here
    if jobs is None:
        jobs = _default_jobs(len(visits))
    jobs = max(1, min(int(jobs), len(visits)))
    shares = [visits[i::jobs] for i in range(jobs)]
    procs, payload = ([], None)
    if jobs > 1:
        procs, payload = _start_helpers(sol, fp, shares[:-1], sips, present, outdir)

    write_ccd_dat(sol, fp, os.path.join(outdir, "ccd.dat"))
    files.append("ccd.dat")
    if any(h is not None for h in sips.values()):
        write_coeffs(sol, sips, os.path.join(outdir, "coeffs.dat"))
        files.append("coeffs.dat")
    if has_astro:
        write_dpos(d, os.path.join(outdir, "dpos.dat"))
        files.append("dpos.dat")
    quality = write_visit_quality(sol, os.path.join(outdir, "visit_quality.csv"))
    files.append("visit_quality.csv")
    write_ccd_errors(sol, os.path.join(outdir, "ccd_errors.csv"))
    files.append("ccd_errors.csv")
    has_turb = bool(sol.stats.turbulence)
    if has_turb:
        write_turbulence(sol, os.path.join(outdir, "turbulence.csv"))
        files.append("turbulence.csv")
    if has_phot:
        write_ccd_scale(sol, fp, os.path.join(outdir, "ccdScale.dat"))
        write_dmag(d, os.path.join(outdir, "dmag.dat"))
        write_catalog(sol, os.path.join(outdir, "catalog.fits"))
        files += ["ccdScale.dat", "dmag.dat", "catalog.fits"]
    t_files = time.time() - t0
    if has_astro:
        plot_res_pos_scatter(d, os.path.join(outdir, "ResPosScatter.png"))
        plot_pos_dpos(d, os.path.join(outdir, "PosDPos.png"))
        files += ["ResPosScatter.png", "PosDPos.png"]
        if has_turb:
            plot_turbulence(sol, os.path.join(outdir, "Turbulence.png"))
            files.append("Turbulence.png")
    if has_phot:
        plot_mdm(d, os.path.join(outdir, "MdM.png"))
        plot_res_flux(sol, d, fp, os.path.join(outdir, "ResFlux.png"))
        plot_dflux2d(sol, d, fp, os.path.join(outdir, "DFlux2D.png"))
        files += ["MdM.png", "ResFlux.png", "DFlux2D.png"]

    redo = lambda vs: _visit_plots(sol, fp, vs, sips, d, present, outdir)
    vfiles, jinfo = redo(shares[-1])
    if procs:
        f2, j2 = _finish_helpers(procs, payload, redo)
        vfiles += f2
        jinfo.update(j2)
    order = {v: k for k, v in enumerate(visits)}
    vfiles.sort(key=lambda n: (order[int(n.rsplit("_", 1)[1][:-4])], n))
    files += vfiles

    summ = summarize(sol)
    summ["jcont"] = {int(v): jinfo[v] for v in sorted(jinfo)}
    write_text(json.dumps(plain(summ), indent=1) + "\n", os.path.join(outdir, "summary.json"))
    files.append("summary.json")
    write_index(sol, outdir, summ, visit_table(sol), jinfo, set(files), time.time() - t0,
                quality)
    files.append("index.html")
    log.info("diagnostics: %d files in %s (%.1f s, files %.1f s, %d process%s)", len(files),
             outdir, time.time() - t0, t_files, jobs, "es" if jobs > 1 else "")
    return files
