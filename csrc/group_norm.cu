// GroupNorm (+ SiLU) with fp32 statistics merged by Chan's parallel Welford formula.
//
// Every group is shifted by a pivot, its first element (x[n, first channel, 0] in both layouts),
// which every block of the group reads the same: the statistics are those of x - pivot, whose
// mean is of the order of the spread, so no fp32 mean of the order of |x| is ever merged, and the
// output is (x - pivot) * scale + shift, so no product of size |x| / std is ever rounded. x - pivot
// is exact when x lies within a factor 2 of the pivot, which is where a large mean would hurt.
//
// A group is `rows` runs of `cols` contiguous elements, `stride` apart: in NCHW a run is one
// channel (rows = channels per group, cols = spatial size), in NHWC a run is one pixel's
// channels of the group (rows = spatial size, cols = channels per group). Runs are read in
// 16-byte vectors when every run starts aligned and is a whole number of vectors.
//
// Small groups: one block per group reads it once into shared memory, reduces, and normalizes
// from that copy. Large groups: a stats kernel reduces fixed-size chunks of every group into an
// fp32 workspace (count, mean, M2 per chunk), and a normalize kernel merges a group's partials
// and normalizes its chunk, so every SM has work even for a batch of one. Large NHWC groups are
// read by pixel instead: a group's run there is a few bytes of every pixel (8 at 4 fp16 channels
// a group), so blocks that each walk one group fetch every sector once per group in it; a block
// of the rows kernels takes a chunk of pixels with the channels of whole groups (up to 256
// vectors), one contiguous span read in full vectors, and keeps each group's statistics apart (one
// group per thread, whose channels stay the same from pixel to pixel). Groups of runs longer than
// 256 vectors keep the split reduction, whose runs are then long enough.
#include <algorithm>

#include "device.cuh"
#include "dtype.cuh"
#include "fastdiff/group_norm.h"
#include "launch.cuh"

namespace fastdiff {
namespace {

// Speed policy: a group stays on chip when its copy leaves room for two blocks per SM (see
// DeviceLimits::smem_budget: 113 KiB on sm_90, 81 KiB on sm_80); larger groups take the split
// reduction.
constexpr int kOnChipBlocksPerSM = 2;
constexpr int64_t kChunk = 16384;  // elements per block in the split reduction
constexpr int kSplitThreads = 256;
// Resident split blocks per SM asked of ptxas (at most 64 registers a thread): left to choose, it
// squeezed the fp16 NCHW apply kernel into 32 registers with a spill on sm_90a.
constexpr int kSplitBlocksPerSM = 4;
constexpr int kOnChipMaxThreads = 1024;  // the on-chip kernel's largest block (the biggest groups)

struct Welford {
  float n, mean, m2;
};

// The static shared memory of block_reduce, beside a kernel's dynamic shared memory.
constexpr int kReduceSlots = 33;
constexpr int64_t kReduceSmem = (kReduceSlots * int64_t(sizeof(Welford)) + 15) / 16 * 16;

__device__ __forceinline__ Welford merge(Welford a, Welford b) {
  float n = a.n + b.n;
  if (n == 0.f) return a;
  float delta = b.mean - a.mean, fb = b.n / n;
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.n * fb};
}

// The statistics of W values, merged into acc: two passes over registers, one division.
template <int W> __device__ __forceinline__ void push(Welford& acc, const float (&v)[W]) {
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < W; ++j) sum += v[j];
  float mean = sum * (1.f / W), m2 = 0.f;
#pragma unroll
  for (int j = 0; j < W; ++j) m2 += (v[j] - mean) * (v[j] - mean);
  acc = merge(acc, {float(W), mean, m2});
}

