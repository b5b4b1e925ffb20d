// fastdiff._C: the CUDA kernels for Python. Takes integers for device pointers and the stream;
// never links libtorch. A CUDA error becomes a RuntimeError naming the op and the CUDA message.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "fastdiff/guidance.h"

namespace py = pybind11;
using namespace fastdiff;

namespace {

template <typename T> T* ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

void check(cudaError_t err, const char* op) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fastdiff.") + op + ": CUDA error: " + cudaGetErrorString(err));
}

DType dtype_of(int code) {
  if (code < 0 || code > 2) throw std::invalid_argument("fastdiff._C: dtype code must be 0 (f16), 1 (bf16) or 2 (f32), got " + std::to_string(code));
  return static_cast<DType>(code);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdiff CUDA kernels (raw pointers, element counts, dtype codes, streams)";
  m.def("cfg_combine", [](uintptr_t u, uintptr_t c, uintptr_t out, int64_t n, int dtype, float scale, uintptr_t stream) {
    check(cfg_combine(ptr<const void>(u), ptr<const void>(c), ptr<void>(out), n, dtype_of(dtype), scale,
                      ptr<CUstream_st>(stream)), "cfg_combine");
  }, py::arg("uncond"), py::arg("cond"), py::arg("out"), py::arg("n"), py::arg("dtype"), py::arg("scale"),
     py::arg("stream"));
  m.def("sampler_step", [](uintptr_t x, uintptr_t model_out, int model_dtype, uintptr_t prev, uintptr_t noise,
                           uintptr_t x_next, uintptr_t d, int64_t n, int dtype, py::tuple k, uintptr_t device_coeffs,
                           bool guided, float guidance_scale, uintptr_t stream) {
    if (k.size() != 6) throw std::invalid_argument("fastdiff._C.sampler_step: coeffs must hold 6 floats");
    SamplerCoeffs c{k[0].cast<float>(), k[1].cast<float>(), k[2].cast<float>(),
                    k[3].cast<float>(), k[4].cast<float>(), k[5].cast<float>()};
    check(sampler_step(ptr<const void>(x), ptr<const void>(model_out), dtype_of(model_dtype), ptr<const void>(prev),
                       ptr<const void>(noise), ptr<void>(x_next), ptr<void>(d), n, dtype_of(dtype), c,
                       ptr<const float>(device_coeffs), guided, guidance_scale, ptr<CUstream_st>(stream)),
          "sampler_step");
  }, py::arg("x"), py::arg("model_out"), py::arg("model_dtype"), py::arg("prev"), py::arg("noise"),
     py::arg("x_next"), py::arg("d"), py::arg("n"), py::arg("dtype"), py::arg("coeffs"),
     py::arg("device_coeffs"), py::arg("guided"), py::arg("guidance_scale"), py::arg("stream"));
}
