// Joint least squares of a mosaic: per-visit polynomials + per-CCD parameters + per-star values,
// with the star blocks eliminated analytically (Schur complement) before a Cholesky solve (dense,
// or block-sparse where visits overlap only their neighbours: sparse_factor.hpp).
//
// Model of detection j of star s in visit v on CCD c (D = 2 for positions, 1 for magnitudes):
//
//     r_j = P_v(u_j, v_j) + G_j . dc_c - x_s - y_j,     weight w_j (isotropic in the D dims)
//
// P_v = sum_t coef[v, d, t] B_t(u, v): a basis of total order N (Legendre, Chebyshev or
// monomials) in coordinates scaled to [-1, 1]; dc_c the K parameters of CCD c (increments,
// linearised: G_j is their derivative); x_s the value of star s (free, with an optional
// Gaussian prior of weight pw_s about prior_s); y_j a known offset (proper motion, or minus the
// observed magnitude). Since each star's block is w * I_D, the elimination produces one
// nterms x nterms matrix per pair of visits, shared by the D dims, computed as a matrix product.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "basis.hpp"

namespace mosaicfit {

struct FitProblem {
    int D = 2;            // output dimensions
    int order = 9;
    Basis basis = Basis::Legendre;
    int nvisit = 0, nccd = 0, nstar = 0;
    int K = 0;            // CCD parameters per CCD (0: none)
    // detections
    std::int64_t n = 0;
    const std::int32_t* star = nullptr;
    const std::int32_t* visit = nullptr;
    const std::int32_t* ccd = nullptr;
    const std::uint8_t* active = nullptr;
    const double* u = nullptr;      // scaled coordinates
    const double* v = nullptr;
    const double* y = nullptr;      // n x D
    const double* w = nullptr;      // n
    const double* G = nullptr;      // n x D x K (row-major), CCD derivatives; may be null if K = 0
    // stars
    const double* prior = nullptr;  // nstar x D
    const double* prior_w = nullptr;  // nstar
    // coefficient priors (gauge fixing): nvisit x D x nterms values and weights
    const double* coef_prior = nullptr;
    const double* coef_prior_w = nullptr;
    // ... and full prior matrices: nvisit x nterms x nterms (symmetric, positive semi-definite)
    // M_v, adding (c_vd - coef_prior_vd)' M_v (c_vd - coef_prior_vd) in every dimension d: a
    // prior on a visit polynomial as a function (its terms correlated), not term by term
    const double* coef_prior_mat = nullptr;
    // CCDs whose parameters are held fixed (1) and visits whose polynomial is held at coef_prior
    const std::uint8_t* ccd_fixed = nullptr;   // nccd
    // Gaussian priors of the CCD parameters' increments: nccd x K values and weights (0: none)
    const double* ccd_prior = nullptr;
    const double* ccd_prior_w = nullptr;
    bool ccd_sum_zero = true;                   // gauge: sum over free CCDs of each parameter = 0
    bool covariance = false;                    // also the marginal covariances (covariance.hpp)
    // the visit block's factorisation (sparse_factor.hpp): "dense", "sparse" (block Cholesky
    // on the visit pairs that share stars), "simplicial" (Eigen's SimplicialLLT, for
    // comparison) or "auto" (sparse where few visit pairs share stars: a wide survey)
    std::string solver = "auto";
};

struct FitResult {
    // shapes of the arrays below
    int D = 0, nterms = 0, nvisit = 0, nccd = 0, K = 0, nstar = 0;
    std::int64_t n = 0;
    std::vector<double> coef;       // nvisit x D x nterms
    std::vector<double> dccd;       // nccd x K
    // nccd x K: sum over the active detections of w_j (1 - w_j / W_s) |d r_j / d c_q|^2, the
    // CCD parameters' information from the data with the stars eliminated (the detection's
    // share of its star removed), before any prior or gauge
    std::vector<double> ccd_data_weight;
    std::vector<double> xstar;      // nstar x D (NaN for stars without data)
    std::vector<double> resid;      // n x D (0 for inactive)
    double chi2 = 0.0;              // detections + star priors
    double chi2_det = 0.0;          // detections only
    std::int64_t nobs = 0;          // scalar observations (detections x D + priors x D)
    std::int64_t nobs_det = 0;      // scalar observations of detections (detections x D)
    std::int64_t nparam = 0;        // free parameters (model + stars - gauge)
    std::string status;             // "ok" (LLT, or LDLT where the LLT fails) or "singular"
    double min_pivot = 0.0;         // smallest D_ii / max D_ii of the LDLT (conditioning)
    std::string solver;             // the path taken: "dense", "sparse", "simplicial" (+ "+ldlt")
    double fill = 0.0;              // blocks of the sparse factor / of the dense one
    std::int64_t npairs = 0;        // visit pairs sharing stars (off-diagonal blocks of A)
    double t_assemble = 0.0, t_solve = 0.0;
    // with p.covariance (covariance.hpp; empty otherwise or if singular)
    std::vector<double> visit_cov;  // nvisit x D x nterms x nterms
    std::vector<double> ccd_cov;    // nccd x K x K
    std::vector<double> cross_cov;  // nvisit x nccd x D x nterms x K
};

// The phases (normal_equations.hpp, factor.hpp), then the stars and residuals. The problem is
// trusted (mosaicfit.fit.core checks it): indices in range, arrays of the sizes above.
FitResult solve_mosaic(const FitProblem& p);

}  // namespace mosaicfit
