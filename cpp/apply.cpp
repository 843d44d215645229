// Per-pixel flux correction of a CCD (see apply.hpp).
#include "apply.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "basis.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mosaicfit {
namespace {

#if defined(__GNUC__)
#define MOSAICFIT_INLINE inline __attribute__((always_inline))
#else
#define MOSAICFIT_INLINE inline
#endif

constexpr int kBlock = 16;  // pixels evaluated together (kept in registers, vectorised)
constexpr double kMagToLog2 = -1.328771237954945;  // 10^(-0.4 P) = 2^(kMagToLog2 * P)

// Taylor coefficients of 2^r = exp(r ln 2), ln2^k / k!, highest first (k = 13 .. 0).
constexpr double kExp2[14] = {
    1.3691488853904128e-12, 2.5678435993488206e-11, 4.4455382718708116e-10,
    7.054911620801123e-09,  1.01780860092397e-07,   1.321548679014431e-06,
    1.5252733804059841e-05, 0.0001540353039338161,  0.0013333558146428443,
    0.009618129107628477,   0.05550410866482158,    0.24022650695910072,
    0.6931471805599453,     1.0};

// Blocks of kBlock pixels are computed as kVec vectors of 4 doubles (GCC/Clang vector
// extensions): two SSE2 instructions each in the baseline build, one AVX2/FMA instruction in
// the x86-64-v3 clone of eval_row.
#pragma GCC diagnostic ignored "-Wpsabi"   // v4d never crosses a non-inlined call
typedef double v4d __attribute__((vector_size(32)));
typedef long long v4l __attribute__((vector_size(32)));
constexpr int kVec = kBlock / 4;

MOSAICFIT_INLINE v4d splat(double a) { return v4d{a, a, a, a}; }

MOSAICFIT_INLINE v4d lanes(double first, double step) {
    return v4d{first, first + step, first + 2.0 * step, first + 3.0 * step};
}

// 2^e, branch-free: e = n + r with n the nearest integer (the 1.5 * 2^52 trick, exact under
// round-to-nearest), 2^r by the Taylor series of degree 13 on |r| <= 0.5 (truncation < 5e-18,
// below double rounding), 2^n put into the exponent bits. Valid for |e| <= 1020 (|P| < 767
// mag): the caller checks a bound of |P| over the image first (RowEval::fast_exp_).
MOSAICFIT_INLINE v4d exp2_v(const v4d& e) {
    const v4d magic = splat(6755399441055744.0);  // 1.5 * 2^52
    const v4d t = e + magic;
    const v4d r = e - (t - magic);
    v4d p = splat(kExp2[0]);
    for (int k = 1; k < 14; ++k) p = p * r + kExp2[k];
    v4l bits = (v4l)t;   // the low mantissa bits of t hold n (a bit cast)
    bits = (bits << 52) + (1023LL << 52);
    return p * (v4d)bits;  // times 2^n
}

MOSAICFIT_INLINE v4d abs_v(const v4d& a) {
    return (v4d)((v4l)a & 0x7fffffffffffffffLL);
}

// sum_k q_k B_k(t) for one t.
inline double series(bool cheb, int n, const double* q, double t) {
    if (!cheb) {
        double r = q[n];
        for (int k = n - 1; k >= 0; --k) r = r * t + q[k];
        return r;
    }
    double b1 = 0.0, b2 = 0.0;           // Clenshaw
    for (int k = n; k >= 1; --k) {
        const double b0 = q[k] + 2.0 * t * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    return q[0] + t * b1 - b2;
}

// The evaluator of f along one row; one per thread.
class RowEval {
public:
    RowEval(const FluxPoly& p, const SipArea& s, const ApplyOptions& opt, int nx = 0, int ny = 0)
        : p_(p), s_(s), opt_(opt), no_(p.order), ns_(s.order) {
        q_.assign(no_ + 1, 0.0);
        q1_.assign(no_ + 1, 0.0);
        bv_.assign(no_ + 1, 0.0);
        const int nj = ns_ >= 1 ? 2 * ns_ : 1;
        jc_.assign(nj, 0.0);
        vp_.assign(ns_ + 1, 0.0);
        // which coordinate of P varies along a row, t = t0 + dt * x (module doc of apply.hpp)
        const double W1 = p.width - 1.0;
        switch (p.nq) {
            case 0: vary_u_ = true;  t0_ = p.x0 / p.u_max;        dt_ = 1.0 / p.u_max;  break;
            case 1: vary_u_ = false; t0_ = p.y0 / p.v_max;        dt_ = 1.0 / p.v_max;  break;
            case 2: vary_u_ = true;  t0_ = (W1 + p.x0) / p.u_max; dt_ = -1.0 / p.u_max; break;
            default: vary_u_ = false; t0_ = (W1 + p.y0) / p.v_max; dt_ = -1.0 / p.v_max; break;
        }
        u0_ = 1.0 - s.crpix1;
        rot_width_ = (p.nq % 2 == 0) ? p.width : p.height;   // width of the rotated frame
        const int L = std::max(1, opt.interp_length);
        nseg_ = (rot_width_ + L - 1) / L;
        if (opt.interpolate && vary_u_) {
            node0_.assign(nseg_, 0.0);
            node1_.assign(nseg_, 0.0);
        }
        fast_exp_ = mag_bound(nx, ny) < 700.0;
    }

    // Prepare the row at 0-based y (any real y for point evaluation).
    void setup(double y) {
        // P: the constant coordinate of this row, then the 1-D coefficients in t
        const double H1 = p_.height - 1.0;
        double xr = 0.0;   // x' of the row when the varying coordinate is v
        double c = 0.0;    // the constant coordinate (v when u varies, u when v varies)
        switch (p_.nq) {
            case 0: c = (y + p_.y0) / p_.v_max; break;
            case 1: xr = H1 - y; c = (xr + p_.x0) / p_.u_max; break;
            case 2: c = (H1 - y + p_.y0) / p_.v_max; break;
            default: xr = y; c = (xr + p_.x0) / p_.u_max; break;
        }
        collapse(c, q_.data());
        if (opt_.interpolate) {
            const int L = std::max(1, opt_.interp_length);
            if (vary_u_) {
                // P at the segment ends x' = kL and min(kL + L - 1, W' - 1) of this row
                for (int k = 0; k < nseg_; ++k) {
                    const double xa = double(k) * L;
                    const double xb = std::min(xa + L - 1, double(rot_width_ - 1));
                    node0_[k] = series(p_.chebyshev, no_, q_.data(), (xa + p_.x0) / p_.u_max);
                    node1_[k] = series(p_.chebyshev, no_, q_.data(), (xb + p_.x0) / p_.u_max);
                }
            } else {
                // x' is fixed on this row: the linear blend of the two segment ends is again
                // a polynomial in v, P0 + (P1 - P0) / interval * i
                const double xi = std::floor(xr + 0.5);
                int k = int(std::floor(xi / L));
                k = std::min(std::max(k, 0), nseg_ - 1);
                const double xa = double(k) * L;
                const double xb = std::min(xa + L - 1, double(rot_width_ - 1));
                const double interval = xb - xa + 1.0;
                const double i = xi - xa;
                collapse((xa + p_.x0) / p_.u_max, q_.data());
                collapse((xb + p_.x0) / p_.u_max, q1_.data());
                for (int m = 0; m <= no_; ++m) q_[m] = q_[m] + (q1_[m] - q_[m]) / interval * i;
            }
        }
        // J: the polynomial in u of det d(u + A, v + B)/d(u, v) at this row's v
        if (ns_ >= 1) jacobian_row(y + 1.0 - s_.crpix2);
        else jc_[0] = 1.0;
    }

    // f at x = x_begin .. x_begin + n - 1 (n <= kBlock) on the prepared row.
    MOSAICFIT_INLINE void block(int x_begin, int n, double* out) const {
        v4d P[kVec], J[kVec];
        if (opt_.interpolate && vary_u_) {
            double tmp[kBlock] = {};
            const int L = std::max(1, opt_.interp_length);
            for (int j = 0; j < n; ++j) {
                const int x = x_begin + j;
                const int xr = (p_.nq == 0) ? x : p_.width - 1 - x;
                int k = xr >= 0 ? xr / L : 0;
                k = std::min(k, nseg_ - 1);
                const int xa = k * L;
                const int xb = std::min(xa + L - 1, rot_width_ - 1);
                const double interval = double(xb - xa + 1);
                tmp[j] = node0_[k] + (node1_[k] - node0_[k]) / interval * double(xr - xa);
            }
            std::memcpy(P, tmp, sizeof P);
        } else {
            v4d t[kVec];
            for (int v = 0; v < kVec; ++v) t[v] = lanes(t0_ + dt_ * double(x_begin + 4 * v), dt_);
            const double* q = q_.data();
            if (!p_.chebyshev) {                      // Horner
                for (int v = 0; v < kVec; ++v) P[v] = splat(q[no_]);
                for (int k = no_ - 1; k >= 0; --k)
                    for (int v = 0; v < kVec; ++v) P[v] = P[v] * t[v] + q[k];
            } else {                                  // Clenshaw
                v4d b1[kVec], b2[kVec];
                for (int v = 0; v < kVec; ++v) b1[v] = b2[v] = splat(0.0);
                for (int k = no_; k >= 1; --k)
                    for (int v = 0; v < kVec; ++v) {
                        const v4d b0 = 2.0 * t[v] * b1[v] - b2[v] + q[k];
                        b2[v] = b1[v];
                        b1[v] = b0;
                    }
                for (int v = 0; v < kVec; ++v) P[v] = t[v] * b1[v] - b2[v] + q[0];
            }
        }
        {
            v4d u[kVec];
            for (int v = 0; v < kVec; ++v) u[v] = lanes(double(x_begin + 4 * v) + u0_, 1.0);
            const double* c = jc_.data();
            const int nj = int(jc_.size());
            for (int v = 0; v < kVec; ++v) J[v] = splat(c[nj - 1]);
            for (int k = nj - 2; k >= 0; --k)
                for (int v = 0; v < kVec; ++v) J[v] = J[v] * u[v] + c[k];
        }
        double f[kBlock];
        if (fast_exp_) {
            v4d F[kVec];
            for (int v = 0; v < kVec; ++v) F[v] = exp2_v(P[v] * kMagToLog2) * abs_v(J[v]);
            std::memcpy(f, F, sizeof f);
        } else {
            double pp[kBlock], jj[kBlock];
            std::memcpy(pp, P, sizeof pp);
            std::memcpy(jj, J, sizeof jj);
            for (int j = 0; j < kBlock; ++j) f[j] = std::exp2(kMagToLog2 * pp[j]) * std::fabs(jj[j]);
        }
        for (int j = 0; j < n; ++j) out[j] = f[j];
    }

    // f at one real x on the prepared row (exact evaluation).
    double at(double x) const {
        const double P = series(p_.chebyshev, no_, q_.data(), t0_ + dt_ * x);
        const double u = x + u0_;
        const int nj = int(jc_.size());
        double J = jc_[nj - 1];
        for (int k = nj - 2; k >= 0; --k) J = J * u + jc_[k];
        return std::pow(10.0, -0.4 * P) * std::fabs(J);
    }

private:
    // A bound of |P| over the nx x ny image (corners of the rotated, scaled box), from
    // |B_k(z)| <= max(1, |z|)^k (monomials) or max(1, 2|z|)^k (Chebyshev); +inf if not finite.
    double mag_bound(int nx, int ny) const {
        const double xs[2] = {0.0, double(std::max(nx, 1) - 1)};
        const double ys[2] = {0.0, double(std::max(ny, 1) - 1)};
        double zu = 0.0, zv = 0.0;
        const double W1 = p_.width - 1.0, H1 = p_.height - 1.0;
        for (double x : xs) {
            for (double y : ys) {
                double xr = x, yr = y;
                if (p_.nq == 1) { xr = H1 - y; yr = x; }
                else if (p_.nq == 2) { xr = W1 - x; yr = H1 - y; }
                else if (p_.nq == 3) { xr = y; yr = W1 - x; }
                zu = std::max(zu, std::fabs((xr + p_.x0) / p_.u_max));
                zv = std::max(zv, std::fabs((yr + p_.y0) / p_.v_max));
            }
        }
        const double k = p_.chebyshev ? 2.0 : 1.0;
        zu = std::max(1.0, k * zu);
        zv = std::max(1.0, k * zv);
        const int n1 = no_ + 1;
        double bound = 0.0;
        for (int i = 0; i <= no_; ++i)
            for (int j = 0; j <= no_ - i; ++j)
                bound += std::fabs(p_.c[i * n1 + j]) * std::pow(zu, i) * std::pow(zv, j);
        return std::isfinite(bound) ? bound : HUGE_VAL;
    }

    // q_m = sum_l C B_l(c) over the constant coordinate c, for each power m of the varying one
    void collapse(double c, double* q) {
        basis_1d(p_.chebyshev ? Basis::Chebyshev : Basis::Monomial, no_, c, bv_.data(), nullptr);
        const int n1 = no_ + 1;
        for (int m = 0; m <= no_; ++m) {
            double acc = 0.0;
            for (int l = 0; l <= no_ - m; ++l)
                acc += (vary_u_ ? p_.c[m * n1 + l] : p_.c[l * n1 + m]) * bv_[l];
            q[m] = acc;
        }
    }

    void jacobian_row(double v) {
        const int n = ns_, n1 = n + 1;
        vp_[0] = 1.0;
        for (int k = 1; k <= n; ++k) vp_[k] = vp_[k - 1] * v;
        // alpha_p = sum_q A_pq v^q, beta_p = sum_q q A_pq v^(q-1); gamma, delta for B
        std::vector<double>& fu = fu_; std::vector<double>& fv = fv_;
        std::vector<double>& gu = gu_; std::vector<double>& gv = gv_;
        fu.assign(n, 0.0); gu.assign(n, 0.0); fv.assign(n1, 0.0); gv.assign(n1, 0.0);
        for (int p = 0; p <= n; ++p) {
            double al = 0.0, be = 0.0, ga = 0.0, de = 0.0;
            for (int q = 0; q <= n - p; ++q) {
                const double A = s_.a[p * n1 + q], B = s_.b[p * n1 + q];
                al += A * vp_[q];
                ga += B * vp_[q];
                if (q >= 1) {
                    be += q * A * vp_[q - 1];
                    de += q * B * vp_[q - 1];
                }
            }
            if (p >= 1) {
                fu[p - 1] = p * al;   // d(u + A)/du
                gu[p - 1] = p * ga;   // d(v + B)/du
            }
            fv[p] = be;               // d(u + A)/dv
            gv[p] = de;               // d(v + B)/dv
        }
        fu[0] += 1.0;
        gv[0] += 1.0;
        std::fill(jc_.begin(), jc_.end(), 0.0);
        for (int i = 0; i < n; ++i)
            for (int j = 0; j <= n; ++j) jc_[i + j] += fu[i] * gv[j] - fv[j] * gu[i];
    }

    const FluxPoly& p_;
    const SipArea& s_;
    ApplyOptions opt_;
    int no_, ns_;
    bool vary_u_ = true;
    double t0_ = 0.0, dt_ = 1.0, u0_ = 0.0;
    int rot_width_ = 0, nseg_ = 1;
    bool fast_exp_ = true;
    std::vector<double> q_, q1_, bv_, jc_, vp_, fu_, fv_, gu_, gv_, node0_, node1_;
};

// One row of f, compiled twice: for x86-64-v3 (AVX2 + FMA, 4 doubles per instruction) and for
// the baseline; the loader picks the clone the CPU supports (GCC/Clang function multiversioning).
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__AVX2__) && defined(__linux__)
#define MOSAICFIT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MOSAICFIT_CLONES
#endif

MOSAICFIT_CLONES
void eval_row(const RowEval& ev, int nx, double* out) {
    for (int x = 0; x < nx; x += kBlock) ev.block(x, std::min(kBlock, nx - x), out + x);
}

MOSAICFIT_CLONES
void scale_row(const double* f, int nx, float* image, float* variance) {
    if (image)
        for (int x = 0; x < nx; ++x) image[x] = static_cast<float>(double(image[x]) * f[x]);
    if (variance)
        for (int x = 0; x < nx; ++x) variance[x] = static_cast<float>(double(variance[x]) * (f[x] * f[x]));
}

template <typename RowFn>
void for_rows(const FluxPoly& p, const SipArea& s, int nx, int ny, const ApplyOptions& opt,
              RowFn fn) {
    int threads = opt.threads;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#else
    threads = 1;
#endif
    threads = std::max(1, std::min(threads, ny));
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        RowEval ev(p, s, opt, nx, ny);
        std::vector<double> row(static_cast<std::size_t>(nx) + kBlock);
#pragma omp for schedule(static)
        for (int y = 0; y < ny; ++y) {
            ev.setup(double(y));
            eval_row(ev, nx, row.data());
            fn(y, row.data());
        }
    }
}

}  // namespace

