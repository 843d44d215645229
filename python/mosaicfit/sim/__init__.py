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

The truth goes to ``ROOT/truth/``: ``stars.fits`` (truth_id, ra, dec at the mean epoch of the
visits, pm, mag), ``detections.fits`` (visit, ccd, id, truth_id, noise-free x_true, y_true,
instFlux_true, outlier code) and ``model.json``, from which :class:`TruthModel` evaluates the true
pixel -> sky mapping and photometric calibration of any (visit, ccd, x, y).

Modules: :mod:`~mosaicfit.sim.config` (settings), :mod:`~mosaicfit.sim.sky` (the sources and
the reference catalogue), :mod:`~mosaicfit.sim.truth` (the true model, its evaluation),
:mod:`~mosaicfit.sim.observe` (the detections of each visit and CCD),
:mod:`~mosaicfit.sim.repository` (the files).
"""
from .config import (BLEND, CLEAN, COSMIC_RAY, DISPLACED, MOVING, REF_EPOCH_MJD, REFCAT_NAME,
                     SATURATED, SimConfig)
from .observe import SimulatedTract, make_tract
from .repository import MATCH_FILES, SCHEMAS, simulate_repository, write_repository
from .sky import positions_at
from .truth import Truth, TruthModel, evaluate_inputs, evaluate_outputs

__all__ = ["SimConfig", "SimulatedTract", "make_tract", "simulate_repository",
           "write_repository", "Truth", "TruthModel", "evaluate_inputs", "evaluate_outputs",
           "positions_at", "MATCH_FILES", "SCHEMAS", "REFCAT_NAME", "REF_EPOCH_MJD", "CLEAN",
           "BLEND", "DISPLACED", "COSMIC_RAY", "MOVING", "SATURATED"]
