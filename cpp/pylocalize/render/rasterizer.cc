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
inline Vec3 Cross(Vec3 a, Vec3 b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }
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

// A vertex in front of the near plane, projected to sample coordinates.
struct Projected {
  double x, y, iz;  // iz = 1 / z
};

inline Projected Project(Vec3 p, const Camera& cam) {
  const double iz = 1.0 / p.z;
  const double x = p.x * iz, y = p.y * iz;
  return {cam.fx * x + cam.skew * y + cam.cx, cam.fy * y + cam.cy, iz};
}

// Z-buffer of the nearest fragment per sample, kept as 1/z (larger is nearer) so occluded
// fragments are rejected without a division. It holds one chunk of sample rows, from
// row0 on, so that it stays in cache while the chunk's faces are drawn.
struct GBuffer {
  std::vector<float> inv_z;
  std::vector<int32_t> face;
  std::vector<float> b0, b1;
  int row0 = 0;
  void Reset(size_t n) {
    if (inv_z.size() < n) {
      inv_z.resize(n);
      face.resize(n);
      b0.resize(n);
      b1.resize(n);
    }
  }
  size_t Index(int y, int x, int w) const {
    return static_cast<size_t>(y - row0) * static_cast<size_t>(w) + static_cast<size_t>(x);
  }
};

// The part of the buffer this view may touch (inclusive sample bounds).
struct Region {
  int x0, x1, y0, y1;
  bool empty() const { return x0 > x1 || y0 > y1; }
};

// Shared edges get exactly one owner: with both triangles oriented positively, an edge is
// walked in opposite directions, and only one direction passes this test.
inline bool OwnsEdge(double dx, double dy) { return dy > 0.0 || (dy == 0.0 && dx < 0.0); }

// A projected triangle ready to scan, positively oriented. Edge i is opposite vertex i:
// e_i(x, y) = a_i x + b_i y + c_i, >= 0 inside, normalised to the screen barycentric of i.
struct EdgeSetup {
  Projected v[3];
  double a[3], b[3], c[3];
  bool owns[3];
  float fb[3][3];              // face barycentrics of each vertex (identity when unclipped)
  int x_lo, x_hi, y_lo, y_hi;  // sample box, within the region
};

// Sets up one projected triangle; false when it covers no sample (degenerate, culled or
// outside the region). clip_bary: barycentrics of the three vertices on the original face
// (nullptr: the vertices are the face's own, in order).
bool SetupTriangle(Projected v0, Projected v1, Projected v2, const float (*clip_bary)[3], const Region& region,
                   bool cull_back, EdgeSetup* t) {
  Projected* v = t->v;
  v[0] = v0, v[1] = v1, v[2] = v2;
  int order[3] = {0, 1, 2};
  double area = (v[1].x - v[0].x) * (v[2].y - v[0].y) - (v[2].x - v[0].x) * (v[1].y - v[0].y);
  if (area == 0.0 || !std::isfinite(area)) return false;
  // Front faces (outward normal towards the camera) have negative area in y-down images.
  if (cull_back && area > 0.0) return false;
  if (area < 0.0) {
    std::swap(v[1], v[2]);
    std::swap(order[1], order[2]);
    area = -area;
  }
  t->x_lo = std::max(region.x0, static_cast<int>(std::ceil(std::min({v[0].x, v[1].x, v[2].x}))));
  t->x_hi = std::min(region.x1, static_cast<int>(std::floor(std::max({v[0].x, v[1].x, v[2].x}))));
  t->y_lo = std::max(region.y0, static_cast<int>(std::ceil(std::min({v[0].y, v[1].y, v[2].y}))));
  t->y_hi = std::min(region.y1, static_cast<int>(std::floor(std::max({v[0].y, v[1].y, v[2].y}))));
  if (t->x_lo > t->x_hi || t->y_lo > t->y_hi) return false;
  const double inv_area = 1.0 / area;
  for (int i = 0; i < 3; ++i) {
    const int j = (i + 1) % 3, k = (i + 2) % 3;
    const double dx = v[k].x - v[j].x, dy = v[k].y - v[j].y;
    t->owns[i] = OwnsEdge(dx, dy);
    t->a[i] = -dy * inv_area;
    t->b[i] = dx * inv_area;
    t->c[i] = (dy * v[j].x - dx * v[j].y) * inv_area;
    for (int q = 0; q < 3; ++q) {
      t->fb[i][q] = clip_bary != nullptr ? clip_bary[order[i]][q] : (order[i] == q ? 1.0f : 0.0f);
    }
  }
  return true;
}

