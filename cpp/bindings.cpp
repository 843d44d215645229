// The Python module mosaicfit._core (and _core_avx2, the same code built for x86-64-v3:
// CMakeLists.txt): conversion and forwarding only (as GalSim's pysrc/ files).
//
// numpy arrays come in as typed C-contiguous arrays (pybind11 converts those of another type
// or layout; the Python wrappers already pass them so, without copies), the numerics run with
// the GIL released, results go out as numpy arrays or as the classes below. Shapes, index
// ranges and values are checked by the Python wrappers that are the only callers
// (mosaicfit.fit.core, mosaicfit.fit.matching, mosaicfit.model.basis, mosaicfit.io.fits,
// mosaicfit.pipeline.apply); nothing here checks them again.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string_view>
#include <vector>

#include "apply.hpp"
#include "basis.hpp"
#include "cards.hpp"
#include "fit.hpp"
#include "kdtree.hpp"
#include "lstsq.hpp"
#include "sip.hpp"

namespace py = pybind11;
using namespace mosaicfit;

namespace {

template <typename T>
using In = py::array_t<T, py::array::c_style | py::array::forcecast>;
template <typename T>
using OptIn = std::optional<In<T>>;   // None: a null pointer
using CArray = In<double>;
// pixels modified in place: exactly float32 and C-contiguous (never a converted copy)
using Pixels = std::optional<py::array_t<float, py::array::c_style>>;

template <typename T>
const T* data_or_null(const OptIn<T>& a) {
    return a ? a->data() : nullptr;
}

template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
    auto* heap = new std::vector<T>(std::move(v));
    py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(static_cast<py::ssize_t>(heap->size()), heap->data(), owner);
}

// A numpy view of a vector of `owner` (a Python object holding it), with the given shape.
py::array_t<double> view(const std::vector<double>& v, std::vector<py::ssize_t> shape,
                         py::handle owner) {
    return py::array_t<double>(std::move(shape), v.data(), owner);
}

// ---- kd-tree (kdtree.hpp); the dimension (2 or 3) is the points' second axis -------------

template <int D>
py::tuple pairs_impl(const CArray& tree_pts, const CArray& query, double radius) {
    std::vector<std::int64_t> iq, it;
    {
        py::gil_scoped_release nogil;
        KdTree<D> tree(tree_pts.data(), tree_pts.shape(0));
        pairs_within(tree, query.data(), query.shape(0), radius, iq, it);
    }
    return py::make_tuple(to_numpy(std::move(iq)), to_numpy(std::move(it)));
}

template <int D>
py::tuple nearest_impl(const CArray& tree_pts, const CArray& query, double radius) {
    const py::ssize_t nq = query.shape(0);
    py::array_t<std::int64_t> idx(nq);
    py::array_t<double> dist(nq);
    std::int64_t* pi = idx.mutable_data();
    double* pd = dist.mutable_data();
    {
        py::gil_scoped_release nogil;
        KdTree<D> tree(tree_pts.data(), tree_pts.shape(0));
        nearest_many(tree, query.data(), nq, radius, pi, pd);
    }
    return py::make_tuple(idx, dist);
}

template <int D>
py::array_t<std::int64_t> fof_impl(const CArray& pts, double radius) {
    std::vector<std::int64_t> label;
    {
        py::gil_scoped_release nogil;
        label = friends_of_friends<D>(pts.data(), pts.shape(0), radius);
    }
    return to_numpy(std::move(label));
}