void correction_image(const FluxPoly& p, const SipArea& s, int nx, int ny, double* out,
                      const ApplyOptions& opt) {
    if (nx <= 0 || ny <= 0) return;
    for_rows(p, s, nx, ny, opt, [&](int y, const double* f) {
        std::memcpy(out + static_cast<std::size_t>(y) * nx, f, sizeof(double) * nx);
    });
}

void apply_correction(const FluxPoly& p, const SipArea& s, int nx, int ny, float* image,
                      float* variance, const ApplyOptions& opt) {
    if (nx <= 0 || ny <= 0) return;
    for_rows(p, s, nx, ny, opt, [&](int y, const double* f) {
        const std::size_t off = static_cast<std::size_t>(y) * nx;
        scale_row(f, nx, image ? image + off : nullptr, variance ? variance + off : nullptr);
    });
}

void correction_points(const FluxPoly& p, const SipArea& s, const double* x, const double* y,
                       std::int64_t n, double* out, int threads) {
    ApplyOptions opt;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#endif
    const bool par = threads > 1 && n > 20000;
#pragma omp parallel num_threads(threads) if (par)
    {
        RowEval ev(p, s, opt);
#pragma omp for schedule(static)
        for (std::int64_t i = 0; i < n; ++i) {
            if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
                out[i] = std::nan("");
                continue;
            }
            ev.setup(y[i]);
            out[i] = ev.at(x[i]);
        }
    }
}

}  // namespace mosaicfit
