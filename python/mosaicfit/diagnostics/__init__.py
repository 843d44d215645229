"""Diagnostics of a mosaic solution: hscPipe's plots and files, and a one-page report.

``write_all(sol, outdir)`` writes into ``outdir`` (``mosaic.py --diagnostics --diagDir=DIR``
and ``--config outputDiag=True outputDir=DIR`` pass ``DIR/TTTT``).

Per visit (focal-plane maps, u and v in 15 micron focal-plane pixels from the optical axis,
CCD outlines at their fitted positions with their numbers, CCDs without detections in the
visit dashed):

* ``ResPosArrow2D_<visit>.png``: left, the astrometric residual (model - star) of every
  detection used, turned to the focal-plane axes, reference-matched stars green, internal
  red, with an arrow key; right, their weighted means in 1024-px cells with their own key and
  the rms those means would have from the errors alone (structure shows as an excess);
* ``fcont_<visit>.png``: the flux correction 10^(-0.4 (P_v(u, v) - P_v(axis) + dC)) by which
  the calibration multiplies fluxes, relative to the optical axis (P_v the visit's polynomial,
  dC the CCD's term);
* ``jcont_<visit>.png``: the Jacobian J (pixel area relative to the optical axis) of the visit's
  TAN-SIP about the optical axis, which should be concentric; beside it, J minus the best
  concentric pattern (its centre and rms also in ``index.html``).

All visits: ``DFlux2D.png`` (weighted mean photometric residuals in focal-plane cells:
detection - star, and calibrated - catalogue), ``ResFlux.png`` (residual histogram with its
sigma, CCD terms against radius, residuals by visit and by CCD), ``MdM.png`` (residual against
magnitude, matched and internal stars, calibrated - catalogue), ``PosDPos.png`` (residuals
against xi and eta with running medians), ``ResPosScatter.png`` (dxi against deta with
histograms, sigmas, and the distribution of residual / error).

hscPipe's files, with meas_mosaic's columns, order and header lines:

* ``ccd.dat``: ``chip centerXFp centerYFp yaw``: the fitted focal-plane position of each
  CCD's centre (15 micron pixels) and its yaw less its quarter turns (radians);
* ``ccdScale.dat``: ``chip scale``: the CCD's flux scale fchip = 10^(-0.4 dC);
* ``coeffs.dat``: per visit ``visit A D`` (the tangent point, radians: the sky at the
  optical axis), ``visit x0 y0`` (offset of the polynomials' origin from the focal-plane
  origin: 0, the origin is the optical axis), then ``visit a b ap bp`` for k = 0..ncoeff-1 in
  meas_mosaic's order (total order n = 1..N, then decreasing power of u): xi = sum_k a_k u^i
  v^j (degrees; a_0, a_1, b_0, b_1 are the CD matrix), ap, bp the SIP inverse. This is the
  visit's TAN-SIP about the optical axis, fitted to the model over the CCDs. A and D have
  13 significant digits (hscPipe's %12.5e rounds them by up to 2");
* ``dmag.dat``: ``m|s mag_cor mag0 mag_cat u v good``: calibrated magnitude of the detection,
  the star's fitted magnitude, the catalogue magnitude (-9999 for internal stars), the
  focal-plane position, 1 if used in the final photometric fit (m: detections of
  reference-matched stars, listed first; s: of internal stars);
* ``dpos.dat``: ``m|s xi_fit eta_fit xi eta u v good``: the detection's model position and the
  star's position at the detection's epoch, degrees in the tract's gnomonic plane (so
  (xi_fit - xi) * 3600 is the residual in arcsec, as with hscPipe), with 9 decimals (hscPipe's
  6 round the residuals to 3.6 mas);
* ``catalog.fits``: one row per star with a good detection: ``id``, ``coord_ra``,
  ``coord_dec`` (radians, afw's convention), ``mag`` (fitted magnitude), ``err`` (weighted rms
  of its calibrated detections about it), ``num`` (good detections).

``summary.json`` holds the numbers of the page. ``index.html`` shows the run's summary
(counts, chi2/ndof per iteration, rms internal and against the reference catalogue, timings),
a table of the visits and every plot (PNGs referenced relatively: the folder is
self-contained and can be moved or copied as a whole).

Rebuilding: ``write_all`` also saves the solution (``solution.json``: the model parameters
and run statistics; ``detections.fits`` and ``stars.fits``: ``sol.detections`` and
``sol.stars``). ``mosaicfit report ROOT --rerun=R --tract=T [--diagDir DIR]`` reads them back
(:meth:`mosaicfit.model.solution.Solution.load`) and writes everything again: a run made without ``--diagnostics``
leaves nothing to rebuild from.

Figures are drawn with Matplotlib's object API on the Agg canvas (no pyplot, no global
state). With many visits the per-visit plots are shared with helper processes (fresh
interpreters, see :func:`write_all`). Every file is written atomically.
"""
from .report import rebuild, write_all
from .stats import summarize, visit_table

__all__ = ["write_all", "rebuild", "summarize", "visit_table"]
