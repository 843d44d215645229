// A static kd-tree over points in D dimensions (D = 2 for focal-plane or tangent-plane
// positions, D = 3 for unit vectors on the sky, where chord distance is monotonic in angle).
#pragma once
#include <cstdint>
#include <vector>

namespace mosaicfit {

template <int D>
class KdTree {
public:
    // `pts` is row-major (n x D); the tree keeps its own copy.
    KdTree(const double* pts, std::int64_t n);

    std::int64_t size() const { return n_; }

    // Index of the nearest point within `radius` of `q`, or -1; its distance in *dist.
    std::int64_t nearest(const double* q, double radius, double* dist) const;

    // Appends the indices of all points within `radius` of `q`.
    void within(const double* q, double radius, std::vector<std::int64_t>& out) const;

private:
    struct Node {
        double lo[D], hi[D];      // bounding box of the node's points
        std::int32_t begin, end;  // range in perm_
        std::int32_t left, right; // children, -1 for a leaf
    };
    static constexpr int kLeafSize = 8;

    std::int32_t build(std::int32_t begin, std::int32_t end);
    double box_dist2(const Node& nd, const double* q) const;
    double dist2(std::int64_t i, const double* q) const;

    std::int64_t n_;
    std::vector<double> pts_;
    std::vector<std::int32_t> perm_;
    std::vector<Node> nodes_;
};

// For each of the nq query points (row-major, nq x D): the index of the nearest tree point
// within `radius` or -1 (idx), and its distance or NaN (dist). On OpenMP threads for large nq.
template <int D>
void nearest_many(const KdTree<D>& tree, const double* query, std::int64_t nq, double radius,
                  std::int64_t* idx, double* dist);

// All (i_query, i_tree) pairs closer than `radius`.
template <int D>
void pairs_within(const KdTree<D>& tree, const double* query, std::int64_t nq, double radius,
                  std::vector<std::int64_t>& iq, std::vector<std::int64_t>& it);

// The pairs i < j of `pts` (n x 2, row-major) binned in separation: for bin k, the pairs
// with edges[k] < d <= edges[k + 1] (compared as squares), their number count[k] and the sum
// of the products res_i . res_j (res: n x m, row-major) sum[k]; nbins + 1 increasing edges,
// edges[0] > 0. One pass for the count and all components (a correlation function; the
// turbulence phase measures one per visit on Python threads, so this runs on the caller's
// thread only).
void binned_pair_products(const double* pts, std::int64_t n, const double* res, int m,
                          const double* edges, int nbins, std::int64_t* count, double* sum);

// Friends-of-friends groups: points closer than `radius` are linked, transitively.
// Returns a label per point; labels are 0..ngroups-1 in order of first appearance.
template <int D>
std::vector<std::int64_t> friends_of_friends(const double* pts, std::int64_t n, double radius);

}  // namespace mosaicfit
