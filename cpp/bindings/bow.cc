// Bindings for cpp/pylocalize/bow: the bag-of-words inverted file.
#include "common.h"
#include "pylocalize/bow/inverted_file.h"

namespace pylocalize {
namespace bindings {

void BindBow(py::module_& m) {
  py::class_<bow::InvertedFile>(m, "InvertedFile")
      .def(py::init<int64_t>(), py::arg("num_words"))
      .def_property_readonly("num_words", &bow::InvertedFile::num_words)
      .def_property_readonly("num_documents", WithoutGil(&bow::InvertedFile::num_documents))
      .def_property_readonly("num_entries", WithoutGil(&bow::InvertedFile::num_entries))
      .def(
          "add",
          [](bow::InvertedFile& self, const py::object& words, const py::object& weights, int64_t doc_id) {
            auto w = CheckArray<int64_t>(words, "words", 1);
            auto v = CheckArray<float>(weights, "weights", 1);
            PYL_CHECK(w.shape(0) == v.shape(0), "words and weights differ in length: ", w.shape(0), " vs ", v.shape(0));
            ReleaseGil release(/*poll_interrupts=*/false);
            self.Add(w.data(), v.data(), w.shape(0), doc_id);
          },
          py::arg("words"), py::arg("weights"), py::arg("doc_id"))
      .def(
          "search",
          [](const bow::InvertedFile& self, const py::object& words, const py::object& weights, int64_t k) {
            auto w = CheckArray<int64_t>(words, "words", 1);
            auto v = CheckArray<float>(weights, "weights", 1);
            PYL_CHECK(w.shape(0) == v.shape(0), "words and weights differ in length: ", w.shape(0), " vs ", v.shape(0));
            PYL_CHECK(k >= 1, "k must be >= 1, got ", k);
            py::array_t<float> scores(k);
            py::array_t<int64_t> ids(k);
            {
              ReleaseGil release;
              self.Search(w.data(), v.data(), w.shape(0), k, scores.mutable_data(), ids.mutable_data());
            }
            return py::make_tuple(scores, ids);
          },
          py::arg("words"), py::arg("weights"), py::arg("k"),
          "The k best documents by dot product: (scores float32 (k,), doc ids int64 (k,)), best first.");
}

}  // namespace bindings
}  // namespace pylocalize
