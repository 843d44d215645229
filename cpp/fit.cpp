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

namespace {

inline double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

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

    // The reduced system, ordered (visit parameters of dim 0, of dim 1, ..., CCD parameters):
    //     [ A  0  C0 ] [x0]   [g0]
    //     [ 0  A  C1 ] [x1] = [g1]
    //     [ C0' C1' E] [c ]   [gc]
    // The visit block A (nvisit*T square) is the same in every dimension (isotropic weights),
    // so it is stored and factored once; the CCD parameters are then eliminated in turn
    // (a second, small Schur complement). D = 2 makes this ~8x cheaper than factoring the
    // whole system and needs a quarter of its memory.
    const Index NV1 = static_cast<Index>(p.nvisit) * T;
    const Index NC = static_cast<Index>(p.nccd) * K;
    auto aidx = [&](int v) -> Index { return static_cast<Index>(v) * T; };
    auto eidx = [&](int c) -> Index { return static_cast<Index>(c) * K; };
    Mat A = Mat::Zero(NV1, NV1);
    std::vector<Mat> C(D, Mat::Zero(NV1, NC));
    Mat E = Mat::Zero(NC, NC);
    std::vector<Eigen::VectorXd> gv(D, Eigen::VectorXd::Zero(NV1));
    Eigen::VectorXd gc = Eigen::VectorXd::Zero(NC);

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
        A.block(aidx(a), aidx(b), T, T) = blk;
        if (a != b) A.block(aidx(b), aidx(a), T, T) = blk.transpose();
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
        // visit x CCD rows, one visit per task (each writes only its own rows)
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
                        C[d].block(aidx(v), eidx(p.ccd[j]) + q, T, 1) += (p.w[j] * Gj[d * K + q]) * brow.transpose();
                    for (const auto& e : S[s])
                        for (int q = 0; q < K; ++q)
                            C[d].block(aidx(v), eidx(e.first) + q, T, 1) -= (p.w[j] / W[s] * e.second[d * K + q]) * brow.transpose();
                }
            }
        }
        // CCD x CCD
        for (std::int64_t j = 0; j < p.n; ++j) {
            if (!p.active[j]) continue;
            Eigen::Map<const RowMat> Gj(p.G + j * D * K, D, K);
            E.block(eidx(p.ccd[j]), eidx(p.ccd[j]), K, K).noalias() += p.w[j] * Gj.transpose() * Gj;
        }
        for (int s = 0; s < p.nstar; ++s) {
            if (W[s] <= 0) continue;
            for (const auto& e1 : S[s]) {
                Eigen::Map<const RowMat> S1(e1.second.data(), D, K);
                for (const auto& e2 : S[s]) {
                    Eigen::Map<const RowMat> S2(e2.second.data(), D, K);
                    E.block(eidx(e1.first), eidx(e2.first), K, K).noalias() -= S1.transpose() * S2 / W[s];
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
                gv[d].segment(aidx(v), T) += e * B[v].row(static_cast<Index>(k)).transpose();
            }
        }
    }
    if (K > 0)
        for (std::int64_t j = 0; j < p.n; ++j) {
            if (!p.active[j]) continue;
            const int s = p.star[j];
            for (int d = 0; d < D; ++d) {
                const double e = p.w[j] * (p.y[j * D + d] + Q[s * D + d] / W[s]);
                for (int q = 0; q < K; ++q) gc[eidx(p.ccd[j]) + q] += e * p.G[j * D * K + d * K + q];
            }
        }

    // -- priors, gauge and fixed parameters ----------------------------------------------------
    if (p.coef_prior_w)
        for (int v = 0; v < p.nvisit; ++v)
            for (int t = 0; t < T; ++t) {
                const double pw = p.coef_prior_w[vidx(v, 0) + t];
                for (int d = 1; d < D; ++d)
                    if (p.coef_prior_w[vidx(v, d) + t] != pw)
                        throw std::invalid_argument("coefficient prior weights must be the same in every dimension");
                if (pw <= 0) continue;
                A(aidx(v) + t, aidx(v) + t) += pw;
                for (int d = 0; d < D; ++d) gv[d][aidx(v) + t] += pw * p.coef_prior[vidx(v, d) + t];
            }
    std::int64_t ngauge = 0;
    if (K > 0 && p.ccd_sum_zero) {
        for (int q = 0; q < K; ++q) {
            double lam = 0.0;
            int nfree = 0;
            for (int c = 0; c < p.nccd; ++c)
                if (!(p.ccd_fixed && p.ccd_fixed[c]) && E(eidx(c) + q, eidx(c) + q) > 0) { lam += E(eidx(c) + q, eidx(c) + q); ++nfree; }
            if (nfree < 2) continue;
            lam /= nfree;   // any positive weight selects the sum-zero member of an exact null space
            for (int c1 = 0; c1 < p.nccd; ++c1) {
                if ((p.ccd_fixed && p.ccd_fixed[c1]) || E(eidx(c1) + q, eidx(c1) + q) <= 0) continue;
                for (int c2 = 0; c2 < p.nccd; ++c2) {
                    if ((p.ccd_fixed && p.ccd_fixed[c2]) || E(eidx(c2) + q, eidx(c2) + q) <= 0) continue;
                    E(eidx(c1) + q, eidx(c2) + q) += lam;
                }
            }
            ++ngauge;
        }
    }
    // parameters without any information (a CCD or visit with no active detection) or fixed
    std::int64_t nfixed = 0;
    for (Index i = 0; i < NV1; ++i)
        if (A(i, i) <= 0) {
            A.row(i).setZero(); A.col(i).setZero(); A(i, i) = 1.0;
            for (int d = 0; d < D; ++d) { C[d].row(i).setZero(); gv[d][i] = 0.0; }
            nfixed += D;
        }
    for (Index i = 0; i < NC; ++i) {
        const bool held = p.ccd_fixed && p.ccd_fixed[i / K];
        if (held || E(i, i) <= 0) {
            E.row(i).setZero(); E.col(i).setZero(); E(i, i) = 1.0; gc[i] = 0.0;
            for (int d = 0; d < D; ++d) C[d].col(i).setZero();
            ++nfixed;
        }
    }

    FitResult r;
    const double t1 = now();
    r.t_assemble = t1 - t0;
    // -- solve ---------------------------------------------------------------------------------
    Eigen::VectorXd x = Eigen::VectorXd::Zero(N);
    r.status = "ok";
    r.min_pivot = 1.0;
    {
        // symmetric positive (semi-)definite solve, scaled to unit diagonal (the visit and CCD
        // blocks differ by many orders): LLT, or the pivoted LDLT when rounding makes a nearly
        // singular system fail the Cholesky. Returns false if singular.
        struct Factor {
            Eigen::VectorXd sc;
            Eigen::LLT<Mat> llt;
            Eigen::LDLT<Mat> ldlt;
            bool use_ldlt = false;
            bool compute(Mat& M, double& min_pivot) {
                sc = M.diagonal().cwiseSqrt().cwiseInverse();
                for (Index j = 0; j < M.cols(); ++j)
                    for (Index i = 0; i < M.rows(); ++i) M(i, j) *= sc[i] * sc[j];
                llt.compute(M);
                if (llt.info() == Eigen::Success) {
                    min_pivot = std::min(min_pivot, llt.rcond());
                    return true;
                }
                use_ldlt = true;
                ldlt.compute(M);
                const auto d = ldlt.vectorD().cwiseAbs();
                const double dmax = d.size() ? d.maxCoeff() : 0.0;
                const double dmin = d.size() ? d.minCoeff() : 0.0;
                const double piv = dmax > 0 ? dmin / dmax : 0.0;
                min_pivot = std::min(min_pivot, piv);
                return ldlt.info() == Eigen::Success && piv > 1e-13 && ldlt.isPositive();
            }
            // M^-1 B in place (unscaled M)
            void solve(Mat& Bm) const {
                Bm = sc.asDiagonal() * Bm;
                if (use_ldlt) Bm = ldlt.solve(Bm);
                else llt.solveInPlace(Bm);
                Bm = sc.asDiagonal() * Bm;
            }
        };
        Factor fa;
        bool ok = NV1 == 0 || fa.compute(A, r.min_pivot);
        A.resize(0, 0);                                    // factored: free it
        Mat Gv(NV1, D);
        for (int d = 0; d < D; ++d) Gv.col(d) = gv[d];
        Eigen::VectorXd c = Eigen::VectorXd::Zero(NC);
        const bool half = NV1 > 0 && !fa.use_ldlt;
        // with A = Sa^-1 L L' Sa^-1: C_d' A^-1 C_d = Y_d' Y_d for Y_d = L^-1 Sa C_d, one
        // triangular solve instead of two (column blocks in parallel)
        auto lower_solve = [&](Mat& M) {
            M = fa.sc.asDiagonal() * M;
            const Index nb = M.cols(), step = std::max<Index>(16, (nb + 7) / 8);
#pragma omp parallel for schedule(dynamic)
            for (Index c0 = 0; c0 < nb; c0 += step)
                fa.llt.matrixL().solveInPlace(M.middleCols(c0, std::min(step, nb - c0)));
        };
        if (ok && NC > 0) {
            // eliminate the visit parameters: S = E - sum_d C_d' A^-1 C_d
            Mat Sm = E;
            Eigen::VectorXd rc = gc;
            if (half) {
                lower_solve(Gv);
                for (int d = 0; d < D; ++d) {
                    lower_solve(C[d]);                     // C_d becomes Y_d
                    Sm.noalias() -= C[d].transpose() * C[d];
                    rc.noalias() -= C[d].transpose() * Gv.col(d);
                }
            } else {
                for (int d = 0; d < D; ++d) {
                    Mat Z = C[d];
                    if (NV1 > 0) fa.solve(Z);
                    Sm.noalias() -= C[d].transpose() * Z;
                    Mat zg = Gv.col(d);
                    if (NV1 > 0) fa.solve(zg);
                    rc.noalias() -= C[d].transpose() * zg.col(0);
                }
            }
            Sm = (0.5 * (Sm + Sm.transpose())).eval();     // symmetric to rounding
            Factor fs;
            ok = fs.compute(Sm, r.min_pivot);
            if (ok) {
                Mat cm = rc;
                fs.solve(cm);
                c = cm.col(0);
            }
        } else if (half) {
            lower_solve(Gv);
        }
        if (ok && NV1 > 0) {
            // back-substitute: A x_d = g_d - C_d c
            if (half) {
                for (int d = 0; d < D; ++d)
                    if (NC > 0) Gv.col(d).noalias() -= C[d] * c;
                fa.llt.matrixU().solveInPlace(Gv);
                Gv = fa.sc.asDiagonal() * Gv;
            } else {
                for (int d = 0; d < D; ++d)
                    if (NC > 0) Gv.col(d).noalias() -= C[d] * c;
                fa.solve(Gv);
            }
            for (int v = 0; v < p.nvisit; ++v)
                for (int d = 0; d < D; ++d)
                    x.segment(vidx(v, d), T) = Gv.block(aidx(v), d, T, 1);
        }
        if (ok) x.segment(NV, NC) = c;
        else { r.status = "singular"; x.setZero(); }
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
