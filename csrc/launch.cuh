// Host-side launch helpers shared by the kernels: dtype dispatch, the current device's limits
// (queried once per device and cached), the dynamic shared-memory opt-in, grid sizing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>

#include "fastdiff/common.h"

namespace fastdiff {

// Calls f(T{}) with T the C++ type of `dtype`: __half, __nv_bfloat16 or float.
template <typename F> Status dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F16:
      return f(__half{});
    case DType::BF16:
      return f(__nv_bfloat16{});
    case DType::F32:
      return f(float{});
  }
  return Status::invalid("dtype code must be 0 (f16), 1 (bf16) or 2 (f32)");
}

// The same for the 16-bit types alone (the tensor-core kernels).
template <typename F> Status dispatch_dtype16(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F16:
      return f(__half{});
    case DType::BF16:
      return f(__nv_bfloat16{});
    default:
      return Status::invalid("dtype must be f16 or bf16");
  }
}

// The status of the launch just made (launch configuration errors and earlier sticky faults).
inline Status last_launch() { return {cudaGetLastError(), nullptr}; }

// kernel<<<grid, block, smem, stream>>>(args...) and its status; the host build runs the same
// launch on the CPU (csrc/host/cuda_host.h).
template <typename... P, typename... A>
Status launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
#ifdef __CUDACC__
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
#else
  cuda_host::launch(kernel, grid, block, smem, stream, std::forward<A>(args)...);
#endif
  return last_launch();
}

// What the launchers need to know of a device.
struct DeviceLimits {
  int sms = 0;            // streaming multiprocessors
  int smem_optin = 0;     // shared memory one block may take once its kernel opts in: the
                          // capability (227 KiB on sm_90, 163 KiB on sm_80, 99 KiB on sm_86/89)
  int smem_per_sm = 0;    // shared memory of one SM
  int smem_reserved = 0;  // shared memory the runtime reserves per block

  // The most shared memory per block that still lets `blocks_per_sm` blocks reside on one SM (a
  // speed policy's budget): the SM's shared memory split that many ways, less what the runtime
  // reserves per block, never past the opt-in limit. Two blocks per SM: 113 KiB on sm_90, 81 KiB
  // on sm_80, 49 KiB on sm_86/89.
  int smem_budget(int blocks_per_sm) const {
    const int share = smem_per_sm / blocks_per_sm - smem_reserved;
    return share < smem_optin ? share : smem_optin;
  }
};

// Devices whose limits are cached; those past them are queried at every call.
constexpr int kMaxCachedDevices = 64;

// The current device's limits, queried once per device.
inline Status device_limits(DeviceLimits* out) {
  static std::atomic<bool> ready[kMaxCachedDevices];
  static DeviceLimits cache[kMaxCachedDevices];
  static std::mutex mutex;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return {err, nullptr};
  const bool cached = device >= 0 && device < kMaxCachedDevices;
  if (cached && ready[device].load(std::memory_order_acquire)) return *out = cache[device], Status{};
  DeviceLimits l;
  const std::pair<int*, cudaDeviceAttr> attrs[] = {{&l.sms, cudaDevAttrMultiProcessorCount},
                                                   {&l.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin},
                                                   {&l.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor},
                                                   {&l.smem_reserved, cudaDevAttrReservedSharedMemoryPerBlock}};
  for (const auto& [value, attr] : attrs)
    if ((err = cudaDeviceGetAttribute(value, attr, device)) != cudaSuccess) return {err, nullptr};
  if (cached) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!ready[device].load(std::memory_order_relaxed)) {
      cache[device] = l;
      ready[device].store(true, std::memory_order_release);
    }
  }
  *out = l;
  return {};
}

// Blocks for a grid-stride loop over `work` items of `threads`: enough to fill every SM a few
// times over, never more than the work needs.
inline Status grid_stride_blocks(int64_t work, int threads, int* blocks) {
  DeviceLimits dev;
  Status s = device_limits(&dev);
  if (!s.ok()) return s;
  int64_t need = (work + threads - 1) / threads, cap = int64_t(dev.sms) * (2048 / threads) * 2;
  *blocks = int(need < 1 ? 1 : (need < cap ? need : cap));
  return {};
}

// Dynamic shared memory a block may take without opting in.
constexpr size_t kDefaultDynamicSmem = 48 * 1024;

// Lets `kernel` launch with `bytes` of dynamic shared memory on the current device: opts in past
// the default 48 KiB (a per-device attribute, so set before every such launch).
template <typename Kernel> Status allow_dynamic_smem(Kernel* kernel, size_t bytes, const DeviceLimits& dev) {
  if (bytes <= kDefaultDynamicSmem) return {};
  if (bytes > size_t(dev.smem_optin))
    return Status::invalid("the launch needs more shared memory per block than the GPU allows");
  return {cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), nullptr};
}

}  // namespace fastdiff
