// Runs the logic of the CUDA kernels (device_logic.h) on the CPU and checks it against the
// CPU indexes bit for bit: Hamming k-NN (BinaryIndex), SDC k-NN exhaustive, progressive and
// re-ranked (MultiBitIndex, through its KeyScan hook), L2 k-NN on float32 and uint8 rows
// (knn::AssignNearestM) and CANN exact and ivf (CannIndex). The selection is run as the kernel in
// select.cuh runs it: tiles, segments filtered against the running k-th pair, a bitonic
// merge. Built by CMake with -DPYLOCALIZE_BUILD_TESTS=ON, with or without CUDA (ctest).
#include "cuda/device_logic.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "pylocalize/cann/cann_index.h"
#include "pylocalize/cann/layouts.h"
#include "pylocalize/hamming/binary_index.h"
#include "pylocalize/hamming/multibit.h"
#include "pylocalize/knn/kernels.h"
#include "pylocalize/knn/kmeans.h"
#include "pylocalize/util/cpu.h"
#include "pylocalize/util/testing.h"

namespace pylocalize {
namespace {

using testing::Check;

// The running top-k of one row as select.cuh keeps it.
template <class D>
struct Top {
  std::vector<D> keys;
  std::vector<int64_t> labels;
};

// MergeTileKernel of select.cuh for one row, its threads run one after the other: the
// columns [0, ncols) of `keys` with labels label(c), in segments of `segment` columns, of
// which only those `marked` (by the tile kernel's MarkSegment) are read.
template <class D, class Label>
void MergeRow(const D* keys, int64_t ncols, Label label, int64_t k, int64_t segment, const std::vector<bool>& marked,
              Top<D>* top) {
  const int64_t p = gpu::PowerOfTwoAtLeast(k + segment);
  std::vector<D> key(static_cast<size_t>(p));
  std::vector<int64_t> lab(static_cast<size_t>(p));
  for (int64_t seg = 0; seg < ncols; seg += segment) {
    if (!marked[static_cast<size_t>(seg / segment)]) continue;
    const int64_t kept = static_cast<int64_t>(top->keys.size());
    const bool full = kept == k;
    const D t_key = full ? top->keys.back() : gpu::PadKey<D>();
    const int64_t t_label = full ? top->labels.back() : -1;
    int64_t m = 0;
    for (int64_t c = seg; c < std::min(ncols, seg + segment); ++c) {
      if (gpu::Passes(keys[c], label(c), full, t_key, t_label)) {
        key[static_cast<size_t>(k + m)] = keys[c];
        lab[static_cast<size_t>(k + m)] = label(c);
        ++m;
      }
    }
    if (m == 0) continue;
    for (int64_t i = 0; i < p; ++i) {
      if (i < kept) {
        key[static_cast<size_t>(i)] = top->keys[static_cast<size_t>(i)];
        lab[static_cast<size_t>(i)] = top->labels[static_cast<size_t>(i)];
      } else if (i < k || i >= k + m) {
        key[static_cast<size_t>(i)] = gpu::PadKey<D>();
        lab[static_cast<size_t>(i)] = INT64_MAX;
      }
    }
    gpu::BitonicStages(p, [&](int64_t size, int64_t stride) {
      for (int64_t i = 0; i < p; ++i) gpu::BitonicStep(key.data(), lab.data(), i, size, stride);
    });
    const int64_t now = std::min(k, kept + m);
    top->keys.assign(key.begin(), key.begin() + now);
    top->labels.assign(lab.begin(), lab.begin() + now);
  }
}

// The k best of each of nq rows of n keys (rows n apart), in tiles of tile_cols, padded as
// DownloadTopK pads them.
template <class D, class Label>
void Select(const std::vector<D>& keys, int64_t nq, int64_t n, Label label, int64_t k, int64_t tile_cols,
            int64_t segment, D* out_keys, int64_t* out_labels) {
  for (int64_t q = 0; q < nq; ++q) {
    Top<D> top;
    for (int64_t c0 = 0; c0 < n; c0 += tile_cols) {
      const int64_t nc = std::min(tile_cols, n - c0);
      // MarkSegment: the segments with a key passing the k-th pair kept before this tile
      const bool full = static_cast<int64_t>(top.keys.size()) == k;
      std::vector<bool> marked(static_cast<size_t>((nc + segment - 1) / segment), false);
      for (int64_t c = 0; c < nc; ++c) {
        if (gpu::Passes(keys[q * n + c0 + c], label(c0 + c), full, full ? top.keys.back() : gpu::PadKey<D>(),
                        full ? top.labels.back() : int64_t{-1})) {
          marked[static_cast<size_t>(c / segment)] = true;
        }
      }
      MergeRow(keys.data() + q * n + c0, nc, [&](int64_t c) { return label(c0 + c); }, k, segment, marked, &top);
    }
    for (int64_t i = 0; i < k; ++i) {
      const bool kept = i < static_cast<int64_t>(top.keys.size());
      out_keys[q * k + i] = kept ? top.keys[static_cast<size_t>(i)] : gpu::PadKey<D>();
      out_labels[q * k + i] = kept ? top.labels[static_cast<size_t>(i)] : -1;
    }
  }
}

// Word-major copy of n rows of w words: what the device stores.
std::vector<uint64_t> WordMajor(const std::vector<uint64_t>& rows, int64_t n, int64_t w) {
  std::vector<uint64_t> t(static_cast<size_t>(n * w));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < w; ++j) t[static_cast<size_t>(j * n + i)] = rows[static_cast<size_t>(i * w + j)];
  }
  return t;
}

