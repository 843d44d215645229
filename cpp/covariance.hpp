// The marginal covariance of the model parameters, the stars profiled out: what the error of
// each product needs (python/mosaicfit/fit/uncertainty.py).
//
// With the reduced system of normal_equations.hpp (visit block A shared by the D dimensions,
// couplings C_d, CCD block E) and Z_d = A^-1 C_d, S = E - sum_d C_d' Z_d:
//
//     Cov(c) = S^-1,   Cov(x_d, c) = -Z_d S^-1,   Cov(x_d) = A^-1 + Z_d S^-1 Z_d'
//
// Only the blocks the products need are kept: each visit's own T x T block per dimension, each
// CCD's K x K block, and the visit x CCD cross blocks. Unlike a per-visit estimate, these
// carry the couplings between visits through their common stars: a sky region that every
// visit sees at its field edge, tied to the reference catalogue by few stars, is uncertain in
// all of them at once (the 30-visit check of issue 14). A^-1 costs NV1^3: requested once per
// fit, after convergence, not per iteration.
#pragma once
#include <vector>

#include "normal_equations.hpp"

namespace mosaicfit {

struct Covariances {
    std::vector<double> visit;  // nvisit x D x T x T
    std::vector<double> ccd;    // nccd x K x K
    std::vector<double> cross;  // nvisit x nccd x D x T x K
};

// From the reduced system (not modified). False if singular (the blocks then undefined).
bool marginal_covariances(const ReducedSystem& sys, int nvisit, int nccd, Covariances& out);

}  // namespace mosaicfit
