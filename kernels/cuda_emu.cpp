// The emulator's scheduler (see cuda_emu.h): fibers per CUDA thread, barriers, warp exchange, and
// the extern "C" launch entry point the Rust launcher calls with cuLaunchKernel-style parameters.
#include "cuda_emu.h"

#if defined(__x86_64__) && !defined(MEMSIEVE_EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// Context switch. glibc's swapcontext makes two sigprocmask system calls per switch, which dominated
// the emulator's time (thousands of switches per launch); on x86-64 a 20-instruction switch saves
// the callee-saved registers and the FP control words on the old stack and resumes the new one.
#ifdef EMU_ASM_SWITCH
extern "C" void memsieve_emu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .globl memsieve_emu_switch
    .type memsieve_emu_switch,@function
memsieve_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size memsieve_emu_switch, .-memsieve_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

namespace emu {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

struct Fiber {
#ifdef EMU_ASM_SWITCH
    void* sp;
#else
    ucontext_t ctx;
#endif
    dim3 tid;
    unsigned linear;      // threadIdx flattened, x fastest: lane = linear % 32
    State state;
    unsigned exchanges;   // warp exchanges done so far (selects the double buffer)
};

struct Runner {
    std::vector<Fiber> fibers;
    // Fiber stacks, each above a PROT_NONE guard page, so an overflow faults instead of silently
    // corrupting the neighbouring fiber's stack.
    char* stacks = nullptr;
    size_t stacks_len = 0, stack_slot = 0, stack_bytes = 0, stack_count = 0;
#ifdef EMU_ASM_SWITCH
    void* sched;
#else
    ucontext_t sched;
#endif
    dim3 block{0, 0, 0}, bdim{1, 1, 1}, gdim{1, 1, 1};
    Trampoline entry = nullptr;
    void** params = nullptr;
    std::vector<uint64_t> dyn_smem;            // 8-byte aligned dynamic shared memory
    std::vector<uint64_t> slots;               // [warp][2][32] exchange buffers
    std::string error;

    bool run_block();

