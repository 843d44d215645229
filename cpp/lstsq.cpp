#include "lstsq.hpp"

#include <Eigen/Dense>

namespace mosaicfit {

void lstsq(const double* M, const double* B, std::int64_t n, std::int64_t p, std::int64_t k,
           double* X) {
    using RM = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<const RM> Mm(M, n, p);
    Eigen::Map<const RM> Bm(B, n, k);
    Eigen::VectorXd sc = Mm.colwise().norm().transpose();
    for (Eigen::Index j = 0; j < p; ++j) sc[j] = sc[j] > 0 ? 1.0 / sc[j] : 1.0;
    Eigen::MatrixXd Ms = Mm * sc.asDiagonal();
    Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(Ms);
    Eigen::MatrixXd sol = sc.asDiagonal() * qr.solve(Eigen::MatrixXd(Bm));
    Eigen::Map<RM>(X, p, k) = sol;
}

void lstsq_many(std::int64_t K, const double* M, const double* B, std::int64_t n,
                std::int64_t p, std::int64_t k, double* X) {
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t i = 0; i < K; ++i) lstsq(M + i * n * p, B + i * n * k, n, p, k, X + i * p * k);
}

}  // namespace mosaicfit
