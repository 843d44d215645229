// The reduced normal equations of the mosaic fit (fit.hpp states the model and the problem).
//
// Each star's block of the normal matrix is W_s I_D, so the stars are eliminated analytically
// (a Schur complement): what remains couples the visit polynomials and the CCD parameters
// only. Ordered (visit parameters of dim 0, of dim 1, ..., CCD parameters):
//
//     [ A   0   C0 ] [x0]   [g0]
//     [ 0   A   C1 ] [x1] = [g1]
//     [ C0' C1' E  ] [c ]   [gc]
//
// The visit block A (nvisit*T square, T = n_terms(order)) is the same in every dimension
// (isotropic weights), so it is stored once: for visits a, b it is
//
//     A_ab = [a == b] sum_j w_j B_j' B_j  -  sum_s sum_{j in a, k in b, both of s} w_j w_k / W_s B_j' B_k
//
// one matrix product per pair of visits over the stars they share (a star has at most one
// detection per visit: the detections of two visits are paired one to one by star). C_d couples the visits and
// the CCDs in dimension d, E the CCDs, through the derivatives G_j. The functions below fill
// these blocks phase by phase, in this order: star sums, visit rows, visit pairs, visit
// blocks, CCD terms, right-hand side, then coefficient priors, the CCD gauge and the
// parameters held fixed.
//
// A has a block only for the visit pairs that share a star (visit_pairs). The dense path
// stores A whole; the sparse path (sparse_factor.hpp: a wide survey, where each visit
// overlaps only its neighbours) keeps just those blocks and never allocates the NV1 x NV1
// matrix.
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <utility>
#include <vector>

#include "fit.hpp"

namespace mosaicfit {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Over the active detections j of each star s:
//     W_s = sum_j w_j + pw_s,     Q_s = pw_s prior_s - sum_j w_j y_j   (D values)
struct StarSums {
    std::vector<double> W;   // nstar
    std::vector<double> Q;   // nstar x D
};
StarSums star_sums(const FitProblem& p);

// The active detections of each visit, sorted by star (stable), and their basis rows.
struct VisitRows {
    std::vector<std::vector<std::int64_t>> dets;  // per visit: detection indices
    std::vector<RowMat> B;                        // per visit: dets[v].size() x T
};
VisitRows visit_rows(const FitProblem& p);

// The pairs of visits (a, b), a <= b, whose block A_ab can be non-zero: every (a, a), and
// (a, b) where the two share a star among their active detections; sorted. Found from each
// visit's stars and each star's visits, so the cost is that of the pairs, not nvisit^2.
std::vector<std::pair<int, int>> visit_pairs(const FitProblem& p, const VisitRows& vr);

struct ReducedSystem {
    int D = 0, T = 0, K = 0;
    Eigen::Index NV1 = 0;             // visit parameters of one dimension: nvisit * T
    Eigen::Index NC = 0;              // CCD parameters: nccd * K
    bool sparse = false;              // A kept as blocks (Ablk) rather than whole (A)
    std::vector<std::pair<int, int>> pairs;   // visit_pairs
    Mat A;                            // dense: NV1 x NV1 (empty when sparse)
    std::vector<Mat> Ablk;            // sparse: T x T block A_ab of each pair (a, b)
    std::vector<int> diag_blk;        // sparse: the pair index of (v, v)
    std::vector<Mat> C;               // D of NV1 x NC
    Mat E;                            // NC x NC
    std::vector<Eigen::VectorXd> gv;  // D of NV1
    Eigen::VectorXd gc;               // NC
    std::int64_t ngauge = 0;          // gauge conditions (add_ccd_gauge)
    std::int64_t nfixed = 0;          // parameters held at 0 (hold_fixed_parameters)

    // first row of visit v in A (and of CCD c in E)
    Eigen::Index visit_row(int v) const { return static_cast<Eigen::Index>(v) * T; }
    // A(i, i) on either path
    double& A_diag(Eigen::Index i) {
        return sparse ? Ablk[diag_blk[i / T]](i % T, i % T) : A(i, i);
    }
    Eigen::Index ccd_row(int c) const { return static_cast<Eigen::Index>(c) * K; }
};

// All blocks zero, sized for p, A dense or as the blocks of `pairs` (sparse).
ReducedSystem zero_system(const FitProblem& p, std::vector<std::pair<int, int>> pairs, bool sparse);

// A: the direct visit terms minus the eliminated stars (visit pairs on OpenMP threads).
void add_visit_blocks(ReducedSystem& sys, const FitProblem& p, const StarSums& st,
                      const VisitRows& vr);

// C_d and E (nothing if K = 0).
void add_ccd_terms(ReducedSystem& sys, const FitProblem& p, const StarSums& st,
                   const VisitRows& vr);

// g_d and gc: J_j' w_j (y_j + Q_s / W_s) summed over the active detections.
void add_right_hand_side(ReducedSystem& sys, const FitProblem& p, const StarSums& st,
                         const VisitRows& vr);

// Gaussian priors on polynomial coefficients (weights the same in every dimension, else
// std::invalid_argument).
void add_coefficient_priors(ReducedSystem& sys, const FitProblem& p);

// With p.ccd_sum_zero: each CCD parameter sums to 0 over the free CCDs, as a positive
// semi-definite term lam (sum_c dc)^2 that selects the sum-zero member of the null space.
void add_ccd_gauge(ReducedSystem& sys, const FitProblem& p);

// Parameters without information (no active detection) or held fixed (p.ccd_fixed): their
// rows and columns replaced by the identity and a zero right-hand side.
// Gaussian priors of the CCD parameters (ccd_prior, ccd_prior_w): a CCD with few stars
// keeps the camera's placement where its data say nothing, instead of being frozen at it.
void add_ccd_priors(ReducedSystem& sys, const FitProblem& p);
void hold_fixed_parameters(ReducedSystem& sys, const FitProblem& p);

}  // namespace mosaicfit
