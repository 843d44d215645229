#include "sip.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "basis.hpp"
#include "lstsq.hpp"

namespace mosaicfit {

namespace {

double inv_max_abs(const double* x, std::int64_t n) {
    double m = 1.0;
    for (std::int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
    return 1.0 / m;
}

// Least-squares coefficients of the monomials of degree first..order at (x, y) through the
// columns of rhs (n x 2, row-major), fitted in scaled coordinates; out: 2 x (T - first_t).
void fit_monomials(const double* x, const double* y, std::int64_t n, int order, int min_order,
                   const double* rhs, double* out) {
    const int T = n_terms(order), t0 = min_order > 0 ? n_terms(min_order - 1) : 0, P = T - t0;
    const double sx = inv_max_abs(x, n), sy = inv_max_abs(y, n);
    std::vector<double> row(T), M(static_cast<std::size_t>(n) * P),
        X(static_cast<std::size_t>(P) * 2);
    for (std::int64_t i = 0; i < n; ++i) {
        basis_values(Basis::Monomial, order, x[i] * sx, y[i] * sy, row.data());
        std::copy(row.begin() + t0, row.end(), M.begin() + i * P);
    }
    lstsq(M.data(), rhs, n, P, 2, X.data());
    int t = 0;
    for (int d = 0; d <= order; ++d)
        for (int i = d; i >= 0; --i, ++t) {
            if (t < t0) continue;
            const double s = std::pow(sx, i) * std::pow(sy, d - i);
            out[t - t0] = X[(t - t0) * 2] * s;
            out[P + t - t0] = X[(t - t0) * 2 + 1] * s;
        }
}

}  // namespace

void fit_sip_batch(std::int64_t K, std::int64_t n, std::int64_t m, const double* u,
                   const double* v, const double* dU, const double* dV, const double* gu,
                   const double* gv, int order, int iorder, double* ab, double* apbp) {
    const int Ta = n_terms(order) - 3, Ti = n_terms(iorder), T = n_terms(order);
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t k = 0; k < K; ++k) {
        const double* uk = u + k * n;
        const double* vk = v + k * n;
        std::vector<double> rhs(static_cast<std::size_t>(std::max(n, m)) * 2), row(T);
        for (std::int64_t i = 0; i < n; ++i) {
            rhs[2 * i] = dU[k * n + i];
            rhs[2 * i + 1] = dV[k * n + i];
        }
        double* a = ab + k * 2 * Ta;
        fit_monomials(uk, vk, n, order, 2, rhs.data(), a);
        // the forward SIP at the inverse samples, then the inverse fitted there
        const double* gk = gu + k * m;
        const double* hk = gv + k * m;
        std::vector<double> U(m), V(m);
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
        fit_monomials(U.data(), V.data(), m, iorder, 0, rhs.data(), apbp + k * 2 * Ti);
    }
}

}  // namespace mosaicfit
