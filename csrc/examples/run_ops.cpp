// Runs fastdiff::group_norm and fastdiff::sampler_step on device buffers from plain C++ (no
// Python, no libtorch) and checks them against the same arithmetic on the host in double.
// Prints PASS or FAIL per check; exits non-zero on any failure.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "fastdiff/group_norm.h"
#include "fastdiff/guidance.h"

static_assert(FASTDIFF_API_VERSION >= 2, "written against the argument-struct API");

#define CHECK_CUDA(call)                                                       \
  do {                                                                         \
    cudaError_t err_ = (call);                                                 \
    if (err_ != cudaSuccess) {                                                 \
      std::fprintf(stderr, "FAIL: %s: %s\n", #call, cudaGetErrorString(err_)); \
      return 1;                                                                \
    }                                                                          \
  } while (0)
#define CHECK_FD(call)                                           \
  do {                                                           \
    fastdiff::Status st_ = (call);                               \
    if (!st_.ok()) {                                             \
      std::fprintf(stderr, "FAIL: %s: %s\n", #call, st_.what()); \
      return 1;                                                  \
    }                                                            \
  } while (0)

namespace {

std::mt19937 rng(1);

std::vector<float> random(size_t n) {
  std::normal_distribution<float> dist(0.5f, 1.f);  // a non-zero mean exposes missing centering
  std::vector<float> v(n);
  for (auto& e : v) e = dist(rng);
  return v;
}

float* upload(const std::vector<float>& h) {
  float* d = nullptr;
  if (cudaMalloc(&d, h.size() * sizeof(float)) != cudaSuccess) return nullptr;
  if (cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) return nullptr;
  return d;
}

bool report(const char* what, double err, double tol) {
  std::printf("%s: %s max error %.3g (tolerance %.1g)\n", err <= tol ? "PASS" : "FAIL", what, err, tol);
  return err <= tol;
}

// GroupNorm + SiLU of an (n, c, spatial) fp32 tensor, NCHW or NHWC, against a double computation.
int check_group_norm(int64_t n, int64_t c, int64_t spatial, int64_t groups, bool channels_last, bool* ok,
                     cudaStream_t stream) {
  const size_t size = size_t(n * c * spatial);
  std::vector<float> x = random(size), w = random(size_t(c)), b = random(size_t(c)), y(size);
  float *dx = upload(x), *dw = upload(w), *db = upload(b), *dy = nullptr;
  void* ws = nullptr;
  if (!dx || !dw || !db) return std::fprintf(stderr, "FAIL: upload\n"), 1;
  CHECK_CUDA(cudaMalloc(&dy, size * sizeof(float)));
  fastdiff::GroupNormArgs args;
  args.x = dx;
  args.y = dy;
  args.weight = dw;
  args.bias = db;
  args.n = n, args.c = c, args.spatial = spatial, args.groups = groups;
  args.dtype = fastdiff::DType::F32;  // weight and bias too (weight_dtype unset)
  args.layout = channels_last ? fastdiff::Layout::NHWC : fastdiff::Layout::NCHW;
  args.activation = fastdiff::Activation::SiLU;
  args.eps = 1e-5f;
  const size_t ws_bytes = fastdiff::group_norm_workspace_size(args);
  if (ws_bytes) CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  args.workspace = ws;
  args.workspace_bytes = ws_bytes;
  CHECK_FD(fastdiff::group_norm(args, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemcpy(y.data(), dy, size * sizeof(float), cudaMemcpyDeviceToHost));

  auto at = [&](int64_t i, int64_t ch, int64_t s) {
    return channels_last ? (i * spatial + s) * c + ch : (i * c + ch) * spatial + s;
  };
  const int64_t cpg = c / groups;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t g = 0; g < groups; ++g) {
      double mean = 0, var = 0;
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch)
        for (int64_t s = 0; s < spatial; ++s) mean += x[at(i, ch, s)];
      mean /= double(cpg * spatial);
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch)
        for (int64_t s = 0; s < spatial; ++s) var += (x[at(i, ch, s)] - mean) * (x[at(i, ch, s)] - mean);
      const double rstd = 1 / std::sqrt(var / double(cpg * spatial) + 1e-5);
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch)
        for (int64_t s = 0; s < spatial; ++s) {
          double v = (x[at(i, ch, s)] - mean) * rstd * w[ch] + b[ch];
          v = v / (1 + std::exp(-v));
          worst = std::fmax(worst, std::fabs(v - y[at(i, ch, s)]));
        }
    }
  for (void* p : {static_cast<void*>(dx), static_cast<void*>(dw), static_cast<void*>(db), static_cast<void*>(dy), ws})
    CHECK_CUDA(cudaFree(p));
  char what[160];
  std::snprintf(what, sizeof what, "group_norm+silu (%lld, %lld, %lld) %s, %s", (long long)n, (long long)c,
                (long long)spatial, channels_last ? "NHWC" : "NCHW", ws_bytes ? "split reduction" : "on chip");
  *ok &= report(what, worst, 1e-4);
  return 0;
}

// A guided DPM-Solver-like step with prev and noise, fp32, with a ragged length.
int check_sampler_step(bool* ok, cudaStream_t stream) {
  const int64_t n = 4 * 64 * 64 + 3;
  std::vector<float> x = random(n), m = random(2 * n), prev = random(n), noise = random(n), x_next(n), d(n);
  const fastdiff::SamplerCoeffs k{0.9f, -0.4f, 0.7f, 0.2f, -0.1f, 0.05f};
  const float s = 7.5f;
  float *dx = upload(x), *dm = upload(m), *dprev = upload(prev), *dnoise = upload(noise), *dnext, *dd;
  if (!dx || !dm || !dprev || !dnoise) return std::fprintf(stderr, "FAIL: upload\n"), 1;
  CHECK_CUDA(cudaMalloc(&dnext, n * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&dd, n * sizeof(float)));
  fastdiff::SamplerStepArgs args;
  args.x = dx;
  args.model_out = dm;  // [uncond; cond]
  args.prev = dprev;
  args.noise = dnoise;
  args.x_next = dnext;
  args.d = dd;
  args.n = n;
  args.dtype = fastdiff::DType::F32;  // model_out too (model_dtype unset)
  args.guidance_scale = s;
  args.coeffs = k;
  CHECK_FD(fastdiff::sampler_step(args, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemcpy(x_next.data(), dnext, n * sizeof(float), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(d.data(), dd, n * sizeof(float), cudaMemcpyDeviceToHost));
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    double g = m[i] + double(s) * (m[n + i] - m[i]);
    double di = double(k.p) * x[i] + double(k.q) * g;
    double want = double(k.a) * x[i] + double(k.b) * di + double(k.c) * prev[i] + double(k.e) * noise[i];
    worst = std::fmax(worst, std::fmax(std::fabs(want - x_next[i]), std::fabs(di - d[i])));
  }
  for (float* p : {dx, dm, dprev, dnoise, dnext, dd}) CHECK_CUDA(cudaFree(p));
  *ok &= report("sampler_step with guidance, prev and noise", worst, 1e-4);
  return 0;
}

}  // namespace

int main() {
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  bool ok = true;
  if (check_group_norm(2, 64, 16 * 20, 32, false, &ok, stream) ||  // fits on chip, 16-byte vectors
      check_group_norm(1, 40, 96 * 96, 4, true, &ok, stream) ||    // split reduction, 10-channel runs
      check_sampler_step(&ok, stream))
    return 1;
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
