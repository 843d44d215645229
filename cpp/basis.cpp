#include "basis.hpp"

#include <stdexcept>
#include <vector>

namespace mosaicfit {

int n_terms(int order) { return (order + 1) * (order + 2) / 2; }

void basis_1d(Basis b, int order, double x, double* f, double* df) {
    f[0] = 1.0;
    if (df) df[0] = 0.0;
    if (order == 0) return;
    f[1] = x;
    if (df) df[1] = 1.0;
    for (int k = 2; k <= order; ++k) {
        switch (b) {
            case Basis::Legendre:  // k P_k = (2k-1) x P_{k-1} - (k-1) P_{k-2}
                f[k] = ((2 * k - 1) * x * f[k - 1] - (k - 1) * f[k - 2]) / k;
                if (df) df[k] = df[k - 2] + (2 * k - 1) * f[k - 1];
                break;
            case Basis::Chebyshev:  // T_k = 2 x T_{k-1} - T_{k-2}
                f[k] = 2 * x * f[k - 1] - f[k - 2];
                if (df) df[k] = 2 * f[k - 1] + 2 * x * df[k - 1] - df[k - 2];
                break;
            case Basis::Monomial:
                f[k] = x * f[k - 1];
                if (df) df[k] = k * f[k - 1];
                break;
        }
    }
}

void basis_with_derivatives(Basis b, int order, double u, double v, double* val, double* du,
                            double* dv) {
    double fu[kMaxBasisOrder + 2], fv[kMaxBasisOrder + 2], dfu[kMaxBasisOrder + 2],
        dfv[kMaxBasisOrder + 2];
    if (order > kMaxBasisOrder) throw std::invalid_argument("polynomial order above 30");
    basis_1d(b, order, u, fu, du ? dfu : nullptr);
    basis_1d(b, order, v, fv, dv ? dfv : nullptr);
    int t = 0;
    for (int deg = 0; deg <= order; ++deg)
        for (int i = deg; i >= 0; --i, ++t) {
            const int j = deg - i;
            val[t] = fu[i] * fv[j];
            if (du) du[t] = dfu[i] * fv[j];
            if (dv) dv[t] = fu[i] * dfv[j];
        }
}

void basis_values(Basis b, int order, double u, double v, double* out) {
    basis_with_derivatives(b, order, u, v, out, nullptr, nullptr);
}

void basis_matrix(Basis b, int order, const double* u, const double* v, std::int64_t n,
                  double* val, double* du, double* dv) {
    const std::int64_t T = n_terms(order);
    // threads only pay off for large inputs (waking them costs ~1 ms)
#pragma omp parallel for schedule(static) if (n > 50000)
    for (std::int64_t i = 0; i < n; ++i)
        basis_with_derivatives(b, order, u[i], v[i], val + i * T, du ? du + i * T : nullptr,
                               dv ? dv + i * T : nullptr);
}

void evaluate_sets(Basis b, int order, const double* C, std::int64_t G, int D,
                   const std::int64_t* g, const double* u, const double* v, std::int64_t n,
                   double* val, double* du, double* dv) {
    if (order > kMaxBasisOrder) throw std::invalid_argument("polynomial order above 30");
    const int T = n_terms(order);
    const bool grad = du || dv;
#pragma omp parallel if (n > 20000)
    {
        std::vector<double> B(T), Bu(T), Bv(T);
#pragma omp for schedule(static)
        for (std::int64_t i = 0; i < n; ++i) {
            basis_with_derivatives(b, order, u[i], v[i], B.data(), grad ? Bu.data() : nullptr,
                                   grad ? Bv.data() : nullptr);
            const double* c = C + g[i] * D * T;
            for (int d = 0; d < D; ++d, c += T) {
                double s = 0.0, su = 0.0, sv = 0.0;
                for (int t = 0; t < T; ++t) {
                    s += c[t] * B[t];
                    if (grad) {
                        su += c[t] * Bu[t];
                        sv += c[t] * Bv[t];
                    }
                }
                if (val) val[d * n + i] = s;
                if (du) du[d * n + i] = su;
                if (dv) dv[d * n + i] = sv;
            }
        }
    }
}

}  // namespace mosaicfit
