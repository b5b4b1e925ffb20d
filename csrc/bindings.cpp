// fastdiff._C: the CUDA kernels for Python (fastdiff._C_host: the same kernels built for the CPU by
// csrc/host). Takes integers for device pointers and the stream, tuples for shapes and strides,
// and an int dtype code; never links libtorch. A failed call raises RuntimeError naming the op and
// carrying the CUDA message.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>

#include "fastdiff/adaln.h"
#include "fastdiff/attention.h"
#include "fastdiff/group_norm.h"
#include "fastdiff/guidance.h"
#include "fastdiff/qk_norm_rope.h"

namespace py = pybind11;
using namespace fastdiff;

namespace {

template <typename T> T* ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

cudaStream_t stream_of(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

void check(Status st, const char* op) {
  if (st.ok()) return;
  throw std::runtime_error(std::string("fastdiff.") + op + (st.message ? ": invalid argument: " : ": CUDA error: ") +
                           st.what());
}

DType dtype_of(int code, const char* op) {
  if (code < 0 || code > 2)
    throw std::invalid_argument(std::string("fastdiff._C.") + op +
                                ": dtype code must be 0 (f16), 1 (bf16) or 2 (f32), got " + std::to_string(code));
  return static_cast<DType>(code);
}

// n integers of a Python sequence, in order.
template <size_t N> std::array<int64_t, N> ints_of(py::sequence s, const char* what, const char* op) {
  if (py::len(s) != N)
    throw std::invalid_argument(std::string("fastdiff._C.") + op + ": " + what + " must hold " + std::to_string(N) +
                                " integers");
  std::array<int64_t, N> out;
  for (size_t i = 0; i < N; ++i) out[i] = s[i].cast<int64_t>();
  return out;
}

Strides3 strides_of(py::sequence s, const char* op) {
  auto v = ints_of<3>(s, "strides (batch, seq, head)", op);
  return {v[0], v[1], v[2]};
}

}  // namespace

#ifndef FASTDIFF_MODULE
#define FASTDIFF_MODULE _C
#endif

PYBIND11_MODULE(FASTDIFF_MODULE, m) {
  m.doc() = "fastdiff CUDA kernels (raw pointers, shapes, strides, dtype codes, streams)";

  // The C++ API's version, and what the attention kernel can run (its capability).
  m.attr("API_VERSION") = FASTDIFF_API_VERSION;
  m.attr("ATTENTION_HEAD_DIMS") = py::make_tuple(kAttentionMinHeadDim, kAttentionMaxHeadDim);
  m.attr("ATTENTION_MAX_SEQ_K") = kAttentionMaxSeq;
  py::tuple attention_dtypes(std::size(kAttentionDTypes));
  for (size_t i = 0; i < std::size(kAttentionDTypes); ++i) attention_dtypes[i] = static_cast<int>(kAttentionDTypes[i]);
  m.attr("ATTENTION_DTYPES") = attention_dtypes;  // dtype codes

  m.def(
      "cfg_combine",
      [](uintptr_t u, uintptr_t c, uintptr_t out, int64_t n, int dtype, float scale, uintptr_t stream) {
        check(cfg_combine(ptr<const void>(u), ptr<const void>(c), ptr<void>(out), n, dtype_of(dtype, "cfg_combine"),
                          scale, stream_of(stream)),
              "cfg_combine");
      },
      py::arg("uncond"), py::arg("cond"), py::arg("out"), py::arg("n"), py::arg("dtype"), py::arg("scale"),
      py::arg("stream"));

  // guidance_scale None: model_out holds n elements; a float: [uncond; cond], 2n elements.
  m.def(
      "sampler_step",
      [](uintptr_t x, uintptr_t model_out, int model_dtype, uintptr_t prev, uintptr_t noise, uintptr_t x_next,
         uintptr_t d, int64_t n, int dtype, py::sequence k, uintptr_t device_coeffs,
         std::optional<float> guidance_scale, uintptr_t stream) {
        if (py::len(k) != 6) throw std::invalid_argument("fastdiff._C.sampler_step: coeffs must hold 6 floats");
        SamplerStepArgs a;
        a.x = ptr<const void>(x);
        a.model_out = ptr<const void>(model_out);
        a.prev = ptr<const void>(prev);
        a.noise = ptr<const void>(noise);
        a.x_next = ptr<void>(x_next);
        a.d = ptr<void>(d);
        a.n = n;
        a.dtype = dtype_of(dtype, "sampler_step");
        a.model_dtype = dtype_of(model_dtype, "sampler_step");
        a.guidance_scale = guidance_scale;
        a.coeffs = {k[0].cast<float>(), k[1].cast<float>(), k[2].cast<float>(),
                    k[3].cast<float>(), k[4].cast<float>(), k[5].cast<float>()};
        a.device_coeffs = ptr<const float>(device_coeffs);
        check(sampler_step(a, stream_of(stream)), "sampler_step");
      },
      py::arg("x"), py::arg("model_out"), py::arg("model_dtype"), py::arg("prev"), py::arg("noise"), py::arg("x_next"),
      py::arg("d"), py::arg("n"), py::arg("dtype"), py::arg("coeffs"), py::arg("device_coeffs"),
      py::arg("guidance_scale"), py::arg("stream"));

  m.def(
      "group_norm_workspace_size",
      [](int64_t n, int64_t c, int64_t spatial, int64_t groups, int dtype) {
        GroupNormArgs a;
        a.n = n, a.c = c, a.spatial = spatial, a.groups = groups;
        a.dtype = dtype_of(dtype, "group_norm_workspace_size");
        return group_norm_workspace_size(a);
      },
      py::arg("n"), py::arg("c"), py::arg("spatial"), py::arg("groups"), py::arg("dtype"));

  // weight and bias: 0 or pointers to c values of weight_dtype (x's dtype or f32).
  m.def(
      "group_norm",
      [](uintptr_t x, uintptr_t y, uintptr_t weight, uintptr_t bias, int64_t n, int64_t c, int64_t spatial,
         int64_t groups, float eps, bool silu, bool channels_last, int dtype, int weight_dtype, uintptr_t workspace,
         size_t workspace_bytes, uintptr_t stream) {
        GroupNormArgs a;
        a.x = ptr<const void>(x);
        a.y = ptr<void>(y);
        a.weight = ptr<const void>(weight);
        a.bias = ptr<const void>(bias);
        a.n = n, a.c = c, a.spatial = spatial, a.groups = groups;
        a.dtype = dtype_of(dtype, "group_norm");
        a.weight_dtype = dtype_of(weight_dtype, "group_norm");
        a.layout = channels_last ? Layout::NHWC : Layout::NCHW;
        a.activation = silu ? Activation::SiLU : Activation::None;
        a.eps = eps;
        a.workspace = ptr<void>(workspace);
        a.workspace_bytes = workspace_bytes;
        check(group_norm(a, stream_of(stream)), "group_norm");
      },
      py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("n"), py::arg("c"), py::arg("spatial"),
      py::arg("groups"), py::arg("eps"), py::arg("silu"), py::arg("channels_last"), py::arg("dtype"),
      py::arg("weight_dtype"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"));

  // Strides in elements: x and residual (batch, row, col), shift, scale and gate (batch, col);
  // gate 0: no residual add (residual and h unused).
  m.def(
      "adaln",
      [](uintptr_t x, py::sequence x_strides, uintptr_t shift, py::sequence shift_strides, uintptr_t scale,
         py::sequence scale_strides, uintptr_t gate, py::sequence gate_strides, uintptr_t residual,
         py::sequence residual_strides, uintptr_t h, uintptr_t y, int64_t batch, int64_t rows, int64_t dim, int dtype,
         float eps, uintptr_t stream) {
        const char* op = "adaln";
        auto rows_of = [&](py::sequence s, const char* what) {
          auto v = ints_of<3>(s, what, op);
          return RowStrides{v[0], v[1], v[2]};
        };
        auto vecs_of = [&](py::sequence s, const char* what) {
          auto v = ints_of<2>(s, what, op);
          return VecStrides{v[0], v[1]};
        };
        AdaLNArgs a;
        a.x = ptr<const void>(x), a.x_strides = rows_of(x_strides, "x_strides");
        a.shift = ptr<const void>(shift), a.shift_strides = vecs_of(shift_strides, "shift_strides");
        a.scale = ptr<const void>(scale), a.scale_strides = vecs_of(scale_strides, "scale_strides");
        a.gate = ptr<const void>(gate), a.gate_strides = vecs_of(gate_strides, "gate_strides");
        a.residual = ptr<const void>(residual), a.residual_strides = rows_of(residual_strides, "residual_strides");
        a.h = ptr<void>(h), a.y = ptr<void>(y);
        a.batch = batch, a.rows = rows, a.dim = dim;
        a.dtype = dtype_of(dtype, op);
        a.eps = eps;
        check(adaln(a, stream_of(stream)), op);
      },
      py::arg("x"), py::arg("x_strides"), py::arg("shift"), py::arg("shift_strides"), py::arg("scale"),
      py::arg("scale_strides"), py::arg("gate"), py::arg("gate_strides"), py::arg("residual"),
      py::arg("residual_strides"), py::arg("h"), py::arg("y"), py::arg("batch"), py::arg("rows"), py::arg("dim"),
      py::arg("dtype"), py::arg("eps"), py::arg("stream"));

  // q and k strides (batch, seq, head, dim) in elements; weights fp32; cos and sin fp32 (seq, head_dim)
  // or 0 (no rotation).
  m.def(
      "qk_norm_rope",
      [](uintptr_t q, py::sequence q_strides, uintptr_t k, py::sequence k_strides, uintptr_t q_weight,
         uintptr_t k_weight, uintptr_t cos, uintptr_t sin, py::sequence shape, int dtype, float eps, uintptr_t stream) {
        const char* op = "qk_norm_rope";
        auto heads_of = [&](py::sequence s, const char* what) {
          auto v = ints_of<4>(s, what, op);
          return HeadStrides{v[0], v[1], v[2], v[3]};
        };
        auto dims = ints_of<4>(shape, "shape (batch, seq, heads, head_dim)", op);
        QKNormRopeArgs a;
        a.q = ptr<void>(q), a.q_strides = heads_of(q_strides, "q_strides");
        a.k = ptr<void>(k), a.k_strides = heads_of(k_strides, "k_strides");
        a.q_weight = ptr<const float>(q_weight), a.k_weight = ptr<const float>(k_weight);
        a.cos = ptr<const float>(cos), a.sin = ptr<const float>(sin);
        a.batch = dims[0], a.seq_len = dims[1], a.heads = dims[2], a.head_dim = dims[3];
        a.dtype = dtype_of(dtype, op);
        a.eps = eps;
        check(qk_norm_rope(a, stream_of(stream)), op);
      },
      py::arg("q"), py::arg("q_strides"), py::arg("k"), py::arg("k_strides"), py::arg("q_weight"), py::arg("k_weight"),
      py::arg("cos"), py::arg("sin"), py::arg("shape"), py::arg("dtype"), py::arg("eps"), py::arg("stream"));

  m.def(
      "attention",
      [](uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, py::sequence shape, py::sequence q_strides,
         py::sequence k_strides, py::sequence v_strides, float scale, int dtype, uintptr_t stream) {
        if (py::len(shape) != 5)
          throw std::invalid_argument("fastdiff._C.attention: shape must be (batch, heads, seq_q, seq_k, head_dim)");
        AttentionArgs a;
        a.q = ptr<const void>(q);
        a.k = ptr<const void>(k);
        a.v = ptr<const void>(v);
        a.out = ptr<void>(out);
        a.batch = shape[0].cast<int64_t>();
        a.heads = shape[1].cast<int64_t>();
        a.seq_q = shape[2].cast<int64_t>();
        a.seq_k = shape[3].cast<int64_t>();
        a.head_dim = shape[4].cast<int64_t>();
        a.q_strides = strides_of(q_strides, "attention");
        a.k_strides = strides_of(k_strides, "attention");
        a.v_strides = strides_of(v_strides, "attention");
        a.scale = scale;
        a.dtype = dtype_of(dtype, "attention");
        check(attention(a, stream_of(stream)), "attention");
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("shape"), py::arg("q_strides"),
      py::arg("k_strides"), py::arg("v_strides"), py::arg("scale"), py::arg("dtype"), py::arg("stream"));
}