// Scan-converts one projected triangle (see SetupTriangle) into the z-buffer.
void RasterizeTriangle(Projected v0, Projected v1, Projected v2, const float (*clip_bary)[3], int32_t face,
                       const Camera& cam, const Region& region, bool cull_back, GBuffer* g) {
  EdgeSetup t;
  if (!SetupTriangle(v0, v1, v2, clip_bary, region, cull_back, &t)) return;
  const Projected* v = t.v;
  const float inv_near = static_cast<float>(1.0 / cam.near_plane);
  const float inv_far = static_cast<float>(1.0 / cam.far_plane);
  for (int y = t.y_lo; y <= t.y_hi; ++y) {
    if (((y - t.y_lo) & 63) == 63) InterruptPoint();  // one face can cover a huge image
    double e[3];
    for (int i = 0; i < 3; ++i) e[i] = t.a[i] * t.x_lo + t.b[i] * y + t.c[i];
    const size_t row = g->Index(y, 0, cam.w);
    for (int x = t.x_lo; x <= t.x_hi; ++x, e[0] += t.a[0], e[1] += t.a[1], e[2] += t.a[2]) {
      if (e[0] < 0.0 || e[1] < 0.0 || e[2] < 0.0) continue;
      if ((e[0] == 0.0 && !t.owns[0]) || (e[1] == 0.0 && !t.owns[1]) || (e[2] == 0.0 && !t.owns[2])) continue;
      const double invz = e[0] * v[0].iz + e[1] * v[1].iz + e[2] * v[2].iz;
      const float fiz = static_cast<float>(invz);
      const size_t s = row + static_cast<size_t>(x);
      if (!(fiz <= inv_near && fiz >= inv_far) || fiz <= g->inv_z[s]) continue;
      // Perspective-correct barycentrics on the clipped triangle, then on the face.
      const double zr = 1.0 / invz;
      const double w0 = e[0] * v[0].iz * zr, w1 = e[1] * v[1].iz * zr, w2 = e[2] * v[2].iz * zr;
      g->inv_z[s] = fiz;
      g->face[s] = face;
      g->b0[s] = static_cast<float>(w0 * t.fb[0][0] + w1 * t.fb[1][0] + w2 * t.fb[2][0]);
      g->b1[s] = static_cast<float>(w0 * t.fb[0][1] + w1 * t.fb[1][1] + w2 * t.fb[2][1]);
    }
  }
}

// Clips a face crossing z = near (Sutherland-Hodgman on one plane) and rasterizes the
// 1 or 2 triangles left.
void ClipAndRasterize(const Vec3 p[3], int32_t face, const Camera& cam, const Region& region, bool cull_back,
                      GBuffer* g) {
  const float near_z = static_cast<float>(cam.near_plane);
  ClipVertex in[3];
  for (int i = 0; i < 3; ++i) {
    in[i].p = p[i];
    for (int k = 0; k < 3; ++k) in[i].b[k] = i == k ? 1.0f : 0.0f;
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
    const float bary[3][3] = {{poly[0].b[0], poly[0].b[1], poly[0].b[2]},
                              {poly[i].b[0], poly[i].b[1], poly[i].b[2]},
                              {poly[i + 1].b[0], poly[i + 1].b[1], poly[i + 1].b[2]}};
    RasterizeTriangle(Project(poly[0].p, cam), Project(poly[i].p, cam), Project(poly[i + 1].p, cam), bary, face, cam,
                      region, cull_back, g);
  }
}

inline Vec3 Load3(const float* p, int64_t i) { return {p[3 * i], p[3 * i + 1], p[3 * i + 2]}; }

