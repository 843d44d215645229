// Least squares min |M X - B| for small dense problems (the SIP and fcr fits: ~1000 x 55):
// the columns of M scaled to unit norm, then Householder QR with column pivoting.
// Single-threaded and as accurate as LAPACK's, without BLAS threads that stall when the cores
// are shared.
#pragma once
#include <cstdint>

namespace mosaicfit {

// M (n x p), B (n x k) and X (p x k), all row-major. No Python objects: callable with the
// GIL released.
void lstsq(const double* M, const double* B, std::int64_t n, std::int64_t p, std::int64_t k,
           double* X);

// K independent problems at once (M: K x n x p, B: K x n x k, X: K x p x k), each as lstsq,
// on OpenMP threads (the products' polynomials of ~1000 CCDs).
void lstsq_many(std::int64_t K, const double* M, const double* B, std::int64_t n,
                std::int64_t p, std::int64_t k, double* X);

}  // namespace mosaicfit
