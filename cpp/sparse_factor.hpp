// The sparse path of the reduced solve (issue 16, "region scale").
//
// In a wide survey a visit shares stars only with its neighbours on the sky, so the visit
// block A of the reduced system (normal_equations.hpp) is block-sparse: T x T blocks on the
// diagonal and for the visit pairs that share a star, nothing elsewhere. It is then factored
// by a block Cholesky of our own on Eigen dense T x T blocks, after a fill-reducing ordering
// of the visits (Eigen's AMD on the visit graph, or the visits' own order if that fills less:
// for a strip the natural order is a band). The factor is the scalar Cholesky of the
// permuted matrix, computed a block at a time with GEMMs, so its rounding is that of any
// Cholesky, and the solves with many right-hand sides (the CCD columns of C) are block GEMMs.
//
// The choice, measured (bench/wide_strip.py, bench/RESULTS.md "Wide strip (issue 16)"): on the
// first astrometric problem of the 50-visit strip (NV1 = 2750, 322 visit pairs sharing stars,
// the factor 29% of the dense one's blocks) the factorisation and solves took 0.45 s with the
// block Cholesky, 0.87 s with Eigen's SimplicialLLT on the same scaled scalar matrix with its
// AMD ordering ("simplicial", kept as an option for this comparison and, as SimplicialLDLT, as
// the fallback) and 1.86 s dense; on the photometric one (T = 36) 0.09, 0.29 and 0.43 s. The
// simplicial factor goes column by column with scattered updates, the block one at GEMM speed.
//
// Semantics as ScaledFactor (factor.hpp): the matrix is scaled to unit diagonal first;
// min_pivot is lowered to the smallest / largest pivot (L_ii^2 of the scaled matrix, i.e. the
// D_ii of its LDLT); where the Cholesky meets a non-positive pivot the scaled matrix is
// factored by Eigen's SimplicialLDLT (AMD ordering) instead; the system is singular when that
// too fails, a pivot is not positive, or the smallest / largest pivot is <= 1e-13 (the
// dense LDLT's threshold; the dense LLT's rcond estimate has no cheap sparse counterpart).
#pragma once
#include <Eigen/Dense>
#include <Eigen/SparseCholesky>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "normal_equations.hpp"

namespace mosaicfit {

// The block pattern of the Cholesky factor of A for one ordering of the visits.
struct BlockSymbolic {
    int n = 0;                            // visits (block columns)
    std::vector<int> perm;                // perm[k]: the visit eliminated k-th
    std::vector<int> pos;                 // pos[v]: the position of visit v
    std::vector<std::vector<int>> rows;   // per position k: rows i > k of L's blocks, sorted
    std::int64_t nblocks = 0;             // blocks of L, the diagonal ones included
    double flops = 0.0;                   // of the numeric factorisation, T = 1 units (x T^3)
    std::string ordering;                 // "natural" or "amd"
};

// The symbolic factorisation of the pattern `pairs` ((a, b), a <= b, as ReducedSystem::pairs)
// under the better (fewer flops) of the natural order and AMD.
BlockSymbolic block_symbolic(int nvisit, const std::vector<std::pair<int, int>>& pairs);

// The fraction of the dense factor's blocks, n (n + 1) / 2, that the sparse factor holds.
inline double block_fill(const BlockSymbolic& s) {
    return s.n ? static_cast<double>(s.nblocks) / (0.5 * s.n * (s.n + 1.0)) : 1.0;
}

// The sparse path is taken from this many visits on ...
constexpr int kSparseMinVisits = 24;
// ... when the factor holds at most this fraction of the dense factor's blocks.
constexpr double kSparseMaxFill = 0.35;

// Which factorisation solver = "auto" | "dense" | "sparse" | "simplicial" picks for this
// pattern: true for a sparse one (else std::invalid_argument for an unknown name).
bool use_sparse(const std::string& solver, const BlockSymbolic& sym);

// A factored: P Sc A Sc P' = L L' (or L D L', after the fallback), Sc = diag(A)^-1/2.
class SparseFactor {
public:
    // mode "sparse" (the block Cholesky) or "simplicial" (Eigen's SimplicialLLT). Factors
    // the blocks sys.Ablk (freed); false if singular. min_pivot as stated above.
    bool compute(ReducedSystem& sys, const BlockSymbolic& sym, const std::string& mode,
                 double& min_pivot);
    // M <- L^-1 P Sc M (then D^-1/2 after the LDLT fallback), so that M' A^-1 N is
    // half(M)' half(N); the rows come out in the factor's order.
    void half_solve(Mat& M) const;
    // M <- Sc P' L^-T M (D^-1/2 first after the fallback): the inverse of half_solve's
    // transpose, A^-1 g = half_back(half_solve(g)).
    void half_back(Mat& M) const;
    // "sparse", "simplicial", or "sparse+ldlt" / "simplicial+ldlt" after the fallback
    const std::string& kind() const { return kind_; }

private:
    int T_ = 0;
    Eigen::Index N_ = 0;
    std::string kind_;
    Eigen::VectorXd sc_;
    // block factor: per position k the lower-triangular diagonal block and the blocks of
    // the rows sym.rows[k]
    const BlockSymbolic* sym_ = nullptr;
    std::vector<Mat> Ld_;
    std::vector<std::vector<Mat>> Lo_;
    // simplicial factor
    using SpMat = Eigen::SparseMatrix<double>;
    std::unique_ptr<Eigen::SimplicialLLT<SpMat>> llt_;
    std::unique_ptr<Eigen::SimplicialLDLT<SpMat>> ldlt_;
    Eigen::VectorXd dinvsqrt_;   // LDLT: D^-1/2

    bool block_cholesky(ReducedSystem& sys, double& piv);
    bool simplicial(const SpMat& M, bool ldlt, double& piv);
    SpMat scaled_matrix(const ReducedSystem& sys) const;
    void block_forward(Mat& M) const;
    void block_backward(Mat& M) const;
};

// The reduced system solved on the sparse path: as solve_reduced_system (factor.hpp) with
// sys.Ablk for A; `kind` gets SparseFactor::kind().
bool solve_reduced_sparse(ReducedSystem& sys, const BlockSymbolic& sym, const std::string& mode,
                          Mat& xv, Eigen::VectorXd& c, double& min_pivot, std::string& kind);

}  // namespace mosaicfit
