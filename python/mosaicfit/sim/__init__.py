"""A realistic simulated HSC tract, with its truth, in the hscPipe data-repository format.

Every accuracy claim of mosaicfit is measured against this truth, so the simulation follows
the physics of the real data rather than the model we fit:

* astrometry: the real HSC order-9 distortion, the ~0.48% sky-scale excess, per-visit changes
  (scale, rotation, shear, quadratic terms: refraction, flexure), per-CCD offsets and rotations of
  a few microns, pointing errors, proper motions between the visits and the reference epoch,
  centroid noise from S/N;
* photometry: per-visit zero points (exposure time, transparency, clouds of a few tenths of a
  magnitude with gradients), per-CCD gain residuals, a smooth illumination pattern of a few per
  cent, the pixel-area (Jacobian) effect of the distortion on flat-fielded point sources, flux
  noise from the source, the sky and a floor;
* the field: stars (number counts rising with magnitude, 14-25 mag) and galaxies (steeper
  counts, extended: PSF fluxes that change with seeing, rejected by extendedness but for the
  faint and compact ones), saturated bright stars, PSF stars flagged, unresolved blends that
  depend on the seeing, displaced centroids, cosmic rays, moving objects, a dead CCD (9), a few
  failed CCDs, partial coverage at the edge of the field;
* inputs as the single-frame pipeline leaves them: SRC catalogs (afw format), CORR headers with a
  single-frame TAN-SIP WCS that is 0.1-1" off and a FLUXMAG0 a few per cent off, a registry, and
  a Gaia-like reference catalog (epoch 2016.0, proper motions, errors).

Effects of the real sky, each switchable (``SimConfig.effects``, ``mosaicfit simulate
--effects``; none by default, and without them the simulation is the default one number for
number), each with its truth (:mod:`~mosaicfit.sim.effects`):

* ``edge-wcs``: the single-frame WCS of a visit is off by a smooth error of the visit's
  solution, ~0.05" at the centre and ~1.5" rms at the field edge (as real single-frame
  solutions are: ~0.05" to 1.0-1.3" beyond |v| = 14000 px), instead of the per-CCD 0.1-1"
  offset. The truth is unchanged; :meth:`TruthModel.single_frame_wcs_error` gives the error.
* ``dcr``: each night's visits are timed at an hour angle from Mauna Kea (airmass <= 1.8);
  each source is displaced towards the zenith by k tan(z) (g-i - 1.0), k from the dispersion
  of air over the filter (-22, -11, -6, -1.0, -0.8 mas/mag in g, r, i, z, y). The CORR
  headers carry AIRMASS, ZD, ALTITUDE, AZIMUTH, LST, HA and PARANG (the parallactic angle);
  :meth:`TruthModel.dcr_offset` gives the displacement of any colour in any visit.
* ``doubled``: one visit has doubled images (a tracking fault): 45% of its detections are
  measured 50-300 mas off along one direction; outlier code DOUBLED, truth column
  ``doubled_mas``.
* ``centroid-errors``: the SRC's centroid errors are the photon-noise ones scaled per visit
  (0.7-1.5) with a 20% log-normal scatter per detection, while the true scatter has a 3 mas
  floor: bright stars scatter more than they claim; truth column ``x_err_true`` (px).
* ``turbulence``: a von Karman turbulent displacement field per visit (5-15 mas rms per axis,
  outer scale 3-10', 90% E mode, as Leget et al. 2021 on HSC-SSP), a Gaussian random field
  drawn on an FFT grid; :meth:`TruthModel.turbulence_offset` evaluates it anywhere.

The truth goes to ``ROOT/truth/``: ``stars.fits`` (truth_id, ra, dec at the mean epoch of the
visits, pm, mag), ``detections.fits`` (visit, ccd, id, truth_id, noise-free x_true, y_true,
instFlux_true, outlier code; with effects also dcr_dxi, dcr_deta, turb_dxi, turb_deta [mas],
doubled_mas, x_err_true [px]) and ``model.json``, from which :class:`TruthModel` evaluates the
true pixel -> sky mapping and photometric calibration of any (visit, ccd, x, y). ``x_true,
y_true`` are where the image truly lies (DCR and turbulence included): the smooth mapping
:meth:`TruthModel.pixel_to_sky` is that of a source of the reference colour without
turbulence, :meth:`TruthModel.star_pixel_to_sky` that of a given source, and
:meth:`Truth.astrometric_error` measures a calibration against the stars (``against="star"``),
the reference colour or the smooth mapping.

Modules: :mod:`~mosaicfit.sim.config` (settings), :mod:`~mosaicfit.sim.sky` (the sources and
the reference catalogue), :mod:`~mosaicfit.sim.truth` (the true model, its evaluation),
:mod:`~mosaicfit.sim.effects` (the effects' physics), :mod:`~mosaicfit.sim.observe` (the
detections of each visit and CCD), :mod:`~mosaicfit.sim.repository` (the files).
"""
from .config import (BLEND, CLEAN, COSMIC_RAY, DISPLACED, DOUBLED, MOVING, REF_EPOCH_MJD,
                     REFCAT_NAME, SATURATED, SimConfig)
from .effects import EFFECTS, parse_effects
from .observe import SimulatedTract, make_tract
from .repository import MATCH_FILES, SCHEMAS, simulate_repository, write_repository
from .sky import positions_at
from .truth import Truth, TruthModel, evaluate_inputs, evaluate_outputs

__all__ = ["SimConfig", "SimulatedTract", "make_tract", "simulate_repository",
           "write_repository", "Truth", "TruthModel", "evaluate_inputs", "evaluate_outputs",
           "positions_at", "MATCH_FILES", "SCHEMAS", "REFCAT_NAME", "REF_EPOCH_MJD", "CLEAN",
           "BLEND", "DISPLACED", "COSMIC_RAY", "MOVING", "SATURATED", "DOUBLED", "EFFECTS",
           "parse_effects"]
