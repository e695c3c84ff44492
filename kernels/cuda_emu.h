// CPU emulation of the CUDA execution model, so the kernels in kernels/*.cu run under g++ in CI.
//
// Every CUDA thread of a block is a fiber on one OS thread (an x86-64 assembly context switch;
// ucontext elsewhere), with a guard page under its stack; `__syncthreads()` and the
// warp exchanges (`__shfl_*_sync`, votes) switch back to a scheduler that releases a barrier once
// every live thread (or every live lane of the warp) has reached it, and reports a divergent barrier
// instead of hanging. One OS worker runs one block at a time with its fibers and stacks reused across
// blocks; the blocks of a launch are shared among a few workers. `__shared__` is `static thread_local`:
// one copy per worker, hence per running block.
//
// The launch checks what a GPU checks (≤ 1024 threads per block, ≤ 48 KiB dynamic shared memory,
// non-empty grids), reports full-mask warp operations in warps with exited lanes, and poisons dynamic
// shared memory with NaNs at each block start.
// Environment: MEMSIEVE_EMU_THREADS (workers per launch; default: all cores), MEMSIEVE_EMU_STACK
// (bytes per fiber stack; default 64 KiB), MEMSIEVE_EMU_TRACE (print every launch to stderr).
//
// This header is for g++ only; under NVRTC the kernel files see kernels/common.cuh alone.
#pragma once
#define MEMSIEVE_EMU 1

#include <cmath>
#include <cstdint>
#include <cstring>

struct dim3 {
    unsigned x, y, z;
};

namespace emu {

struct Fiber;
struct Runner;
extern thread_local Runner* runner;
extern thread_local Fiber* fiber;

const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void* dynamic_shared();
void sync_block();
// Per-warp exchange: every live lane publishes `bits`, waits for its warp, and gets the lane values back.
const uint64_t* warp_exchange(uint64_t bits);
unsigned lane_id();
unsigned warp_live_mask();

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp exchange of a value wider than 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

// The registry of kernels: name -> trampoline that unpacks cuLaunchKernel-style `void**` parameters.
using Trampoline = void (*)(void** params);
struct Registrar {
    Registrar(const char* name, Trampoline t);
};
template <unsigned long... I>
struct Seq {};
template <unsigned long N, unsigned long... I>
struct MakeSeq : MakeSeq<N - 1, N - 1, I...> {};
template <unsigned long... I>
struct MakeSeq<0, I...> {
    using type = Seq<I...>;
};
template <typename... A, unsigned long... I>
inline void call_seq(void (*f)(A...), void** p, Seq<I...>) {
    f(*static_cast<A*>(p[I])...);
}
template <typename... A>
inline void call_with(void (*f)(A...), void** p) {
    call_seq(f, p, typename MakeSeq<sizeof...(A)>::type{});
}

}  // namespace emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx())
#define blockDim (emu::block_dim())
#define gridDim (emu::grid_dim())
#define warpSize 32
// Dynamic shared memory: the launch's shared_mem_bytes, one buffer per worker (the NVRTC branch of this
// macro is in common.cuh).
#define DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(emu::dynamic_shared())
// Registers a kernel under its name for memsieve_emu_launch (empty under NVRTC).
#define EMU_KERNEL(name) \
    static emu::Registrar emu_registrar_##name(#name, [](void** p) { emu::call_with(&name, p); });

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_exchange(0); }

// Warp shuffles: (mask is assumed full, as in every memsieve kernel).
template <typename T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    const uint64_t* s = emu::warp_exchange(emu::to_bits(v));
    unsigned lane = emu::lane_id();
    unsigned base = lane - lane % width;
    return emu::from_bits<T>(s[base + ((unsigned)src % width)]);
}
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
    const uint64_t* s = emu::warp_exchange(emu::to_bits(v));
    unsigned lane = emu::lane_id();
    unsigned src = lane ^ (unsigned)mask;
    if (src / width != lane / width) src = lane;
    return emu::from_bits<T>(s[src]);
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    const uint64_t* s = emu::warp_exchange(emu::to_bits(v));
    unsigned lane = emu::lane_id();
    unsigned src = lane + delta;
    if (src / width != lane / width) src = lane;
    return emu::from_bits<T>(s[src]);
}
template <typename T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
    const uint64_t* s = emu::warp_exchange(emu::to_bits(v));
    unsigned lane = emu::lane_id();
    unsigned src = lane - delta;
    if (lane % width < delta) src = lane;
    return emu::from_bits<T>(s[src]);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    const uint64_t* s = emu::warp_exchange(pred ? 1 : 0);
    unsigned live = emu::warp_live_mask(), out = 0;
    for (unsigned l = 0; l < 32; l++)
        if ((live >> l & 1) && s[l]) out |= 1u << l;
    return out & mask;
}
inline int __all_sync(unsigned mask, int pred) {
    unsigned live = emu::warp_live_mask() & mask;
    return (__ballot_sync(mask, pred) & live) == live;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }

// Atomics: blocks run concurrently on several workers, so these are real atomics.
inline float atomicAdd(float* addr, float v) {
    unsigned* a = reinterpret_cast<unsigned*>(addr);
    unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED), next;
    float f;
    do {
        std::memcpy(&f, &old, 4);
        f += v;
        std::memcpy(&next, &f, 4);
    } while (!__atomic_compare_exchange_n(a, &old, next, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    std::memcpy(&f, &old, 4);
    return f;
}
inline unsigned atomicAdd(unsigned* a, unsigned v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline int atomicAdd(int* a, int v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline int atomicMax(int* a, int v) {
    int old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(a, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline unsigned atomicMin(unsigned* a, unsigned v) {
    unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(a, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline unsigned atomicExch(unsigned* a, unsigned v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }
inline unsigned atomicOr(unsigned* a, unsigned v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }
inline unsigned atomicCAS(unsigned* a, unsigned cmp, unsigned v) {
    __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}

// Math intrinsics (CUDA's fast variants are emulated by the accurate ones).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Round-to-nearest double operations that NVRTC never fuses into an FMA (g++ here does not fuse either).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline long long __double_as_longlong(double d) { return (long long)emu::to_bits(d); }
inline double __longlong_as_double(long long i) { return emu::from_bits<double>((uint64_t)i); }
inline float __int_as_float(int i) { return emu::from_bits<float>((uint64_t)(uint32_t)i); }
inline float __uint_as_float(unsigned i) { return emu::from_bits<float>((uint64_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)emu::to_bits(f); }
inline unsigned __float_as_uint(float f) { return (uint32_t)emu::to_bits(f); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
