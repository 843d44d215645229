"""The one typed door to the C++ least-squares core (cpp/fit.hpp states the maths).

Model of detection j of star s in visit v on CCD c (D = 2 for positions, 1 for magnitudes):

    r_j = P_v(u_j, v_j) + G_j . dc_c - x_s - y_j,     weight w_j (isotropic in the D dims)

P_v a polynomial of :class:`~mosaicfit.model.basis.PolyBasis` (order, kind) per visit (or per
polynomial index), dc_c the K parameters of CCD c (linearised increments: G_j their
derivative), x_s the value of star s (free, with an optional Gaussian prior), y_j a known
offset. The star parameters are eliminated (Schur complement) before a Cholesky solve of the
visit and CCD parameters, then recovered; :func:`solve_least_squares` returns all of them with
the residuals and the chi2. The visit block is factored densely where most visits share stars
(a deep field) and block-sparse where each visit overlaps only its neighbours (a wide survey:
cpp/sparse_factor.hpp); ``solver`` (or the environment variable ``MOSAICFIT_SOLVER``)
overrides the automatic choice, and the solution says which was used.

Arrays are checked here (shapes, index ranges, the order, the coefficient prior weights) and
passed on without copies where their types already fit; the C++ side trusts them. The arrays of
the solution are views of the C++ result (``_core.FitResult``), which they keep alive.
"""
import os
from dataclasses import dataclass

import numpy as np

from .. import MosaicError, _core
from ..model.basis import KINDS, n_terms

__all__ = ["LeastSquaresProblem", "LeastSquaresSolution", "solve_least_squares", "SOLVERS"]

#: the factorisations of the visit block: auto (sparse from 24 visits on when the sparse
#: factor holds <= 35% of the dense one's blocks), dense, sparse (a block Cholesky on the visit
#: pairs that share stars), simplicial (Eigen's SimplicialLLT on the same pattern: slower, for
#: comparison)
SOLVERS = ("auto", "dense", "sparse", "simplicial")


@dataclass
class LeastSquaresProblem:
    """The detections, stars and parameters of one linearised least-squares problem."""
    star: np.ndarray            # (n,) star of each detection, 0..nstar-1
    visit: np.ndarray           # (n,) polynomial of each detection, 0..nvisit-1
    ccd: np.ndarray             # (n,) CCD parameter set of each detection, 0..nccd-1
    active: np.ndarray          # (n,) bool: detections in the fit (the others get residuals)
    u: np.ndarray               # (n,) polynomial coordinates, scaled to about [-1, 1]
    v: np.ndarray
    y: np.ndarray               # (n, D) known offsets
    w: np.ndarray               # (n,) weights (1 / sigma^2, isotropic)
    nvisit: int
    nccd: int
    nstar: int
    order: int
    basis: str = "legendre"     # a mosaicfit.model.basis kind
    G: np.ndarray = None        # (n, D, K) derivatives of the model by the CCD parameters
    prior: np.ndarray = None    # (nstar, D) star priors ...
    prior_w: np.ndarray = None  # (nstar,) ... and their weights (0: none)
    coef_prior: np.ndarray = None     # (nvisit, D, n_terms) coefficient priors ...
    coef_prior_w: np.ndarray = None   # ... and weights, the same in every dimension
    coef_prior_mat: np.ndarray = None  # (nvisit, n_terms, n_terms) full prior matrices M_v about
    # coef_prior (every dimension): (c - coef_prior)' M_v (c - coef_prior) added to chi2
    ccd_fixed: np.ndarray = None      # (nccd,) bool: CCD parameters held at 0
    ccd_prior: np.ndarray = None      # (nccd, K) Gaussian priors of the CCD parameters ...
    ccd_prior_w: np.ndarray = None    # ... and their weights (0: none); with ccd_sum_zero the
    #                                   targets of each parameter must sum to 0 over the free
    #                                   CCDs, as the gauge holds the fitted values' sum there
    ccd_sum_zero: bool = True         # gauge: each CCD parameter sums to 0 over free CCDs
    # the star priors are measurements (a reference catalogue's values with their errors:
    # counted in chi2 and ndof), or only a regulariser (a relative solution's weak tie to the
    # single-frame positions: neither)
    prior_is_measurement: bool = True
    # one of SOLVERS; None: $MOSAICFIT_SOLVER, else "auto"
    solver: str = None

    @property
    def D(self):
        """Dimensions of the offsets `y` (2 for astrometry, 1 for photometry)."""
        return int(np.shape(self.y)[1])

    @property
    def K(self):
        """Number of CCD parameters, the last axis of `G` (0 without `G`)."""
        return 0 if self.G is None else int(np.shape(self.G)[2])