// Bilinear texture lookup; coordinates repeat, neighbours clamp at the image border.
Vec3 SampleTexture(const MeshView& m, float u, float v) {
  u -= std::floor(u);
  v -= std::floor(v);
  const int64_t tw = m.tex_width, th = m.tex_height;
  const float x = u * static_cast<float>(tw) - 0.5f;
  const float y = (1.0f - v) * static_cast<float>(th) - 0.5f;
  const float fx = std::floor(x), fy = std::floor(y);
  const float ax = x - fx, ay = y - fy;
  const int64_t xi = static_cast<int64_t>(fx), yi = static_cast<int64_t>(fy);
  const int64_t x0 = std::clamp<int64_t>(xi, 0, tw - 1), x1 = std::clamp<int64_t>(xi + 1, 0, tw - 1);
  const int64_t y0 = std::clamp<int64_t>(yi, 0, th - 1), y1 = std::clamp<int64_t>(yi + 1, 0, th - 1);
  const uint8_t* p00 = m.texture + (y0 * tw + x0) * 3;
  const uint8_t* p01 = m.texture + (y0 * tw + x1) * 3;
  const uint8_t* p10 = m.texture + (y1 * tw + x0) * 3;
  const uint8_t* p11 = m.texture + (y1 * tw + x1) * 3;
  const float k = 1.0f / 255.0f;
  const float w00 = (1.0f - ax) * (1.0f - ay) * k, w01 = ax * (1.0f - ay) * k;
  const float w10 = (1.0f - ax) * ay * k, w11 = ax * ay * k;
  return {w00 * p00[0] + w01 * p01[0] + w10 * p10[0] + w11 * p11[0],
          w00 * p00[1] + w01 * p01[1] + w10 * p10[1] + w11 * p11[1],
          w00 * p00[2] + w01 * p01[2] + w10 * p10[2] + w11 * p11[2]};
}

struct Shaded {
  Vec3 color;   // in [0, 1] after lighting
  Vec3 xyz;     // model frame
  Vec3 normal;  // camera frame, facing the camera
  float depth;
};

// What one view's shading pass needs, computed once per view.
struct ViewShading {
  const std::vector<Vec3>* cam;           // vertices in the camera frame
  const std::vector<Vec3>* face_normals;  // camera frame, when the mesh has no vertex normals
  bool want_xyz, want_normal, lambert;
};

Shaded ShadeSample(const MeshView& m, const Pose& pose, const RenderOptions& o, const ViewShading& vs, int32_t face,
                   float b0, float b1) {
  const float b2 = 1.0f - b0 - b1;
  const int32_t* f = m.faces + 3 * static_cast<int64_t>(face);
  Shaded s;
  if (vs.want_xyz) {
    s.xyz = b0 * Load3(m.vertices, f[0]) + b1 * Load3(m.vertices, f[1]) + b2 * Load3(m.vertices, f[2]);
  }
  const std::vector<Vec3>& cam = *vs.cam;
  const Vec3 p = b0 * cam[f[0]] + b1 * cam[f[1]] + b2 * cam[f[2]];
  s.depth = p.z;
  Vec3 n{0, 0, 0};
  if (vs.want_normal || vs.lambert) {
    if (m.vertex_normals != nullptr) {
      n = pose.Rotate(b0 * Load3(m.vertex_normals, f[0]) + b1 * Load3(m.vertex_normals, f[1]) +
                      b2 * Load3(m.vertex_normals, f[2]));
      n = Normalized(n);
    } else {
      n = (*vs.face_normals)[static_cast<size_t>(face)];
    }
    if (Dot(n, p) > 0.0f) n = -1.0f * n;
  }
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
  if (vs.lambert) {
    const float ndotl = std::max(0.0f, -Dot(n, p) / std::sqrt(Dot(p, p)));  // light at the camera
    c = (o.ambient + (1.0f - o.ambient) * ndotl) * c;
  }
  s.color = c;
  return s;
}

inline uint8_t ToByte(float v) { return static_cast<uint8_t>(std::clamp(v * 255.0f + 0.5f, 0.0f, 255.0f)); }

// Faces listed per chunk of sample rows they may cover, in mesh order within each chunk,
// so that depth ties resolve exactly as if the whole view were drawn in one pass.
struct FaceBins {
  int chunk_rows = 0;          // sample rows per chunk, whole pixel rows
  std::vector<int64_t> start;  // chunk c lists faces[start[c] .. start[c + 1])
  std::vector<int64_t> next;   // fill cursor per chunk
  std::vector<int32_t> faces;
};

struct Scratch {
  std::vector<Vec3> cam;
  std::vector<Projected> proj;
  std::vector<Vec3> face_normals;
  FaceBins bins;
  GBuffer g;
};