void CheckBitonicSort(std::mt19937_64& rng) {
  for (int64_t n : {1, 2, 8, 64, 512}) {
    std::vector<int32_t> keys(static_cast<size_t>(n));
    std::vector<int64_t> ids(static_cast<size_t>(n));
    std::vector<std::pair<int32_t, int64_t>> ref;
    for (int64_t i = 0; i < n; ++i) {
      keys[static_cast<size_t>(i)] = static_cast<int32_t>(rng() % 7);  // many ties
      ids[static_cast<size_t>(i)] = static_cast<int64_t>(rng() % 1000);
      ref.emplace_back(keys[static_cast<size_t>(i)], ids[static_cast<size_t>(i)]);
    }
    std::sort(ref.begin(), ref.end());
    gpu::BitonicStages(n, [&](int64_t size, int64_t stride) {
      for (int64_t i = 0; i < n; ++i) gpu::BitonicStep(keys.data(), ids.data(), i, size, stride);
    });
    for (int64_t i = 0; i < n; ++i) {
      Check(keys[static_cast<size_t>(i)] == ref[static_cast<size_t>(i)].first &&
                ids[static_cast<size_t>(i)] == ref[static_cast<size_t>(i)].second,
            "bitonic sort orders by (key, id)", static_cast<double>(n), static_cast<double>(i));
    }
  }
}

// Hamming k-NN of the device logic against BinaryIndex::Search: sizes with and without
// compile-time kernels, duplicated codes (ties) and ids that do not follow positions.
void CheckHamming(std::mt19937_64& rng) {
  for (int64_t nbits : {8, 64, 200, 256}) {
    const int64_t n = 700, nq = 9, cs = nbits / 8, words = (nbits + 63) / 64;
    std::vector<uint8_t> codes(static_cast<size_t>(n * cs));
    for (auto& b : codes) b = static_cast<uint8_t>(rng());
    for (int64_t i = 100; i < 300; ++i) std::memcpy(&codes[i * cs], &codes[(i % 10) * cs], cs);  // ties
    std::vector<int64_t> ids(static_cast<size_t>(n));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    BinaryIndex index(nbits);
    index.Add(codes.data(), n, ids.data());
    std::vector<uint8_t> queries(codes.begin(), codes.begin() + nq * cs);
    for (int64_t k : {1, 5, 64, 1000}) {
      std::vector<int32_t> d_ref(static_cast<size_t>(nq * k)), d_dev(d_ref.size());
      std::vector<int64_t> i_ref(d_ref.size()), i_dev(d_ref.size());
      index.Search(queries.data(), nq, k, d_ref.data(), i_ref.data());
      std::vector<uint64_t> rows(static_cast<size_t>(n * words), 0), q(static_cast<size_t>(nq * words), 0);
      for (int64_t i = 0; i < n; ++i) std::memcpy(&rows[i * words], &codes[i * cs], cs);
      for (int64_t i = 0; i < nq; ++i) std::memcpy(&q[i * words], &queries[i * cs], cs);
      const std::vector<uint64_t> t = WordMajor(rows, n, words);
      std::vector<int32_t> keys(static_cast<size_t>(nq * n));
      for (int64_t a = 0; a < nq; ++a) {
        for (int64_t c = 0; c < n; ++c) keys[a * n + c] = gpu::HammingDistance(&q[a * words], &t[c], words, n);
      }
      Select(keys, nq, n, [&](int64_t c) { return ids[c]; }, k, 256, 64, d_dev.data(), i_dev.data());
      Check(d_dev == d_ref && i_dev == i_ref, "Hamming k-NN matches BinaryIndex", static_cast<double>(nbits),
            static_cast<double>(k));
    }
  }
}

