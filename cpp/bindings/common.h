// Helpers shared by the binding files: numpy argument checks whose messages say the fix,
// arrays that keep a C++ owner alive, and the one way to release the GIL.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pylocalize/util/check.h"

namespace pylocalize {
namespace bindings {

namespace py = pybind11;

// Releases the GIL for its lifetime; use it instead of py::gil_scoped_release (and as
// py::call_guard<ReleaseGil>) in every binding.
//
// Lock order (see cpp/pylocalize/util/threads.h): release the GIL before taking an index
// lock, never take the GIL while holding one. So Ctrl-C cannot be polled with
// PyErr_CheckSignals inside the core. Instead, on the Python main thread this scope puts
// a C SIGINT handler in front of Python's: it raises a process-wide flag, then calls
// Python's handler so Python's own pending-signal state stays right. The core's interrupt
// hook reads that flag, and only on a thread inside such a scope: a call from another
// thread is not stopped by Ctrl-C (Python delivers Ctrl-C to the main thread only). When
// the scope ends the GIL is re-acquired and the previous handler restored. The
// Interrupted translator then runs Python's handler (PyErr_CheckSignals), so the
// exception is the one that handler raises (KeyboardInterrupt, or the user's own).
//
// poll_interrupts = false skips the handler swap (a few sigaction calls) for calls that
// never loop, such as ntotal: they only release the GIL so that waiting for the index
// lock cannot deadlock.
class ReleaseGil {
 public:
  ReleaseGil() : ReleaseGil(true) {}
  explicit ReleaseGil(bool poll_interrupts);
  ~ReleaseGil();
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  bool installed_ = false;  // this scope put the SIGINT handler in place
  bool outer_interruptible_ = false;
  std::optional<py::gil_scoped_release> release_;
};

// Called once at module import: records the main thread and installs the core's hook.
void InitInterrupts();

// A getter that takes the index lock, bound with the GIL released (it may wait for a
// long add or train to finish).
template <class Self, class R>
auto WithoutGil(R (Self::*getter)() const) {
  return [getter](const Self& self) {
    ReleaseGil release(/*poll_interrupts=*/false);
    return (self.*getter)();
  };
}

template <typename T>
const char* DTypeName() {
  if (std::is_same<T, uint8_t>::value) return "uint8";
  if (std::is_same<T, int32_t>::value) return "int32";
  if (std::is_same<T, int64_t>::value) return "int64";
  if (std::is_same<T, float>::value) return "float32";
  if (std::is_same<T, double>::value) return "float64";
  return "?";
}

// Returns a typed view of `a` after checking dtype, rank and C-contiguity; ncols >= 0
// also checks the number of columns of a 2-D array.
template <typename T>
py::array_t<T> CheckArray(const py::handle& obj, const char* name, int ndim, int64_t ncols = -1) {
  PYL_CHECK(py::isinstance<py::array>(obj), name, " must be a numpy array of ", DTypeName<T>(), ", got ",
            std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  // Equality, not identity: an array that went through pickle carries an equal dtype
  // object that is not numpy's cached one.
  PYL_CHECK(a.dtype().equal(py::dtype::of<T>()), name, " must have dtype ", DTypeName<T>(), ", got ",
            std::string(py::str(a.dtype())), "; convert with .astype(np.", DTypeName<T>(), ")");
  PYL_CHECK(a.ndim() == ndim, name, " must be ", ndim, "-D, got shape with ", a.ndim(), " dimensions",
            ndim == 2 ? "; use x.reshape(1, -1) for a single row" : "");
  PYL_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous; pass np.ascontiguousarray(", name, ")");
  if (ncols >= 0) {
    PYL_CHECK(a.shape(1) == ncols, name, " must have ", ncols, " columns, got ", a.shape(1));
  }
  return py::array_t<T>(a);
}

// A numpy array over `data` whose lifetime holds `owner`.
template <typename T>
py::array_t<T> ViewArray(std::vector<py::ssize_t> shape, const T* data, std::shared_ptr<const void> owner) {
  auto* holder = new std::shared_ptr<const void>(std::move(owner));
  py::capsule base(holder, [](void* p) { delete static_cast<std::shared_ptr<const void>*>(p); });
  return py::array_t<T>(shape, data, base);
}

// Moves a std::vector into a numpy array without copying.
template <typename T>
py::array_t<T> MoveArray(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule base(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, heap->data(), base);
}

// serialize() -> uint8 array and deserialize(data), for any class with
// std::vector<uint8_t> Serialize() const and static Deserialize(std::vector<uint8_t>).
template <class Index, class... Extra>
void BindSerialization(py::class_<Index, Extra...>& cls) {
  cls.def("serialize",
          [](const Index& self) {
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
        return Index::Deserialize(std::move(bytes));
      });
}

void BindUtil(py::module_& m);
void BindHamming(py::module_& m);
void BindRender(py::module_& m);
void BindImage(py::module_& m);
void BindCann(py::module_& m);
void BindCannPq(py::module_& m);
void BindKnn(py::module_& m);
void BindBow(py::module_& m);
void BindCuda(py::module_& m);

}  // namespace bindings
}  // namespace pylocalize