    bool allocate_stacks(size_t count, size_t bytes) {
        if (stacks) munmap(stacks, stacks_len);
        stacks = nullptr;
        stack_count = 0;
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        bytes = (bytes + page - 1) / page * page;
        stack_slot = bytes + page;
        stacks_len = count * stack_slot;
        void* m = mmap(nullptr, stacks_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return false;
        stacks = static_cast<char*>(m);
        for (size_t i = 0; i < count; i++) mprotect(stacks + i * stack_slot, page, PROT_NONE);
        stack_bytes = bytes;
        stack_count = count;
        return true;
    }
};

thread_local Runner* runner = nullptr;
thread_local Fiber* fiber = nullptr;

const dim3& thread_idx() { return fiber->tid; }
const dim3& block_idx() { return runner->block; }
const dim3& block_dim() { return runner->bdim; }
const dim3& grid_dim() { return runner->gdim; }
void* dynamic_shared() { return runner->dyn_smem.data(); }
unsigned lane_id() { return fiber->linear % 32; }

static void yield_to_scheduler(State s) {
    Fiber* me = fiber;
    me->state = s;
#ifdef EMU_ASM_SWITCH
    memsieve_emu_switch(&me->sp, runner->sched);
#else
    swapcontext(&me->ctx, &runner->sched);
#endif
}

void sync_block() { yield_to_scheduler(AT_BLOCK_BARRIER); }

const uint64_t* warp_exchange(uint64_t bits) {
    Fiber* me = fiber;
    unsigned warp = me->linear / 32, lane = me->linear % 32, buf = me->exchanges & 1;
    uint64_t* s = &runner->slots[(warp * 2 + buf) * 32];
    s[lane] = bits;
    me->exchanges++;
    yield_to_scheduler(AT_WARP_BARRIER);
    // Double buffering: a lane can only overwrite this buffer two exchanges later, after every lane of
    // the warp has passed the next barrier, i.e. has read its value here.
    return s;
}

unsigned warp_live_mask() {
    unsigned warp = fiber->linear / 32, n = (unsigned)runner->fibers.size(), mask = 0;
    for (unsigned l = 0; l < 32 && warp * 32 + l < n; l++)
        if (runner->fibers[warp * 32 + l].state != DONE) mask |= 1u << l;
    return mask;
}

static void fiber_main() {
    runner->entry(runner->params);
#ifdef EMU_ASM_SWITCH
    yield_to_scheduler(DONE);
    __builtin_unreachable();  // a finished fiber is never resumed
#else
    fiber->state = DONE;
    // returning resumes the scheduler through uc_link
#endif
}

bool Runner::run_block() {
    const unsigned n = (unsigned)fibers.size();
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = fibers[i];
        f.linear = i;
        f.tid = dim3{i % bdim.x, (i / bdim.x) % bdim.y, i / (bdim.x * bdim.y)};
        f.state = RUNNABLE;
        f.exchanges = 0;
        char* stack = stacks + (size_t)i * stack_slot + (stack_slot - stack_bytes);
#ifdef EMU_ASM_SWITCH
        // A frame memsieve_emu_switch can resume: control words, six callee-saved registers, then
        // fiber_main as the return address, with the ABI's 16-byte alignment at fiber_main's entry.
        uintptr_t top = ((uintptr_t)(stack + stack_bytes)) & ~(uintptr_t)15;
        uint64_t* sp = (uint64_t*)top;
        *--sp = 0;                            // fiber_main's own (unused) return address
        *--sp = (uint64_t)(uintptr_t)&fiber_main;
        for (int r = 0; r < 6; r++) *--sp = 0;  // rbp rbx r12 r13 r14 r15
        *--sp = 0x1F80ull | (0x037Full << 32);  // default MXCSR, x87 control word
        f.sp = sp;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stack;
        f.ctx.uc_stack.ss_size = stack_bytes;
        f.ctx.uc_link = &sched;
        makecontext(&f.ctx, fiber_main, 0);
#endif
    }
    for (;;) {
        for (unsigned i = 0; i < n; i++) {
            if (fibers[i].state != RUNNABLE) continue;
            fiber = &fibers[i];
#ifdef EMU_ASM_SWITCH
            memsieve_emu_switch(&sched, fibers[i].sp);
#else
            swapcontext(&sched, &fibers[i].ctx);
#endif
        }
        // Nobody is runnable now: release whatever barrier is complete.
        unsigned live = 0, at_block = 0;
        for (auto& f : fibers) {
            live += f.state != DONE;
            at_block += f.state == AT_BLOCK_BARRIER;
        }
        if (live == 0) return true;
        bool released = false;
        for (unsigned w = 0; w * 32 < n; w++) {
            unsigned end = std::min(n, w * 32 + 32), waiting = 0, alive = 0;
            for (unsigned i = w * 32; i < end; i++) {
                alive += fibers[i].state != DONE;
                waiting += fibers[i].state == AT_WARP_BARRIER;
            }
            if (alive > 0 && waiting == alive) {
                // memsieve's warp operations use the full mask: on a GPU that is undefined unless all
                // 32 lanes take part, so a warp with exited (or missing) lanes is an error here.
                if (alive != 32) {
                    char msg[256];
                    std::snprintf(msg, sizeof msg,
                                  "warp exchange with only %u of 32 lanes present in warp %u of block (%u,%u,%u) "
                                  "(full-mask shuffles need every lane; undefined on a GPU)",
                                  alive, w, block.x, block.y, block.z);
                    error = msg;
                    return false;
                }
                for (unsigned i = w * 32; i < end; i++)
                    if (fibers[i].state == AT_WARP_BARRIER) fibers[i].state = RUNNABLE;
                released = true;
            }
        }
        if (released) continue;
        if (at_block == live) {
            for (auto& f : fibers)
                if (f.state == AT_BLOCK_BARRIER) f.state = RUNNABLE;
            continue;
        }
        char msg[256];
        std::snprintf(msg, sizeof msg,
                      "divergent barrier in block (%u,%u,%u): %u of %u live threads at __syncthreads, the rest "
                      "at a warp exchange whose warp is incomplete",
                      block.x, block.y, block.z, at_block, live);
        error = msg;
        return false;
    }
}

static std::map<std::string, Trampoline>& registry() {
    static std::map<std::string, Trampoline> r;
    return r;
}

Registrar::Registrar(const char* name, Trampoline t) { registry()[name] = t; }

// Runners (with their fiber stacks) are reused across launches and threads.
static std::mutex pool_mutex;
static std::vector<Runner*> pool;

static Runner* acquire_runner() {
    std::lock_guard<std::mutex> g(pool_mutex);
    if (pool.empty()) return new Runner();
    Runner* r = pool.back();
    pool.pop_back();
    return r;
}
static void release_runner(Runner* r) {
    std::lock_guard<std::mutex> g(pool_mutex);
    pool.push_back(r);
}

static size_t env_size(const char* name, size_t fallback) {
    const char* v = std::getenv(name);
    if (!v || !*v) return fallback;
    long long x = std::atoll(v);
    return x > 0 ? (size_t)x : fallback;
}

}  // namespace emu