// SDC through MultiBitIndex::Search with the device logic as its KeyScan: exhaustive,
// progressive and re-ranked searches must return what the CPU kernels return.
void CheckSdc(std::mt19937_64& rng) {
  for (int u : {1, 2, 3}) {
    const int64_t dim = 100, n = 900, nq = 7;
    std::normal_distribution<float> normal;
    std::vector<float> x(static_cast<size_t>(n * dim)), qx(static_cast<size_t>(nq * dim));
    for (auto& v : x) v = normal(rng);
    for (auto& v : qx) v = normal(rng);
    MultiBitIndex index(dim, u);
    const int64_t cs = index.code_size();
    std::vector<uint8_t> codes(static_cast<size_t>(n * cs)), qcodes(static_cast<size_t>(nq * cs));
    Binarize(x.data(), n, dim, u, codes.data());
    for (int64_t i = 300; i < 400; ++i) std::memcpy(&codes[i * cs], &codes[(i % 5) * cs], cs);  // ties
    Binarize(qx.data(), nq, dim, u, qcodes.data());
    std::vector<int64_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = 5000 - 3 * i;  // descending ids
    index.Add(codes.data(), n, ids.data(), x.data());
    const MultiBitIndex::Rows rows = index.ExportRows();
    const auto ab = index.SdcConstants();
    const int64_t w = u * rows.words_per_plane;
    const std::vector<uint64_t> t = WordMajor(rows.words, n, w);
    const MultiBitIndex::KeyScan scan = [&](const uint64_t* qw, int64_t m, int64_t kc, const int32_t* bounds,
                                            bool by_position, float* keys, int64_t* labels) {
      std::vector<float> all(static_cast<size_t>(m * n));
      for (int64_t a = 0; a < m; ++a) {
        const uint64_t* qa = qw + a * w;
        for (int64_t c = 0; c < n; ++c) {
          float key = gpu::PadKey<float>();
          if (bounds == nullptr || gpu::HammingDistance(qa, &t[c], rows.words_per_plane, n) < bounds[a]) {
            key =
                gpu::SdcKey(gpu::SdcSum(qa, &t[c], u, rows.words_per_plane, n), rows.inv_norms[c], ab.first, ab.second);
          }
          all[a * n + c] = key;
        }
      }
      Select(all, m, n, [&](int64_t c) { return by_position ? c : rows.ids[c]; }, kc, 200, 128, keys, labels);
    };
    struct Case {
      int64_t k, rerank, candidates;
    };
    for (const Case& cs_ : {Case{1, 0, 0}, Case{10, 0, 0}, Case{10, 0, 60}, Case{5, 20, 0}, Case{5, 20, 100}}) {
      const int64_t k = cs_.k;
      std::vector<float> s_ref(static_cast<size_t>(nq * k)), s_dev(s_ref.size());
      std::vector<int64_t> i_ref(s_ref.size()), i_dev(s_ref.size());
      index.Search(qcodes.data(), nq, k, qx.data(), cs_.rerank, cs_.candidates, s_ref.data(), i_ref.data());
      index.Search(qcodes.data(), nq, k, qx.data(), cs_.rerank, cs_.candidates, s_dev.data(), i_dev.data(), &scan);
      Check(i_dev == i_ref, "SDC ids match MultiBitIndex", u, static_cast<double>(cs_.candidates));
      Check(std::memcmp(s_dev.data(), s_ref.data(), s_ref.size() * sizeof(float)) == 0,
            "SDC scores match MultiBitIndex bit for bit", u, static_cast<double>(cs_.rerank));
    }
  }
}

