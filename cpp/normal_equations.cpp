#include "normal_equations.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace mosaicfit {

using Eigen::Index;

namespace {
#ifdef _OPENMP
int omp_threads() { return omp_get_num_threads(); }
int omp_thread() { return omp_get_thread_num(); }
#else
int omp_threads() { return 1; }
int omp_thread() { return 0; }
#endif
}  // namespace

StarSums star_sums(const FitProblem& p) {
    const int D = p.D;
    StarSums st;
    std::vector<double>& W = st.W;
    std::vector<double>& Q = st.Q;
    W.assign(p.nstar, 0.0);
    Q.assign(static_cast<std::size_t>(p.nstar) * D, 0.0);
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
    return st;
}

VisitRows visit_rows(const FitProblem& p) {
    const int T = n_terms(p.order);
    VisitRows vr;
    auto& dets = vr.dets;
    auto& B = vr.B;
    dets.resize(p.nvisit);
    // each visit's detections in the order of their stars (ties: of the detections), by a
    // counting sort on the star: O(n), where a sort per visit cost ~0.1 s of each iteration
    // of a 200-visit fit
    {
        std::vector<std::int64_t> first(static_cast<std::size_t>(p.nstar) + 1, 0), nv(p.nvisit, 0);
        for (std::int64_t j = 0; j < p.n; ++j)
            if (p.active[j]) { ++first[p.star[j] + 1]; ++nv[p.visit[j]]; }
        for (int s = 0; s < p.nstar; ++s) first[s + 1] += first[s];
        std::vector<std::int64_t> by_star(static_cast<std::size_t>(first[p.nstar]));
        for (std::int64_t j = 0; j < p.n; ++j)
            if (p.active[j]) by_star[first[p.star[j]]++] = j;
        for (int v = 0; v < p.nvisit; ++v) dets[v].reserve(static_cast<std::size_t>(nv[v]));
        for (const std::int64_t j : by_star) dets[p.visit[j]].push_back(j);
    }
    B.resize(p.nvisit);
#pragma omp parallel for schedule(dynamic)
    for (int v = 0; v < p.nvisit; ++v) {
        auto& L = dets[v];
        B[v].resize(static_cast<Index>(L.size()), T);
        for (std::size_t k = 0; k < L.size(); ++k)
            basis_values(p.basis, p.order, p.u[L[k]], p.v[L[k]], B[v].row(static_cast<Index>(k)).data());
    }
    return vr;
}

std::vector<std::pair<int, int>> visit_pairs(const FitProblem& p, const VisitRows& vr) {
    // each star's visits (its active detections'), as one flat list
    std::vector<std::int64_t> start(static_cast<std::size_t>(p.nstar) + 1, 0);
    for (std::int64_t j = 0; j < p.n; ++j)
        if (p.active[j]) ++start[p.star[j] + 1];
    for (int s = 0; s < p.nstar; ++s) start[s + 1] += start[s];
    std::vector<int> sv(static_cast<std::size_t>(start[p.nstar]));
    {
        std::vector<std::int64_t> at(start.begin(), start.end() - 1);
        for (std::int64_t j = 0; j < p.n; ++j)
            if (p.active[j]) sv[at[p.star[j]]++] = p.visit[j];
    }
    // per visit a: the visits b > a seen by one of its stars
    std::vector<std::vector<int>> nb(p.nvisit);
#pragma omp parallel
    {
        std::vector<char> mark(p.nvisit, 0);
#pragma omp for schedule(dynamic)
        for (int a = 0; a < p.nvisit; ++a) {
            auto& out = nb[a];
            for (const std::int64_t j : vr.dets[a]) {
                const int s = p.star[j];
                for (std::int64_t q = start[s]; q < start[s + 1]; ++q) {
                    const int b = sv[q];
                    if (b > a && !mark[b]) { mark[b] = 1; out.push_back(b); }
                }
            }
            for (const int b : out) mark[b] = 0;
            std::sort(out.begin(), out.end());
        }
    }
    std::vector<std::pair<int, int>> pairs;
    for (int a = 0; a < p.nvisit; ++a) {
        pairs.emplace_back(a, a);
        for (const int b : nb[a]) pairs.emplace_back(a, b);
    }
    return pairs;
}