using namespace emu;

extern "C" int memsieve_emu_has_kernel(const char* name) { return registry().count(name) ? 1 : 0; }

extern "C" unsigned memsieve_emu_kernel_count() { return (unsigned)registry().size(); }

// Runs one launch to completion. Returns 0, or 1 with a message in `err`.
extern "C" int memsieve_emu_launch(const char* name, const unsigned* grid, const unsigned* block, unsigned smem_bytes,
                                   void** params, char* err, unsigned long err_len) {
    static const bool trace = std::getenv("MEMSIEVE_EMU_TRACE") != nullptr;
    if (trace)
        std::fprintf(stderr, "[cuda-emu] %s grid (%u,%u,%u) block (%u,%u,%u) shared %u B\n", name, grid[0], grid[1],
                     grid[2], block[0], block[1], block[2], smem_bytes);
    auto fail = [&](const std::string& m) {
        std::snprintf(err, err_len, "%s: %s", name, m.c_str());
        return 1;
    };
    auto it = registry().find(name);
    if (it == registry().end()) return fail("no such kernel in the emulator (missing EMU_KERNEL?)");
    unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    unsigned long long blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    // The limits a real launch enforces, so host-side bugs show up here too.
    if (threads == 0 || blocks == 0) return fail("empty grid or block (CUDA_ERROR_INVALID_VALUE)");
    if (threads > 1024 || block[2] > 64) return fail("more than 1024 threads per block");
    if (grid[1] > 65535 || grid[2] > 65535) return fail("grid y/z above 65535");
    if (smem_bytes > 48 * 1024) return fail("dynamic shared memory above 48 KiB without opt-in");

    const size_t stack_bytes = env_size("MEMSIEVE_EMU_STACK", 64 * 1024);
    unsigned hw = std::thread::hardware_concurrency();
    size_t workers = env_size("MEMSIEVE_EMU_THREADS", hw ? hw : 1);
    if (workers > blocks) workers = (size_t)blocks;

    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex err_mutex;
    std::string first_error;
    auto work = [&]() {
        Runner* r = acquire_runner();
        Runner* saved_runner = runner;
        Fiber* saved_fiber = fiber;
        runner = r;
        r->bdim = dim3{block[0], block[1], block[2]};
        r->gdim = dim3{grid[0], grid[1], grid[2]};
        r->entry = it->second;
        r->params = params;
        r->fibers.resize((size_t)threads);
        if (r->stack_bytes < stack_bytes || r->stack_count < threads) {
            if (!r->allocate_stacks((size_t)threads, stack_bytes)) {
                std::lock_guard<std::mutex> g(err_mutex);
                if (!failed.exchange(true)) first_error = "cannot map fiber stacks";
                runner = saved_runner;
                release_runner(r);
                return;
            }
        }
        r->dyn_smem.assign((smem_bytes + 7) / 8, 0);
        r->slots.assign(((size_t)threads + 31) / 32 * 64, 0);
        for (;;) {
            unsigned long long b = next.fetch_add(1);
            if (b >= blocks || failed.load()) break;
            r->block = dim3{(unsigned)(b % grid[0]), (unsigned)(b / grid[0] % grid[1]), (unsigned)(b / grid[0] / grid[1])};
            // Shared memory starts undefined on a GPU: poison it (NaN floats) so a kernel that reads
            // before writing fails here too instead of seeing zeros.
            std::memset(r->dyn_smem.data(), 0xFF, r->dyn_smem.size() * sizeof(uint64_t));
            if (!r->run_block()) {
                std::lock_guard<std::mutex> g(err_mutex);
                if (!failed.exchange(true)) first_error = r->error;
                break;
            }
        }
        runner = saved_runner;
        fiber = saved_fiber;
        release_runner(r);
    };
    std::vector<std::thread> extra;
    for (size_t w = 1; w < workers; w++) extra.emplace_back(work);
    work();
    for (auto& t : extra) t.join();
    if (failed.load()) return fail(first_error);
    return 0;
}
