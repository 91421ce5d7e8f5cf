// Bindings for cpp/pylocalize/hamming: BinaryIndex, MultiBitIndex, binarize, bit packing.
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>

#include "common.h"
#include "pylocalize/hamming/binary_index.h"
#include "pylocalize/hamming/multibit.h"

namespace pylocalize {
namespace bindings {
namespace {

const int64_t* OptionalIds(const py::object& ids, int64_t n, py::array_t<int64_t>* keep) {
  if (ids.is_none()) return nullptr;
  *keep = CheckArray<int64_t>(ids, "ids", 1);
  PYL_CHECK(keep->shape(0) == n, "ids must have one entry per code: got ", keep->shape(0), " ids for ", n, " codes");
  return keep->data();
}

void CheckFinite(const float* x, int64_t n, const char* name) {
  for (int64_t i = 0; i < n; ++i) {
    PYL_CHECK(std::isfinite(x[i]), name, " contains NaN or Inf (first at flat index ", i,
              "); clean it with np.nan_to_num or drop those rows");
  }
}

py::tuple RangeToPython(hamming::RangeResult&& r) {
  const py::ssize_t nq = static_cast<py::ssize_t>(r.lims.size());
  const py::ssize_t total = static_cast<py::ssize_t>(r.ids.size());
  return py::make_tuple(MoveArray(std::move(r.lims), {nq}), MoveArray(std::move(r.distances), {total}),
                        MoveArray(std::move(r.ids), {total}));
}

// ids(), save/load, serialize/deserialize: the same for every index of the container format.
template <class Index>
void BindIdsAndPersistence(py::class_<Index>& cls) {
  cls.def("ids",
          [](const Index& self) {
            std::vector<int64_t> v = WithoutGil(&Index::Ids)(self);
            const py::ssize_t n = static_cast<py::ssize_t>(v.size());
            return MoveArray(std::move(v), {n});
          })
      .def("save", &Index::Save, py::arg("path"), py::call_guard<ReleaseGil>())
      .def_static("load", &Index::Load, py::arg("path"), py::arg("mmap") = false, py::call_guard<ReleaseGil>());
  BindSerialization(cls);
}

void BindBinaryIndex(py::module_& m) {
  py::class_<BinaryIndex> binary(m, "BinaryIndex");
  binary.def(py::init<int64_t>(), py::arg("nbits"))
      .def_property_readonly("nbits", &BinaryIndex::nbits)
      .def_property_readonly("code_size", &BinaryIndex::code_size)
      .def_property_readonly("ntotal", WithoutGil(&BinaryIndex::ntotal))
      .def(
          "add",
          [](BinaryIndex& self, const py::object& codes, const py::object& ids) {
            auto c = CheckArray<uint8_t>(codes, "codes", 2, self.code_size());
            py::array_t<int64_t> keep;
            const int64_t* idp = OptionalIds(ids, c.shape(0), &keep);
            ReleaseGil release;
            self.Add(c.data(), c.shape(0), idp);
          },
          py::arg("codes"), py::arg("ids") = py::none())
      .def(
          "search",
          [](const BinaryIndex& self, const py::object& queries, int64_t k) {
            auto q = CheckArray<uint8_t>(queries, "queries", 2, self.code_size());
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
          py::arg("queries"), py::arg("k"))
      .def(
          "range_search",
          [](const BinaryIndex& self, const py::object& queries, int32_t radius) {
            auto q = CheckArray<uint8_t>(queries, "queries", 2, self.code_size());
            hamming::RangeResult r;
            {
              ReleaseGil release;
              r = self.RangeSearch(q.data(), q.shape(0), radius);
            }
            return RangeToPython(std::move(r));
          },
          py::arg("queries"), py::arg("radius"))
      .def(
          "remove_ids",
          [](BinaryIndex& self, const py::object& ids) {
            auto a = CheckArray<int64_t>(ids, "ids", 1);
            ReleaseGil release;
            return self.RemoveIds(a.data(), a.shape(0));
          },
          py::arg("ids"))
      .def("reset", &BinaryIndex::Reset, py::call_guard<ReleaseGil>())
      .def("codes", [](const BinaryIndex& self) {
        std::vector<uint8_t> c = WithoutGil(&BinaryIndex::Codes)(self);
        const py::ssize_t n = static_cast<py::ssize_t>(c.size()) / self.code_size();
        return MoveArray(std::move(c), {n, static_cast<py::ssize_t>(self.code_size())});
      });
  BindIdsAndPersistence(binary);
}

}  // namespace

py::tuple SearchMultiBit(const MultiBitIndex& self, const py::object& query_codes, int64_t k,
                         const py::object& query_vectors, int64_t rerank, int64_t candidates,
                         const MultiBitIndex::KeyScan* scan) {
  auto q = CheckArray<uint8_t>(query_codes, "query_codes", 2, self.code_size());
  PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
  const int64_t nq = q.shape(0);
  py::array_t<float> qv;
  const float* qvp = nullptr;
  if (!query_vectors.is_none()) {
    qv = CheckArray<float>(query_vectors, "query_vectors", 2, self.dim());
    PYL_CHECK(qv.shape(0) == nq, "query_vectors must have one row per query code");
    CheckFinite(qv.data(), qv.size(), "query_vectors");
    qvp = qv.data();
  }
  py::array_t<float> s({nq, k});
  py::array_t<int64_t> i({nq, k});
  float* sp = s.mutable_data();
  int64_t* ip = i.mutable_data();
  {
    ReleaseGil release;
    self.Search(q.data(), nq, k, qvp, rerank, candidates, sp, ip, scan);
  }
  return py::make_tuple(s, i);
}

namespace {

void BindMultiBitIndex(py::module_& m) {
  py::class_<MultiBitIndex> multibit(m, "MultiBitIndex");
  multibit.def(py::init<int64_t, int>(), py::arg("dim"), py::arg("bits_per_dim"))
      .def_property_readonly("dim", &MultiBitIndex::dim)
      .def_property_readonly("bits_per_dim", &MultiBitIndex::bits_per_dim)
      .def_property_readonly("code_size", &MultiBitIndex::code_size)
      .def_property_readonly("ntotal", WithoutGil(&MultiBitIndex::ntotal))
      .def_property_readonly("has_vectors", WithoutGil(&MultiBitIndex::has_vectors))
      .def(
          "add",
          [](MultiBitIndex& self, const py::object& codes, const py::object& ids, const py::object& vectors) {
            auto c = CheckArray<uint8_t>(codes, "codes", 2, self.code_size());
            const int64_t n = c.shape(0);
            py::array_t<int64_t> keep;
            const int64_t* idp = OptionalIds(ids, n, &keep);
            py::array_t<float> v;
            const float* vp = nullptr;
            if (!vectors.is_none()) {
              v = CheckArray<float>(vectors, "vectors", 2, self.dim());
              PYL_CHECK(v.shape(0) == n, "vectors must have one row per code: got ", v.shape(0), " rows for ", n,
                        " codes");
              CheckFinite(v.data(), v.size(), "vectors");
              vp = v.data();
            }
            ReleaseGil release;
            self.Add(c.data(), n, idp, vp);
          },
          py::arg("codes"), py::arg("ids") = py::none(), py::arg("vectors") = py::none())
      .def(
          "search",
          [](const MultiBitIndex& self, const py::object& query_codes, int64_t k, const py::object& query_vectors,
             int64_t rerank, int64_t candidates) {
            return SearchMultiBit(self, query_codes, k, query_vectors, rerank, candidates, nullptr);
          },
          py::arg("query_codes"), py::arg("k"), py::arg("query_vectors") = py::none(), py::arg("rerank") = 0,
          py::arg("candidates") = 0)
      .def(
          "remove_ids",
          [](MultiBitIndex& self, const py::object& ids) {
            auto a = CheckArray<int64_t>(ids, "ids", 1);
            ReleaseGil release;
            return self.RemoveIds(a.data(), a.shape(0));
          },
          py::arg("ids"))
      .def("reset", &MultiBitIndex::Reset, py::call_guard<ReleaseGil>());
  BindIdsAndPersistence(multibit);
}

void BindCodeFunctions(py::module_& m) {
  m.def(
      "binarize",
      [](const py::object& x, int bits_per_dim) {
        auto a = CheckArray<float>(x, "x", 2);
        PYL_CHECK(bits_per_dim >= 1 && bits_per_dim <= 4, "bits_per_dim must be 1..4, got ", bits_per_dim);
        const int64_t n = a.shape(0), d = a.shape(1);
        PYL_CHECK(d >= 1, "x must have at least one column");
        CheckFinite(a.data(), a.size(), "x");
        py::array_t<uint8_t> codes({n, bits_per_dim * ((d + 7) / 8)});
        uint8_t* cp = codes.mutable_data();
        {
          ReleaseGil release;
          Binarize(a.data(), n, d, bits_per_dim, cp);
        }
        return codes;
      },
      py::arg("x"), py::arg("bits_per_dim"));
}

}  // namespace

void BindHamming(py::module_& m) {
  BindBinaryIndex(m);
  BindMultiBitIndex(m);
  BindCodeFunctions(m);
}

}  // namespace bindings
}  // namespace pylocalize
