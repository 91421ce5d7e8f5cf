// Bindings for cpp/pylocalize/render: the batch rasterizer.
#include <pybind11/stl.h>

#include "common.h"
#include "pylocalize/render/rasterizer.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace bindings {
namespace {

template <typename T>
const T* Optional(const py::object& obj, const char* name, int ndim, int64_t rows, int64_t cols, py::array_t<T>* keep) {
  if (obj.is_none()) return nullptr;
  *keep = CheckArray<T>(obj, name, ndim, cols);
  PYL_CHECK(rows < 0 || keep->shape(0) == rows, name, " must have ", rows, " rows, got ", keep->shape(0));
  return keep->data();
}

}  // namespace

void BindRender(py::module_& m) {
  py::enum_<render::Shading>(m, "Shading")
      .value("LAMBERT", render::Shading::kLambert)
      .value("UNLIT", render::Shading::kUnlit);

  m.def(
      "render_batch",
      [](const py::object& vertices, const py::object& faces, const py::object& poses, const py::object& K, int width,
         int height, double near_plane, double far_plane, const py::object& vertex_normals, const py::object& colors,
         const py::object& uvs, const py::object& texture, render::Shading shading, float ambient, int supersample,
         bool cull_back, std::vector<int> background, std::vector<std::string> outputs) {
        auto v = CheckArray<float>(vertices, "vertices", 2, 3);
        auto f = CheckArray<int32_t>(faces, "faces", 2, 3);
        auto p = CheckArray<double>(poses, "poses", 3);
        PYL_CHECK(p.shape(1) == 3 && p.shape(2) == 4, "poses must be (n, 3, 4) cam_from_model");
        auto k = CheckArray<double>(K, "K", 2, 3);
        PYL_CHECK(k.shape(0) == 3, "K must be 3x3");
        const int64_t nv = v.shape(0);
        render::MeshView mesh;
        mesh.vertices = v.data();
        mesh.num_vertices = nv;
        mesh.faces = f.data();
        mesh.num_faces = f.shape(0);
        py::array_t<float> kn, kc, ku;
        py::array_t<uint8_t> kt;
        mesh.vertex_normals = Optional<float>(vertex_normals, "vertex_normals", 2, nv, 3, &kn);
        mesh.colors = Optional<float>(colors, "colors", 2, nv, 3, &kc);
        mesh.uvs = Optional<float>(uvs, "uvs", 2, nv, 2, &ku);
        if (!texture.is_none()) {
          kt = CheckArray<uint8_t>(texture, "texture", 3);
          PYL_CHECK(kt.shape(2) == 3, "texture must be (h, w, 3) uint8 RGB");
          mesh.texture = kt.data();
          mesh.tex_height = kt.shape(0);
          mesh.tex_width = kt.shape(1);
        }
        render::RenderOptions o;
        o.width = width;
        o.height = height;
        const double* kd = k.data();
        PYL_CHECK(kd[3] == 0.0 && kd[6] == 0.0 && kd[7] == 0.0 && kd[8] == 1.0,
                  "K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]");
        o.fx = kd[0];
        o.skew = kd[1];
        o.cx = kd[2];
        o.fy = kd[4];
        o.cy = kd[5];
        o.near_plane = near_plane;
        o.far_plane = far_plane;
        o.shading = shading;
        o.ambient = ambient;
        o.supersample = supersample;
        o.cull_back = cull_back;
        PYL_CHECK(background.size() == 3, "background must be 3 values 0..255");
        for (int i = 0; i < 3; ++i) {
          PYL_CHECK(background[i] >= 0 && background[i] <= 255, "background must be 3 values 0..255");
          o.background[i] = static_cast<uint8_t>(background[i]);
        }
        const int64_t n = p.shape(0);
        py::dict result;
        render::RenderTargets t;
        for (const std::string& name : outputs) {
          if (name == "rgb") {
            py::array_t<uint8_t> a({n, static_cast<int64_t>(height), static_cast<int64_t>(width), int64_t{3}});
            t.rgb = a.mutable_data();
            result["rgb"] = a;
          } else if (name == "depth") {
            py::array_t<float> a({n, static_cast<int64_t>(height), static_cast<int64_t>(width)});
            t.depth = a.mutable_data();
            result["depth"] = a;
          } else if (name == "mask") {
            py::array a(py::dtype("bool"), {n, static_cast<int64_t>(height), static_cast<int64_t>(width)});
            t.mask = static_cast<uint8_t*>(a.mutable_data());
            result["mask"] = a;
          } else if (name == "xyz") {
            py::array_t<float> a({n, static_cast<int64_t>(height), static_cast<int64_t>(width), int64_t{3}});
            t.xyz = a.mutable_data();
            result["xyz"] = a;
          } else if (name == "normals") {
            py::array_t<float> a({n, static_cast<int64_t>(height), static_cast<int64_t>(width), int64_t{3}});
            t.normals = a.mutable_data();
            result["normals"] = a;
          } else {
            PYL_CHECK(false, "unknown output '", name, "': use rgb, depth, mask, xyz, normals");
          }
        }
        {
          ReleaseGil release;
          render::RenderBatch(mesh, p.data(), n, o, t, GetNumThreads());
        }
        return result;
      },
      py::arg("vertices"), py::arg("faces"), py::arg("poses"), py::arg("K"), py::arg("width"), py::arg("height"),
      py::arg("near"), py::arg("far"), py::arg("vertex_normals"), py::arg("colors"), py::arg("uvs"), py::arg("texture"),
      py::arg("shading"), py::arg("ambient"), py::arg("supersample"), py::arg("cull_back"), py::arg("background"),
      py::arg("outputs"), "Renders a batch of views; see pylocalize.render.Renderer for the documented API.");
}

}  // namespace bindings
}  // namespace pylocalize
