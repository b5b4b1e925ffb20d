// adaLN: LayerNorm without affine, then a per-sample modulation (see fastdiff/ops/adaln.py).
#pragma once
#include "fastdiff/common.h"

namespace fastdiff {

// Strides in elements of a (batch, rows, dim) tensor and of a (batch, dim) one.
struct RowStrides {
  int64_t batch = 0, row = 0, col = 1;
};
struct VecStrides {
  int64_t batch = 0, col = 1;
};

// y = LayerNorm(h) * (1 + scale) + shift over dim, for every (batch, row): h = x, or with gate
// h = residual + gate * x, rounded to `dtype` and written to h. Statistics in fp32, two passes.
// Every input is read through its own strides (shift, scale and gate may be chunks of one
// modulation projection); h and y are dense (batch, rows, dim).
struct AdaLNArgs {
  const void* x = nullptr;
  RowStrides x_strides{};
  const void* shift = nullptr;
  VecStrides shift_strides{};
  const void* scale = nullptr;
  VecStrides scale_strides{};
  const void* gate = nullptr;  // null: no residual add, h unused
  VecStrides gate_strides{};
  const void* residual = nullptr;  // with gate
  RowStrides residual_strides{};
  void* h = nullptr;  // with gate
  void* y = nullptr;
  int64_t batch = 0, rows = 0, dim = 0;
  DType dtype = DType::F16;  // of every tensor
  float eps = 1e-6f;
};

Status adaln(const AdaLNArgs& args, cudaStream_t stream);

}  // namespace fastdiff
