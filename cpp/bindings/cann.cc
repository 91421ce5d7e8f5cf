// Bindings for cpp/pylocalize/cann: the CANN image index.
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>

#include "common.h"
#include "pylocalize/cann/cann_index.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace bindings {
namespace {

using namespace pybind11::literals;

// A query feature set as float32 rows (uint8 descriptors are widened); the core checks
// the values.
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
    rows.assign(f.data(), f.data() + f.size());
    *nq = f.shape(0);
  }
  return rows;
}

CannSearchParams MakeParams(const std::string& method, const CannKernel& kernel, int64_t nprobe) {
  CannSearchParams p;
  p.method = CannMethodFromName(method);
  p.kernel = kernel;
  p.nprobe = nprobe;
  return p;
}

CannKernel MakeKernel(const std::string& name, double p0, double p1, double sigma) {
  CannKernel k;
  PYL_CHECK(name == "cann" || name == "gaussian", "kernel must be 'cann' or 'gaussian', got '", name, "'");
  k.type = name == "cann" ? CannKernelType::kCann : CannKernelType::kGaussian;
  k.p0 = p0;
  k.p1 = p1;
  k.sigma = sigma;
  k.Validate();
  return k;
}

const char* KernelName(const CannKernel& k) { return k.type == CannKernelType::kCann ? "cann" : "gaussian"; }