// The merged statistics of the whole block, returned to every thread.
__device__ Welford block_reduce(Welford w) {
  __shared__ Welford slots[kReduceSlots];  // one per warp, then the total
  Welford* warps = slots;
  Welford& total = slots[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    w = merge(w, {__shfl_xor_sync(~0u, w.n, o), __shfl_xor_sync(~0u, w.mean, o), __shfl_xor_sync(~0u, w.m2, o)});
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warps[warp] = w;
  __syncthreads();
  if (warp == 0) {
    w = lane < blockDim.x / 32 ? warps[lane] : Welford{0.f, 0.f, 0.f};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      w = merge(w, {__shfl_xor_sync(~0u, w.n, o), __shfl_xor_sync(~0u, w.mean, o), __shfl_xor_sync(~0u, w.m2, o)});
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}

// Where the vectors of one group lie, and which channel each element belongs to.
struct Group {
  int64_t base;      // element offset of the group's first element
  uint32_t cols_v;   // vectors per run
  int64_t stride;    // elements between runs
  uint32_t cpg;      // channels per group
  uint32_t first_c;  // the group's first channel

  template <bool CL> __device__ static Group of(int64_t group, int64_t c, int64_t spatial, int64_t groups, int V) {
    const int64_t i = group / groups, g = group % groups, cpg = c / groups;
    if (CL) return {i * spatial * c + g * cpg, uint32_t(cpg / V), c, uint32_t(cpg), uint32_t(g * cpg)};
    return {(i * c + g * cpg) * spatial, uint32_t(spatial / V), spatial, uint32_t(cpg), uint32_t(g * cpg)};
  }
  __device__ int64_t offset(uint32_t k, int V) const {  // of the k-th vector
    return base + int64_t(k / cols_v) * stride + int64_t(k % cols_v) * V;
  }
  template <bool CL> __device__ uint32_t channel(uint32_t k, int j, int V) const {  // within the group
    return CL ? (k % cols_v) * V + j : k / cols_v;
  }
};

// scale[j] = rstd * weight, shift[j] = bias - mean * scale for the group's channels, in shared memory
// (mean: that of x - pivot). weight and bias (of W, or null) are converted to fp32 on load.
template <typename W> __device__ void affine(const Group& grp, Welford st, float eps, const W* weight, const W* bias,
                                             float* scale, float* shift) {
  const float rstd = rsqrtf(st.m2 / st.n + eps);
  for (uint32_t j = threadIdx.x; j < grp.cpg; j += blockDim.x) {
    float s = rstd * (weight ? to_f32(weight[grp.first_c + j]) : 1.f);
    scale[j] = s;
    shift[j] = (bias ? to_f32(bias[grp.first_c + j]) : 0.f) - st.mean * s;
  }
  __syncthreads();
}

template <typename T, int V, bool CL>
__device__ __forceinline__ void normalize_store(T* y, const Group& grp, uint32_t k, const float (&v)[V], float pivot,
                                                const float* scale, const float* shift, bool silu) {
  Vec<T, V> out;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    uint32_t ch = grp.channel<CL>(k, j, V);
    float r = (v[j] - pivot) * scale[ch] + shift[ch];
    if (silu) r = r / (1.f + __expf(-r));
    out.v[j] = from_f32<T>(r);
  }
  *reinterpret_cast<Vec<T, V>*>(y + grp.offset(k, V)) = out;
}

template <typename T, int V> __device__ __forceinline__ void load(const T* p, float (&v)[V], float pivot = 0.f) {
  Vec<T, V> in = *reinterpret_cast<const Vec<T, V>*>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = to_f32(in.v[j]) - pivot;
}

// One block per group: read once into shared memory, reduce, normalize from the copy.
template <typename T, typename W, int V, bool CL> __global__ void __launch_bounds__(kOnChipMaxThreads)
    group_norm_on_chip(const T* __restrict__ x, T* __restrict__ y, const W* __restrict__ weight,
                       const W* __restrict__ bias, int64_t c, int64_t spatial, int64_t groups, float eps, bool silu) {
  float4* smem = dynamic_smem();
  const Group grp = Group::of<CL>(blockIdx.x, c, spatial, groups, V);
  const uint32_t nvec = uint32_t(c / groups * spatial / V);
  float* scale = reinterpret_cast<float*>(smem);
  float* shift = scale + grp.cpg;
  Vec<T, V>* copy =
      reinterpret_cast<Vec<T, V>*>(smem) + (2 * grp.cpg * sizeof(float) + sizeof(Vec<T, V>) - 1) / sizeof(Vec<T, V>);
  const float pivot = to_f32(x[grp.base]);
  Welford acc{0.f, 0.f, 0.f};
  for (uint32_t k = threadIdx.x; k < nvec; k += blockDim.x) {
    Vec<T, V> in = *reinterpret_cast<const Vec<T, V>*>(x + grp.offset(k, V));
    copy[k] = in;  // each thread reads back only what it wrote: no barrier needed
    float v[V];
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = to_f32(in.v[j]) - pivot;
    push(acc, v);
  }
  affine(grp, block_reduce(acc), eps, weight, bias, scale, shift);
  for (uint32_t k = threadIdx.x; k < nvec; k += blockDim.x) {
    float v[V];
    load<T, V>(reinterpret_cast<const T*>(copy + k), v);
    normalize_store<T, V, CL>(y, grp, k, v, pivot, scale, shift, silu);
  }
}

// Split reduction, pass 1: the statistics of x - pivot over chunk blockIdx.x % chunks of group
// blockIdx.x / chunks.
template <typename T, int V, bool CL> __global__ void __launch_bounds__(kSplitThreads, kSplitBlocksPerSM)
    group_norm_stats(const T* __restrict__ x, Welford* __restrict__ partial, int64_t c, int64_t spatial, int64_t groups,
                     int chunks) {
  const Group grp = Group::of<CL>(blockIdx.x / chunks, c, spatial, groups, V);
  const uint32_t nvec = uint32_t(c / groups * spatial / V), per = kChunk / V;
  const uint32_t lo = (blockIdx.x % chunks) * per, hi = min(nvec, lo + per);
  const float pivot = to_f32(x[grp.base]);  // the group's, the same in every chunk
  Welford acc{0.f, 0.f, 0.f};
  for (uint32_t k = lo + threadIdx.x; k < hi; k += blockDim.x) {
    float v[V];
    load<T, V>(x + grp.offset(k, V), v, pivot);
    push(acc, v);
  }
  acc = block_reduce(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Split reduction, pass 2: merge the group's partials, normalize this block's chunk.
template <typename T, typename W, int V, bool CL> __global__ void __launch_bounds__(kSplitThreads, kSplitBlocksPerSM)
    group_norm_apply(const T* __restrict__ x, T* __restrict__ y, const Welford* __restrict__ partial,
                     const W* __restrict__ weight, const W* __restrict__ bias, int64_t c, int64_t spatial,
                     int64_t groups, int chunks, float eps, bool silu) {
  float4* smem = dynamic_smem();
  const int64_t group = blockIdx.x / chunks;
  const Group grp = Group::of<CL>(group, c, spatial, groups, V);
  float* scale = reinterpret_cast<float*>(smem);
  float* shift = scale + grp.cpg;
  Welford acc{0.f, 0.f, 0.f};
  for (int j = threadIdx.x; j < chunks; j += blockDim.x) acc = merge(acc, partial[group * chunks + j]);
  affine(grp, block_reduce(acc), eps, weight, bias, scale, shift);
  const uint32_t nvec = uint32_t(c / groups * spatial / V), per = kChunk / V;
  const uint32_t lo = (blockIdx.x % chunks) * per, hi = min(nvec, lo + per);
  const float pivot = to_f32(x[grp.base]);
  for (uint32_t k = lo + threadIdx.x; k < hi; k += blockDim.x) {
    float v[V];
    load<T, V>(x + grp.offset(k, V), v);
    normalize_store<T, V, CL>(y, grp, k, v, pivot, scale, shift, silu);
  }
}

// The rows kernels: sample i's pixels in `chunks` chunks and its c / V vectors a pixel in column
// blocks of `lanes` (whole groups): block (i, column block, chunk) has rows x lanes threads, thread
// t the V channels of vector lane = column block * lanes + t % lanes of every rows-th pixel of the
// chunk from its t / lanes-th; a lane past c / V does nothing.
struct Rows {
  int64_t i, lo, hi;
  uint32_t cb, lane, row, rows, ch, group;

  __device__ static Rows of(int64_t c, int64_t spatial, int64_t groups, int chunks, uint32_t lanes, int V) {
    const uint32_t cblocks = uint32_t((c / V + lanes - 1) / lanes);
    const uint32_t per = uint32_t((spatial + chunks - 1) / chunks), chunk = blockIdx.x % chunks;
    Rows r;
    r.i = blockIdx.x / chunks / cblocks;
    r.cb = blockIdx.x / chunks % cblocks;
    r.lane = r.cb * lanes + threadIdx.x % lanes, r.row = threadIdx.x / lanes, r.rows = blockDim.x / lanes;
    r.lo = int64_t(chunk) * per;
    r.hi = r.lane < c / V ? std::min<int64_t>(r.lo + per, spatial) : r.lo;  // idle lanes: no pixels
    r.ch = r.lane * V, r.group = uint32_t(std::min<int64_t>(r.ch / (c / groups), groups - 1));
    return r;
  }
};

// Rows pass 1: each group's statistics of x - pivot over the chunk's pixels, to the partials
// (laid out as the split reduction's: chunk blockIdx.x % chunks of each group).
template <typename T, int V> __global__ void __launch_bounds__(kSplitThreads, kSplitBlocksPerSM)
    group_norm_rows_stats(const T* __restrict__ x, Welford* __restrict__ partial, int64_t c, int64_t spatial,
                          int64_t groups, int chunks, uint32_t lanes) {
  Welford* slots = reinterpret_cast<Welford*>(dynamic_smem());  // one per thread
  const Rows r = Rows::of(c, spatial, groups, chunks, lanes, V);
  const int64_t cpg = c / groups, sample = r.i * spatial * c;
  const float pivot = to_f32(x[sample + r.group * cpg]);
  Welford acc{0.f, 0.f, 0.f};
  for (int64_t p = r.lo + r.row; p < r.hi; p += r.rows) {
    float v[V];
    load<T, V>(x + sample + p * c + r.ch, v, pivot);
    push(acc, v);
  }
  slots[threadIdx.x] = acc;
  __syncthreads();
  // thread t merges the column block's t-th group: its cpg / V lanes in every row
  const uint32_t per_group = uint32_t(cpg / V);
  const int64_t g = int64_t(r.cb) * (lanes / per_group) + threadIdx.x;
  if (threadIdx.x < lanes / per_group && g < groups) {
    acc = Welford{0.f, 0.f, 0.f};
    for (uint32_t row = 0; row < r.rows; ++row)
      for (uint32_t l = 0; l < per_group; ++l) acc = merge(acc, slots[row * lanes + threadIdx.x * per_group + l]);
    partial[(r.i * groups + g) * chunks + blockIdx.x % chunks] = acc;
  }
}

// Rows pass 2, one block a group: its partials merged, {count, mean of x - pivot, rstd} written
// over its first partial.
__global__ void __launch_bounds__(kSplitThreads)
    group_norm_rows_finalize(Welford* __restrict__ partial, int chunks, float eps) {
  Welford acc{0.f, 0.f, 0.f};
  Welford* mine = partial + int64_t(blockIdx.x) * chunks;
  for (int j = threadIdx.x; j < chunks; j += blockDim.x) acc = merge(acc, mine[j]);
  acc = block_reduce(acc);  // its barriers order every read above before the write below
  if (threadIdx.x == 0) mine[0] = {acc.n, acc.mean, rsqrtf(acc.m2 / acc.n + eps)};
}

// Rows pass 3: normalize the chunk's pixels, each thread's V scales and shifts in registers.
template <typename T, typename W, int V> __global__ void __launch_bounds__(kSplitThreads, kSplitBlocksPerSM)
    group_norm_rows_apply(const T* __restrict__ x, T* __restrict__ y, const Welford* __restrict__ partial,
                          const W* __restrict__ weight, const W* __restrict__ bias, int64_t c, int64_t spatial,
                          int64_t groups, int chunks, uint32_t lanes, bool silu) {
  const Rows r = Rows::of(c, spatial, groups, chunks, lanes, V);
  if (r.hi == r.lo) return;
  const int64_t cpg = c / groups, sample = r.i * spatial * c;
  const Welford st = partial[(r.i * groups + r.group) * chunks];  // m2 holds rstd
  const float pivot = to_f32(x[sample + r.group * cpg]);
  float scale[V], shift[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    scale[j] = st.m2 * (weight ? to_f32(weight[r.ch + j]) : 1.f);
    shift[j] = (bias ? to_f32(bias[r.ch + j]) : 0.f) - st.mean * scale[j];
  }
  for (int64_t p = r.lo + r.row; p < r.hi; p += r.rows) {
    float v[V];
    load<T, V>(x + sample + p * c + r.ch, v, pivot);
    Vec<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      float o = v[j] * scale[j] + shift[j];
      if (silu) o = o / (1.f + __expf(-o));
      out.v[j] = from_f32<T>(o);
    }
    *reinterpret_cast<Vec<T, V>*>(y + sample + p * c + r.ch) = out;
  }
}

int64_t chunks_of(int64_t group_elems) { return (group_elems + kChunk - 1) / kChunk; }

// The dynamic shared memory of group_norm_on_chip (for any vector width): the group's scale and
// shift, then its copy.
int64_t on_chip_smem(int64_t cpg, int64_t elems, int64_t elem_bytes) {
  return (2 * cpg * int64_t(sizeof(float)) + 15) / 16 * 16 + elems * elem_bytes;
}

// Whether a group of cpg channels and `elems` elements stays on chip on a device.
bool on_chip(const DeviceLimits& dev, int64_t cpg, int64_t elems, int64_t elem_bytes) {
  return on_chip_smem(cpg, elems, elem_bytes) + kReduceSmem <= dev.smem_budget(kOnChipBlocksPerSM);
}

int64_t bytes_of(DType dtype) { return dtype == DType::F32 ? 4 : 2; }

size_t workspace_size(const GroupNormArgs& a, const DeviceLimits& dev) {
  if (a.n <= 0 || a.c <= 0 || a.spatial <= 0 || a.groups <= 0 || a.c % a.groups) return 0;
  const int64_t cpg = a.c / a.groups, elems = cpg * a.spatial;
  if (on_chip(dev, cpg, elems, bytes_of(a.dtype))) return 0;
  return size_t(a.n * a.groups * chunks_of(elems)) * sizeof(Welford);
}

template <typename T, typename W, int V, bool CL>
Status launch(const GroupNormArgs& a, const DeviceLimits& dev, cudaStream_t stream) {
  auto x = static_cast<const T*>(a.x);
  auto y = static_cast<T*>(a.y);
  auto weight = static_cast<const W*>(a.weight), bias = static_cast<const W*>(a.bias);
  const bool silu = a.activation == Activation::SiLU;
  const int64_t cpg = a.c / a.groups, elems = cpg * a.spatial, affine_bytes = 2 * cpg * int64_t(sizeof(float));
  if (on_chip(dev, cpg, elems, sizeof(T))) {
    const size_t smem = size_t(on_chip_smem(cpg, elems, sizeof(T)));
    const int64_t nvec = elems / V;
    const int threads = int(nvec >= 8192 ? kOnChipMaxThreads : nvec >= 2048 ? 512 : nvec >= 512 ? 256 : 128);
    auto kernel = group_norm_on_chip<T, W, V, CL>;
    Status st = allow_dynamic_smem(kernel, smem, dev);
    if (!st.ok()) return st;
    return launch_kernel(kernel, unsigned(a.n * a.groups), threads, smem, stream, x, y, weight, bias, a.c, a.spatial,
                         a.groups, a.eps, silu);
  }
  auto partial = static_cast<Welford*>(a.workspace);
  const int64_t per_group = cpg / V;
  if (CL && per_group <= kSplitThreads) {
    // Rows: column blocks of at most kSplitThreads lanes (whole groups), as many rows as fill
    // kSplitThreads threads, about kSplitBlocksPerSM blocks an SM, chunks of at least one pixel a
    // row and never more than the split reduction's workspace holds.
    const int64_t vectors = a.c / V;
    const uint32_t lanes = uint32_t(std::min(vectors, kSplitThreads / per_group * per_group));
    const int rows = std::max(1, kSplitThreads / int(lanes)), threads = rows * int(lanes);
    const int64_t cblocks = (vectors + lanes - 1) / lanes;
    const int64_t want = (int64_t(kSplitBlocksPerSM) * dev.sms + a.n * cblocks - 1) / (a.n * cblocks);
    const int chunks = int(std::max<int64_t>(1, std::min({want, chunks_of(elems), (a.spatial + rows - 1) / rows})));
    const unsigned blocks = unsigned(a.n * cblocks * chunks);
    const size_t slots = size_t(threads) * sizeof(Welford);
    auto stats = group_norm_rows_stats<T, V>;
    Status st = allow_dynamic_smem(stats, slots, dev);
    if (!st.ok()) return st;
    st = launch_kernel(stats, blocks, threads, slots, stream, x, partial, a.c, a.spatial, a.groups, chunks, lanes);
    if (!st.ok()) return st;
    st = launch_kernel(group_norm_rows_finalize, unsigned(a.n * a.groups), kSplitThreads, 0, stream, partial, chunks,
                       a.eps);
    if (!st.ok()) return st;
    return launch_kernel(group_norm_rows_apply<T, W, V>, blocks, threads, 0, stream, x, y, partial, weight, bias, a.c,
                         a.spatial, a.groups, chunks, lanes, silu);
  }
  const int chunks = int(chunks_of(elems));
  const unsigned blocks = unsigned(a.n * a.groups * chunks);
  Status st = launch_kernel(group_norm_stats<T, V, CL>, blocks, kSplitThreads, 0, stream, x, partial, a.c, a.spatial,
                            a.groups, chunks);
  if (!st.ok()) return st;
  auto apply = group_norm_apply<T, W, V, CL>;
  st = allow_dynamic_smem(apply, size_t(affine_bytes), dev);
  if (!st.ok()) return st;
  return launch_kernel(apply, blocks, kSplitThreads, size_t(affine_bytes), stream, x, y, partial, weight, bias, a.c,
                       a.spatial, a.groups, chunks, a.eps, silu);
}

}  // namespace

size_t group_norm_workspace_size(const GroupNormArgs& args) {
  // Where the device cannot be queried the launch fails anyway; size for the split reduction,
  // which is never too small.
  DeviceLimits dev;
  if (!device_limits(&dev).ok()) dev = DeviceLimits{};
  return workspace_size(args, dev);
}

Status group_norm(const GroupNormArgs& a, cudaStream_t stream) {
  if (a.n < 0 || a.c <= 0 || a.spatial < 0 || a.groups <= 0 || a.c % a.groups)
    return Status::invalid("expected n >= 0, c > 0, spatial >= 0 and groups dividing c");
  if (a.c / a.groups * a.spatial >= (int64_t(1) << 31))
    return Status::invalid("a group must hold fewer than 2^31 elements");
  const DType weight_dtype = a.weight_dtype.value_or(a.dtype);
  if (weight_dtype != a.dtype && weight_dtype != DType::F32)
    return Status::invalid("weight_dtype must be dtype or f32");
  if (a.workspace_bytes && !a.workspace) return Status::invalid("workspace is null but workspace_bytes is not 0");
  if (a.n == 0 || a.spatial == 0) return {};
  DeviceLimits dev;
  Status st = device_limits(&dev);
  if (!st.ok()) return st;
  if (a.workspace_bytes < workspace_size(a, dev))
    return Status::invalid("workspace smaller than group_norm_workspace_size()");
  return dispatch_dtype(a.dtype, [&](auto t) {
    using T = decltype(t);
    // Vectors never straddle runs, and every run starts aligned to the vector.
    const bool nhwc = a.layout == Layout::NHWC;
    const int64_t run = nhwc ? a.c / a.groups : a.spatial, stride = nhwc ? a.c : a.spatial;
    return dispatch_width<T>(vector_width<T>(a.x, a.y, run, stride), [&](auto v) {
      constexpr int V = decltype(v)::value;
      auto by_layout = [&](auto w) {
        using W = decltype(w);
        return nhwc ? launch<T, W, V, true>(a, dev, stream) : launch<T, W, V, false>(a, dev, stream);
      };
      // weight and bias in x's dtype or in fp32 (for float x both are float: one kernel)
      return weight_dtype == DType::F32 ? by_layout(float{}) : by_layout(T{});
    });
  });
}

}  // namespace fastdiff
