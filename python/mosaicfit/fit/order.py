"""The polynomial orders the data afford: an order is lowered, with a log line, when the
typical visit has too few stars for its terms (narrow bands, sparse fields)."""
import logging

import numpy as np

from ..model.basis import PolyBasis, n_terms
from ..model.groups import index_groups

log = logging.getLogger("mosaicfit.fit")

__all__ = ["MIN_STARS_PER_TERM", "MIN_GRAM_RATIO", "HELD", "affordable_order",
           "footprint_order", "visit_orders"]

#: the weight of a coefficient prior that holds a term at its prior value (a visit's terms
#: above its order)
HELD = 1e12


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


#: smallest eigenvalue ratio lambda_min / lambda_max of a visit's Gram matrix of the basis
#: over its detections for an order to be fitted: below it some combination of the terms is
#: not determined by where the stars are (a visit covering a few CCDs)
MIN_GRAM_RATIO = 1e-10


def footprint_order(a, b, order, lowest, kind="legendre", per_term=MIN_STARS_PER_TERM):
    """(order, reason): the highest polynomial order <= `order` (and >= `lowest`) that the
    detections at (a, b) (the polynomial's scaled coordinates) determine: at least `per_term`
    detections per term, and a Gram matrix of the basis over them with
    lambda_min / lambda_max > MIN_GRAM_RATIO; `reason` says why the order above was not
    (for the log). The order is -1 when not even `lowest` is determined."""
    n = len(a)
    why = ""
    for o in range(order, lowest - 1, -1):
        if n < per_term * n_terms(o):
            why = f"{n} stars, fewer than {per_term} per term at order {o}"
            continue
        B = PolyBasis(o, kind).values(a, b)
        ev = np.linalg.eigvalsh(B.T @ B / n)
        ratio = float(ev[0] / ev[-1]) if ev[-1] > 0 else 0.0
        if ratio > MIN_GRAM_RATIO:
            return o, (f"{n} stars" if o == order else why)
        why = (f"{n} stars whose footprint leaves order {o} undetermined (Gram matrix "
               f"lambda_min/lambda_max {ratio:.1e} < {MIN_GRAM_RATIO:.0e})")
    return -1, why


def visit_orders(a, b, vidx, visits, order, lowest, kind, what, per_term=MIN_STARS_PER_TERM):
    """(orders, reasons) per visit (:func:`footprint_order` of the detections of each), with
    one log line per visit whose order is reduced and one for those at `order`."""
    nv = len(visits)
    orders = np.full(nv, -1, int)
    why = [""] * nv
    groups = dict(index_groups(vidx))
    for k in range(nv):
        m = groups.get(k, np.zeros(0, int))
        orders[k], why[k] = footprint_order(a[m], b[m], order, lowest, kind, per_term)
    full = [int(visits[k]) for k in range(nv) if orders[k] == order]
    if full:
        log.info("%s polynomial of order %d for %d visits (their stars determine it)", what,
                 order, len(full))
    for k in range(nv):
        if 0 <= orders[k] < order:
            log.warning("%s polynomial order reduced from %d to %d for visit %d: %s", what,
                        order, orders[k], visits[k], why[k])
    return orders, why
