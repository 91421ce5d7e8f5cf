// Bindings for cpp/pylocalize/image: sub-pixel patch alignment.
#include <tuple>

#include "common.h"
#include "pylocalize/image/patch_align.h"

namespace pylocalize {
namespace bindings {

void BindImage(py::module_& m) {
  m.def(
      "align_patches",
      [](const py::object& image, const py::object& references, const py::object& affines, const py::object& start_xy,
         int template_size, int max_iterations, double max_step_px, double converged_px, double max_shift_px,
         double min_stddev) {
        auto img = CheckArray<float>(image, "image", 2);
        auto refs = CheckArray<uint8_t>(references, "references", 3);
        PYL_CHECK(refs.shape(1) == refs.shape(2), "references must be (n, size, size) uint8, got (", refs.shape(0),
                  ", ", refs.shape(1), ", ", refs.shape(2), ")");
        const int64_t n = refs.shape(0);
        auto a = CheckArray<double>(affines, "affines", 2, 4);
        auto start = CheckArray<double>(start_xy, "start_xy", 2, 2);
        PYL_CHECK(a.shape(0) == n && start.shape(0) == n,
                  "affines and start_xy must have one row per reference patch (", n, "), got ", a.shape(0), " and ",
                  start.shape(0));
        image::PatchAlignOptions o;
        o.max_iterations = max_iterations;
        o.max_step_px = max_step_px;
        o.converged_px = converged_px;
        o.max_shift_px = max_shift_px;
        o.min_stddev = min_stddev;
        py::array_t<double> xy({n, static_cast<int64_t>(2)});
        py::array_t<float> zncc(n);
        py::array_t<bool> converged(n);
        py::array_t<double> information({n, static_cast<int64_t>(3)});
        {
          // one thread: a frame's thousand patches take a few ms, less than waking a pool on
          // a loaded robot computer (measured: 2 threads were 3x slower under load)
          ReleaseGil release;
          image::AlignPatches(img.data(), img.shape(0), img.shape(1), refs.data(), static_cast<int>(refs.shape(1)),
                              a.data(), n, template_size, start.data(), o, xy.mutable_data(), zncc.mutable_data(),
                              reinterpret_cast<uint8_t*>(converged.mutable_data()), information.mutable_data(),
                              /*num_threads=*/1);
        }
        return std::make_tuple(xy, zncc, converged, information);
      },
      py::arg("image"), py::arg("references"), py::arg("affines"), py::arg("start_xy"), py::arg("template_size") = 8,
      py::arg("max_iterations") = 10, py::arg("max_step_px") = 1.0, py::arg("converged_px") = 0.01,
      py::arg("max_shift_px") = 4.0, py::arg("min_stddev") = 1.0,
      "Sub-pixel alignment of reference patches, warped into the frame, near predicted centres; see "
      "pylocalize.localization.patches.align_patches for the documented API.");
}

}  // namespace bindings
}  // namespace pylocalize
