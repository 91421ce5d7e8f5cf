// Bindings for cpp/cuda: whether CUDA is built and usable, and the device copies of the
// indexes that pylocalize/index's faces search with device="cuda". Without the CUDA build
// only cuda_built, cuda_device_count and has_cuda exist.
#include "common.h"

#ifdef PYLOCALIZE_WITH_CUDA
#include <memory>

#include "cuda/gpu_index.h"
#include "pylocalize/cann/cann_index.h"
#include "pylocalize/hamming/binary_index.h"
#include "pylocalize/hamming/multibit.h"
#include "pylocalize/util/threads.h"
#endif

namespace pylocalize {
namespace bindings {

#ifdef PYLOCALIZE_WITH_CUDA
// Defined in hamming.cc: MultiBitIndex.search with its candidates found by `scan`.
py::tuple SearchMultiBit(const MultiBitIndex& self, const py::object& query_codes, int64_t k,
                         const py::object& query_vectors, int64_t rerank, int64_t candidates,
                         const MultiBitIndex::KeyScan* scan);

namespace {

// Refuses a device ordinal this machine does not have, naming the ones it has.
int CheckDevice(int device) {
  const int n = gpu::DeviceCount();
  PYL_CHECK(n > 0, "no usable CUDA device (pylocalize.has_cuda() is False): search on the CPU (device='cpu')");
  PYL_CHECK(device >= 0 && device < n, "CUDA device ", device, " does not exist: this machine has devices 0..", n - 1);
  return device;
}

void BindDeviceIndexes(py::module_& m) {
  py::class_<gpu::BinaryCodes>(m, "GpuBinaryCodes")
      .def(py::init([](const BinaryIndex& index, int device) {
             CheckDevice(device);
             ReleaseGil release;
             const std::vector<uint8_t> codes = index.Codes();
             const std::vector<int64_t> ids = index.Ids();
             return std::make_unique<gpu::BinaryCodes>(codes.data(), ids.data(), static_cast<int64_t>(ids.size()),
                                                       index.nbits(), device);
           }),
           py::arg("index"), py::arg("device") = 0)
      .def_property_readonly("ntotal", &gpu::BinaryCodes::ntotal)
      .def(
          "search",
          [](const gpu::BinaryCodes& self, const py::object& queries, int64_t k, int64_t code_size) {
            auto q = CheckArray<uint8_t>(queries, "queries", 2, code_size);
            PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
            const int64_t nq = q.shape(0);
            py::array_t<int32_t> d({nq, k});
            py::array_t<int64_t> i({nq, k});
            int32_t* dp = d.mutable_data();
            int64_t* ip = i.mutable_data();
            {
              ReleaseGil release;
              self.Search(q.data(), nq, k, dp, ip);
            }
            return py::make_tuple(d, i);
          },
          py::arg("queries"), py::arg("k"), py::arg("code_size"))
      .def(
          "range_search",
          [](const gpu::BinaryCodes& self, const py::object& queries, int32_t radius, int64_t code_size) {
            auto q = CheckArray<uint8_t>(queries, "queries", 2, code_size);
            hamming::RangeResult r;
            {
              ReleaseGil release;
              r = self.RangeSearch(q.data(), q.shape(0), radius);
            }
            const py::ssize_t nl = static_cast<py::ssize_t>(r.lims.size());
            const py::ssize_t total = static_cast<py::ssize_t>(r.ids.size());
            return py::make_tuple(MoveArray(std::move(r.lims), {nl}), MoveArray(std::move(r.distances), {total}),
                                  MoveArray(std::move(r.ids), {total}));
          },
          py::arg("queries"), py::arg("radius"), py::arg("code_size"));

  py::class_<gpu::SdcCodes>(m, "GpuSdcCodes")
      .def(py::init([](const MultiBitIndex& index, int device) {
             CheckDevice(device);
             ReleaseGil release;
             const MultiBitIndex::Rows rows = index.ExportRows();
             const std::pair<float, float> ab = index.SdcConstants();
             return std::make_unique<gpu::SdcCodes>(rows.words.data(), rows.ids.data(), rows.inv_norms.data(),
                                                    static_cast<int64_t>(rows.ids.size()), index.bits_per_dim(),
                                                    rows.words_per_plane, ab.first, ab.second, device);
           }),
           py::arg("index"), py::arg("device") = 0)
      .def(
          "search",
          [](const gpu::SdcCodes& self, const MultiBitIndex& index, const py::object& query_codes, int64_t k,
             const py::object& query_vectors, int64_t rerank, int64_t candidates) {
            const MultiBitIndex::KeyScan scan = [&self](const uint64_t* qw, int64_t nq, int64_t kc,
                                                        const int32_t* bounds, bool by_position, float* keys,
                                                        int64_t* labels) {
              self.SearchKeys(qw, nq, kc, bounds, by_position, keys, labels);
            };
            return SearchMultiBit(index, query_codes, k, query_vectors, rerank, candidates, &scan);
          },
          py::arg("index"), py::arg("query_codes"), py::arg("k"), py::arg("query_vectors") = py::none(),
          py::arg("rerank") = 0, py::arg("candidates") = 0);

  py::class_<gpu::FloatRows>(m, "GpuFloatRows")
      .def(py::init([](const py::object& rows, int device) {
             CheckDevice(device);
             const bool bytes = py::isinstance<py::array>(rows) &&
                                py::reinterpret_borrow<py::array>(rows).dtype().equal(py::dtype::of<uint8_t>());
             if (bytes) {
               auto a = CheckArray<uint8_t>(rows, "rows", 2);
               ReleaseGil release;
               return std::make_unique<gpu::FloatRows>(a.data(), 1, a.shape(0), a.shape(1), device);
             }
             auto a = CheckArray<float>(rows, "rows", 2);
             for (int64_t i = 0; i < a.size(); ++i) PYL_CHECK(std::isfinite(a.data()[i]), "rows contain NaN or Inf");
             ReleaseGil release;
             return std::make_unique<gpu::FloatRows>(a.data(), 4, a.shape(0), a.shape(1), device);
           }),
           py::arg("rows"), py::arg("device") = 0)
      .def(
          "search",
          [](const gpu::FloatRows& self, const py::object& x, int64_t k, const std::string& metric, int64_t dim) {
            PYL_CHECK(metric == "l2" || metric == "ip", "metric must be 'l2' or 'ip', got '", metric, "'");
            auto a = CheckArray<float>(x, "x", 2, dim);
            for (int64_t i = 0; i < a.size(); ++i) PYL_CHECK(std::isfinite(a.data()[i]), "x contains NaN or Inf");
            const int64_t n = a.shape(0);
            py::array_t<float> d({n, k});
            py::array_t<int64_t> l({n, k});
            float* dp = d.mutable_data();
            int64_t* lp = l.mutable_data();
            {
              ReleaseGil release;
              self.Search(a.data(), n, k, metric == "ip", dp, lp);
            }
            return py::make_tuple(l, d);
          },
          py::arg("x"), py::arg("k"), py::arg("metric"), py::arg("dim"));

  py::class_<gpu::CannExact>(m, "GpuCannExact")
      .def(py::init([](const CannIndex& index, int device) {
             CheckDevice(device);
             ReleaseGil release;
             return std::make_unique<gpu::CannExact>(index.GetExactLayout(), index.dim(), device);
           }),
           py::arg("index"), py::arg("device") = 0)
      .def(
          "is_current",
          [](const gpu::CannExact& self, const CannIndex& index) {
            ReleaseGil release;
            return index.GetExactLayout().get() == self.layout();
          },
          py::arg("index"))
      .def(
          "search",
          [](const gpu::CannExact& self, const py::object& queries, int64_t k, const CannKernel& kernel, int64_t dim) {
            auto q = CheckArray<float>(queries, "query descriptors", 2, dim);
            PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
            py::array_t<float> s(k);
            py::array_t<int64_t> i(k);
            float* sp = s.mutable_data();
            int64_t* ip = i.mutable_data();
            {
              ReleaseGil release;
              self.Search(q.data(), q.shape(0), k, kernel, sp, ip);
            }
            return py::make_tuple(s, i);
          },
          py::arg("queries"), py::arg("k"), py::arg("kernel"), py::arg("dim"));

  py::class_<gpu::CannIvf>(m, "GpuCannIvf")
      .def(py::init([](const CannIndex& index, int device) {
             CheckDevice(device);
             ReleaseGil release;
             return std::make_unique<gpu::CannIvf>(index.GetIvfLayout(GetNumThreads()), index.dim(), device);
           }),
           py::arg("index"), py::arg("device") = 0)
      .def(
          "is_current",
          [](const gpu::CannIvf& self, const CannIndex& index) {
            ReleaseGil release;
            return index.GetIvfLayout(GetNumThreads()).get() == self.layout();
          },
          py::arg("index"))
      .def(
          "search",
          [](const gpu::CannIvf& self, const py::object& queries, int64_t k, const CannKernel& kernel, int64_t nprobe,
             int64_t dim) {
            auto q = CheckArray<float>(queries, "query descriptors", 2, dim);
            PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
            py::array_t<float> s(k);
            py::array_t<int64_t> i(k);
            float* sp = s.mutable_data();
            int64_t* ip = i.mutable_data();
            {
              ReleaseGil release;
              self.Search(q.data(), q.shape(0), k, kernel, nprobe, sp, ip);
            }
            return py::make_tuple(s, i);
          },
          py::arg("queries"), py::arg("k"), py::arg("kernel"), py::arg("nprobe"), py::arg("dim"));
}

}  // namespace
#endif  // PYLOCALIZE_WITH_CUDA

void BindCuda(py::module_& m) {
  m.def(
      "cuda_built",
      [] {
#ifdef PYLOCALIZE_WITH_CUDA
        return true;
#else
        return false;
#endif
      },
      "Whether this build has the CUDA kernels (-DPYLOCALIZE_CUDA=ON).");
  m.def(
      "cuda_device_count",
      [] {
#ifdef PYLOCALIZE_WITH_CUDA
        return gpu::DeviceCount();
#else
        return 0;
#endif
      },
      "CUDA devices usable now (0 without the CUDA build, a driver or a device).");
  m.def(
      "has_cuda",
      [] {
#ifdef PYLOCALIZE_WITH_CUDA
        return gpu::DeviceCount() > 0;
#else
        return false;
#endif
      },
      "Whether the CUDA kernels are built and a CUDA device is usable.");
#ifdef PYLOCALIZE_WITH_CUDA
  BindDeviceIndexes(m);
#endif
}

}  // namespace bindings
}  // namespace pylocalize
