#include "sip.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <vector>

#include "basis.hpp"

namespace mosaicfit {

namespace {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double inv_max_abs(const double* x, std::int64_t n) {
    double m = 1.0;
    for (std::int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
    return 1.0 / m;
}

// The monomials of degree min_order..order at (x, y), in x / max|x|, y / max|y|, their columns
// scaled to unit norm and factored once (Householder QR with column pivoting, as lstsq: a CCD
// far from the optical axis spans x / max|x| in [0.88, 1], where the monomials are nearly
// collinear), for the right-hand sides of every mapping that shares the samples.
class MonomialDesign {
  public:
    MonomialDesign(const double* x, const double* y, std::int64_t n, int order, int min_order)
        : order_(order), t0_(min_order > 0 ? n_terms(min_order - 1) : 0),
          P_(n_terms(order) - t0_), sx_(inv_max_abs(x, n)), sy_(inv_max_abs(y, n)) {
        const int T = n_terms(order);
        std::vector<double> row(T);
        Eigen::MatrixXd M(n, P_);
        for (std::int64_t i = 0; i < n; ++i) {
            basis_values(Basis::Monomial, order, x[i] * sx_, y[i] * sy_, row.data());
            for (int t = 0; t < P_; ++t) M(i, t) = row[t0_ + t];
        }
        sc_ = M.colwise().norm().transpose();
        for (int t = 0; t < P_; ++t) sc_[t] = sc_[t] > 0 ? 1.0 / sc_[t] : 1.0;
        qr_.compute(M * sc_.asDiagonal());
    }

    // rhs: n x r (row-major); out: r rows of P coefficients of the unscaled monomials, row i
    // at out + i * stride
    void solve(const double* rhs, std::int64_t n, int r, double* out, std::int64_t stride) const {
        const Eigen::MatrixXd X = sc_.asDiagonal() * qr_.solve(
            Eigen::MatrixXd(Eigen::Map<const RowMat>(rhs, n, r)));
        int t = 0;
        for (int d = 0; d <= order_; ++d)
            for (int i = d; i >= 0; --i, ++t) {
                if (t < t0_) continue;
                const double s = std::pow(sx_, i) * std::pow(sy_, d - i);
                for (int c = 0; c < r; ++c) out[c * stride + t - t0_] = X(t - t0_, c) * s;
            }
    }

  private:
    int order_, t0_, P_;
    double sx_, sy_;
    Eigen::VectorXd sc_;
    Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr_;
};

}  // namespace

void fit_sip_batch(std::int64_t K, std::int64_t n, std::int64_t m, const double* u,
                   const double* v, const double* dU, const double* dV, const double* gu,
                   const double* gv, int order, int iorder, double* ab, double* apbp) {
    const int Ta = n_terms(order) - 3, Ti = n_terms(iorder), T = n_terms(order);
    // the forward fits: the mappings with the same samples (one CCD in every visit: the
    // samples are offsets from the CCD's CRPIX) share one factorisation
    std::vector<std::int64_t> rep(K);
    std::vector<std::vector<std::int64_t>> groups;
    {
        std::vector<std::int64_t> firsts;
        for (std::int64_t k = 0; k < K; ++k) {
            std::size_t g = 0;
            for (; g < firsts.size(); ++g) {
                const std::int64_t f = firsts[g];
                if (std::equal(u + k * n, u + (k + 1) * n, u + f * n) &&
                    std::equal(v + k * n, v + (k + 1) * n, v + f * n))
                    break;
            }
            if (g == firsts.size()) { firsts.push_back(k); groups.emplace_back(); }
            groups[g].push_back(k);
        }
    }
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t g = 0; g < static_cast<std::int64_t>(groups.size()); ++g) {
        const auto& ks = groups[g];
        const std::int64_t f = ks[0];
        const MonomialDesign design(u + f * n, v + f * n, n, order, 2);
        const int r = static_cast<int>(2 * ks.size());
        std::vector<double> rhs(static_cast<std::size_t>(n) * r), out(static_cast<std::size_t>(r) * Ta);
        for (std::int64_t i = 0; i < n; ++i)
            for (std::size_t c = 0; c < ks.size(); ++c) {
                rhs[i * r + 2 * c] = dU[ks[c] * n + i];
                rhs[i * r + 2 * c + 1] = dV[ks[c] * n + i];
            }
        design.solve(rhs.data(), n, r, out.data(), Ta);
        for (std::size_t c = 0; c < ks.size(); ++c)
            std::copy(out.begin() + 2 * c * Ta, out.begin() + (2 * c + 2) * Ta, ab + ks[c] * 2 * Ta);
    }
    // the inverse fits: their samples are each mapping's own
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t k = 0; k < K; ++k) {
        const double* a = ab + k * 2 * Ta;
        // the forward SIP at the inverse samples, then the inverse fitted there
        const double* gk = gu + k * m;
        const double* hk = gv + k * m;
        std::vector<double> U(m), V(m), rhs(static_cast<std::size_t>(m) * 2), row(T);
        for (std::int64_t i = 0; i < m; ++i) {
            basis_values(Basis::Monomial, order, gk[i], hk[i], row.data());
            double A = 0.0, B = 0.0;
            for (int t = 3; t < T; ++t) {
                A += a[t - 3] * row[t];
                B += a[Ta + t - 3] * row[t];
            }
            U[i] = gk[i] + A;
            V[i] = hk[i] + B;
            rhs[2 * i] = gk[i] - U[i];
            rhs[2 * i + 1] = hk[i] - V[i];
        }
        MonomialDesign(U.data(), V.data(), m, iorder, 0).solve(rhs.data(), m, 2, apbp + k * 2 * Ti, Ti);
    }
}

}  // namespace mosaicfit
