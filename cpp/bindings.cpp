// Thin bindings: numpy arrays in, numpy arrays out; validation and documentation live in
// the Python wrappers (mosaicfit.matching).
#include <Eigen/Dense>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "apply.hpp"
#include "fit.hpp"
#include "kdtree.hpp"
#include "lstsq.hpp"

namespace py = pybind11;
using namespace mosaicfit;

namespace {
using CArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
    auto* heap = new std::vector<T>(std::move(v));
    py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(static_cast<py::ssize_t>(heap->size()), heap->data(), owner);
}

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
    const std::int64_t nq = query.shape(0);
    std::vector<std::int64_t> idx(nq);
    std::vector<double> dist(nq);
    {
        py::gil_scoped_release nogil;
        KdTree<D> tree(tree_pts.data(), tree_pts.shape(0));
        nearest_many(tree, query.data(), nq, radius, idx.data(), dist.data());
    }
    return py::make_tuple(to_numpy(std::move(idx)), to_numpy(std::move(dist)));
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

template <typename T>
using In = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T>
const T* ptr_or_null(const py::object& o, std::vector<py::object>& keep, py::ssize_t expect, const char* what) {
    if (o.is_none()) return nullptr;
    auto a = In<T>::ensure(o);
    if (!a) throw py::type_error(std::string(what) + ": not convertible to an array");
    if (a.size() != expect)
        throw py::value_error(std::string(what) + ": expected " + std::to_string(expect) + " values, got " + std::to_string(a.size()));
    keep.push_back(a);
    return a.data();
}

py::dict fit_mosaic(py::object star, py::object visit, py::object ccd, py::object active,
                    py::object u, py::object v, py::object y, py::object w, py::object G,
                    py::object prior, py::object prior_w, py::object coef_prior,
                    py::object coef_prior_w, py::object ccd_fixed, int nvisit, int nccd,
                    int nstar, int D, int K, int order, int basis, bool ccd_sum_zero) {
    FitProblem p;
    std::vector<py::object> keep;
    const auto n = In<std::int32_t>::ensure(star).size();
    p.D = D; p.K = K; p.order = order; p.basis = static_cast<Basis>(basis);
    p.nvisit = nvisit; p.nccd = nccd; p.nstar = nstar; p.n = n; p.ccd_sum_zero = ccd_sum_zero;
    const py::ssize_t T = n_terms(order);
    p.star = ptr_or_null<std::int32_t>(star, keep, n, "star");
    p.visit = ptr_or_null<std::int32_t>(visit, keep, n, "visit");
    p.ccd = ptr_or_null<std::int32_t>(ccd, keep, n, "ccd");
    p.active = ptr_or_null<std::uint8_t>(active, keep, n, "active");
    p.u = ptr_or_null<double>(u, keep, n, "u");
    p.v = ptr_or_null<double>(v, keep, n, "v");
    p.y = ptr_or_null<double>(y, keep, n * D, "y");
    p.w = ptr_or_null<double>(w, keep, n, "w");
    p.G = ptr_or_null<double>(G, keep, n * D * K, "G");
    p.prior = ptr_or_null<double>(prior, keep, static_cast<py::ssize_t>(nstar) * D, "prior");
    p.prior_w = ptr_or_null<double>(prior_w, keep, nstar, "prior_w");
    p.coef_prior = ptr_or_null<double>(coef_prior, keep, nvisit * D * T, "coef_prior");
    p.coef_prior_w = ptr_or_null<double>(coef_prior_w, keep, nvisit * D * T, "coef_prior_w");
    p.ccd_fixed = ptr_or_null<std::uint8_t>(ccd_fixed, keep, nccd, "ccd_fixed");
    if (!p.star || !p.visit || !p.ccd || !p.active || !p.u || !p.v || !p.y || !p.w)
        throw py::value_error("fit_mosaic: star, visit, ccd, active, u, v, y and w are required");
    if (K > 0 && !p.G) throw py::value_error("fit_mosaic: G is required when K > 0");
    if (p.prior && !p.prior_w) throw py::value_error("fit_mosaic: prior needs prior_w");
    for (py::ssize_t j = 0; j < n; ++j)
        if (p.star[j] < 0 || p.star[j] >= nstar || p.visit[j] < 0 || p.visit[j] >= nvisit ||
            p.ccd[j] < 0 || p.ccd[j] >= nccd)
            throw py::value_error("fit_mosaic: star/visit/ccd index out of range at row " + std::to_string(j));
    FitResult r;
    {
        py::gil_scoped_release nogil;
        r = solve_mosaic(p);
    }
    py::dict out;
    auto arr = [](std::vector<double>& vec, std::vector<py::ssize_t> shape) {
        auto* heap = new std::vector<double>(std::move(vec));
        py::capsule owner(heap, [](void* q) { delete static_cast<std::vector<double>*>(q); });
        return py::array_t<double>(shape, heap->data(), owner);
    };
    out["coef"] = arr(r.coef, {nvisit, D, T});
    out["dccd"] = arr(r.dccd, {nccd, K});
    out["xstar"] = arr(r.xstar, {nstar, D});
    out["resid"] = arr(r.resid, {n, D});
    out["chi2"] = r.chi2;
    out["chi2_det"] = r.chi2_det;
    out["nobs"] = r.nobs;
    out["nobs_det"] = r.nobs_det;
    out["nparam"] = r.nparam;
    out["status"] = r.status;
    out["rcond"] = r.min_pivot;
    out["t_assemble"] = r.t_assemble;
    out["t_solve"] = r.t_solve;
    return out;
}

