// Bindings for cpp/pylocalize/cann: the CANN image index.
#include <pybind11/stl.h>

#include "common.h"
#include "pylocalize/cann/cann_index.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace bindings {
namespace {

// A query feature set as float32 rows (uint8 descriptors are widened).
std::vector<float> QueryRows(const py::handle& obj, int64_t dim, int64_t* nq) {
  PYL_CHECK(py::isinstance<py::array>(obj), "query descriptors must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  std::vector<float> rows;
  if (a.dtype().equal(py::dtype::of<uint8_t>())) {
    auto u = CheckArray<uint8_t>(obj, "query descriptors", 2, dim);
    rows.assign(u.data(), u.data() + u.size());
    *nq = u.shape(0);
  } else {
    auto f = CheckArray<float>(obj, "query descriptors", 2, dim);
    for (int64_t i = 0; i < f.size(); ++i) {
      PYL_CHECK(std::isfinite(f.data()[i]), "query descriptors contain NaN or Inf");
    }
    rows.assign(f.data(), f.data() + f.size());
    *nq = f.shape(0);
  }
  return rows;
}

// One query image by the chosen method.
void Search(const CannIndex& index, const std::string& method, const float* q, int64_t nq, int64_t k,
            const CannKernel& kernel, int64_t nprobe, float* scores, int64_t* ids, int threads) {
  if (method == "exact") {
    index.SearchExact(q, nq, k, kernel, scores, ids, threads);
  } else if (method == "ivf") {
    index.SearchIvf(q, nq, k, kernel, nprobe, scores, ids, threads);
  } else if (method == "grid") {
    index.SearchGrid(q, nq, k, kernel, scores, ids, threads);
  } else {
    PYL_CHECK(false, "method must be 'exact', 'ivf' or 'grid', got '", method, "'");
  }
}

CannMethod ParseMethod(const std::string& method) {
  PYL_CHECK(method == "exact" || method == "ivf" || method == "grid",
            "method must be 'exact', 'ivf' or 'grid', got '", method, "'");
  return method == "exact" ? CannMethod::kExact : method == "ivf" ? CannMethod::kIvf : CannMethod::kGrid;
}

CannKernel MakeKernel(const std::string& name, double p0, double p1, double sigma) {
  CannKernel k;
  PYL_CHECK(name == "cann" || name == "gaussian", "kernel must be 'cann' or 'gaussian', got '",
            name, "'");
  k.type = name == "cann" ? CannKernelType::kCann : CannKernelType::kGaussian;
  k.p0 = p0;
  k.p1 = p1;
  k.sigma = sigma;
  k.Validate();
  return k;
}

}  // namespace

void BindCann(py::module_& m) {
  py::class_<CannKernel>(m, "CannKernel")
      .def(py::init(&MakeKernel), py::arg("kind") = "cann", py::arg("p0") = 120.0,
           py::arg("p1") = 0.4592, py::arg("sigma") = 60.0)
      .def("__call__", [](const CannKernel& k, double r) { return k(r); })
      .def_property_readonly("cutoff", &CannKernel::Cutoff);

  py::class_<CannIndex> cann_index(m, "CannIndex");
  cann_index
      .def(py::init<int64_t>(), py::arg("dim"))
      .def_property_readonly("dim", &CannIndex::dim)
      .def_property_readonly("ntotal", WithoutGil(&CannIndex::ntotal))
      .def_property_readonly("num_images", WithoutGil(&CannIndex::num_images))
      .def_property_readonly("dtype", [](const CannIndex& self) -> py::object {
        int element = -1;
        {
          ReleaseGil release(/*poll_interrupts=*/false);
          if (self.has_element()) element = static_cast<int>(self.element());
        }
        if (element < 0) return py::none();
        return py::str(element == static_cast<int>(knn::Element::kUInt8) ? "uint8" : "float32");
      })
      .def(
          "add",
          [](CannIndex& self, const py::object& descriptors, const py::object& image_ids) {
            PYL_CHECK(py::isinstance<py::array>(descriptors), "descriptors must be a numpy array");
            py::array a = py::reinterpret_borrow<py::array>(descriptors);
            auto ids = CheckArray<int64_t>(image_ids, "image_ids", 1);
            const void* data;
            knn::Element element;
            int64_t n;
            py::array keep;
            if (a.dtype().equal(py::dtype::of<uint8_t>())) {
              auto u = CheckArray<uint8_t>(descriptors, "descriptors", 2, self.dim());
              data = u.data();
              n = u.shape(0);
              element = knn::Element::kUInt8;
              keep = u;
            } else {
              PYL_CHECK(a.dtype().equal(py::dtype::of<float>()), "descriptors must be float32 or uint8, got ",
                        std::string(py::str(a.dtype())), "; convert with .astype(np.float32)");
              auto f = CheckArray<float>(descriptors, "descriptors", 2, self.dim());
              data = f.data();
              n = f.shape(0);
              element = knn::Element::kFloat32;
              keep = f;
            }
            PYL_CHECK(ids.shape(0) == n, "image_ids must have one entry per descriptor: got ",
                      ids.shape(0), " for ", n);
            ReleaseGil release;
            self.Add(data, element, ids.data(), n);
          },
          py::arg("descriptors"), py::arg("image_ids"))
      .def(
          "remove_images",
          [](CannIndex& self, const py::object& ids) {
            auto a = CheckArray<int64_t>(ids, "image_ids", 1);
            ReleaseGil release;
            return self.RemoveImages(a.data(), a.shape(0));
          },
          py::arg("image_ids"))
      .def("reset", &CannIndex::Reset, py::call_guard<ReleaseGil>())
      .def("image_ids",
           [](const CannIndex& self) {
             std::vector<int64_t> v = WithoutGil(&CannIndex::ImageIds)(self);
             const py::ssize_t n = static_cast<py::ssize_t>(v.size());
             return MoveArray(std::move(v), {n});
           })
      .def(
          "train",
          [](CannIndex& self, int64_t nlist, int iterations, uint64_t seed, int64_t max_points_per_list) {
            ReleaseGil release;
            self.Train(nlist, iterations, seed, max_points_per_list, GetNumThreads());
          },
          py::arg("nlist"), py::arg("iterations") = 8, py::arg("seed") = 0,
          py::arg("max_points_per_list") = 64)
      .def(
          "set_grid_params",
          [](CannIndex& self, int num_grids, int num_radii, int dims, double cell_factor,
             int64_t max_bin, uint64_t seed, double r_max) {
            cann::GridParams p;
            p.num_grids = num_grids;
            p.num_radii = num_radii;
            p.dims = dims;
            p.cell_factor = cell_factor;
            p.max_bin = max_bin;
            p.seed = seed;
            // The core checks the others against its bounds (cann::ValidateGridParams).
            PYL_CHECK(r_max > 0, "grid r_max must be > 0, got ", r_max);
            ReleaseGil release(/*poll_interrupts=*/false);
            self.SetGridParams(p, r_max);
          },
          py::arg("num_grids"), py::arg("num_radii"), py::arg("dims"), py::arg("cell_factor"),
          py::arg("max_bin"), py::arg("seed"), py::arg("r_max"))
      .def_property_readonly("grid_memory_bytes", WithoutGil(&CannIndex::GridMemoryBytes))
      .def_property_readonly("memory_bytes", WithoutGil(&CannIndex::MemoryBytes))
      .def_property_readonly("is_trained", WithoutGil(&CannIndex::is_trained))
      .def_property_readonly("nlist", WithoutGil(&CannIndex::nlist))
      .def(
          "search",
          [](const CannIndex& self, const py::object& queries, int64_t k, const CannKernel& kernel,
             const std::string& method, int64_t nprobe) {
            PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
            int64_t nq = 0;
            std::vector<float> rows = QueryRows(queries, self.dim(), &nq);
            py::array_t<float> scores(k);
            py::array_t<int64_t> ids(k);
            float* sp = scores.mutable_data();
            int64_t* ip = ids.mutable_data();
            {
              ReleaseGil release;
              Search(self, method, rows.data(), nq, k, kernel, nprobe, sp, ip, GetNumThreads());
            }
            return py::make_tuple(scores, ids);
          },
          py::arg("queries"), py::arg("k"), py::arg("kernel"), py::arg("method"), py::arg("nprobe"))
      .def(
          "search_batch",
          [](const CannIndex& self, const py::list& query_sets, int64_t k, const CannKernel& kernel,
             const std::string& method, int64_t nprobe) {
            PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
            const int64_t n = static_cast<int64_t>(query_sets.size());
            std::vector<std::vector<float>> rows(static_cast<size_t>(n));
            std::vector<int64_t> nq(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) {
              try {
                rows[static_cast<size_t>(i)] = QueryRows(query_sets[static_cast<size_t>(i)], self.dim(), &nq[static_cast<size_t>(i)]);
              } catch (const std::invalid_argument& e) {
                PYL_CHECK(false, "query set ", i, ": ", e.what());
              }
            }
            py::array_t<float> scores({n, k});
            py::array_t<int64_t> ids({n, k});
            float* sp = scores.mutable_data();
            int64_t* ip = ids.mutable_data();
            std::vector<const float*> ptrs;
            for (const auto& r : rows) ptrs.push_back(r.data());
            const CannMethod m = ParseMethod(method);
            {
              ReleaseGil release;
              self.SearchBatch(m, ptrs, nq, k, kernel, nprobe, sp, ip, GetNumThreads());
            }
            return py::make_tuple(scores, ids);
          },
          py::arg("query_sets"), py::arg("k"), py::arg("kernel"), py::arg("method"), py::arg("nprobe"))
      .def("save", &CannIndex::Save, py::arg("path"), py::call_guard<ReleaseGil>())
      .def_static("load", &CannIndex::Load, py::arg("path"), py::call_guard<ReleaseGil>());
  BindSerialization(cann_index);
}

}  // namespace bindings
}  // namespace pylocalize
