#include "covariance.hpp"

#include <algorithm>

#include "factor.hpp"

namespace mosaicfit {

using Eigen::Index;

namespace {

// The diagonal T x T blocks of A^-1 (one per visit) from its factor. With the Cholesky,
// Sc A Sc = L L', A^-1 = Sc W' W Sc for W = L^-1, lower triangular: its column blocks are
// solves of L's trailing part only (n^3 / 3 in all, on threads), and each diagonal block is
// W's rows below it (n^2 T / 2): ~3.5x less work than A^-1 by two full triangular solves,
// which the pivoted LDLT (a nearly singular A) still takes.
void inverse_diagonal_blocks(const ScaledFactor& fa, const ReducedSystem& sys, int nvisit,
                             std::vector<Mat>& blk) {
    const Index n = sys.NV1, T = sys.T;
    blk.assign(nvisit, Mat());
    if (fa.use_ldlt) {
        Mat Ainv = Mat::Identity(n, n);
        fa.solve(Ainv);
        for (int v = 0; v < nvisit; ++v)
            blk[v] = Ainv.block(sys.visit_row(v), sys.visit_row(v), T, T);
        return;
    }
    const Mat& L = fa.llt.matrixLLT();
    Mat W = Mat::Zero(n, n);
    const Index step = 64, nb = (n + step - 1) / step;
#pragma omp parallel for schedule(dynamic)
    for (Index b = 0; b < nb; ++b) {
        const Index c0 = b * step, w = std::min(step, n - c0), m = n - c0;
        Mat X = Mat::Identity(m, w);
        L.bottomRightCorner(m, m).triangularView<Eigen::Lower>().solveInPlace(X);
        W.block(c0, c0, m, w) = X;
    }
#pragma omp parallel for schedule(dynamic)
    for (int v = 0; v < nvisit; ++v) {
        const Index r0 = sys.visit_row(v);
        const auto Wv = W.block(r0, r0, n - r0, T);
        const auto sc = fa.sc.segment(r0, T).asDiagonal();
        blk[v] = sc * (Wv.transpose() * Wv) * sc;
    }
}

}  // namespace

bool marginal_covariances(const ReducedSystem& sys, int nvisit, int nccd, Covariances& out) {
    const int D = sys.D, T = sys.T, K = sys.K;
    const Index NV1 = sys.NV1, NC = sys.NC;
    double piv = 1.0;
    // the diagonal blocks of A^-1 and Z_d = A^-1 C_d, without A^-1 itself
    std::vector<Mat> Ablk(nvisit, Mat::Identity(T, T));
    std::vector<Mat> Z(D);
    if (NV1 > 0) {
        Mat A = sys.A;
        ScaledFactor fa;
        if (!fa.compute(A, piv)) return false;
        A.resize(0, 0);
        inverse_diagonal_blocks(fa, sys, nvisit, Ablk);
        for (int d = 0; d < D && NC > 0; ++d) {
            Z[d] = sys.C[d];
            fa.solve(Z[d]);
        }
    } else {
        for (int d = 0; d < D && NC > 0; ++d) Z[d] = sys.C[d];
    }
    Mat Sinv;
    if (NC > 0) {
        Mat S = sys.E;
        for (int d = 0; d < D; ++d) S.noalias() -= sys.C[d].transpose() * Z[d];
        S = (0.5 * (S + S.transpose())).eval();
        ScaledFactor fs;
        if (!fs.compute(S, piv)) return false;
        Sinv = Mat::Identity(NC, NC);
        fs.solve(Sinv);
    }
    out.visit.assign(static_cast<std::size_t>(nvisit) * D * T * T, 0.0);
    out.ccd.assign(static_cast<std::size_t>(nccd) * K * K, 0.0);
    out.cross.assign(static_cast<std::size_t>(nvisit) * nccd * D * T * K, 0.0);
#pragma omp parallel for schedule(dynamic)
    for (int v = 0; v < nvisit; ++v) {
        const Index r0 = sys.visit_row(v);
        for (int d = 0; d < D; ++d) {
            Mat blk = Ablk[v];
            Mat ZS;                                          // T x NC: Z_d[v] S^-1
            if (NC > 0) {
                ZS.noalias() = Z[d].middleRows(r0, T) * Sinv;
                blk.noalias() += ZS * Z[d].middleRows(r0, T).transpose();
                for (int c = 0; c < nccd; ++c)
                    for (int t = 0; t < T; ++t)
                        for (int q = 0; q < K; ++q)
                            out.cross[((((static_cast<std::size_t>(v) * nccd + c) * D + d) * T + t) * K) + q] =
                                -ZS(t, sys.ccd_row(c) + q);
            }
            double* dst = out.visit.data() + (static_cast<std::size_t>(v) * D + d) * T * T;
            for (int i = 0; i < T; ++i)
                for (int j = 0; j < T; ++j) dst[i * T + j] = 0.5 * (blk(i, j) + blk(j, i));
        }
    }
    for (int c = 0; c < nccd && NC > 0; ++c)
        for (int i = 0; i < K; ++i)
            for (int j = 0; j < K; ++j)
                out.ccd[(static_cast<std::size_t>(c) * K + i) * K + j] = Sinv(sys.ccd_row(c) + i, sys.ccd_row(c) + j);
    return true;
}

}  // namespace mosaicfit
