"""The fit: selection, association, clipping, the astrometric and photometric fits.

:func:`mosaicfit.fit.solve.solve` runs them in order on in-memory inputs
(:class:`~mosaicfit.fit.selection.ExposureData`) and returns a
:class:`~mosaicfit.model.solution.Solution`; :mod:`~mosaicfit.fit.core` is the one door to
the C++ least-squares core.
"""
