// Bindings for cpp/pylocalize/util: SIMD level, threads, errors, the container format.
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>

#include "common.h"
#include "pylocalize/util/atomic_file.h"
#include "pylocalize/util/cpu.h"
#include "pylocalize/util/format.h"
#include "pylocalize/util/threads.h"

#ifndef PYLOCALIZE_VERSION
#define PYLOCALIZE_VERSION "0.0.0"
#endif

namespace pylocalize {
namespace bindings {
namespace {

py::dtype NumpyDType(DType t) {
  switch (t) {
    case DType::kUInt8: return py::dtype::of<uint8_t>();
    case DType::kInt32: return py::dtype::of<int32_t>();
    case DType::kInt64: return py::dtype::of<int64_t>();
    case DType::kFloat32: return py::dtype::of<float>();
    case DType::kUInt64: return py::dtype::of<uint64_t>();
    case DType::kFloat64: return py::dtype::of<double>();
  }
  return py::dtype::of<uint8_t>();
}

DType FromNumpy(const py::dtype& d, const std::string& name) {
  if (d.equal(py::dtype::of<uint8_t>())) return DType::kUInt8;
  if (d.equal(py::dtype::of<int32_t>())) return DType::kInt32;
  if (d.equal(py::dtype::of<int64_t>())) return DType::kInt64;
  if (d.equal(py::dtype::of<float>())) return DType::kFloat32;
  if (d.equal(py::dtype::of<uint64_t>())) return DType::kUInt64;
  if (d.equal(py::dtype::of<double>())) return DType::kFloat64;
  PYL_CHECK(false, "section '", name, "' has dtype ", std::string(py::str(d)),
            "; use uint8, int32, int64, uint64, float32 or float64");
  return DType::kUInt8;
}

py::tuple ContainerToPython(const Container& c) {
  py::dict meta;
  for (const auto& kv : c.meta()) meta[py::str(kv.first)] = kv.second;
  py::dict sections;
  for (const auto& kv : c.sections()) {
    const ArrayView& v = kv.second;
    std::vector<py::ssize_t> shape(v.shape.begin(), v.shape.end());
    auto* holder = new std::shared_ptr<const void>(c.owner());
    py::capsule base(holder, [](void* p) { delete static_cast<std::shared_ptr<const void>*>(p); });
    py::array arr(NumpyDType(v.dtype), shape, {}, v.data, base);
    // Views of a file are read-only: writing through them would corrupt the file's CRC.
    arr.attr("flags").attr("writeable") = false;
    sections[py::str(kv.first)] = arr;
  }
  return py::make_tuple(c.tag(), py::make_tuple(c.major(), c.minor()), meta, sections);
}

// The package version, FormatError and how core exceptions reach Python, and Ctrl-C.
void BindErrors(py::module_& m) {
  m.attr("__version__") = PYLOCALIZE_VERSION;
  static py::exception<FormatError> format_error(m, "FormatError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Interrupted&) {
      // The SIGINT that stopped the call is still pending in Python: run its handler
      // now, so the exception is the one it raises (KeyboardInterrupt, or a user
      // handler's) and no second KeyboardInterrupt follows later.
      if (PyErr_CheckSignals() == 0) PyErr_SetNone(PyExc_KeyboardInterrupt);
    } catch (const FormatError& e) {
      // Lenient decoding: a message must never turn a FormatError into UnicodeDecodeError.
      py::str message = py::reinterpret_steal<py::str>(
          PyUnicode_DecodeUTF8(e.what(), static_cast<Py_ssize_t>(std::strlen(e.what())), "backslashreplace"));
      PyErr_SetObject(format_error.ptr(), message.ptr());
    } catch (const FileError& e) {
      // OSError(errno, strerror, filename) builds the subclass errno names (FileNotFoundError...).
      PyObject* error = PyObject_CallFunction(PyExc_OSError, "isN", e.error(), std::strerror(e.error()),
                                              PyUnicode_DecodeFSDefault(e.path().c_str()));
      if (error != nullptr) {
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error)), error);
        Py_DECREF(error);
      }
    }
  });
  InitInterrupts();
}

