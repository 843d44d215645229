"""The model: the camera, the maps from pixels to the sky and the flux scales, and their
products.

- :mod:`~mosaicfit.model.basis`: the one 2-D polynomial basis (shared with the C++ core);
- :mod:`~mosaicfit.model.sky`: gnomonic projections, unit vectors;
- :mod:`~mosaicfit.model.groups`: array elements grouped by key (CCD, visit);
- :mod:`~mosaicfit.model.camera`: CCD placement and the optics (a camera is a data folder);
- :mod:`~mosaicfit.model.astrometry`: the astrometric model as a chain of named maps;
- :mod:`~mosaicfit.model.photometry`: the photometric model;
- :mod:`~mosaicfit.model.reference`: the reference catalogue at an epoch;
- :mod:`~mosaicfit.model.colorterms`: reference magnitudes in HSC filters;
- :mod:`~mosaicfit.model.sip`, :mod:`~mosaicfit.model.fluxcorr`: the products (TAN-SIP WCS,
  meas_mosaic's flux correction);
- :mod:`~mosaicfit.model.solution`: the fitted model of a tract, and its file format.
"""