// L2 k-NN of float32 and uint8 rows against knn::AssignNearestM (labels and distances).
void CheckL2(std::mt19937_64& rng) {
  if (ActiveSimdLevel() == SimdLevel::kScalar) {
    std::printf("L2: skipped at the scalar SIMD level (it rounds q * x unfused)\n");
    return;
  }
  const int64_t n = 300, nq = 11, dim = 37, k = 7;
  std::vector<uint8_t> u(static_cast<size_t>(n * dim)), uq(static_cast<size_t>(nq * dim));
  for (auto& v : u) v = static_cast<uint8_t>(rng() % 4);  // coarse values: tied distances
  for (int64_t i = 50; i < 80; ++i) std::memcpy(&u[i * dim], &u[(i % 3) * dim], dim);
  for (auto& v : uq) v = static_cast<uint8_t>(rng() % 4);
  std::normal_distribution<float> normal;
  std::vector<float> f(static_cast<size_t>(n * dim)), fq(static_cast<size_t>(nq * dim));
  for (auto& v : f) v = normal(rng);
  for (auto& v : fq) v = normal(rng);
  for (int pass = 0; pass < 2; ++pass) {
    const bool bytes = pass == 1;
    std::vector<float> rows = bytes ? std::vector<float>(u.begin(), u.end()) : f;
    std::vector<float> q = bytes ? std::vector<float>(uq.begin(), uq.end()) : fq;
    std::vector<int64_t> l_ref(static_cast<size_t>(nq * k)), l_dev(l_ref.size());
    std::vector<float> d_ref(l_ref.size()), d_dev(l_ref.size());
    if (bytes) {
      knn::AssignNearestM(u.data(), n, uq.data(), nq, dim, k, l_ref.data(), d_ref.data(), 2);
    } else {
      knn::AssignNearestM(f.data(), n, fq.data(), nq, dim, k, l_ref.data(), d_ref.data(), 2);
    }
    // as FloatRows stores them: dimension-major, norms in double
    std::vector<float> t(static_cast<size_t>(n * dim)), norms(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      double s = 0.0;
      for (int64_t d = 0; d < dim; ++d) {
        t[d * n + i] = rows[i * dim + d];
        s += static_cast<double>(rows[i * dim + d]) * rows[i * dim + d];
      }
      norms[static_cast<size_t>(i)] = static_cast<float>(s);
    }
    std::vector<float> keys(static_cast<size_t>(nq * n));
    for (int64_t a = 0; a < nq; ++a) {
      for (int64_t c = 0; c < n; ++c) keys[a * n + c] = gpu::L2Key(norms[c], gpu::Dot(&q[a * dim], &t[c], dim, n));
    }
    Select(keys, nq, n, [](int64_t c) { return c; }, k, 128, 32, d_dev.data(), l_dev.data());
    const std::vector<float> xn = knn::SquaredNorms(q.data(), nq, dim);
    for (int64_t a = 0; a < nq; ++a) {
      for (int64_t j = a * k; j < (a + 1) * k; ++j) d_dev[j] = std::max(0.0f, d_dev[j] + xn[a]);
    }
    Check(l_dev == l_ref, "L2 labels match AssignNearestM", pass);
    Check(std::memcmp(d_dev.data(), d_ref.data(), d_ref.size() * sizeof(float)) == 0,
          "L2 distances match AssignNearestM bit for bit", pass);
  }
}