// Threads, SIMD level, CUDA and OpenMP: the process-wide settings of the core.
void BindRuntime(py::module_& m) {
  m.def("simd_level", [] { return std::string(SimdLevelName(ActiveSimdLevel())); }, "SIMD level the kernels use now.");
  m.def(
      "detected_simd_level", [] { return std::string(SimdLevelName(DetectedSimdLevel())); },
      "Best SIMD level this CPU supports.");
  m.def("supported_simd_levels", [] {
    std::vector<std::string> out;
    for (SimdLevel l : SupportedSimdLevels()) out.emplace_back(SimdLevelName(l));
    return out;
  });
  m.def("set_simd_level", [](const std::string& name) { SetSimdLevel(ParseSimdLevel(name)); }, py::arg("level"));
  m.def("get_num_threads", &GetNumThreads);
  m.def("set_num_threads", &SetNumThreads, py::arg("n"));
  m.def("num_cores", &NumCores);
  m.def("has_openmp", [] {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
}

// Containers: the versioned, checksummed format of every file the package saves.
void BindContainers(py::module_& m) {
  m.def(
      "write_container",
      [](py::object path, const std::string& tag, const py::dict& meta, const py::dict& sections) -> py::object {
        ContainerWriter w(tag);
        for (auto kv : meta) w.SetMeta(py::cast<std::string>(kv.first), py::cast<int64_t>(kv.second));
        std::vector<py::array> keep;
        for (auto kv : sections) {
          const std::string name = py::cast<std::string>(kv.first);
          // An array, or a non-empty list of arrays stacked along their first axis (a map's
          // per-image arrays), written one after the other without joining them in memory
          const bool listed = py::isinstance<py::list>(kv.second) || py::isinstance<py::tuple>(kv.second);
          std::vector<py::array> parts;
          if (listed) {
            for (auto item : py::reinterpret_borrow<py::sequence>(kv.second)) {
              PYL_CHECK(py::isinstance<py::array>(item), "section '", name,
                        "' must be a numpy array or a list of them");
              parts.push_back(py::reinterpret_borrow<py::array>(item));
            }
            PYL_CHECK(!parts.empty(), "section '", name, "' is an empty list; pass an empty array instead");
          } else {
            PYL_CHECK(py::isinstance<py::array>(kv.second), "section '", name, "' must be a numpy array");
            parts.push_back(py::reinterpret_borrow<py::array>(kv.second));
          }
          const py::array& first = parts.front();
          PYL_CHECK(first.ndim() >= 1 || !listed, "section '", name, "': listed arrays must be at least 1-D");
          std::vector<int64_t> shape(first.shape(), first.shape() + first.ndim());
          std::vector<ContainerWriter::Piece> pieces;
          for (size_t i = 0; i < parts.size(); ++i) {
            const py::array& a = parts[i];
            PYL_CHECK(a.flags() & py::array::c_style, "section '", name,
                      "' must be C-contiguous; pass np.ascontiguousarray(...)");
            if (i > 0) {
              PYL_CHECK(a.dtype().equal(first.dtype()) && a.ndim() == first.ndim() &&
                            std::equal(a.shape() + 1, a.shape() + a.ndim(), first.shape() + 1),
                        "section '", name, "': piece ", i, " has another dtype or trailing shape than the first");
              shape[0] += a.shape(0);
            }
            pieces.emplace_back(a.data(), static_cast<uint64_t>(a.nbytes()));
            keep.push_back(a);
          }
          w.AddSection(name, FromNumpy(first.dtype(), name), shape, std::move(pieces));
        }
        if (path.is_none()) {
          std::vector<uint8_t> bytes;
          {
            ReleaseGil release;
            bytes = w.ToBytes();
          }
          const py::ssize_t n = static_cast<py::ssize_t>(bytes.size());
          return MoveArray(std::move(bytes), {n});
        }
        const std::string p = py::cast<std::string>(py::str(path));
        ReleaseGil release;
        w.WriteFile(p);
        return py::none();
      },
      py::arg("path"), py::arg("tag"), py::arg("meta"), py::arg("sections"),
      "Writes a pylocalize container to path (atomically), or returns its bytes if path is None. A section is an "
      "array or a list of arrays stacked along their first axis (written in turn, never joined in memory).");
  m.def(
      "read_container",
      [](py::object source, bool mmap, bool verify) {
        if (py::isinstance<py::array>(source)) {
          auto a = CheckArray<uint8_t>(source, "data", 1);
          std::vector<uint8_t> bytes(a.data(), a.data() + a.size());
          return ContainerToPython(Container::FromBytes(std::move(bytes), verify));
        }
        const std::string p = py::cast<std::string>(py::str(source));
        Container c;
        {
          ReleaseGil release;
          c = Container::FromFile(p, mmap, verify);
        }
        return ContainerToPython(c);
      },
      py::arg("source"), py::arg("mmap") = false, py::arg("verify") = true,
      "Reads a container from a path or a uint8 array: (tag, (major, minor), meta, sections).");
}

// All-or-nothing writes: the one writer every save goes through.
void BindAtomicFiles(py::module_& m) {
  m.def(
      "write_file_atomic",
      [](py::object path, const py::buffer& data) {
        const std::string p = py::cast<std::string>(py::str(path));
        py::buffer_info info = data.request();
        PYL_CHECK(info.ndim <= 1 || info.strides.back() == info.itemsize, "data must be contiguous bytes");
        const size_t nbytes = static_cast<size_t>(info.size * info.itemsize);
        py::gil_scoped_release release;
        WriteFileAtomic(p, info.ptr, nbytes);
      },
      py::arg("path"), py::arg("data"),
      "Writes bytes to path all-or-nothing (temporary file, fsync, rename, fsync of the folder).");
  m.def(
      "remove_stale_temp_files",
      [](py::object path) { return RemoveStaleTempFiles(py::cast<std::string>(py::str(path))); }, py::arg("path"),
      "Removes temporary files left next to path by killed writers; returns how many.");
}

}  // namespace

void BindUtil(py::module_& m) {
  BindErrors(m);
  BindRuntime(m);
  BindContainers(m);
  BindAtomicFiles(m);
}

}  // namespace bindings
}  // namespace pylocalize
