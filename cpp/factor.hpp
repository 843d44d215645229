// Solving the reduced normal equations (normal_equations.hpp).
//
// The visit block A is factored once for all D dimensions; the CCD parameters are then
// eliminated in turn (a second, small Schur complement S = E - sum_d C_d' A^-1 C_d), and the
// visit parameters follow by back-substitution, A x_d = g_d - C_d c. D = 2 makes this ~8x
// cheaper than factoring the whole system and needs a quarter of its memory.
#pragma once
#include <Eigen/Dense>

#include "normal_equations.hpp"

namespace mosaicfit {

// A symmetric positive (semi-)definite matrix M factored after scaling it to unit diagonal
// (the visit and CCD blocks differ by many orders): M = Sc^-1 L L' Sc^-1 by LLT, or the pivoted
// LDLT when rounding makes a nearly singular system fail the Cholesky or pass it with an rcond
// estimate <= 1e-13 (an exactly singular one can pass by rounding); singular when the LDLT's
// smallest / largest pivot is <= 1e-13 too.
struct ScaledFactor {
    Eigen::VectorXd sc;        // Sc: 1 / sqrt(diag M)
    Eigen::LLT<Mat> llt;
    Eigen::LDLT<Mat> ldlt;
    bool use_ldlt = false;

    // Factors M (overwritten by Sc M Sc). min_pivot is lowered to the LLT's rcond estimate or
    // the LDLT's smallest / largest |D_ii|. False if M is singular.
    bool compute(Mat& M, double& min_pivot);
    // B <- M^-1 B (M unscaled).
    void solve(Mat& B) const;
};

// Solves the reduced system: xv (NV1 x D) the visit parameters of each dimension, c (NC) the
// CCD parameters. sys.A is freed once factored and sys.C overwritten. min_pivot as in
// ScaledFactor::compute over both factorisations. False if singular (xv, c then undefined).
bool solve_reduced_system(ReducedSystem& sys, Mat& xv, Eigen::VectorXd& c, double& min_pivot);

}  // namespace mosaicfit
