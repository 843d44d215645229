#include "covariance.hpp"

#include "factor.hpp"

namespace mosaicfit {

using Eigen::Index;

bool marginal_covariances(const ReducedSystem& sys, int nvisit, int nccd, Covariances& out) {
    const int D = sys.D, T = sys.T, K = sys.K;
    const Index NV1 = sys.NV1, NC = sys.NC;
    double piv = 1.0;
    // A^-1 (all of it: its diagonal blocks and Z_d = A^-1 C_d need every column)
    Mat Ainv = Mat::Identity(NV1, NV1);
    if (NV1 > 0) {
        Mat A = sys.A;
        ScaledFactor fa;
        if (!fa.compute(A, piv)) return false;
        A.resize(0, 0);
        fa.solve(Ainv);
    }
    std::vector<Mat> Z(D);
    Mat Sinv;
    if (NC > 0) {
        Mat S = sys.E;
        for (int d = 0; d < D; ++d) {
            Z[d].noalias() = Ainv * sys.C[d];
            S.noalias() -= sys.C[d].transpose() * Z[d];
        }
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
            Mat blk = Ainv.block(r0, r0, T, T);
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
