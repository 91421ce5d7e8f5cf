#include "pylocalize/image/patch_align.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "pylocalize/util/check.h"
#include "pylocalize/util/threads.h"

namespace pylocalize {
namespace image {
namespace {

// Bilinear samples of the (size + 2)^2 window around a patch centred at (cx, cy): the patch
// and a one-pixel border for central-difference gradients. False when any sample would read
// outside the image.
bool SampleWindow(const float* image, int64_t height, int64_t width, int size, double cx, double cy, float* window) {
  const double half = 0.5 * (size - 1);
  const double x0 = cx - half - 1.0, y0 = cy - half - 1.0;  // the window's first sample
  const double fx = std::floor(x0), fy = std::floor(y0);
  if (!(fx >= 0 && fy >= 0 && fx + size + 2 < width && fy + size + 2 < height)) return false;
  // every sample of a window shares one fractional offset, so one set of bilinear weights
  const float ax = static_cast<float>(x0 - fx), ay = static_cast<float>(y0 - fy);
  const float w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay, w11 = ax * ay;
  const int64_t ix = static_cast<int64_t>(fx), iy = static_cast<int64_t>(fy);
  const int side = size + 2;
  for (int i = 0; i < side; ++i) {
    const float* row0 = image + (iy + i) * width + ix;
    const float* row1 = row0 + width;
    float* out = window + i * side;
    for (int j = 0; j < side; ++j) out[j] = w00 * row0[j] + w01 * row0[j + 1] + w10 * row1[j] + w11 * row1[j + 1];
  }
  return true;
}

struct Moments {
  double mean = 0, inv_std = 0;
};

// Mean and 1 / standard deviation of the patch (the window without its border); inv_std 0
// for a patch flatter than min_stddev.
Moments PatchMoments(const float* window, int size, double min_stddev) {
  const int side = size + 2;
  double sum = 0, sum2 = 0;
  for (int i = 1; i <= size; ++i)
    for (int j = 1; j <= size; ++j) {
      const double v = window[i * side + j];
      sum += v;
      sum2 += v * v;
    }
  const double count = static_cast<double>(size) * size;
  Moments m;
  m.mean = sum / count;
  const double var = std::max(0.0, sum2 / count - m.mean * m.mean);
  m.inv_std = var > min_stddev * min_stddev ? 1.0 / std::sqrt(var) : 0.0;
  return m;
}

// The template of a patch: its reference resampled (bilinear) under the affine warp on a
// size^2 grid; false when the warp reaches outside the reference.
bool WarpTemplate(const uint8_t* reference, int ref_size, const double* a, int size, float* tmpl) {
  const double half = 0.5 * (size - 1), ref_centre = 0.5 * (ref_size - 1);
  for (int i = 0; i < size; ++i)
    for (int j = 0; j < size; ++j) {
      const double dx = j - half, dy = i - half;
      const double u = ref_centre + a[0] * dx + a[1] * dy, v = ref_centre + a[2] * dx + a[3] * dy;
      if (!(u >= 0 && v >= 0 && u <= ref_size - 1 && v <= ref_size - 1)) return false;
      const int iu = std::min(static_cast<int>(u), ref_size - 2), iv = std::min(static_cast<int>(v), ref_size - 2);
      const float au = static_cast<float>(u - iu), av = static_cast<float>(v - iv);
      const uint8_t* r0 = reference + iv * ref_size + iu;
      const uint8_t* r1 = r0 + ref_size;
      tmpl[i * size + j] =
          (1 - au) * (1 - av) * r0[0] + au * (1 - av) * r0[1] + (1 - au) * av * r1[0] + au * av * r1[1];
    }
  return true;
}

void AlignOne(const float* image, int64_t height, int64_t width, const float* tmpl, int size, double x, double y,
              const PatchAlignOptions& o, std::vector<float>& window, std::vector<float>& normalized, double* out_xy,
              float* out_zncc, uint8_t* out_converged, double* out_information) {
  const int side = size + 2;
  const int count = size * size;
  out_xy[0] = x;
  out_xy[1] = y;
  *out_zncc = 0;
  *out_converged = 0;
  out_information[0] = out_information[1] = out_information[2] = 0;
  // the template, zero-mean and unit-variance
  double sum = 0, sum2 = 0;
  for (int p = 0; p < count; ++p) {
    sum += tmpl[p];
    sum2 += static_cast<double>(tmpl[p]) * tmpl[p];
  }
  const double tmean = sum / count;
  const double tvar = std::max(0.0, sum2 / count - tmean * tmean);
  if (!(tvar > o.min_stddev * o.min_stddev) || !std::isfinite(x) || !std::isfinite(y)) return;
  const double tinv = 1.0 / std::sqrt(tvar);
  for (int p = 0; p < count; ++p) normalized[p] = static_cast<float>((tmpl[p] - tmean) * tinv);

  double ux = 0, uy = 0;
  bool converged = false;
  for (int it = 0; it < o.max_iterations; ++it) {
    if (!SampleWindow(image, height, width, size, x + ux, y + uy, window.data())) return;
    const Moments m = PatchMoments(window.data(), size, o.min_stddev);
    if (m.inv_std == 0) return;
    // Gauss-Newton on r = (I - mean) / std - T over the shift; the gradients of the
    // normalized image are those of I over std, made zero-mean (the mean moves with I)
    double gx_mean = 0, gy_mean = 0;
    for (int i = 1; i <= size; ++i)
      for (int j = 1; j <= size; ++j) {
        const float* c = window.data() + i * side + j;
        gx_mean += 0.5 * (c[1] - c[-1]);
        gy_mean += 0.5 * (c[side] - c[-side]);
      }
    gx_mean /= count;
    gy_mean /= count;
    double hxx = 0, hxy = 0, hyy = 0, bx = 0, by = 0;
    for (int i = 1; i <= size; ++i)
      for (int j = 1; j <= size; ++j) {
        const float* c = window.data() + i * side + j;
        const double jx = (0.5 * (c[1] - c[-1]) - gx_mean) * m.inv_std;
        const double jy = (0.5 * (c[side] - c[-side]) - gy_mean) * m.inv_std;
        const double r = (c[0] - m.mean) * m.inv_std - normalized[(i - 1) * size + (j - 1)];
        hxx += jx * jx;
        hxy += jx * jy;
        hyy += jy * jy;
        bx += jx * r;
        by += jy * r;
      }
    const double det = hxx * hyy - hxy * hxy;
    // an edge (one-dimensional gradient) leaves the shift along it undetermined
    if (!(det > 1e-6 * (hxx + hyy) * (hxx + hyy))) return;
    double dx = -(hyy * bx - hxy * by) / det;
    double dy = -(hxx * by - hxy * bx) / det;
    dx = std::clamp(dx, -o.max_step_px, o.max_step_px);
    dy = std::clamp(dy, -o.max_step_px, o.max_step_px);
    ux += dx;
    uy += dy;
    if (std::abs(ux) > o.max_shift_px || std::abs(uy) > o.max_shift_px) return;
    if (std::abs(dx) < o.converged_px && std::abs(dy) < o.converged_px) {
      converged = true;
      break;
    }
  }
  if (!SampleWindow(image, height, width, size, x + ux, y + uy, window.data())) return;
  const Moments m = PatchMoments(window.data(), size, o.min_stddev);
  if (m.inv_std == 0) return;
  double zncc = 0;
  for (int i = 1; i <= size; ++i)
    for (int j = 1; j <= size; ++j)
      zncc += (window[i * side + j] - m.mean) * m.inv_std * normalized[(i - 1) * size + (j - 1)];
  zncc /= count;
  out_xy[0] = x + ux;
  out_xy[1] = y + uy;
  *out_zncc = static_cast<float>(zncc);
  *out_converged = converged ? 1 : 0;
  // The position's information (inverse covariance): the Hessian of the template's
  // normalized intensities (the inverse-compositional one: the template, cut from a map
  // image, is not the noisy frame, whose own gradients would count the noise as texture)
  // over the residual's variance per pixel. Both normalized, the residual's sum of squares
  // is 2 count (1 - zncc); its variance is floored at kMinResidualVariance, about the noise
  // of an 8-bit image, so a perfect match is not taken as infinitely precise.
  constexpr double kMinResidualVariance = 0.02;
  double hxx = 0, hxy = 0, hyy = 0;
  for (int i = 0; i < size; ++i)
    for (int j = 0; j < size; ++j) {
      // central differences inside the template, one-sided on its edge
      const int j0 = std::max(0, j - 1), j1 = std::min(size - 1, j + 1);
      const int i0 = std::max(0, i - 1), i1 = std::min(size - 1, i + 1);
      const double gx = (normalized[i * size + j1] - normalized[i * size + j0]) / (j1 - j0);
      const double gy = (normalized[i1 * size + j] - normalized[i0 * size + j]) / (i1 - i0);
      hxx += gx * gx;
      hxy += gx * gy;
      hyy += gy * gy;
    }
  const double variance = std::max(kMinResidualVariance, 2.0 * (1.0 - zncc) * count / std::max(1, count - 2));
  out_information[0] = hxx / variance;
  out_information[1] = hxy / variance;
  out_information[2] = hyy / variance;
}

}  // namespace

void AlignPatches(const float* image, int64_t height, int64_t width, const uint8_t* references, int ref_size,
                  const double* affines, int64_t n, int template_size, const double* start_xy,
                  const PatchAlignOptions& options, double* out_xy, float* out_zncc, uint8_t* out_converged,
                  double* out_information, int num_threads) {
  const int size = template_size;
  PYL_CHECK(size >= 2 && ref_size >= 2, "template and reference patch sizes must be at least 2, got ", size, " and ",
            ref_size);
  PYL_CHECK(height > size + 2 && width > size + 2, "image of ", width, "x", height, " is smaller than a patch window");
  PYL_CHECK(options.max_iterations >= 1 && options.max_step_px > 0 && options.converged_px > 0 &&
                options.max_shift_px > 0 && options.min_stddev >= 0,
            "patch alignment options must be positive");
  const int64_t per_ref = static_cast<int64_t>(ref_size) * ref_size;
  const int64_t chunk = 64;
  const int64_t chunks = (n + chunk - 1) / chunk;
  ParallelFor(chunks, num_threads, [&](int64_t c, int) {
    const size_t per = static_cast<size_t>(size) * size;
    std::vector<float> window(static_cast<size_t>(size + 2) * (size + 2)), normalized(per), tmpl(per);
    const int64_t end = std::min(n, (c + 1) * chunk);
    for (int64_t k = c * chunk; k < end; ++k) {
      if (!WarpTemplate(references + k * per_ref, ref_size, affines + 4 * k, size, tmpl.data())) {
        out_xy[2 * k] = start_xy[2 * k];
        out_xy[2 * k + 1] = start_xy[2 * k + 1];
        out_zncc[k] = 0;
        out_converged[k] = 0;
        out_information[3 * k] = out_information[3 * k + 1] = out_information[3 * k + 2] = 0;
        continue;
      }
      AlignOne(image, height, width, tmpl.data(), size, start_xy[2 * k], start_xy[2 * k + 1], options, window,
               normalized, out_xy + 2 * k, out_zncc + k, out_converged + k, out_information + 3 * k);
    }
  });
}

}  // namespace image
}  // namespace pylocalize