ReducedSystem zero_system(const FitProblem& p, std::vector<std::pair<int, int>> pairs, bool sparse) {
    ReducedSystem sys;
    sys.D = p.D;
    sys.T = n_terms(p.order);
    sys.K = p.K;
    sys.NV1 = static_cast<Index>(p.nvisit) * sys.T;
    sys.NC = static_cast<Index>(p.nccd) * p.K;
    sys.sparse = sparse;
    sys.pairs = std::move(pairs);
    if (sparse) {
        sys.Ablk.assign(sys.pairs.size(), Mat::Zero(sys.T, sys.T));
        sys.diag_blk.assign(p.nvisit, -1);
        for (std::size_t k = 0; k < sys.pairs.size(); ++k)
            if (sys.pairs[k].first == sys.pairs[k].second) sys.diag_blk[sys.pairs[k].first] = static_cast<int>(k);
    } else {
        sys.A = Mat::Zero(sys.NV1, sys.NV1);
    }
    sys.C.assign(p.D, Mat::Zero(sys.NV1, sys.NC));
    sys.E = Mat::Zero(sys.NC, sys.NC);
    sys.gv.assign(p.D, Eigen::VectorXd::Zero(sys.NV1));
    sys.gc = Eigen::VectorXd::Zero(sys.NC);
    return sys;
}

void add_visit_blocks(ReducedSystem& sys, const FitProblem& p, const StarSums& st,
                      const VisitRows& vr) {
    const int T = sys.T;
    const auto& dets = vr.dets;
    const auto& B = vr.B;
    const auto& W = st.W;
    Mat& A = sys.A;
    // the direct term minus the eliminated stars, one GEMM per pair that shares stars
    const auto& pairs = sys.pairs;
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t k = 0; k < static_cast<std::int64_t>(pairs.size()); ++k) {
        const int a = pairs[k].first, b = pairs[k].second;
        const auto& La = dets[a];
        const auto& Lb = dets[b];
        Mat blk;
        if (a == b) {
            // each detection paired with itself: the direct term and its star's share at once,
            // B' diag(w_j (1 - w_j / W_s)) B, one symmetric rank update (a quarter of the
            // work of the two products; w_j <= W_s, so the weights are >= 0)
            const Index n = static_cast<Index>(La.size());
            RowMat X(n, T);
            for (Index q = 0; q < n; ++q) {
                const std::int64_t j = La[q];
                const double h = p.w[j] * (1.0 - p.w[j] / W[p.star[j]]);
                X.row(q) = std::sqrt(std::max(h, 0.0)) * B[a].row(q);
            }
            blk = Mat::Zero(T, T);
            blk.selfadjointView<Eigen::Lower>().rankUpdate(X.transpose());
            blk.triangularView<Eigen::StrictlyUpper>() = blk.transpose();
        } else {
            std::vector<Index> ia, ib;
            std::size_t i = 0, m = 0;
            while (i < La.size() && m < Lb.size()) {  // merge: stars seen in both visits
                const int sa = p.star[La[i]], sb = p.star[Lb[m]];
                if (sa < sb) ++i;
                else if (sb < sa) ++m;
                else { ia.push_back(static_cast<Index>(i)); ib.push_back(static_cast<Index>(m)); ++i; ++m; }
            }
            if (ia.empty()) continue;
            RowMat X(static_cast<Index>(ia.size()), T), Y(static_cast<Index>(ib.size()), T);
            for (std::size_t q = 0; q < ia.size(); ++q) {
                const std::int64_t ja = La[ia[q]], jb = Lb[ib[q]];
                const double c = p.w[ja] * p.w[jb] / W[p.star[ja]];
                X.row(static_cast<Index>(q)) = c * B[a].row(ia[q]);
                Y.row(static_cast<Index>(q)) = B[b].row(ib[q]);
            }
            blk = -(X.transpose() * Y);
        }
        if (sys.sparse) {
            sys.Ablk[k] = std::move(blk);
            continue;
        }
        A.block(sys.visit_row(a), sys.visit_row(b), T, T) = blk;
        if (a != b) A.block(sys.visit_row(b), sys.visit_row(a), T, T) = blk.transpose();
    }
}

