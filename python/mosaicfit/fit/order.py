"""The polynomial orders the data afford: an order is lowered, with a log line, when the
typical visit has too few stars for its terms (narrow bands, sparse fields)."""
import logging

import numpy as np

log = logging.getLogger("mosaicfit.fit")

__all__ = ["MIN_STARS_PER_TERM", "affordable_order"]


#: detections per polynomial term a typical visit needs
MIN_STARS_PER_TERM = 5


def affordable_order(order, per_visit, lowest, what):
    """The highest polynomial order <= `order` for which the typical (median) visit has
    MIN_STARS_PER_TERM detections per term; said in the log when it is lower."""
    typical = float(np.median(per_visit)) if len(per_visit) else 0.0
    best = order
    while best > lowest and typical < MIN_STARS_PER_TERM * (best + 1) * (best + 2) // 2:
        best -= 1
    if best < order:
        log.warning("%s polynomial order reduced from %d to %d: a typical visit has only %d "
                    "stars", what, order, best, typical)
    return best