// ---- the mosaic least squares (fit.hpp) ----------------------------------------------------
// One function taking the typed arrays and returning a FitResult (a py::class_), rather than
// a problem class: every call solves a different problem once, whose arrays are views of the
// caller's numpy arrays for the duration of the call. A problem object would only be built,
// used once and dropped, and would have to keep those arrays alive itself. The result, on the
// other hand, is kept (mosaicfit.fit.core.LeastSquaresSolution views its arrays).
FitResult fit_mosaic(const In<std::int32_t>& star, const In<std::int32_t>& visit,
                     const In<std::int32_t>& ccd, const In<std::uint8_t>& active, const CArray& u,
                     const CArray& v, const CArray& y, const CArray& w, const OptIn<double>& G,
                     const OptIn<double>& prior, const OptIn<double>& prior_w,
                     const OptIn<double>& coef_prior, const OptIn<double>& coef_prior_w,
                     const OptIn<double>& coef_prior_mat, const OptIn<std::uint8_t>& ccd_fixed, const OptIn<double>& ccd_prior,
                     const OptIn<double>& ccd_prior_w, int nvisit, int nccd, int nstar, int D,
                     int K, int order, int basis, bool ccd_sum_zero, const std::string& solver,
                     bool covariance) {
    FitProblem p;
    p.D = D; p.K = K; p.order = order; p.basis = static_cast<Basis>(basis);
    p.nvisit = nvisit; p.nccd = nccd; p.nstar = nstar; p.n = star.size();
    p.ccd_sum_zero = ccd_sum_zero;
    p.covariance = covariance;
    p.solver = solver;
    p.star = star.data(); p.visit = visit.data(); p.ccd = ccd.data(); p.active = active.data();
    p.u = u.data(); p.v = v.data(); p.y = y.data(); p.w = w.data();
    p.G = data_or_null(G);
    p.prior = data_or_null(prior);
    p.prior_w = data_or_null(prior_w);
    p.coef_prior = data_or_null(coef_prior);
    p.coef_prior_w = data_or_null(coef_prior_w);
    p.coef_prior_mat = data_or_null(coef_prior_mat);
    p.ccd_fixed = data_or_null(ccd_fixed);
    p.ccd_prior = data_or_null(ccd_prior);
    p.ccd_prior_w = data_or_null(ccd_prior_w);
    py::gil_scoped_release nogil;
    return solve_mosaic(p);
}

// ---- polynomial basis and small least squares (basis.hpp, lstsq.hpp) ------------------------

// Values and (with `derivatives`) d/du and d/dv, each a rows x cols array, filled by `fill`
// (val, du, dv; the derivatives null without) with the GIL released.
template <typename Fill>
py::tuple values_and_derivatives(py::ssize_t rows, py::ssize_t cols, bool derivatives,
                                 Fill fill) {
    const auto array = [&](bool wanted) {
        return wanted ? py::array_t<double>({rows, cols}) : py::array_t<double>();
    };
    py::array_t<double> val = array(true), du = array(derivatives), dv = array(derivatives);
    double* pv = val.mutable_data();
    double* pu = derivatives ? du.mutable_data() : nullptr;
    double* pd = derivatives ? dv.mutable_data() : nullptr;
    {
        py::gil_scoped_release nogil;
        fill(pv, pu, pd);
    }
    if (derivatives) return py::make_tuple(val, du, dv);
    return py::make_tuple(val);
}

py::tuple basis_array(const CArray& u, const CArray& v, int order, int basis, bool derivatives) {
    const py::ssize_t n = u.size();
    return values_and_derivatives(n, n_terms(order), derivatives,
                                  [&](double* pv, double* pu, double* pd) {
        basis_matrix(static_cast<Basis>(basis), order, u.data(), v.data(), n, pv, pu, pd);
    });
}

py::tuple evaluate_sets_array(const CArray& C, const In<std::int64_t>& g, const CArray& u,
                              const CArray& v, int order, int basis, bool derivatives) {
    const py::ssize_t n = u.size(), D = C.shape(1);
    return values_and_derivatives(D, n, derivatives, [&](double* pv, double* pu, double* pd) {
        evaluate_sets(static_cast<Basis>(basis), order, C.data(), C.shape(0),
                      static_cast<int>(D), g.data(), u.data(), v.data(), n, pv, pu, pd);
    });
}

// M (K, n, p), B (K, n, k) -> X (K, p, k)
py::array_t<double> lstsq_array(const CArray& M, const CArray& B) {
    const py::ssize_t K = M.shape(0), n = M.shape(1), p = M.shape(2), k = B.shape(2);
    py::array_t<double> X({K, p, k});
    double* x = X.mutable_data();
    {
        py::gil_scoped_release nogil;
        lstsq_many(K, M.data(), B.data(), n, p, k, x);
    }
    return X;
}

