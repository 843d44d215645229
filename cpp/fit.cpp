#include "fit.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace mosaicfit {

using Eigen::Index;
using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

int n_terms(int order) { return (order + 1) * (order + 2) / 2; }

namespace {

// 1-D basis values f_0..f_order at x and their derivatives.
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

inline double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

void basis_with_derivatives(Basis b, int order, double u, double v, double* val, double* du,
                            double* dv) {
    double fu[32], fv[32], dfu[32], dfv[32];
    if (order > 30) throw std::invalid_argument("polynomial order above 30");
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

FitResult solve_mosaic(const FitProblem& p) {
    const double t0 = now();
    const int D = p.D, K = p.K, T = n_terms(p.order);
    const Index NV = static_cast<Index>(p.nvisit) * D * T;
    const Index N = NV + static_cast<Index>(p.nccd) * K;
    auto vidx = [&](int v, int d) -> Index { return static_cast<Index>(v) * D * T + d * T; };
    auto cidx = [&](int c) -> Index { return NV + static_cast<Index>(c) * K; };

    // -- per-star sums: W_s = sum w_j + pw_s, Q_s = pw_s prior_s - sum w_j y_j ----------------
    std::vector<double> W(p.nstar, 0.0), Q(static_cast<std::size_t>(p.nstar) * D, 0.0);
    for (int s = 0; s < p.nstar; ++s) {
        const double pw = p.prior_w ? p.prior_w[s] : 0.0;
        W[s] = pw;
        for (int d = 0; d < D; ++d) Q[s * D + d] = pw > 0 ? pw * p.prior[s * D + d] : 0.0;
    }
    for (std::int64_t j = 0; j < p.n; ++j) {
        if (!p.active[j]) continue;
        const int s = p.star[j];
        W[s] += p.w[j];
        for (int d = 0; d < D; ++d) Q[s * D + d] -= p.w[j] * p.y[j * D + d];
    }

    // -- per-visit detection lists sorted by star, with their basis rows ----------------------
    std::vector<std::vector<std::int64_t>> dets(p.nvisit);
    for (std::int64_t j = 0; j < p.n; ++j)
        if (p.active[j]) dets[p.visit[j]].push_back(j);
    std::vector<RowMat> B(p.nvisit);
#pragma omp parallel for schedule(dynamic)
    for (int v = 0; v < p.nvisit; ++v) {
        auto& L = dets[v];
        std::stable_sort(L.begin(), L.end(), [&](std::int64_t a, std::int64_t b) { return p.star[a] < p.star[b]; });
        B[v].resize(static_cast<Index>(L.size()), T);
        for (std::size_t k = 0; k < L.size(); ++k)
            basis_values(p.basis, p.order, p.u[L[k]], p.v[L[k]], B[v].row(static_cast<Index>(k)).data());
    }

    Mat H = Mat::Zero(N, N);
    Eigen::VectorXd g = Eigen::VectorXd::Zero(N);

    // -- visit x visit blocks: direct term minus the eliminated stars, one GEMM per pair ------
    std::vector<std::pair<int, int>> pairs;
    for (int a = 0; a < p.nvisit; ++a)
        for (int b = a; b < p.nvisit; ++b) pairs.emplace_back(a, b);
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t k = 0; k < static_cast<std::int64_t>(pairs.size()); ++k) {
        const int a = pairs[k].first, b = pairs[k].second;
        const auto& La = dets[a];
        const auto& Lb = dets[b];
        std::vector<Index> ia, ib;
        std::size_t i = 0, m = 0;
        while (i < La.size() && m < Lb.size()) {  // merge: stars seen in both visits
            const int sa = p.star[La[i]], sb = p.star[Lb[m]];
            if (sa < sb) ++i;
            else if (sb < sa) ++m;
            else { ia.push_back(static_cast<Index>(i)); ib.push_back(static_cast<Index>(m)); ++i; ++m; }
        }
        if (ia.empty() && a != b) continue;
        RowMat X(static_cast<Index>(ia.size()), T), Y(static_cast<Index>(ib.size()), T);
        for (std::size_t q = 0; q < ia.size(); ++q) {
            const std::int64_t ja = La[ia[q]], jb = Lb[ib[q]];
            const double c = p.w[ja] * p.w[jb] / W[p.star[ja]];
            X.row(static_cast<Index>(q)) = c * B[a].row(ia[q]);
            Y.row(static_cast<Index>(q)) = B[b].row(ib[q]);
        }
        Mat blk = -(X.transpose() * Y);
        if (a == b) {
            Eigen::VectorXd wv(static_cast<Index>(La.size()));
            for (std::size_t q = 0; q < La.size(); ++q) wv[static_cast<Index>(q)] = p.w[La[q]];
            blk.noalias() += B[a].transpose() * wv.asDiagonal() * B[a];
        }
        for (int d = 0; d < D; ++d) {
            H.block(vidx(a, d), vidx(b, d), T, T) = blk;
            if (a != b) H.block(vidx(b, d), vidx(a, d), T, T) = blk.transpose();
        }
    }

    // -- CCD terms ------------------------------------------------------------------------------
    // per star: S_sc = sum over its detections on CCD c of w_j G_j  (D x K)
    std::vector<std::vector<std::pair<int, std::vector<double>>>> S;
    if (K > 0) {
        S.resize(p.nstar);
        for (std::int64_t j = 0; j < p.n; ++j) {
            if (!p.active[j]) continue;
            auto& lst = S[p.star[j]];
            const int c = p.ccd[j];
            auto it = std::find_if(lst.begin(), lst.end(), [c](const auto& e) { return e.first == c; });
            if (it == lst.end()) { lst.emplace_back(c, std::vector<double>(D * K, 0.0)); it = lst.end() - 1; }
            for (int q = 0; q < D * K; ++q) it->second[q] += p.w[j] * p.G[j * D * K + q];
        }
        // visit x CCD rows, one visit per task
#pragma omp parallel for schedule(dynamic)
        for (int v = 0; v < p.nvisit; ++v) {
            const auto& L = dets[v];
            for (std::size_t k = 0; k < L.size(); ++k) {
                const std::int64_t j = L[k];
                const int s = p.star[j];
                const auto brow = B[v].row(static_cast<Index>(k));
                const double* Gj = p.G + j * D * K;
                for (int d = 0; d < D; ++d) {
                    for (int q = 0; q < K; ++q)
                        H.block(vidx(v, d), cidx(p.ccd[j]) + q, T, 1) += (p.w[j] * Gj[d * K + q]) * brow.transpose();
                    for (const auto& e : S[s])
                        for (int q = 0; q < K; ++q)
                            H.block(vidx(v, d), cidx(e.first) + q, T, 1) -= (p.w[j] / W[s] * e.second[d * K + q]) * brow.transpose();
                }
            }
        }
        H.block(NV, 0, N - NV, NV) = H.block(0, NV, NV, N - NV).transpose();
        // CCD x CCD
        for (std::int64_t j = 0; j < p.n; ++j) {
            if (!p.active[j]) continue;
            Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> Gj(p.G + j * D * K, D, K);
            H.block(cidx(p.ccd[j]), cidx(p.ccd[j]), K, K).noalias() += p.w[j] * Gj.transpose() * Gj;
        }
        for (int s = 0; s < p.nstar; ++s) {
            if (W[s] <= 0) continue;
            for (const auto& e1 : S[s]) {
                Eigen::Map<const RowMat> S1(e1.second.data(), D, K);
                for (const auto& e2 : S[s]) {
                    Eigen::Map<const RowMat> S2(e2.second.data(), D, K);
                    H.block(cidx(e1.first), cidx(e2.first), K, K).noalias() -= S1.transpose() * S2 / W[s];
                }
            }
        }
    }

    // -- right-hand side: J_j' w_j (y_j + Q_s / W_s) -------------------------------------------
#pragma omp parallel for schedule(dynamic)
    for (int v = 0; v < p.nvisit; ++v) {
        const auto& L = dets[v];
        for (std::size_t k = 0; k < L.size(); ++k) {
            const std::int64_t j = L[k];
            const int s = p.star[j];
            for (int d = 0; d < D; ++d) {
                const double e = p.w[j] * (p.y[j * D + d] + Q[s * D + d] / W[s]);
                g.segment(vidx(v, d), T) += e * B[v].row(static_cast<Index>(k)).transpose();
            }
        }
    }
    if (K > 0)
        for (std::int64_t j = 0; j < p.n; ++j) {
            if (!p.active[j]) continue;
            const int s = p.star[j];
            for (int d = 0; d < D; ++d) {
                const double e = p.w[j] * (p.y[j * D + d] + Q[s * D + d] / W[s]);
                for (int q = 0; q < K; ++q) g[cidx(p.ccd[j]) + q] += e * p.G[j * D * K + d * K + q];
            }
        }

    // -- priors, gauge and fixed parameters ----------------------------------------------------
    if (p.coef_prior_w)
        for (Index i = 0; i < NV; ++i) {
            const double pw = p.coef_prior_w[i];
            if (pw > 0) { H(i, i) += pw; g[i] += pw * p.coef_prior[i]; }
        }
    std::int64_t ngauge = 0;
    if (K > 0 && p.ccd_sum_zero) {
        for (int q = 0; q < K; ++q) {
            double lam = 0.0;
            int nfree = 0;
            for (int c = 0; c < p.nccd; ++c)
                if (!(p.ccd_fixed && p.ccd_fixed[c]) && H(cidx(c) + q, cidx(c) + q) > 0) { lam += H(cidx(c) + q, cidx(c) + q); ++nfree; }
            if (nfree < 2) continue;
            lam /= nfree;   // any positive weight selects the sum-zero member of an exact null space
            for (int c1 = 0; c1 < p.nccd; ++c1) {
                if ((p.ccd_fixed && p.ccd_fixed[c1]) || H(cidx(c1) + q, cidx(c1) + q) <= 0) continue;
                for (int c2 = 0; c2 < p.nccd; ++c2) {
                    if ((p.ccd_fixed && p.ccd_fixed[c2]) || H(cidx(c2) + q, cidx(c2) + q) <= 0) continue;
                    H(cidx(c1) + q, cidx(c2) + q) += lam;
                }
            }
            ++ngauge;
        }
    }
    // parameters without any information (a CCD or visit with no active detection) or fixed
    std::vector<char> fixed(N, 0);
    for (Index i = 0; i < N; ++i) if (H(i, i) <= 0) fixed[i] = 1;
    if (K > 0 && p.ccd_fixed)
        for (int c = 0; c < p.nccd; ++c) if (p.ccd_fixed[c]) for (int q = 0; q < K; ++q) fixed[cidx(c) + q] = 1;
    std::int64_t nfixed = 0;
    for (Index i = 0; i < N; ++i)
        if (fixed[i]) { H.row(i).setZero(); H.col(i).setZero(); H(i, i) = 1.0; g[i] = 0.0; ++nfixed; }

    FitResult r;
    const double t1 = now();
    r.t_assemble = t1 - t0;
    // -- solve ---------------------------------------------------------------------------------
    Eigen::VectorXd x;
    {
        // scale to unit diagonal: the visit blocks and CCD blocks differ by many orders
        Eigen::VectorXd sc = H.diagonal().cwiseSqrt().cwiseInverse();
        H = sc.asDiagonal() * H * sc.asDiagonal();
        Eigen::VectorXd gs = sc.asDiagonal() * g;
        Eigen::LLT<Mat> llt(H);
        if (llt.info() == Eigen::Success) {
            x = sc.asDiagonal() * llt.solve(gs);
            r.status = "ok";
            r.min_pivot = llt.rcond();
        } else {
            // rounding made a nearly singular (but positive semi-definite) system fail the
            // Cholesky: the pivoted LDLT still solves it if no pivot vanishes
            Eigen::LDLT<Mat> ldlt(H);
            const auto d = ldlt.vectorD().cwiseAbs();
            const double dmax = d.size() ? d.maxCoeff() : 0.0;
            const double dmin = d.size() ? d.minCoeff() : 0.0;
            r.min_pivot = dmax > 0 ? dmin / dmax : 0.0;
            if (ldlt.info() == Eigen::Success && r.min_pivot > 1e-13 && ldlt.isPositive()) {
                x = sc.asDiagonal() * ldlt.solve(gs);
                r.status = "ok";
            } else {
                r.status = "singular";
                x = Eigen::VectorXd::Zero(N);
            }
        }
    }
    r.t_solve = now() - t1;

    // -- back-substitution: stars, residuals, chi2 ----------------------------------------------
    r.coef.assign(x.data(), x.data() + NV);
    r.dccd.assign(x.data() + NV, x.data() + N);
    r.xstar.assign(static_cast<std::size_t>(p.nstar) * D, 0.0);
    r.resid.assign(static_cast<std::size_t>(p.n) * D, 0.0);
    // model prediction m_j = P_v(u_j) + G_j dc_c for every detection, active or not
    std::vector<double> pred(static_cast<std::size_t>(p.n) * D, 0.0);
#pragma omp parallel
    {
        std::vector<double> bv(T);
#pragma omp for schedule(static)
        for (std::int64_t j = 0; j < p.n; ++j) {
            basis_values(p.basis, p.order, p.u[j], p.v[j], bv.data());
            const int vv = p.visit[j];
            for (int d = 0; d < D; ++d) {
                double s = 0.0;
                const double* c = x.data() + vidx(vv, d);
                for (int t = 0; t < T; ++t) s += c[t] * bv[t];
                if (K > 0)
                    for (int q = 0; q < K; ++q) s += p.G[j * D * K + d * K + q] * x[cidx(p.ccd[j]) + q];
                pred[j * D + d] = s;
            }
        }
    }
    // x_s = (sum_j w_j (pred_j - y_j) + pw prior) / W_s
    std::vector<double> num(static_cast<std::size_t>(p.nstar) * D, 0.0);
    for (int s = 0; s < p.nstar; ++s) {
        const double pw = p.prior_w ? p.prior_w[s] : 0.0;
        for (int d = 0; d < D; ++d) num[s * D + d] = pw > 0 ? pw * p.prior[s * D + d] : 0.0;
    }
    for (std::int64_t j = 0; j < p.n; ++j) {
        if (!p.active[j]) continue;
        for (int d = 0; d < D; ++d) num[p.star[j] * D + d] += p.w[j] * (pred[j * D + d] - p.y[j * D + d]);
    }
    std::int64_t nstars_used = 0, npriors = 0;
    for (int s = 0; s < p.nstar; ++s) {
        if (W[s] > 0) {
            ++nstars_used;
            for (int d = 0; d < D; ++d) r.xstar[s * D + d] = num[s * D + d] / W[s];
        } else {
            for (int d = 0; d < D; ++d) r.xstar[s * D + d] = std::numeric_limits<double>::quiet_NaN();
        }
        const double pw = p.prior_w ? p.prior_w[s] : 0.0;
        if (pw > 0 && W[s] > 0) {
            ++npriors;
            for (int d = 0; d < D; ++d) {
                const double e = r.xstar[s * D + d] - p.prior[s * D + d];
                r.chi2 += pw * e * e;
            }
        }
    }
    std::int64_t nact = 0;
    for (std::int64_t j = 0; j < p.n; ++j) {
        const int s = p.star[j];
        for (int d = 0; d < D; ++d) {
            const double xs = W[s] > 0 ? r.xstar[s * D + d] : 0.0;
            r.resid[j * D + d] = pred[j * D + d] - xs - p.y[j * D + d];
        }
        if (!p.active[j]) continue;
        ++nact;
        for (int d = 0; d < D; ++d) r.chi2_det += p.w[j] * r.resid[j * D + d] * r.resid[j * D + d];
    }
    r.chi2 += r.chi2_det;
    r.nobs = (nact + npriors) * D;
    r.nobs_det = nact * D;
    r.nparam = (N - nfixed - ngauge) + nstars_used * D;
    return r;
}

}  // namespace mosaicfit
