"""``python -m mosaicfit.cli COMMAND ...``"""
import sys

from .main import main

sys.exit(main())