py::tuple sip_batch_arrays(const CArray& u, const CArray& v, const CArray& dU, const CArray& dV,
                           const CArray& gu, const CArray& gv, int order, int iorder) {
    const py::ssize_t K = u.shape(0), n = u.shape(1), m = gu.shape(1);
    py::array_t<double> ab({K, py::ssize_t(2), py::ssize_t(n_terms(order) - 3)});
    py::array_t<double> apbp({K, py::ssize_t(2), py::ssize_t(n_terms(iorder))});
    double* pa = ab.mutable_data();
    double* pi = apbp.mutable_data();
    {
        py::gil_scoped_release nogil;
        fit_sip_batch(K, n, m, u.data(), v.data(), dU.data(), dV.data(), gu.data(), gv.data(),
                      order, iorder, pa, pi);
    }
    return py::make_tuple(ab, apbp);
}

}  // namespace

#ifndef MOSAICFIT_MODULE
#define MOSAICFIT_MODULE _core
#endif

PYBIND11_MODULE(MOSAICFIT_MODULE, m) {
    m.doc() = "mosaicfit C++ kernels (called through the mosaicfit modules that check their "
              "arguments)";

    // whether this CPU (and its OS) runs x86-64-v3 code: mosaicfit imports _core_avx2 then
    m.def("cpu_runs_x86_64_v3", []() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
        __builtin_cpu_init();
        return __builtin_cpu_supports("x86-64-v3") != 0;
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();   // the features of x86-64-v3 compilers emit for numerics
        return __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
               __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
#else
        return false;
#endif
    });

    m.def("pairs_within", [](const CArray& t, const CArray& q, double r) {
        return t.shape(1) == 2 ? pairs_impl<2>(t, q, r) : pairs_impl<3>(t, q, r);
    }, py::arg("tree_points"), py::arg("query_points"), py::arg("radius"));
    m.def("nearest", [](const CArray& t, const CArray& q, double r) {
        return t.shape(1) == 2 ? nearest_impl<2>(t, q, r) : nearest_impl<3>(t, q, r);
    }, py::arg("tree_points"), py::arg("query_points"), py::arg("radius"));
    m.def("binned_pair_products", [](const CArray& pts, const CArray& res, const CArray& edges) {
        const int nbins = static_cast<int>(edges.shape(0)) - 1;
        py::array_t<std::int64_t> count(std::max(nbins, 0));
        py::array_t<double> sum(std::max(nbins, 0));
        std::int64_t* pc = count.mutable_data();
        double* ps = sum.mutable_data();
        {
            py::gil_scoped_release nogil;
            binned_pair_products(pts.data(), pts.shape(0), res.data(), static_cast<int>(res.shape(1)),
                                 edges.data(), nbins, pc, ps);
        }
        return py::make_tuple(count, sum);
    }, py::arg("points"), py::arg("res"), py::arg("edges"));
    m.def("friends_of_friends", [](const CArray& p, double r) {
        return p.shape(1) == 2 ? fof_impl<2>(p, r) : fof_impl<3>(p, r);
    }, py::arg("points"), py::arg("radius"));

    // module_local: _core and _core_avx2 bind the same C++ types and may both be loaded
    py::class_<FitResult>(m, "FitResult", "The solution of fit_mosaic (cpp/fit.hpp)",
                          py::module_local())
        .def_property_readonly("coef", [](py::object self) {
            const auto& r = self.cast<const FitResult&>();
            return view(r.coef, {r.nvisit, r.D, r.nterms}, self);
        }, "(nvisit, D, nterms) polynomial coefficients")
        .def_property_readonly("dccd", [](py::object self) {
            const auto& r = self.cast<const FitResult&>();
            return view(r.dccd, {r.nccd, r.K}, self);
        }, "(nccd, K) CCD parameters")
        .def_property_readonly("ccd_data_weight", [](py::object self) {
            const auto& r = self.cast<const FitResult&>();
            return view(r.ccd_data_weight, {r.nccd, r.K}, self);
        }, "(nccd, K) the CCD parameters' information from the data, stars eliminated")
        .def_property_readonly("xstar", [](py::object self) {
            const auto& r = self.cast<const FitResult&>();
            return view(r.xstar, {r.nstar, r.D}, self);
        }, "(nstar, D) star values, NaN without data")
        .def_property_readonly("resid", [](py::object self) {
            const auto& r = self.cast<const FitResult&>();
            return view(r.resid, {static_cast<py::ssize_t>(r.n), r.D}, self);
        }, "(n, D) residuals model - star - y")
        .def_property_readonly("visit_cov", [](py::object self) -> py::object {
            const auto& r = self.cast<const FitResult&>();
            if (r.visit_cov.empty()) return py::none();
            return view(r.visit_cov, {r.nvisit, r.D, r.nterms, r.nterms}, self);
        }, "(nvisit, D, nterms, nterms) marginal covariances of the polynomials, or None")
        .def_property_readonly("ccd_cov", [](py::object self) -> py::object {
            const auto& r = self.cast<const FitResult&>();
            if (r.visit_cov.empty()) return py::none();
            return view(r.ccd_cov, {r.nccd, r.K, r.K}, self);
        }, "(nccd, K, K) marginal covariances of the CCD parameters, or None")
        .def_property_readonly("cross_cov", [](py::object self) -> py::object {
            const auto& r = self.cast<const FitResult&>();
            if (r.visit_cov.empty()) return py::none();
            return view(r.cross_cov, {r.nvisit, r.nccd, r.D, r.nterms, r.K}, self);
        }, "(nvisit, nccd, D, nterms, K) visit x CCD covariances, or None")
        .def_readonly("chi2", &FitResult::chi2)
        .def_readonly("chi2_det", &FitResult::chi2_det)
        .def_readonly("nobs", &FitResult::nobs)
        .def_readonly("nobs_det", &FitResult::nobs_det)
        .def_readonly("nparam", &FitResult::nparam)
        .def_readonly("status", &FitResult::status)
        .def_readonly("rcond", &FitResult::min_pivot)
        .def_readonly("solver", &FitResult::solver)
        .def_readonly("fill", &FitResult::fill)
        .def_readonly("npairs", &FitResult::npairs)
        .def_readonly("t_assemble", &FitResult::t_assemble)
        .def_readonly("t_solve", &FitResult::t_solve);
    m.def("fit_mosaic", &fit_mosaic, py::arg("star"), py::arg("visit"), py::arg("ccd"),
          py::arg("active"), py::arg("u"), py::arg("v"), py::arg("y"), py::arg("w"), py::arg("G"),
          py::arg("prior"), py::arg("prior_w"), py::arg("coef_prior"), py::arg("coef_prior_w"),
          py::arg("coef_prior_mat"), py::arg("ccd_fixed"), py::arg("ccd_prior"), py::arg("ccd_prior_w"), py::arg("nvisit"), py::arg("nccd"), py::arg("nstar"), py::arg("D"),
          py::arg("K"), py::arg("order"), py::arg("basis"), py::arg("ccd_sum_zero"),
          py::arg("solver") = "auto", py::arg("covariance") = false);

    m.def("basis", &basis_array, py::arg("u"), py::arg("v"), py::arg("order"), py::arg("basis"),
          py::arg("derivatives") = false);
    m.def("evaluate_sets", &evaluate_sets_array, py::arg("C"), py::arg("g"), py::arg("u"),
          py::arg("v"), py::arg("order"), py::arg("basis"), py::arg("derivatives") = false);
    m.def("lstsq", &lstsq_array, py::arg("M"), py::arg("B"));
    m.def("fit_sip_batch", &sip_batch_arrays, py::arg("u"), py::arg("v"), py::arg("dU"),
          py::arg("dV"), py::arg("gu"), py::arg("gv"), py::arg("order"), py::arg("iorder"));
    m.def("float_card_images", [](const std::vector<std::string>& keys, const CArray& values) {
        return float_card_images(keys, values.data());
    }, py::arg("keys"), py::arg("values"));
    // (cards [(keyword, value, comment)], number of cards up to END) or None (cards.hpp);
    // `undefined` is the value of a card without one (astropy's UNDEFINED)
    m.def("parse_cards", [](std::string_view text, py::object undefined) -> py::object {
        std::vector<ParsedCard> cards;
        std::size_t n = 0;
        bool ok;
        {
            py::gil_scoped_release release;
            ok = parse_cards(text.data(), text.size(), cards, n);
        }
        if (!ok) return py::none();
        py::list out(cards.size());
        for (std::size_t i = 0; i < cards.size(); ++i) {
            const ParsedCard& c = cards[i];
            py::object v;
            switch (c.kind) {
                case ParsedCard::Commentary:
                case ParsedCard::String: v = py::str(c.text); break;
                case ParsedCard::Bool: v = py::bool_(c.flag); break;
                case ParsedCard::Int:
                    v = py::reinterpret_steal<py::object>(
                        PyLong_FromString(c.text.c_str(), nullptr, 10));
                    if (!v) throw py::error_already_set();
                    break;
                case ParsedCard::Float: v = py::float_(c.x); break;
                case ParsedCard::Complex:
                    v = py::reinterpret_steal<py::object>(PyComplex_FromDoubles(c.x, c.y));
                    break;
                default: v = undefined;
            }
            out[i] = py::make_tuple(py::str(c.key), v, py::str(c.comment));
        }
        return py::make_tuple(out, n);
    }, py::arg("text"), py::arg("undefined"));

    // ---- flux correction of a CCD (apply.hpp): parameters built once per CCD -----------------
    py::class_<FluxPoly>(m, "FluxPoly", "meas_mosaic's flux polynomial of a CCD (cpp/apply.hpp)",
                         py::module_local())
        .def(py::init([](const CArray& coeffs, double x0, double y0, double u_max, double v_max,
                         bool chebyshev, int nq, int width, int height) {
            FluxPoly p;
            p.order = static_cast<int>(coeffs.shape(0)) - 1;
            p.c.assign(coeffs.data(), coeffs.data() + coeffs.size());
            p.x0 = x0; p.y0 = y0; p.u_max = u_max; p.v_max = v_max;
            p.chebyshev = chebyshev; p.nq = nq; p.width = width; p.height = height;
            return p;
        }), py::arg("coeffs"), py::arg("x0"), py::arg("y0"), py::arg("u_max"), py::arg("v_max"),
            py::arg("chebyshev"), py::arg("nq"), py::arg("width"), py::arg("height"))
        .def_readonly("order", &FluxPoly::order);
    py::class_<SipArea>(m, "SipArea", "The SIP distortion's pixel area of a CCD (cpp/apply.hpp)",
                        py::module_local())
        .def(py::init([](const CArray& a, const CArray& b, double crpix1, double crpix2) {
            SipArea s;
            s.order = static_cast<int>(a.shape(0)) - 1;
            s.a.assign(a.data(), a.data() + a.size());
            s.b.assign(b.data(), b.data() + b.size());
            s.crpix1 = crpix1; s.crpix2 = crpix2;
            return s;
        }), py::arg("a"), py::arg("b"), py::arg("crpix1"), py::arg("crpix2"))
        .def_readonly("order", &SipArea::order);

    m.def("flux_correction_image", [](const FluxPoly& p, const SipArea& s, int nx, int ny,
                                      bool interpolate, int interp_length, int threads) {
        py::array_t<double> out({static_cast<py::ssize_t>(ny), static_cast<py::ssize_t>(nx)});
        double* o = out.mutable_data();
        const ApplyOptions opt{interpolate, interp_length, threads};
        {
            py::gil_scoped_release nogil;
            correction_image(p, s, nx, ny, o, opt);
        }
        return out;
    }, py::arg("fcr"), py::arg("sip"), py::arg("nx"), py::arg("ny"), py::arg("interpolate") = false,
       py::arg("interp_length") = 100, py::arg("threads") = 0);
    m.def("apply_flux_correction", [](const FluxPoly& p, const SipArea& s, Pixels image,
                                      Pixels variance, bool interpolate, int interp_length,
                                      int threads) {
        const Pixels& ref = image ? image : variance;
        if (!ref) return;
        const int ny = static_cast<int>(ref->shape(0)), nx = static_cast<int>(ref->shape(1));
        float* im = image ? image->mutable_data() : nullptr;
        float* va = variance ? variance->mutable_data() : nullptr;
        const ApplyOptions opt{interpolate, interp_length, threads};
        py::gil_scoped_release nogil;
        apply_correction(p, s, nx, ny, im, va, opt);
    }, py::arg("fcr"), py::arg("sip"), py::arg("image").noconvert(),
       py::arg("variance").noconvert(), py::arg("interpolate") = false,
       py::arg("interp_length") = 100, py::arg("threads") = 0);
    m.def("flux_correction_points", [](const FluxPoly& p, const SipArea& s, const CArray& x,
                                       const CArray& y, int threads) {
        const py::ssize_t n = x.size();
        py::array_t<double> out(n);
        double* o = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            correction_points(p, s, x.data(), y.data(), n, o, threads);
        }
        return out;
    }, py::arg("fcr"), py::arg("sip"), py::arg("x"), py::arg("y"), py::arg("threads") = 0);
}
