"""A helper process of :func:`mosaicfit.diagnostics.write_all`:
``python -m mosaicfit.diagnostics PAYLOAD RESULT VISIT...``"""
import sys

from .report import helper_main

sys.exit(helper_main(sys.argv[1:]))
