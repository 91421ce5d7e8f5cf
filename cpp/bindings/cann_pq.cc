// Bindings for the compressed CANN index (cpp/pylocalize/cann/cann_pq.h) and its product
// quantizer (cpp/pylocalize/pq/product_quantizer.h).
#include "pylocalize/cann/cann_pq.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <mutex>
#include <shared_mutex>

#include "common.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace bindings {
namespace {

using namespace pybind11::literals;

// The quantizer with the lock its Python face needs: calls run without the GIL (so Ctrl-C
// stops a long train), and train must not race an encode from another thread.
struct LockedQuantizer {
  LockedQuantizer(int64_t dim, int64_t m) : pq(dim, m) {}
  pq::ProductQuantizer pq;
  mutable std::shared_mutex mutex;
};

// Rows of uint8 or float32 (n x dim): (data, element, n), `keep` holding the array.
const void* Rows(const py::object& obj, const char* name, int64_t dim, knn::Element* element, int64_t* n,
                 py::array* keep) {
  PYL_CHECK(py::isinstance<py::array>(obj), name, " must be a numpy array of uint8 or float32");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (a.dtype().equal(py::dtype::of<uint8_t>())) {
    auto u = CheckArray<uint8_t>(obj, name, 2, dim);
    *element = knn::Element::kUInt8;
    *n = u.shape(0);
    *keep = u;
    return u.data();
  }
  PYL_CHECK(a.dtype().equal(py::dtype::of<float>()), name, " must be float32 or uint8, got ",
            std::string(py::str(a.dtype())), "; convert with .astype(np.float32)");
  auto f = CheckArray<float>(obj, name, 2, dim);
  *element = knn::Element::kFloat32;
  *n = f.shape(0);
  *keep = f;
  return f.data();
}

// Query rows as float32 (uint8 widened): the searches and tables take floats.
std::vector<float> FloatRows(const py::object& obj, const char* name, int64_t dim, int64_t* n) {
  knn::Element element;
  py::array keep;
  const void* data = Rows(obj, name, dim, &element, n, &keep);
  std::vector<float> out(static_cast<size_t>(*n * dim));
  pq::RowsToFloat(data, element, dim, 0, *n, out.data());
  return out;
}

void BindQuantizer(py::class_<LockedQuantizer>& cls) {
  cls.def(py::init<int64_t, int64_t>(), py::arg("dim"), py::arg("m"))
      .def_property_readonly("dim", [](const LockedQuantizer& self) { return self.pq.dim(); })
      .def_property_readonly("m", [](const LockedQuantizer& self) { return self.pq.m(); })
      .def_property_readonly("is_trained",
                             [](const LockedQuantizer& self) {
                               ReleaseGil release(/*poll_interrupts=*/false);
                               std::shared_lock<std::shared_mutex> lock(self.mutex);
                               return self.pq.is_trained();
                             })
      .def(
          "train",
          [](LockedQuantizer& self, const py::object& x, int iterations, uint64_t seed,
             int64_t max_points_per_centroid) {
            auto a = CheckArray<float>(x, "x", 2, self.pq.dim());
            ReleaseGil release;
            std::unique_lock<std::shared_mutex> lock(self.mutex);
            self.pq.Train(a.data(), a.shape(0), pq::TrainParams{iterations, seed, max_points_per_centroid},
                          GetNumThreads());
          },
          py::arg("x"), py::arg("iterations"), py::arg("seed"), py::arg("max_points_per_centroid"));
}

// Codes in and out, and the ADC tables.
void BindQuantizerCodes(py::class_<LockedQuantizer>& cls) {
  cls.def(
         "encode",
         [](const LockedQuantizer& self, const py::object& x) {
           knn::Element element;
           int64_t n;
           py::array keep;
           const void* data = Rows(x, "x", self.pq.dim(), &element, &n, &keep);
           py::array_t<uint8_t> codes({n, self.pq.m()});
           uint8_t* out = codes.mutable_data();
           ReleaseGil release;
           std::shared_lock<std::shared_mutex> lock(self.mutex);
           self.pq.EncodeRows(data, element, n, out, GetNumThreads());
           return codes;
         },
         py::arg("x"))
      .def(
          "decode",
          [](const LockedQuantizer& self, const py::object& codes) {
            auto c = CheckArray<uint8_t>(codes, "codes", 2, self.pq.m());
            py::array_t<float> x({c.shape(0), static_cast<py::ssize_t>(self.pq.dim())});
            float* out = x.mutable_data();
            ReleaseGil release;
            std::shared_lock<std::shared_mutex> lock(self.mutex);
            self.pq.Decode(c.data(), c.shape(0), out);
            return x;
          },
          py::arg("codes"))
      .def(
          "distance_tables",
          [](const LockedQuantizer& self, const py::object& x) {
            int64_t n;
            std::vector<float> rows = FloatRows(x, "x", self.pq.dim(), &n);
            py::array_t<float> tables({n, self.pq.m(), pq::kCentroids});
            float* out = tables.mutable_data();
            ReleaseGil release;
            std::shared_lock<std::shared_mutex> lock(self.mutex);
            self.pq.DistanceTables(rows.data(), n, out);
            return tables;
          },
          py::arg("x"))
      .def_property_readonly("codebooks", [](const LockedQuantizer& self) {
        std::vector<float> books;
        {
          ReleaseGil release(/*poll_interrupts=*/false);
          std::shared_lock<std::shared_mutex> lock(self.mutex);
          PYL_CHECK(self.pq.is_trained(), "the product quantizer has no codebooks before train()");
          books = self.pq.codebooks();
        }
        return MoveArray(std::move(books), {self.pq.m(), pq::kCentroids, self.pq.dsub()});
      });
}

py::object OptionsDict(const std::optional<CannPqSearchOptions>& o) {
  if (!o.has_value()) return py::none();
  const CannKernel& k = o->kernel;
  return py::dict("nprobe"_a = o->nprobe, "kernel"_a = k.type == CannKernelType::kCann ? "cann" : "gaussian",
                  "p0"_a = k.p0, "p1"_a = k.p1, "sigma"_a = k.sigma);
}

// Sizes, training and features in.
void BindBuild(py::class_<CannPqIndex>& cls) {
  cls.def_property_readonly("dim", &CannPqIndex::dim)
      .def_property_readonly("m", &CannPqIndex::m)
      .def_property_readonly("by_residual", &CannPqIndex::by_residual)
      .def_property_readonly("ntotal", WithoutGil(&CannPqIndex::ntotal))
      .def_property_readonly("num_images", WithoutGil(&CannPqIndex::num_images))
      .def_property_readonly("nlist", WithoutGil(&CannPqIndex::nlist))
      .def_property_readonly("is_trained", WithoutGil(&CannPqIndex::is_trained))
      .def_property_readonly("memory_bytes", WithoutGil(&CannPqIndex::MemoryBytes))
      .def_property_readonly("quantization_error", WithoutGil(&CannPqIndex::quantization_error))
      .def(
          "train",
          [](CannPqIndex& self, const py::object& x, int64_t nlist, int iterations, uint64_t seed,
             int64_t max_points_per_list, int pq_iterations, int64_t pq_max_points_per_centroid,
             int64_t max_pq_training_rows) {
            knn::Element element;
            int64_t n;
            py::array keep;
            const void* data = Rows(x, "x", self.dim(), &element, &n, &keep);
            CannPqTrainParams p;
            p.nlist = nlist;
            p.iterations = iterations;
            p.max_points_per_list = max_points_per_list;
            p.pq = pq::TrainParams{pq_iterations, seed, pq_max_points_per_centroid};
            p.max_pq_training_rows = max_pq_training_rows;
            p.seed = seed;
            ReleaseGil release;
            self.Train(data, element, n, p, GetNumThreads());
          },
          py::arg("x"), py::arg("nlist"), py::arg("iterations"), py::arg("seed"), py::arg("max_points_per_list"),
          py::arg("pq_iterations"), py::arg("pq_max_points_per_centroid"), py::arg("max_pq_training_rows"))
      .def(
          "add",
          [](CannPqIndex& self, const py::object& x, const py::object& image_ids) {
            knn::Element element;
            int64_t n;
            py::array keep;
            const void* data = Rows(x, "descriptors", self.dim(), &element, &n, &keep);
            auto ids = CheckArray<int64_t>(image_ids, "image_ids", 1);
            PYL_CHECK(ids.shape(0) == n, "image_ids must have one entry per descriptor: got ", ids.shape(0), " for ",
                      n);
            ReleaseGil release;
            self.Add(data, element, ids.data(), n, GetNumThreads());
          },
          py::arg("descriptors"), py::arg("image_ids"));
}

// Search, the decoded features, the codebooks and the files.
void BindUse(py::class_<CannPqIndex>& cls) {
  cls.def(
         "search",
         [](const CannPqIndex& self, const py::object& queries, int64_t k, const CannKernel& kernel, int64_t nprobe) {
           int64_t nq = 0;
           std::vector<float> rows = FloatRows(queries, "query descriptors", self.dim(), &nq);
           py::array_t<float> scores(std::max<int64_t>(k, 0));
           py::array_t<int64_t> ids(std::max<int64_t>(k, 0));
           float* sp = scores.mutable_data();
           int64_t* ip = ids.mutable_data();
           {
             ReleaseGil release;
             self.Search(CannPqSearchOptions{kernel, nprobe}, rows.data(), nq, k, sp, ip, GetNumThreads());
           }
           return py::make_tuple(scores, ids);
         },
         py::arg("queries"), py::arg("k"), py::arg("kernel"), py::arg("nprobe"))
      .def("reconstruct",
           [](const CannPqIndex& self) {
             std::vector<float> x;
             std::vector<int64_t> ids;
             {
               ReleaseGil release(/*poll_interrupts=*/false);
               self.Reconstruct(&x, &ids);
             }
             const py::ssize_t n = static_cast<py::ssize_t>(ids.size());
             return py::make_tuple(MoveArray(std::move(x), {n, static_cast<py::ssize_t>(self.dim())}),
                                   MoveArray(std::move(ids), {n}));
           })
      .def_property_readonly("centroids",
                             [](const CannPqIndex& self) {
                               std::vector<float> c = WithoutGil(&CannPqIndex::Centroids)(self);
                               const py::ssize_t rows = static_cast<py::ssize_t>(c.size()) / self.dim();
                               return MoveArray(std::move(c), {rows, static_cast<py::ssize_t>(self.dim())});
                             })
      .def_property_readonly("codebooks", [](const CannPqIndex& self) {
        std::vector<float> b = WithoutGil(&CannPqIndex::Codebooks)(self);
        const py::ssize_t m = b.empty() ? 0 : self.m(), dsub = self.dim() / self.m();
        return MoveArray(std::move(b), {m, pq::kCentroids, dsub});
      });
}

void BindFiles(py::class_<CannPqIndex>& cls) {
  cls.def(
         "set_search_options",
         [](CannPqIndex& self, int64_t nprobe, const CannKernel& kernel) {
           ReleaseGil release(/*poll_interrupts=*/false);
           self.SetSearchOptions(CannPqSearchOptions{kernel, nprobe});
         },
         py::arg("nprobe"), py::arg("kernel"))
      .def_property_readonly(
          "search_options",
          [](const CannPqIndex& self) { return OptionsDict(WithoutGil(&CannPqIndex::search_options)(self)); })
      .def("save", &CannPqIndex::Save, py::arg("path"), py::call_guard<ReleaseGil>())
      .def_static("load", &CannPqIndex::Load, py::arg("path"), py::arg("mmap"), py::call_guard<ReleaseGil>())
      .def("serialize",
           [](CannPqIndex& self) {
             std::vector<uint8_t> b;
             {
               ReleaseGil release;
               b = self.Serialize();
             }
             const py::ssize_t n = static_cast<py::ssize_t>(b.size());
             return MoveArray(std::move(b), {n});
           })
      .def_static("deserialize", [](const py::object& data) {
        auto a = CheckArray<uint8_t>(data, "data", 1);
        std::vector<uint8_t> bytes(a.data(), a.data() + a.size());
        ReleaseGil release;
        return CannPqIndex::Deserialize(std::move(bytes));
      });
}

}  // namespace

void BindCannPq(py::module_& m) {
  py::class_<LockedQuantizer> quantizer(m, "ProductQuantizer");
  BindQuantizer(quantizer);
  BindQuantizerCodes(quantizer);
  py::class_<CannPqIndex> cls(m, "CannPqIndex");
  cls.def(py::init<int64_t, int64_t, bool>(), py::arg("dim"), py::arg("m"), py::arg("by_residual"));
  BindBuild(cls);
  BindUse(cls);
  BindFiles(cls);
}

}  // namespace bindings
}  // namespace pylocalize