// Stage 1, the band's camera: the supersampled pinhole of the view, shifted so that sample
// row row0 is buffer row 0.
Camera BandCamera(const RenderOptions& o, int row0, int row1) {
  const int s = o.supersample;
  Camera cam;
  cam.w = o.width * s;
  cam.h = row1 - row0;
  cam.fx = o.fx * s;
  cam.fy = o.fy * s;
  cam.skew = o.skew * s;
  cam.cx = (o.cx + 0.5) * s - 0.5;
  cam.cy = (o.cy + 0.5) * s - 0.5 - row0;
  cam.near_plane = o.near_plane;
  cam.far_plane = o.far_plane;
  return cam;
}

// Stage 2, vertex transform: every vertex into the camera frame (sc->cam) and, in front of
// the near plane, onto the sample grid (sc->proj). Returns the region the mesh can cover:
// the projected box of its vertices, unless some vertex is behind the near plane (then
// clipped faces may reach anywhere).
Region TransformVertices(const MeshView& m, const Pose& pose, const Camera& cam, Scratch* sc) {
  const float near_z = static_cast<float>(cam.near_plane);
  sc->cam.resize(static_cast<size_t>(m.num_vertices));
  sc->proj.resize(static_cast<size_t>(m.num_vertices));
  double bx0 = 1e300, bx1 = -1e300, by0 = 1e300, by1 = -1e300;
  bool behind = false;
  for (int64_t i = 0; i < m.num_vertices; ++i) {
    if ((i & 16383) == 16383) InterruptPoint();
    const Vec3 p = pose.Apply(Load3(m.vertices, i));
    sc->cam[static_cast<size_t>(i)] = p;
    if (p.z < near_z) {
      behind = true;
      continue;
    }
    const Projected q = Project(p, cam);
    sc->proj[static_cast<size_t>(i)] = q;
    bx0 = std::min(bx0, q.x);
    bx1 = std::max(bx1, q.x);
    by0 = std::min(by0, q.y);
    by1 = std::max(by1, q.y);
  }
  Region region{0, cam.w - 1, 0, cam.h - 1};
  if (!behind) {
    region.x0 = std::max(region.x0, static_cast<int>(std::floor(std::max(bx0, -1.0))));
    region.x1 = std::min(region.x1, static_cast<int>(std::ceil(std::min(bx1, 1e9))));
    region.y0 = std::max(region.y0, static_cast<int>(std::floor(std::max(by0, -1.0))));
    region.y1 = std::min(region.y1, static_cast<int>(std::ceil(std::min(by1, 1e9))));
  }
  return region;
}

// The sample rows face f may cover, [*y0, *y1] within `region`; false when none. A face
// crossing the near plane may reach any row once clipped, one wholly behind it none.
bool FaceRows(const MeshView& m, int64_t f, const Camera& cam, const Region& region, const Scratch& sc, int* y0,
              int* y1) {
  const float near_z = static_cast<float>(cam.near_plane);
  const int32_t* idx = m.faces + 3 * f;
  const int outside = (sc.cam[idx[0]].z < near_z) + (sc.cam[idx[1]].z < near_z) + (sc.cam[idx[2]].z < near_z);
  if (outside == 3) return false;
  double lo = region.y0, hi = region.y1;
  if (outside == 0) {
    const double a = sc.proj[idx[0]].y, b = sc.proj[idx[1]].y, c = sc.proj[idx[2]].y;
    // The same bounds as RasterizeTriangle's; NaN compares false and leaves the region's.
    lo = std::max(lo, std::ceil(std::min({a, b, c})));
    hi = std::min(hi, std::floor(std::max({a, b, c})));
  }
  if (!(lo <= hi)) return false;
  *y0 = static_cast<int>(lo);
  *y1 = static_cast<int>(hi);
  return true;
}

// Counts (fill = false) or lists (fill = true) the faces of every chunk.
void FillBins(const MeshView& m, const Camera& cam, const Region& region, bool fill, Scratch* sc) {
  FaceBins& bins = sc->bins;
  for (int64_t f = 0; f < m.num_faces; ++f) {
    if ((f & 16383) == 16383) InterruptPoint();
    int y0, y1;
    if (!FaceRows(m, f, cam, region, *sc, &y0, &y1)) continue;
    for (int c = y0 / bins.chunk_rows; c <= y1 / bins.chunk_rows; ++c) {
      if (fill) {
        bins.faces[static_cast<size_t>(bins.next[c]++)] = static_cast<int32_t>(f);
      } else {
        ++bins.start[c + 1];
      }
    }
  }
}