py::array_t<double> lstsq_array(const CArray& M, const CArray& B) {
    if (M.ndim() != 2 || B.ndim() != 2 || M.shape(0) != B.shape(0))
        throw py::value_error("lstsq: M (n, p) and B (n, k) with the same n");
    const py::ssize_t n = M.shape(0), p = M.shape(1), k = B.shape(1);
    py::array_t<double> X({p, k});
    double* x = X.mutable_data();
    {
        py::gil_scoped_release nogil;
        lstsq(M.data(), B.data(), n, p, k, x);
    }
    return X;
}

py::tuple basis_eval(const CArray& u, const CArray& v, int order, int basis, bool derivatives) {
    if (u.size() != v.size()) throw py::value_error("u and v differ in length");
    const py::ssize_t n = u.size(), T = n_terms(order);
    py::array_t<double> val({n, T}), du({n, T}), dv({n, T});
    double* pv = val.mutable_data();
    double* pu = derivatives ? du.mutable_data() : nullptr;
    double* pd = derivatives ? dv.mutable_data() : nullptr;
    {
        py::gil_scoped_release nogil;
        basis_matrix(static_cast<Basis>(basis), order, u.data(), v.data(), n, pv, pu, pd);
    }
    if (derivatives) return py::make_tuple(val, du, dv);
    return py::make_tuple(val);
}

int dim_of(const CArray& a, const char* what) {
    if (a.ndim() != 2 || (a.shape(1) != 2 && a.shape(1) != 3))
        throw py::value_error(std::string(what) + " must have shape (n, 2) or (n, 3)");
    return static_cast<int>(a.shape(1));
}

// --- flux correction of a CCD (apply.hpp); the dicts come from mosaicfit.apply._kernel_params
FluxPoly flux_poly_from(const py::dict& d) {
    FluxPoly p;
    auto c = CArray::ensure(d["coeffs"]);
    if (!c || c.ndim() != 2 || c.shape(0) != c.shape(1))
        throw py::value_error("fcr coeffs must be a square 2-D array");
    p.order = static_cast<int>(c.shape(0)) - 1;
    p.c.assign(c.data(), c.data() + c.size());
    p.x0 = d["x0"].cast<double>(); p.y0 = d["y0"].cast<double>();
    p.u_max = d["u_max"].cast<double>(); p.v_max = d["v_max"].cast<double>();
    p.chebyshev = d["chebyshev"].cast<bool>(); p.nq = d["nq"].cast<int>();
    p.width = d["width"].cast<int>(); p.height = d["height"].cast<int>();
    return p;
}

SipArea sip_area_from(const py::dict& d) {
    SipArea s;
    auto a = CArray::ensure(d["a"]);
    auto b = CArray::ensure(d["b"]);
    if (!a || !b || a.ndim() != 2 || a.shape(0) != a.shape(1) || b.ndim() != 2 ||
        b.shape(0) != a.shape(0) || b.shape(1) != a.shape(1))
        throw py::value_error("SIP a and b must be square 2-D arrays of the same size");
    s.order = static_cast<int>(a.shape(0)) - 1;
    s.a.assign(a.data(), a.data() + a.size());
    s.b.assign(b.data(), b.data() + b.size());
    s.crpix1 = d["crpix1"].cast<double>(); s.crpix2 = d["crpix2"].cast<double>();
    return s;
}

void check_kernel_params(const FluxPoly& p, const SipArea& s) {
    const char* err = check_params(p, s);
    if (*err) throw py::value_error(err);
}

