// The TAN-SIP polynomials of many CCDs at once (mosaicfit.model.sip.fit_sip_polynomials is its
// Python face; the mosaic writes one TAN-SIP header per CCD, ~1000 per 10-visit tract).
//
// For CCD k, with n forward samples at pixel offsets (u, v) from CRPIX and their intermediate
// coordinates (U, V) = CD^-1 (xi, eta) given as dU = U - u, dV = V - v:
//   A, B   = the monomials u^p v^q, 2 <= p + q <= order, fitted by least squares to dU, dV;
// and with m inverse samples (gu, gv), (U', V') = (gu + A(gu, gv), gv + B(gu, gv)):
//   AP, BP = the monomials U'^p V'^q, 0 <= p + q <= iorder, fitted to gu - U', gv - V'.
// Each fit is made in u / max|u|, v / max|v| and returns the coefficients of the unscaled
// monomials (as mosaicfit.model.basis.PolyBasis.fit), terms in the basis order (basis.hpp).
#pragma once
#include <cstdint>

namespace mosaicfit {

// u, v, dU, dV: K x n; gu, gv: K x m (row-major). ab: K x 2 x (n_terms(order) - 3) (A, then B);
// apbp: K x 2 x n_terms(iorder) (AP, then BP). CCDs on OpenMP threads; no Python objects
// (callable with the GIL released).
void fit_sip_batch(std::int64_t K, std::int64_t n, std::int64_t m, const double* u,
                   const double* v, const double* dU, const double* dV, const double* gu,
                   const double* gv, int order, int iorder, double* ab, double* apbp);

}  // namespace mosaicfit
