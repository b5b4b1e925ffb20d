// Runs fastdiff::sampler_step and fastdiff::cfg_combine on device buffers from plain C++ and
// checks them against the same arithmetic on the host. Prints PASS or FAIL; exits non-zero on failure.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fastdiff/guidance.h"

#define CHECK(call)                                                                   \
  do {                                                                                \
    cudaError_t err_ = (call);                                                        \
    if (err_ != cudaSuccess) {                                                        \
      std::fprintf(stderr, "FAIL: %s: %s\n", #call, cudaGetErrorString(err_));        \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

int main() {
  const int64_t n = 4 * 64 * 64 + 3;  // an SD 512px latent plus a ragged tail
  std::vector<float> x(n), m(2 * n), prev(n), x_next(n), d(n), host_next(n);
  std::srand(1);
  auto rnd = [] { return float(std::rand()) / RAND_MAX - 0.3f; };
  for (auto* v : {&x, &prev}) for (auto& e : *v) e = rnd();
  for (auto& e : m) e = rnd();
  const fastdiff::SamplerCoeffs k{0.9f, -0.4f, 0.7f, 0.2f, -0.1f, 0.0f};
  const float s = 7.5f;

  float *dx, *dm, *dprev, *dnext, *dd;
  for (auto** p : {&dx, &dprev, &dnext, &dd}) CHECK(cudaMalloc(p, n * sizeof(float)));
  CHECK(cudaMalloc(&dm, 2 * n * sizeof(float)));
  CHECK(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dprev, prev.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dm, m.data(), 2 * n * sizeof(float), cudaMemcpyHostToDevice));
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  CHECK(fastdiff::sampler_step(dx, dm, fastdiff::DType::F32, dprev, nullptr, dnext, dd, n, fastdiff::DType::F32,
                               k, nullptr, true, s, stream));
  CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaMemcpy(x_next.data(), dnext, n * sizeof(float), cudaMemcpyDeviceToHost));

  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    float g = m[i] + s * (m[n + i] - m[i]);
    float di = k.p * x[i] + k.q * g;
    float want = k.a * x[i] + k.b * di + k.c * prev[i];
    worst = std::fmax(worst, std::fabs(double(want) - x_next[i]));
  }
  for (auto* p : {dx, dm, dprev, dnext, dd}) CHECK(cudaFree(p));
  CHECK(cudaStreamDestroy(stream));
  std::printf("%s: sampler_step max error %.3g over %lld elements\n", worst < 1e-4 ? "PASS" : "FAIL", worst,
              static_cast<long long>(n));
  return worst < 1e-4 ? 0 : 1;
}