// Bins the faces into chunks of whole pixel rows whose G-buffer (16 bytes a sample) fits a
// core's L2 cache: drawn in mesh order over the whole view, faces hit the z-buffer at random
// and most of the time went on cache misses. Faces that would be listed in many chunks
// (slivers, clipped faces) could make the lists outgrow the mesh: then one chunk it is.
void BinFaces(const MeshView& m, const Camera& cam, const Region& region, int s, Scratch* sc) {
  constexpr size_t kChunkBytes = 256 * 1024;
  FaceBins& bins = sc->bins;
  const size_t pixel_row_bytes = static_cast<size_t>(cam.w) * static_cast<size_t>(s) * 16;
  bins.chunk_rows = s * static_cast<int>(std::max<size_t>(1, kChunkBytes / pixel_row_bytes));
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int num_chunks = (cam.h + bins.chunk_rows - 1) / bins.chunk_rows;
    bins.start.assign(static_cast<size_t>(num_chunks) + 1, 0);
    if (!region.empty()) FillBins(m, cam, region, false, sc);
    for (int c = 0; c < num_chunks; ++c) bins.start[c + 1] += bins.start[c];
    const int64_t total = bins.start[num_chunks];
    if (attempt == 0 && num_chunks > 1 && total > 8 * m.num_faces + (int64_t{1} << 20)) {
      bins.chunk_rows = cam.h;
      continue;
    }
    bins.faces.resize(static_cast<size_t>(total));
    bins.next.assign(bins.start.begin(), bins.start.end() - 1);
    if (!region.empty()) FillBins(m, cam, region, true, sc);
    return;
  }
}

// Stage 3, rasterization of one chunk: the nearest face and its barycentrics per sample of
// `region` (the chunk's rows of the view's region) into sc->g; crossing faces are clipped.
void RasterizeChunk(const MeshView& m, const Camera& cam, const Region& region, int chunk, bool cull_back,
                    Scratch* sc) {
  GBuffer* g = &sc->g;
  for (int y = region.y0; y <= region.y1; ++y) {
    const size_t row = g->Index(y, 0, cam.w);
    std::fill(g->inv_z.begin() + row + region.x0, g->inv_z.begin() + row + region.x1 + 1, 0.0f);
    std::fill(g->face.begin() + row + region.x0, g->face.begin() + row + region.x1 + 1, -1);
  }
  const float near_z = static_cast<float>(cam.near_plane);
  const int64_t first = sc->bins.start[chunk], last = sc->bins.start[chunk + 1];
  for (int64_t k = first; k < last; ++k) {
    // Per block of faces, so Ctrl-C stops a big mesh within milliseconds.
    if (((k - first) & 1023) == 1023) InterruptPoint();
    const int32_t f = sc->bins.faces[static_cast<size_t>(k)];
    const int32_t* idx = m.faces + 3 * static_cast<int64_t>(f);
    const Vec3& p0 = sc->cam[idx[0]];
    const Vec3& p1 = sc->cam[idx[1]];
    const Vec3& p2 = sc->cam[idx[2]];
    const int outside = (p0.z < near_z) + (p1.z < near_z) + (p2.z < near_z);
    if (outside == 0) {
      RasterizeTriangle(sc->proj[idx[0]], sc->proj[idx[1]], sc->proj[idx[2]], nullptr, f, cam, region, cull_back, g);
    } else {
      const Vec3 p[3] = {p0, p1, p2};
      ClipAndRasterize(p, f, cam, region, cull_back, g);
    }
  }
}

// Stage 4, shading setup: what the deferred pass needs, face normals included when the
// mesh has no vertex normals and lighting or the normals buffer asks for them.
ViewShading PrepareShading(const MeshView& m, const RenderOptions& o, const RenderTargets& out, Scratch* sc) {
  ViewShading vs;
  vs.cam = &sc->cam;
  vs.face_normals = &sc->face_normals;
  vs.want_xyz = out.xyz != nullptr;
  vs.want_normal = out.normals != nullptr;
  vs.lambert = o.shading == Shading::kLambert && out.rgb != nullptr;
  if ((vs.want_normal || vs.lambert) && m.vertex_normals == nullptr) {
    sc->face_normals.resize(static_cast<size_t>(m.num_faces));
    for (int64_t f = 0; f < m.num_faces; ++f) {
      const int32_t* idx = m.faces + 3 * f;
      const Vec3 &p0 = sc->cam[idx[0]], &p1 = sc->cam[idx[1]], &p2 = sc->cam[idx[2]];
      sc->face_normals[static_cast<size_t>(f)] = Normalized(Cross(p1 - p0, p2 - p0));
    }
  }
  return vs;
}