@dataclass
class LeastSquaresSolution:
    """The solution of a :class:`LeastSquaresProblem`."""
    coef: np.ndarray            # (nvisit, D, n_terms)
    dccd: np.ndarray            # (nccd, K)
    xstar: np.ndarray           # (nstar, D), NaN for stars without active detections
    resid: np.ndarray           # (n, D): model - star - y, for every detection
    chi2: float                 # detections, star priors and coefficient priors
    chi2_det: float             # detections only
    nobs: int                   # scalar observations: detections x D, priors of stars with
    #                             data x D, coefficient priors (each one observation)
    nobs_det: int               # scalar observations of the detections
    nparam: int                 # free parameters (model and stars, less the gauge)
    status: str                 # "ok", or "singular"
    n_ccd_dof: int              # the CCD parameters' net share of nparam (less their priors')
    rcond: float                # smallest pivot / largest of the factorisations
    t_assemble: float           # seconds
    t_solve: float
    solver: str = "dense"       # the visit block's factorisation: dense, sparse, simplicial
    #                             (+ "+ldlt" where the Cholesky failed and an LDLT was used)
    fill: float = 1.0           # the sparse factor's blocks / the dense factor's
    npairs: int = 0             # pairs of visits sharing stars
    # (nccd, K): sum over the active detections of w_j (1 - h_j) |dr_j / dc|^2, h_j the
    # detection's share of its star's weight: the CCD parameters' information from the data
    ccd_data_weight: np.ndarray = None
    # with solve_least_squares(..., covariance=True) (cpp/covariance.hpp), else None: the
    # marginal covariances of the parameters, the stars profiled out, in the units of y and
    # of the scaled coordinates; parameters held (ccd_fixed, no data) are not meaningful
    visit_cov: np.ndarray = None      # (nvisit, D, n_terms, n_terms)
    ccd_cov: np.ndarray = None        # (nccd, K, K)
    cross_cov: np.ndarray = None      # (nvisit, nccd, D, n_terms, K)

    @property
    def ndof(self):
        """Degrees of freedom: all observations (detections, the priors of the stars and of
        the coefficients) less the parameters. A reference-tied star adds its position (or
        magnitude) as D parameters and its catalogue value as D observations: leaving the
        priors out would make a one-visit solution, perfectly determined by the catalogue,
        look underdetermined, and bias chi2/ndof high on partial runs (issue 14)."""
        return int(self.nobs - self.nparam)


def _array(a, dtype, shape, name):
    if a is None:
        return None
    out = np.ascontiguousarray(a, dtype=dtype)
    if out.shape != shape:
        raise ValueError(f"least squares: {name} has shape {out.shape}, expected {shape}")
    return out


