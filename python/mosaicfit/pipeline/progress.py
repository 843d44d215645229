"""Progress bars of the long phases (reading the inputs, writing the products).

A bar (tqdm) is drawn only on a terminal and only when the log is not verbose: with ``-v``
the phases' log lines say the same, and a bar between log lines garbles both (never both).
Work that ends within ``DELAY`` seconds draws nothing, so short runs and pipelines that
capture stderr see no change.
"""
import logging
import sys

from tqdm import tqdm

__all__ = ["DELAY", "progress_bar"]

#: seconds a phase runs before its bar appears
DELAY = 2.0


def _wanted():
    # the root logger's level is the command line's -v (the package's own logger is set to
    # INFO inside a fit, for the diagnostics' log)
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) and \
        logging.getLogger().getEffectiveLevel() > logging.INFO


def progress_bar(total, desc, unit="CCD"):
    """A tqdm bar of `total` `unit`s on stderr (a disabled one off a terminal or with -v):
    use as a context manager and call ``update(n)``."""
    return tqdm(total=total, desc=desc, unit=unit, delay=DELAY, leave=False, file=sys.stderr,
                disable=not _wanted(), dynamic_ncols=True)
