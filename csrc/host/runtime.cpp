// The host runtime behind cuda_host.h: the emulated device, launches on a pool of threads, block
// and warp barriers, shared memory, and the few runtime API calls the kernels and examples make.
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cuda_host.h"

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

namespace cuda_host {
namespace {

// The emulated device: one SM with an H100's shared memory, so that the launchers choose the
// same kernels and shared-memory sizes as on that GPU, and grid-stride loops take several turns.
constexpr int kSMs = 1;
constexpr int kSmemOptin = 227 * 1024, kSmemPerSM = 228 * 1024, kSmemReserved = 1024;
constexpr size_t kDefaultDynamicSmem = 48 * 1024;
constexpr unsigned kMaxThreads = 1024, kWarps = kMaxThreads / 32;

thread_local cudaError_t last_error = cudaSuccess;

// A barrier for a fixed set of threads, from which a thread that leaves the kernel drops out.
class Barrier {
 public:
  void reset(int count) { count_ = count, arrived_ = 0; }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == count_) return release();
    cv_.wait(lock, [&] { return generation_ != generation; });
  }
  void drop() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--count_ > 0 && arrived_ == count_) release();
  }

 private:
  void release() {  // with mutex_ held
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_ = 0, arrived_ = 0;
  uint64_t generation_ = 0;
};

// One block in flight (blocks run one after another).
struct Block {
  Barrier threads;
  Barrier warps[kWarps];
  // Two buffers per warp, used in turn, so one barrier per exchange suffices: a lane can write a
  // buffer again only after every lane has passed the next exchange's barrier, hence read this one.
  unsigned char exchange[kWarps][2][32][kExchangeBytes];
  float4* smem = nullptr;
};

struct ThreadContext {
  Block* block = nullptr;
  int warp = 0, lane = 0, phase = 0;
};
thread_local ThreadContext context;

// Threads that run the blocks, started as blocks need them and kept for later launches.
class Pool {
 public:
  void run_block(Block* block, const std::function<void()>* body, uint3 block_idx, dim3 block_dim, dim3 grid_dim) {
    const int n = int(block_dim.x * block_dim.y * block_dim.z);
    while (int(workers_.size()) < n) {
      workers_.push_back(std::make_unique<Worker>());
      std::thread(&Pool::work, this, int(workers_.size()) - 1, workers_.back().get()).detach();
    }
    block_ = block, body_ = body, block_idx_ = block_idx, block_dim_ = block_dim, grid_dim_ = grid_dim;
    block->threads.reset(n);
    for (int w = 0; w < n; w += 32) block->warps[w / 32].reset(n - w < 32 ? n - w : 32);
    remaining_ = n;
    for (int i = 0; i < n; ++i) {
      std::lock_guard<std::mutex> lock(workers_[i]->mutex);
      workers_[i]->go = true;
      workers_[i]->cv.notify_one();
    }
    std::unique_lock<std::mutex> lock(done_mutex_);
    done_cv_.wait(lock, [&] { return remaining_ == 0; });
  }

 private:
  struct Worker {
    std::mutex mutex;
    std::condition_variable cv;
    bool go = false;
  };

  void work(int i, Worker* worker) {
    Worker& me = *worker;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(me.mutex);
        me.cv.wait(lock, [&] { return me.go; });
        me.go = false;
      }
      blockIdx = block_idx_, blockDim = block_dim_, gridDim = grid_dim_;
      threadIdx = {i % block_dim_.x, i / block_dim_.x % block_dim_.y, i / (block_dim_.x * block_dim_.y)};
      context = {block_, i / 32, i % 32, 0};
      (*body_)();
      block_->threads.drop();
      block_->warps[i / 32].drop();
      context = {};
      std::lock_guard<std::mutex> lock(done_mutex_);
      if (--remaining_ == 0) done_cv_.notify_one();
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  Block* block_ = nullptr;
  const std::function<void()>* body_ = nullptr;
  uint3 block_idx_{};
  dim3 block_dim_, grid_dim_;
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  int remaining_ = 0;
};

std::mutex launch_mutex;  // one launch at a time: blocks, and so static shared memory, never overlap

std::mutex attribute_mutex;
std::unordered_map<const void*, int> max_dynamic_smem;  // per kernel, as cudaFuncSetAttribute set it

// FASTDIFF_EMULATE_DROP_BARRIER=FILE:LINE skips the __syncthreads at that line of that source
// file: how a test shows that the barrier is needed.
struct DroppedBarrier {
  std::string file;
  int line = -1;
  DroppedBarrier() {
    const char* env = std::getenv("FASTDIFF_EMULATE_DROP_BARRIER");
    const std::string spec = env ? env : "";
    const size_t colon = spec.rfind(':');
    if (colon == std::string::npos) return;
    file = "/" + spec.substr(0, colon);
    line = std::atoi(spec.c_str() + colon + 1);
  }
  bool is(const char* path, int at) const {
    if (at != line) return false;
    const std::string p = std::string("/") + path;
    return p.size() >= file.size() && p.compare(p.size() - file.size(), file.size(), file) == 0;
  }
};

}  // namespace

cudaError_t set_max_dynamic_smem(const void* kernel, int bytes) {
  if (bytes < 0 || bytes > kSmemOptin) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(attribute_mutex);
  max_dynamic_smem[kernel] = bytes;
  return cudaSuccess;
}

void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  size_t allowed = kDefaultDynamicSmem;
  {
    std::lock_guard<std::mutex> lock(attribute_mutex);
    auto it = max_dynamic_smem.find(kernel);
    if (it != max_dynamic_smem.end() && size_t(it->second) > allowed) allowed = size_t(it->second);
  }
  if (smem > allowed) {
    last_error = cudaErrorInvalidValue;
    return;
  }
  std::lock_guard<std::mutex> lock(launch_mutex);
  static Pool* pool = new Pool;     // its threads live as long as the process
  static Block* state = new Block;  // 128 KiB of exchange buffers, reused by every block
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        auto* bytes = static_cast<unsigned char*>(::operator new(smem, std::align_val_t(16)));
        std::memset(bytes, 0xff, smem);
        state->smem = reinterpret_cast<float4*>(bytes);
        pool->run_block(state, &body, {x, y, z}, block, grid);
        ::operator delete(bytes, std::align_val_t(16));
      }
}

void syncthreads(const char* file, int line) {
  static const DroppedBarrier dropped;
  if (!dropped.is(file, line)) context.block->threads.wait();
}

void syncwarp() { context.block->warps[context.warp].wait(); }

const unsigned char* warp_exchange(const void* mine, size_t bytes) {
  Block& b = *context.block;
  std::memcpy(b.exchange[context.warp][context.phase][context.lane], mine, bytes);
  b.warps[context.warp].wait();
  const unsigned char* all = b.exchange[context.warp][context.phase][0];
  context.phase ^= 1;
  return all;
}

float4* dynamic_smem() { return context.block->smem; }

}  // namespace cuda_host

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources:
      return "too many resources requested for launch";
  }
  return "unrecognized error code";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = cuda_host::last_error;
  cuda_host::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      return *value = cuda_host::kSMs, cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      return *value = cuda_host::kSmemOptin, cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      return *value = cuda_host::kSmemPerSM, cudaSuccess;
    case cudaDevAttrReservedSharedMemoryPerBlock:
      return *value = cuda_host::kSmemReserved, cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  return *ptr || !bytes ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

// Launches finish before they return: streams order nothing.
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  *stream = nullptr;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