// CANN exact: minima over each image's features in the exact layout, the kernel summed in
// query order, ranked by cann::TopImages, against CannIndex::Search.
void CheckCannExact(std::mt19937_64& rng) {
  if (ActiveSimdLevel() == SimdLevel::kScalar) {
    std::printf("CANN: skipped at the scalar SIMD level (it rounds q * x unfused)\n");
    return;
  }
  const int64_t dim = 24, n = 1500, nq = 40;
  std::normal_distribution<float> normal(0.0f, 20.0f);
  std::vector<float> x(static_cast<size_t>(n * dim)), q(static_cast<size_t>(nq * dim));
  for (auto& v : x) v = normal(rng);
  for (auto& v : q) v = normal(rng);
  std::vector<int64_t> image_ids(static_cast<size_t>(n));
  for (auto& id : image_ids) id = static_cast<int64_t>(rng() % 90) * 7;         // uneven images
  for (int64_t i = 0; i < 30; ++i) image_ids[static_cast<size_t>(i)] = 100000;  // one image of 30 copies
  for (int64_t i = 1; i < 30; ++i) std::memcpy(&x[i * dim], &x[0], dim * sizeof(float));
  CannIndex index(dim);
  index.Add(x.data(), knn::Element::kFloat32, image_ids.data(), n);
  const auto layout = index.GetExactLayout();
  const int64_t num_images = static_cast<int64_t>(layout->images.size());
  for (const CannKernel& kernel : {CannKernel{}, CannKernel{CannKernelType::kGaussian, 120.0, 0.4592, 25.0}}) {
    const int64_t k = 12;
    CannSearchParams params;
    params.kernel = kernel;
    std::vector<float> s_ref(static_cast<size_t>(k)), s_dev(s_ref.size());
    std::vector<int64_t> i_ref(s_ref.size()), i_dev(s_ref.size());
    index.Search(params, q.data(), nq, k, s_ref.data(), i_ref.data(), 2);
    const std::vector<float> qn = knn::SquaredNorms(q.data(), nq, dim);
    std::vector<double> total(static_cast<size_t>(num_images), 0.0);
    const auto* blocks = reinterpret_cast<const float*>(layout->rows.blocks.data());
    for (int64_t a = 0; a < nq; ++a) {
      for (int64_t i = 0; i < num_images; ++i) {
        float best = gpu::PadKey<float>();
        for (int64_t f = layout->offsets[i]; f < layout->offsets[i + 1]; ++f) {
          const float* xf = blocks + (f / knn::kBlock) * dim * knn::kBlock + f % knn::kBlock;
          best = std::min(best, gpu::L2Key(layout->rows.norms[f], gpu::Dot(&q[a * dim], xf, dim, knn::kBlock)));
        }
        total[static_cast<size_t>(i)] += gpu::CannContribution(static_cast<int>(kernel.type), kernel.p0, kernel.p1,
                                                               kernel.sigma, best, qn[static_cast<size_t>(a)]);
      }
    }
    cann::TopImages(total, layout->images, nq, k, s_dev.data(), i_dev.data());
    Check(i_dev == i_ref, "CANN exact images match CannIndex", static_cast<double>(kernel.type));
    Check(std::memcmp(s_dev.data(), s_ref.data(), s_ref.size() * sizeof(float)) == 0,
          "CANN exact scores match CannIndex bit for bit", static_cast<double>(kernel.type));
  }
}