void add_ccd_terms(ReducedSystem& sys, const FitProblem& p, const StarSums& st,
                   const VisitRows& vr) {
    const int D = sys.D, K = sys.K, T = sys.T;
    if (K <= 0) return;
    const int DK = D * K;
    const auto& dets = vr.dets;
    const auto& B = vr.B;
    const auto& W = st.W;
    const Index NV1 = sys.NV1, NC = sys.NC;
    // Per star s and each CCD c it was seen on: S_sc = sum over its detections on c of w_j G_j
    // (D x K), in flat arrays (the star's CCDs in the order of its detections). A star has at
    // most as many CCDs as active detections, so star s's entries live in the slots
    // [first[s], first[s] + nc[s]) of its detections' range: no allocation per star.
    // (Per-star vectors and Eigen blocks of K x K here had been most of the assembly's time.)
    std::vector<std::int64_t> first(static_cast<std::size_t>(p.nstar) + 1, 0);
    for (std::int64_t j = 0; j < p.n; ++j)
        if (p.active[j]) ++first[p.star[j] + 1];
    for (int s = 0; s < p.nstar; ++s) first[s + 1] += first[s];
    std::vector<std::int64_t> sdet(static_cast<std::size_t>(first[p.nstar]));
    {
        std::vector<std::int64_t> at(first.begin(), first.end() - 1);
        for (std::int64_t j = 0; j < p.n; ++j)
            if (p.active[j]) sdet[at[p.star[j]]++] = j;
    }
    std::vector<int> nc(p.nstar, 0), sccd(sdet.size());
    std::vector<double> sval(sdet.size() * DK, 0.0);
#pragma omp parallel for schedule(static)
    for (int s = 0; s < p.nstar; ++s) {
        const std::int64_t f = first[s];
        int m = 0;
        for (std::int64_t q = f; q < first[s + 1]; ++q) {
            const std::int64_t j = sdet[q];
            const int c = p.ccd[j];
            int e = 0;
            while (e < m && sccd[f + e] != c) ++e;
            if (e == m) sccd[f + m++] = c;
            double* out = sval.data() + (f + e) * DK;
            const double* Gj = p.G + j * DK;
            for (int i = 0; i < DK; ++i) out[i] += p.w[j] * Gj[i];
        }
        nc[s] = m;
    }
    // visit x CCD rows, one visit per task (each writes only its own rows): column
    // (ccd_row(c) + q) of C_d gets ([c = c_j] w_j G_j[d, q] - w_j / W_s S_sc[d, q]) B_j over
    // the detections j of the visit, c the CCDs of j's star (c_j, j's own, among them). The
    // visit's (detection, CCD) entries are taken CCD by CCD (a counting sort), so that the
    // D x K columns of one CCD are one small GEMM, written once: scattering each entry into
    // the visit's rows of all NC columns was bound by the L2 traffic (0.33 -> 0.20 s per
    // astrometric solve at 200 visits)
    const int nccd = p.nccd;
#pragma omp parallel
    {
        std::vector<std::int64_t> at(static_cast<std::size_t>(nccd) + 1), ek, ef;
        RowMat X, H;
        Mat acc(T, DK);
#pragma omp for schedule(dynamic)
        for (int v = 0; v < p.nvisit; ++v) {
            const auto& L = dets[v];
            const Index r0 = sys.visit_row(v);
            std::fill(at.begin(), at.end(), 0);
            for (const std::int64_t j : L) {
                const int s = p.star[j];
                for (int e = 0; e < nc[s]; ++e) ++at[sccd[first[s] + e] + 1];
            }
            for (int c = 0; c < nccd; ++c) at[c + 1] += at[c];
            ek.resize(static_cast<std::size_t>(at[nccd]));
            ef.resize(ek.size());
            for (std::size_t k = 0; k < L.size(); ++k) {
                const int s = p.star[L[k]];
                for (int e = 0; e < nc[s]; ++e) {
                    const std::int64_t f = first[s] + e;
                    const std::int64_t slot = at[sccd[f]]++;
                    ek[slot] = static_cast<std::int64_t>(k);
                    ef[slot] = f;
                }
            }
            // at[c] is now the end of CCD c's entries, at[c - 1] (0 for c = 0) their start
            for (int c = 0; c < nccd; ++c) {
                const std::int64_t b = c ? at[c - 1] : 0, e_ = at[c];
                if (b == e_) continue;
                // the entries' basis rows X and coefficients H: this CCD's block is X' H
                const Index m = static_cast<Index>(e_ - b);
                X.resize(m, T);
                H.resize(m, DK);
                for (Index i = 0; i < m; ++i) {
                    const std::int64_t k = ek[b + i], f = ef[b + i], j = L[k];
                    const double hj = p.w[j] / W[p.star[j]];
                    const double* sv = sval.data() + f * DK;
                    double* h = H.row(i).data();
                    for (int q = 0; q < DK; ++q) h[q] = -hj * sv[q];
                    if (p.ccd[j] == c)
                        for (int q = 0; q < DK; ++q) h[q] += p.w[j] * p.G[j * DK + q];
                    X.row(i) = B[v].row(static_cast<Index>(k));
                }
                acc.noalias() = X.transpose() * H;      // T x DK, column d * K + q
                for (int d = 0; d < D; ++d)
                    for (int q = 0; q < K; ++q)
                        sys.C[d].block(r0, sys.ccd_row(c) + q, T, 1) += acc.col(d * K + q);
            }
        }
    }
    // CCD x CCD: sum_j w_j G_j' G_j  -  sum_s sum_{c1, c2 of s} S_sc1' S_sc2 / W_s, summed
    // in one copy of E per thread (NC x NC: a few hundred kB)
    std::vector<Mat> Eparts;
#pragma omp parallel
    {
#pragma omp single
        Eparts.assign(static_cast<std::size_t>(omp_threads()), Mat::Zero(NC, NC));
        double* E = Eparts[static_cast<std::size_t>(omp_thread())].data();   // column-major
#pragma omp for schedule(static) nowait
        for (std::int64_t j = 0; j < p.n; ++j) {
            if (!p.active[j]) continue;
            const double* Gj = p.G + j * DK;
            const Index r = sys.ccd_row(p.ccd[j]);
            for (int q2 = 0; q2 < K; ++q2)
                for (int q1 = 0; q1 < K; ++q1) {
                    double g = 0.0;
                    for (int d = 0; d < D; ++d) g += Gj[d * K + q1] * Gj[d * K + q2];
                    E[(r + q2) * NC + r + q1] += p.w[j] * g;
                }
        }
#pragma omp for schedule(static)
        for (int s = 0; s < p.nstar; ++s) {
            if (W[s] <= 0) continue;
            for (int e1 = 0; e1 < nc[s]; ++e1) {
                const double* S1 = sval.data() + (first[s] + e1) * DK;
                const Index r1 = sys.ccd_row(sccd[first[s] + e1]);
                for (int e2 = 0; e2 < nc[s]; ++e2) {
                    const double* S2 = sval.data() + (first[s] + e2) * DK;
                    const Index r2 = sys.ccd_row(sccd[first[s] + e2]);
                    for (int q2 = 0; q2 < K; ++q2)
                        for (int q1 = 0; q1 < K; ++q1) {
                            double g = 0.0;
                            for (int d = 0; d < D; ++d) g += S1[d * K + q1] * S2[d * K + q2];
                            E[(r2 + q2) * NC + r1 + q1] -= g / W[s];
                        }
                }
            }
        }
    }
    for (const Mat& Ep : Eparts) sys.E += Ep;
}