// One output pixel: the summed colour of its s x s samples, and its centre sample if a
// face covers it (geometric buffers come from the centre only).
struct PixelSamples {
  float color[3] = {0.0f, 0.0f, 0.0f};
  bool have_center = false;
  Shaded center{};
};

// Stage 5, shading: the samples of pixel (u, v), whose first sample row in the band is sy0.
PixelSamples ShadePixel(const MeshView& m, const Pose& pose, const RenderOptions& o, const ViewShading& vs,
                        const Camera& cam, const Region& region, const GBuffer& g, int sy0, int u) {
  const int s = o.supersample, center = s / 2, sx0 = u * s;
  PixelSamples px;
  for (int i = 0; i < s; ++i) {
    for (int j = 0; j < s; ++j) {
      const int sy = sy0 + i, sx = sx0 + j;
      const bool inside = sy >= region.y0 && sy <= region.y1 && sx >= region.x0 && sx <= region.x1;
      const size_t k = inside ? g.Index(sy, sx, cam.w) : 0;
      const int32_t face = inside ? g.face[k] : -1;
      if (face < 0) {
        for (int ch = 0; ch < 3; ++ch) px.color[ch] += o.background[ch] * (1.0f / 255.0f);
        continue;
      }
      const Shaded sh = ShadeSample(m, pose, o, vs, face, g.b0[k], g.b1[k]);
      px.color[0] += sh.color.x;
      px.color[1] += sh.color.y;
      px.color[2] += sh.color.z;
      if (i == center && j == center) {
        px.have_center = true;
        px.center = sh;
        px.center.depth = 1.0f / g.inv_z[k];
      }
    }
  }
  return px;
}

inline void Store3(float* dst, int64_t pix, const Vec3& v) {
  dst[pix * 3] = v.x;
  dst[pix * 3 + 1] = v.y;
  dst[pix * 3 + 2] = v.z;
}

// Stage 6, output: the pixel's averaged colour and centre-sample buffers (zeros when empty).
void WritePixel(const RenderTargets& out, int64_t pix, const PixelSamples& px, float inv_samples) {
  if (out.rgb != nullptr) {
    for (int ch = 0; ch < 3; ++ch) out.rgb[pix * 3 + ch] = ToByte(px.color[ch] * inv_samples);
  }
  if (out.mask != nullptr) out.mask[pix] = px.have_center ? 1 : 0;
  if (out.depth != nullptr) out.depth[pix] = px.have_center ? px.center.depth : 0.0f;
  if (out.xyz != nullptr) Store3(out.xyz, pix, px.have_center ? px.center.xyz : Vec3{0, 0, 0});
  if (out.normals != nullptr) Store3(out.normals, pix, px.have_center ? px.center.normal : Vec3{0, 0, 0});
}

// Stages 5 and 6 for output rows [v0, v1) of the band starting at output row r0, whose
// samples lie in sc->g; `region` is the part of the view's region in these rows.
void ShadeRows(const MeshView& m, const Pose& pose, const RenderOptions& o, const ViewShading& vs, const Camera& cam,
               const Region& region, int64_t view, int r0, int v0, int v1, const RenderTargets& out, Scratch* sc) {
  const int s = o.supersample;
  const int64_t base = view * o.height * o.width;
  const float inv_samples = 1.0f / static_cast<float>(s * s);
  PixelSamples empty;  // a pixel no face can reach: background in every sample
  for (int ch = 0; ch < 3; ++ch) empty.color[ch] = o.background[ch] * (1.0f / 255.0f) * (s * s);
  for (int v = v0; v < v1; ++v) {
    InterruptPoint();
    const int sy0 = (v - r0) * s;
    const bool row_in = !region.empty() && sy0 + s - 1 >= region.y0 && sy0 <= region.y1;
    for (int u = 0; u < o.width; ++u) {
      const int64_t pix = base + static_cast<int64_t>(v) * o.width + u;
      const bool in = row_in && u * s + s - 1 >= region.x0 && u * s <= region.x1;
      WritePixel(out, pix, in ? ShadePixel(m, pose, o, vs, cam, region, sc->g, sy0, u) : empty, inv_samples);
    }
  }
}

