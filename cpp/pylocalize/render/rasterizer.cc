#include "pylocalize/render/rasterizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace render {
namespace {

struct Vec3 {
  float x, y, z;
};
inline Vec3 operator+(Vec3 a, Vec3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
inline Vec3 operator-(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
inline Vec3 operator*(float s, Vec3 a) { return {s * a.x, s * a.y, s * a.z}; }
inline float Dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
inline Vec3 Cross(Vec3 a, Vec3 b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}
inline Vec3 Normalized(Vec3 a) {
  const float n = std::sqrt(Dot(a, a));
  return n > 0.0f ? (1.0f / n) * a : a;
}

struct Pose {
  float r[9];
  float t[3];
  Vec3 Apply(Vec3 p) const {
    return {r[0] * p.x + r[1] * p.y + r[2] * p.z + t[0], r[3] * p.x + r[4] * p.y + r[5] * p.z + t[1],
            r[6] * p.x + r[7] * p.y + r[8] * p.z + t[2]};
  }
  Vec3 Rotate(Vec3 p) const {
    return {r[0] * p.x + r[1] * p.y + r[2] * p.z, r[3] * p.x + r[4] * p.y + r[5] * p.z,
            r[6] * p.x + r[7] * p.y + r[8] * p.z};
  }
};

// Intrinsics in sample units: sample (i, j) of pixel (u, v) sits at
// ((u + (j + 0.5) / s - 0.5), (v + (i + 0.5) / s - 0.5)) in pixel coordinates.
struct Camera {
  int w, h;  // samples
  double fx, fy, cx, cy, skew;
  double near_plane, far_plane;
};

// A vertex after near-plane clipping: camera coordinates and barycentrics with respect to
// the original triangle, so attributes are always interpolated on the original face.
struct ClipVertex {
  Vec3 p;
  float b[3];
};

// Z-buffer of the nearest fragment per sample.
struct GBuffer {
  std::vector<float> z;
  std::vector<int32_t> face;
  std::vector<float> b0, b1;
  void Reset(size_t n) {
    z.assign(n, std::numeric_limits<float>::infinity());
    face.assign(n, -1);
    b0.resize(n);
    b1.resize(n);
  }
};

// Shared edges get exactly one owner: with both triangles oriented positively, an edge is
// walked in opposite directions, and only one direction passes this test.
inline bool OwnsEdge(double dx, double dy) { return dy > 0.0 || (dy == 0.0 && dx < 0.0); }

void RasterizeTriangle(ClipVertex v0, ClipVertex v1, ClipVertex v2, int32_t face, int row0, int row1,
                       const Camera& cam, bool cull_back, GBuffer* g) {
  double px[3], py[3], iz[3];
  const ClipVertex* vs[3] = {&v0, &v1, &v2};
  for (int i = 0; i < 3; ++i) {
    iz[i] = 1.0 / vs[i]->p.z;
    const double x = vs[i]->p.x * iz[i], y = vs[i]->p.y * iz[i];
    px[i] = cam.fx * x + cam.skew * y + cam.cx;
    py[i] = cam.fy * y + cam.cy;
  }
  double area = (px[1] - px[0]) * (py[2] - py[0]) - (px[2] - px[0]) * (py[1] - py[0]);
  if (area == 0.0 || !std::isfinite(area)) return;
  // Front faces (outward normal towards the camera) have negative area in y-down images.
  if (cull_back && area > 0.0) return;
  if (area < 0.0) {
    std::swap(vs[1], vs[2]);
    std::swap(px[1], px[2]);
    std::swap(py[1], py[2]);
    std::swap(iz[1], iz[2]);
    area = -area;
  }
  const int x_lo = std::max(0, static_cast<int>(std::ceil(std::min({px[0], px[1], px[2]}))));
  const int x_hi = std::min(cam.w - 1, static_cast<int>(std::floor(std::max({px[0], px[1], px[2]}))));
  const int y_lo = std::max(row0, static_cast<int>(std::ceil(std::min({py[0], py[1], py[2]}))));
  const int y_hi = std::min(row1 - 1, static_cast<int>(std::floor(std::max({py[0], py[1], py[2]}))));
  if (x_lo > x_hi || y_lo > y_hi) return;
  // Edge i is opposite vertex i: e_i(x, y) = a_i x + b_i y + c_i, >= 0 inside.
  double a[3], b[3], c[3];
  bool owns[3];
  for (int i = 0; i < 3; ++i) {
    const int j = (i + 1) % 3, k = (i + 2) % 3;
    const double dx = px[k] - px[j], dy = py[k] - py[j];
    a[i] = -dy;
    b[i] = dx;
    c[i] = dy * px[j] - dx * py[j];
    owns[i] = OwnsEdge(dx, dy);
  }
  const double inv_area = 1.0 / area;
  const float near_z = static_cast<float>(cam.near_plane), far_z = static_cast<float>(cam.far_plane);
  for (int y = y_lo; y <= y_hi; ++y) {
    double e[3];
    for (int i = 0; i < 3; ++i) e[i] = a[i] * x_lo + b[i] * y + c[i];
    const size_t row = static_cast<size_t>(y) * static_cast<size_t>(cam.w);
    for (int x = x_lo; x <= x_hi; ++x, e[0] += a[0], e[1] += a[1], e[2] += a[2]) {
      if (e[0] < 0.0 || e[1] < 0.0 || e[2] < 0.0) continue;
      if ((e[0] == 0.0 && !owns[0]) || (e[1] == 0.0 && !owns[1]) || (e[2] == 0.0 && !owns[2])) continue;
      const double l0 = e[0] * inv_area, l1 = e[1] * inv_area, l2 = e[2] * inv_area;
      const double invz = l0 * iz[0] + l1 * iz[1] + l2 * iz[2];
      const float z = static_cast<float>(1.0 / invz);
      const size_t s = row + static_cast<size_t>(x);
      if (!(z >= near_z && z <= far_z) || z >= g->z[s]) continue;
      // Perspective-correct barycentrics on the clipped triangle, then on the face.
      const double w0 = l0 * iz[0] / invz, w1 = l1 * iz[1] / invz, w2 = l2 * iz[2] / invz;
      g->z[s] = z;
      g->face[s] = face;
      g->b0[s] = static_cast<float>(w0 * vs[0]->b[0] + w1 * vs[1]->b[0] + w2 * vs[2]->b[0]);
      g->b1[s] = static_cast<float>(w0 * vs[0]->b[1] + w1 * vs[1]->b[1] + w2 * vs[2]->b[1]);
    }
  }
}

// Clips a triangle against z >= near (Sutherland-Hodgman on one plane) and rasterizes
// the 0, 1 or 2 triangles left.
void ClipAndRasterize(const Vec3 p[3], int32_t face, int row0, int row1, const Camera& cam,
                      bool cull_back, GBuffer* g) {
  const float near_z = static_cast<float>(cam.near_plane);
  ClipVertex in[3];
  int outside = 0;
  for (int i = 0; i < 3; ++i) {
    in[i].p = p[i];
    for (int k = 0; k < 3; ++k) in[i].b[k] = i == k ? 1.0f : 0.0f;
    outside += p[i].z < near_z;
  }
  if (outside == 3) return;
  if (outside == 0) {
    RasterizeTriangle(in[0], in[1], in[2], face, row0, row1, cam, cull_back, g);
    return;
  }
  ClipVertex poly[4];
  int n = 0;
  for (int i = 0; i < 3; ++i) {
    const ClipVertex& a = in[i];
    const ClipVertex& b = in[(i + 1) % 3];
    const bool a_in = a.p.z >= near_z, b_in = b.p.z >= near_z;
    if (a_in) poly[n++] = a;
    if (a_in != b_in) {
      const float t = (near_z - a.p.z) / (b.p.z - a.p.z);
      ClipVertex m;
      m.p = a.p + t * (b.p - a.p);
      m.p.z = near_z;
      for (int k = 0; k < 3; ++k) m.b[k] = a.b[k] + t * (b.b[k] - a.b[k]);
      poly[n++] = m;
    }
  }
  for (int i = 1; i + 1 < n; ++i) {
    RasterizeTriangle(poly[0], poly[i], poly[i + 1], face, row0, row1, cam, cull_back, g);
  }
}

inline Vec3 Load3(const float* p, int64_t i) { return {p[3 * i], p[3 * i + 1], p[3 * i + 2]}; }

// Bilinear texture lookup; coordinates repeat, neighbours clamp at the image border.
Vec3 SampleTexture(const MeshView& m, float u, float v) {
  u -= std::floor(u);
  v -= std::floor(v);
  const float x = u * static_cast<float>(m.tex_width) - 0.5f;
  const float y = (1.0f - v) * static_cast<float>(m.tex_height) - 0.5f;
  const float fx = std::floor(x), fy = std::floor(y);
  const float ax = x - fx, ay = y - fy;
  const int64_t x0 = std::clamp<int64_t>(static_cast<int64_t>(fx), 0, m.tex_width - 1);
  const int64_t x1 = std::clamp<int64_t>(static_cast<int64_t>(fx) + 1, 0, m.tex_width - 1);
  const int64_t y0 = std::clamp<int64_t>(static_cast<int64_t>(fy), 0, m.tex_height - 1);
  const int64_t y1 = std::clamp<int64_t>(static_cast<int64_t>(fy) + 1, 0, m.tex_height - 1);
  auto px = [&](int64_t yy, int64_t xx, int ch) {
    return static_cast<float>(m.texture[(yy * m.tex_width + xx) * 3 + ch]);
  };
  float out[3];
  for (int ch = 0; ch < 3; ++ch) {
    const float top = px(y0, x0, ch) + ax * (px(y0, x1, ch) - px(y0, x0, ch));
    const float bottom = px(y1, x0, ch) + ax * (px(y1, x1, ch) - px(y1, x0, ch));
    out[ch] = (top + ay * (bottom - top)) * (1.0f / 255.0f);
  }
  return {out[0], out[1], out[2]};
}

struct Shaded {
  Vec3 color;   // in [0, 1] after lighting
  Vec3 xyz;     // model frame
  Vec3 normal;  // camera frame, facing the camera
  float depth;
};

Shaded ShadeSample(const MeshView& m, const Pose& pose, const RenderOptions& o, int32_t face,
                   float b0, float b1) {
  const float b2 = 1.0f - b0 - b1;
  const int32_t* f = m.faces + 3 * static_cast<int64_t>(face);
  const Vec3 x0 = Load3(m.vertices, f[0]), x1 = Load3(m.vertices, f[1]), x2 = Load3(m.vertices, f[2]);
  Shaded s;
  s.xyz = b0 * x0 + b1 * x1 + b2 * x2;
  const Vec3 p = pose.Apply(s.xyz);
  s.depth = p.z;
  Vec3 n;
  if (m.vertex_normals != nullptr) {
    n = b0 * Load3(m.vertex_normals, f[0]) + b1 * Load3(m.vertex_normals, f[1]) +
        b2 * Load3(m.vertex_normals, f[2]);
  } else {
    n = Cross(x1 - x0, x2 - x0);
  }
  n = Normalized(pose.Rotate(n));
  if (Dot(n, p) > 0.0f) n = -1.0f * n;
  s.normal = n;
  Vec3 c;
  if (m.texture != nullptr && m.uvs != nullptr) {
    const float u = b0 * m.uvs[2 * f[0]] + b1 * m.uvs[2 * f[1]] + b2 * m.uvs[2 * f[2]];
    const float v = b0 * m.uvs[2 * f[0] + 1] + b1 * m.uvs[2 * f[1] + 1] + b2 * m.uvs[2 * f[2] + 1];
    c = SampleTexture(m, u, v);
  } else if (m.colors != nullptr) {
    c = b0 * Load3(m.colors, f[0]) + b1 * Load3(m.colors, f[1]) + b2 * Load3(m.colors, f[2]);
  } else {
    c = {o.default_color[0], o.default_color[1], o.default_color[2]};
  }
  if (o.shading == Shading::kLambert) {
    const float ndotl = std::max(0.0f, -Dot(n, Normalized(p)));  // light at the camera
    c = (o.ambient + (1.0f - o.ambient) * ndotl) * c;
  }
  s.color = c;
  return s;
}

inline uint8_t ToByte(float v) {
  return static_cast<uint8_t>(std::clamp(v * 255.0f + 0.5f, 0.0f, 255.0f));
}

// Renders output rows [r0, r1) of one view.
void RenderRows(const MeshView& m, const Pose& pose, const RenderOptions& o, int64_t view, int r0,
                int r1, const RenderTargets& out, std::vector<Vec3>* cam_vertices, GBuffer* g) {
  const int s = o.supersample;
  Camera cam;
  cam.w = o.width * s;
  cam.h = o.height * s;
  cam.fx = o.fx * s;
  cam.fy = o.fy * s;
  cam.skew = o.skew * s;
  cam.cx = (o.cx + 0.5) * s - 0.5;
  cam.cy = (o.cy + 0.5) * s - 0.5;
  cam.near_plane = o.near_plane;
  cam.far_plane = o.far_plane;
  const int row0 = r0 * s, row1 = r1 * s;
  cam_vertices->resize(static_cast<size_t>(m.num_vertices));
  for (int64_t i = 0; i < m.num_vertices; ++i) (*cam_vertices)[i] = pose.Apply(Load3(m.vertices, i));
  g->Reset(static_cast<size_t>(row1 - row0) * static_cast<size_t>(cam.w));
  // The buffer covers only this band: shift rows so that row0 maps to 0.
  Camera band = cam;
  band.cy -= row0;
  band.h = row1 - row0;
  for (int64_t f = 0; f < m.num_faces; ++f) {
    const int32_t* idx = m.faces + 3 * f;
    const Vec3 p[3] = {(*cam_vertices)[idx[0]], (*cam_vertices)[idx[1]], (*cam_vertices)[idx[2]]};
    ClipAndRasterize(p, static_cast<int32_t>(f), 0, band.h, band, o.cull_back, g);
  }
  const int64_t w = o.width, h = o.height;
  const int64_t base = view * h * w;
  const int center = s / 2;
  for (int v = r0; v < r1; ++v) {
    for (int u = 0; u < o.width; ++u) {
      const int64_t pix = base + static_cast<int64_t>(v) * w + u;
      float acc[3] = {0.0f, 0.0f, 0.0f};
      bool have_center = false;
      Shaded center_sample{};
      for (int i = 0; i < s; ++i) {
        for (int j = 0; j < s; ++j) {
          const size_t k = static_cast<size_t>((v * s + i - row0)) * static_cast<size_t>(cam.w) +
                           static_cast<size_t>(u * s + j);
          const int32_t face = g->face[k];
          const bool is_center = i == center && j == center;
          if (face < 0) {
            for (int ch = 0; ch < 3; ++ch) acc[ch] += o.background[ch] * (1.0f / 255.0f);
            continue;
          }
          const Shaded sh = ShadeSample(m, pose, o, face, g->b0[k], g->b1[k]);
          acc[0] += sh.color.x;
          acc[1] += sh.color.y;
          acc[2] += sh.color.z;
          if (is_center) {
            have_center = true;
            center_sample = sh;
            center_sample.depth = g->z[k];
          }
        }
      }
      const float inv = 1.0f / static_cast<float>(s * s);
      if (out.rgb != nullptr) {
        for (int ch = 0; ch < 3; ++ch) out.rgb[pix * 3 + ch] = ToByte(acc[ch] * inv);
      }
      if (out.mask != nullptr) out.mask[pix] = have_center ? 1 : 0;
      if (out.depth != nullptr) out.depth[pix] = have_center ? center_sample.depth : 0.0f;
      if (out.xyz != nullptr) {
        const Vec3 x = have_center ? center_sample.xyz : Vec3{0, 0, 0};
        out.xyz[pix * 3] = x.x;
        out.xyz[pix * 3 + 1] = x.y;
        out.xyz[pix * 3 + 2] = x.z;
      }
      if (out.normals != nullptr) {
        const Vec3 x = have_center ? center_sample.normal : Vec3{0, 0, 0};
        out.normals[pix * 3] = x.x;
        out.normals[pix * 3 + 1] = x.y;
        out.normals[pix * 3 + 2] = x.z;
      }
    }
  }
}

}  // namespace

void RenderBatch(const MeshView& m, const double* poses, int64_t n, const RenderOptions& o,
                 const RenderTargets& out, int num_threads) {
  PYL_CHECK(o.width > 0 && o.height > 0, "image size must be positive, got ", o.width, "x",
            o.height);
  PYL_CHECK(o.fx > 0 && o.fy > 0, "focal lengths must be positive: check K");
  PYL_CHECK(o.near_plane > 0 && o.far_plane > o.near_plane,
            "need 0 < near < far, got near=", o.near_plane, " far=", o.far_plane);
  PYL_CHECK(o.supersample >= 1 && o.supersample <= 8, "supersample must be 1..8, got ",
            o.supersample);
  PYL_CHECK(o.ambient >= 0.0f && o.ambient <= 1.0f, "ambient must be in [0, 1]");
  PYL_CHECK(m.texture == nullptr || (m.uvs != nullptr && m.tex_width > 0 && m.tex_height > 0),
            "a texture needs per-vertex uvs and a non-empty image");
  for (int64_t i = 0; i < 3 * m.num_faces; ++i) {
    PYL_CHECK(m.faces[i] >= 0 && m.faces[i] < m.num_vertices, "face index ", m.faces[i],
              " out of range for ", m.num_vertices, " vertices");
  }
  std::vector<Pose> ps(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double* p = poses + 12 * i;
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) ps[i].r[3 * r + c] = static_cast<float>(p[4 * r + c]);
      ps[i].t[r] = static_cast<float>(p[4 * r + 3]);
    }
  }
  if (num_threads <= 0) num_threads = GetNumThreads();
  // Few views: split each view into bands of rows so every thread has work.
  const int bands = n >= num_threads ? 1 : std::min(o.height, (num_threads + static_cast<int>(n) - 1) /
                                                                  static_cast<int>(std::max<int64_t>(n, 1)) * 2);
  const int rows_per_band = (o.height + bands - 1) / bands;
  struct Scratch {
    std::vector<Vec3> cam;
    GBuffer g;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(std::max(num_threads, 1)));
  ParallelFor(n * bands, num_threads, [&](int64_t task, int tid) {
    InterruptPoint();
    const int64_t view = task / bands;
    const int band = static_cast<int>(task % bands);
    const int r0 = band * rows_per_band, r1 = std::min(o.height, r0 + rows_per_band);
    if (r0 >= r1) return;
    Scratch& sc = scratch[static_cast<size_t>(tid)];
    RenderRows(m, ps[static_cast<size_t>(view)], o, view, r0, r1, out, &sc.cam, &sc.g);
  });
}

}  // namespace render
}  // namespace pylocalize