def solve_least_squares(p, covariance=False):
    """Solve `p` (a :class:`LeastSquaresProblem`); a singular system gives status 'singular'
    with zero parameters, an inconsistent problem a ValueError. With `covariance`, also the
    parameters' marginal covariances (costs a dense inverse of the visit block: once per fit,
    not per iteration)."""
    n = len(p.star)
    D, K, T = p.D, p.K, n_terms(p.order)
    solver = p.solver or os.environ.get("MOSAICFIT_SOLVER") or "auto"
    if solver not in SOLVERS:
        raise ValueError(f"least squares: unknown solver {solver!r} (one of {SOLVERS})")
    if p.basis not in KINDS:
        raise ValueError(f"least squares: unknown basis {p.basis!r}")
    if not 0 <= p.order <= 30:
        raise ValueError(f"least squares: polynomial order {p.order} is out of range 0..30")
    args = dict(
        star=_array(p.star, np.int32, (n,), "star"),
        visit=_array(p.visit, np.int32, (n,), "visit"),
        ccd=_array(p.ccd, np.int32, (n,), "ccd"),
        active=_array(p.active, np.uint8, (n,), "active"),
        u=_array(p.u, float, (n,), "u"), v=_array(p.v, float, (n,), "v"),
        y=_array(p.y, float, (n, D), "y"), w=_array(p.w, float, (n,), "w"),
        G=_array(p.G, float, (n, D, K), "G"),
        prior=_array(p.prior, float, (p.nstar, D), "prior"),
        prior_w=_array(p.prior_w, float, (p.nstar,), "prior_w"),
        coef_prior=_array(p.coef_prior, float, (p.nvisit, D, T), "coef_prior"),
        coef_prior_w=_array(p.coef_prior_w, float, (p.nvisit, D, T), "coef_prior_w"),
        coef_prior_mat=_array(p.coef_prior_mat, float, (p.nvisit, T, T), "coef_prior_mat"),
        ccd_fixed=_array(p.ccd_fixed, np.uint8, (p.nccd,), "ccd_fixed"),
        ccd_prior=_array(p.ccd_prior, float, (p.nccd, K), "ccd_prior"),
        ccd_prior_w=_array(p.ccd_prior_w, float, (p.nccd, K), "ccd_prior_w"))
    for name, hi in (("star", p.nstar), ("visit", p.nvisit), ("ccd", p.nccd)):
        a = args[name]
        if n and (a.min() < 0 or a.max() >= hi):
            raise ValueError(f"least squares: {name} index out of range 0..{hi - 1}")
    if (args["prior"] is None) != (args["prior_w"] is None):
        raise ValueError("least squares: prior and prior_w go together")
    if K > 0 and args["G"] is None:
        raise ValueError("least squares: G is required with CCD parameters")
    cw = args["coef_prior_w"]
    if (args["coef_prior"] is None) != (cw is None):
        raise ValueError("least squares: coef_prior and coef_prior_w go together")
    if cw is not None and np.any(cw != cw[:, :1]):
        raise ValueError("least squares: coefficient prior weights must be the same in every "
                         "dimension")
    cm = args["coef_prior_mat"]
    if cm is not None:
        if cw is None:
            raise ValueError("least squares: coef_prior_mat needs coef_prior (its centre)")
        if not np.allclose(cm, np.swapaxes(cm, 1, 2), rtol=1e-10, atol=0.0):
            raise ValueError("least squares: coef_prior_mat must be symmetric")
    if (args["ccd_prior"] is None) != (args["ccd_prior_w"] is None):
        raise ValueError("least squares: ccd_prior and ccd_prior_w go together")
    if args["ccd_prior_w"] is not None and np.any(args["ccd_prior_w"] < 0):
        raise ValueError("least squares: negative CCD prior weight")
    r = _core.fit_mosaic(args["star"], args["visit"], args["ccd"], args["active"], args["u"],
                         args["v"], args["y"], args["w"], args["G"], args["prior"],
                         args["prior_w"], args["coef_prior"], args["coef_prior_w"],
                         cm, args["ccd_fixed"], args["ccd_prior"], args["ccd_prior_w"],
                         int(p.nvisit), int(p.nccd), int(p.nstar), D, K,
                         int(p.order), KINDS[p.basis], bool(p.ccd_sum_zero), solver,
                         bool(covariance))
    # the coefficient and CCD priors as observations (chi2 and count; the C++ side counts the
    # stars'), those of held CCDs aside
    chi2_coef, nobs_coef, n_prior_ccd = 0.0, 0, 0
    if args["prior_w"] is not None and not p.prior_is_measurement:
        chi2_coef -= float(r.chi2 - r.chi2_det)
        nobs_coef -= D * int(np.sum(args["prior_w"] > 0))
    if cw is not None:
        on = cw > 0
        d = np.asarray(r.coef).reshape(p.nvisit, D, T) - args["coef_prior"]
        chi2_coef += float(np.sum(cw[on] * d[on] ** 2))
        nobs_coef += int(on.sum())
        if cm is not None:
            # a full prior counts as many observations as its matrix has rank
            chi2_coef += float(np.einsum("vdt,vts,vds->", d, cm, d))
            nobs_coef += D * sum(int(np.linalg.matrix_rank(m)) for m in cm if np.any(m))
    pw = args["ccd_prior_w"]
    # (nccd, K): sum over the active detections of w_j (1 - h_j) |dr_j / dc|^2, the diagonal
    # of the CCD parameters' normal equations with the stars eliminated, h_j the star's share
    data_w = np.asarray(r.ccd_data_weight) if K > 0 else None
    if pw is not None and K > 0:
        on = pw > 0
        if args["ccd_fixed"] is not None:
            on &= ~args["ccd_fixed"].astype(bool)[:, None]
        d = np.asarray(r.dccd).reshape(p.nccd, K) - args["ccd_prior"]
        chi2_coef += float(np.sum(pw[on] * d[on] ** 2))
        # a CCD prior is a regulariser, not a measurement: it counts as an observation by the
        # share it has in determining its parameter (its leverage pw / (pw + data's weight),
        # the data's weight being that of the detections less their stars' share), so that a
        # parameter the detections determine stays one parameter and one its prior alone holds
        # is none
        n_prior_ccd = int(round(float(np.sum((pw / (pw + data_w))[on]))))
        nobs_coef += n_prior_ccd
    n_ccd_dof = 0
    if K > 0:
        # the free CCD parameters as the C++ side counts them: not held, with data or a prior,
        # less the sum-zero gauge
        free = data_w > 0
        if pw is not None:
            free |= pw > 0
        if args["ccd_fixed"] is not None:
            free &= ~args["ccd_fixed"].astype(bool)[:, None]
        nfree = free.sum(axis=0)
        n_ccd_dof = int(nfree.sum() - (np.sum(nfree >= 2) if p.ccd_sum_zero else 0)
                        - n_prior_ccd)
    return LeastSquaresSolution(
        coef=r.coef, dccd=r.dccd, xstar=r.xstar, resid=r.resid, chi2=r.chi2 + chi2_coef,
        chi2_det=r.chi2_det, nobs=r.nobs + nobs_coef, nobs_det=r.nobs_det, nparam=r.nparam,
        status=r.status, n_ccd_dof=n_ccd_dof, rcond=r.rcond,
        t_assemble=r.t_assemble, t_solve=r.t_solve, solver=r.solver, fill=r.fill,
        npairs=r.npairs, visit_cov=r.visit_cov, ccd_cov=r.ccd_cov, cross_cov=r.cross_cov,
        ccd_data_weight=data_w)


def require_solution(sol, what):
    """`sol`, or a MosaicError saying why the `what` normal equations are singular."""
    if sol.status != "ok":
        raise MosaicError(f"the {what} normal equations are singular: {_WHY[what]}")
    return sol


_WHY = {"astrometric": "too few stars overlap between visits (check --id and the reference "
                       "catalogue)",
        "photometric": "too few stars overlap between visits or have a reference magnitude"}
