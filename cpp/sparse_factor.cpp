#include "sparse_factor.hpp"

#include <Eigen/OrderingMethods>
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "factor.hpp"

namespace mosaicfit {

using Eigen::Index;

namespace {

// Eigen's own GEMM threads off while the small block products run: Eigen gives each product
// of 55 x 55 x 312 blocks an OpenMP region of its own, which costs milliseconds when the cores
// are shared (measured: the 50-visit strip's astrometric solve took 0.27 s on one thread and
// 17 s on two under a load of 4). The loops that matter are parallel themselves (by_columns,
// the updates), and inside a parallel region Eigen stays on one thread anyway.
struct EigenSerial {
    int n = Eigen::nbThreads();
    EigenSerial() { Eigen::setNbThreads(1); }
    ~EigenSerial() { Eigen::setNbThreads(n); }
};

constexpr double kMinPivot = 1e-13;   // as ScaledFactor's LDLT
// work below which a loop of the factorisation stays on one thread: a parallel region costs
// milliseconds when the cores are shared with other jobs (measured: the 50-visit strip's
// photometric factorisation took 0.03 s on one thread and 0.25-1 s on two under a load of 2)
constexpr double kParallelFlops = 5e7;

// The block elimination tree's fill of the lower pattern `adj` (per position k: rows i > k)
// in that order: struct(k) = adj(k) u (struct(c) \ {k}) over the children c of k.
BlockSymbolic symbolic_in_order(int n, const std::vector<std::pair<int, int>>& pairs,
                                std::vector<int> perm, const char* name) {
    BlockSymbolic s;
    s.n = n;
    s.perm = std::move(perm);
    s.pos.assign(n, 0);
    for (int k = 0; k < n; ++k) s.pos[s.perm[k]] = k;
    s.rows.assign(n, {});
    for (const auto& pr : pairs) {
        if (pr.first == pr.second) continue;
        const int i = s.pos[pr.first], j = s.pos[pr.second];
        s.rows[std::min(i, j)].push_back(std::max(i, j));
    }
    s.nblocks = 0;
    s.flops = 0.0;
    for (int k = 0; k < n; ++k) {
        auto& r = s.rows[k];
        std::sort(r.begin(), r.end());
        r.erase(std::unique(r.begin(), r.end()), r.end());
        if (!r.empty()) {
            auto& parent = s.rows[r[0]];
            parent.insert(parent.end(), r.begin() + 1, r.end());
        }
        const double m = static_cast<double>(r.size());
        s.nblocks += 1 + static_cast<std::int64_t>(r.size());
        // LLT of the diagonal block, a triangular solve per row block, a GEMM per pair
        s.flops += 1.0 / 3.0 + m + m * (m + 1.0);
    }
    s.ordering = name;
    return s;
}

}  // namespace

BlockSymbolic block_symbolic(int nvisit, const std::vector<std::pair<int, int>>& pairs) {
    std::vector<int> natural(nvisit);
    for (int v = 0; v < nvisit; ++v) natural[v] = v;
    BlockSymbolic best = symbolic_in_order(nvisit, pairs, natural, "natural");
    if (nvisit < 3) return best;
    // AMD on the visit graph (Eigen's, as its sparse Cholesky uses it)
    Eigen::SparseMatrix<double> G(nvisit, nvisit);
    std::vector<Eigen::Triplet<double>> tr;
    tr.reserve(2 * pairs.size());
    for (const auto& pr : pairs) {
        tr.emplace_back(pr.first, pr.second, 1.0);
        if (pr.first != pr.second) tr.emplace_back(pr.second, pr.first, 1.0);
    }
    G.setFromTriplets(tr.begin(), tr.end());
    Eigen::PermutationMatrix<Eigen::Dynamic, Eigen::Dynamic, int> order;
    Eigen::AMDOrdering<int> amd;
    amd(G, order);
    // order.indices()[k]: the visit eliminated k-th (Eigen's Pinv in SimplicialCholesky)
    std::vector<int> perm(order.indices().data(), order.indices().data() + nvisit);
    BlockSymbolic a = symbolic_in_order(nvisit, pairs, perm, "amd");
    return a.flops < best.flops ? a : best;
}

bool use_sparse(const std::string& solver, const BlockSymbolic& sym) {
    if (solver == "dense") return false;
    if (solver == "sparse" || solver == "simplicial") return true;
    if (solver != "auto") throw std::invalid_argument("unknown solver " + solver);
    return sym.n >= kSparseMinVisits && block_fill(sym) <= kSparseMaxFill;
}

// -- the factorisation ---------------------------------------------------------------------------

Eigen::SparseMatrix<double> SparseFactor::scaled_matrix(const ReducedSystem& sys) const {
    const int T = sys.T;
    std::vector<Eigen::Triplet<double>> tr;
    tr.reserve(sys.pairs.size() * T * T * 2);
    for (std::size_t k = 0; k < sys.pairs.size(); ++k) {
        const int a = sys.pairs[k].first, b = sys.pairs[k].second;
        const Mat& B = sys.Ablk[k];
        const Index ra = sys.visit_row(a), rb = sys.visit_row(b);
        for (Index j = 0; j < T; ++j)
            for (Index i = 0; i < T; ++i) {
                const double x = B(i, j) * sc_[ra + i] * sc_[rb + j];
                if (x == 0.0) continue;
                // the lower triangle (Eigen's simplicial Cholesky reads that one)
                if (ra + i >= rb + j) tr.emplace_back(ra + i, rb + j, x);
                if (a != b && rb + j >= ra + i) tr.emplace_back(rb + j, ra + i, x);
            }
    }
    SpMat M(N_, N_);
    M.setFromTriplets(tr.begin(), tr.end());
    return M;
}

bool SparseFactor::simplicial(const SpMat& M, bool ldlt, double& piv) {
    Eigen::VectorXd d;
    if (!ldlt) {
        llt_ = std::make_unique<Eigen::SimplicialLLT<SpMat>>();
        llt_->compute(M);   // AMD ordering
        if (llt_->info() != Eigen::Success) return false;
        const SpMat& L = llt_->matrixL().nestedExpression();
        d.resize(N_);
        for (Index j = 0; j < N_; ++j) d[j] = L.coeff(j, j) * L.coeff(j, j);
    } else {
        ldlt_ = std::make_unique<Eigen::SimplicialLDLT<SpMat>>();
        ldlt_->compute(M);
        if (ldlt_->info() != Eigen::Success) { piv = 0.0; return false; }
        d = ldlt_->vectorD();
        if (d.size() && d.minCoeff() <= 0) { piv = 0.0; return false; }
        dinvsqrt_ = d.cwiseSqrt().cwiseInverse();
    }
    const double dmax = d.size() ? d.maxCoeff() : 0.0, dmin = d.size() ? d.minCoeff() : 0.0;
    piv = dmax > 0 ? dmin / dmax : 0.0;
    return true;
}

bool SparseFactor::block_cholesky(ReducedSystem& sys, double& piv) {
    const BlockSymbolic& s = *sym_;
    const int T = T_, n = s.n;
    Ld_.assign(n, Mat());
    Lo_.assign(n, {});
    for (int k = 0; k < n; ++k) Lo_[k].assign(s.rows[k].size(), Mat::Zero(T, T));
    // the block (i, j), i > j positions, of column j
    auto off = [&](int i, int j) -> Mat& {
        const auto& r = s.rows[j];
        return Lo_[j][std::lower_bound(r.begin(), r.end(), i) - r.begin()];
    };
    // the scaled blocks of A, in the factor's order and lower triangle
    for (std::size_t q = 0; q < sys.pairs.size(); ++q) {
        const int a = sys.pairs[q].first, b = sys.pairs[q].second;
        Mat& B = sys.Ablk[q];
        B = sc_.segment(sys.visit_row(a), T).asDiagonal() * B * sc_.segment(sys.visit_row(b), T).asDiagonal();
        const int i = s.pos[a], j = s.pos[b];
        if (i == j) Ld_[i] = std::move(B);
        else if (i > j) off(i, j) = std::move(B);
        else off(j, i) = B.transpose();
        B.resize(0, 0);
    }
    double dmin = 1.0, dmax = 0.0;
    std::vector<std::pair<int, int>> upd;
    for (int k = 0; k < n; ++k) {
        // L_kk = chol(A_kk - ...), the updates from the earlier columns already applied
        Eigen::LLT<Mat> llt(Ld_[k]);
        if (llt.info() != Eigen::Success) return false;
        Ld_[k] = llt.matrixL();
        for (Index t = 0; t < T; ++t) {
            const double d = Ld_[k](t, t) * Ld_[k](t, t);
            dmin = std::min(dmin, d);
            dmax = std::max(dmax, d);
        }
        const auto& r = s.rows[k];
        const int m = static_cast<int>(r.size());
        if (m == 0) continue;
        // L_ik = A_ik L_kk^-T
        // (threads only for columns with enough work: kParallelFlops)
        const double T3 = static_cast<double>(T) * T * T;
        const auto U = Ld_[k].transpose().triangularView<Eigen::Upper>();
#pragma omp parallel for schedule(static) if (m * T3 > kParallelFlops)
        for (int q = 0; q < m; ++q) U.solveInPlace<Eigen::OnTheRight>(Lo_[k][q]);
        // A_ij -= L_ik L_jk' for i >= j in struct(k)
        upd.clear();
        for (int qi = 0; qi < m; ++qi)
            for (int qj = 0; qj <= qi; ++qj) upd.emplace_back(qi, qj);
#pragma omp parallel for schedule(dynamic) if (2.0 * upd.size() * T3 > kParallelFlops)
        for (std::int64_t u = 0; u < static_cast<std::int64_t>(upd.size()); ++u) {
            const int qi = upd[u].first, qj = upd[u].second;
            const int i = r[qi], j = r[qj];
            Mat& tgt = i == j ? Ld_[j] : off(i, j);
            tgt.noalias() -= Lo_[k][qi] * Lo_[k][qj].transpose();
        }
    }
    piv = dmax > 0 ? dmin / dmax : 0.0;
    return true;
}

bool SparseFactor::compute(ReducedSystem& sys, const BlockSymbolic& sym, const std::string& mode,
                           double& min_pivot) {
    const EigenSerial serial;
    T_ = sys.T;
    N_ = sys.NV1;
    sym_ = &sym;
    kind_ = mode;
    sc_.resize(N_);
    for (Index i = 0; i < N_; ++i) sc_[i] = 1.0 / std::sqrt(sys.A_diag(i));
    double piv = 0.0;
    bool ok = false;
    if (mode == "sparse") {
        // the block factor consumes the blocks: keep the scaled scalar matrix for the
        // fallback only when the Cholesky fails (rebuilt from a copy of the blocks)
        std::vector<Mat> keep = sys.Ablk;
        ok = block_cholesky(sys, piv);
        if (!ok) {
            sys.Ablk = std::move(keep);
            Ld_.clear();
            Lo_.clear();
        }
    } else {
        ok = simplicial(scaled_matrix(sys), false, piv);
    }
    if (!ok) {   // not positive definite to rounding: the LDLT, as ScaledFactor does
        kind_ += "+ldlt";
        llt_.reset();
        ok = simplicial(scaled_matrix(sys), true, piv);
    }
    sys.Ablk.clear();
    sys.Ablk.shrink_to_fit();
    min_pivot = std::min(min_pivot, piv);
    return ok && piv > kMinPivot;
}

// -- the solves ---------------------------------------------------------------------------------

void SparseFactor::block_forward(Mat& M) const {
    const BlockSymbolic& s = *sym_;
    const int T = T_;
    for (int k = 0; k < s.n; ++k) {
        auto Yk = M.middleRows(static_cast<Index>(k) * T, T);
        Ld_[k].triangularView<Eigen::Lower>().solveInPlace(Yk);
        const auto& r = s.rows[k];
        for (std::size_t q = 0; q < r.size(); ++q)
            M.middleRows(static_cast<Index>(r[q]) * T, T).noalias() -= Lo_[k][q] * Yk;
    }
}

void SparseFactor::block_backward(Mat& M) const {
    const BlockSymbolic& s = *sym_;
    const int T = T_;
    for (int k = s.n - 1; k >= 0; --k) {
        auto Zk = M.middleRows(static_cast<Index>(k) * T, T);
        const auto& r = s.rows[k];
        for (std::size_t q = 0; q < r.size(); ++q)
            Zk.noalias() -= Lo_[k][q].transpose() * M.middleRows(static_cast<Index>(r[q]) * T, T);
        Ld_[k].transpose().triangularView<Eigen::Upper>().solveInPlace(Zk);
    }
}

namespace {

// f on column blocks of M, on OpenMP threads (each block solved on its own)
template <typename F>
void by_columns(Mat& M, F f) {
    const Index nb = M.cols();
    if (nb <= 16 || static_cast<double>(M.rows()) * nb < 2e6) { f(M); return; }
    const Index step = std::max<Index>(16, (nb + 7) / 8);
#pragma omp parallel for schedule(dynamic)
    for (Index c0 = 0; c0 < nb; c0 += step) {
        Mat part = M.middleCols(c0, std::min(step, nb - c0));
        f(part);
        M.middleCols(c0, part.cols()) = part;
    }
}

}  // namespace

void SparseFactor::half_solve(Mat& M) const {
    const EigenSerial serial;
    M = sc_.asDiagonal() * M;
    if (!Ld_.empty()) {
        const BlockSymbolic& s = *sym_;
        Mat P(M.rows(), M.cols());
        for (int k = 0; k < s.n; ++k)
            P.middleRows(static_cast<Index>(k) * T_, T_) = M.middleRows(static_cast<Index>(s.perm[k]) * T_, T_);
        M.swap(P);
        by_columns(M, [this](Mat& X) { block_forward(X); });
    } else if (llt_) {
        M = llt_->permutationP() * M;
        by_columns(M, [this](Mat& X) { llt_->matrixL().solveInPlace(X); });
    } else {
        M = ldlt_->permutationP() * M;
        by_columns(M, [this](Mat& X) { ldlt_->matrixL().solveInPlace(X); });
        M = dinvsqrt_.asDiagonal() * M;
    }
}

void SparseFactor::half_back(Mat& M) const {
    const EigenSerial serial;
    if (!Ld_.empty()) {
        by_columns(M, [this](Mat& X) { block_backward(X); });
        const BlockSymbolic& s = *sym_;
        Mat P(M.rows(), M.cols());
        for (int k = 0; k < s.n; ++k)
            P.middleRows(static_cast<Index>(s.perm[k]) * T_, T_) = M.middleRows(static_cast<Index>(k) * T_, T_);
        M.swap(P);
    } else if (llt_) {
        by_columns(M, [this](Mat& X) { llt_->matrixU().solveInPlace(X); });
        M = llt_->permutationPinv() * M;
    } else {
        M = dinvsqrt_.asDiagonal() * M;
        by_columns(M, [this](Mat& X) { ldlt_->matrixU().solveInPlace(X); });
        M = ldlt_->permutationPinv() * M;
    }
    M = sc_.asDiagonal() * M;
}

bool solve_reduced_sparse(ReducedSystem& sys, const BlockSymbolic& sym, const std::string& mode,
                          Mat& xv, Eigen::VectorXd& c, double& min_pivot, std::string& kind) {
    const int D = sys.D;
    const Index NV1 = sys.NV1, NC = sys.NC;
    std::vector<Mat>& C = sys.C;
    SparseFactor fa;
    bool ok = fa.compute(sys, sym, mode, min_pivot);
    kind = fa.kind();
    if (!ok) return false;
    Mat& Gv = xv;
    Gv.resize(NV1, D);
    for (int d = 0; d < D; ++d) Gv.col(d) = sys.gv[d];
    fa.half_solve(Gv);
    c = Eigen::VectorXd::Zero(NC);
    if (NC > 0) {
        // eliminate the visit parameters: S = E - sum_d Y_d' Y_d, Y_d = half_solve(C_d)
        Mat Sm = sys.E;
        Eigen::VectorXd rc = sys.gc;
        for (int d = 0; d < D; ++d) {
            fa.half_solve(C[d]);                       // C_d becomes Y_d
            Sm.noalias() -= C[d].transpose() * C[d];
            rc.noalias() -= C[d].transpose() * Gv.col(d);
        }
        Sm = (0.5 * (Sm + Sm.transpose())).eval();     // symmetric to rounding
        ScaledFactor fs;
        ok = fs.compute(Sm, min_pivot);
        if (!ok) return false;
        Mat cm = rc;
        fs.solve(cm);
        c = cm.col(0);
        for (int d = 0; d < D; ++d) Gv.col(d).noalias() -= C[d] * c;
    }
    fa.half_back(Gv);                                  // A x_d = g_d - C_d c
    return true;
}

}  // namespace mosaicfit