// Renders output rows [r0, r1) of one view: the stages above, chunk by chunk of rows.
void RenderRows(const MeshView& m, const Pose& pose, const RenderOptions& o, int64_t view, int r0, int r1,
                const RenderTargets& out, Scratch* sc) {
  const int s = o.supersample;
  const Camera cam = BandCamera(o, r0 * s, r1 * s);
  const Region region = TransformVertices(m, pose, cam, sc);
  const ViewShading vs = PrepareShading(m, o, out, sc);
  BinFaces(m, cam, region, s, sc);
  const int chunk_rows = sc->bins.chunk_rows;
  sc->g.Reset(static_cast<size_t>(chunk_rows) * static_cast<size_t>(cam.w));
  for (int y0 = 0; y0 < cam.h; y0 += chunk_rows) {
    const int y1 = std::min(cam.h, y0 + chunk_rows);
    const Region rows{region.x0, region.x1, std::max(region.y0, y0), std::min(region.y1, y1 - 1)};
    sc->g.row0 = y0;
    if (!rows.empty()) RasterizeChunk(m, cam, rows, y0 / chunk_rows, o.cull_back, sc);
    ShadeRows(m, pose, o, vs, cam, rows, view, r0, r0 + y0 / s, r0 + y1 / s, out, sc);
  }
}

}  // namespace

void RenderBatch(const MeshView& m, const double* poses, int64_t n, const RenderOptions& o, const RenderTargets& out,
                 int num_threads) {
  PYL_CHECK(o.width > 0 && o.height > 0, "image size must be positive, got ", o.width, "x", o.height);
  // A NaN or Inf intrinsic or pose puts every vertex at a NaN pixel: the render would come
  // back empty without a word.
  PYL_CHECK(
      std::isfinite(o.fx) && std::isfinite(o.fy) && std::isfinite(o.cx) && std::isfinite(o.cy) && std::isfinite(o.skew),
      "K contains NaN or Inf (fx=", o.fx, " fy=", o.fy, " cx=", o.cx, " cy=", o.cy, " skew=", o.skew,
      "); pass finite intrinsics");
  PYL_CHECK(o.fx > 0 && o.fy > 0, "focal lengths must be positive, got fx=", o.fx, " fy=", o.fy, ": check K");
  for (int64_t i = 0; i < 12 * n; ++i) {
    PYL_CHECK(std::isfinite(poses[i]), "cam_from_model ", i / 12, " contains NaN or Inf; pass finite poses");
  }
  PYL_CHECK(o.near_plane > 0 && o.far_plane > o.near_plane, "need 0 < near < far, got near=", o.near_plane,
            " far=", o.far_plane);
  // Odd factors put a sample exactly on each pixel centre, where depth, mask, xyz and
  // normals are taken: with even ones they would be off by a fraction of a pixel.
  PYL_CHECK(o.supersample >= 1 && o.supersample <= 7 && o.supersample % 2 == 1,
            "supersample must be 1, 3, 5 or 7, got ", o.supersample);
  PYL_CHECK(o.ambient >= 0.0f && o.ambient <= 1.0f, "ambient must be in [0, 1]");
  PYL_CHECK(m.texture == nullptr || (m.uvs != nullptr && m.tex_width > 0 && m.tex_height > 0),
            "a texture needs per-vertex uvs and a non-empty image");
  for (int64_t i = 0; i < 3 * m.num_faces; ++i) {
    PYL_CHECK(m.faces[i] >= 0 && m.faces[i] < m.num_vertices, "face index ", m.faces[i], " out of range for ",
              m.num_vertices, " vertices");
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
  const int bands =
      n >= num_threads
          ? 1
          : std::min(o.height, (num_threads + static_cast<int>(n) - 1) / static_cast<int>(std::max<int64_t>(n, 1)) * 2);
  const int rows_per_band = (o.height + bands - 1) / bands;
  std::vector<Scratch> scratch(static_cast<size_t>(std::max(num_threads, 1)));
  ParallelFor(n * bands, num_threads, [&](int64_t task, int tid) {
    InterruptPoint();
    const int64_t view = task / bands;
    const int band = static_cast<int>(task % bands);
    const int r0 = band * rows_per_band, r1 = std::min(o.height, r0 + rows_per_band);
    if (r0 >= r1) return;
    Scratch& sc = scratch[static_cast<size_t>(tid)];
    RenderRows(m, ps[static_cast<size_t>(view)], o, view, r0, r1, out, &sc);
  });
}

}  // namespace render
}  // namespace pylocalize