void add_right_hand_side(ReducedSystem& sys, const FitProblem& p, const StarSums& st,
                         const VisitRows& vr) {
    const int D = sys.D, K = sys.K, T = sys.T;
    const auto& dets = vr.dets;
    const auto& B = vr.B;
    const auto& W = st.W;
    const auto& Q = st.Q;
    auto& gv = sys.gv;
    auto& gc = sys.gc;
#pragma omp parallel for schedule(dynamic)
    for (int v = 0; v < p.nvisit; ++v) {
        const auto& L = dets[v];
        for (std::size_t k = 0; k < L.size(); ++k) {
            const std::int64_t j = L[k];
            const int s = p.star[j];
            for (int d = 0; d < D; ++d) {
                const double e = p.w[j] * (p.y[j * D + d] + Q[s * D + d] / W[s]);
                gv[d].segment(sys.visit_row(v), T) += e * B[v].row(static_cast<Index>(k)).transpose();
            }
        }
    }
    if (K > 0)
        for (std::int64_t j = 0; j < p.n; ++j) {
            if (!p.active[j]) continue;
            const int s = p.star[j];
            for (int d = 0; d < D; ++d) {
                const double e = p.w[j] * (p.y[j * D + d] + Q[s * D + d] / W[s]);
                for (int q = 0; q < K; ++q) gc[sys.ccd_row(p.ccd[j]) + q] += e * p.G[j * D * K + d * K + q];
            }
        }
}