float* float_image(const py::object& o, py::ssize_t ny, py::ssize_t nx, const char* what) {
    if (o.is_none()) return nullptr;
    if (!py::isinstance<py::array>(o)) throw py::type_error(std::string(what) + ": not an array");
    auto a = py::reinterpret_borrow<py::array>(o);
    if (!py::isinstance<py::array_t<float>>(o) || !(a.flags() & py::array::c_style) || !a.writeable())
        throw py::type_error(std::string(what) + ": need a writeable C-contiguous float32 array");
    if (a.ndim() != 2 || a.shape(0) != ny || a.shape(1) != nx)
        throw py::value_error(std::string(what) + ": shape differs from the image");
    return static_cast<float*>(a.mutable_data());
}
}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "mosaicfit C++ kernels";
    m.def("pairs_within", [](const CArray& t, const CArray& q, double r) {
        const int d = dim_of(t, "tree points");
        if (dim_of(q, "query points") != d) throw py::value_error("dimension mismatch");
        return d == 2 ? pairs_impl<2>(t, q, r) : pairs_impl<3>(t, q, r);
    }, py::arg("tree_points"), py::arg("query_points"), py::arg("radius"));
    m.def("nearest", [](const CArray& t, const CArray& q, double r) {
        const int d = dim_of(t, "tree points");
        if (dim_of(q, "query points") != d) throw py::value_error("dimension mismatch");
        return d == 2 ? nearest_impl<2>(t, q, r) : nearest_impl<3>(t, q, r);
    }, py::arg("tree_points"), py::arg("query_points"), py::arg("radius"));
    m.def("fit_mosaic", &fit_mosaic, py::arg("star"), py::arg("visit"), py::arg("ccd"),
          py::arg("active"), py::arg("u"), py::arg("v"), py::arg("y"), py::arg("w"), py::arg("G"),
          py::arg("prior"), py::arg("prior_w"), py::arg("coef_prior"), py::arg("coef_prior_w"),
          py::arg("ccd_fixed"), py::arg("nvisit"), py::arg("nccd"), py::arg("nstar"), py::arg("D"),
          py::arg("K"), py::arg("order"), py::arg("basis"), py::arg("ccd_sum_zero"));
    m.def("lstsq", &lstsq_array, py::arg("M"), py::arg("B"));
    m.def("basis", &basis_eval, py::arg("u"), py::arg("v"), py::arg("order"), py::arg("basis"),
          py::arg("derivatives") = false);
    m.def("friends_of_friends", [](const CArray& p, double r) {
        return dim_of(p, "points") == 2 ? fof_impl<2>(p, r) : fof_impl<3>(p, r);
    }, py::arg("points"), py::arg("radius"));
    m.def("flux_correction_image", [](const py::dict& fcr, const py::dict& sip, int nx, int ny,
                                      bool interpolate, int interp_length, int threads) {
        FluxPoly p = flux_poly_from(fcr);
        SipArea s = sip_area_from(sip);
        check_kernel_params(p, s);
        if (nx < 0 || ny < 0) throw py::value_error("negative image size");
        py::array_t<double> out({static_cast<py::ssize_t>(ny), static_cast<py::ssize_t>(nx)});
        double* o = out.mutable_data();
        ApplyOptions opt{interpolate, interp_length, threads};
        {
            py::gil_scoped_release nogil;
            correction_image(p, s, nx, ny, o, opt);
        }
        return out;
    }, py::arg("fcr"), py::arg("sip"), py::arg("nx"), py::arg("ny"), py::arg("interpolate") = false,
       py::arg("interp_length") = 100, py::arg("threads") = 0);
    m.def("apply_flux_correction", [](const py::dict& fcr, const py::dict& sip, py::object image,
                                      py::object variance, bool interpolate, int interp_length,
                                      int threads) {
        FluxPoly p = flux_poly_from(fcr);
        SipArea s = sip_area_from(sip);
        check_kernel_params(p, s);
        py::object ref = image.is_none() ? variance : image;
        if (ref.is_none()) return;
        auto shape = py::reinterpret_borrow<py::array>(ref);
        if (shape.ndim() != 2) throw py::value_error("image must be 2-D");
        const py::ssize_t ny = shape.shape(0), nx = shape.shape(1);
        float* im = float_image(image, ny, nx, "image");
        float* va = float_image(variance, ny, nx, "variance");
        ApplyOptions opt{interpolate, interp_length, threads};
        py::gil_scoped_release nogil;
        apply_correction(p, s, static_cast<int>(nx), static_cast<int>(ny), im, va, opt);
    }, py::arg("fcr"), py::arg("sip"), py::arg("image"), py::arg("variance"),
       py::arg("interpolate") = false, py::arg("interp_length") = 100, py::arg("threads") = 0);
    m.def("flux_correction_points", [](const py::dict& fcr, const py::dict& sip, const CArray& x,
                                       const CArray& y, int threads) {
        FluxPoly p = flux_poly_from(fcr);
        SipArea s = sip_area_from(sip);
        check_kernel_params(p, s);
        if (x.size() != y.size()) throw py::value_error("x and y differ in length");
        const py::ssize_t n = x.size();
        py::array_t<double> out(n);
        double* o = out.mutable_data();
        const double* px = x.data();
        const double* py_ = y.data();
        {
            py::gil_scoped_release nogil;
            correction_points(p, s, px, py_, n, o, threads);
        }
        return out;
    }, py::arg("fcr"), py::arg("sip"), py::arg("x"), py::arg("y"), py::arg("threads") = 0);
}
