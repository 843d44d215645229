// The one polynomial basis of the package (mosaicfit.model.basis is its Python face).
//
// 1-D: f_0..f_N at x, the Legendre polynomials P_k, the Chebyshev polynomials T_k or the
// monomials x^k, by their three-term recurrences, with their derivatives.
// 2-D: a basis of total order N holds the terms B_t(u, v) = f_i(u) f_j(v) with i + j <= N,
// ordered by total degree d = i + j, then by decreasing power of u: t = d (d + 1) / 2 + (d - i).
#pragma once
#include <cstdint>

namespace mosaicfit {

enum class Basis { Legendre = 0, Chebyshev = 1, Monomial = 2 };

constexpr int kMaxBasisOrder = 30;

// Number of 2-D terms of total order <= order: (order + 1)(order + 2) / 2.
int n_terms(int order);

// f_0..f_order at x; their derivatives in df unless it is null.
void basis_1d(Basis b, int order, double x, double* f, double* df);

// B_t(u, v), t = 0..n_terms-1 (order <= kMaxBasisOrder, else std::invalid_argument).
void basis_values(Basis b, int order, double u, double v, double* out);

// Values and first derivatives (d/du, d/dv; either may be null).
void basis_with_derivatives(Basis b, int order, double u, double v, double* val, double* du,
                            double* dv);

// The n x n_terms row-major basis matrices at n points (du, dv may be null), rows on OpenMP
// threads for large n. No Python objects: callable with the GIL released.
void basis_matrix(Basis b, int order, const double* u, const double* v, std::int64_t n,
                  double* val, double* du, double* dv);

// The polynomials sum_t C[g_i, d, t] B_t(u_i, v_i) at n points, each point i with its own
// coefficient set g_i (e.g. its visit): C is G x D x T row-major (T = n_terms(order)); val,
// du, dv (the derivatives; either may be null) are D x n. The basis is not materialised
// (a visit's detections x terms x 3 matrices are ~60 MB on a 10-visit tract). Points on
// OpenMP threads for large n.
void evaluate_sets(Basis b, int order, const double* C, std::int64_t G, int D,
                   const std::int64_t* g, const double* u, const double* v, std::int64_t n,
                   double* val, double* du, double* dv);

}  // namespace mosaicfit
