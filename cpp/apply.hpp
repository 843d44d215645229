// The mosaic's flux correction of one CCD, evaluated per pixel:
//
//     f(x, y) = 10^(-0.4 P(x', y')) * J(x, y)
//
// P: meas_mosaic's FluxFitParams (fcr- file) in the CCD frame turned by nq quarter turns,
//    (x, y) -> (x', y') inside the W x H box, then u = (x' + X0) / U_MAX, v = (y' + Y0) / V_MAX
//    and P = sum C_ij B_i(u) B_j(v), B the monomials or the Chebyshev polynomials;
// J: the pixel area of the TAN-SIP WCS (wcs- file) relative to the area at CRPIX,
//    |det d(u + A, v + B)/d(u, v)| with u = x + 1 - CRPIX1, v = y + 1 - CRPIX2.
//
// Along an image row (y fixed) one of u, v of P is constant and the other varies linearly
// with x, and v of J is constant: each row collapses the 2-D polynomials into 1-D ones in x
// (O(order^2) per row), evaluated per pixel by Horner / Clenshaw (O(order) per pixel), and
// 10^(-0.4 P) by a branch-free exp2 that the compiler vectorises. Rows run on OpenMP threads.
//
// The parameters are trusted (mosaicfit.pipeline.apply checks them): orders 0..30 with
// (order+1)^2 coefficients, nq 0..3, U_MAX and V_MAX non-zero, a box of at least 1 x 1, all
// values finite.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mosaicfit {

struct FluxPoly {
    int order = 0;              // C has (order+1)^2 values, C[i*(order+1)+j] for B_i(u) B_j(v)
    std::vector<double> c{0.0};
    double x0 = 0.0, y0 = 0.0, u_max = 1.0, v_max = 1.0;
    bool chebyshev = false;
    int nq = 0;                 // quarter turns of the CCD
    int width = 2048, height = 4176;  // CCD box of the rotation
};

struct SipArea {
    int order = 0;              // A, B have (order+1)^2 values, A[p*(order+1)+q] for u^p v^q
    std::vector<double> a{0.0}, b{0.0};
    double crpix1 = 0.0, crpix2 = 0.0;
};

struct ApplyOptions {
    bool interpolate = false;   // meas_mosaic's getFCorImg: P linear on segments along x'
    int interp_length = 100;
    int threads = 0;            // 0: OpenMP's default
};

// f over an nx x ny image (row-major, out[y*nx + x]).
void correction_image(const FluxPoly& p, const SipArea& s, int nx, int ny, double* out,
                      const ApplyOptions& opt);

// image *= f, variance *= f^2 in place (either may be null; both row-major nx x ny).
void apply_correction(const FluxPoly& p, const SipArea& s, int nx, int ny, float* image,
                      float* variance, const ApplyOptions& opt);

// f at n arbitrary 0-based positions (exact evaluation).
void correction_points(const FluxPoly& p, const SipArea& s, const double* x, const double* y,
                       std::int64_t n, double* out, int threads);

}  // namespace mosaicfit
