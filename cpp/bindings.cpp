// Thin bindings: numpy arrays in, numpy arrays out; validation and documentation live in
// the Python wrappers (mosaicfit.matching).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "kdtree.hpp"

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
        const double* q = query.data();
#pragma omp parallel for schedule(static)
        for (std::int64_t i = 0; i < nq; ++i) idx[i] = tree.nearest(q + i * D, radius, &dist[i]);
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

int dim_of(const CArray& a, const char* what) {
    if (a.ndim() != 2 || (a.shape(1) != 2 && a.shape(1) != 3))
        throw py::value_error(std::string(what) + " must have shape (n, 2) or (n, 3)");
    return static_cast<int>(a.shape(1));
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
    m.def("friends_of_friends", [](const CArray& p, double r) {
        return dim_of(p, "points") == 2 ? fof_impl<2>(p, r) : fof_impl<3>(p, r);
    }, py::arg("points"), py::arg("radius"));
}
