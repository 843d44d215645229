#include "fit.hpp"

#include <Eigen/Dense>
#include <chrono>
#include <limits>

#include "covariance.hpp"
#include "factor.hpp"
#include "normal_equations.hpp"
#include "sparse_factor.hpp"

namespace mosaicfit {

using Eigen::Index;

namespace {

inline double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Stars, residuals and chi2 from the model parameters x (visit polynomials, then CCD
// parameters): fills r.coef .. r.nobs_det; returns the number of stars with data.
std::int64_t back_substitute(const FitProblem& p, const StarSums& st, const Eigen::VectorXd& x,
                             FitResult& r) {
    const int D = p.D, K = p.K, T = n_terms(p.order);
    const Index NV = static_cast<Index>(p.nvisit) * D * T;
    const Index N = NV + static_cast<Index>(p.nccd) * K;
    auto vidx = [&](int v, int d) -> Index { return static_cast<Index>(v) * D * T + d * T; };
    auto cidx = [&](int c) -> Index { return NV + static_cast<Index>(c) * K; };
    const auto& W = st.W;
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
    return nstars_used;
}

}  // namespace

FitResult solve_mosaic(const FitProblem& p) {
    const double t0 = now();
    const int D = p.D, K = p.K, T = n_terms(p.order);
    const Index NV = static_cast<Index>(p.nvisit) * D * T;
    const Index N = NV + static_cast<Index>(p.nccd) * K;

    // -- assembly -------------------------------------------------------------------------------
    const StarSums st = star_sums(p);
    FitResult r;
    r.ccd_data_weight.assign(static_cast<std::size_t>(p.nccd) * K, 0.0);
    for (std::int64_t j = 0; K > 0 && j < p.n; ++j) {
        if (!p.active[j]) continue;
        const double W = st.W[p.star[j]];
        const double keep = W > 0 ? p.w[j] * (1.0 - p.w[j] / W) : 0.0;
        for (int q = 0; q < K; ++q) {
            double g2 = 0.0;
            for (int d = 0; d < D; ++d) g2 += p.G[(j * D + d) * K + q] * p.G[(j * D + d) * K + q];
            r.ccd_data_weight[static_cast<std::size_t>(p.ccd[j]) * K + q] += keep * g2;
        }
    }
    ReducedSystem sys;
    BlockSymbolic sym;
    {
        const VisitRows vr = visit_rows(p);
        // the visit pairs that share stars decide the path: dense A, or its blocks
        auto pairs = visit_pairs(p, vr);
        sym = block_symbolic(p.nvisit, pairs);
        // (the marginal covariances need the dense visit block: asked for up to a few
        // thousand visit parameters only, fit.uncertainty.EXACT_MAX_PARAMS)
        const bool sparse = p.nvisit > 0 && !p.covariance && use_sparse(p.solver, sym);
        sys = zero_system(p, std::move(pairs), sparse);
        add_visit_blocks(sys, p, st, vr);
        add_ccd_terms(sys, p, st, vr);
        add_right_hand_side(sys, p, st, vr);
    }
    add_coefficient_priors(sys, p);
    add_ccd_priors(sys, p);
    add_ccd_gauge(sys, p);
    hold_fixed_parameters(sys, p);

    r.D = D; r.nterms = T; r.nvisit = p.nvisit; r.nccd = p.nccd; r.K = K; r.nstar = p.nstar;
    r.n = p.n;
    r.fill = block_fill(sym);
    r.npairs = static_cast<std::int64_t>(sys.pairs.size()) - p.nvisit;
    const double t1 = now();
    r.t_assemble = t1 - t0;

    // -- solve: x = (visit parameters of visit 0 dims 0..D-1, visit 1, ..., CCD parameters) ----
    Eigen::VectorXd x = Eigen::VectorXd::Zero(N);
    r.status = "ok";
    r.min_pivot = 1.0;
    if (p.covariance) {
        Covariances cv;
        if (marginal_covariances(sys, p.nvisit, p.nccd, cv)) {
            r.visit_cov = std::move(cv.visit);
            r.ccd_cov = std::move(cv.ccd);
            r.cross_cov = std::move(cv.cross);
        }
    }
    {
        Mat xv;
        Eigen::VectorXd c;
        bool ok;
        if (sys.sparse) {
            const std::string mode = p.solver == "simplicial" ? "simplicial" : "sparse";
            ok = solve_reduced_sparse(sys, sym, mode, xv, c, r.min_pivot, r.solver);
        } else {
            r.solver = "dense";
            ok = solve_reduced_system(sys, xv, c, r.min_pivot);
        }
        if (ok) {
            for (int v = 0; v < p.nvisit; ++v)
                for (int d = 0; d < D; ++d)
                    x.segment(static_cast<Index>(v) * D * T + d * T, T) = xv.block(sys.visit_row(v), d, T, 1);
            x.segment(NV, sys.NC) = c;
        } else {
            r.status = "singular";
        }
    }
    r.t_solve = now() - t1;

    // -- back-substitution: stars, residuals, chi2 ----------------------------------------------
    const std::int64_t nstars_used = back_substitute(p, st, x, r);
    r.nparam = (N - sys.nfixed - sys.ngauge) + nstars_used * D;
    return r;
}

}  // namespace mosaicfit