// CANN ivf: the probed lists' slots within the cutoff, per (query feature, image) minima,
// the kernel summed in query order, against CannIndex::Search with one thread (with more the
// CPU adds its threads' partial sums in the order they finish).
void CheckCannIvf(std::mt19937_64& rng) {
  if (ActiveSimdLevel() == SimdLevel::kScalar) {
    std::printf("CANN ivf: skipped at the scalar SIMD level (it rounds q * x unfused)\n");
    return;
  }
  const int64_t dim = 16, n = 3000, nq = 50;
  std::normal_distribution<float> normal(0.0f, 30.0f);
  std::vector<float> x(static_cast<size_t>(n * dim)), q(static_cast<size_t>(nq * dim));
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 0; i < nq; ++i) {  // near database features: pairs within the cutoff
    for (int64_t d = 0; d < dim; ++d) q[i * dim + d] = x[(i * 37) * dim + d] + normal(rng) * 0.1f;
  }
  std::vector<int64_t> image_ids(static_cast<size_t>(n));
  for (auto& id : image_ids) id = static_cast<int64_t>(rng() % 120);
  CannIndex index(dim);
  index.Add(x.data(), knn::Element::kFloat32, image_ids.data(), n);
  index.Train(24, 4, 1, 256, 2);
  const auto layout = index.GetIvfLayout(2);
  const int64_t num_images = static_cast<int64_t>(layout->images.size());
  const int64_t nlist = static_cast<int64_t>(layout->list_block.size()) - 1;
  for (int64_t nprobe : {1, 3, 100}) {
    const int64_t k = 15, np = std::min(nprobe, nlist);
    CannSearchParams params;
    params.method = CannMethod::kIvf;
    params.nprobe = nprobe;
    params.kernel.p0 = 60.0;
    std::vector<float> s_ref(static_cast<size_t>(k)), s_dev(s_ref.size());
    std::vector<int64_t> i_ref(s_ref.size()), i_dev(s_ref.size());
    index.Search(params, q.data(), nq, k, s_ref.data(), i_ref.data(), 1);
    const std::vector<float> qn = knn::SquaredNorms(q.data(), nq, dim);
    std::vector<int64_t> probes(static_cast<size_t>(nq * np));
    layout->quantizer.Assign(q.data(), nq, np, probes.data(), nullptr, 2);
    const float cut2 = static_cast<float>(params.kernel.Cutoff() * params.kernel.Cutoff());
    const auto* blocks = reinterpret_cast<const float*>(layout->rows.blocks.data());
    std::vector<double> total(static_cast<size_t>(num_images), 0.0);
    for (int64_t a = 0; a < nq; ++a) {
      std::vector<float> best(static_cast<size_t>(num_images), gpu::PadKey<float>());
      for (int64_t j = 0; j < np; ++j) {
        const int64_t l = probes[static_cast<size_t>(a * np + j)];
        for (int64_t s = layout->list_block[l] * knn::kBlock; s < layout->list_block[l + 1] * knn::kBlock; ++s) {
          const int32_t image = layout->slot_image[static_cast<size_t>(s)];
          if (image < 0) continue;
          const float* xs = blocks + (s / knn::kBlock) * dim * knn::kBlock + s % knn::kBlock;
          const float d2 = gpu::IvfCandidate(qn[static_cast<size_t>(a)], layout->rows.norms[static_cast<size_t>(s)],
                                             gpu::Dot(&q[a * dim], xs, dim, knn::kBlock), cut2);
          if (d2 >= 0.0f) best[static_cast<size_t>(image)] = std::min(best[static_cast<size_t>(image)], d2);
        }
      }
      for (int64_t i = 0; i < num_images; ++i) {
        if (best[static_cast<size_t>(i)] < gpu::PadKey<float>()) {
          total[static_cast<size_t>(i)] += gpu::CannPairContribution(0, params.kernel.p0, params.kernel.p1,
                                                                     params.kernel.sigma, best[static_cast<size_t>(i)]);
        }
      }
    }
    cann::TopImages(total, layout->images, nq, k, s_dev.data(), i_dev.data());
    Check(i_dev == i_ref, "CANN ivf images match CannIndex", static_cast<double>(nprobe));
    Check(std::memcmp(s_dev.data(), s_ref.data(), s_ref.size() * sizeof(float)) == 0,
          "CANN ivf scores match CannIndex bit for bit", static_cast<double>(nprobe));
    Check(s_ref[0] > 0.0f, "CANN ivf test has scoring pairs", s_ref[0]);
  }
}

}  // namespace
}  // namespace pylocalize

int main() {
  std::mt19937_64 rng(23);
  pylocalize::CheckBitonicSort(rng);
  pylocalize::CheckHamming(rng);
  pylocalize::CheckSdc(rng);
  pylocalize::CheckL2(rng);
  pylocalize::CheckCannExact(rng);
  pylocalize::CheckCannIvf(rng);
  if (pylocalize::testing::g_failures > 0) {
    std::printf("%d failure(s)\n", pylocalize::testing::g_failures);
    return 1;
  }
  std::printf("device logic: all checks passed\n");
  return 0;
}
