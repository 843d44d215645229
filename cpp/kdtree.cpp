#include "kdtree.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace mosaicfit {

template <int D>
KdTree<D>::KdTree(const double* pts, std::int64_t n) : n_(n), pts_(pts, pts + n * D), perm_(n) {
    if (n > std::numeric_limits<std::int32_t>::max()) throw std::length_error("kd-tree: too many points");
    std::iota(perm_.begin(), perm_.end(), 0);
    nodes_.reserve(2 * (n / kLeafSize + 1));
    if (n > 0) build(0, static_cast<std::int32_t>(n));
}

template <int D>
std::int32_t KdTree<D>::build(std::int32_t begin, std::int32_t end) {
    Node nd;
    for (int d = 0; d < D; ++d) {
        nd.lo[d] = std::numeric_limits<double>::infinity();
        nd.hi[d] = -std::numeric_limits<double>::infinity();
    }
    for (std::int32_t k = begin; k < end; ++k) {
        const double* p = &pts_[static_cast<std::size_t>(perm_[k]) * D];
        for (int d = 0; d < D; ++d) {
            nd.lo[d] = std::min(nd.lo[d], p[d]);
            nd.hi[d] = std::max(nd.hi[d], p[d]);
        }
    }
    nd.begin = begin;
    nd.end = end;
    nd.left = nd.right = -1;
    const std::int32_t id = static_cast<std::int32_t>(nodes_.size());
    nodes_.push_back(nd);
    if (end - begin > kLeafSize) {
        int axis = 0;  // split the widest extent at the median
        for (int d = 1; d < D; ++d)
            if (nd.hi[d] - nd.lo[d] > nd.hi[axis] - nd.lo[axis]) axis = d;
        const std::int32_t mid = begin + (end - begin) / 2;
        std::nth_element(perm_.begin() + begin, perm_.begin() + mid, perm_.begin() + end,
                         [&](std::int32_t a, std::int32_t b) {
                             return pts_[static_cast<std::size_t>(a) * D + axis] <
                                    pts_[static_cast<std::size_t>(b) * D + axis];
                         });
        const std::int32_t l = build(begin, mid);
        const std::int32_t r = build(mid, end);
        nodes_[id].left = l;
        nodes_[id].right = r;
    }
    return id;
}

template <int D>
double KdTree<D>::box_dist2(const Node& nd, const double* q) const {
    double s = 0.0;
    for (int d = 0; d < D; ++d) {
        const double e = q[d] < nd.lo[d] ? nd.lo[d] - q[d] : (q[d] > nd.hi[d] ? q[d] - nd.hi[d] : 0.0);
        s += e * e;
    }
    return s;
}

template <int D>
double KdTree<D>::dist2(std::int64_t i, const double* q) const {
    const double* p = &pts_[static_cast<std::size_t>(i) * D];
    double s = 0.0;
    for (int d = 0; d < D; ++d) s += (p[d] - q[d]) * (p[d] - q[d]);
    return s;
}

template <int D>
std::int64_t KdTree<D>::nearest(const double* q, double radius, double* dist) const {
    std::int64_t best = -1;
    double best2 = radius * radius;
    if (nodes_.empty()) return best;
    std::int32_t stack[128];
    int top = 0;
    stack[top++] = 0;
    while (top > 0) {
        const Node& nd = nodes_[stack[--top]];
        if (box_dist2(nd, q) > best2) continue;
        if (nd.left < 0) {
            for (std::int32_t k = nd.begin; k < nd.end; ++k) {
                const double d2 = dist2(perm_[k], q);
                if (d2 <= best2) { best2 = d2; best = perm_[k]; }
            }
        } else {  // visit the nearer child first so the radius shrinks early
            const double dl = box_dist2(nodes_[nd.left], q), dr = box_dist2(nodes_[nd.right], q);
            if (dl < dr) { stack[top++] = nd.right; stack[top++] = nd.left; }
            else { stack[top++] = nd.left; stack[top++] = nd.right; }
        }
    }
    if (dist) *dist = best >= 0 ? std::sqrt(best2) : std::numeric_limits<double>::quiet_NaN();
    return best;
}

template <int D>
void KdTree<D>::within(const double* q, double radius, std::vector<std::int64_t>& out) const {
    if (nodes_.empty()) return;
    const double r2 = radius * radius;
    std::int32_t stack[128];
    int top = 0;
    stack[top++] = 0;
    while (top > 0) {
        const Node& nd = nodes_[stack[--top]];
        if (box_dist2(nd, q) > r2) continue;
        if (nd.left < 0) {
            for (std::int32_t k = nd.begin; k < nd.end; ++k)
                if (dist2(perm_[k], q) <= r2) out.push_back(perm_[k]);
        } else {
            stack[top++] = nd.left;
            stack[top++] = nd.right;
        }
    }
}