void add_coefficient_priors(ReducedSystem& sys, const FitProblem& p) {
    if (!p.coef_prior_w) return;
    const int D = sys.D, T = sys.T;
    // coef_prior[v, d, t] of the (nvisit, D, T) arrays
    auto vidx = [&](int v, int d) -> Index { return static_cast<Index>(v) * D * T + d * T; };
    if (p.coef_prior_mat)
        for (int v = 0; v < p.nvisit; ++v) {
            Eigen::Map<const RowMat> M(p.coef_prior_mat + static_cast<Index>(v) * T * T, T, T);
            if (M.cwiseAbs().maxCoeff() == 0.0) continue;
            const Index r0 = sys.visit_row(v);
            if (sys.sparse) sys.Ablk[sys.diag_blk[v]] += M;
            else sys.A.block(r0, r0, T, T) += M;
            for (int d = 0; d < D; ++d)
                sys.gv[d].segment(r0, T) += M * Eigen::Map<const Eigen::VectorXd>(p.coef_prior + vidx(v, d), T);
        }
    for (int v = 0; v < p.nvisit; ++v)
        for (int t = 0; t < T; ++t) {
            const double pw = p.coef_prior_w[vidx(v, 0) + t];
            for (int d = 1; d < D; ++d)
                if (p.coef_prior_w[vidx(v, d) + t] != pw)
                    throw std::invalid_argument("coefficient prior weights must be the same in every dimension");
            if (pw <= 0) continue;
            sys.A_diag(sys.visit_row(v) + t) += pw;
            for (int d = 0; d < D; ++d) sys.gv[d][sys.visit_row(v) + t] += pw * p.coef_prior[vidx(v, d) + t];
        }
}

void add_ccd_priors(ReducedSystem& sys, const FitProblem& p) {
    if (!p.ccd_prior_w || sys.K == 0) return;
    for (Index i = 0; i < sys.NC; ++i) {
        const double pw = p.ccd_prior_w[i];
        if (pw <= 0) continue;
        sys.E(i, i) += pw;
        sys.gc[i] += pw * p.ccd_prior[i];
    }
}

void add_ccd_gauge(ReducedSystem& sys, const FitProblem& p) {
    const int K = sys.K;
    if (!(K > 0 && p.ccd_sum_zero)) return;
    Mat& E = sys.E;
    auto eidx = [&](int c) { return sys.ccd_row(c); };
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
        ++sys.ngauge;
    }
}

void hold_fixed_parameters(ReducedSystem& sys, const FitProblem& p) {
    const int D = sys.D, K = sys.K, T = sys.T;
    Mat& A = sys.A;
    Mat& E = sys.E;
    // sparse: the pairs of each visit
    std::vector<std::vector<int>> of_visit;
    if (sys.sparse) {
        of_visit.resize(p.nvisit);
        for (std::size_t k = 0; k < sys.pairs.size(); ++k) {
            of_visit[sys.pairs[k].first].push_back(static_cast<int>(k));
            if (sys.pairs[k].second != sys.pairs[k].first) of_visit[sys.pairs[k].second].push_back(static_cast<int>(k));
        }
    }
    for (Index i = 0; i < sys.NV1; ++i)
        if (sys.A_diag(i) <= 0) {
            if (sys.sparse) {
                const int v = static_cast<int>(i / T), t = static_cast<int>(i % T);
                for (const int k : of_visit[v]) {
                    if (sys.pairs[k].first == v) sys.Ablk[k].row(t).setZero();
                    if (sys.pairs[k].second == v) sys.Ablk[k].col(t).setZero();
                }
                sys.A_diag(i) = 1.0;
            } else {
                A.row(i).setZero(); A.col(i).setZero(); A(i, i) = 1.0;
            }
            for (int d = 0; d < D; ++d) { sys.C[d].row(i).setZero(); sys.gv[d][i] = 0.0; }
            sys.nfixed += D;
        }
    for (Index i = 0; i < sys.NC; ++i) {
        const bool held = p.ccd_fixed && p.ccd_fixed[i / K];
        if (held || E(i, i) <= 0) {
            E.row(i).setZero(); E.col(i).setZero(); E(i, i) = 1.0; sys.gc[i] = 0.0;
            for (int d = 0; d < D; ++d) sys.C[d].col(i).setZero();
            ++sys.nfixed;
        }
    }
}

}  // namespace mosaicfit
