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

// Least-squares coefficients of the monomials of degree min_order..order at (x, y) through
// the r columns of rhs (n x r, row-major), fitted in x / max|x|, y / max|y| by lstsq (one
// factorisation for all r: every mapping that shares the samples); out: r rows of the
// unscaled monomials' coefficients, row c at out + c * stride.
void fit_monomials(const double* x, const double* y, std::int64_t n, int order, int min_order,
                   const double* rhs, int r, double* out, std::int64_t stride) {
    const int T = n_terms(order), t0 = min_order > 0 ? n_terms(min_order - 1) : 0, P = T - t0;
    const double sx = inv_max_abs(x, n), sy = inv_max_abs(y, n);
    std::vector<double> row(T), M(static_cast<std::size_t>(n) * P),
        X(static_cast<std::size_t>(P) * r);
    for (std::int64_t i = 0; i < n; ++i) {
        basis_values(Basis::Monomial, order, x[i] * sx, y[i] * sy, row.data());
        std::copy(row.begin() + t0, row.end(), M.begin() + i * P);
    }
    lstsq(M.data(), rhs, n, P, r, X.data());
    int t = 0;
    for (int d = 0; d <= order; ++d)
        for (int i = d; i >= 0; --i, ++t) {
            if (t < t0) continue;
            const double s = std::pow(sx, i) * std::pow(sy, d - i);
            for (int c = 0; c < r; ++c) out[c * stride + t - t0] = X[(t - t0) * r + c] * s;
        }
}

}  // namespace

void fit_sip_batch(std::int64_t K, std::int64_t n, std::int64_t m, const double* u,
                   const double* v, const double* dU, const double* dV, const double* gu,
                   const double* gv, int order, int iorder, double* ab, double* apbp) {
    const int Ta = n_terms(order) - 3, Ti = n_terms(iorder), T = n_terms(order);
    // the forward fits: the mappings with the same samples (one CCD in every visit: the
    // samples are offsets from the CCD's CRPIX) share one factorisation
    std::vector<std::vector<std::int64_t>> groups;
    for (std::int64_t k = 0; k < K; ++k) {
        std::size_t g = 0;
        for (; g < groups.size(); ++g) {
            const std::int64_t f = groups[g][0];
            if (std::equal(u + k * n, u + (k + 1) * n, u + f * n) &&
                std::equal(v + k * n, v + (k + 1) * n, v + f * n))
                break;
        }
        if (g == groups.size()) groups.emplace_back();
        groups[g].push_back(k);
    }
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t g = 0; g < static_cast<std::int64_t>(groups.size()); ++g) {
        const auto& ks = groups[g];
        const std::int64_t f = ks[0];
        const int r = static_cast<int>(2 * ks.size());
        std::vector<double> rhs(static_cast<std::size_t>(n) * r), out(static_cast<std::size_t>(r) * Ta);
        for (std::int64_t i = 0; i < n; ++i)
            for (std::size_t c = 0; c < ks.size(); ++c) {
                rhs[i * r + 2 * c] = dU[ks[c] * n + i];
                rhs[i * r + 2 * c + 1] = dV[ks[c] * n + i];
            }
        fit_monomials(u + f * n, v + f * n, n, order, 2, rhs.data(), r, out.data(), Ta);
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
        fit_monomials(U.data(), V.data(), m, iorder, 0, rhs.data(), 2, apbp + k * 2 * Ti, Ti);
    }
}

}  // namespace mosaicfit
