#include "factor.hpp"

#include <algorithm>

namespace mosaicfit {

using Eigen::Index;

namespace {
constexpr double kMinPivot = 1e-13;   // smallest pivot / largest of a non-singular system
}  // namespace

bool ScaledFactor::compute(Mat& M, double& min_pivot) {
    sc = M.diagonal().cwiseSqrt().cwiseInverse();
    for (Index j = 0; j < M.cols(); ++j)
        for (Index i = 0; i < M.rows(); ++i) M(i, j) *= sc[i] * sc[j];
    llt.compute(M);
    if (llt.info() == Eigen::Success) {
        const double rc = llt.rcond();
        if (rc > kMinPivot) {
            min_pivot = std::min(min_pivot, rc);
            return true;
        }
        // an exactly singular system can pass the Cholesky by rounding (rcond ~1e-18): the
        // LDLT's pivots decide, as for one that fails it
    }
    use_ldlt = true;
    ldlt.compute(M);
    const auto d = ldlt.vectorD().cwiseAbs();
    const double dmax = d.size() ? d.maxCoeff() : 0.0;
    const double dmin = d.size() ? d.minCoeff() : 0.0;
    const double piv = dmax > 0 ? dmin / dmax : 0.0;
    min_pivot = std::min(min_pivot, piv);
    return ldlt.info() == Eigen::Success && piv > kMinPivot && ldlt.isPositive();
}

void ScaledFactor::solve(Mat& Bm) const {
    Bm = sc.asDiagonal() * Bm;
    if (use_ldlt) Bm = ldlt.solve(Bm);
    else llt.solveInPlace(Bm);
    Bm = sc.asDiagonal() * Bm;
}

namespace {

// M <- L^-1 Sc M for the LLT of fa, column blocks on OpenMP threads. With A = Sc^-1 L L' Sc^-1,
// C' A^-1 C = Y' Y for Y = L^-1 Sc C: one triangular solve instead of two.
void lower_solve(const ScaledFactor& fa, Mat& M) {
    M = fa.sc.asDiagonal() * M;
    const Index nb = M.cols(), step = std::max<Index>(16, (nb + 7) / 8);
#pragma omp parallel for schedule(dynamic)
    for (Index c0 = 0; c0 < nb; c0 += step)
        fa.llt.matrixL().solveInPlace(M.middleCols(c0, std::min(step, nb - c0)));
}

}  // namespace

bool solve_reduced_system(ReducedSystem& sys, Mat& xv, Eigen::VectorXd& c, double& min_pivot) {
    const int D = sys.D;
    const Index NV1 = sys.NV1, NC = sys.NC;
    std::vector<Mat>& C = sys.C;
    ScaledFactor fa;
    bool ok = NV1 == 0 || fa.compute(sys.A, min_pivot);
    sys.A.resize(0, 0);                                // factored: free it
    Mat& Gv = xv;
    Gv.resize(NV1, D);
    for (int d = 0; d < D; ++d) Gv.col(d) = sys.gv[d];
    c = Eigen::VectorXd::Zero(NC);
    const bool half = NV1 > 0 && !fa.use_ldlt;      // the LLT's L is there to use
    if (ok && NC > 0) {
        // eliminate the visit parameters: S = E - sum_d C_d' A^-1 C_d
        Mat Sm = sys.E;
        Eigen::VectorXd rc = sys.gc;
        if (half) {
            lower_solve(fa, Gv);
            for (int d = 0; d < D; ++d) {
                lower_solve(fa, C[d]);                 // C_d becomes Y_d
                Sm.noalias() -= C[d].transpose() * C[d];
                rc.noalias() -= C[d].transpose() * Gv.col(d);
            }
        } else {
            for (int d = 0; d < D; ++d) {
                Mat Z = C[d];
                if (NV1 > 0) fa.solve(Z);
                Sm.noalias() -= C[d].transpose() * Z;
                Mat zg = Gv.col(d);
                if (NV1 > 0) fa.solve(zg);
                rc.noalias() -= C[d].transpose() * zg.col(0);
            }
        }
        Sm = (0.5 * (Sm + Sm.transpose())).eval();     // symmetric to rounding
        ScaledFactor fs;
        ok = fs.compute(Sm, min_pivot);
        if (ok) {
            Mat cm = rc;
            fs.solve(cm);
            c = cm.col(0);
        }
    } else if (half) {
        lower_solve(fa, Gv);
    }
    if (ok && NV1 > 0) {
        // back-substitute: A x_d = g_d - C_d c
        if (half) {
            for (int d = 0; d < D; ++d)
                if (NC > 0) Gv.col(d).noalias() -= C[d] * c;
            fa.llt.matrixU().solveInPlace(Gv);
            Gv = fa.sc.asDiagonal() * Gv;
        } else {
            for (int d = 0; d < D; ++d)
                if (NC > 0) Gv.col(d).noalias() -= C[d] * c;
            fa.solve(Gv);
        }
    }
    return ok;
}

}  // namespace mosaicfit
