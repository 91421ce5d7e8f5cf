// Headless CPU rasterizer: RGB, depth, mask, object coordinates and normals of a
// triangle mesh seen by pinhole cameras, with no system graphics dependency.
//
// Conventions: OpenCV pinhole (pixel centres at integer coordinates, x right, y down,
// z forward), poses cam_from_model as 3x4 [R | t] with x_cam = R x + t; depth is camera
// z in the mesh's units (0 where empty). Texture coordinates follow OBJ/PLY: (0, 0) is
// the bottom-left of the texture image; they repeat outside [0, 1].
//
// Method: per view, vertices are transformed once, triangles are clipped against the near
// plane, projected and scan-converted with edge functions (top-left fill rule, so shared
// edges are drawn once) into a z-buffer that keeps the face id and perspective-correct
// barycentrics of the nearest fragment; a second, deferred pass shades only the visible
// samples (Lambert + ambient with the light at the camera, or unlit) and fills the
// geometric buffers. Both passes run chunk by chunk of rows, each chunk drawing the faces
// binned to it in mesh order, so that its z-buffer stays in cache. Supersampling renders
// s x s samples per pixel (s odd) and averages RGB; the geometric buffers come from the
// centre sample, exactly at the pixel centre.
#pragma once

#include <cstdint>

namespace pylocalize {
namespace render {

enum class Shading : int { kLambert = 0, kUnlit = 1 };

// Views of caller arrays; optional ones may be nullptr.
struct MeshView {
  const float* vertices = nullptr;  // V x 3
  int64_t num_vertices = 0;
  const int32_t* faces = nullptr;  // F x 3, indices into vertices
  int64_t num_faces = 0;
  const float* vertex_normals = nullptr;  // V x 3 (smooth shading), else face normals
  const float* colors = nullptr;          // V x 3 in [0, 1]
  const float* uvs = nullptr;             // V x 2, with texture
  const uint8_t* texture = nullptr;       // tex_height x tex_width x 3
  int64_t tex_height = 0, tex_width = 0;
};

struct RenderOptions {
  int width = 0, height = 0;
  double fx = 0, fy = 0, cx = 0, cy = 0, skew = 0;
  double near_plane = 0.01, far_plane = 1e6;
  Shading shading = Shading::kLambert;
  float ambient = 0.3f;  // intensity = ambient + (1 - ambient) * |n . l|
  int supersample = 1;   // 1, 3, 5 or 7
  bool cull_back = false;
  uint8_t background[3] = {0, 0, 0};
  float default_color[3] = {0.8f, 0.8f, 0.8f};  // without vertex colours or texture
};

// Output buffers for n views, each optional: rgb n x h x w x 3, depth n x h x w,
// mask n x h x w, xyz n x h x w x 3 (model coordinates), normals n x h x w x 3 (unit,
// camera frame, facing the camera).
struct RenderTargets {
  uint8_t* rgb = nullptr;
  float* depth = nullptr;
  uint8_t* mask = nullptr;
  float* xyz = nullptr;
  float* normals = nullptr;
};

// Renders n views; poses: n x 12 doubles (row-major 3 x 4 cam_from_model). Parallel over
// views, or over bands of rows when there are fewer views than threads. Throws
// std::invalid_argument on bad options or face indices.
void RenderBatch(const MeshView& mesh, const double* poses, int64_t n, const RenderOptions& options,
                 const RenderTargets& targets, int num_threads);

}  // namespace render
}  // namespace pylocalize
