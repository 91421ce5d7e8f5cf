// Sub-pixel alignment of image patches: where in a frame each template patch lies, near a
// predicted position, by Lucas-Kanade on the zero-mean, unit-variance intensities (so the
// match is blind to gain and bias, as normalized cross-correlation is).
//
// A tracker's final step: the template of a map point is its reference image's patch warped
// into the frame's view by the predicted pose; aligning it gives the point's image position
// to a fraction of a pixel, where detected keypoints are only as precise as their detector's
// scale (benchmarks/README.md, "Tracking").
#pragma once

#include <cstdint>

namespace pylocalize {
namespace image {

struct PatchAlignOptions {
  int max_iterations = 10;
  double max_step_px = 1.0;    // one Gauss-Newton step is clipped to this (per axis)
  double converged_px = 0.01;  // a step smaller than this ends the iterations
  double max_shift_px = 4.0;   // a patch moved further from its start has failed
  double min_stddev = 1.0;     // in intensity units: a flatter template cannot be aligned
};

// `image`: float32 (height, width), row-major, the frame. `references`: uint8 (n, ref_size,
// ref_size), patch k as its reference image saw it, centred on the point. `affines`: (n, 4),
// row-major 2x2 A_k mapping an offset in the frame to the offset in the reference patch (the
// local warp between the views). The template of patch k is the reference resampled under
// A_k on the frame's pixel grid, template_size^2 pixels: its pixel (i, j) is the frame at
// (x + j - (template_size - 1) / 2, y + i - (template_size - 1) / 2) when the patch's centre
// is at (x, y). `start_xy`: (n, 2) predicted centres. Writes the aligned centres to `out_xy`
// (n, 2), the normalized cross-correlation there to `out_zncc` (n), and to `out_converged`
// (n) 1 where the template lay inside its reference and the iterations converged inside
// the image within max_shift_px of the start, else 0; and to `out_information` (n, 3) the
// aligned position's information [xx, xy, yy] in 1/px^2 (the inverse of its covariance: the
// Hessian of the normalized intensities over the residual's variance per pixel), so that a
// corner counts in both directions, an edge-like patch along its gradient only, and a poor
// match less (zeros where the alignment ran no further than the template).
void AlignPatches(const float* image, int64_t height, int64_t width, const uint8_t* references, int ref_size,
                  const double* affines, int64_t n, int template_size, const double* start_xy,
                  const PatchAlignOptions& options, double* out_xy, float* out_zncc, uint8_t* out_converged,
                  double* out_information, int num_threads = 1);

}  // namespace image
}  // namespace pylocalize
