// Bindings for cpp/pylocalize/knn: k-means, nearest-centroid assignment and the coarse quantizer.
#include "common.h"
#include "pylocalize/knn/coarse_quantizer.h"
#include "pylocalize/knn/kmeans.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace bindings {

void BindKnn(py::module_& m) {
  m.def(
      "kmeans",
      [](const py::object& x, int64_t k, int iterations, uint64_t seed, int64_t max_points_per_centroid) {
        auto a = CheckArray<float>(x, "x", 2);
        const int64_t n = a.shape(0), d = a.shape(1);
        for (int64_t i = 0; i < a.size(); ++i) {
          PYL_CHECK(std::isfinite(a.data()[i]), "x contains NaN or Inf");
        }
        knn::KMeansResult r;
        std::vector<int64_t> labels(static_cast<size_t>(n));
        {
          ReleaseGil release;
          r = knn::KMeans(a.data(), n, d, k, iterations, seed, max_points_per_centroid, GetNumThreads());
          knn::AssignNearest(r.centroids.data(), k, a.data(), n, d, labels.data(), nullptr, GetNumThreads());
        }
        return py::make_tuple(
            MoveArray(std::move(r.centroids), {static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(d)}),
            MoveArray(std::move(labels), {static_cast<py::ssize_t>(n)}), r.inertia);
      },
      py::arg("x"), py::arg("k"), py::arg("iterations"), py::arg("seed"), py::arg("max_points_per_centroid"));
  m.def(
      "assign",
      [](const py::object& x, const py::object& centroids, int64_t m) {
        // uint8 rows and centroids (descriptors against descriptors) stay uint8
        const bool bytes = py::isinstance<py::array>(centroids) &&
                           py::reinterpret_borrow<py::array>(centroids).dtype().equal(py::dtype::of<uint8_t>());
        const auto run = [&](auto c, auto a) {
          const int64_t n = a.shape(0), k = c.shape(0);
          PYL_CHECK(m >= 1 && m <= k, "m must be in 1..", k, ", got ", m);
          py::array_t<int64_t> labels({n, m});
          py::array_t<float> dist({n, m});
          int64_t* lp = labels.mutable_data();
          float* dp = dist.mutable_data();
          {
            ReleaseGil release;
            knn::AssignNearestM(c.data(), k, a.data(), n, c.shape(1), m, lp, dp, GetNumThreads());
          }
          return py::make_tuple(labels, dist);
        };
        if (bytes) {
          auto c = CheckArray<uint8_t>(centroids, "centroids", 2);
          return run(c, CheckArray<uint8_t>(x, "x", 2, c.shape(1)));
        }
        auto c = CheckArray<float>(centroids, "centroids", 2);
        return run(c, CheckArray<float>(x, "x", 2, c.shape(1)));
      },
      py::arg("x"), py::arg("centroids"), py::arg("m") = 1);
  py::class_<knn::CoarseQuantizer>(m, "CoarseQuantizer")
      .def(py::init([](const py::object& centroids, uint64_t seed, int64_t group_probe) {
             auto c = CheckArray<float>(centroids, "centroids", 2);
             for (int64_t i = 0; i < c.size(); ++i)
               PYL_CHECK(std::isfinite(c.data()[i]), "centroids contain NaN or Inf");
             ReleaseGil release;
             return knn::CoarseQuantizer(std::vector<float>(c.data(), c.data() + c.size()), c.shape(1), seed,
                                         group_probe);
           }),
           py::arg("centroids"), py::arg("seed") = 0, py::arg("group_probe") = knn::kGroupProbe)
      .def_property_readonly("two_level", &knn::CoarseQuantizer::two_level)
      .def_property_readonly("size", &knn::CoarseQuantizer::size)
      .def(
          "assign",
          [](const knn::CoarseQuantizer& q, const py::object& x, int64_t m) {
            auto a = CheckArray<float>(x, "x", 2, q.dim());
            const int64_t n = a.shape(0);
            PYL_CHECK(m >= 1 && m <= q.size(), "m must be in 1..", q.size(), ", got ", m);
            py::array_t<int64_t> labels({n, m});
            py::array_t<float> dist({n, m});
            int64_t* lp = labels.mutable_data();
            float* dp = dist.mutable_data();
            {
              ReleaseGil release;
              q.Assign(a.data(), n, m, lp, dp, GetNumThreads());
            }
            return py::make_tuple(labels, dist);
          },
          py::arg("x"), py::arg("m") = 1);
}

}  // namespace bindings
}  // namespace pylocalize