// Descriptors to add, float32 or uint8: (data, element, rows), `keep` holding the array.
const void* AddedRows(const py::object& descriptors, int64_t dim, knn::Element* element, int64_t* n, py::array* keep) {
  PYL_CHECK(py::isinstance<py::array>(descriptors), "descriptors must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(descriptors);
  if (a.dtype().equal(py::dtype::of<uint8_t>())) {
    auto u = CheckArray<uint8_t>(descriptors, "descriptors", 2, dim);
    *element = knn::Element::kUInt8;
    *n = u.shape(0);
    *keep = u;
    return u.data();
  }
  PYL_CHECK(a.dtype().equal(py::dtype::of<float>()), "descriptors must be float32 or uint8, got ",
            std::string(py::str(a.dtype())), "; convert with .astype(np.float32)");
  auto f = CheckArray<float>(descriptors, "descriptors", 2, dim);
  *element = knn::Element::kFloat32;
  *n = f.shape(0);
  *keep = f;
  return f.data();
}

void BindKernel(py::module_& m) {
  py::class_<CannKernel>(m, "CannKernel")
      .def(py::init(&MakeKernel), py::arg("kind") = "cann", py::arg("p0") = 120.0, py::arg("p1") = 0.4592,
           py::arg("sigma") = 60.0)
      .def("__call__", [](const CannKernel& k, double r) { return k(r); })
      .def_property_readonly("cutoff", &CannKernel::Cutoff)
      .def_property_readonly("kind", &KernelName)
      .def_readonly("p0", &CannKernel::p0)
      .def_readonly("p1", &CannKernel::p1)
      .def_readonly("sigma", &CannKernel::sigma);
}

// Features in and out: add, remove_images, reset, image_ids, dtype and the sizes.
void BindFeatures(py::class_<CannIndex>& cls) {
  cls.def_property_readonly("dim", &CannIndex::dim)
      .def_property_readonly("ntotal", WithoutGil(&CannIndex::ntotal))
      .def_property_readonly("num_images", WithoutGil(&CannIndex::num_images))
      .def_property_readonly("dtype",
                             [](const CannIndex& self) -> py::object {
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
            auto ids = CheckArray<int64_t>(image_ids, "image_ids", 1);
            knn::Element element;
            int64_t n;
            py::array keep;
            const void* data = AddedRows(descriptors, self.dim(), &element, &n, &keep);
            PYL_CHECK(ids.shape(0) == n, "image_ids must have one entry per descriptor: got ", ids.shape(0), " for ",
                      n);
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
      .def("image_feature_counts", [](const CannIndex& self) {
        std::vector<int64_t> v = WithoutGil(&CannIndex::ImageFeatureCounts)(self);
        const py::ssize_t n = static_cast<py::ssize_t>(v.size());
        return MoveArray(std::move(v), {n});
      });
}

// The method structures: ivf training and the grid parameters, with their sizes.
void BindStructures(py::class_<CannIndex>& cls) {
  cls.def(
         "train",
         [](CannIndex& self, int64_t nlist, int iterations, uint64_t seed, int64_t max_points_per_list) {
           ReleaseGil release;
           self.Train(nlist, iterations, seed, max_points_per_list, GetNumThreads());
         },
         py::arg("nlist"), py::arg("iterations") = 8, py::arg("seed") = 0, py::arg("max_points_per_list") = 64)
      .def(
          "set_grid_params",
          [](CannIndex& self, int num_grids, int num_radii, int dims, double cell_factor, int64_t max_bin,
             uint64_t seed, double r_max) {
            const cann::GridParams p{num_grids, num_radii, dims, cell_factor, max_bin, seed};
            ReleaseGil release(/*poll_interrupts=*/false);
            self.SetGridParams(p, r_max);
          },
          py::arg("num_grids"), py::arg("num_radii"), py::arg("dims"), py::arg("cell_factor"), py::arg("max_bin"),
          py::arg("seed"), py::arg("r_max"))
      .def_property_readonly("grid_memory_bytes", WithoutGil(&CannIndex::GridMemoryBytes))
      .def_property_readonly("memory_bytes", WithoutGil(&CannIndex::MemoryBytes))
      .def_property_readonly("mapped_bytes", WithoutGil(&CannIndex::MappedBytes))
      .def_property_readonly("is_trained", WithoutGil(&CannIndex::is_trained))
      .def_property_readonly("nlist", WithoutGil(&CannIndex::nlist));
}

// search and search_batch: arrays in and out; the core checks the arguments and threads.
// Outputs are sized max(k, 0) so that a bad k reaches the core's check.
void BindSearch(py::class_<CannIndex>& cls) {
  cls.def(
         "search",
         [](const CannIndex& self, const py::object& queries, int64_t k, const CannKernel& kernel,
            const std::string& method, int64_t nprobe) {
           const CannSearchParams params = MakeParams(method, kernel, nprobe);
           int64_t nq = 0;
           std::vector<float> rows = QueryRows(queries, self.dim(), &nq);
           py::array_t<float> scores(std::max<int64_t>(k, 0));
           py::array_t<int64_t> ids(std::max<int64_t>(k, 0));
           float* sp = scores.mutable_data();
           int64_t* ip = ids.mutable_data();
           {
             ReleaseGil release;
             self.Search(params, rows.data(), nq, k, sp, ip, GetNumThreads());
           }
           return py::make_tuple(scores, ids);
         },
         py::arg("queries"), py::arg("k"), py::arg("kernel"), py::arg("method"), py::arg("nprobe"))
      .def(
          "search_batch",
          [](const CannIndex& self, const py::list& query_sets, int64_t k, const CannKernel& kernel,
             const std::string& method, int64_t nprobe) {
            const CannSearchParams params = MakeParams(method, kernel, nprobe);
            const size_t n = query_sets.size();
            std::vector<std::vector<float>> rows(n);
            std::vector<const float*> ptrs(n);
            std::vector<int64_t> nq(n);
            for (size_t i = 0; i < n; ++i) {
              try {
                rows[i] = QueryRows(query_sets[i], self.dim(), &nq[i]);
              } catch (const std::invalid_argument& e) {
                PYL_CHECK(false, "query set ", i, ": ", e.what());
              }
              ptrs[i] = rows[i].data();
            }
            const int64_t kk = std::max<int64_t>(k, 0);
            py::array_t<float> scores({static_cast<int64_t>(n), kk});
            py::array_t<int64_t> ids({static_cast<int64_t>(n), kk});
            float* sp = scores.mutable_data();
            int64_t* ip = ids.mutable_data();
            {
              ReleaseGil release;
              self.SearchBatch(params, ptrs, nq, k, sp, ip, GetNumThreads());
            }
            return py::make_tuple(scores, ids);
          },
          py::arg("query_sets"), py::arg("k"), py::arg("kernel"), py::arg("method"), py::arg("nprobe"));
}

py::object OptionsDict(const std::optional<CannSearchOptions>& o) {
  if (!o.has_value()) return py::none();
  const cann::GridParams& g = o->grid;
  py::dict grid("num_grids"_a = g.num_grids, "num_radii"_a = g.num_radii, "dims"_a = g.dims,
                "cell_factor"_a = g.cell_factor, "max_bin"_a = g.max_bin, "seed"_a = g.seed);
  const CannKernel& kernel = o->params.kernel;
  return py::dict("method"_a = CannMethodName(o->params.method), "nprobe"_a = o->params.nprobe,
                  "kernel"_a = KernelName(kernel), "p0"_a = kernel.p0, "p1"_a = kernel.p1, "sigma"_a = kernel.sigma,
                  "grid"_a = grid);
}

// The search options stored with the index, and the files that carry them.
void BindOptionsAndFiles(py::class_<CannIndex>& cls) {
  cls.def(
         "set_search_options",
         [](CannIndex& self, const std::string& method, int64_t nprobe, const CannKernel& kernel, int num_grids,
            int num_radii, int dims, double cell_factor, int64_t max_bin, uint64_t seed) {
           CannSearchOptions o;
           o.params = MakeParams(method, kernel, nprobe);
           o.grid = cann::GridParams{num_grids, num_radii, dims, cell_factor, max_bin, seed};
           ReleaseGil release(/*poll_interrupts=*/false);
           self.SetSearchOptions(o);
         },
         py::arg("method"), py::arg("nprobe"), py::arg("kernel"), py::arg("num_grids"), py::arg("num_radii"),
         py::arg("dims"), py::arg("cell_factor"), py::arg("max_bin"), py::arg("seed"))
      .def_property_readonly(
          "search_options",
          [](const CannIndex& self) { return OptionsDict(WithoutGil(&CannIndex::search_options)(self)); })
      .def("save", &CannIndex::Save, py::arg("path"), py::call_guard<ReleaseGil>())
      .def_static("load", &CannIndex::Load, py::arg("path"), py::arg("mmap") = false, py::call_guard<ReleaseGil>());
  BindSerialization(cls);
}

}  // namespace

void BindCann(py::module_& m) {
  BindKernel(m);
  py::class_<CannIndex> cls(m, "CannIndex");
  cls.def(py::init<int64_t>(), py::arg("dim"));
  BindFeatures(cls);
  BindStructures(cls);
  BindSearch(cls);
  BindOptionsAndFiles(cls);
}

}  // namespace bindings
}  // namespace pylocalize