template <int D>
void nearest_many(const KdTree<D>& tree, const double* query, std::int64_t nq, double radius,
                  std::int64_t* idx, double* dist) {
#pragma omp parallel for schedule(static) if (nq > 20000)
    for (std::int64_t i = 0; i < nq; ++i) idx[i] = tree.nearest(query + i * D, radius, &dist[i]);
}

template <int D>
void pairs_within(const KdTree<D>& tree, const double* query, std::int64_t nq, double radius,
                  std::vector<std::int64_t>& iq, std::vector<std::int64_t>& it) {
    // Each thread collects its own pairs; they are concatenated in query order afterwards,
    // so the result does not depend on the number of threads.
    int nthreads = 1;
#ifdef _OPENMP
#pragma omp parallel
#pragma omp single
    nthreads = omp_get_num_threads();
#endif
    std::vector<std::vector<std::int64_t>> aq(nthreads), at(nthreads);
    const std::int64_t chunk = (nq + nthreads - 1) / std::max(nthreads, 1);
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
#endif
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        std::vector<std::int64_t> hits;
        const std::int64_t lo = t * chunk, hi = std::min(nq, lo + chunk);
        for (std::int64_t i = lo; i < hi; ++i) {
            hits.clear();
            tree.within(query + i * D, radius, hits);
            std::sort(hits.begin(), hits.end());
            for (auto j : hits) { aq[t].push_back(i); at[t].push_back(j); }
        }
    }
    for (int t = 0; t < nthreads; ++t) {
        iq.insert(iq.end(), aq[t].begin(), aq[t].end());
        it.insert(it.end(), at[t].begin(), at[t].end());
    }
}

namespace {
std::int64_t find_root(std::vector<std::int64_t>& parent, std::int64_t i) {
    while (parent[i] != i) { parent[i] = parent[parent[i]]; i = parent[i]; }
    return i;
}
}  // namespace

template <int D>
std::vector<std::int64_t> friends_of_friends(const double* pts, std::int64_t n, double radius) {
    KdTree<D> tree(pts, n);
    std::vector<std::int64_t> iq, it;
    pairs_within(tree, pts, n, radius, iq, it);
    std::vector<std::int64_t> parent(n);
    std::iota(parent.begin(), parent.end(), 0);
    for (std::size_t k = 0; k < iq.size(); ++k) {
        const std::int64_t a = find_root(parent, iq[k]), b = find_root(parent, it[k]);
        if (a != b) parent[std::max(a, b)] = std::min(a, b);
    }
    std::vector<std::int64_t> label(n, -1), root_label(n, -1);
    std::int64_t next = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t r = find_root(parent, i);
        if (root_label[r] < 0) root_label[r] = next++;
        label[i] = root_label[r];
    }
    return label;
}

void binned_pair_products(const double* pts, std::int64_t n, const double* res, int m,
                          const double* edges, int nbins, std::int64_t* count, double* sum) {
    std::fill(count, count + nbins, 0);
    std::fill(sum, sum + nbins, 0.0);
    if (n < 2 || nbins < 1) return;
    std::vector<double> e2(static_cast<std::size_t>(nbins) + 1);
    for (int k = 0; k <= nbins; ++k) e2[k] = edges[k] * edges[k];
    const KdTree<2> tree(pts, n);
    std::vector<std::int64_t> near;
    for (std::int64_t i = 0; i < n; ++i) {
        near.clear();
        tree.within(pts + 2 * i, edges[nbins], near);
        const double xi = pts[2 * i], yi = pts[2 * i + 1];
        for (const std::int64_t j : near) {
            if (j <= i) continue;
            const double dx = pts[2 * j] - xi, dy = pts[2 * j + 1] - yi;
            const double d2 = dx * dx + dy * dy;
            // the bin k with e2[k] < d2 <= e2[k + 1]
            const int k = static_cast<int>(std::lower_bound(e2.begin(), e2.end(), d2) - e2.begin()) - 1;
            if (k < 0 || k >= nbins) continue;
            double p = 0.0;
            for (int c = 0; c < m; ++c) p += res[i * m + c] * res[j * m + c];
            ++count[k];
            sum[k] += p;
        }
    }
}

template class KdTree<2>;
template class KdTree<3>;
template void nearest_many<2>(const KdTree<2>&, const double*, std::int64_t, double,
                              std::int64_t*, double*);
template void nearest_many<3>(const KdTree<3>&, const double*, std::int64_t, double,
                              std::int64_t*, double*);
template void pairs_within<2>(const KdTree<2>&, const double*, std::int64_t, double,
                              std::vector<std::int64_t>&, std::vector<std::int64_t>&);
template void pairs_within<3>(const KdTree<3>&, const double*, std::int64_t, double,
                              std::vector<std::int64_t>&, std::vector<std::int64_t>&);
template std::vector<std::int64_t> friends_of_friends<2>(const double*, std::int64_t, double);
template std::vector<std::int64_t> friends_of_friends<3>(const double*, std::int64_t, double);

}  // namespace mosaicfit
